"""The shared figure rules of gpt2probe.report.style: number formats, rank ticks, gap warnings, windows, prompts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gpt2probe.experiments.circuit import circuit_gap_warning
from gpt2probe.report.lens import position_windows
from gpt2probe.report.style import fmt_cell, fmt_score, lens_colour, prompt_lines, rank_ticks, small_gap

from browser import chromium_available, open_page


@pytest.mark.parametrize("value,sign,text", [
    (-0.001, False, "0.00"), (-0.004, True, "0.00"), (0.0, True, "0.00"), (-0.006, False, "-0.01"),
    (0.4, True, "+0.40"), (-0.25, True, "-0.25"), (1.0, False, "1.00"), (float("nan"), False, "n/a"),
])
def test_cells_never_read_minus_zero(value, sign, text):
    assert fmt_cell(value, sign=sign) == text


@pytest.mark.parametrize("value,text", [
    (-0.000912, "-0.000912"), (3.2e-05, "+3.2e-05"), (0.0, "0"), (-0.0, "0"), (1.154, "+1.15"), (-12.5, "-12.5"),
])
def test_scores_keep_three_significant_digits(value, text):
    assert fmt_score(value) == text
    assert fmt_score(value) not in ("-0.0000", "+0.0000")


def test_rank_ticks_thin_to_decades_where_they_would_crowd():
    assert rank_ticks(1.0, 50_000.0, max_ticks=8) == ([1.0, 10.0, 100.0, 1000.0, 10000.0],
                                                       ["1", "10", "100", "1,000", "10,000"])
    assert rank_ticks(1.0, 200.0, max_ticks=8) == rank_ticks(1.0, 200.0)  # 8 ticks fit: 1-2-5 kept


def test_rank_ticks_are_1_2_5_per_decade_written_out():
    values, texts = rank_ticks(1.0, 300.0)
    assert texts == ["1", "2", "5", "10", "20", "50", "100", "200", "500"][: len(texts)]
    assert values == [1, 2, 5, 10, 20, 50, 100, 200]
    assert rank_ticks(1.0, 50_000.0)[1][-1] == "50,000"
    assert rank_ticks(1.0, 1.0) == ([1.0], ["1"])


def test_small_gap_and_the_circuit_warning():
    assert small_gap(0.0497, 0.0505, 0.0506) and not small_gap(3.0, -1.0, 3.0) and small_gap(0.0, 0.0, 0.0)
    noisy = SimpleNamespace(clean_metric=0.0497, corrupted_metric=0.0505, circuit_metric=0.0497, recovered=0.994)
    warning = circuit_gap_warning(noisy)
    assert warning is not None and "gap of 0.0008" in warning and "99.4%" in warning
    clear = SimpleNamespace(clean_metric=3.0, corrupted_metric=-1.0, circuit_metric=2.5, recovered=0.875)
    assert circuit_gap_warning(clear) is None


@pytest.mark.parametrize("n,fits", [(5, 15), (15, 15), (16, 15), (54, 15), (1024, 16)])
def test_position_windows_cover_every_position_and_end_at_the_last(n, fits):
    positions = list(range(3, 3 + n))
    windows = position_windows(positions, fits)
    spans = [span for _, span in windows]
    assert spans[-1][1] == positions[-1] + 0.5 and spans[0][0] == positions[0] - 0.5
    assert all(0 < b - a <= fits for a, b in spans)
    assert {p for a, b in spans for p in range(round(a + 0.5), round(b + 0.5))} == set(positions)
    assert len(windows) == -(-n // fits)


def test_prompt_lines_wrap_and_say_when_cut():
    assert prompt_lines("a <b> prompt", 40) == "prompt: a &lt;b&gt; prompt"
    wrapped = prompt_lines("x" * 100, 40)
    assert wrapped.count("<br>") == 2 and "more characters" not in wrapped
    cut = prompt_lines("y" * 130, 40)
    assert "… (10 more characters: the whole prompt is in the report's header)" in cut
    *shown, said = cut.removeprefix("prompt: ").split("<br>")
    assert [len(line) for line in shown] == [40, 40, 40] and said.startswith("… (")  # no line runs past the width


def test_lens_colours_are_neither_signed_colour():
    assert lens_colour("logit lens") != lens_colour("tuned lens")
    assert {lens_colour("logit lens"), lens_colour("Tuned lens")}.isdisjoint({"#2166ac", "#b2182b"})


needs_chromium = pytest.mark.skipif(not chromium_available(), reason="Debian's chromium is not installed")


@needs_chromium
def test_table_rows_line_up_and_every_row_shows(tmp_path):
    import torch

    from gpt2probe.experiments.circuit import edge_table
    from gpt2probe.interventions.agreement import Agreement
    from gpt2probe.report import write_html
    from gpt2probe.report.attribution_patching import disagreement_table

    class Scored:  # what edge_table reads of an EdgeScores
        clean_metric, corrupted_metric, method = 2.0, -1.0, "atp*"

        def top(self, n):  # "->" escapes to "-&gt;": markup in the edge column only
            return [(f"MLP{i % 4} -> L3H{i % 3}.v", 7.69 - i) for i in range(n)]

        def __len__(self):
            return 479

    worst = tuple((f"L{i % 4} pos {i} ␣queue", 0.5 * i, -0.25 * i) for i in range(10))  # no markup anywhere
    agreement = Agreement(pearson=0.5, spearman=0.5, k=3, top_k_overlap=1.0, worst=worst,
                          labels=tuple(label for label, _, _ in worst), exact=torch.zeros(10), estimate=torch.zeros(10))
    figures = {"Top edges": edge_table(Scored(), 20), "Disagree": disagreement_table(agreement, method="atp")}
    path = write_html(tmp_path / "t.html", figures, title="t", model_name="m", prompts="p")
    with open_page(path) as page:
        tables = page.evaluate("""[...document.querySelectorAll('.js-plotly-plot')].map(gd => {
            const bottom = gd.getBoundingClientRect().bottom;
            return [...gd.querySelectorAll('.y-column')].map(c => [...c.querySelectorAll('.cell-text')]
                .map(t => { const b = t.getBoundingClientRect(); return [t.textContent, b.y, bottom - b.bottom]; }));
        })""")
    edges, disagree = tables
    assert [text for text, _, _ in edges[1]][:2] == ["MLP0 -> L3H0.v", "MLP1 -> L3H1.v"]  # shown literally
    for columns, n in ((edges, 20), (disagree, 10)):
        assert all(len(column) == n + 1 for column in columns)  # every row and the header drawn
        for row in zip(*([y for _, y, _ in column] for column in columns)):  # a row's cells start at one height
            assert max(row) - min(row) < 0.5, columns
        room = [below for column in columns for _, _, below in column]
        assert 0 < min(room) < 60, room  # the last row inside the figure, and no wide empty band under it


@needs_chromium
def test_patching_heatmaps_start_just_under_their_subtitle(tmp_path):
    import torch

    from gpt2probe.interventions.patching import PatchingResult
    from gpt2probe.report import write_html
    from gpt2probe.report.patching import patching_heatmap

    values = torch.linspace(-0.2, 1.0, 4 * 6).view(4, 6)
    result = PatchingResult(kind="head", direction="denoise", values=values, axis_names=("layer", "head"),
                            axis_labels=(("L0", "L1", "L2", "L3"), tuple(f"H{h}" for h in range(6))),
                            clean_metric=2.0, corrupted_metric=-1.0, normalized=True)
    fig = patching_heatmap(result, "Head outputs", "one head's output at every position")
    path = write_html(tmp_path / "p.html", [fig], title="t", model_name="m", prompts="p")
    with open_page(path) as page:
        subtitle_end, plot_top = page.evaluate("""[
            Math.max(...[...document.querySelector('.gtitle').querySelectorAll('tspan')].map(t => t.getBoundingClientRect().bottom)),
            document.querySelector('.nsewdrag').getBoundingClientRect().top]""")
    assert 5 < plot_top - subtitle_end < 40  # a small gap under the subtitle, not an empty band (was ~65 px)
