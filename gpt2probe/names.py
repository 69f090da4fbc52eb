"""Hook names, built explicitly, with TransformerLens 4's strings and semantics.

Build names with the small functions here (``names.resid_pre(3)``) instead of writing
strings by hand; :func:`all_names` lists every name a model offers, in the order a forward
pass reaches them, and :func:`resolve` turns a user's selection into that list's subset.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Sequence

from .errors import HookNameError

EMBED = "hook_embed"
POS_EMBED = "hook_pos_embed"
LN_FINAL_SCALE = "ln_final.hook_scale"
LN_FINAL_NORMALIZED = "ln_final.hook_normalized"


def resid_pre(layer: int) -> str:
    """The residual stream entering block ``layer``."""
    return f"blocks.{layer}.hook_resid_pre"


def resid_mid(layer: int) -> str:
    """The residual stream between block ``layer``'s attention and its MLP."""
    return f"blocks.{layer}.hook_resid_mid"


def resid_post(layer: int) -> str:
    """The residual stream leaving block ``layer``."""
    return f"blocks.{layer}.hook_resid_post"


def attn_out(layer: int) -> str:
    """The attention sublayer's output, ``[batch, pos, d_model]``."""
    return f"blocks.{layer}.hook_attn_out"


def mlp_out(layer: int) -> str:
    """The MLP sublayer's output, ``[batch, pos, d_model]``."""
    return f"blocks.{layer}.hook_mlp_out"


def ln_scale(layer: int, which: int) -> str:
    """``ln1`` (before attention) or ``ln2`` (before the MLP) scale, ``[batch, pos, 1]``."""
    return f"blocks.{layer}.ln{which}.hook_scale"


def ln_normalized(layer: int, which: int) -> str:
    """``ln1``/``ln2``'s normalized input, before its weight and bias, ``[batch, pos, d_model]``."""
    return f"blocks.{layer}.ln{which}.hook_normalized"


def q(layer: int) -> str:
    """Queries, ``[batch, pos, head, d_head]``."""
    return f"blocks.{layer}.attn.hook_q"


def k(layer: int) -> str:
    """Keys, ``[batch, pos, head, d_head]``."""
    return f"blocks.{layer}.attn.hook_k"


def v(layer: int) -> str:
    """Values, ``[batch, pos, head, d_head]``."""
    return f"blocks.{layer}.attn.hook_v"


def z(layer: int) -> str:
    """Each head's pattern-weighted values, ``[batch, pos, head, d_head]``."""
    return f"blocks.{layer}.attn.hook_z"


def attn_scores(layer: int) -> str:
    """Scaled, masked attention scores before the softmax, ``[batch, head, query_pos, key_pos]``."""
    return f"blocks.{layer}.attn.hook_attn_scores"


def pattern(layer: int) -> str:
    """The attention pattern (softmax of the scores), ``[batch, head, query_pos, key_pos]``."""
    return f"blocks.{layer}.attn.hook_pattern"


def mlp_pre(layer: int) -> str:
    """The MLP's pre-activations, ``[batch, pos, d_mlp]``."""
    return f"blocks.{layer}.mlp.hook_pre"


def mlp_post(layer: int) -> str:
    """The MLP's activations after GELU, ``[batch, pos, d_mlp]``."""
    return f"blocks.{layer}.mlp.hook_post"


def block_names(layer: int) -> list[str]:
    """Every name of one block, in the order the forward pass reaches them."""
    return [
        resid_pre(layer),
        ln_scale(layer, 1),
        ln_normalized(layer, 1),
        q(layer),
        k(layer),
        v(layer),
        attn_scores(layer),
        pattern(layer),
        z(layer),
        attn_out(layer),
        resid_mid(layer),
        ln_scale(layer, 2),
        ln_normalized(layer, 2),
        mlp_pre(layer),
        mlp_post(layer),
        mlp_out(layer),
        resid_post(layer),
    ]


def all_names(n_layers: int) -> list[str]:
    """Every hook name of an ``n_layers``-block GPT-2, in forward order."""
    out = [EMBED, POS_EMBED]
    for layer in range(n_layers):
        out += block_names(layer)
    return out + [LN_FINAL_SCALE, LN_FINAL_NORMALIZED]


_LAYER = re.compile(r"^blocks\.(\d+)\.")


def layer_of(name: str) -> int | None:
    """The block index in a hook name, or ``None`` for embeddings and the final norm."""
    match = _LAYER.match(name)
    return int(match.group(1)) if match else None


def nearest(name: str, valid: Sequence[str], n: int = 3) -> list[str]:
    """The valid names closest to ``name``, for error messages."""
    return difflib.get_close_matches(name, valid, n=n, cutoff=0.0)


SAE_STAGES = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_error")
"""The names a spliced SAE adds after its hook's name (see :mod:`gpt2probe.sae.splice`), for error messages."""


def unknown_name_error(name: str, valid: Sequence[str]) -> HookNameError:
    """The error for an unknown hook name: what is wrong with it and the closest valid names."""
    n_layers = sum(1 for n in valid if n.endswith("hook_resid_pre"))
    layer = layer_of(name)
    where = f" (this model has blocks 0..{n_layers - 1})" if layer is not None and layer >= n_layers else ""
    suggestions = ", ".join(repr(s) for s in nearest(name, valid))
    prefix, _, stage = name.rpartition(".")
    if prefix in valid and stage in SAE_STAGES:  # gpt2probe.sae.splice adds these names only while an SAE is spliced
        error_term = ", use_error_term=True" if stage == "hook_sae_error" else ""
        where += (f" (an SAE's stage: it exists only inside 'with probe.saes([sae]{error_term})' for an SAE reading "
                  f"{prefix!r}; attach hooks on it inside that block)")
    return HookNameError(f"unknown hook name {name!r}{where}; nearest valid names: {suggestions}")


NameSelection = str | re.Pattern | Iterable[str] | Callable[[str], bool] | None


def resolve(selection: NameSelection, valid: Sequence[str]) -> list[str]:
    """The valid names a selection picks, in forward order.

    ``selection`` is ``None`` (every name), one exact name or glob pattern such as
    ``"blocks.*.hook_resid_post"``, an iterable of those, a compiled regular expression,
    or a predicate ``name -> bool``. Unknown exact names and patterns that match
    nothing raise :class:`HookNameError` naming the nearest valid names.
    """
    if selection is None:
        return list(valid)
    if isinstance(selection, re.Pattern):
        chosen = {n for n in valid if selection.fullmatch(n)}
        if not chosen:
            raise HookNameError(f"the pattern {selection.pattern!r} matches no hook name; valid names look like {valid[2]!r}")
        return [n for n in valid if n in chosen]
    if isinstance(selection, str):
        selection = [selection]
    if callable(selection):
        return [n for n in valid if selection(n)]
    if isinstance(selection, bytes) or not isinstance(selection, Iterable):
        raise HookNameError(
            f"names must be None, a hook name or glob, a list of them, a compiled regex or a predicate; "
            f"got {type(selection).__name__} {selection!r}"
        )
    chosen: set[str] = set()
    valid_set = set(valid)
    for item in selection:
        if not isinstance(item, str):
            raise HookNameError(f"hook names are strings, got {item!r}")
        if any(c in item for c in "*?["):
            matched = fnmatch.filter(valid, item)
            if not matched:
                raise HookNameError(
                    f"the pattern {item!r} matches no hook name; nearest valid names: "
                    + ", ".join(repr(s) for s in nearest(item, valid))
                )
            chosen.update(matched)
        elif item not in valid_set:
            raise unknown_name_error(item, valid)
        else:
            chosen.add(item)
    return [n for n in valid if n in chosen]


# -- TransformerLens's short forms ----------------------------------------------------------
# ``cache["pattern", 1]``, ``cache["scale", 3, "ln1"]``, ``cache["k6"]``: the rules of
# TransformerLens's ``utils.get_act_name``, written out as tables (tests/test_short_names.py
# checks every name against TransformerLens itself). The result is only a string: whether
# this model has it is decided where it is looked up, with the usual "nearest names" error.
_SHORT_ALIASES = {
    "attn": "pattern",
    "attn_logits": "attn_scores",
    "key": "k",
    "query": "q",
    "value": "v",
    "mlp_pre": "pre",
    "mlp_mid": "mid",
    "mlp_post": "post",
}
_LAYER_TYPE_ALIASES = {"a": "attn", "attention": "attn", "m": "mlp", "b": "", "block": "", "blocks": ""}
_ATTN_SHORT = {"q", "k", "v", "z", "rot_q", "rot_k", "result", "pattern", "attn_scores"}
_MLP_SHORT = {"pre", "post", "mid", "pre_linear"}
_NORM_SHORT = {"scale", "normalized"}
_COMPACT = re.compile(r"([a-z]+)(\d+)([a-z]?.*)")  # "k6" -> k, 6; "scale4ln1" -> scale, 4, ln1

ShortKey = str | tuple


def act_name(name: str, layer: int | None = None, layer_type: str | None = None, *, n_layers: int | None = None) -> str:
    """The full hook name of a TransformerLens short form.

    ``act_name("pattern", 1) == "blocks.1.attn.hook_pattern"``,
    ``act_name("scale", 3, "ln1") == "blocks.3.ln1.hook_scale"``,
    ``act_name("scale") == "ln_final.hook_scale"``, ``act_name("k6") == "blocks.6.attn.hook_k"``;
    a full name comes back unchanged. With ``n_layers``, a negative ``layer`` counts from
    the end (``-1`` is the last block), as TransformerLens's cache allows.
    """
    _check_short(name, layer, layer_type)
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        return name
    compact = _COMPACT.match(name)
    if compact is not None:
        name, digits, layer_type = compact.groups()
        layer = int(digits)
    if layer is not None and layer < 0 and n_layers is not None:
        if layer < -n_layers:
            raise HookNameError(f"layer {layer} in the short form {name!r}: this model has blocks 0..{n_layers - 1} (or -{n_layers}..-1)")
        layer += n_layers
    name = _SHORT_ALIASES.get(name, name)
    if name in _ATTN_SHORT:
        layer_type = "attn"
    elif name in _MLP_SHORT:
        layer_type = "mlp"
    elif layer_type in _LAYER_TYPE_ALIASES:
        layer_type = _LAYER_TYPE_ALIASES[layer_type]
    parts = [f"blocks.{layer}"] if layer is not None else []
    if layer_type:
        parts.append(layer_type)
    parts.append(f"hook_{name}")
    if name in _NORM_SHORT and layer is None:
        parts.insert(0, "ln_final")
    return ".".join(parts)


def _check_short(name: object, layer: object = None, layer_type: object = None) -> None:
    if not isinstance(name, str):
        raise HookNameError(f"a hook name or short form is a string, got {name!r}")
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise HookNameError(f"the layer of a short form is an integer, got {layer!r} for {name!r}")
    if layer_type is not None and not isinstance(layer_type, str):
        raise HookNameError(f"the layer type of a short form is a string such as 'ln1', got {layer_type!r}")


def from_key(key: ShortKey, n_layers: int) -> str:
    """A cache key (a full name, a short string like ``"k6"``, or a tuple like ``("pattern", 1)``) as a full name."""
    if isinstance(key, tuple):
        if not 1 <= len(key) <= 3:
            raise HookNameError(f"a short-form key is (name, layer) or (name, layer, layer_type), got {key!r}")
        _check_short(*key)
        return act_name(*key, n_layers=n_layers)
    _check_short(key)
    return act_name(key, n_layers=n_layers)


# -- hook kinds: what a hook holds, and so its shape ---------------------------------------
# One table for every module that treats hooks by kind (the cache's file checks, generation's
# captures, the harvest's units and dashboard). Suffixes, so that they match at every layer.

RESIDUAL_STREAM = ("hook_embed", "hook_pos_embed", "hook_resid_pre", "hook_resid_mid", "hook_resid_post",
                   "hook_attn_out", "hook_mlp_out")
"""``[batch pos d_model]`` vectors in the residual stream: what the embeddings and each block write or read."""
NORMALIZED = "hook_normalized"
"""A LayerNorm's normalised input (``ln1``, ``ln2``, ``ln_final``): ``[batch pos d_model]``, not in the stream."""
ATTENTION_MAP = ("attn.hook_attn_scores", "attn.hook_pattern")
"""``[batch head query_pos key_pos]``: one entry per pair of positions."""
PER_HEAD = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z")
"""``[batch pos head d_head]``: one vector per head."""
MLP = ("mlp.hook_pre", "mlp.hook_post")
"""``[batch pos d_mlp]``: one value per neuron."""


def is_residual_stream(name: str) -> bool:
    """A hook in the residual stream (``hook_resid_*``, ``hook_*_out``, the embeddings): a unit is a stream direction."""
    return name.endswith(RESIDUAL_STREAM)


def is_residual_width(name: str) -> bool:
    """A hook whose last axis is ``d_model`` without being per head: the residual stream and LayerNorm outputs."""
    return is_residual_stream(name) or name.endswith(NORMALIZED)


def is_attention_map(name: str) -> bool:
    """Attention scores or pattern: ``[batch head query_pos key_pos]`` (positions on axes 2 and 3)."""
    return name.endswith(ATTENTION_MAP)


def is_per_head(name: str) -> bool:
    """q, k, v or z: ``[batch pos head d_head]``."""
    return name.endswith(PER_HEAD)


def is_mlp(name: str) -> bool:
    """An MLP neuron activation, before or after the nonlinearity: ``[batch pos d_mlp]``."""
    return name.endswith(MLP)
