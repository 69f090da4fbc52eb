"""Figures and tables of a steering run: the continuations, the top next tokens, the biggest changes.

Continuations and token lists are HTML tables (:class:`~gpt2probe.report.Table`),
wrapped and never cut; the probability changes are a bar chart coloured by
:mod:`gpt2probe.report.style`'s rule (blue = rose with steering, red = fell).
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from ..display.escape import display_token, token_text
from .html import Table
from .style import SIGNED_RULE, TOP_MARGIN, category_axis, signed_colour, title_layout


def continuations_table(prompts: Sequence[str], plain: Sequence[str], steered: Sequence[str]) -> Table:
    """The prompt, then the continuation without and with steering, one row per prompt."""
    return Table.of(["prompt", "without steering", "with steering"], list(zip(prompts, plain, steered)),
                    caption="Continuations (the same seed for both runs)", literal=(0, 1, 2))


def top_tokens_table(tokens_before: Sequence[str], p_before: Sequence[float],
                     tokens_after: Sequence[str], p_after: Sequence[float]) -> Table:
    """The top next tokens before and after steering, with their probabilities (tokens with visible spaces)."""
    rows = [(rank, token_text(tb), f"{pb:.4f}", token_text(ta), f"{pa:.4f}")
            for rank, (tb, pb, ta, pa) in enumerate(zip(tokens_before, p_before, tokens_after, p_after), 1)]
    return Table.of(["rank", "before", "p", "after", "p"], rows, caption="Top next tokens (first prompt); ␣ is a space")


def change_bars(tokens: Sequence[str], before: Sequence[float], after: Sequence[float]) -> go.Figure:
    """Horizontal bars of ``p_after - p_before`` for the tokens given (those that moved most)."""
    delta = [a - b for a, b in zip(after, before)]
    labels = [display_token(t) for t in tokens]
    fig = go.Figure(go.Bar(
        x=delta, y=list(range(len(tokens))), orientation="h",
        marker_color=[signed_colour(d) for d in delta],
        hovertext=[f"<b>{label}</b><br>p before {b:.4f}<br>p after {a:.4f}<br>change {d:+.4f}"
                   for label, b, a, d in zip(labels, before, after, delta)],
        hovertemplate="%{hovertext}<extra></extra>",
    ))
    fig.update_layout(
        title=title_layout(f"Biggest changes in next-token probability (first prompt)<br><sup>{SIGNED_RULE}</sup>"),
        xaxis=dict(title=dict(text="p(with steering) - p(without)")),
        yaxis=dict(autorange="reversed", **category_axis(labels)),
        height=TOP_MARGIN + 100 + 24 * len(tokens), width=760, margin=dict(l=140, t=TOP_MARGIN),
    )
    return fig
