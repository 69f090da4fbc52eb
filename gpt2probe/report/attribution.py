"""Plotly figure of a direct logit attribution: one bar per component and a layer x head heatmap."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..display.escape import display_token, escape_text
from ..lens.attribution import Attribution
from .style import (
    SIGNED_COLORSCALE,
    SIGNED_RULE,
    TOP_MARGIN,
    category_axis,
    colorbar,
    fmt_cell,
    prompt_chars,
    signed_colour,
    signed_range,
    title_layout,
)


def attribution_bars(attr: Attribution) -> go.Figure:
    """Direct logit attribution: one bar per component (top) and a layer x head heatmap (bottom).

    The title states the check ``sum(components) + ln_f bias = total``.
    """
    values = attr.values.float().tolist()
    heads = attr.head_values.float()
    n_layers, n_heads = heads.shape
    labels = [escape_text(label) for label in attr.labels]
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.18, row_heights=[0.45, 0.55],
                        subplot_titles=["per component", "per attention head"])
    fig.add_trace(go.Bar(
        x=list(range(len(values))), y=values, name="components",
        marker_color=[signed_colour(v) for v in values],
        hovertext=[f"<b>{label}</b><br>{v:+.4f}" for label, v in zip(labels, values)],
        hovertemplate="%{hovertext}<extra></extra>",
    ), row=1, col=1)
    zmin, zmax = signed_range(heads.flatten().tolist())
    fig.add_trace(go.Heatmap(
        z=heads.tolist(), x=list(range(n_heads)), y=list(range(n_layers)),
        text=[[fmt_cell(v, sign=True) for v in row] for row in heads.tolist()], texttemplate="%{text}",
        hovertext=[[f"<b>L{l}H{h}</b><br>{float(heads[l, h]):+.4f}<br>layer {l} attention (heads + b_O): "
                    f"{float(heads[l].sum() + attr.attn_bias[l]):+.4f}" for h in range(n_heads)]
                   for l in range(n_layers)],
        hovertemplate="%{hovertext}<extra></extra>",
        colorscale=SIGNED_COLORSCALE, zmid=0, zmin=zmin, zmax=zmax,
        colorbar=colorbar("logit", len=0.5, y=0, yanchor="bottom"),
        xgap=1, ygap=1,
    ), row=2, col=1)
    fig.update_xaxes(**category_axis(labels), row=1, col=1)
    fig.update_yaxes(title=dict(text="contribution"), row=1, col=1)
    fig.update_xaxes(title=dict(text="head"), tickmode="array", tickvals=list(range(n_heads)), row=2, col=1)
    fig.update_yaxes(title=dict(text="layer"), tickmode="array", tickvals=list(range(n_layers)), row=2, col=1)
    parts = sum(values)
    width = max(620, 40 * max(len(values), n_heads) + 220)
    fig.update_layout(
        title=title_layout(f"Direct logit attribution of {escape_text(attr.metric_label)} at position {attr.position} "
                           f"({display_token(attr.position_token)})"
                           f"<br><sup>total {attr.total:.4f} = components {parts:.4f} + ln_f bias {attr.bias_term:.4f}; "
                           f"{SIGNED_RULE}<br>prompt: {escape_text(attr.prompt, prompt_chars(width))}</sup>"),
        showlegend=False,
        height=max(660, 460 + 24 * n_layers),
        width=width,
        margin=dict(t=TOP_MARGIN + 20),
    )
    return fig
