"""Which parameters make up each component of GPT-2, for comparing two checkpoints.

A *component* is what a researcher points at when asking "what did fine-tuning change?":
the token and position embeddings, each attention head (its ``W_Q``, ``W_K``, ``W_V``,
``W_O`` in TransformerLens's orientation and its own ``b_Q``, ``b_K``, ``b_V``), each
layer's attention output bias ``b_O`` (shared by the heads, so it is its own component),
each MLP, each LayerNorm and the final norm. Every parameter of a ``GPT2LMHeadModel``
belongs to exactly one component (``lm_head`` is tied to the token embedding); the tests
check that the components' squared norms add up to the whole model's.

Component names follow the hook names' prefixes: ``embed``, ``pos_embed``,
``blocks.{l}.ln1``, ``blocks.{l}.attn.{h}`` (head ``h``), ``blocks.{l}.attn.b_O``,
``blocks.{l}.ln2``, ``blocks.{l}.mlp``, ``ln_final``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from transformers import GPT2LMHeadModel

from ..errors import NotGPT2Error
from ..model.weights import Weights

EMBED, POS_EMBED, LN_FINAL = "embed", "pos_embed", "ln_final"
LAYER_PARTS = ("ln1", "attn.b_O", "ln2", "mlp")
"""The per-layer components besides the heads, in forward order."""


def head_component(layer: int, head: int) -> str:
    """The component name of one attention head, ``blocks.{layer}.attn.{head}``."""
    return f"blocks.{layer}.attn.{head}"


def layer_component(layer: int, part: str) -> str:
    """``blocks.{layer}.{part}`` for ``part`` in :data:`LAYER_PARTS`."""
    return f"blocks.{layer}.{part}"


def component_names(n_layers: int, n_heads: int) -> list[str]:
    """Every component, in forward order."""
    names = [EMBED, POS_EMBED]
    for layer in range(n_layers):
        names.append(layer_component(layer, "ln1"))
        names += [head_component(layer, h) for h in range(n_heads)]
        names += [layer_component(layer, part) for part in LAYER_PARTS[1:]]
    return [*names, LN_FINAL]


def component_tensors(model: torch.nn.Module) -> Iterator[tuple[str, list[Tensor]]]:
    """``(component, [tensors])`` for every component of a ``GPT2LMHeadModel``, in forward order.

    Head tensors are slices of the TransformerLens-oriented weights (views, no copies of the
    model); the other components are the HF parameters themselves, detached.
    """
    if not isinstance(model, GPT2LMHeadModel):
        raise NotGPT2Error(f"components are those of a GPT2LMHeadModel, got {type(model).__name__}")
    weights = Weights(model)
    per_head = [weights.W_Q, weights.W_K, weights.W_V, weights.W_O, weights.b_Q, weights.b_K, weights.b_V]
    yield EMBED, [weights.W_E]
    yield POS_EMBED, [weights.W_pos]
    for layer in range(weights.n_layers):
        block = weights.block(layer)
        yield layer_component(layer, "ln1"), [block.ln1.weight, block.ln1.bias]
        for head in range(per_head[0].shape[1]):
            yield head_component(layer, head), [w[layer, head] for w in per_head]
        yield layer_component(layer, "attn.b_O"), [block.b_O]
        yield layer_component(layer, "ln2"), [block.ln2.weight, block.ln2.bias]
        yield layer_component(layer, "mlp"), [block.W_in, block.b_in, block.W_out, block.b_out]
    ln_final = weights.ln_final
    yield LN_FINAL, [ln_final.weight, ln_final.bias]
