"""Shared pieces of the harvest tests: a small corpus of Python's documentation and comparisons."""

from __future__ import annotations

from pathlib import Path

import torch


def topic_texts(n: int = 10, max_chars: int = 1500) -> list[str]:
    """The first ``n`` documentation topics (sorted by name), cut to ``max_chars`` to keep tests fast."""
    import pydoc_data.topics as topics

    return [text[:max_chars] for _, text in sorted(topics.topics.items())[:n]]


def write_text_corpus(directory: Path, texts: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (directory / f"{i:03d}.txt").write_text(text, encoding="utf-8")
    return directory


def assert_same_harvest(a, b, *, exact: bool, atol: float = 1e-5) -> None:
    """Top-k values, documents, positions and contexts equal; counts equal; means/vars within ``atol`` (or bitwise)."""
    assert a.hooks == b.hooks
    for hook in a.hooks:
        if a.kind(hook) == "attention":
            for key, value in a.attention(hook).items():
                torch.testing.assert_close(value, b.attention(hook)[key], atol=0 if exact else atol, rtol=0)
            continue
        ta, tb = a._units(hook).top, b._units(hook).top
        for field in ("values", "doc", "pos", "ctx_tokens"):
            assert torch.equal(getattr(ta, field), getattr(tb, field)), (hook, field)
        assert torch.equal(ta.ctx_acts.nan_to_num(-7.0), tb.ctx_acts.nan_to_num(-7.0)), hook
        sa, sb = a.stats(hook), b.stats(hook)
        for key in ("count", "active", "min", "max"):
            assert torch.equal(sa[key], sb[key]), (hook, key)
        for key in ("mean", "var"):
            if exact:
                assert torch.equal(sa[key], sb[key]), (hook, key)
            else:
                torch.testing.assert_close(sa[key], sb[key], atol=atol, rtol=0)
        assert torch.equal(a._units(hook).hist, b._units(hook).hist), hook


def exit_status(argv: list[str]) -> int:
    """``gpt2probe.cli.main``'s status, whether it returns it or argparse exits with it."""
    from gpt2probe.cli import main

    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def assert_one_error_line(argv: list[str], capsys) -> None:
    """The command ``argv`` exits with status 2 and prints exactly one line, starting ``error: ``, on stderr."""
    assert exit_status(argv) == 2, argv
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("Loading weights")]  # transformers' own bar while loading the model
    assert len(err) == 1 and err[0].startswith("error: "), (argv, err)


def assert_blue(css_colour: str) -> None:
    """A computed CSS colour (``rgb(...)`` / ``rgba(...)``) that is visibly blue: gpt2probe's colour for positive values."""
    r, g, b, *alpha = (float(x) for x in css_colour[css_colour.index("(") + 1:-1].split(","))
    assert b > r + 50 and (not alpha or alpha[0] > 0.3), css_colour
