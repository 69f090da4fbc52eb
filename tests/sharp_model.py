"""A small random GPT-2 whose layers disagree, for tests of read-outs and attributions."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def save_sharp_model(path: Path, seed: int = 11) -> Path:
    """Full GPT-2 vocabulary, odd small sizes, saved with ``save_pretrained``.

    Random init gives near-uniform read-outs that barely change across layers; the
    embedding is sharpened and every block writes strongly, so top-k, ranks, KL and
    attributions differ from layer to layer and comparisons cannot pass vacuously. Every
    LayerNorm weight and bias and every bias (``b_O``, ``ln_f``'s...) is non-trivial.
    """
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=3, n_embd=54, n_head=3, n_positions=47, vocab_size=50257)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(10)
        for block in model.transformer.h:
            block.attn.c_proj.weight.mul_(30)
            block.mlp.c_proj.weight.mul_(30)
        # HF's init leaves LayerNorms the identity and every bias 0, which hides a dropped ln_f
        # bias or b_O (see scripts/check_mutations.py): perturb them all, visibly.
        noise = torch.Generator().manual_seed(seed + 1000)
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.copy_(0.5 * torch.randn(param.shape, generator=noise))
            elif ".ln_" in name or name.startswith("transformer.ln_f"):
                param.copy_(1 + 0.3 * torch.randn(param.shape, generator=noise))
    model.save_pretrained(path)
    return path
