"""A small random GPT-2 whose layers disagree, for tests of read-outs and attributions."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def save_sharp_model(path: Path, seed: int = 11) -> Path:
    """Full GPT-2 vocabulary, odd small sizes, saved with ``save_pretrained``.

    Random init gives near-uniform read-outs that barely change across layers; the
    embedding is sharpened and every block writes strongly, so top-k, ranks, KL and
    attributions differ from layer to layer and comparisons cannot pass vacuously.
    """
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=3, n_embd=54, n_head=3, n_positions=47, vocab_size=50257)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(10)
        for block in model.transformer.h:
            block.attn.c_proj.weight.mul_(30)
            block.mlp.c_proj.weight.mul_(30)
    model.save_pretrained(path)
    return path
