"""The report layer: figures from hand-built results, token escaping, HTML reports in a browser.

Results are built here from random logits with statistics computed independently
(softmax, top-k, entropy, KL), never by the lens code, so these tests need no model.
The browser tests open the written report in headless Chromium (``tests/browser.py``)
with the network cut off and read back what the page displays.
"""

from __future__ import annotations

import dataclasses
import html
import re
from datetime import datetime, timezone

import plotly
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from plotly.offline import get_plotlyjs

from gpt2probe.errors import InvalidArgumentError
from gpt2probe.lens.attribution import Attribution
from gpt2probe.lens.result import PromptLens
from gpt2probe.report import (
    attribution_bars,
    display_token,
    escape_text,
    kl_per_layer,
    lens_heatmap,
    target_trajectory,
    write_html,
)
from gpt2probe.report.html import page_layout
from gpt2probe.versions import versions

from browser import chromium_available, open_page

# Tokens Plotly or the page could misread: markup, an entity, TeX, a template, whitespace.
VOCAB = ["The", " <script>", " &amp;", "<b>x</b>", " the", "\n", "$x$", "%{z}", " Paris", "&", ";", " is"]
PROMPT_IDS = [0, 1, 2, 3, 4, 4, 5, 6, 7, 8]  # " the" twice: equal tick labels must both show
STREAMS = ["embed", "L0 pre-mlp", "L0", "L1", "final"]
K = 3
SHOWN = {" ": "␣", "\n": "↵"}  # what a person should see for each whitespace character


def shown(token: str) -> str:
    """The token as the browser must display it: literal, whitespace made visible."""
    return "".join(SHOWN.get(ch, ch) for ch in token)


def make_lens(ids: list[int] = PROMPT_IDS, positions: list[int] | None = None, seed: int = 0,
              with_targets: bool = True) -> PromptLens:
    """A PromptLens from random per-stream logits, with every statistic computed here."""
    g = torch.Generator().manual_seed(seed)
    positions = list(range(len(ids))) if positions is None else positions
    n_streams, n_pos = len(STREAMS), len(positions)
    logits = 3 * torch.randn(n_streams, n_pos, len(VOCAB), generator=g)
    logprobs = logits.log_softmax(-1)
    probs = logprobs.exp()
    top_probs, top_ids = probs.topk(K, dim=-1)
    entropy = -(probs * logprobs).sum(-1)
    kl = (probs[-1] * (logprobs[-1] - logprobs)).sum(-1)
    fields = {}
    if with_targets:
        # The target is the next prompt token; the last prompt token has none.
        target_ids = torch.tensor([ids[p + 1] if p + 1 < len(ids) else -1 for p in positions])
        has = target_ids >= 0
        gathered = probs.gather(-1, target_ids.clamp(min=0).expand(n_streams, n_pos).unsqueeze(-1)).squeeze(-1)
        target_prob = torch.where(has, gathered, torch.tensor(float("nan")))
        rank = (probs > gathered.unsqueeze(-1)).sum(-1)  # 0-based, as the lens stores it
        fields = dict(
            target_ids=target_ids,
            target_tokens=[VOCAB[i] if i >= 0 else "" for i in target_ids.tolist()],
            target_prob=target_prob,
            target_logprob=target_prob.log(),
            target_rank=torch.where(has, rank, torch.tensor(-1)),
        )
    return PromptLens(
        prompt="".join(VOCAB[i] for i in ids),
        str_tokens=[VOCAB[i] for i in ids],
        token_ids=torch.tensor(ids),
        positions=torch.tensor(positions),
        stream_labels=list(STREAMS),
        top_ids=top_ids,
        top_probs=top_probs,
        top_tokens=[[[VOCAB[i] for i in top_ids[s, p].tolist()] for p in range(n_pos)] for s in range(n_streams)],
        entropy=entropy,
        kl_to_final=kl,
        **fields,
    )


def make_attribution(n_layers: int = 3, n_heads: int = 5, seed: int = 1) -> Attribution:
    g = torch.Generator().manual_seed(seed)
    heads = torch.randn(n_layers, n_heads, generator=g)
    attn_bias = torch.randn(n_layers, generator=g)
    labels, values = ["embed", "pos_embed"], [0.7, -0.2]
    for layer in range(n_layers):
        labels += [f"L{layer} attn", f"L{layer} mlp"]
        values += [float(heads[layer].sum() + attn_bias[layer]), float(torch.randn(1, generator=g))]
    bias_term = 0.25
    return Attribution(prompt="The <b>Eiffel</b> Tower is in", position=6, position_token=" in",
                       metric_label="logit( Paris) - logit( &amp;)", labels=labels, values=torch.tensor(values),
                       head_values=heads, attn_bias=attn_bias, bias_term=bias_term,
                       total=sum(values) + bias_term)


def strings_in(obj) -> list[str]:
    """Every string anywhere in a figure's JSON."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for value in obj.values() for s in strings_in(value)]
    if isinstance(obj, (list, tuple)):
        return [s for value in obj for s in strings_in(value)]
    return []


@pytest.fixture(scope="module")
def lens() -> PromptLens:
    return make_lens()


# -- escaping --------------------------------------------------------------------------


@pytest.mark.parametrize("token, expected", [
    (" Paris", "␣Paris"),
    ("<script>", "&lt;script&gt;"),
    (" &amp;", "␣&amp;amp;"),
    ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
    ("\n\n", "↵↵"),
    ("\t", "⇥"),
    ("$x$", "&#36;x&#36;"),
    ("", "∅"),
    ("\x00", "\\x00"),
    ("é", "é"),
    ("\xa0\xa0\xa0\xa0", "⍽⍽⍽⍽"),  # GPT-2's no-break-space tokens, blank if drawn as they are
    (" \xa0 \xa0", "␣⍽␣⍽"),
    ("\u3000", "\\u3000"),  # other spaces (category Zs) as escapes
    ("    ", "␣␣␣␣"),
])
def test_display_token(token, expected):
    assert display_token(token) == expected


_VISIBLE_SYMBOLS = "␣↵␍⇥⍽∅\\"
_plain_text = st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp", "Zs"),
                                    blacklist_characters=_VISIBLE_SYMBOLS, whitelist_characters=" \xa0"))


@given(_plain_text)
def test_display_token_is_markup_free_and_reversible(token):
    out = display_token(token)
    assert not set(out) & set("<> \n$"), out
    assert "&" not in re.sub(r"&(amp|lt|gt|#36);", "", out), out  # only our own entities
    # Plotly decodes the entities; mapping the visible symbols back recovers the token.
    decoded = html.unescape(out).replace("␣", " ").replace("↵", "\n").replace("⍽", "\xa0")
    assert decoded == token or (token == "" and out == "∅")


def test_escape_text_keeps_spaces_and_cuts_before_escaping():
    assert escape_text("a <b> & c\nd") == "a &lt;b&gt; &amp; c↵d"
    cut = escape_text("&" * 50, max_chars=10)
    assert cut == "&amp;" * 9 + "…"


# -- figures -----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["prob", "entropy", "kl"])
def test_lens_heatmap_values_and_axes(lens, metric):
    fig = lens_heatmap(lens, metric=metric)
    heatmap, marks, lining = fig.data  # the heatmap, the outlines of cells whose top-1 is the next token, their lining
    assert (lining.x, lining.y) == (marks.x, marks.y)
    assert isinstance(heatmap, go.Heatmap)
    expected = {"prob": lens.top_probs[:, :, 0], "entropy": lens.entropy, "kl": lens.kl_to_final}[metric]
    torch.testing.assert_close(torch.tensor(heatmap.z, dtype=torch.float32), expected)
    # Streams upwards from the embeddings at y = 0; nothing reverses the axis.
    assert list(heatmap.y) == list(range(len(STREAMS)))
    assert fig.layout.yaxis.autorange != "reversed"
    assert list(fig.layout.yaxis.ticktext) == STREAMS
    # One tick per analysed position, even where the token repeats.
    assert list(heatmap.x) == list(fig.layout.xaxis.tickvals) == list(range(len(PROMPT_IDS)))
    assert list(fig.layout.xaxis.ticktext) == [display_token(VOCAB[i]) for i in PROMPT_IDS]
    assert fig.layout.xaxis.ticktext[4] == fig.layout.xaxis.ticktext[5] == "␣the"
    # Cell text: the top-1 token of each stream and position.
    assert [list(row) for row in heatmap.text] == [
        [display_token(VOCAB[int(i)]) for i in lens.top_ids[s, :, 0]] for s in range(len(STREAMS))]


def test_lens_heatmap_subset_of_positions():
    item = make_lens(positions=[2, 5, 9])
    fig = lens_heatmap(item)
    assert list(fig.data[0].x) == [2, 5, 9]
    assert list(fig.layout.xaxis.ticktext) == [display_token(VOCAB[PROMPT_IDS[p]]) for p in (2, 5, 9)]


def test_lens_heatmap_hover_lists_top_k_entropy_kl_and_target(lens):
    hover = lens_heatmap(lens).data[0].hovertext
    s, p = 2, 1
    text = hover[s][p]
    for rank, (token_id, prob) in enumerate(zip(lens.top_ids[s, p].tolist(), lens.top_probs[s, p].tolist()), 1):
        assert f"{rank}. {display_token(VOCAB[token_id])}" in text
        assert f"{prob:.3f}" in text or f"{prob:.1e}" in text
    assert f"entropy {float(lens.entropy[s, p]):.3f}" in text
    assert f"KL to final {float(lens.kl_to_final[s, p]):.3f}" in text
    target = VOCAB[PROMPT_IDS[p + 1]]
    assert f"target {display_token(target)}: p = " in text
    assert f"rank {int(lens.target_rank[s, p]) + 1}" in text  # shown 1-based
    assert "target" not in hover[s][-1]  # the last token has no next token


def test_lens_heatmap_without_targets_and_bad_metric():
    item = make_lens(with_targets=False)
    assert "target" not in lens_heatmap(item).data[0].hovertext[0][0]
    with pytest.raises(ValueError, match=r"'prob', 'entropy', 'kl'"):
        lens_heatmap(item, metric="logit")


def test_no_raw_markup_anywhere_in_figures(lens):
    """No figure string carries a token's markup unescaped (our own <br>/<b>/<sup> aside)."""
    figures = [lens_heatmap(lens), lens_heatmap(lens, "kl"), target_trajectory(lens, -2), kl_per_layer(lens),
               attribution_bars(make_attribution())]
    for fig in figures:
        for s in strings_in(fig.to_plotly_json()):
            assert "<script" not in s and "x</b>" not in s and "$x$" not in s, s
            assert re.sub(r"&(amp|lt|gt|#36);", "", s).count("&") == 0, s
            assert set(re.findall(r"</?(\w+)", s)) <= {"br", "b", "sup", "extra"}, s


def test_target_trajectory(lens):
    p = 3
    fig = target_trajectory(lens, position=p)
    prob, rank = fig.data
    torch.testing.assert_close(torch.tensor(prob.y, dtype=torch.float32), lens.target_prob[:, p])
    assert list(rank.y) == (lens.target_rank[:, p] + 1).tolist()  # shown 1-based
    assert list(prob.x) == list(rank.x) == list(range(len(STREAMS)))
    assert prob.yaxis == "y" and rank.yaxis == "y2"
    assert fig.layout.yaxis2.type == "log" and fig.layout.yaxis2.autorange == "reversed"
    assert list(fig.layout.xaxis2.ticktext) == STREAMS
    assert display_token(VOCAB[PROMPT_IDS[p + 1]]) in fig.layout.title.text
    # -2 counts from the end of the analysed positions, like a list.
    assert target_trajectory(lens, -2).data[0].y == target_trajectory(lens, len(PROMPT_IDS) - 2).data[0].y


def test_target_trajectory_errors(lens):
    with pytest.raises(ValueError, match=r"has no target.*with a target: \[0, 1, 2, 3, 4, 5, 6, 7, 8\]"):
        target_trajectory(lens)  # the last token's next token is unknown
    with pytest.raises(IndexError, match=r"valid: -10 to 9"):
        target_trajectory(lens, 10)
    with pytest.raises(ValueError, match="no target statistics"):
        target_trajectory(make_lens(with_targets=False), 0)


def test_kl_per_layer(lens):
    (mean,) = kl_per_layer(lens).data
    torch.testing.assert_close(torch.tensor(mean.y, dtype=torch.float32), lens.kl_to_final.mean(dim=1))
    (one,) = kl_per_layer(lens, position=2).data
    torch.testing.assert_close(torch.tensor(one.y, dtype=torch.float32), lens.kl_to_final[:, 2])
    assert one.y[-1] == pytest.approx(0.0, abs=1e-6)  # the final stream is the final prediction
    assert list(kl_per_layer(lens).layout.xaxis.ticktext) == STREAMS


def test_attribution_bars():
    attr = make_attribution()
    fig = attribution_bars(attr)
    bars, heads = fig.data
    assert isinstance(bars, go.Bar) and isinstance(heads, go.Heatmap)
    torch.testing.assert_close(torch.tensor(bars.y, dtype=torch.float32), attr.values)
    assert list(fig.layout.xaxis.ticktext) == attr.labels
    torch.testing.assert_close(torch.tensor(heads.z, dtype=torch.float32), attr.head_values)
    assert (heads.xaxis, heads.yaxis) == ("x2", "y2")
    assert heads.zmid == 0
    # Each head's hover states its layer's attention total, computed here from heads and b_O.
    layer = 1
    layer_total = float(attr.head_values[layer].sum() + attr.attn_bias[layer])
    assert f"{layer_total:+.4f}" in heads.hovertext[layer][0]
    assert layer_total == pytest.approx(float(attr.values[attr.labels.index(f"L{layer} attn")]))
    assert f"total {attr.total:.4f}" in fig.layout.title.text
    assert "logit(␣Paris)" not in fig.layout.title.text  # free text keeps its spaces ...
    assert "logit( Paris) - logit( &amp;amp;)" in fig.layout.title.text  # ... and is escaped


def test_attribution_repr_and_table_show_the_position_token_as_the_metric_label_shows_tokens():
    attr = dataclasses.replace(make_attribution(), position_token="\n\n", metric_label="logit(␣Paris)")
    text = repr(attr)
    assert text.startswith("Attribution(logit(␣Paris) at position 6 (↵↵): total ") and "\\n" not in text
    assert "logit(␣Paris) at position 6 (↵↵)" in attr._repr_html_()
    assert "at position 6 (∅)" in repr(dataclasses.replace(attr, position_token=""))


# -- HTML reports -------------------------------------------------------------------------


def _report_figures(lens):
    return {
        "Top-1 prediction": lens_heatmap(lens),
        "Entropy": lens_heatmap(lens, "entropy"),
        "Target": target_trajectory(lens, -2),
        "KL to final": kl_per_layer(lens),
        "Attribution": attribution_bars(make_attribution()),
    }


HOSTILE_PROMPT = 'The <script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2"> &amp; end'


def test_write_html_header_and_self_contained(tmp_path, lens):
    path = write_html(tmp_path / "r.html", _report_figures(lens), title="Logit lens <test>", model_name="tiny-english",
                      prompts=[HOSTILE_PROMPT, "second"], notes="A small offline model.", metadata={"k": 3})
    text = path.read_text(encoding="utf-8")
    assert html.escape(HOSTILE_PROMPT) in text and HOSTILE_PROMPT not in text
    assert "<title>Logit lens &lt;test&gt;</title>" in text
    assert "tiny-english" in text and "A small offline model." in text and "<dd>3</dd>" in text
    assert datetime.now(timezone.utc).strftime("%Y-%m-%d") in text
    for name, version in versions().items():
        assert f"{name} {html.escape(version)}" in text
    # No script from anywhere but this file: no src attribute on any script, no stylesheet links.
    assert re.findall(r"<script\b[^>]*\bsrc\s*=", text, flags=re.IGNORECASE) == []
    assert "<link" not in text.lower()
    # plotly.js is embedded once, inline.
    assert text.count(get_plotlyjs()[:500]) == 1
    assert [m for m in re.findall(r"<h2>(.*?)</h2>", text)] == list(_report_figures(lens))
    assert text.count('class="plotly-graph-div"') == 5


def test_write_html_list_has_no_headings(tmp_path, lens):
    path = write_html(tmp_path / "r.html", [kl_per_layer(lens)], title="t", model_name="m", prompts="p")
    text = path.read_text(encoding="utf-8")
    assert "<h2>" not in text and text.count('class="plotly-graph-div"') == 1


@pytest.mark.parametrize("error", [RuntimeError("serialisation failed"), KeyboardInterrupt()])
@pytest.mark.parametrize("previous", [None, "<html>the previous report</html>"])
def test_write_html_interrupted_leaves_previous_file(tmp_path, monkeypatch, lens, error, previous):
    target = tmp_path / "report.html"
    if previous is not None:
        target.write_text(previous, encoding="utf-8")
    real_to_html = pio.to_html
    calls, partial_sizes = [], []

    def failing_to_html(fig, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # mid-way: the header and the first figure are already written
            partial_sizes.extend(f.stat().st_size for f in tmp_path.iterdir() if f.name.endswith(".tmp"))
            raise error
        return real_to_html(fig, **kwargs)

    monkeypatch.setattr(pio, "to_html", failing_to_html)
    with pytest.raises(type(error)):
        write_html(target, [kl_per_layer(lens), kl_per_layer(lens, 0), kl_per_layer(lens, 1)],
                   title="t", model_name="m", prompts="p")
    assert len(partial_sizes) == 1 and partial_sizes[0] > 1_000_000  # plotly.js was half-way in a temp file
    if previous is None:
        assert not target.exists()
    else:
        assert target.read_text(encoding="utf-8") == previous
    assert sorted(f.name for f in tmp_path.iterdir()) == ([] if previous is None else ["report.html"])


# -- in the browser -------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not chromium_available(), reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run does)")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, lens):
    """The report as headless Chromium shows it, opened with the network cut off."""
    path = write_html(tmp_path_factory.mktemp("report") / "lens.html", _report_figures(lens),
                      title="Logit lens", model_name="tiny-english", prompts=[HOSTILE_PROMPT, lens.prompt],
                      notes="A small offline model, not GPT-2.")
    with open_page(path, offline=True) as page:
        figures = {figure["id"]: figure for figure in page.svg_texts()}
        script_token = PROMPT_IDS.index(1)
        out = dict(
            figures=figures,
            text=page.text(),
            pwned=page.evaluate("window.__pwned === undefined ? null : window.__pwned"),
            hover=page.hover("figure-0", xval=script_token, yval=0),
            scripts_with_src=page.evaluate("document.querySelectorAll('script[src]').length"),
        )
        page.evaluate("1")  # let late console messages arrive
        out.update(errors=list(page.errors), requests=list(page.requests))
    return out


@needs_chromium
def test_browser_no_errors_and_no_network(rendered):
    assert rendered["errors"] == []
    assert rendered["requests"] and all(url.startswith(("file:", "data:")) for url in rendered["requests"])
    assert rendered["scripts_with_src"] == 0
    assert len(rendered["figures"]) == 5


@needs_chromium
def test_browser_heatmap_shows_tokens_literally(rendered, lens):
    heatmap = rendered["figures"]["figure-0"]
    n = len(PROMPT_IDS)  # the input tokens below, the actual next tokens on the top axis
    assert heatmap["xticks"][:n] == [shown(VOCAB[i]) for i in PROMPT_IDS]
    assert heatmap["xticks"][n:] == [shown(VOCAB[i]) for i in PROMPT_IDS[1:]] + ["?"]
    assert heatmap["yticks"] == STREAMS
    expected_cells = [shown(VOCAB[int(i)]) for i in lens.top_ids[:, :, 0].flatten()]
    assert sorted(heatmap["cells"]) == sorted(expected_cells)
    for literal in ["␣<script>", "␣&amp;", "<b>x</b>", "$x$", "%{z}"]:
        assert literal in heatmap["xticks"]


@needs_chromium
def test_browser_hover_shows_tokens_literally(rendered, lens):
    hover = "\n".join(rendered["hover"])
    p = PROMPT_IDS.index(1)
    assert f"position {p}: ␣<script> → next" in hover
    assert f"target {shown(VOCAB[PROMPT_IDS[p + 1]])}: p = " in hover
    for token_id in lens.top_ids[0, p].tolist():
        assert shown(VOCAB[token_id]) in hover


@needs_chromium
def test_browser_header_shows_prompt_as_text(rendered, lens):
    assert rendered["pwned"] is None  # neither the <script> nor the onerror ran
    text = rendered["text"]
    assert HOSTILE_PROMPT in text
    assert "tiny-english" in text and "A small offline model, not GPT-2." in text
    attribution = rendered["figures"]["figure-4"]
    assert "logit( Paris) - logit( &amp;)" in " ".join(attribution["all"])


def test_report_package_exports():
    import gpt2probe.report as report

    # the first release's names keep working; figures of patching and steering joined them
    assert {"attribution_bars", "display_token", "escape_text", "kl_per_layer", "lens_heatmap",
            "target_trajectory", "write_html"} <= set(report.__all__)
    assert {"patching_heatmap", "continuations_table", "top_tokens_table", "change_bars", "Table"} <= set(report.__all__)
    assert all(callable(getattr(report, name)) for name in report.__all__)


def test_write_html_shared_plotlyjs_one_copy_per_folder(tmp_path, lens):
    """``plotlyjs="shared"``: each report loads one plotly.js file beside it, written once per folder."""
    first = write_html(tmp_path / "a.html", [kl_per_layer(lens)], title="t", model_name="m", prompts="p",
                       plotlyjs="shared")
    second = write_html(tmp_path / "b.html", [kl_per_layer(lens)], title="t", model_name="m", prompts="p",
                        plotlyjs="shared")
    library = tmp_path / f"plotly-{plotly.__version__}.min.js"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.html", library.name]
    assert library.read_text(encoding="utf-8") == get_plotlyjs()
    for page in (first, second):
        text = page.read_text(encoding="utf-8")
        assert get_plotlyjs()[:500] not in text and len(text) < 200_000
        assert re.findall(r"<script\b[^>]*\bsrc\s*=\s*\"([^\"]*)\"", text) == [library.name]
    inline = write_html(tmp_path / "c.html", [kl_per_layer(lens)], title="t", model_name="m", prompts="p")
    assert inline.read_text(encoding="utf-8").count(get_plotlyjs()[:500]) == 1
    with pytest.raises(InvalidArgumentError, match="plotlyjs"):
        write_html(tmp_path / "d.html", [], title="t", model_name="m", prompts="p", plotlyjs="cdn")


def test_write_html_figures_fill_the_page_and_hide_the_toolbar(tmp_path, lens):
    fig = kl_per_layer(lens)
    path = write_html(tmp_path / "r.html", [fig], title="t", model_name="m", prompts="p")
    text = path.read_text(encoding="utf-8")
    assert '"displayModeBar": "hover"' in text
    assert fig.layout.width is not None  # the caller's figure keeps its width; the page's copy fills the column
    laid_out = page_layout(fig)
    assert laid_out.layout.width is None and laid_out.layout.autosize and laid_out.layout.height == fig.layout.height


def test_target_trajectory_and_kl_show_both_lenses_in_their_colours(lens):
    fig = target_trajectory({"logit lens": lens, "tuned lens": lens}, -2)
    assert len(fig.data) == 4 and fig.layout.showlegend
    colours = {trace.name: trace.line.color for trace in fig.data}
    assert colours["logit lens"] != colours["tuned lens"]
    assert [t.yaxis for t in fig.data] == ["y", "y2", "y", "y2"]
    torch.testing.assert_close(torch.tensor(fig.data[2].y, dtype=torch.float32), lens.target_prob[:, -2])
    ticks = list(fig.layout.yaxis2.ticktext)
    assert ticks[:3] == ["1", "2", "5"] and "0" not in ticks  # no stray exponent digits
