"""Plain HTML tables of text for reports: every cell escaped once, long text wrapped, never cut.

Plotly's own tables give every row a fixed height and cut what does not fit (a steered
continuation of 30 tokens disappeared past its second line). Text belongs in HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ShapeError
from .escape import escape_html


@dataclass(frozen=True)
class Table:
    """A table of plain-text cells. ``literal`` columns keep whitespace and line breaks as written."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    literal: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ShapeError(f"row {i} has {len(row)} cells but the table has {len(self.columns)} columns")

    @classmethod
    def of(cls, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "",
           literal: Sequence[int] = ()) -> Table:
        """Build from any sequences; cells are converted with ``str``."""
        return cls(tuple(columns), tuple(tuple(str(c) for c in row) for row in rows), caption, tuple(literal))

    def to_html(self) -> str:
        """The table as an HTML fragment (styles come with the report page)."""
        def cell(tag: str, text: str, i: int) -> str:
            cls = ' class="literal"' if i in self.literal else ""
            return f"<{tag}{cls}>{escape_html(text, multiline=i in self.literal)}</{tag}>"

        head = "".join(f"<th>{escape_html(c)}</th>" for c in self.columns)
        body = "\n".join("<tr>" + "".join(cell("td", c, i) for i, c in enumerate(row)) + "</tr>" for row in self.rows)
        caption = f"<caption>{escape_html(self.caption)}</caption>" if self.caption else ""
        return f'<table class="text-table">{caption}<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'
