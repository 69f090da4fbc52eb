"""The attention-patterns experiment end to end, its figures, and the report in a real browser."""

import contextlib
import importlib.util
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import gpt2probe
from gpt2probe import head_scores as H
from gpt2probe import names as N
from gpt2probe.attention_figures import pattern_figure, position_labels, score_grid_figure

REPO = Path(__file__).resolve().parents[1]
TOY_DIR = REPO / "gpt2probe" / "assets" / "toy-induction"
TOY_TOKENS = "0,5,9,2,7,5,9,2,7"  # BOS, a block of 4, the block again


def load_experiment():
    spec = importlib.util.spec_from_file_location("attention_patterns", REPO / "experiments" / "attention_patterns.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def experiment():
    return load_experiment()


@pytest.fixture(scope="module")
def toy_report(experiment, tmp_path_factory):
    """(path, stdout) of one run on the toy model."""
    out = tmp_path_factory.mktemp("report") / "attention.html"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        written = experiment.main(["--model", str(TOY_DIR), "--tokens", TOY_TOKENS, "--out", str(out),
                                   "--device", "cpu", "--n-seqs", "2", "--top", "3"])
    assert written == out
    return out, stdout.getvalue()


def head_traces(html: str) -> list[str]:
    """The names of the per-head heatmaps in a report, in order."""
    return re.findall(r'"name":"(L\d+H\d+)"', html)


def network_references(html: str) -> list[str]:
    """Tags that would load something from the network (scripts, styles, images, frames)."""
    return re.findall(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//[^>]*>", html, re.I)


# -- the script --------------------------------------------------------------------------
def test_main_writes_a_self_contained_report(toy_report):
    path, _ = toy_report
    html = path.read_text(encoding="utf-8")
    assert head_traces(html) == [f"L{l}H{h}" for l in range(2) for h in range(4)]
    assert '"updatemenus"' in html and '"label":"L1H0"' in html
    assert "toy-induction" in html and "token ids: " + TOY_TOKENS in html
    assert network_references(html) == []
    assert network_references('<script src="https://cdn.plot.ly/plotly.min.js"></script>')  # the check can fail


def test_main_prints_the_top_heads(toy_report):
    _, stdout = toy_report
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("rank"))
    columns = [header.index(H.SCORE_LABELS[key]) for key in H.SCORE_LABELS]
    first = next(line for line in lines if line.startswith("1 "))
    cell = {key: first[start:].split()[0] for key, start in zip(H.SCORE_LABELS, columns)}
    assert cell["previous_token"] == "L0H0" and cell["induction"] == "L1H0"
    assert "wrote" in lines[-1]


def test_unavailable_model_falls_back_and_says_so(experiment, tmp_path, capsys):
    out = tmp_path / "fallback.html"
    experiment.main(["--model", "gpt2probe-tests/no-such-model", "--prompt", "The value of the function",
                     "--out", str(out), "--device", "cpu", "--n-seqs", "1", "--layers", "1"])
    err = capsys.readouterr().err
    assert "Cannot load 'gpt2probe-tests/no-such-model'" in err and "'tiny-english'" in err
    html = out.read_text(encoding="utf-8")
    assert "small offline model" in html and "tiny-english" in html
    assert head_traces(html) == [f"L1H{h}" for h in range(4)]  # --layers 1


def test_text_prompt_for_a_token_id_model_is_refused(experiment, tmp_path, capsys):
    with pytest.raises(SystemExit):
        experiment.main(["--model", str(TOY_DIR), "--prompt", "hello", "--out", str(tmp_path / "x.html")])
    assert "--tokens" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_text_prompt_on_a_gpt2_vocabulary_model(experiment, vocab_dir, tmp_path):
    out = tmp_path / "text.html"
    experiment.main(["--model", str(vocab_dir), "--prompt", "a <b>&amp; b", "--out", str(out), "--n-seqs", "1"])
    html = out.read_text(encoding="utf-8")
    labels = json.loads(re.search(r'"x":(\[".*?\])', html).group(1))  # the first head's key axis
    # tokens a, " <", b, ">", "&", amp, ";", " b" (no BOS by default): markup escaped for Plotly, spaces visible
    assert labels[:5] == ["0 a", "1 ␣&lt;", "2 b", "3 &gt;", "4 &amp;"]
    experiment.main(["--model", str(vocab_dir), "--prompt", "a <b>&amp; b", "--out", str(out), "--n-seqs", "1",
                     "--prepend-bos"])
    labels = json.loads(re.search(r'"x":(\[".*?\])', out.read_text(encoding="utf-8")).group(1))
    assert labels[:2] == ["0 &lt;|endoftext|&gt;", "1 a"]
    assert '"label":"L1H2"' in html


def test_too_many_heatmap_cells_is_refused(experiment, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(experiment, "MAX_CELLS", 2 * 4 * 9**2 - 1)  # one cell short of the toy input's
    with pytest.raises(SystemExit):
        experiment.main(["--model", str(TOY_DIR), "--tokens", TOY_TOKENS, "--out", str(tmp_path / "x.html")])
    assert "pass --layers" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_parse_layers(experiment):
    assert experiment.parse_layers("all", 4) == [0, 1, 2, 3]
    assert experiment.parse_layers("3, 0-1", 4) == [0, 1, 3]
    for bad in ("4", "x", "2-9", ""):
        with pytest.raises(ValueError, match="--layers"):
            experiment.parse_layers(bad, 4)


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


# -- the report in a real browser --------------------------------------------------------
def test_report_renders_in_chromium(toy_report):
    browser = pytest.importorskip("browser")
    if not browser.chromium_available():
        pytest.skip("chromium is not installed")
    path, _ = toy_report
    with browser.open_page(path, offline=True) as page:
        assert page.errors == []
        assert all(url.startswith(("file:", "data:")) for url in page.requests)
        figures = {f["id"]: f for f in page.svg_texts()}
        assert figures["figure-0"]["xticks"][:3] == ["0 #0", "1 #5", "2 #9"]
        assert any("L0H0" in text for text in figures["figure-0"]["all"])
        assert "1.00" in figures["figure-1"]["cells"]
        # choose L1H0 in the dropdown, as a click would, then hover a query of the second copy
        shown = page.evaluate("""(() => {
          const gd = document.getElementById('figure-0');
          const button = gd.layout.updatemenus[0].buttons.find(b => b.label === 'L1H0');
          return Plotly.update(gd, button.args[0], button.args[1])
            .then(() => gd._fullData.filter(t => t.visible === true).map(t => t.name));
        })()""")
        assert shown == ["L1H0"]
        # query 6 is the second copy of token 9 (first at 2): its induction target is key 3
        hover = page.hover("figure-0", 3, 6)
        assert {"L1H0", "query 6 #9", "key 3 #2", "weight 1.000"} <= set(hover)
        assert page.errors == []
