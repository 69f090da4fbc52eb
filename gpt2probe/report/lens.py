"""Plotly figures of logit-lens results: the stream x position heatmap, the target's trajectory, KL per layer.

Figures only read result objects: they never call the model and never write files
(:mod:`gpt2probe.report.html` writes reports). Every string a figure shows passes
through :func:`~gpt2probe.display.escape.display_token` or
:func:`~gpt2probe.display.escape.escape_text`, so tokens display literally.

Axes use numeric positions with explicit tick texts, never categories: Plotly merges
equal category labels, and a prompt often repeats a token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..display.escape import display_token, escape_text
from ..errors import InvalidArgumentError, PositionError
from ..lens.result import LensResult, PromptLens
from .style import TOP_MARGIN, category_axis, colorbar, fmt_nats, fmt_prob, prompt_chars, title_layout

# metric -> (what the colour shows, colour bar title, colour scale)
HEATMAP_METRICS = {
    "prob": ("probability of the top-1 token", "p(top-1)", "Blues"),
    "entropy": ("entropy of the prediction", "entropy (nats)", "Viridis"),
    "kl": ("KL divergence to the final prediction", "KL to final (nats)", "Viridis"),
    "target_prob": ("probability of the target token", "p(target)", "Blues"),
    "target_rank": ("rank of the target token (1 = top)", "target rank", "Blues"),
}


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
    return f"target {display_token(_target_token(item, p))}: p = {fmt_prob(prob)}{rank}"


def _cell_hover(item: PromptLens, stream: int, p: int) -> str:
    position = int(item.positions[p])
    lines = [
        f"<b>{escape_text(item.stream_labels[stream])}</b>, position {position}: "
        f"{display_token(item.str_tokens[position])} → next",
    ]
    for rank, (token, prob) in enumerate(zip(item.top_tokens[stream][p], item.top_probs[stream, p].tolist()), 1):
        lines.append(f"{rank}. {display_token(token)}  {fmt_prob(prob)}")
    lines.append(f"entropy {fmt_nats(float(item.entropy[stream, p]))} nats, "
                 f"KL to final {fmt_nats(float(item.kl_to_final[stream, p]))} nats")
    target = _target_line(item, stream, p)
    if target is not None:
        lines.append(target)
    return "<br>".join(lines)


def _stream_axis(item: PromptLens) -> dict:
    return category_axis([escape_text(label) for label in item.stream_labels])


CELL_WIDTH = 64  # px per position
MAX_WIDTH = 1300  # px: wider prompts get a window onto them, a range slider and panning


def _next_token_ids(item: PromptLens) -> list[int]:
    """The id of the token that actually follows each analysed position (``-1`` after the last token)."""
    n_tokens = int(item.token_ids.shape[0])
    return [int(item.token_ids[int(p) + 1]) if int(p) + 1 < n_tokens else -1 for p in item.positions]


def _metric_values(item: PromptLens, metric: str) -> tuple[list[list[float | None]], float, float] | None:
    """(z, zmin, zmax) of one metric, ``None`` where the lens lacks it (no target)."""
    def rows(t: torch.Tensor) -> list[list[float | None]]:
        return [[float(v) if math.isfinite(float(v)) else None for v in row] for row in t.float().tolist()]

    if metric == "prob":
        return rows(item.top_probs[:, :, 0]), 0.0, 1.0
    if metric in ("entropy", "kl"):
        z = item.entropy if metric == "entropy" else item.kl_to_final
        finite = z[torch.isfinite(z)]
        return rows(z), 0.0, max(float(finite.max()) if finite.numel() else 1.0, 1e-6)
    if item.target_prob is None or item.target_rank is None or item.target_ids is None:
        return None
    missing = (item.target_ids < 0)[None, :].expand_as(item.target_prob)
    if metric == "target_prob":
        return rows(item.target_prob.float().masked_fill(missing, float("nan"))), 0.0, 1.0
    log_rank = (item.target_rank.float() + 1).log10().masked_fill(missing, float("nan"))  # rank 1 -> 0
    finite = log_rank[torch.isfinite(log_rank)]
    return rows(log_rank), 0.0, max(float(finite.max()) if finite.numel() else 1.0, 1.0)


def _rank_ticks(zmax: float) -> tuple[list[float], list[str]]:
    decades = range(int(math.floor(zmax)) + 1)
    return [float(d) for d in decades], [f"{10 ** d:,}" for d in decades]


def lens_heatmap(item: PromptLens, metric: str = "prob", *, lens_name: str = "Logit lens") -> go.Figure:
    """Streams (y, embeddings at the bottom) by analysed positions (x, the input tokens).

    Each cell shows the stream's top-1 prediction for the next token. The colour is, as
    chosen with the buttons above the figure (or ``metric``): that prediction's
    probability (``"prob"``), the entropy of the whole prediction (``"entropy"``), its KL
    divergence to the final prediction (``"kl"``), the target's probability
    (``"target_prob"``) or rank (``"target_rank"``, log scale, 1 = top). The top axis
    shows the token that actually comes next, and cells whose top-1 is that token are
    outlined. Long prompts open on their last positions with a range slider under the
    figure (drag to pan). Hovering a cell lists the top-k tokens, entropy, KL and the target.
    ``lens_name`` starts the title (``"Tuned lens"`` for a result read through a tuned lens).
    """
    if metric not in HEATMAP_METRICS:
        raise InvalidArgumentError(f"unknown metric {metric!r}; valid: {', '.join(map(repr, HEATMAP_METRICS))}")
    available = {name: values for name in HEATMAP_METRICS if (values := _metric_values(item, name)) is not None}
    if metric not in available:
        raise InvalidArgumentError(f"metric {metric!r} needs target statistics: compute the lens with targets")
    n_streams, n_pos = item.top_probs.shape[:2]
    streams, analysed = range(n_streams), range(n_pos)
    positions = [int(p) for p in item.positions]

    def style(name: str) -> dict:
        z, zmin, zmax = available[name]
        _, title, scale = HEATMAP_METRICS[name]
        bar = colorbar(title)
        if name == "target_rank":
            bar["tickvals"], bar["ticktext"] = _rank_ticks(zmax)
        return dict(z=z, zmin=zmin, zmax=zmax, colorscale=scale, reversescale=name == "target_rank", colorbar=bar)

    heatmap = go.Heatmap(
        x=positions,
        y=list(streams),
        text=[[display_token(item.top_tokens[s][p][0]) for p in analysed] for s in streams],
        texttemplate="%{text}",
        textfont=dict(size=11),
        hovertext=[[_cell_hover(item, s, p) for p in analysed] for s in streams],
        hovertemplate="%{hovertext}<extra></extra>",
        xgap=1,
        ygap=1,
        **style(metric),
    )
    next_ids = _next_token_ids(item)
    hits = [(positions[p], s) for s in streams for p in analysed
            if next_ids[p] >= 0 and int(item.top_ids[s, p, 0]) == next_ids[p]]
    marks = go.Scatter(
        x=[x for x, _ in hits], y=[y for _, y in hits], xaxis="x2", mode="markers", hoverinfo="skip",
        marker=dict(symbol="square-open", size=min(CELL_WIDTH - 8, 30), color="#d9a400", line=dict(width=2.5)),
        name="top-1 = the actual next token", showlegend=False,
    )
    fig = go.Figure([heatmap, marks])
    n_tokens = len(item.str_tokens)
    next_labels = [display_token(item.str_tokens[p + 1]) if p + 1 < n_tokens else "?" for p in positions]
    fits = (MAX_WIDTH - 260) // CELL_WIDTH
    window = [positions[0] - 0.5, positions[-1] + 0.5] if n_pos <= fits else [positions[-fits] - 0.5, positions[-1] + 0.5]
    buttons = [
        dict(label=HEATMAP_METRICS[name][1], method="restyle",
             args=[{key: [value] for key, value in style(name).items()}, [0]])
        for name in available
    ]
    x_axis = dict(title=dict(text="input token (each cell predicts the token after it)"), range=window,
                  **category_axis([display_token(t) for t in item.position_labels], positions))
    if n_pos > fits:
        x_axis["rangeslider"] = dict(visible=True, thickness=0.08)
    width = min(MAX_WIDTH, max(560, CELL_WIDTH * n_pos + 300))
    fig.update_layout(
        title=title_layout(f"{escape_text(lens_name)}: the top-1 next-token prediction of every stream"
                           f"<br><sup>colour: pick a metric above the figure; outlined: top-1 = the token that "
                           f"actually comes next (top axis)<br>prompt: {escape_text(item.prompt, prompt_chars(width))}</sup>"),
        xaxis=x_axis,
        xaxis2=dict(overlaying="x", side="top", matches="x", showgrid=False,
                    title=dict(text="actual next token"), **category_axis(next_labels, positions)),
        yaxis=dict(title=dict(text="residual stream"), **_stream_axis(item)),
        updatemenus=[dict(type="buttons", direction="right", buttons=buttons, showactive=True,
                          active=list(available).index(metric), x=0, xanchor="left", y=1.0, yanchor="bottom",
                          pad=dict(b=62), font=dict(size=11))],
        height=max(380, 26 * n_streams + 330) + (70 if n_pos > fits else 0),
        width=width,
        margin=dict(l=130, t=TOP_MARGIN + 70),
        dragmode="pan",
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
    hover = [f"<b>{escape_text(item.stream_labels[s])}</b><br>target {target}: p = {fmt_prob(prob[s])}, "
             f"rank {rank[s]}<br>top-1: {display_token(item.top_tokens[s][p][0])} "
             f"{fmt_prob(float(item.top_probs[s, p, 0]))}" for s in streams]
    width = max(640, 45 * item.n_streams + 200)
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
        title=title_layout(f"Target {target} after {token} (position {int(item.positions[p])})"
                           f"<br><sup>probability and rank across streams<br>prompt: "
                           f"{escape_text(item.prompt, prompt_chars(width))}</sup>"),
        showlegend=False,
        height=600,
        width=width,
        margin=dict(t=TOP_MARGIN),
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
    hover = [f"<b>{escape_text(item.stream_labels[s])}</b><br>KL to final {fmt_nats(values[s])} nats"
             for s in streams]
    fig = go.Figure(go.Scatter(x=streams, y=values, mode="lines+markers", name="KL to final",
                               hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    width = max(640, 45 * item.n_streams + 200)
    fig.update_layout(
        title=title_layout(f"KL divergence to the final prediction<br><sup>{where}<br>"
                           f"prompt: {escape_text(item.prompt, prompt_chars(width))}</sup>"),
        xaxis=dict(title=dict(text="residual stream"), **_stream_axis(item)),
        yaxis=dict(title=dict(text="KL to final (nats)"), rangemode="tozero"),
        height=460,
        width=width,
        margin=dict(t=TOP_MARGIN),
    )
    return fig


def lens_aggregate(result: LensResult) -> go.Figure:
    """Across prompts: mean KL to the final prediction per stream (top) and the target's rank (bottom).

    Thin lines are the prompts (KL averaged over each prompt's positions; the rank at its
    last position), thick lines the mean KL and the geometric mean rank.
    """
    items = list(result)
    if not items:
        raise InvalidArgumentError("the LensResult holds no prompts")
    labels = items[0].stream_labels
    if any(item.stream_labels != labels for item in items):
        raise InvalidArgumentError("the prompts were read at different streams; an aggregate needs the same streams")
    streams = list(range(len(labels)))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=["KL to the final prediction (nats), mean over positions",
                                        "target rank at the last position (1 = top)"])
    kl_rows = [item.kl_to_final.float().nanmean(dim=1) for item in items]
    ranks = [(item.target_rank[:, -1].float() + 1) if item.target_rank is not None and int(item.target_ids[-1]) >= 0
             else None for item in items]
    for i, (item, kl, rank) in enumerate(zip(items, kl_rows, ranks)):
        name = f"prompt {i + 1}: {escape_text(item.prompt, 40)}"
        fig.add_trace(go.Scatter(x=streams, y=kl.tolist(), mode="lines", line=dict(width=1, color="#9ecae1"),
                                 name=name, legendgroup=str(i), showlegend=False,
                                 hovertemplate=f"{name}<br>%{{y:.3f}} nats<extra></extra>"), row=1, col=1)
        if rank is not None:
            target = display_token(_target_token(item, -1 % int(item.positions.shape[0])))
            fig.add_trace(go.Scatter(x=streams, y=rank.tolist(), mode="lines", line=dict(width=1, color="#9ecae1"),
                                     name=name, legendgroup=str(i), showlegend=False,
                                     hovertemplate=f"{name}<br>target {target}: rank %{{y:,.0f}}<extra></extra>"),
                          row=2, col=1)
    mean_kl = torch.stack(kl_rows).nanmean(dim=0)
    fig.add_trace(go.Scatter(x=streams, y=mean_kl.tolist(), mode="lines+markers", line=dict(width=3, color="#08519c"),
                             name="mean", hovertemplate="mean KL %{y:.3f} nats<extra></extra>"), row=1, col=1)
    known = [r for r in ranks if r is not None]
    if known:
        geo = torch.stack(known).log().mean(dim=0).exp()
        fig.add_trace(go.Scatter(x=streams, y=geo.tolist(), mode="lines+markers", line=dict(width=3, color="#08519c"),
                                 name="geometric mean", hovertemplate="geometric mean rank %{y:,.1f}<extra></extra>"),
                      row=2, col=1)
    fig.update_yaxes(title=dict(text="KL (nats)"), rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title=dict(text="rank"), type="log", autorange="reversed", row=2, col=1)
    fig.update_xaxes(title=dict(text="residual stream"), **_stream_axis(items[0]), row=2, col=1)
    fig.update_layout(
        title=title_layout(f"All {len(items)} prompts: how fast each layer approaches the final prediction"
                           "<br><sup>thin lines: one prompt each (hover for which); thick: the mean</sup>"),
        showlegend=False, height=620, width=max(640, 45 * len(labels) + 200), margin=dict(t=TOP_MARGIN),
    )
    return fig


def kl_per_layer_compare(items: Mapping[str, PromptLens]) -> go.Figure:
    """Mean KL to the final prediction per stream, one line per lens (``{"logit lens": a, "tuned lens": b}``).

    The lenses must have read the same streams at the same positions.
    """
    if not items:
        raise InvalidArgumentError("kl_per_layer_compare needs at least one lens result")
    first_name, first = next(iter(items.items()))
    for name, item in items.items():
        if item.stream_labels != first.stream_labels or item.positions.tolist() != first.positions.tolist():
            raise InvalidArgumentError(f"{name!r} read other streams or positions than {first_name!r}: "
                             f"{item.stream_labels} vs {first.stream_labels}")
    streams = list(range(first.n_streams))
    fig = go.Figure()
    for name, item in items.items():
        values = item.kl_to_final.float().nanmean(dim=1).tolist()
        hover = [f"<b>{escape_text(name)}, {escape_text(item.stream_labels[s])}</b><br>"
                 f"KL to final {values[s]:.3f} nats" for s in streams]
        fig.add_trace(go.Scatter(x=streams, y=values, mode="lines+markers", name=escape_text(name),
                                 hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    fig.update_layout(
        title=dict(text=f"KL divergence to the final prediction, by lens<br><sup>mean over "
                        f"{int(first.positions.shape[0])} analysed positions; prompt: "
                        f"{escape_text(first.prompt, 100)}</sup>"),
        xaxis=dict(title=dict(text="residual stream"), **_stream_axis(first)),
        yaxis=dict(title=dict(text="KL to final (nats)"), rangemode="tozero"),
        height=420,
        width=max(640, 45 * first.n_streams + 200),
    )
    return fig
