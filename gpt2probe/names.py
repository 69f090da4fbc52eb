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


def unknown_name_error(name: str, valid: Sequence[str]) -> HookNameError:
    """The error for an unknown hook name: what is wrong with it and the closest valid names."""
    n_layers = sum(1 for n in valid if n.endswith("hook_resid_pre"))
    layer = layer_of(name)
    where = f" (this model has blocks 0..{n_layers - 1})" if layer is not None and layer >= n_layers else ""
    suggestions = ", ".join(repr(s) for s in nearest(name, valid))
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
