"""Where GPT-2's parts are in Hugging Face's module tree, for the code that needs a module itself.

Besides this package's hooks, attention seam and weights, this is the only module that names
``transformer``, ``h``, ``ln_f``, ``wte`` or ``lm_head``.

``GPT2LMHeadModel`` is ``transformer`` (the body: ``wte``, ``wpe``, blocks ``h[l]`` with
``ln_1``, ``attn`` (``c_attn``, ``c_proj``), ``ln_2``, ``mlp`` (``c_fc``, ``c_proj``), then
``ln_f``) and ``lm_head`` (tied to ``wte``). Code elsewhere asks these functions, the
:class:`~gpt2probe.model.weights.Weights` view or the probe, so a change of the tree (a
renamed attribute in a transformers release, another architecture) is made here once.
"""

from __future__ import annotations

import torch
from transformers import GPT2LMHeadModel

from .layernorm import LayerNorm


def body(model: GPT2LMHeadModel) -> torch.nn.Module:
    """The transformer without the unembedding: returns the final (``ln_f``-applied) hidden states."""
    return model.transformer


def blocks(model: GPT2LMHeadModel) -> list[torch.nn.Module]:
    """The blocks, in order."""
    return list(model.transformer.h)


def attention_modules(model: GPT2LMHeadModel) -> list[torch.nn.Module]:
    """Each block's attention module (what the attention seam dispatches on), in order."""
    return [block.get_submodule("attn") for block in model.transformer.h]


def final_norm(model: GPT2LMHeadModel) -> LayerNorm:
    """``ln_f``'s live parameters and eps (not detached)."""
    return LayerNorm.of(model.transformer.ln_f)


def embeddings_tied(model: GPT2LMHeadModel) -> bool:
    """Whether the unembedding is the token embedding (``W_U = W_E.T``): one tensor, or equal values."""
    unembed, embed = model.lm_head.weight, model.transformer.wte.weight
    return unembed.data_ptr() == embed.data_ptr() or bool(torch.equal(unembed, embed))
