"""GPT-2's weights in TransformerLens's orientation, as detached views of the HF parameters.

HF's ``Conv1D`` stores ``[in, out]`` matrices and packs Q, K and V into one ``c_attn``;
these properties split and rearrange them so that, e.g., ``W_Q[l, h]`` maps the residual
stream (``d_model``) to head ``h``'s queries (``d_head``). The tensors share memory with the
model: treat them as read-only (``.clone()`` before editing).
"""

from __future__ import annotations

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor
from transformers import GPT2LMHeadModel


class Weights:
    """Read-only weight views of one GPT-2 model, stacked over layers."""

    def __init__(self, model: GPT2LMHeadModel) -> None:
        self._model = model
        self._blocks = model.transformer.h
        self._n_heads = model.config.n_head

    def _qkv(self, index: int) -> Float[Tensor, "layer head d_model d_head"]:
        d_model = self._model.config.n_embd
        mats = [b.attn.c_attn.weight.detach()[:, index * d_model : (index + 1) * d_model] for b in self._blocks]
        return rearrange(torch.stack(mats), "layer m (head dh) -> layer head m dh", head=self._n_heads)

    def _qkv_bias(self, index: int) -> Float[Tensor, "layer head d_head"]:
        d_model = self._model.config.n_embd
        vecs = [b.attn.c_attn.bias.detach()[index * d_model : (index + 1) * d_model] for b in self._blocks]
        return rearrange(torch.stack(vecs), "layer (head dh) -> layer head dh", head=self._n_heads)

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self._model.transformer.wte.weight.detach()

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        return self._model.transformer.wpe.weight.detach()

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        """The unembedding; for GPT-2 it is ``W_E.T`` (``lm_head`` is tied to ``wte``)."""
        return self._model.lm_head.weight.detach().T

    @property
    def b_U(self) -> Float[Tensor, " d_vocab"]:
        """Zero: GPT-2's ``lm_head`` has no bias."""
        bias = self._model.lm_head.bias
        return bias.detach() if bias is not None else torch.zeros_like(self.W_U[0])

    @property
    def W_Q(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._qkv(0)

    @property
    def W_K(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._qkv(1)

    @property
    def W_V(self) -> Float[Tensor, "layer head d_model d_head"]:
        return self._qkv(2)

    @property
    def b_Q(self) -> Float[Tensor, "layer head d_head"]:
        return self._qkv_bias(0)

    @property
    def b_K(self) -> Float[Tensor, "layer head d_head"]:
        return self._qkv_bias(1)

    @property
    def b_V(self) -> Float[Tensor, "layer head d_head"]:
        return self._qkv_bias(2)

    @property
    def W_O(self) -> Float[Tensor, "layer head d_head d_model"]:
        mats = torch.stack([b.attn.c_proj.weight.detach() for b in self._blocks])
        return rearrange(mats, "layer (head dh) m -> layer head dh m", head=self._n_heads)

    @property
    def b_O(self) -> Float[Tensor, "layer d_model"]:
        return torch.stack([b.attn.c_proj.bias.detach() for b in self._blocks])

    @property
    def W_in(self) -> Float[Tensor, "layer d_model d_mlp"]:
        return torch.stack([b.mlp.c_fc.weight.detach() for b in self._blocks])

    @property
    def b_in(self) -> Float[Tensor, "layer d_mlp"]:
        return torch.stack([b.mlp.c_fc.bias.detach() for b in self._blocks])

    @property
    def W_out(self) -> Float[Tensor, "layer d_mlp d_model"]:
        return torch.stack([b.mlp.c_proj.weight.detach() for b in self._blocks])

    @property
    def b_out(self) -> Float[Tensor, "layer d_model"]:
        return torch.stack([b.mlp.c_proj.bias.detach() for b in self._blocks])

    def W_O_layer(self, layer: int) -> Float[Tensor, "head d_head d_model"]:
        """One layer's ``W_O`` without stacking the others (used on hot paths)."""
        weight = self._blocks[layer].attn.c_proj.weight.detach()
        return rearrange(weight, "(head dh) m -> head dh m", head=self._n_heads)
