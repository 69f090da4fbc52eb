"""Escape strings for Plotly's text rendering, so that tokens show exactly as they are.

Plotly renders a subset of HTML in titles, tick labels, cell texts and hover labels:
``&amp;`` shows as ``&``, ``<b>`` turns bold, unknown tags vanish, and with MathJax on the
page ``$...$`` is typeset. GPT-2 tokens also carry meaningful whitespace (``" Paris"``
differs from ``"Paris"``) that a label would hide. Every string a figure shows goes
through :func:`display_token` (tokens) or :func:`escape_text` (free text) exactly once, and
every string the page's own HTML shows through :func:`escape_html`.

Every report shows a token through the same function: :func:`display_token` where Plotly
draws it, :func:`token_text` where a page's script puts it in ``textContent`` (the attention
viewer, the graph viewer). Whitespace is drawn as symbols (``␣`` space, ``↵`` newline, ``⇥``
tab, ``⍽`` no-break space, so GPT-2's ``"\xa0\xa0\xa0\xa0"`` tokens are not blank), other
spaces of Unicode's category Zs (thin, ideographic...) as escapes such as ``\u3000``.

Characters that are invisible or that change how the text around them is drawn are
shown as visible escapes (``\u202e``, ``\x00``) everywhere: controls (NUL, ESC...), bidi
embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069, which would display
``safe\u202eLIVE-1234`` reversed), zero-width characters, line and paragraph separators
(U+2028/2029, which break lines), and lone surrogates. The rule is Unicode's categories
Cc, Cf, Zl, Zp and Cs.
"""

from __future__ import annotations

import html
import unicodedata

# Whitespace and control characters made visible in tokens.
VISIBLE = {
    " ": "␣",
    "\n": "↵",
    "\r": "␍",
    "\t": "⇥",
    "\xa0": "⍽",  # no-break space: GPT-2 has tokens of 1 to 16 of them, which would show as blanks
}
EMPTY_TOKEN = "∅"


def _escape_markup(s: str) -> str:
    """Escape what Plotly would interpret: HTML tags and entities, and ``$`` (MathJax)."""
    return html.escape(s, quote=False).replace("$", "&#36;")


# Unicode categories never shown literally: control, format (bidi, zero-width), line/paragraph separator, surrogate.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _escape_code(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def show_invisible(s: str, keep: str = "") -> str:
    """Replace every invisible or layout-changing character (except those in ``keep``) with its escape."""
    return "".join(
        _escape_code(ch) if ch not in keep and unicodedata.category(ch) in INVISIBLE_CATEGORIES else ch for ch in s
    )


def _visible_char(ch: str) -> str:
    symbol = VISIBLE.get(ch)
    if symbol is not None:
        return symbol
    return _escape_code(ch) if unicodedata.category(ch) == "Zs" else ch  # thin, ideographic... spaces


def visible_whitespace(s: str) -> str:
    """Show spaces, newlines, tabs and every invisible character as visible symbols or escapes."""
    return show_invisible("".join(_visible_char(ch) for ch in s))


def token_text(s: str) -> str:
    """A token as every report shows it, for text never read as markup (a script's ``textContent``).

    >>> token_text("\n\n"), token_text("\xa0\xa0"), token_text("")
    ('↵↵', '⍽⍽', '∅')
    """
    return visible_whitespace(s) if s else EMPTY_TOKEN


def display_token(s: str) -> str:
    """A token string as a figure should show it: whitespace visible, markup escaped.

    >>> display_token(" <b>&amp;")
    '␣&lt;b&gt;&amp;amp;'
    """
    return _escape_markup(token_text(s))


def escape_text(s: str, max_chars: int | None = None) -> str:
    """Free text (a prompt, a label) for a figure: markup escaped, newlines as ``↵``.

    With ``max_chars``, text longer than that is cut and ends in ``…`` (cut before
    escaping, so that no entity is split).
    """
    if max_chars is not None and len(s) > max_chars:
        s = s[: max_chars - 1] + "…"
    s = s.replace("\r\n", "\n").replace("\n", "↵").replace("\t", VISIBLE["\t"])
    return _escape_markup(show_invisible(s))


def escape_html(value: object, *, multiline: bool = False) -> str:
    """Text for the page's own HTML (headers, tables): markup and invisible characters escaped.

    ``multiline`` keeps newlines and tabs (for ``<pre>`` blocks); every other control,
    bidi, zero-width or separator character becomes a visible escape.
    """
    return html.escape(show_invisible(str(value), keep="\n\t" if multiline else ""), quote=True)
