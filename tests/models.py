"""Tiny random GPT-2 checkpoints for the tests: odd, distinct sizes, seeded, saved offline.

The default Hugging Face initialisation (weights ~ N(0, 0.02), LayerNorms at weight 1 and
bias 0) makes attention almost uniform and the LayerNorm affine maps the identity, which
hides swapped axes and forgotten weights. :func:`build_gpt2` therefore draws every
parameter afresh: larger weights, LayerNorm weights around 1 and non-zero biases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

GPT2_VOCAB = 50257


@dataclass(frozen=True)
class Spec:
    """The sizes of one test checkpoint, in GPT2Config's own field names (``n_layer``, not ``n_layers``)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    vocab_size: int
    seed: int

    def config(self, **overrides) -> GPT2Config:
        sizes = {k: v for k, v in asdict(self).items() if k != "seed"}
        last = self.vocab_size - 1
        config = GPT2Config(**sizes, bos_token_id=last, eos_token_id=last, **overrides)
        # GPT2Config silently ignores misspelt sizes (n_layers=..., n_heads=...): check they took.
        for key, value in sizes.items():
            assert getattr(config, key) == value, (key, getattr(config, key), value)
        return config


# A small vocabulary model (token ids only) and one with GPT-2's vocabulary, for string prompts.
SMALL = Spec(n_layer=3, n_embd=60, n_head=5, n_positions=37, vocab_size=101, seed=11)
VOCAB = Spec(n_layer=2, n_embd=42, n_head=3, n_positions=29, vocab_size=GPT2_VOCAB, seed=23)
# GPT-2 small's attention shape (12 layers x 12 heads, 1,024 positions) on a narrow stream: for the attention viewer.
WIDE = Spec(n_layer=12, n_embd=48, n_head=12, n_positions=1024, vocab_size=101, seed=31)


@torch.no_grad()
def randomize_(model: GPT2LMHeadModel, seed: int, std: float = 0.15) -> GPT2LMHeadModel:
    """Redraw every parameter (in place, tied ``wte``/``lm_head`` stay tied) with a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen, dtype=param.dtype)
        if ".ln_" in name or name.startswith("transformer.ln_f"):
            param.copy_(1.0 + 0.2 * noise if name.endswith("weight") else 0.2 * noise)
        elif name.endswith("bias"):
            param.copy_(0.1 * noise)
        else:
            param.copy_(std * noise)
    return model


def build_gpt2(spec: Spec, **config_overrides) -> GPT2LMHeadModel:
    """A seeded random ``GPT2LMHeadModel`` of ``spec``'s sizes, in eval mode."""
    torch.manual_seed(spec.seed)
    model = GPT2LMHeadModel(spec.config(**config_overrides))
    return randomize_(model, spec.seed).eval()


def save_gpt2(spec: Spec, directory: Path, **config_overrides) -> Path:
    """Build and ``save_pretrained`` a checkpoint (safetensors) into ``directory``."""
    build_gpt2(spec, **config_overrides).save_pretrained(directory)
    assert (directory / "model.safetensors").is_file()
    return directory


def save_pickle_only(spec: Spec, directory: Path) -> Path:
    """The same checkpoint as :func:`save_gpt2`, but with ``pytorch_model.bin`` (pickle) weights only."""
    model = build_gpt2(spec)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(directory)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory


def random_ids(spec: Spec, batch: int, pos: int, seed: int) -> torch.Tensor:
    """Seeded token ids ``[batch, pos]`` inside ``spec``'s vocabulary."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, spec.vocab_size, (batch, pos), generator=gen)


def repeated_tokens(n_seqs: int, half: int, *, seed: int, bos: int, pool: torch.Tensor | None = None) -> torch.Tensor:
    """``[n_seqs, 1 + 2 * half]`` token ids: ``bos``, ``half`` random tokens, then the same ``half`` again.

    Only copying predicts the second half, so these prompts show an induction circuit. The
    tokens are drawn from ``pool`` (distinct within a sequence), e.g. a corpus's commonest, or
    else uniformly from ids 256..3255 (GPT-2's earliest merges, common words).
    """
    gen = torch.Generator().manual_seed(seed)
    if pool is None:
        halves = torch.randint(256, 256 + 3000, (n_seqs, half), generator=gen)
    else:
        halves = torch.stack([pool[torch.randperm(len(pool), generator=gen)[:half]] for _ in range(n_seqs)])
    return torch.cat([torch.full((n_seqs, 1), bos), halves, halves], dim=1)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b|`` after checking the shapes agree (broadcasting would hide a swapped axis)."""
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4, what: str = "") -> None:
    """Fail unless ``max |a - b| <= tol`` (NaN or inf mismatches fail too)."""
    diff = max_diff(a, b)
    assert diff <= tol, f"{what}: max abs diff {diff:.3g} > {tol}"
