"""Figures of a base-versus-fine-tuned comparison (:class:`gpt2probe.diffing.ModelDiff`).

Like every figure module, these only read the result object. Axes are numeric with explicit
tick texts (tokens repeat). Unsigned magnitudes (relative weight change, KL) use a
sequential scale; signed deltas use a diverging scale centred on zero with the package's
convention: positive blue, negative red.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..diffing import ModelDiff
from ..diffing.components import EMBED, LN_FINAL, POS_EMBED, head_component, layer_component
from ..diffing.localise import SITES
from ..display.escape import display_token, escape_text
from ..errors import InvalidArgumentError
from .style import fmt_cell

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu"  # positive = blue, as in the attribution figures
GLOBAL_COMPONENTS = (EMBED, POS_EMBED, LN_FINAL)


def _fmt(value: float) -> str:
    return "new" if math.isinf(value) else f"{value:.3g}"


def weight_change_heatmap(diff: ModelDiff) -> go.Figure:
    """Relative weight change per component: a layer x component heatmap, and the global components beside it."""
    changes = diff.weight_changes
    n_layers = sum(1 for name in changes if name.endswith(".mlp"))
    n_heads = sum(1 for name in changes if name.startswith("blocks.0.attn.") and name != "blocks.0.attn.b_O")
    columns = ["ln1", *(f"head {h}" for h in range(n_heads)), "attn b_O", "ln2", "mlp"]

    def name(layer: int, column: int) -> str:
        if 1 <= column <= n_heads:
            return head_component(layer, column - 1)
        return layer_component(layer, {0: "ln1", n_heads + 1: "attn.b_O", n_heads + 2: "ln2", n_heads + 3: "mlp"}[column])

    grid = [[changes[name(layer, c)] for c in range(len(columns))] for layer in range(n_layers)]
    finite = [v for row in grid for v in row if math.isfinite(v)] + [changes[g] for g in GLOBAL_COMPONENTS
                                                                       if math.isfinite(changes[g])]
    top = max(finite + [1e-12])
    fig = make_subplots(rows=1, cols=2, column_widths=[0.8, 0.2], horizontal_spacing=0.12,
                        subplot_titles=["per layer", "embeddings and final norm"])
    fig.add_trace(go.Heatmap(
        z=[[min(v, top) for v in row] for row in grid], x=list(range(len(columns))), y=list(range(n_layers)),
        text=[[_fmt(v) for v in row] for row in grid], texttemplate="%{text}",
        hovertext=[[f"<b>{name(l, c)}</b><br>relative change {_fmt(grid[l][c])}" for c in range(len(columns))]
                   for l in range(n_layers)],
        hovertemplate="%{hovertext}<extra></extra>", colorscale=SEQUENTIAL, zmin=0, zmax=top, xgap=1, ygap=1,
        colorbar=dict(title=dict(text="‖ΔW‖/‖W‖", side="right"), x=1.02),
    ), row=1, col=1)
    globals_ = [changes[g] for g in GLOBAL_COMPONENTS]
    fig.add_trace(go.Bar(
        x=list(range(len(GLOBAL_COMPONENTS))), y=[min(v, top) for v in globals_],
        text=[_fmt(v) for v in globals_], textposition="outside", marker_color="#2166ac",
        hovertext=[f"<b>{g}</b><br>relative change {_fmt(v)}" for g, v in zip(GLOBAL_COMPONENTS, globals_)],
        hovertemplate="%{hovertext}<extra></extra>",
    ), row=1, col=2)
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(columns))), ticktext=columns, row=1, col=1)
    fig.update_yaxes(title=dict(text="layer"), tickmode="array", tickvals=list(range(n_layers)),
                     row=1, col=1)  # layer 0 at the bottom, as in every gpt2probe figure
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(GLOBAL_COMPONENTS))), ticktext=list(GLOBAL_COMPONENTS),
                     row=1, col=2)
    changed = diff.changed_components()
    fig.update_layout(
        title=dict(text=f"Relative weight change, {escape_text(diff.tuned_name)} vs {escape_text(diff.base_name)}"
                        f"<br><sup>{len(changed)} of {len(changes)} components changed; 0 means bit-for-bit equal</sup>"),
        showlegend=False, height=max(360, 160 + 40 * n_layers), width=max(760, 70 * len(columns) + 420),
        margin=dict(t=110),
    )
    return fig


def kl_per_token(diff: ModelDiff, prompt: int = 0) -> go.Figure:
    """KL(base || tuned) of the next-token distribution after each token of one prompt."""
    values = diff.kl[prompt].tolist()
    tokens = [display_token(t) for t in diff.str_tokens[prompt]]
    fig = go.Figure(go.Bar(
        x=list(range(len(values))), y=values, marker_color="#2166ac",
        hovertext=[f"<b>{tok}</b> (position {i})<br>KL {v:.4g} nats" for i, (tok, v) in enumerate(zip(tokens, values))],
        hovertemplate="%{hovertext}<extra></extra>",
    ))
    fig.update_xaxes(title=dict(text="context ends at token"), tickmode="array", tickvals=list(range(len(tokens))),
                     ticktext=tokens, rangeslider=dict(visible=len(tokens) > 60))
    fig.update_yaxes(title=dict(text="KL(base ‖ tuned), nats"), rangemode="tozero")
    fig.update_layout(
        title=dict(text=f"Next-token divergence, prompt {prompt + 1}<br><sup>mean "
                        f"{(sum(values) / len(values)) if values else 0.0:.4g} nats over {len(values)} positions</sup>"),
        height=420, width=min(1400, max(620, 28 * len(tokens) + 200)), margin=dict(t=100),
    )
    return fig


def lens_divergence(diff: ModelDiff) -> go.Figure:
    """Per stream: residual change, and (when computed) KL between the two logit lenses and their top-1 agreement."""
    x = list(range(len(diff.stream_labels)))
    panels = [("‖Δresid‖/‖resid‖", diff.resid_change, "#4d4d4d")]
    if diff.lens_kl is not None:
        panels += [("lens KL(base ‖ tuned), nats", diff.lens_kl, "#2166ac"),
                   ("lens top-1 agreement", diff.lens_agreement, "#1b7837")]
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.09, subplot_titles=[p[0] for p in panels])
    for col, (_, values, colour) in enumerate(panels, start=1):
        fig.add_trace(go.Scatter(x=x, y=values.tolist(), mode="lines+markers", line=dict(color=colour),
                                 hovertemplate="%{y:.4g}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(tickmode="array", tickvals=x, ticktext=diff.stream_labels, row=1, col=col)
    if diff.lens_kl is not None:
        fig.update_yaxes(range=[0, 1.05], row=1, col=3)
        departure = diff.first_departure
        where = "the lenses agree at every stream" if departure is None else \
            f"first top-1 departure at {diff.stream_labels[departure]}"
    else:
        where = "lens view skipped (compare(..., lens=False))"
    fig.update_layout(title=dict(text=f"Where in depth the models part<br><sup>{where}</sup>"), showlegend=False,
                      height=400, width=400 * len(panels), margin=dict(t=100))
    return fig


def head_score_deltas(diff: ModelDiff) -> go.Figure:
    """``tuned - base`` for each head score, one layer x head heatmap each (blue: the tuned head scores higher)."""
    deltas = diff.head_score_deltas
    fig = make_subplots(rows=1, cols=len(deltas), horizontal_spacing=0.08,
                        subplot_titles=[f"{key.replace('_', '-')} score" for key in deltas])
    finite = [d[torch.isfinite(d)].abs() for d in deltas.values()]  # NaN (a score with nothing to count) is a gap,
    bound = max([float(f.max()) for f in finite if f.numel()] + [1e-6])  # not the colour scale's bound
    for col, (key, delta) in enumerate(deltas.items(), start=1):
        base, tuned = diff.head_scores_base[key], diff.head_scores_tuned[key]
        n_layers, n_heads = delta.shape
        fig.add_trace(go.Heatmap(
            z=delta.tolist(), x=list(range(n_heads)), y=list(range(n_layers)), zmid=0, zmin=-bound, zmax=bound,
            colorscale=DIVERGING, showscale=col == len(deltas), xgap=1, ygap=1,
            text=[[fmt_cell(v, sign=True) for v in row] for row in delta.tolist()], texttemplate="%{text}",
            hovertext=[[f"<b>L{l}H{h}</b><br>base {float(base[l, h]):.3f} → tuned {float(tuned[l, h]):.3f}"
                        for h in range(n_heads)] for l in range(n_layers)],
            hovertemplate="%{hovertext}<extra></extra>", colorbar=dict(title=dict(text="Δ score", side="right")),
        ), row=1, col=col)
        fig.update_xaxes(title=dict(text="head"), tickmode="array", tickvals=list(range(n_heads)), row=1, col=col)
        fig.update_yaxes(title=dict(text="layer"), tickmode="array", tickvals=list(range(n_layers)),
                         row=1, col=col)  # layer 0 at the bottom
    fig.update_layout(title=dict(text="Head-score changes (tuned − base)"), height=420, width=1200, margin=dict(t=90))
    return fig


def localisation_heatmap(diff: ModelDiff) -> go.Figure:
    """Fraction of KL(base || tuned) restored by patching each base unit into the tuned run."""
    loc = diff.localisation
    if loc is None:
        raise InvalidArgumentError("this ModelDiff has no localisation: compare(..., patching=True) computes it")
    panels = [("per layer output", loc.layers, [s.replace("_", " ") for s in SITES])]
    if loc.heads is not None:
        panels.append(("per head (hook_z)", loc.heads, [f"head {h}" for h in range(loc.heads.shape[1])]))
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.1, column_widths=[0.35, 0.65][: len(panels)],
                        subplot_titles=[p[0] for p in panels])
    for col, (_, grid, columns) in enumerate(panels, start=1):
        n_layers = grid.shape[0]
        fig.add_trace(go.Heatmap(
            z=grid.nan_to_num(0.0).tolist(), x=list(range(len(columns))), y=list(range(n_layers)),
            zmid=0, zmin=-1, zmax=1, colorscale=DIVERGING, showscale=col == len(panels), xgap=1, ygap=1,
            text=[[fmt_cell(v) for v in row] for row in grid.tolist()], texttemplate="%{text}",
            hovertemplate="layer %{y}, %{x}<br>restored %{text}<extra></extra>",
            colorbar=dict(title=dict(text="restored", side="right")),
        ), row=1, col=col)
        fig.update_xaxes(tickmode="array", tickvals=list(range(len(columns))), ticktext=columns, row=1, col=col)
        fig.update_yaxes(title=dict(text="layer"), tickmode="array", tickvals=list(range(n_layers)),
                         row=1, col=col)  # layer 0 at the bottom
    fig.update_layout(
        title=dict(text="Where the change lives: base activations patched into the tuned run"
                        f"<br><sup>1 = patching this unit restores the base model's predictions; total KL "
                        f"{loc.total_kl:.4g} nats (values beyond ±1 are clipped in colour)</sup>"),
        height=max(380, 160 + 40 * loc.layers.shape[0]), width=1200, margin=dict(t=110),
    )
    return fig
