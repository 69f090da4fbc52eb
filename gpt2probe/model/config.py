"""The model facts researchers ask for first, read once from a Hugging Face GPT-2 config."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GPT2Config


@dataclass(frozen=True)
class ProbeConfig:
    """Sizes in TransformerLens's names (``n_layers``, ``d_model``, ...), not HF's."""

    model_name: str
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    act_fn: str
    eps: float
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def from_hf(cls, config: GPT2Config, *, model_name: str, device: torch.device, dtype: torch.dtype) -> ProbeConfig:
        return cls(
            model_name=model_name,
            n_layers=config.n_layer,
            d_model=config.n_embd,
            n_heads=config.n_head,
            d_head=config.n_embd // config.n_head,
            d_mlp=config.n_inner if config.n_inner is not None else 4 * config.n_embd,
            d_vocab=config.vocab_size,
            n_ctx=config.n_positions,
            act_fn=config.activation_function,
            eps=config.layer_norm_epsilon,
            device=device,
            dtype=dtype,
        )


def model_eos_candidates(model: torch.nn.Module) -> tuple[object, object]:
    """The end-of-text id(s) the model itself declares: its generation config's, then its config's (each may be None)."""
    gen_config = getattr(model, "generation_config", None)
    return getattr(gen_config, "eos_token_id", None), getattr(getattr(model, "config", None), "eos_token_id", None)
