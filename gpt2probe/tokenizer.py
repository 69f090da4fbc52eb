"""GPT-2's real BPE tokenizer, built offline from the two files shipped in the package.

GPT-2 has no pad token: gpt2probe pads with ``<|endoftext|>`` and relies on the attention
mask, and pads on the left so that every prompt's last real token sits at position -1.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

# transformers 5 makes GPT2TokenizerFast a lazy alias of GPT2Tokenizer at import time, which pyright cannot see.
from transformers import GPT2TokenizerFast, PreTrainedTokenizerBase  # pyright: ignore[reportAttributeAccessIssue]

from .jsonfile import parse_object

ENDOFTEXT = "<|endoftext|>"


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    data = resources.files("gpt2probe") / "data"
    vocab = parse_object((data / "vocab.json").read_bytes(), where=str(data / "vocab.json"),
                         fix="The installed gpt2probe is damaged: reinstall it.").value
    lines = (data / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    return vocab, merges  # type: ignore[return-value]


def gpt2_tokenizer() -> GPT2TokenizerFast:
    """A fresh GPT-2 tokenizer, identical to the hub's ``gpt2`` one, set up for batches."""
    vocab, merges = _vocab_and_merges()
    tokenizer = GPT2TokenizerFast(
        vocab=vocab,
        merges=merges,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        unk_token=ENDOFTEXT,
    )
    return prepare_for_batches(tokenizer)


def prepare_for_batches(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Pad with ``<|endoftext|>`` (GPT-2 has no pad token) and on the left."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or ENDOFTEXT
    tokenizer.padding_side = "left"
    return tokenizer
