"""Plotly figures of attention: every head's pattern behind one selector, and head scores as grids.

Figures only draw what they are given: they never run the model and never write files
(:func:`gpt2probe.report.write_html` does). Token strings are escaped for Plotly's HTML
subset with ``display_token`` before they reach a figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from ..display.escape import display_token, escape_text
from ..errors import InvalidArgumentError, ShapeError
from ..head_scores import SCORE_LABELS, head_label

PATTERN_COLORSCALE = "Blues"
SCORE_COLORSCALE = "Viridis"


def position_labels(tokens: Sequence[str]) -> list[str]:
    """Axis labels ``"{pos} {token}"``, escaped: unique even when a token repeats (a categorical axis would merge them)."""
    return [f"{pos} {display_token(token)}" for pos, token in enumerate(tokens)]


def causal_matrix(pattern: Float[Tensor, "query_pos key_pos"], decimals: int = 4) -> np.ndarray:
    """The pattern as a float array with the future (key after query) as NaN, drawn as blank cells."""
    values = pattern.detach().float().cpu().numpy().round(decimals).astype(np.float32)
    n_query, n_key = values.shape
    future = np.arange(n_key)[None, :] > np.arange(n_query)[:, None]
    return np.where(future, np.float32("nan"), values)


def head_title(layer: int, head: int, scores: Mapping[str, Float[Tensor, "layer head"]] | None) -> str:
    """``L1H0 · previous-token 0.07 · induction 1.00``: the head and its scores, for a figure title."""
    parts = [head_label(layer, head)]
    for key, grid in (scores or {}).items():
        parts.append(f"{escape_text(SCORE_LABELS.get(key, key))} {float(grid[layer, head]):.2f}")
    return " · ".join(parts)


def pattern_figure(
    patterns: Mapping[int, Float[Tensor, "head query_pos key_pos"]],
    tokens: Sequence[str],
    *,
    scores: Mapping[str, Float[Tensor, "layer head"]] | None = None,
    title: str = "Attention pattern",
) -> go.Figure:
    """One heatmap per (layer, head) in a single figure; a dropdown shows one head at a time.

    ``patterns`` maps each layer to show to its ``[head, query_pos, key_pos]`` pattern for
    one prompt; ``tokens`` are that prompt's token strings (raw: they are escaped here).
    Rows are queries, columns keys; cells above the diagonal (the future) are blank, and
    hovering a cell shows both tokens and the weight. ``scores`` (from
    :mod:`gpt2probe.head_scores`) are shown in the title of the selected head.
    """
    if not patterns:
        raise InvalidArgumentError("no layers to draw: pass at least one layer's pattern")
    labels = position_labels(tokens)
    heads = [(layer, head) for layer in sorted(patterns) for head in range(patterns[layer].shape[0])]
    for layer in patterns:
        shape = tuple(patterns[layer].shape)
        if len(shape) != 3 or shape[1:] != (len(labels), len(labels)):
            raise ShapeError(
                f"layer {layer}'s pattern has shape {shape}, expected [head, {len(labels)}, {len(labels)}] "
                f"for {len(labels)} tokens"
            )
    fig = go.Figure()
    for index, (layer, head) in enumerate(heads):
        fig.add_trace(
            go.Heatmap(
                z=causal_matrix(patterns[layer][head]),
                x=labels,
                y=labels,
                zmin=0.0,
                zmax=1.0,
                colorscale=PATTERN_COLORSCALE,
                colorbar={"title": {"text": "weight"}},
                name=head_label(layer, head),
                visible=index == 0,
                hoverongaps=False,
                hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra>" + head_label(layer, head) + "</extra>",
            )
        )
    titles = [f"{escape_text(title)}: {head_title(layer, head, scores)}" for layer, head in heads]
    buttons = [
        {
            "label": head_label(layer, head),
            "method": "update",
            "args": [{"visible": [i == index for i in range(len(heads))]}, {"title.text": titles[index]}],
        }
        for index, (layer, head) in enumerate(heads)
    ]
    side = max(420, min(900, 140 + 22 * len(labels)))
    fig.update_layout(
        title={"text": titles[0], "x": 0.0, "xanchor": "left", "y": 0.985, "yanchor": "top", "font": {"size": 14}},
        updatemenus=[{"type": "dropdown", "buttons": buttons, "active": 0, "x": 1.0, "xanchor": "right",
                      "y": 1.02, "yanchor": "bottom", "showactive": True}],
        xaxis={"title": {"text": "key (attended to)"}, "type": "category", "tickangle": -60, "constrain": "domain"},
        yaxis={"title": {"text": "query (attending)"}, "type": "category", "autorange": "reversed",
               "scaleanchor": "x", "constrain": "domain"},
        height=side + 120,
        width=max(side + 120, 820),
        margin={"t": 110},
    )
    return fig


def score_grid_figure(
    scores: Mapping[str, Float[Tensor, "layer head"]],
    *,
    title: str = "Attention head scores",
) -> go.Figure:
    """One layers x heads grid per score (rows: layers from 0 at the top; columns: heads), on a shared 0-1 scale."""
    if not scores:
        raise InvalidArgumentError("no scores to draw: pass e.g. gpt2probe.head_scores.all_head_scores(probe, prompts)")
    keys = list(scores)
    n_layers, n_heads = scores[keys[0]].shape
    for key in keys:
        if tuple(scores[key].shape) != (n_layers, n_heads):
            raise ShapeError(f"score {key!r} has shape {tuple(scores[key].shape)}, expected ({n_layers}, {n_heads})")
    n_cols = min(2, len(keys))
    n_rows = -(-len(keys) // n_cols)
    names = [escape_text(SCORE_LABELS.get(key, key)) for key in keys]
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=names, horizontal_spacing=0.08, vertical_spacing=0.12)
    show_text = n_layers * n_heads <= 400
    for index, (key, name) in enumerate(zip(keys, names)):
        fig.add_trace(
            go.Heatmap(
                z=scores[key].detach().float().cpu().numpy().round(4),
                x=list(range(n_heads)),
                y=list(range(n_layers)),
                coloraxis="coloraxis",
                name=name,
                texttemplate="%{z:.2f}" if show_text else None,
                hovertemplate="L%{y}H%{x}<br>" + name + " %{z:.3f}<extra></extra>",
            ),
            row=index // n_cols + 1,
            col=index % n_cols + 1,
        )
    fig.update_xaxes(dtick=1)
    fig.update_yaxes(dtick=1)  # layer 0 at the bottom, as in every gpt2probe figure
    for col in range(1, n_cols + 1):
        fig.update_xaxes(title_text="head", row=n_rows, col=col)
    for row in range(1, n_rows + 1):
        fig.update_yaxes(title_text="layer", row=row, col=1)
    cell = max(18, min(40, 480 // max(n_layers, n_heads)))
    fig.update_layout(
        title={"text": escape_text(title)},
        coloraxis={"colorscale": SCORE_COLORSCALE, "cmin": 0.0, "cmax": 1.0, "colorbar": {"title": {"text": "mean weight"}}},
        height=n_rows * (cell * n_layers + 140) + 60,
        width=n_cols * (cell * n_heads + 120) + 120,
    )
    return fig
