"""GPT-2's weights in TransformerLens's orientation, as detached views of the HF parameters.

HF's ``Conv1D`` stores ``[in, out]`` matrices and packs Q, K and V into one ``c_attn``;
these properties split and rearrange them so that, e.g., ``W_Q[l, h]`` maps the residual
stream (``d_model``) to head ``h``'s queries (``d_head``). The tensors share memory with the
model: treat them as read-only (``.clone()`` before editing).

The stacked matrices (``W_Q``, ``b_O``, ``W_in``...) are built once and reused until a
parameter they come from changes: each is keyed on its parameters' storage pointer,
in-place version counter, dtype and device, so ``model.to(...)``, ``load_state_dict`` or an
in-place edit of a weight rebuilds it on the next access.

Besides the matrices, the view holds every LayerNorm (weight, bias and eps, as a
:class:`~gpt2probe.model.layernorm.LayerNorm`) and each layer's attention score scaling, so
no code outside :mod:`gpt2probe.model` reads them from the module tree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor
from transformers import GPT2LMHeadModel
from transformers.models.gpt2.modeling_gpt2 import GPT2Block

from ..validate import layer_in
from .attention import attention_scaling
from .layernorm import LayerNorm


@dataclass(frozen=True)
class BlockWeights:
    """One block's LayerNorms, attention scaling, ``b_O`` and MLP: detached views of its parameters (no stacking, no copy)."""

    ln1: LayerNorm
    ln2: LayerNorm
    attention_scaling: float
    """The factor multiplying ``q . k`` before the mask and softmax (``1/sqrt(d_head)`` unless the config says otherwise)."""
    b_O: Float[Tensor, " d_model"]
    W_in: Float[Tensor, "d_model d_mlp"]
    b_in: Float[Tensor, " d_mlp"]
    W_out: Float[Tensor, "d_mlp d_model"]
    b_out: Float[Tensor, " d_model"]


class Weights:
    """Read-only weight views of one GPT-2 model, stacked over layers."""

    def __init__(self, model: GPT2LMHeadModel) -> None:
        self._model = model
        # GPT2Model builds ``h`` from GPT2Block only; ModuleList types its items as plain Modules.
        # (The live ModuleList, not a copy: a block replaced in it is seen on the next access.)
        self._blocks = cast("Sequence[GPT2Block]", model.transformer.h)
        self._n_heads = model.config.n_head
        self._stacked: dict[str, tuple[tuple, Tensor]] = {}

    @property
    def n_layers(self) -> int:
        """The number of blocks (without stacking any weight)."""
        return len(self._blocks)

    def _cached(self, name: str, params: Sequence[Tensor], build: Callable[[], Tensor]) -> Tensor:
        """``build()``, reused while none of ``params`` has been moved, replaced or edited in place."""
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        hit = self._stacked.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = build()
        self._stacked[name] = (key, value)
        return value

    def _stack(self, name: str, get: Callable[[GPT2Block], Tensor]) -> Tensor:
        params = [get(b) for b in self._blocks]
        return self._cached(name, params, lambda: torch.stack([p.detach() for p in params]))

    def _qkv(self, index: int) -> Float[Tensor, "layer head d_model d_head"]:
        d_model = self._model.config.n_embd
        params = [b.attn.c_attn.weight for b in self._blocks]

        def build() -> Tensor:
            mats = [p.detach()[:, index * d_model : (index + 1) * d_model] for p in params]
            return rearrange(torch.stack(mats), "layer m (head dh) -> layer head m dh", head=self._n_heads)

        return self._cached(f"qkv{index}", params, build)

    def _qkv_bias(self, index: int) -> Float[Tensor, "layer head d_head"]:
        d_model = self._model.config.n_embd
        params = [b.attn.c_attn.bias for b in self._blocks]

        def build() -> Tensor:
            vecs = [p.detach()[index * d_model : (index + 1) * d_model] for p in params]
            return rearrange(torch.stack(vecs), "layer (head dh) -> layer head dh", head=self._n_heads)

        return self._cached(f"qkv_bias{index}", params, build)

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
        mats = self._stack("c_proj", lambda b: b.attn.c_proj.weight)
        return rearrange(mats, "layer (head dh) m -> layer head dh m", head=self._n_heads)

    @property
    def b_O(self) -> Float[Tensor, "layer d_model"]:
        return self._stack("b_O", lambda b: b.attn.c_proj.bias)

    @property
    def W_in(self) -> Float[Tensor, "layer d_model d_mlp"]:
        return self._stack("W_in", lambda b: b.mlp.c_fc.weight)

    @property
    def b_in(self) -> Float[Tensor, "layer d_mlp"]:
        return self._stack("b_in", lambda b: b.mlp.c_fc.bias)

    @property
    def W_out(self) -> Float[Tensor, "layer d_mlp d_model"]:
        return self._stack("W_out", lambda b: b.mlp.c_proj.weight)

    @property
    def b_out(self) -> Float[Tensor, "layer d_model"]:
        return self._stack("b_out", lambda b: b.mlp.c_proj.bias)

    @property
    def ln_final(self) -> LayerNorm:
        """GPT-2's final layer norm (``ln_f``): its weight, bias and eps; calling it applies it."""
        return LayerNorm.of(self._model.transformer.ln_f).detach()

    def _block(self, layer: int) -> GPT2Block:
        return self._blocks[layer_in(layer, len(self._blocks))]

    def block(self, layer: int) -> BlockWeights:
        """Block ``layer``'s LayerNorms (``ln1`` before attention, ``ln2`` before the MLP), scaling, ``b_O`` and MLP."""
        b = self._block(layer)
        return BlockWeights(
            ln1=LayerNorm.of(b.ln_1).detach(),
            ln2=LayerNorm.of(b.ln_2).detach(),
            attention_scaling=attention_scaling(b.attn),
            b_O=b.attn.c_proj.bias.detach(),
            W_in=b.mlp.c_fc.weight.detach(),
            b_in=b.mlp.c_fc.bias.detach(),
            W_out=b.mlp.c_proj.weight.detach(),
            b_out=b.mlp.c_proj.bias.detach(),
        )

    def W_O_layer(self, layer: int) -> Float[Tensor, "head d_head d_model"]:
        """One layer's ``W_O`` without stacking the others (used on hot paths)."""
        weight = self._block(layer).attn.c_proj.weight.detach()
        return rearrange(weight, "(head dh) m -> head dh m", head=self._n_heads)
