"""Hugging Face's names for GPT-2's parameters, and the component names gpt2probe uses instead.

A ``GPT2LMHeadModel``'s state dict names its tensors by the module tree
(``transformer.h.2.mlp.c_fc.weight``); checkpoints on disk may leave out the ``transformer.``
prefix (OpenAI's) or the tied ``lm_head.weight`` (``save_pretrained``), and older ones carry
the causal-mask buffers. Code outside :mod:`gpt2probe.model` asks these functions and never
spells a parameter name itself (``tests/test_layout.py`` holds it to that), so a renamed
parameter in a transformers release is fixed here once.

Component names follow the hook names' prefixes (:mod:`gpt2probe.names`): ``embed``,
``pos_embed``, ``blocks.{l}.ln1``, ``blocks.{l}.attn``, ``blocks.{l}.ln2``,
``blocks.{l}.mlp``, ``ln_final`` and ``unembed``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TIED_UNEMBED = "lm_head.weight"
"""The unembedding's parameter: ``wte.weight`` unless the config unties them, so ``save_pretrained`` leaves it out."""
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")
"""Endings of the causal-mask buffers older GPT-2 checkpoints (OpenAI's on the hub among them) store."""

_BODY = "transformer."
_UNEMBED = "lm_head."
_BLOCK = re.compile(r"transformer\.h\.(\d+)\.(ln_1|ln_2|attn|mlp)\.(.+)")
_BLOCK_PARTS = {"ln_1": "ln1", "ln_2": "ln2", "attn": "attn", "mlp": "mlp"}
_OUTSIDE_BLOCKS = (("transformer.wte.", "embed."), ("transformer.wpe.", "pos_embed."),
                   ("transformer.ln_f.", "ln_final."), (_UNEMBED, "unembed."))


def component_path(parameter: str) -> str:
    """A HF parameter name in component terms: ``transformer.h.2.mlp.c_fc.weight`` -> ``blocks.2.mlp.c_fc.weight``.

    ``transformer.wte.weight`` -> ``embed.weight``, ``transformer.wpe`` -> ``pos_embed``,
    ``transformer.h.{l}.ln_1`` / ``ln_2`` -> ``blocks.{l}.ln1`` / ``ln2``, ``transformer.ln_f`` ->
    ``ln_final``, ``lm_head`` -> ``unembed``; a name of none of these forms is returned unchanged.
    """
    match = _BLOCK.fullmatch(parameter)
    if match:
        layer, part, rest = match.groups()
        return f"blocks.{layer}.{_BLOCK_PARTS[part]}.{rest}"
    for prefix, name in _OUTSIDE_BLOCKS:
        if parameter.startswith(prefix):
            return name + parameter[len(prefix):]
    return parameter


def model_keys(keys: Iterable[str]) -> dict[str, str]:
    """Each checkpoint key -> the model's name for it: OpenAI's checkpoints name ``h.0...`` what the model calls ``transformer.h.0...``."""
    keys = list(keys)
    if any(k.startswith(_BODY) for k in keys):
        return {k: k for k in keys}
    return {k: k if k.startswith(_UNEMBED) else _BODY + k for k in keys}


def is_mask_buffer(key: str) -> bool:
    """Whether ``key`` is a causal-mask buffer (:data:`MASK_BUFFERS`), which a checkpoint may carry or leave out."""
    return key.endswith(MASK_BUFFERS)
