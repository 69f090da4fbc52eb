"""An eager attention with hook points for the scores and the pattern.

Hugging Face's ``sdpa`` and flash kernels never materialise the attention weights (with
``output_attentions=True`` transformers 5 silently returns nothing). While a hook asks for
``hook_attn_scores`` or ``hook_pattern``, the model's config is switched to this function:
it is Hugging Face's eager attention, with the model's own causal and padding mask, plus
the two hook points. Without such hooks the model keeps its own implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from transformers import GPT2LMHeadModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

IMPLEMENTATION = "gpt2probe_eager"

# module -> dispatch(kind, tensor) for the layers whose scores or pattern are hooked
_DISPATCH: dict[int, Callable[[str, Tensor], Tensor]] = {}


def _attention_with_hooks(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T * scaling + mask) v``, exactly as HF's eager GPT-2 attention."""
    dispatch = _DISPATCH.get(id(module))
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    upcast = getattr(module, "reorder_and_upcast_attn", False)
    q, k = (query.float(), key.float()) if upcast else (query, key)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    if dispatch is not None:
        scores = dispatch("attn_scores", scores)
    pattern = torch.softmax(scores, dim=-1).type(value.dtype)
    if dispatch is not None:
        pattern = dispatch("pattern", pattern)
    pattern = torch.nn.functional.dropout(pattern, p=dropout, training=module.training)
    out = torch.matmul(pattern, value).transpose(1, 2)
    return out, pattern


ALL_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, _attention_with_hooks)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, eager_mask)


class PatternHookHandle:
    """Routes one layer's attention through the hooked function until :meth:`remove`.

    The config switch is reference-counted per model, so several hooked layers (or nested
    probes) restore the original implementation only when the last one is removed.
    """

    _switched: dict[int, list] = {}  # id(config) -> [count, previous implementation]

    def __init__(self, model: GPT2LMHeadModel, layer: int, dispatch: Callable[[str, Tensor], Tensor]) -> None:
        self._config = model.config
        self._module_id = id(model.transformer.h[layer].attn)
        _DISPATCH[self._module_id] = dispatch
        entry = self._switched.setdefault(id(self._config), [0, self._config._attn_implementation])
        entry[0] += 1
        self._config._attn_implementation = IMPLEMENTATION
        self._removed = False

    def remove(self) -> None:
        if self._removed:
            return
        self._removed = True
        _DISPATCH.pop(self._module_id, None)
        entry = self._switched[id(self._config)]
        entry[0] -= 1
        if entry[0] == 0:
            self._config._attn_implementation = entry[1]
            del self._switched[id(self._config)]
