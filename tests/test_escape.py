"""Invisible and layout-changing characters are shown as visible escapes in figures and page HTML."""

from __future__ import annotations

import pytest

from gpt2probe.display.escape import display_token, escape_html, escape_text

# (character, its visible escape)
INVISIBLE = [
    ("\u202a", "\\u202a"), ("\u202b", "\\u202b"), ("\u202c", "\\u202c"), ("\u202d", "\\u202d"), ("\u202e", "\\u202e"),
    ("\u2066", "\\u2066"), ("\u2067", "\\u2067"), ("\u2068", "\\u2068"), ("\u2069", "\\u2069"),
    ("\x00", "\\x00"), ("\x1b", "\\x1b"), ("\x7f", "\\x7f"), ("\x85", "\\x85"),
    ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),
    ("\u200b", "\\u200b"), ("\u200c", "\\u200c"), ("\u200d", "\\u200d"), ("\u200e", "\\u200e"), ("\u200f", "\\u200f"),
    ("\u2060", "\\u2060"), ("\ufeff", "\\ufeff"), ("\u061c", "\\u061c"),
    ("\ud800", "\\ud800"), ("\U000e0001", "\\U000e0001"),
]


@pytest.mark.parametrize("char, shown", INVISIBLE, ids=[f"U+{ord(c):04X}" for c, _ in INVISIBLE])
def test_every_invisible_character_is_escaped_everywhere(char, shown):
    text = f"safe{char}LIVE-1234"
    assert display_token(text) == f"safe{shown}LIVE-1234"
    assert escape_text(text) == f"safe{shown}LIVE-1234"
    assert escape_html(text) == f"safe{shown}LIVE-1234"
    assert escape_html(text, multiline=True) == f"safe{shown}LIVE-1234"


def test_visible_text_is_unchanged():
    for text in ["Paris", "é ü 中文 😀", "עברית", "a\\b"]:
        assert escape_html(text) == text and escape_text(text) == text


def test_newlines_and_tabs():
    assert escape_text("a\nb\tc") == "a↵b⇥c"
    assert escape_html("a\nb\tc") == "a\\x0ab\\x09c"
    assert escape_html("a\nb\tc", multiline=True) == "a\nb\tc"
    assert escape_html("<b>\u202e&") == "&lt;b&gt;\\u202e&amp;"


def test_a_report_shows_a_bidi_prompt_literally(tmp_path):
    import plotly.graph_objects as go

    from gpt2probe.report import write_html

    path = write_html(tmp_path / "r.html", [go.Figure()], title="t\u202e", model_name="m\x00",
                      prompts=["safe\u202eLIVE-1234\nline two\u2028"], metadata={"k\u2066": "v\u200b"})
    page = path.read_text(encoding="utf-8")
    body = page[page.index("<body>"):page.index("<main>")]
    assert "safe\\u202eLIVE-1234\nline two\\u2028" in body
    assert "m\\x00" in body and "k\\u2066" in body and "v\\u200b" in body and "t\\u202e" in body
    for char, _ in INVISIBLE[:-2]:
        assert char not in body


def test_tables_show_invisible_characters():
    from gpt2probe.report import Table

    table = Table.of(["prompt\u202e", "text"], [["a\u2066b", "line\none\x00"]], caption="c\u200b", literal=[1])
    out = table.to_html()
    assert "prompt\\u202e" in out and "a\\u2066b" in out and "line\none\\x00" in out and "c\\u200b" in out
    assert not {"\u202e", "\u2066", "\x00", "\u200b"} & set(out)


# -- one token rendering in every report ------------------------------------------------------------
AWKWARD_TOKENS = [" Paris", "    ", "\n\n", "\xa0\xa0\xa0\xa0", " \xa0 \xa0", "\t", "", "\u3000", "<b>", " &amp;"]


def test_every_whitespace_token_of_gpt2_is_drawn_visibly():
    """No whitespace-only token of GPT-2's vocabulary renders as blank (its no-break-space runs included)."""
    import unicodedata

    from gpt2probe.display.escape import token_text
    from gpt2probe.tokenizer import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    blank = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()]
    assert len(blank) > 15
    for i in blank:
        shown = token_text(tokenizer.decode([i]))
        assert shown and not any(unicodedata.category(c).startswith("Z") or c.isspace() for c in shown), (i, shown)


def test_one_token_rendering_in_every_report():
    """Plotly figures, tables, the attention viewer and the graph viewer all show a token as ``token_text`` does."""
    import html
    import json

    import torch

    from gpt2probe.display.escape import token_text
    from gpt2probe.report.attention_viewer import _payload, encode_attention
    from gpt2probe.report.steering import top_tokens_table

    expected = [token_text(t) for t in AWKWARD_TOKENS]
    assert expected[1:4] == ["␣␣␣␣", "↵↵", "⍽⍽⍽⍽"]
    assert [html.unescape(display_token(t)) for t in AWKWARD_TOKENS] == expected  # Plotly decodes the entities
    n = len(AWKWARD_TOKENS)
    pattern = torch.full((1, 1, n, n), 1.0 / n).tril()
    data = encode_attention(pattern, AWKWARD_TOKENS)
    assert json.loads(_payload(data, [], 0))["tokens"] == expected
    table = top_tokens_table(AWKWARD_TOKENS, [0.1] * n, AWKWARD_TOKENS, [0.1] * n)
    assert [row[1] for row in table.rows] == expected and [row[3] for row in table.rows] == expected
