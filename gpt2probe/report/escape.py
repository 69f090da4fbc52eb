"""Escape strings for Plotly's text rendering, so that tokens show exactly as they are.

Plotly renders a subset of HTML in titles, tick labels, cell texts and hover labels:
``&amp;`` shows as ``&``, ``<b>`` turns bold, unknown tags vanish, and with MathJax on the
page ``$...$`` is typeset. GPT-2 tokens also carry meaningful whitespace (``" Paris"``
differs from ``"Paris"``) that a label would hide. Every string a figure shows goes
through :func:`display_token` (tokens) or :func:`escape_text` (free text) exactly once.
"""

from __future__ import annotations

import html

# Whitespace and control characters made visible in tokens.
VISIBLE = {
    " ": "␣",
    "\n": "↵",
    "\r": "␍",
    "\t": "⇥",
}
EMPTY_TOKEN = "∅"


def _escape_markup(s: str) -> str:
    """Escape what Plotly would interpret: HTML tags and entities, and ``$`` (MathJax)."""
    return html.escape(s, quote=False).replace("$", "&#36;")


def visible_whitespace(s: str) -> str:
    """Show spaces, newlines, tabs and other control characters as visible symbols."""
    out = []
    for ch in s:
        if ch in VISIBLE:
            out.append(VISIBLE[ch])
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def display_token(s: str) -> str:
    """A token string as a figure should show it: whitespace visible, markup escaped.

    >>> display_token(" <b>&amp;")
    '␣&lt;b&gt;&amp;amp;'
    """
    if s == "":
        return EMPTY_TOKEN
    return _escape_markup(visible_whitespace(s))


def escape_text(s: str, max_chars: int | None = None) -> str:
    """Free text (a prompt, a label) for a figure: markup escaped, newlines as ``↵``.

    With ``max_chars``, text longer than that is cut and ends in ``…`` (cut before
    escaping, so that no entity is split).
    """
    if max_chars is not None and len(s) > max_chars:
        s = s[: max_chars - 1] + "…"
    return _escape_markup(s.replace("\r\n", "\n").replace("\n", "↵"))
