"""Checks on the shipped offline model ``gpt2probe/assets/tiny-english``.

The checkpoint is loaded with plain transformers (no gpt2probe code) so the
tests pin what any consumer gets: a real GPT-2 architecture with GPT-2's full
vocabulary that has learned English well beyond chance, small enough to ship.
"""

import json
import math
import pydoc_data.topics
from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel, GPT2TokenizerFast

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "gpt2probe" / "assets" / "tiny-english"
DATA_DIR = REPO / "gpt2probe" / "data"


@pytest.fixture(scope="module")
def model():
    return GPT2LMHeadModel.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer():
    vocab = json.loads((DATA_DIR / "vocab.json").read_text(encoding="utf-8"))
    lines = (DATA_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    eot = "<|endoftext|>"
    return GPT2TokenizerFast(vocab=vocab, merges=merges, bos_token=eot, eos_token=eot, unk_token=eot, pad_token=eot)


def test_gpt2_architecture_full_vocab_tied(model):
    cfg = model.config
    assert cfg.model_type == "gpt2"
    assert cfg.vocab_size == 50257
    assert model.transformer.wte.weight.shape == (50257, cfg.n_embd)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    assert len(model.transformer.h) == cfg.n_layer >= 2


def test_heldout_loss_well_below_uniform(model, tokenizer):
    """Loss on a validation topic (never trained on) is far below ln(50257) = 10.8."""
    training = json.loads((MODEL_DIR / "training.json").read_text(encoding="utf-8"))
    heldout = max(training["val_topics"], key=lambda name: len(pydoc_data.topics.topics[name]))
    ids = tokenizer(pydoc_data.topics.topics[heldout]).input_ids[: model.config.n_positions]
    batch = torch.tensor([ids])
    with torch.no_grad():
        loss = model(batch, labels=batch).loss.item()
    assert loss < 7.0 < math.log(model.config.vocab_size)


def test_checkpoint_is_small():
    size = sum(f.stat().st_size for f in MODEL_DIR.rglob("*") if f.is_file())
    assert size < 10 * 2**20
