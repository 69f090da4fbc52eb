"""Plotly figure of an activation-patching result: a layer by position (or head) heatmap.

Colours follow :mod:`gpt2probe.report.style`: blue = positive (the patch restores the
clean behaviour when values are normalised), red = negative. The title states the raw
metric of the two unpatched runs next to the normalised scale, and every cell's hover
gives both, so a normalised 1.00 can always be read back in the metric's own units.
"""

from __future__ import annotations

import plotly.graph_objects as go

from ..display.escape import display_token, escape_text
from ..interventions.patching import PatchingResult
from .style import (
    NEGATIVE,
    SIGNED_COLORSCALE,
    SIGNED_RULE,
    TOP_MARGIN,
    category_axis,
    colorbar,
    fmt_cell,
    signed_range,
    small_gap,
    title_layout,
)


def patching_heatmap(result: PatchingResult, heading: str, meaning: str) -> go.Figure:
    """A layer (y) by position or head (x) heatmap of ``result.values``.

    ``heading`` titles the figure; ``meaning`` says what one cell is (e.g. "one head's
    output at every position").
    """
    values = result.values.float()
    raw = result.raw().float()
    rows, cols = result.axis_labels
    is_pos = result.axis_names[1] == "pos"
    col_text = [display_token(label) if is_pos else escape_text(label) for label in cols]
    zmin, zmax = signed_range([1.0, *values.flatten().tolist()])
    unit = ("normalised: clean = 1, corrupted = 0" if result.normalized else "metric")
    raw_scale = (f"raw metric: clean {result.clean_metric:+.4f}, corrupted {result.corrupted_metric:+.4f}, "
                 f"gap {result.clean_metric - result.corrupted_metric:+.4f}")
    scale = max(abs(result.clean_metric), abs(result.corrupted_metric), float(raw.abs().max()) if raw.numel() else 0.0)
    if result.normalized and small_gap(result.clean_metric, result.corrupted_metric, scale):
        raw_scale += (f' <span style="color:{NEGATIVE}"><b>(a small gap next to values up to {scale:.4f}: '
                      "these normalised values mostly show noise)</b></span>")
    plot_height = max(220, 30 * len(rows))  # px: room for the colour bar's ticks even with four layers
    fig = go.Figure(go.Heatmap(
        z=values.tolist(),
        x=list(range(len(cols))),
        y=list(range(len(rows))),
        text=[[fmt_cell(v) for v in row] for row in values.tolist()],
        texttemplate="%{text}",
        textfont=dict(size=10),
        hovertext=[[f"<b>{escape_text(r)} {'position ' + str(j) + ' ' if is_pos else ''}{col_text[j]}</b><br>"
                    f"patched value {float(values[i, j]):+.3f}"
                    + (f" (raw metric {float(raw[i, j]):+.4f})" if result.normalized else "")
                    for j in range(len(cols))] for i, r in enumerate(rows)],
        hovertemplate="%{hovertext}<extra></extra>",
        colorscale=SIGNED_COLORSCALE, zmid=0, zmin=zmin, zmax=zmax,
        colorbar=colorbar("normalised" if result.normalized else "metric", lenmode="pixels", len=plot_height,
                          nticks=5, tickformat=".2~f"),
        xgap=1, ygap=1,
    ))
    direction = ("clean activation patched into the corrupted run" if result.direction == "denoise"
                 else "corrupted activation patched into the clean run")
    fig.update_layout(
        title=title_layout(f"{escape_text(heading)}<br><sup>each cell: {escape_text(meaning)}; {direction}<br>"
                           f"{unit}; {SIGNED_RULE}<br>{raw_scale}</sup>"),
        xaxis=dict(title=dict(text="position (clean/corrupted token)" if is_pos else "head"), **category_axis(col_text)),
        # layer 0 at the bottom, as in every gpt2probe figure (the residual stream grows upwards)
        yaxis=dict(title=dict(text="layer"), **category_axis([escape_text(r) for r in rows])),
        # the title's three subtitle lines end ~95 px down: TOP_MARGIN leaves a small gap under them, no empty band
        height=plot_height + TOP_MARGIN + 90,
        width=max(760, (60 if is_pos else 44) * len(cols) + 260),
        margin=dict(t=TOP_MARGIN),
    )
    return fig
