"""The logit-lens report as a reader uses it: next tokens and hits marked, a metric switch, long prompts, several prompts.

Figures are built from PromptLens objects whose statistics are computed here from random
logits (as in test_report.py), so every value is checked against an independent
computation; the page itself is opened in headless Chromium when it is installed.
"""

from __future__ import annotations

import pytest
import torch

from gpt2probe.lens import LensResult, PromptLens
from gpt2probe.report import display_token, lens_aggregate, lens_heatmap, write_html
from gpt2probe.report.lens import MAX_WIDTH

from browser import chromium_available, open_page

needs_chromium = pytest.mark.skipif(not chromium_available(), reason="Debian's chromium is not installed")


def make_lens(ids: list[int], n_streams: int = 5, vocab: int = 23, k: int = 3, seed: int = 0,
              hits: list[tuple[int, int]] = ()) -> PromptLens:
    """A PromptLens from random logits; ``hits`` (stream, position) get the next token as top-1."""
    g = torch.Generator().manual_seed(seed)
    n_pos = len(ids)
    logits = 2 * torch.randn(n_streams, n_pos, vocab, generator=g)
    for s, p in hits:
        logits[s, p, ids[p + 1]] = 50.0
    logprobs = logits.log_softmax(-1)
    probs = logprobs.exp()
    top_probs, top_ids = probs.topk(k, dim=-1)
    target = 7
    rank = (probs > probs[..., target : target + 1]).sum(-1)
    words = [f"t{i}" if i % 3 else f" w{i}" for i in range(vocab)]
    return PromptLens(
        prompt="".join(words[i] for i in ids), str_tokens=[words[i] for i in ids], token_ids=torch.tensor(ids),
        positions=torch.arange(n_pos), stream_labels=["embed", *(f"L{i}" for i in range(n_streams - 1))],
        top_ids=top_ids, top_probs=top_probs,
        top_tokens=[[[words[i] for i in top_ids[s, p].tolist()] for p in range(n_pos)] for s in range(n_streams)],
        entropy=-(probs * logprobs).sum(-1), kl_to_final=(probs[-1] * (logprobs[-1] - logprobs)).sum(-1),
        target_ids=torch.full((n_pos,), target), target_tokens=[words[target]] * n_pos,
        target_prob=probs[..., target], target_logprob=logprobs[..., target], target_rank=rank,
    )


IDS = [1, 4, 2, 9, 4, 11, 3, 5]
HITS = [(1, 0), (3, 0), (4, 2), (2, 5)]


@pytest.fixture(scope="module")
def item():
    return make_lens(IDS, hits=HITS)


def test_cells_whose_top1_is_the_next_token_are_marked(item):
    fig = lens_heatmap(item)
    marks = fig.data[1]
    expected = {(p, s) for s in range(item.n_streams) for p in range(len(IDS) - 1)
                if int(item.top_ids[s, p, 0]) == IDS[p + 1]}
    assert set(HITS) <= {(s, p) for p, s in expected}  # the planted hits are found...
    assert set(zip(marks.x, marks.y)) == expected  # ...and exactly the cells where top-1 = next token
    # Outlined in a near-black without hue (as the dashboards' peak token), never in a hue of a lens's line (the tuned
    # lens's orange) or of a colour scale, and lined with white inside so that it shows on the darkest cells.
    r, g, b = (int(marks.marker.color[i:i + 2], 16) for i in (1, 3, 5))
    assert r == g == b < 0x40 and marks.marker.symbol == "square-open"
    lining = fig.data[2]
    assert lining.marker.color == "#fff" and (lining.x, lining.y) == (marks.x, marks.y)
    assert lining.marker.size < marks.marker.size


def test_next_tokens_on_a_second_axis(item):
    fig = lens_heatmap(item)
    top = fig.layout.xaxis2
    assert top.overlaying == "x" and top.side == "top" and top.matches == "x"
    assert list(top.tickvals) == list(range(len(IDS)))
    assert list(top.ticktext) == [display_token(item.str_tokens[p + 1]) for p in range(len(IDS) - 1)] + ["?"]


def test_metric_switch_restyles_to_each_metric(item):
    fig = lens_heatmap(item)
    (menu,) = fig.layout.updatemenus
    by_label = {button.label: button.args[0] for button in menu.buttons}
    assert set(by_label) == {"p(top-1)", "entropy (nats)", "KL to final (nats)", "p(target)", "target rank"}
    expected = {
        "p(top-1)": item.top_probs[:, :, 0], "entropy (nats)": item.entropy, "KL to final (nats)": item.kl_to_final,
        "p(target)": item.target_prob, "target rank": (item.target_rank.float() + 1).log10(),
    }
    for label, values in expected.items():
        torch.testing.assert_close(torch.tensor(by_label[label]["z"][0], dtype=torch.float32), values.float())
    assert all(button.method == "restyle" and list(button.args[1]) == [0] for button in menu.buttons)
    rank_bar = by_label["target rank"]["colorbar"][0]
    assert rank_bar["ticktext"][0] == "1" and rank_bar["tickvals"][0] == 0.0  # log10(rank 1) = 0
    assert menu.active == 0 and lens_heatmap(item, "kl").layout.updatemenus[0].active == 2
    # Scales travel as explicit lists: a name would be resolved by plotly.js in the browser, whose "Blues" is
    # another scale (dark blue to grey) than plotly.py's, so a click would change what a colour means.
    scales = {label: args["colorscale"][0] for label, args in by_label.items()}
    assert all(isinstance(scale, (list, tuple)) and len(scale) > 2 for scale in scales.values())
    assert [list(stop) for stop in fig.data[0].colorscale] == [list(stop) for stop in scales["p(top-1)"]]
    assert scales["p(target)"] == scales["p(top-1)"] and by_label["target rank"]["reversescale"] == [True]


def test_long_prompt_gets_a_fixed_width_and_a_menu_of_readable_windows():
    short = lens_heatmap(make_lens(IDS))
    assert len(short.layout.updatemenus) == 1 and "shown at a time" not in short.layout.title.text
    assert short.layout.width < MAX_WIDTH
    ids = [(7 * i) % 23 for i in range(1024)]
    fig = lens_heatmap(make_lens(ids, n_streams=13, k=2))
    assert fig.layout.width == MAX_WIDTH
    assert not fig.layout.xaxis.rangeslider.visible  # no squashed preview of 1,024 cells
    lo, hi = fig.layout.xaxis.range
    assert hi == 1023.5 and 0 < lo < hi  # opens on the last positions, where the prompt's answer is
    fits = round(hi - lo)
    assert f"1024 positions, {fits} shown at a time" in fig.layout.title.text  # the reader is told
    menu = fig.layout.updatemenus[1]
    spans = [tuple(b.args[0]["xaxis.range"]) for b in menu.buttons]
    assert menu.active == len(spans) - 1 and spans[-1] == (lo, hi)
    assert spans[0][0] == -0.5 and all(b - a <= fits for a, b in spans)
    covered = {p for a, b in spans for p in range(round(a + 0.5), round(b + 0.5))}
    assert covered == set(range(1024))  # every position is in some window


def test_aggregate_is_the_mean_kl_and_geometric_mean_rank():
    items = [make_lens(IDS, seed=s) for s in range(3)]
    fig = lens_aggregate(LensResult(model_name="m", items=items, k=3))
    by_name = {trace.name: trace for trace in fig.data}
    mean_kl = torch.stack([i.kl_to_final.nanmean(dim=1) for i in items]).mean(dim=0)
    torch.testing.assert_close(torch.tensor(by_name["mean"].y, dtype=torch.float32), mean_kl)
    ranks = torch.stack([i.target_rank[:, -1].float() + 1 for i in items])
    torch.testing.assert_close(torch.tensor(by_name["geometric mean"].y, dtype=torch.float32),
                               ranks.log().mean(dim=0).exp())
    assert len(fig.data) == 2 * 3 + 2


@needs_chromium
def test_long_prompt_report_in_a_browser(tmp_path):
    """1,024 positions: the page renders without errors, the figure and its colour bar fit the window,
    and the title does not run under the toolbar."""
    ids = [(7 * i) % 23 for i in range(1024)]
    # 3 streams keep the test light; the width, slider and colour bar do not depend on the stream count
    path = write_html(tmp_path / "long.html", {"lens": lens_heatmap(make_lens(ids, n_streams=3, k=1))},
                      title="long", model_name="m", prompts=["x"])
    with open_page(path, offline=True) as page:
        box = page.evaluate("""(() => {
          const r = s => { const e = document.querySelector(s); if (!e) return null;
                           const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
          return {width: window.innerWidth, colorbar: r('#figure-0 .colorbar'), title: r('#figure-0 .gtitle'),
                  modebar: r('#figure-0 .modebar-container'), cbtitle: r('#figure-0 .cbtitle'),
                  slider: r('#figure-0 .rangeslider-container'), menu: r('#figure-0 .updatemenu-container'),
                  cbticks: [...document.querySelectorAll('#figure-0 .cbaxis text')].map(e => {
                      const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; })};
        })()""")
        # The metric buttons keep the colours' meaning: p(top-1) reads the same before and after a round trip
        scale = "JSON.stringify(document.getElementById('figure-0')._fullData[0].colorscale)"
        before = page.evaluate(scale)
        for button in (4, 0):
            page.evaluate(f"(gd => {{ const b = gd.layout.updatemenus[0].buttons[{button}]; "
                          "return Plotly.restyle(gd, b.args[0], b.args[1]).then(() => 1); })"
                          "(document.getElementById('figure-0'))")
        after = page.evaluate(scale)
        # On a laptop's window no subtitle line (the cut prompt) runs off the figure
        page.send("Emulation.setDeviceMetricsOverride", {"width": 1366, "height": 768, "deviceScaleFactor": 1,
                                                          "mobile": False})
        page.evaluate("(gd => Plotly.Plots.resize(gd).then(() => 1))(document.getElementById('figure-0'))")
        title_right, figure_right = page.evaluate(
            "['#figure-0 .gtitle', '#figure-0 .main-svg'].map(s => document.querySelector(s).getBoundingClientRect().right)")
        title_bottom, menus_top = page.evaluate("""[document.querySelector('#figure-0 .gtitle').getBoundingClientRect().bottom,
            Math.min(...[...document.querySelectorAll('#figure-0 .updatemenu-button, #figure-0 .updatemenu-header-group')]
                     .map(e => e.getBoundingClientRect().top))]""")
        errors = list(page.errors)
    assert errors == []
    assert after == before
    assert title_right <= figure_right
    assert title_bottom <= menus_top  # the subtitle's last line (the cut prompt's note) clears the metric buttons
    assert box["colorbar"][2] <= MAX_WIDTH + 40  # the colour bar is on screen, not 5,000 px to the right
    assert box["slider"] is None and box["menu"] is not None
    title, modebar = box["title"], box["modebar"]
    assert title[1] >= modebar[3] - 1 or title[2] <= modebar[0]  # below the toolbar, or left of it
    cbtitle = box["cbtitle"]
    assert box["cbticks"]
    for tick in box["cbticks"]:  # the colour bar's title overlaps none of its tick labels (3 px of slack)
        overlap_x = min(cbtitle[2], tick[2]) - max(cbtitle[0], tick[0])
        overlap_y = min(cbtitle[3], tick[3]) - max(cbtitle[1], tick[1])
        assert overlap_x <= 3 or overlap_y <= 3, (cbtitle, tick)
