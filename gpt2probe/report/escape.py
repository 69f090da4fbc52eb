"""The report's name for :mod:`gpt2probe.display.escape`, where escaping lives (kept so ``from .escape import`` works).

Escaping moved below the core so that result objects can show themselves without importing
the report package (and Plotly); this module only re-exports it.
"""

from __future__ import annotations

from ..display.escape import (
    EMPTY_TOKEN,
    INVISIBLE_CATEGORIES,
    VISIBLE,
    display_token,
    escape_html,
    escape_text,
    show_invisible,
    token_text,
    visible_whitespace,
)

__all__ = ["EMPTY_TOKEN", "INVISIBLE_CATEGORIES", "VISIBLE", "display_token", "escape_html", "escape_text",
           "show_invisible", "token_text", "visible_whitespace"]
