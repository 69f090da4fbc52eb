"""Plotly figures of logit-lens results: the stream x position heatmap, the target's trajectory, KL per layer.

Figures only read result objects: they never call the model and never write files
(:mod:`gpt2probe.report.html` writes reports). Every string a figure shows passes
through :func:`~gpt2probe.report.escape.display_token` or
:func:`~gpt2probe.report.escape.escape_text`, so tokens display literally.

Axes use numeric positions with explicit tick texts, never categories: Plotly merges
equal category labels, and a prompt often repeats a token.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..errors import InvalidArgumentError, PositionError
from ..lens.result import PromptLens
from .escape import display_token, escape_text

# metric -> (what the colour shows, colour bar title, colour scale)
HEATMAP_METRICS = {
    "prob": ("probability of the top-1 token", "p(top-1)", "Blues"),
    "entropy": ("entropy of the prediction", "entropy (nats)", "Viridis"),
    "kl": ("KL divergence to the final prediction", "KL to final (nats)", "Viridis"),
}
PROMPT_CHARS = 100  # longest prompt shown in a figure title


def _fmt_prob(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 1e-3 or p == 0 else f"{p:.1e}"


def _fmt_nats(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def _analysed_index(item: PromptLens, position: int) -> int:
    """``position`` indexes the analysed positions (like a list); return it as 0..n-1."""
    n = int(item.positions.shape[0])
    if not -n <= position < n:
        raise PositionError(f"position {position} is out of range: the prompt has {n} analysed positions "
                         f"(valid: {-n} to {n - 1})")
    return position % n


def _has_target(item: PromptLens, p: int) -> bool:
    """Whether analysed position ``p`` has a target (the next token is known or was given)."""
    if item.target_prob is None or item.target_ids is None:
        return False
    return int(item.target_ids[p]) >= 0 and bool(torch.isfinite(item.target_prob[:, p]).any())


def _target_token(item: PromptLens, p: int) -> str:
    if item.target_tokens is not None:
        return item.target_tokens[p]
    return f"id {int(item.target_ids[p])}"


def _target_line(item: PromptLens, stream: int, p: int) -> str | None:
    if not _has_target(item, p):
        return None
    prob = float(item.target_prob[stream, p])
    rank = "" if item.target_rank is None else f", rank {int(item.target_rank[stream, p]) + 1}"  # 1 = top
    return f"target {display_token(_target_token(item, p))}: p = {_fmt_prob(prob)}{rank}"


def _cell_hover(item: PromptLens, stream: int, p: int) -> str:
    position = int(item.positions[p])
    lines = [
        f"<b>{escape_text(item.stream_labels[stream])}</b>, position {position}: "
        f"{display_token(item.str_tokens[position])} → next",
    ]
    for rank, (token, prob) in enumerate(zip(item.top_tokens[stream][p], item.top_probs[stream, p].tolist()), 1):
        lines.append(f"{rank}. {display_token(token)}  {_fmt_prob(prob)}")
    lines.append(f"entropy {_fmt_nats(float(item.entropy[stream, p]))} nats, "
                 f"KL to final {_fmt_nats(float(item.kl_to_final[stream, p]))} nats")
    target = _target_line(item, stream, p)
    if target is not None:
        lines.append(target)
    return "<br>".join(lines)


def _stream_axis(item: PromptLens) -> dict:
    return dict(tickmode="array", tickvals=list(range(item.n_streams)),
                ticktext=[escape_text(label) for label in item.stream_labels])


def _position_axis(item: PromptLens) -> dict:
    positions = [int(p) for p in item.positions]
    return dict(tickmode="array", tickvals=positions,
                ticktext=[display_token(token) for token in item.position_labels])


def lens_heatmap(item: PromptLens, metric: str = "prob") -> go.Figure:
    """Streams (y, embeddings at the bottom) by analysed positions (x, the input tokens).

    Each cell shows the stream's top-1 prediction for the next token; its colour is that
    prediction's probability (``metric="prob"``), the entropy of the whole prediction
    (``"entropy"``) or its KL divergence to the final prediction (``"kl"``). Hovering a
    cell lists the top-k tokens, entropy, KL and the target, when there is one.
    """
    if metric not in HEATMAP_METRICS:
        raise InvalidArgumentError(f"unknown metric {metric!r}; valid: {', '.join(map(repr, HEATMAP_METRICS))}")
    what, colorbar_title, colorscale = HEATMAP_METRICS[metric]
    if metric == "prob":
        z, zmin, zmax = item.top_probs[:, :, 0], 0.0, 1.0
    else:
        z = item.entropy if metric == "entropy" else item.kl_to_final
        finite = z[torch.isfinite(z)]
        zmin, zmax = 0.0, max(float(finite.max()) if finite.numel() else 1.0, 1e-6)
    n_streams, n_pos = z.shape
    streams, analysed = range(n_streams), range(n_pos)
    heatmap = go.Heatmap(
        z=z.float().tolist(),
        x=[int(p) for p in item.positions],
        y=list(streams),
        text=[[display_token(item.top_tokens[s][p][0]) for p in analysed] for s in streams],
        texttemplate="%{text}",
        textfont=dict(size=11),
        hovertext=[[_cell_hover(item, s, p) for p in analysed] for s in streams],
        hovertemplate="%{hovertext}<extra></extra>",
        colorscale=colorscale,
        zmin=zmin,
        zmax=zmax,
        colorbar=dict(title=dict(text=colorbar_title)),
        xgap=1,
        ygap=1,
    )
    fig = go.Figure(heatmap)
    fig.update_layout(
        title=dict(text=f"Logit lens: top-1 next-token prediction per stream; colour = {what}"
                        f"<br><sup>prompt: {escape_text(item.prompt, PROMPT_CHARS)}</sup>"),
        xaxis=dict(title=dict(text="input token (the prediction is for the token after it)"), **_position_axis(item)),
        yaxis=dict(title=dict(text="residual stream"), **_stream_axis(item)),
        height=max(320, 26 * n_streams + 190),
        width=max(520, 70 * n_pos + 260),
        margin=dict(l=130),
    )
    return fig


def target_trajectory(item: PromptLens, position: int = -1) -> go.Figure:
    """The target token's probability (top) and rank (bottom, log axis) across streams.

    ``position`` indexes the analysed positions like a list (``-1``: the last analysed).
    """
    if item.target_prob is None or item.target_rank is None or item.target_ids is None:
        raise InvalidArgumentError("this PromptLens has no target statistics (target_prob / target_rank): "
                         "compute the lens with targets, or use a position whose next token is known")
    p = _analysed_index(item, position)
    if not _has_target(item, p):
        with_target = [int(item.positions[i]) for i in range(item.positions.shape[0]) if _has_target(item, i)]
        raise InvalidArgumentError(f"analysed position {position} (prompt position {int(item.positions[p])}) has no target; "
                         f"prompt positions with a target: {with_target}")
    prob = item.target_prob[:, p].tolist()
    rank = (item.target_rank[:, p] + 1).tolist()  # stored 0-based; shown 1-based (1 = top prediction)
    target = display_token(_target_token(item, p))
    streams = list(range(item.n_streams))
    hover = [f"<b>{escape_text(item.stream_labels[s])}</b><br>target {target}: p = {_fmt_prob(prob[s])}, "
             f"rank {rank[s]}<br>top-1: {display_token(item.top_tokens[s][p][0])} "
             f"{_fmt_prob(float(item.top_probs[s, p, 0]))}" for s in streams]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    fig.add_trace(go.Scatter(x=streams, y=prob, mode="lines+markers", name="probability",
                             hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=streams, y=rank, mode="lines+markers", name="rank",
                             hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"), row=2, col=1)
    # Rank 1 is the best: reversed so that up means "more predicted" in both panels.
    fig.update_yaxes(title=dict(text="p(target)"), range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title=dict(text="rank (1 = top)"), type="log", autorange="reversed", row=2, col=1)
    fig.update_xaxes(**_stream_axis(item), row=2, col=1)
    fig.update_xaxes(title=dict(text="residual stream"), row=2, col=1)
    token = display_token(item.str_tokens[int(item.positions[p])])
    fig.update_layout(
        title=dict(text=f"Target {target} after {token} (position {int(item.positions[p])})"
                        f"<br><sup>probability and rank across streams; prompt: {escape_text(item.prompt, PROMPT_CHARS)}</sup>"),
        showlegend=False,
        height=560,
        width=max(640, 45 * item.n_streams + 200),
    )
    return fig


def kl_per_layer(item: PromptLens, position: int | None = None) -> go.Figure:
    """KL divergence from each stream's prediction to the final one, in nats.

    With ``position=None`` the mean over the analysed positions (ignoring ``nan``), else at
    one analysed position (indexed like a list).
    """
    streams = list(range(item.n_streams))
    if position is None:
        kl = item.kl_to_final.float().nanmean(dim=1)
        where = f"mean over {int(item.positions.shape[0])} analysed positions"
    else:
        p = _analysed_index(item, position)
        kl = item.kl_to_final[:, p].float()
        where = f"at position {int(item.positions[p])} ({display_token(item.str_tokens[int(item.positions[p])])})"
    values = kl.tolist()
    hover = [f"<b>{escape_text(item.stream_labels[s])}</b><br>KL to final {_fmt_nats(values[s])} nats"
             for s in streams]
    fig = go.Figure(go.Scatter(x=streams, y=values, mode="lines+markers", name="KL to final",
                               hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_layout(
        title=dict(text=f"KL divergence to the final prediction<br><sup>{where}; "
                        f"prompt: {escape_text(item.prompt, PROMPT_CHARS)}</sup>"),
        xaxis=dict(title=dict(text="residual stream"), **_stream_axis(item)),
        yaxis=dict(title=dict(text="KL to final (nats)"), rangemode="tozero"),
        height=420,
        width=max(640, 45 * item.n_streams + 200),
    )
    return fig
