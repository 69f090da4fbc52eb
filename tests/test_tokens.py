"""Tokenization: GPT-2's real BPE, left-padded batches, and the shipped files equal the reference ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gpt2probe
from gpt2probe.tokenizer import ENDOFTEXT, gpt2_tokenizer
from gpt2probe.tokens import pad_left

from models import SMALL

PACKAGE_DATA = Path(gpt2probe.__file__).parent / "data"
EOT = 50256
TEXTS = [
    "Hello there gpt-2!",
    "The Eiffel Tower is in Paris.",
    "  leading spaces,\ttabs\nand newlines\n\n",
    "naïve café 東京 🤖 — “quotes”",
    "def f(x):\n    return x ** 2  # comment",
    "<|endoftext|> is GPT-2's only special token",
    "1234567890 3.14159 1e-5",
]


def test_str_tokens_of_a_known_prompt(vocab_probe):
    assert vocab_probe.to_str_tokens("Hello there gpt-2!") == ["Hello", " there", " g", "pt", "-", "2", "!"]


def test_str_tokens_of_empty_string(vocab_probe):
    assert vocab_probe.to_str_tokens("") == []


def test_str_tokens_with_bos_and_from_ids(vocab_probe):
    tokens = vocab_probe.to_str_tokens("Hi all", prepend_bos=True)
    assert tokens == [ENDOFTEXT, "Hi", " all"]
    ids = vocab_probe.to_tokens("Hi all", prepend_bos=True).ids
    assert ids[0, 0] == EOT
    assert vocab_probe.to_str_tokens(ids) == tokens
    assert vocab_probe.to_str_tokens(ids[0].tolist()) == tokens


@pytest.mark.parametrize("text", TEXTS)
def test_to_string_round_trips(vocab_probe, text):
    tokens = vocab_probe.to_tokens(text)
    assert tokens.ids.shape == (1, len(vocab_probe.to_str_tokens(text)))
    assert vocab_probe.to_string(tokens.ids[0]) == text
    assert vocab_probe.to_string(tokens.ids) == [text]
    assert "".join(vocab_probe.to_str_tokens(text)) == text or not text.isascii()


def test_batch_is_left_padded_with_endoftext(vocab_probe):
    prompts = ["a b c d e", "x", "one two"]
    singles = [vocab_probe.to_tokens(p).ids[0] for p in prompts]
    tokens = vocab_probe.to_tokens(prompts)
    width = max(len(s) for s in singles)
    assert tokens.ids.shape == tokens.attention_mask.shape == (3, width)
    assert tokens.ids.dtype == tokens.attention_mask.dtype == torch.long
    assert tokens.prompts == tuple(prompts)
    for row, single in enumerate(singles):
        n = len(single)
        assert int(tokens.lengths[row]) == n
        assert torch.equal(tokens.ids[row, width - n :], single)
        assert (tokens.ids[row, : width - n] == EOT).all()
        assert torch.equal(tokens.attention_mask[row], torch.tensor([0] * (width - n) + [1] * n))
        assert tokens.real_positions(row) == slice(width - n, width)
    assert torch.equal(tokens.last_positions, torch.full((3,), width - 1))


def test_position_ids_skip_pads():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]])
    assert torch.equal(gpt2probe.GPT2Probe.position_ids(mask), expected)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 100), min_size=1, max_size=12), min_size=1, max_size=5))
def test_pad_left_keeps_each_sequence_at_the_end_with_positions_from_zero(seqs):
    tokens = pad_left(seqs, pad_id=7)
    width = max(map(len, seqs))
    assert tokens.ids.shape == tokens.attention_mask.shape == (len(seqs), width)
    for row, seq in enumerate(seqs):
        real = tokens.real_positions(row)
        assert tokens.ids[row, real].tolist() == seq
        assert tokens.ids[row, : real.start].eq(7).all() and tokens.attention_mask[row, : real.start].eq(0).all()
        assert tokens.position_ids[row, real].tolist() == list(range(len(seq)))


def test_single_token(vocab_probe):
    paris = vocab_probe.to_single_token(" Paris")
    assert vocab_probe.to_str_tokens([paris]) == [" Paris"]
    assert vocab_probe.to_single_token(paris) == paris
    assert vocab_probe.to_single_token(ENDOFTEXT) == EOT


def test_tokenizer_is_set_up_for_batches(vocab_probe):
    tok = vocab_probe.tokenizer
    assert tok.padding_side == "left"
    assert tok.pad_token == tok.eos_token == tok.bos_token == ENDOFTEXT
    assert tok.pad_token_id == EOT
    assert len(tok) == 50257


def test_tensor_inputs_are_wrapped_without_padding(small_probe):
    ids = torch.tensor([3, 1, 4, 1, 5], dtype=torch.int32)
    tokens = small_probe.as_tokens(ids)
    assert tokens.ids.shape == (1, 5) and tokens.ids.dtype == torch.long
    assert (tokens.attention_mask == 1).all()
    assert torch.equal(tokens.position_ids, torch.arange(5)[None])
    assert small_probe(ids).shape == (1, 5, SMALL.vocab_size)


# sha256 of the hub's "gpt2" tokenizer files (openai-community/gpt2), which the package ships.
REFERENCE_SHA256 = {
    "vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
# Ids given by the reference GPT2TokenizerFast on the hub's files (recorded once, offline).
REFERENCE_IDS = {
    "Hello there gpt-2!": [15496, 612, 308, 457, 12, 17, 0],
    "The Eiffel Tower is in Paris.": [464, 412, 733, 417, 8765, 318, 287, 6342, 13],
    "  leading spaces,\ttabs\nand newlines\n\n": [220, 3756, 9029, 11, 197, 8658, 82, 198, 392, 649, 6615, 628],
    "naïve café 東京 🤖 — “quotes”": [2616, 38776, 40304, 10545, 251, 109, 12859, 105, 12520, 97, 244, 851, 564,
                                     250, 421, 6421, 447, 251],
    "def f(x):\n    return x ** 2  # comment": [4299, 277, 7, 87, 2599, 198, 220, 220, 220, 1441, 2124, 12429, 362,
                                               220, 1303, 2912],
    "<|endoftext|> is GPT-2's only special token": [50256, 318, 402, 11571, 12, 17, 338, 691, 2041, 11241],
    "1234567890 3.14159 1e-5": [10163, 2231, 30924, 3829, 513, 13, 1415, 19707, 352, 68, 12, 20],
    "Hello there gpt-2!" * 5: [15496, 612, 308, 457, 12, 17, 0] * 5,
}


@pytest.mark.parametrize("name", sorted(REFERENCE_SHA256))
def test_shipped_files_are_the_reference_files(name):
    assert hashlib.sha256((PACKAGE_DATA / name).read_bytes()).hexdigest() == REFERENCE_SHA256[name]


def test_shipped_tokenizer_gives_the_reference_ids():
    shipped = gpt2_tokenizer()
    assert len(shipped) == 50257
    assert set(TEXTS) <= set(REFERENCE_IDS)
    for text, expected in REFERENCE_IDS.items():
        assert shipped(text, add_special_tokens=False)["input_ids"] == expected, text
        assert shipped.decode(expected) == text


def test_package_does_not_read_shared_at_run_time():
    sources = "".join(p.read_text(encoding="utf-8") for p in PACKAGE_DATA.parent.rglob("*.py"))
    assert "shared/data" not in sources and "gpt2-tokenizer" not in sources


def test_jaxtyping_annotations_are_checked_in_this_run():
    """The test run checks jaxtyping annotations (pyproject's --jaxtyping-packages): a wrong shape is caught."""
    from gpt2probe.tokens import position_ids

    with pytest.raises(TypeError, match="attention_mask"):
        position_ids(torch.ones(3, dtype=torch.long))
