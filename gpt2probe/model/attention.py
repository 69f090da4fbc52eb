"""The seam to transformers' attention internals: the only module that touches its private API.

Hugging Face's ``sdpa`` and flash kernels never materialise the attention weights (with
``output_attentions=True`` transformers 5 silently returns nothing). To hook
``hook_attn_scores`` and ``hook_pattern`` we register one attention implementation with
transformers (at import, under two names: one per mask format) and, while some layer's
scores or pattern are hooked, point the model's private ``config._attn_implementation``
at it. That implementation dispatches per layer:

* a layer whose scores or pattern are hooked runs Hugging Face's eager math (with the
  model's own causal and padding mask, as an additive mask) plus the two hook points;
* every other layer calls the implementation the model had before (``sdpa`` or ``eager``)
  with the mask format that implementation expects, so it costs what it cost before.

State is per model (:class:`AttentionSeam`, owned by the model's hook registry); the only
process-wide tables are transformers' own registries of implementation functions. Which
layers are hooked is looked up from the attention module itself through a
``WeakKeyDictionary`` keyed by the module object, so two models never see each other's
hooks and nothing keeps a model alive.

transformers releases differ here: recent ones store each layer's score scaling on the
attention module and pass it to every implementation; 5.0 passes none, so its eager
attention applies the config's scaling flags itself while its ``sdpa`` uses the kernel's
default ``1/sqrt(d_head)``. :func:`attention_scaling` gives the factor either way.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.gpt2.modeling_gpt2 import GPT2Attention, eager_attention_forward

from ..errors import ConcurrentUseError, UnsupportedError

PatternDispatch = Callable[[str, Tensor], Tensor]

# Our implementation under two names: the suffix says which mask format the model's mask
# function must produce and which implementation the layers that are not hooked run.
_SDPA, _EAGER = "gpt2probe_sdpa", "gpt2probe_eager"
_PASSTHROUGH = {_SDPA: sdpa_attention_forward, _EAGER: eager_attention_forward}
_OURS_FOR = {"sdpa": _SDPA, "eager": _EAGER}

# attention module -> its layer's hook dispatch, only while that layer's pattern is hooked
_HOOKED: weakref.WeakKeyDictionary[torch.nn.Module, PatternDispatch] = weakref.WeakKeyDictionary()


def attention_scaling(module: GPT2Attention) -> float:
    """The factor that multiplies one layer's ``q . k`` before the mask and the softmax.

    Recent transformers releases store it on the attention module (``scaling``); transformers
    5.0 has no such attribute and its eager attention computes the same factor from the
    config's flags: ``1/sqrt(d_head)`` when ``scale_attn_weights``, and a further
    ``1/(layer + 1)`` when ``scale_attn_by_inverse_layer_idx``.
    """
    scaling = getattr(module, "scaling", None)
    if scaling is not None:
        return float(scaling)
    factor = module.head_dim**-0.5 if module.scale_attn_weights else 1.0
    if module.scale_attn_by_inverse_layer_idx:
        if module.layer_idx is None:  # GPT2Block always passes its index; a bare module may not
            raise UnsupportedError(
                "this attention module's config sets scale_attn_by_inverse_layer_idx but the module has no "
                "layer_idx, so its score scaling is unknown: build it with its layer index (as GPT2Block does)"
            )
        factor /= float(module.layer_idx + 1)
    return factor


def _additive_mask(attention_mask: Tensor | None, q_len: int, kv_len: int, like: Tensor) -> Tensor:
    """The mask as eager attention adds it: 0 where a key is visible, the dtype's minimum elsewhere.

    ``sdpa``'s mask function returns ``None`` for a plain causal batch (no padding; the kernel
    then uses ``is_causal``) or a boolean mask; eager's is already additive. Queries are
    the last ``q_len`` of ``kv_len`` positions (a KV cache holds the earlier ones).
    """
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        return attention_mask[:, :, :, :kv_len]
    if attention_mask is None:
        q_pos = torch.arange(q_len, device=like.device)[:, None] + (kv_len - q_len)
        visible = torch.arange(kv_len, device=like.device)[None, :] <= q_pos
    else:
        visible = attention_mask[:, :, :, :kv_len]
    zero = torch.zeros((), dtype=like.dtype, device=like.device)
    return torch.where(visible, zero, torch.finfo(like.dtype).min)


def _eager_with_hooks(
    module: torch.nn.Module,
    dispatch: PatternDispatch,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
    dropout: float,
) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T * scaling + mask) v``, exactly as HF's eager GPT-2 attention, with the two hooks."""
    upcast = getattr(module, "reorder_and_upcast_attn", False)
    q, k = (query.float(), key.float()) if upcast else (query, key)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
    scores = scores + _additive_mask(attention_mask, query.shape[-2], key.shape[-2], scores)
    scores = dispatch("attn_scores", scores)
    pattern = torch.softmax(scores, dim=-1).type(value.dtype)
    pattern = dispatch("pattern", pattern)
    pattern = torch.nn.functional.dropout(pattern, p=dropout, training=module.training)
    out = torch.matmul(pattern, value).transpose(1, 2)
    return out, pattern


def _make_attention(name: str) -> Callable[..., tuple[Tensor, Tensor | None]]:
    passthrough = _PASSTHROUGH[name]

    def attention(
        module: GPT2Attention,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor | None]:
        dispatch = _HOOKED.get(module)
        if dispatch is None:
            if passthrough is eager_attention_forward and getattr(module, "reorder_and_upcast_attn", False):
                return module._upcast_and_reordered_attn(query, key, value, attention_mask)  # as HF's eager does
            return passthrough(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        if scaling is None:  # transformers 5.0 passes none (see the module docstring)
            scaling = attention_scaling(module)
            if passthrough is sdpa_attention_forward and scaling != query.size(-1) ** -0.5:
                raise UnsupportedError(
                    f"this model's config scales attention scores by {scaling:g} (scale_attn_weights="
                    f"{module.scale_attn_weights}, scale_attn_by_inverse_layer_idx={module.scale_attn_by_inverse_layer_idx}), "
                    f"but this transformers release's 'sdpa' attention ignores those flags and uses {query.size(-1) ** -0.5:g}, "
                    "so a hooked pattern cannot match what the model computes: load the model with "
                    "attn_implementation='eager', or use a transformers release whose GPT-2 attention passes its scaling"
                )
        return _eager_with_hooks(module, dispatch, query, key, value, attention_mask, scaling, dropout)

    attention.__name__ = attention.__qualname__ = f"{name}_attention"
    return attention


for _name, _mask in ((_SDPA, sdpa_mask), (_EAGER, eager_mask)):
    ALL_ATTENTION_FUNCTIONS.register(_name, _make_attention(_name))
    ALL_MASK_ATTENTION_FUNCTIONS.register(_name, _mask)


class AttentionSeam:
    """One model's attention switch: which layers have hooked scores or patterns.

    While at least one layer is hooked, the model's config points at our implementation;
    the previous implementation is restored when the last hooked layer is released.
    """

    def __init__(self, config: Any, attention_modules: list[torch.nn.Module]) -> None:
        self._config = config
        self._modules = attention_modules
        self._hooked_layers: set[int] = set()
        self._previous: str | None = None

    @property
    def implementation(self) -> str:
        """The implementation the model runs now (e.g. ``"sdpa"``)."""
        return self._config._attn_implementation

    @property
    def hooked_layers(self) -> frozenset[int]:
        return frozenset(self._hooked_layers)

    def hook(self, layer: int, dispatch: PatternDispatch) -> PatternHandle:
        """Route ``layer``'s attention through the hooked eager math until the handle is removed."""
        if layer in self._hooked_layers:
            raise ConcurrentUseError(f"layer {layer}'s attention pattern is already hooked on this model")
        if not self._hooked_layers:
            current = self._config._attn_implementation
            if current not in _OURS_FOR:
                raise UnsupportedError(
                    f"attention scores and patterns can be hooked on models using 'sdpa' or 'eager' attention; "
                    f"this model uses {current!r}: load it with attn_implementation='sdpa' or 'eager'"
                )
            self._previous = current
            self._config._attn_implementation = _OURS_FOR[current]
        self._hooked_layers.add(layer)
        _HOOKED[self._modules[layer]] = dispatch
        return PatternHandle(self, layer)

    def release(self, layer: int) -> None:
        if layer not in self._hooked_layers:
            return
        self._hooked_layers.discard(layer)
        _HOOKED.pop(self._modules[layer], None)
        if not self._hooked_layers:
            self._config._attn_implementation = self._previous
            self._previous = None


class PatternHandle:
    """What :meth:`AttentionSeam.hook` returns: ``remove()`` releases the layer (idempotent)."""

    def __init__(self, seam: AttentionSeam, layer: int) -> None:
        self._seam, self._layer, self._removed = seam, layer, False

    def remove(self) -> None:
        if not self._removed:
            self._removed = True
            self._seam.release(self._layer)
