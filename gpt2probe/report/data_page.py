"""The head of a data page: the harvest dashboard's and the feature browser's shared opening.

Both pages carry their data in ``<script type="application/json">`` blocks and draw it
with their own script; they open the same way: the Content-Security-Policy of every
report (no request leaves the page), a title, a header listing what was harvested, and
a note on how the logit effects were computed. One writer keeps the two the same.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TextIO

from ..display.escape import escape_text
from .html import CONTENT_SECURITY_POLICY


def write_page_head(out: TextIO, *, title: str, heading: str, header: Mapping[str, object], style: str,
                    note: str | None = None) -> None:
    """Write everything up to the end of ``<header>``: doctype, CSP, ``title``, ``style``, ``heading``, the facts, ``note``.

    ``header`` is shown as a definition list (names and values, escaped); ``note`` (plain
    text, escaped), when given, goes under it. The caller writes the page's body after.
    """
    out.write("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
              f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">\n'
              f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n")
    out.write(f"<header><h1>{html.escape(heading)}</h1><dl>")
    out.write("".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in header.items()))
    out.write("</dl>")
    if note is not None:
        out.write(f'<p class="note">{escape_text(note)}</p>')
    out.write("</header>\n")
