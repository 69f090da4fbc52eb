"""The attention-patterns experiment end to end, its figures, and the report in a real browser."""

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import gpt2probe
from gpt2probe import cli, report
from gpt2probe import head_scores as H
from gpt2probe import names as N
from gpt2probe.experiments import attention
from gpt2probe.report.attention_figures import pattern_figure, position_labels, score_grid_figure

REPO = Path(__file__).resolve().parents[1]
TOY_DIR = REPO / "gpt2probe" / "assets" / "toy-induction"
TOY_TOKENS = "0,5,9,2,7,5,9,2,7"  # BOS, a block of 4, the block again


@pytest.fixture(scope="module")
def toy_report(tmp_path_factory):
    """(path, stdout) of one run of ``gpt2probe attention`` on the toy model."""
    out = tmp_path_factory.mktemp("report") / "attention.html"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = cli.main(["attention", "--model", str(TOY_DIR), "--tokens", TOY_TOKENS, "--out", str(out),
                       "--device", "cpu", "--n-seqs", "2", "--top", "3"])
    assert rc == 0
    return out, stdout.getvalue()


def page_data(html: str) -> dict:
    """The JSON the viewer page embeds."""
    return json.loads(re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', html, re.S).group(1))


def network_references(html: str) -> list[str]:
    """Tags that would load something from the network (scripts, styles, images, frames)."""
    return re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//[^>]*>", html, re.I)


# -- the command -------------------------------------------------------------------------
def test_main_writes_a_self_contained_page(toy_report):
    path, _ = toy_report
    html = path.read_text(encoding="utf-8")
    data = page_data(html)
    assert (data["n_layers"], data["n_heads"], data["n_tokens"]) == (2, 4, 9) and len(data["heads"]) == 8
    assert data["tokens"] == ["#" + t for t in TOY_TOKENS.split(",")]
    assert set(data["scores"]) == {"previous_token", "induction", "first_token", "diagonal"}
    assert data["scores"]["induction"][1][0] > 0.9 and data["scores"]["previous_token"][0][0] > 0.9
    assert "toy-induction" in html and "token ids: " + TOY_TOKENS in html
    assert network_references(html) == []
    assert network_references('<script src="https://cdn.plot.ly/plotly.min.js"></script>')  # the check can fail
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_main_prints_the_top_heads(toy_report):
    _, stdout = toy_report
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("rank"))
    columns = {key: header.index(H.SCORE_LABELS[key]) for key in ("previous_token", "induction")}
    first = next(line for line in lines if line.startswith("1 "))
    cell = {key: first[start:].split()[0] for key, start in columns.items()}
    assert cell["previous_token"] == "L0H0" and cell["induction"] == "L1H0"
    assert "Page written to" in lines[-1]


def test_the_script_and_the_command_are_one(tmp_path):
    import subprocess
    import sys

    script = (REPO / "experiments" / "attention_patterns.py").read_text(encoding="utf-8")
    assert "sys.path" not in script and "gpt2probe.experiments.attention import main" in script
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "attention_patterns.py"), "--help"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0 and "gpt2probe attention" in done.stdout
    assert report.write_attention_viewer is not None and "attention" in cli.COMMANDS


def test_unavailable_model_falls_back_and_says_so(tmp_path, capsys):
    out = tmp_path / "fallback.html"
    rc = attention.main(["--prompt", "The value of the function", "--out", str(out), "--device", "cpu", "--n-seqs", "1"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "Cannot load 'gpt2'" in err and "'tiny-english'" in err
    html = out.read_text(encoding="utf-8")
    assert "small offline model" in html and "tiny-english" in html
    assert page_data(html)["n_layers"] == 4


@pytest.mark.parametrize("argv, message", [
    (["--model", str(TOY_DIR), "--prompt", "hello"], "--tokens"),
    (["--model", str(TOY_DIR), "--tokens", "1,x"], "comma-separated integers"),
    (["--model", str(TOY_DIR), "--tokens", "1,999"], "token ids must lie in"),
    (["--model", str(TOY_DIR), "--top", "0"], "--top"),
    (["--model", "gpt2probe-tests/no-such-model", "--tokens", "1,2"], "no-such-model"),
    (["--model", str(TOY_DIR), "--max-mb", "0"], "--max-mb must be positive"),
    (["--model", str(TOY_DIR), "--tokens", "1,2", "--prepend-bos"], "--prepend-bos is for a text prompt"),  # was ignored
    (["--model", str(TOY_DIR), "--prepend-bos"], "--prepend-bos is for a text prompt"),  # random tokens: was ignored
    (["--model", str(TOY_DIR), "--tokens", "1,2", "--max-mb", "0.001"], "use a shorter input"),
])
def test_mistakes_get_one_error_line_and_exit_2(tmp_path, capsys, argv, message):
    out = tmp_path / "x.html"
    assert attention.main([*argv, "--out", str(out), "--n-seqs", "1"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "Loading weights" not in line]  # transformers' bar
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_text_prompt_on_a_gpt2_vocabulary_model(vocab_dir, tmp_path):
    out = tmp_path / "text.html"
    assert attention.main(["--model", str(vocab_dir), "--prompt", "a <b>&amp; b</script>", "--out", str(out),
                           "--n-seqs", "1"]) == 0
    html = out.read_text(encoding="utf-8")
    # tokens a, " <", b, ">", "&", amp, ";", " b", "</", "script", ">" (no BOS by default): literal, spaces visible
    assert page_data(html)["tokens"][:5] == ["a", "␣<", "b", ">", "&"]
    assert "</script>\"" not in html and html.count("</script>") == 2  # the data cannot close its element
    assert "without a prepended" in html
    assert attention.main(["--model", str(vocab_dir), "--prompt", "a <b>&amp; b", "--out", str(out), "--n-seqs", "1",
                           "--prepend-bos"]) == 0
    html = out.read_text(encoding="utf-8")
    assert page_data(html)["tokens"][:2] == ["<|endoftext|>", "a"] and "with &lt;|endoftext|&gt; prepended" in html


# -- the figures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_cache():
    probe = gpt2probe.load(TOY_DIR, device="cpu")
    ids = torch.tensor([int(t) for t in TOY_TOKENS.split(",")])
    return probe.run_with_cache(ids, names=H.PATTERN_NAMES)[1]


def test_pattern_figure_one_trace_per_head_and_a_selector(toy_cache):
    patterns = {layer: toy_cache[N.pattern(layer)][0] for layer in range(2)}
    tokens = ["<|endoftext|>", " <b>", "&amp;", "x", "x", "a", "b", "c", "d"]
    scores = {"previous_token": H.previous_token_scores(toy_cache)}
    fig = pattern_figure(patterns, tokens, scores=scores)
    assert len(fig.data) == 8 and [t.visible for t in fig.data] == [True] + [False] * 7
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == [f"L{l}H{h}" for l in range(2) for h in range(4)]
    for index, button in enumerate(buttons):
        assert button.args[0]["visible"] == [i == index for i in range(8)]
        assert button.args[1]["title.text"].split(": ", 1)[1].startswith(button.label)
    assert "previous-token 1.00" in buttons[0].args[1]["title.text"]
    trace = fig.data[4]  # L1H0
    z = np.asarray(trace.z, dtype=float)
    expected = toy_cache[N.pattern(1)][0, 0].numpy()
    lower = np.tril(np.ones_like(expected, dtype=bool))
    assert np.isnan(z[~lower]).all()  # the future is blank
    np.testing.assert_allclose(z[lower], expected[lower], atol=1e-4)
    assert list(trace.x) == list(trace.y) == position_labels(tokens)
    assert trace.x[1] == "1 ␣&lt;b&gt;" and trace.x[2] == "2 &amp;amp;" and trace.x[3] != trace.x[4]
    assert "%{z" in trace.hovertemplate


def test_pattern_figure_checks_shapes(toy_cache):
    with pytest.raises(ValueError, match="expected \\[head, 3, 3\\]"):
        pattern_figure({0: toy_cache[N.pattern(0)][0]}, ["a", "b", "c"])
    with pytest.raises(ValueError, match="no layers"):
        pattern_figure({}, ["a"])


def test_score_grid_figure(toy_cache):
    scores = {"previous_token": H.previous_token_scores(toy_cache), "diagonal": H.diagonal_scores(toy_cache)}
    fig = score_grid_figure(scores)
    assert len(fig.data) == 2
    np.testing.assert_allclose(np.asarray(fig.data[0].z, dtype=float), scores["previous_token"].numpy(), atol=1e-4)
    assert [a.text for a in fig.layout.annotations] == ["previous-token", "diagonal (self)"]
    with pytest.raises(ValueError, match="expected \\(2, 4\\)"):
        score_grid_figure({"a": torch.zeros(2, 4), "b": torch.zeros(4, 2)})


# -- the page in a real browser ----------------------------------------------------------
VIEWER_READY = "document.getElementById('selfcheck') && document.getElementById('selfcheck').dataset.status !== undefined"


def test_page_renders_in_chromium_and_follows_the_mouse(toy_report):
    browser = pytest.importorskip("browser")
    if not browser.chromium_available():
        pytest.skip("chromium is not installed")
    path, _ = toy_report
    with browser.open_page(path, offline=True, wait_for=VIEWER_READY) as page:
        assert page.evaluate("document.getElementById('selfcheck').dataset.status") == "ok", page.text()
        assert page.errors == []
        assert all(url.startswith(("file:", "data:")) for url in page.requests)
        assert page.evaluate("document.querySelectorAll('.thumb').length") == 8
        # click L1H0's thumbnail as a person would, then hover query 6 (the second #9; the first is at 2)
        state = page.evaluate("""(async () => {
          const el = [...document.querySelectorAll('.thumb')].find(t => t.dataset.layer === '1' && t.dataset.head === '0');
          el.click();
          while (!el.classList.contains('selected')) await new Promise(r => setTimeout(r, 5));
          document.querySelectorAll('#tokens span')[6].dispatchEvent(new MouseEvent('mouseenter'));
          return {info: document.getElementById('info').textContent,
                  backgrounds: [...document.querySelectorAll('#tokens span')].map(s => s.style.background)};
        })()""")
        assert state["info"].startswith("L1H0")
        backgrounds = state["backgrounds"]
        # the induction head puts all its weight on key 3 (the token after the earlier #9): blue, full
        assert backgrounds[3] == "rgb(31, 119, 180)" and all(b == "" for b in backgrounds[:3])
        assert backgrounds[7].startswith("rgba(255, 127, 14") or backgrounds[7] == ""  # later queries: orange
        assert page.errors == []
