"""Checks on the shipped offline model ``gpt2probe/assets/tiny-english``.

The checkpoint is loaded with plain transformers (no gpt2probe code) so the
tests pin what any consumer gets: a real GPT-2 architecture with GPT-2's full
vocabulary that has learned English well beyond chance, small enough to ship.
"""

import json
import math
import pydoc_data.topics
import random
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


def test_heldout_loss_is_the_recorded_figure(model, tokenizer):
    """The validation loss recorded in training.json, recomputed here: same held-out topics, same windows.

    The held-out topics were never trained on. The training script concatenated them (each followed by
    ``<|endoftext|>``) in its shuffled order and averaged the loss over consecutive windows of ``n_ctx``
    tokens; this redoes that with the shipped (float16-stored) weights, so it must land within 0.1 nats.
    """
    training = json.loads((MODEL_DIR / "training.json").read_text(encoding="utf-8"))
    names = sorted(pydoc_data.topics.topics)
    random.Random(training["seed"]).shuffle(names)
    held_out = set(training["val_topics"])
    eot = tokenizer.eos_token_id
    ids = torch.tensor([t for name in names if name in held_out
                        for t in tokenizer(pydoc_data.topics.topics[name]).input_ids + [eot]])
    assert len(ids) == training["val_tokens"]
    n_ctx = model.config.n_positions
    windows = ids.unfold(0, n_ctx + 1, n_ctx)
    with torch.no_grad():
        logits = model(windows[:, :-1]).logits.float()
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()).item()
    assert abs(loss - training["final_val_loss"]) < 0.1, (loss, training["final_val_loss"])
    assert loss < math.log(model.config.vocab_size) - 5


def test_checkpoint_is_small():
    size = sum(f.stat().st_size for f in MODEL_DIR.rglob("*") if f.is_file())
    assert size < 40 * 10**6  # issue 20: at most 40 MB for the model and what ships with it
