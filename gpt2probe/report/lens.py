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

import plotly.colors
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor

from ..display.escape import display_token, escape_text
from ..errors import InvalidArgumentError, PositionError
from ..lens.result import LensResult, PromptLens
from .style import (
    LENS_DASH,
    OUTLINE,
    SUBTITLE_LINE,
    TOP_MARGIN,
    category_axis,
    colorbar,
    fmt_nats,
    fmt_prob,
    lens_colour,
    prompt_chars,
    prompt_lines,
    rank_ticks,
    title_layout,
)

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
    if item.target_ids is None:
        raise InvalidArgumentError("this PromptLens has no targets: compute the lens with targets")
    return f"id {int(item.target_ids[p])}"


def _target_line(item: PromptLens, stream: int, p: int) -> str | None:
    if item.target_prob is None or not _has_target(item, p):
        return None
    prob = float(item.target_prob[stream, p])
    rank = "" if item.target_rank is None else f", rank {int(item.target_rank[stream, p]) + 1}"  # 1 = top
    return f"target {display_token(_target_token(item, p))}: p = {fmt_prob(prob)}{rank}"


def _last_rank(item: PromptLens) -> Tensor | None:
    """The target's rank per stream at the last analysed position (1 = top), or None where it has no target."""
    if item.target_rank is None or item.target_ids is None or int(item.target_ids[-1]) < 0:
        return None
    return item.target_rank[:, -1].float() + 1


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


RANK_PANEL_TICKS = 8  # the rank panels are ~180 px tall: more ticks than this overlap (1-2-5 become decades)
CELL_WIDTH = 64  # px per position
MAX_WIDTH = 1300  # px: wider prompts get windows onto them (a menu, and panning)


def position_windows(positions: list[int], fits: int) -> list[tuple[str, tuple[float, float]]]:
    """Consecutive windows of at most ``fits`` positions covering ``positions``, as (menu label, x range).

    The last window ends at the last position (a long prompt opens there); the first
    starts at the first. A prompt that fits is one window.
    """
    n = len(positions)
    if n <= fits:
        return [(f"positions {positions[0]}-{positions[-1]}", (positions[0] - 0.5, positions[-1] + 0.5))]
    starts = list(range(n - fits, 0, -fits))[::-1]
    starts = [0, *starts] if starts[0] != 0 else starts
    return [(f"positions {positions[i]}-{positions[min(i + fits, n) - 1]} of {n}",
             (positions[i] - 0.5, positions[min(i + fits, n) - 1] + 0.5)) for i in starts]


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
    outlined. A prompt too long to show readably at once opens on its last positions; the
    subtitle says how many are shown, and a menu at the right (or dragging) shows the
    others. Hovering a cell lists the top-k tokens, entropy, KL and the target.
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
        # The scale as an explicit list: the buttons restyle in the browser, where plotly.js's own "Blues" is
        # another scale (dark blue to grey) than plotly.py's, and the colours would change meaning on a click.
        return dict(z=z, zmin=zmin, zmax=zmax, colorscale=[list(stop) for stop in plotly.colors.get_colorscale(scale)],
                    reversescale=name == "target_rank", colorbar=bar)

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
    # A dark outline (as the dashboards' peak token), lined with white inside so that it shows on dark cells too;
    # no hue the lenses' lines or the colour scales use.
    size = min(CELL_WIDTH - 8, 30)
    marks = go.Scatter(
        x=[x for x, _ in hits], y=[y for _, y in hits], xaxis="x2", mode="markers", hoverinfo="skip",
        marker=dict(symbol="square-open", size=size, color=OUTLINE, line=dict(width=2.5)),
        name="top-1 = the actual next token", showlegend=False,
    )
    lining = go.Scatter(
        x=marks.x, y=marks.y, xaxis="x2", mode="markers", hoverinfo="skip",
        marker=dict(symbol="square-open", size=size - 5, color="#fff", line=dict(width=1.5)),
        name="top-1 = the actual next token (lining)", showlegend=False,
    )
    fig = go.Figure([heatmap, marks, lining])
    n_tokens = len(item.str_tokens)
    next_labels = [display_token(item.str_tokens[p + 1]) if p + 1 < n_tokens else "?" for p in positions]
    fits = (MAX_WIDTH - 260) // CELL_WIDTH
    windows = position_windows(positions, fits)
    window = windows[-1][1]  # open on the last positions, where the prompt's answer is
    buttons = [
        dict(label=HEATMAP_METRICS[name][1], method="restyle",
             args=[{key: [value] for key, value in style(name).items()}, [0]])
        for name in available
    ]
    x_axis = dict(title=dict(text="input token (each cell predicts the token after it)"), range=window,
                  **category_axis([display_token(t) for t in item.position_labels], positions))
    menus = [dict(type="buttons", direction="right", buttons=buttons, showactive=True,
                  active=list(available).index(metric), x=0, xanchor="left", y=1.0, yanchor="bottom",
                  pad=dict(b=62), font=dict(size=11))]
    hidden = ""
    if len(windows) > 1:  # a long prompt: a menu of windows onto it (and panning), each readable
        menus.append(dict(
            type="dropdown", direction="down", showactive=True, active=len(windows) - 1, x=1.0, xanchor="right",
            y=1.0, yanchor="bottom", pad=dict(b=62), font=dict(size=11),
            buttons=[dict(label=label, method="relayout", args=[{"xaxis.range": list(span)}])
                     for label, span in windows]))
        hidden = (f"<br><b>{n_pos} positions, {fits} shown at a time</b>: pick others with the menu at the right "
                  "or drag the figure sideways")
    width = min(MAX_WIDTH, max(560, CELL_WIDTH * n_pos + 300))
    prompt = prompt_lines(item.prompt, prompt_chars(width))
    fig.update_layout(
        title=title_layout(f"{escape_text(lens_name)}: the top-1 next-token prediction of every stream"
                           f"<br><sup>colour: pick a metric above the figure; outlined: top-1 = the token that "
                           f"actually comes next (top axis){hidden}<br>{prompt}</sup>"),
        xaxis=x_axis,
        xaxis2=dict(overlaying="x", side="top", matches="x", showgrid=False,
                    title=dict(text="actual next token"), **category_axis(next_labels, positions)),
        yaxis=dict(title=dict(text="residual stream"), **_stream_axis(item)),
        updatemenus=menus,
        height=max(380, 26 * n_streams + 330) + SUBTITLE_LINE * (prompt.count("<br>") + bool(hidden)),
        width=width,
        margin=dict(l=130, t=TOP_MARGIN + 70 + SUBTITLE_LINE * (prompt.count("<br>") + bool(hidden))),
        dragmode="pan",
    )
    return fig


def _lenses(item: PromptLens | Mapping[str, PromptLens]) -> dict[str, PromptLens]:
    """One lens result, or several by lens name (``{"logit lens": a, "tuned lens": b}``), as a dict."""
    items = {"logit lens": item} if isinstance(item, PromptLens) else dict(item)
    if not items:
        raise InvalidArgumentError("no lens result given; pass a PromptLens or {lens name: PromptLens}")
    first_name, first = next(iter(items.items()))
    for name, other in items.items():
        if other.stream_labels != first.stream_labels or other.positions.tolist() != first.positions.tolist():
            raise InvalidArgumentError(f"{name!r} read other streams or positions than {first_name!r}: "
                                       f"{other.stream_labels} vs {first.stream_labels}")
    return items


def _lens_line(name: str, width: int = 2) -> dict:
    return dict(color=lens_colour(name), dash=LENS_DASH.get(name.lower(), "dot"), width=width)


def target_trajectory(item: PromptLens | Mapping[str, PromptLens], position: int = -1) -> go.Figure:
    """The target token's probability (top) and rank (bottom, log axis) across streams.

    ``item`` is one lens result, or several by lens name (``{"logit lens": a, "tuned
    lens": b}``), drawn as one line each in the lens's colour (the same in every figure).
    ``position`` indexes the analysed positions like a list (``-1``: the last analysed).
    """
    lenses = _lenses(item)
    first = next(iter(lenses.values()))
    if first.target_prob is None or first.target_rank is None or first.target_ids is None:
        raise InvalidArgumentError("this PromptLens has no target statistics (target_prob / target_rank): "
                         "compute the lens with targets, or use a position whose next token is known")
    p = _analysed_index(first, position)
    if not _has_target(first, p):
        with_target = [int(first.positions[i]) for i in range(first.positions.shape[0]) if _has_target(first, i)]
        raise InvalidArgumentError(f"analysed position {position} (prompt position {int(first.positions[p])}) has no target; "
                         f"prompt positions with a target: {with_target}")
    target = display_token(_target_token(first, p))
    streams = list(range(first.n_streams))
    width = max(640, 45 * first.n_streams + 200)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    top_rank = 1.0
    for name, lens in lenses.items():
        if lens.target_prob is None or lens.target_rank is None:
            raise InvalidArgumentError(f"{name!r} has no target statistics; compute every lens with the same targets")
        prob = lens.target_prob[:, p].tolist()
        rank = (lens.target_rank[:, p] + 1).tolist()  # stored 0-based; shown 1-based (1 = top prediction)
        top_rank = max(top_rank, float(max(rank)))
        label = escape_text(name)
        hover = [f"<b>{label}, {escape_text(lens.stream_labels[s])}</b><br>target {target}: p = {fmt_prob(prob[s])}, "
                 f"rank {rank[s]:,}<br>top-1: {display_token(lens.top_tokens[s][p][0])} "
                 f"{fmt_prob(float(lens.top_probs[s, p, 0]))}" for s in streams]
        for row, values, what in ((1, prob, "probability"), (2, rank, "rank")):
            fig.add_trace(go.Scatter(x=streams, y=values, mode="lines+markers", name=label, legendgroup=label,
                                     showlegend=row == 1 and len(lenses) > 1, line=_lens_line(name),
                                     meta=what, hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"),
                          row=row, col=1)
    tickvals, ticktext = rank_ticks(1.0, top_rank, max_ticks=RANK_PANEL_TICKS)
    # Rank 1 is the best: reversed so that up means "more predicted" in both panels.
    fig.update_yaxes(title=dict(text="p(target)"), range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title=dict(text="rank (1 = top)"), type="log", autorange="reversed", tickmode="array",
                     tickvals=tickvals, ticktext=ticktext, row=2, col=1)
    fig.update_xaxes(**_stream_axis(first), row=2, col=1)
    fig.update_xaxes(title=dict(text="residual stream"), row=2, col=1)
    token = display_token(first.str_tokens[int(first.positions[p])])
    prompt = prompt_lines(first.prompt, prompt_chars(width))
    fig.update_layout(
        title=title_layout(f"Target {target} after {token} (position {int(first.positions[p])})"
                           f"<br><sup>probability and rank across streams"
                           f"{', ' + ' and '.join(map(escape_text, lenses)) if len(lenses) > 1 else ''}"
                           f"<br>{prompt}</sup>"),
        showlegend=len(lenses) > 1,
        legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"),
        height=600 + SUBTITLE_LINE * prompt.count("<br>"),
        width=width,
        margin=dict(t=TOP_MARGIN + SUBTITLE_LINE * prompt.count("<br>")),
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
                               line=_lens_line("logit lens"), hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    width = max(640, 45 * item.n_streams + 200)
    prompt = prompt_lines(item.prompt, prompt_chars(width), max_lines=1)
    fig.update_layout(
        title=title_layout(f"KL divergence to the final prediction<br><sup>{where}<br>{prompt}</sup>"),
        xaxis=dict(title=dict(text="residual stream"), **_stream_axis(item)),
        yaxis=dict(title=dict(text="KL to final (nats)"), rangemode="tozero"),
        height=460 + SUBTITLE_LINE * prompt.count("<br>"),  # a cut prompt adds a line saying so
        width=width,
        margin=dict(t=TOP_MARGIN + SUBTITLE_LINE * prompt.count("<br>")),
    )
    return fig


def lens_aggregate(result: LensResult | Mapping[str, LensResult]) -> go.Figure:
    """Across prompts: mean KL to the final prediction per stream (top) and the target's rank (bottom).

    ``result`` is one lens's result, or several by lens name (``{"logit lens": a, "tuned
    lens": b}``, read from the same prompts), each in its lens's colour. Thin lines are the
    prompts (KL averaged over each prompt's positions; the rank at its last position), thick
    lines the mean KL and the geometric mean rank.
    """
    results = {"logit lens": result} if isinstance(result, LensResult) else dict(result)
    if not results:
        raise InvalidArgumentError("no lens result given; pass a LensResult or {lens name: LensResult}")
    first_name, first = next(iter(results.items()))
    if not list(first):
        raise InvalidArgumentError("the LensResult holds no prompts")
    labels = list(first)[0].stream_labels
    for name, other in results.items():
        items = list(other)
        if len(items) != len(list(first)):
            raise InvalidArgumentError(f"{name!r} read {len(items)} prompts but {first_name!r} read {len(list(first))}")
        if any(item.stream_labels != labels for item in items):
            raise InvalidArgumentError("the prompts were read at different streams; an aggregate needs the same streams")
    streams = list(range(len(labels)))
    several = len(results) > 1
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=["KL to the final prediction (nats), mean over positions",
                                        "target rank at the last position (1 = top)"])
    top_rank = 1.0
    for lens_name, lens_result in results.items():
        items = list(lens_result)
        prefix = f"{escape_text(lens_name)}, " if several else ""
        thin = dict(width=1, color=lens_colour(lens_name))
        kl_rows = [item.kl_to_final.float().nanmean(dim=1) for item in items]
        ranks = [_last_rank(item) for item in items]
        for i, (item, kl, rank) in enumerate(zip(items, kl_rows, ranks)):
            name = f"{prefix}prompt {i + 1}: {escape_text(item.prompt, 40)}"
            fig.add_trace(go.Scatter(x=streams, y=kl.tolist(), mode="lines", line=thin, opacity=0.35,
                                     name=name, legendgroup=str(i), showlegend=False,
                                     hovertemplate=f"{name}<br>%{{y:.3f}} nats<extra></extra>"), row=1, col=1)
            if rank is not None:
                top_rank = max(top_rank, float(rank.max()))
                target = display_token(_target_token(item, -1 % int(item.positions.shape[0])))
                fig.add_trace(go.Scatter(x=streams, y=rank.tolist(), mode="lines", line=thin, opacity=0.35,
                                         name=name, legendgroup=str(i), showlegend=False,
                                         hovertemplate=f"{name}<br>target {target}: rank %{{y:,.0f}}<extra></extra>"),
                              row=2, col=1)
        mean_kl = torch.stack(kl_rows).nanmean(dim=0)
        fig.add_trace(go.Scatter(x=streams, y=mean_kl.tolist(), mode="lines+markers", line=_lens_line(lens_name, 3),
                                 name="mean" if not several else f"{escape_text(lens_name)}: mean",
                                 legendgroup=lens_name, showlegend=several,
                                 hovertemplate=f"{prefix}mean KL %{{y:.3f}} nats<extra></extra>"), row=1, col=1)
        known = [r for r in ranks if r is not None]
        if known:
            geo = torch.stack(known).log().mean(dim=0).exp()
            fig.add_trace(go.Scatter(x=streams, y=geo.tolist(), mode="lines+markers", line=_lens_line(lens_name, 3),
                                     name="geometric mean" if not several else f"{escape_text(lens_name)}: geometric mean",
                                     legendgroup=lens_name, showlegend=False,
                                     hovertemplate=f"{prefix}geometric mean rank %{{y:,.1f}}<extra></extra>"),
                          row=2, col=1)
    tickvals, ticktext = rank_ticks(1.0, top_rank, max_ticks=RANK_PANEL_TICKS)
    fig.update_yaxes(title=dict(text="KL (nats)"), rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title=dict(text="rank"), type="log", autorange="reversed", tickmode="array",
                     tickvals=tickvals, ticktext=ticktext, row=2, col=1)
    fig.update_xaxes(title=dict(text="residual stream"), **_stream_axis(list(first)[0]), row=2, col=1)
    n_prompts = len(list(first))
    fig.update_layout(
        title=title_layout(f"All {n_prompts} prompts: how fast each layer approaches the final prediction"
                           "<br><sup>thin lines: one prompt each (hover for which); thick: the mean"
                           + (" (geometric for the rank); one colour per lens" if several else "") + "</sup>"),
        showlegend=several, legend=dict(orientation="h", x=1, xanchor="right", y=1.06, yanchor="bottom"),
        height=620, width=max(640, 45 * len(labels) + 200), margin=dict(t=TOP_MARGIN),
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
                                 line=_lens_line(name), hovertext=hover, hovertemplate="%{hovertext}<extra></extra>"))
    width = max(640, 45 * first.n_streams + 200)
    prompt = prompt_lines(first.prompt, prompt_chars(width), max_lines=1)
    fig.update_layout(
        title=title_layout(f"KL divergence to the final prediction, by lens<br><sup>mean over "
                           f"{int(first.positions.shape[0])} analysed positions<br>{prompt}</sup>"),
        legend=dict(orientation="h", x=1, xanchor="right", y=1.02, yanchor="bottom"),
        margin=dict(t=TOP_MARGIN + SUBTITLE_LINE * prompt.count("<br>")),  # a cut prompt adds a line saying so
        xaxis=dict(title=dict(text="residual stream"), **_stream_axis(first)),
        yaxis=dict(title=dict(text="KL to final (nats)"), rangemode="tozero"),
        height=460 + SUBTITLE_LINE * prompt.count("<br>"),
        width=width,
    )
    return fig
