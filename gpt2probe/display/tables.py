"""HTML tables: compact ones for notebooks (``_repr_html_``), wrapped text tables for reports, and ``repr`` summaries.

A result object shows itself in Jupyter as a small table (names, shapes, top predictions),
never as pages of tensors. Every string that comes from a result is escaped here, once:
cells are plain values (escaped as text) or :class:`Tok` (a token string, whitespace made
visible by :func:`~gpt2probe.display.escape.display_token`), so a token such as
``"<script>"`` or ``" &amp;"`` shows as itself and the notebook page interprets nothing.

:func:`text_table` renders a report's tables of text (:class:`gpt2probe.report.Table`):
Plotly's own tables give every row a fixed height and cut what does not fit (a steered
continuation of 30 tokens disappeared past its second line), so text belongs in HTML,
wrapped and never cut.

This module imports nothing of gpt2probe but :mod:`.escape` (and not Plotly), so a result
can show itself without loading the report's figure modules.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from .escape import display_token, escape_html, escape_text

MAX_ROWS = 40  # rows shown before "... n more" (the table scrolls past a few hundred pixels)

_STYLE = (
    "<style>"
    ".gpt2probe-table{border-collapse:collapse;font-size:12px;margin:.2em 0}"
    ".gpt2probe-table th,.gpt2probe-table td{padding:1px 8px;text-align:left;border-bottom:1px solid #ddd}"
    ".gpt2probe-table td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".gpt2probe-table caption{text-align:left;font-weight:600;padding-bottom:2px}"
    ".gpt2probe-box{max-height:420px;overflow:auto}"
    "</style>"
)


@dataclass(frozen=True)
class Tok:
    """A cell holding a token string, shown with visible whitespace in ``<code>``."""

    text: str


def short(text: str, max_chars: int = 60) -> str:
    """``repr`` of a string, cut to ``max_chars`` with ``…`` (for one-line summaries)."""
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return repr(text)


def number(value: float, digits: int = 4) -> str:
    """A rounded figure, as printed everywhere (same text on every CPU)."""
    return f"{value:.{digits}g}"


def _cell(value: object) -> str:
    if isinstance(value, Tok):
        return f"<td><code>{display_token(value.text)}</code></td>"
    if isinstance(value, bool) or value is None:
        return f"<td>{html.escape(str(value))}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    if isinstance(value, float):
        return f'<td class="num">{html.escape(number(value))}</td>'
    return f"<td>{escape_text(str(value))}</td>"


def table(
    caption: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    notes: Sequence[str] = (),
    max_rows: int = MAX_ROWS,
) -> str:
    """An HTML table: ``caption`` and ``headers`` are text, ``rows`` hold values or :class:`Tok` cells.

    Rows beyond ``max_rows`` are left out with a line saying how many; ``notes`` are
    shown under the table as text.
    """
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows[:max_rows])
    extra = [f"… {len(rows) - max_rows} more rows"] if len(rows) > max_rows else []
    foot = "".join(f"<div>{escape_text(n)}</div>" for n in [*extra, *notes])
    return (
        f'{_STYLE}<div class="gpt2probe-box"><table class="gpt2probe-table">'
        f"<caption>{escape_text(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>{foot}</div>"
    )


def text_table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, caption: str = "",
               literal: Sequence[int] = ()) -> str:
    """A report's table of plain-text cells as an HTML fragment (styles come with the report page).

    Every cell is escaped once; ``literal`` columns keep whitespace and line breaks as written.
    """
    def cell(tag: str, text: str, i: int) -> str:
        cls = ' class="literal"' if i in literal else ""
        return f"<{tag}{cls}>{escape_html(text, multiline=i in literal)}</{tag}>"

    head = "".join(f"<th>{escape_html(c)}</th>" for c in columns)
    body = "\n".join("<tr>" + "".join(cell("td", c, i) for i, c in enumerate(row)) + "</tr>" for row in rows)
    caption_html = f"<caption>{escape_html(caption)}</caption>" if caption else ""
    return f'<table class="text-table">{caption_html}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'
