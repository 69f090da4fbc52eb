"""One forward step of GPT-2 with Hugging Face's KV cache: the cache object and the keyword it travels under.

Generation runs the prompt once, then feeds one new token per step while the cache holds the
keys and values of every earlier position. What the cache is and how it is passed are
transformers' business and change between releases; this module is the one place that knows.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import DynamicCache, GPT2LMHeadModel

KVCache = Any
"""What :func:`step` returns and takes back: transformers' cache object (a ``DynamicCache``); treat it as opaque."""


def kv_cache_argument(model: torch.nn.Module) -> str:
    """The name under which ``model``'s forward takes (and its output returns) the KV cache.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns, and goes
    in 5.40); older 5.x releases know only ``past_key_values``. Read the installed
    signature rather than the version number, so a backport or a subclass is right too.
    """
    parameters = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def new_kv_cache(model: GPT2LMHeadModel) -> KVCache:
    """An empty KV cache for ``model``."""
    return DynamicCache(config=model.config)


def cached_length(kv_cache: KVCache) -> int:
    """How many positions ``kv_cache`` holds."""
    return int(kv_cache.get_seq_length())


def step(
    model: GPT2LMHeadModel,
    input_ids: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch key_pos"],
    position_ids: Int[Tensor, "batch pos"],
    kv_cache: KVCache,
) -> tuple[Float[Tensor, "batch d_vocab"], KVCache]:
    """Run ``input_ids`` after the positions ``kv_cache`` holds; returns the last position's logits and the grown cache.

    Only the last position is unembedded (``logits_to_keep=1``): a step needs nothing else.
    """
    argument = kv_cache_argument(model)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                **{argument: kv_cache}, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], getattr(out, argument)
