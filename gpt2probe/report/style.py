"""The rules every figure follows: one colour convention for signed values, one rule for category axes.

Signed values (a logit attribution, a patching effect, a change in probability) use
Plotly's ``RdBu`` scale centred on zero: **positive is blue, negative is red**, in
heatmaps and bars alike, with a symmetric range so that white always means zero.

Category axes (tokens, stream labels, heads) are numeric positions 0..n-1 with explicit
tick texts, never Plotly categories: Plotly merges equal category labels, and a prompt
often repeats a token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SIGNED_COLORSCALE = "RdBu"  # low (negative) = red, high (positive) = blue
POSITIVE = "#2166ac"  # the blue end of RdBu
NEGATIVE = "#b2182b"  # the red end of RdBu
SIGNED_RULE = "blue = positive, red = negative"


def signed_colour(value: float) -> str:
    """The bar colour of a signed value."""
    return POSITIVE if value >= 0 else NEGATIVE


def signed_range(values: Sequence[float] | float, floor: float = 1e-6) -> tuple[float, float]:
    """A symmetric colour range ``(-b, b)`` covering ``values`` (``floor`` keeps it non-empty)."""
    if isinstance(values, (int, float)):
        bound = abs(float(values))
    else:
        finite = [abs(float(v)) for v in values if math.isfinite(float(v))]
        bound = max(finite, default=0.0)
    bound = max(bound, floor)
    return -bound, bound


def category_axis(labels: Sequence[str], values: Sequence[int] | None = None) -> dict:
    """Axis settings for a category axis: numeric positions with ``labels`` (already escaped) as tick texts."""
    return dict(tickmode="array", tickvals=list(range(len(labels))) if values is None else list(values),
                ticktext=list(labels))


def colorbar(title: str, **extra: object) -> dict:
    """A colour bar whose title sits above it, where it cannot overlap the tick labels."""
    return dict(title=dict(text=title, side="top"), **extra)


def fmt_prob(p: float) -> str:
    """A probability with three decimals, or in scientific notation when tiny."""
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 1e-3 or p == 0 else f"{p:.1e}"


def fmt_nats(x: float) -> str:
    """An entropy or KL in nats, three decimals."""
    return "n/a" if math.isnan(x) else f"{x:.3f}"


TOP_MARGIN = 120  # px above the plot: the title starts below Plotly's toolbar (the mode bar)


def title_layout(text: str) -> dict:
    """A figure title that starts below the toolbar, so the two never overlap (pair with ``margin.t >= TOP_MARGIN``)."""
    return dict(text=text, x=0, xref="paper", xanchor="left", y=1, yref="container", yanchor="top", pad=dict(t=34))


def prompt_chars(width: int) -> int:
    """How many characters of a prompt fit on one subtitle line of a figure ``width`` px wide."""
    return max(40, (width - 160) // 7)
