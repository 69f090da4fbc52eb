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
# The outline of a marked cell (the logit lens's correct predictions), as the dashboards' peak token: near-black, a
# colour no line, bar or colour scale uses.
OUTLINE = "#111111"


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


def table_cells(columns: Sequence[Sequence[object]]) -> list[list[str]]:
    """The columns of a ``go.Table`` (header or cells), every text wrapped in ``<span>`` so that its rows line up.

    Plotly draws a cell holding markup (an entity such as ``&gt;``, which escaped text often has:
    ``L0H1 -&gt; MLP2``) about 2 px lower than a plain one (``+9.8``), so a row mixing the two
    looks misaligned; markup in every cell draws them all alike. Texts must already be escaped.
    """
    return [[f"<span>{value}</span>" for value in column] for column in columns]


TABLE_ROW = 30  # px: one row of a table_cells table (a 14 px line, 8 px of padding above and below)


def table_layout(n_rows: int) -> dict:
    """Height and margins of a figure holding one ``go.Table`` of ``n_rows`` rows under its header.

    Every row is :data:`TABLE_ROW` high (pass ``height=TABLE_ROW`` to the table's header and
    cells), so that every row shows and no band is left empty under the last.
    """
    return dict(height=100 + 20 + TABLE_ROW * (n_rows + 1), margin=dict(t=100, b=20))


def colorbar(title: str, **extra: object) -> dict:
    """A colour bar whose title sits above it, where it cannot overlap the tick labels."""
    return dict(title=dict(text=title, side="top"), **extra)


def fmt_prob(p: float) -> str:
    """A probability with three decimals, or in scientific notation when tiny."""
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 1e-3 or p == 0 else f"{p:.1e}"


def fmt_cell(value: float, digits: int = 2, *, sign: bool = False) -> str:
    """A number rounded for a heatmap cell or a table, never ``-0.00``: a value that rounds to zero reads ``0.00``.

    ``sign`` writes ``+`` before positive values (for signed effects).

    >>> fmt_cell(-0.001), fmt_cell(0.4, sign=True), fmt_cell(-0.004, sign=True)
    ('0.00', '+0.40', '0.00')
    """
    if math.isnan(value):
        return "n/a"
    if round(value, digits) == 0:
        return f"{0:.{digits}f}"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def fmt_score(value: float, sign: bool = True) -> str:
    """A score of any size with three significant digits (``-0.000912``, ``+1.2e-06``), never ``-0.0000``."""
    if math.isnan(value):
        return "n/a"
    if value == 0:
        return "0"
    return f"{value:+.3g}" if sign else f"{value:.3g}"


def rank_ticks(low: float, high: float, max_ticks: int | None = None) -> tuple[list[float], list[str]]:
    """Tick values and texts for a log-scale rank axis from ``low`` to ``high``: 1, 2, 5, 10, 20, 50, 100...

    Written out in full (``1,000``), so that Plotly's own log ticks (``2 5 10 2 5 100``,
    with superscript exponents) never appear. With ``max_ticks``, an axis that would need
    more ticks than that keeps the powers of ten only (1, 10, 100, 1,000...), so that a short
    panel spanning many decades does not print its labels on top of each other.
    """
    def ticks(multiples: tuple[int, ...]) -> list[int]:
        values: list[int] = []
        decade = 1
        while decade <= max(high, 1) * 10:
            values.extend(m * decade for m in multiples)
            decade *= 10
        return [v for v in values if low / 1.01 <= v <= high * 1.01] or [1]

    kept = ticks((1, 2, 5))
    if max_ticks is not None and len(kept) > max_ticks:
        kept = ticks((1,))
    return [float(v) for v in kept], [f"{v:,}" for v in kept]


# One colour per lens, on every page: neither blue nor red, which mean positive and negative.
LENS_COLOURS = {"logit lens": "#333333", "tuned lens": "#e08214"}
LENS_DASH = {"logit lens": "solid", "tuned lens": "dash"}


def lens_colour(name: str) -> str:
    """The colour of a lens (``"logit lens"``, ``"tuned lens"``) in every figure; other names get a neutral purple."""
    return LENS_COLOURS.get(name.lower(), "#7b3294")


SMALL_GAP = 0.1  # a clean - corrupted gap below this fraction of the metric's scale makes normalised values noise


def small_gap(clean: float, corrupted: float, scale: float) -> bool:
    """Whether ``|clean - corrupted|`` is too small next to ``scale`` (the metric's largest size) to normalise by."""
    return not (scale > 0 and abs(clean - corrupted) >= SMALL_GAP * scale)


def fmt_nats(x: float) -> str:
    """An entropy or KL in nats, three decimals."""
    return "n/a" if math.isnan(x) else f"{x:.3f}"


SUBTITLE_LINE = 22  # px: the height of one more <sup> line in a figure's title, as Chromium draws it
TOP_MARGIN = 120  # px above the plot: the title starts below Plotly's toolbar (the mode bar, shown on hover)


def title_layout(text: str) -> dict:
    """A figure title that starts below the toolbar, so the two never overlap (pair with ``margin.t >= TOP_MARGIN``)."""
    return dict(text=text, x=0, xref="paper", xanchor="left", y=1, yref="container", yanchor="top", pad=dict(t=34))


def prompt_chars(width: int) -> int:
    """How many characters of a prompt fit on one subtitle line of a figure ``width`` px wide."""
    return max(40, (width - 160) // 7)


def prompt_lines(prompt: str, chars: int, max_lines: int = 3) -> str:
    """``prompt: ...`` for a figure's subtitle, wrapped over up to ``max_lines`` lines of ``chars`` characters.

    A prompt longer than that is cut where the reader sees it: a line of its own after the
    last one says ``… (N more characters: the whole prompt is in the report's header)`` (on
    its own line so that no line is longer than ``chars``, which would run off the figure).
    """
    from ..display.escape import escape_text

    flat = prompt.replace("\r\n", "\n")
    pieces = [flat[i:i + chars] for i in range(0, max(len(flat), 1), chars)]
    shown = pieces[:max_lines]
    rest = len(flat) - sum(len(p) for p in shown)
    lines = [escape_text(p) for p in shown]
    if rest > 0:
        lines.append(f"… ({rest:,} more characters: the whole prompt is in the report's header)")
    return "prompt: " + "<br>".join(lines)
