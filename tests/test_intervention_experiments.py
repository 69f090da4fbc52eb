"""The activation-patching and steering experiments end to end: ``main([...])`` on a small model writes a report.

The model is the shipped ``tiny-english`` when it is there, else a tiny random GPT-2 with
GPT-2's vocabulary. Reports are opened in headless Chromium, when installed, to check that
they render without errors and show tokens literally.
"""

from __future__ import annotations

import pytest

from gpt2probe.errors import WeightsUnavailableError
from gpt2probe.experiments import pairs, steering
from gpt2probe.experiments import patching as activation_patching
from gpt2probe.shipped import shipped_model

from browser import chromium_available, open_page

# A pair whose tokens Plotly would misread if labels were not escaped.
HOSTILE_CLEAN = "When <b>Mary</b> &amp; John met, John gave it to"
HOSTILE_CORRUPTED = "When <b>Mary</b> &amp; John met, Mary gave it to"


@pytest.fixture(scope="module")
def model_dir(vocab_dir):
    try:
        return str(shipped_model("tiny-english"))
    except WeightsUnavailableError:
        return str(vocab_dir)


@pytest.fixture(scope="module")
def patching_report(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("patching") / "patching.html"
    code = activation_patching.main(["--model", model_dir, "--clean", HOSTILE_CLEAN, "--corrupted", HOSTILE_CORRUPTED,
                                     "--out", str(out)])
    assert code == 0
    return out


def test_patching_writes_a_report_with_four_heatmaps(patching_report, model_dir):
    text = patching_report.read_text(encoding="utf-8")
    assert text.count('class="js-plotly-plot"') + text.count("Plotly.newPlot") >= 4
    for heading in activation_patching.PANELS.values():
        assert heading[0] in text


def test_patching_default_pair_states_the_model(model_dir, tmp_path, capsys):
    import gpt2probe

    pair = pairs.pair_for(gpt2probe.load(model_dir, device="cpu").cfg.model_name)
    out = tmp_path / "default.html"
    assert activation_patching.main(["--model", model_dir, "--out", str(out), "--direction", "noise"]) == 0
    printed = capsys.readouterr().out
    assert "Model: " in printed and f"logit({pair.answer!r}) - logit({pair.wrong!r})" in printed and str(out) in printed
    assert "Default pair for " in printed and pair.behaviour in printed
    assert out.is_file()


def printed_gap(printed: str) -> tuple[float, float]:
    """The clean and corrupted metric from the line ``logit(..) - logit(..) at the last token: clean X, corrupted Y``."""
    import re

    found = re.search(r"at the last token: clean ([-+]\d+\.\d+), corrupted ([-+]\d+\.\d+), gap ([-+]\d+\.\d+)", printed)
    assert found is not None, printed
    clean, corrupted, gap = map(float, found.groups())
    assert abs(clean - corrupted - gap) < 2e-4
    return clean, corrupted


def test_patching_falls_back_and_says_so(tmp_path, capsys):
    """With GPT-2 unavailable (tests run offline) the default model falls back, and terminal and report say so."""
    out = tmp_path / "fallback.html"
    assert activation_patching.main(["--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Falling back" in captured.err
    assert "mean little" in captured.out
    text = out.read_text(encoding="utf-8")
    assert "mean little" in text
    # The default pair is one the offline model tells apart (in-context copying): a gap worth patching, no warning.
    assert "Default pair for tiny-english" in captured.out and "Default pair for tiny-english" in text
    clean, corrupted = printed_gap(captured.out)
    assert clean - corrupted > 10.0, (clean, corrupted)
    assert "WARNING" not in captured.out and "barely differ on the metric" not in text


def test_patching_warns_on_a_pair_the_model_barely_tells_apart(tmp_path, capsys):
    """The offline model has no indirect-object circuit: on that pair the normalised maps show noise, and both say so."""
    out = tmp_path / "ioi.html"
    assert activation_patching.main(["--model", "tiny-english", "--clean", pairs.IOI.clean, "--corrupted",
                                     pairs.IOI.corrupted, "--answer", pairs.IOI.answer, "--wrong", pairs.IOI.wrong,
                                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: The clean and corrupted runs barely differ" in printed
    assert "Default pair" not in printed
    text = out.read_text(encoding="utf-8")
    assert "barely differ on the metric" in text and "raw metric: clean" in text


def _result(values, clean, corrupted):
    import torch

    from gpt2probe.interventions import PatchingResult

    values = torch.tensor(values)
    return PatchingResult(kind="resid_pre", direction="denoise", values=values, axis_names=("layer", "pos"),
                          axis_labels=(("L0", "L1"), ("a", "b")), clean_metric=clean, corrupted_metric=corrupted,
                          normalized=True)


def test_small_gap_warning_only_when_the_gap_is_small_next_to_the_metric():
    clear = _result([[1.0, 0.0], [0.5, 0.2]], clean=3.0, corrupted=-2.0)
    assert activation_patching.small_gap_warning([clear]) is None
    # raw values are corrupted + v * gap: a gap of 0.0008 against metric values near 0.05
    noisy = _result([[1.0, -30.0], [12.0, 0.0]], clean=0.0497, corrupted=0.0505)
    warning = activation_patching.small_gap_warning([noisy])
    assert warning is not None and "+0.0497" in warning and "+0.0505" in warning


def test_patching_refuses_prompts_of_different_lengths(model_dir, tmp_path, capsys):
    code = activation_patching.main(["--model", model_dir, "--clean", "When Mary went home",
                                     "--corrupted", "When Mary and John went home", "--out", str(tmp_path / "x.html")])
    assert code == 2
    err = capsys.readouterr().err
    assert "clean prompt has 4 tokens" in err and "corrupted prompt has 6" in err
    assert not (tmp_path / "x.html").exists()


def test_steering_writes_a_report(model_dir, tmp_path, capsys):
    out = tmp_path / "steering.html"
    code = steering.main(["--model", model_dir, "--prompt", "I think you are", "--max-new-tokens", "5",
                          "--alpha", "8", "--layer", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "without steering" in printed and "| with steering" in printed
    text = out.read_text(encoding="utf-8")
    assert "Continuations with and without steering" in text and "Biggest probability changes" in text
    # the continuations are an HTML table holding each whole text, escaped, never cut
    import html
    import re

    table = re.search(r'<table class="text-table">.*?</table>', text, re.S).group(0)
    cells = [html.unescape(c) for c in re.findall(r'<td class="literal">(.*?)</td>', table, re.S)]
    assert cells[0] == "I think you are" and len(cells) == 3 and all(len(c) > 0 for c in cells[1:])
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if "without steering" in line and "| with steering" in line)
    bar = lines[header].index("|")
    assert all(line[bar] == "|" for line in lines[header + 2 : header + 3])  # aligned columns


needs_chromium = pytest.mark.skipif(not chromium_available(), reason="Debian's chromium is not installed")


@needs_chromium
def test_patching_report_renders_tokens_literally(patching_report, model_dir):
    import gpt2probe

    probe = gpt2probe.load(model_dir, device="cpu")
    clean, corrupted = probe.to_str_tokens(HOSTILE_CLEAN), probe.to_str_tokens(HOSTILE_CORRUPTED)
    visible = lambda s: s.replace(" ", "␣")  # noqa: E731
    expected = [visible(a) if a == b else f"{visible(a)}/{visible(b)}" for a, b in zip(clean, corrupted)]
    with open_page(patching_report, offline=True) as page:
        figures = page.svg_texts()
        page.evaluate("1")
        errors = list(page.errors)
    assert errors == []
    assert len(figures) == 4
    for figure in figures[:3]:
        assert figure["xticks"] == expected
    assert figures[3]["xticks"] == [f"H{h}" for h in range(probe.cfg.n_heads)]
    assert {"␣<", "</", "␣&"} <= set(expected)  # markup Plotly would swallow were it not escaped
