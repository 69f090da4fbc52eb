"""The activations of one forward pass, and the views of them researchers compute next.

:class:`ActivationCache` is a read-only mapping from hook names to tensors, plus the
residual-stream algebra TransformerLens users know: the accumulated residual stack, its
decomposition into embeddings, attention and MLP outputs, per-head results, and the final
layer norm applied to a stack. It saves to and loads from safetensors with its metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from jaxtyping import Float
from torch import Tensor

from . import names as N
from . import validate
from .errors import HookNameError, InvalidArgumentError, InvalidTypeError, LayerIndexError, ShapeError
from .tokens import Tokens
from .versions import versions
from .weights import Weights

_TOKEN_KEYS = ("__tokens__.ids", "__tokens__.attention_mask")


class ActivationCache(Mapping[str, Tensor]):
    """Captured activations by hook name; see :mod:`gpt2probe.names` for the names.

    The methods that need the model's weights (per-head results, the final layer norm)
    read them from ``weights`` (a :class:`~gpt2probe.weights.Weights`), never from a probe
    or a model: the cache depends on the weights it was given and nothing else.
    """

    def __init__(
        self,
        activations: Mapping[str, Tensor],
        *,
        n_layers: int,
        model_name: str,
        tokens: Tokens | None = None,
        weights: Weights | None = None,
    ) -> None:
        self._data = dict(activations)
        self.n_layers = n_layers
        self.model_name = model_name
        self.tokens = tokens
        self._weights = weights

    # -- mapping -------------------------------------------------------------------
    def __getitem__(self, key: N.ShortKey) -> Tensor:
        """The activation of a hook name, or of a TransformerLens short form.

        ``cache["blocks.1.attn.hook_pattern"]``, ``cache["pattern", 1]``, ``cache["pattern", -1]``
        (the last block), ``cache["scale", 3, "ln1"]``, ``cache["scale"]`` (``ln_final``) and
        ``cache["k6"]`` follow TransformerLens's ``get_act_name`` rules (see :func:`names.act_name`).
        """
        if isinstance(key, str) and key in self._data:
            return self._data[key]
        name = N.from_key(key, self.n_layers)
        try:
            return self._data[name]
        except KeyError:
            valid = N.all_names(self.n_layers)
            short = "" if name == key else f" (the short form {key!r})"
            if name in valid:
                raise HookNameError(
                    f"{name!r}{short} was not captured; ask for it with run_with_cache(..., names=[{name!r}, ...])"
                ) from None
            error = N.unknown_name_error(name, valid)
            raise (error if name == key else HookNameError(f"{error} (asked as the short form {key!r})")) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"ActivationCache({self.model_name!r}, {len(self)} activations)"

    def _repr_html_(self) -> str:
        """Every captured name with its shape and dtype, in forward order."""
        from .report.tables import table

        rows = [[name, str(list(t.shape)), str(t.dtype).removeprefix("torch."), str(t.device)] for name, t in self._data.items()]
        prompts = list(self.tokens.prompts) if self.tokens is not None and self.tokens.prompts else []
        shape = f", tokens {list(self.tokens.ids.shape)}" if self.tokens is not None else ""
        return table(f"ActivationCache of {self.model_name}: {len(self)} activations{shape}",
                     ["name", "shape", "dtype", "device"], rows, max_rows=300,
                     notes=[f"prompt: {p!r}" for p in prompts[:4]])

    # -- residual algebra ----------------------------------------------------------
    def _layer_bound(self, layer: int | None) -> int:
        if layer is None or (isinstance(layer, int) and layer == -1):
            return self.n_layers
        return validate.layer_in(layer, self.n_layers, allow_end=True)

    def accumulated_resid(
        self, layer: int | None = None, *, incl_mid: bool = False, return_labels: bool = False
    ) -> Float[Tensor, "layer_plus_1 batch pos d_model"] | tuple[Tensor, list[str]]:
        """The residual stream entering blocks ``0..layer`` (``layer=None``: every block, then the final stream).

        With the default ``layer=None`` this is ``n_layers + 1`` entries labelled
        ``0_pre, 1_pre, ..., final_post``; ``incl_mid`` interleaves ``l_mid``. The
        same convention as TransformerLens's ``accumulated_resid``.
        """
        validate.boolean("incl_mid", incl_mid)
        validate.boolean("return_labels", return_labels)
        last = self._layer_bound(layer)
        parts, labels = [], []
        for l in range(last + 1):
            if l == self.n_layers:
                parts.append(self[N.resid_post(self.n_layers - 1)])
                labels.append("final_post")
                continue
            parts.append(self[N.resid_pre(l)])
            labels.append(f"{l}_pre")
            if incl_mid and l < last:
                parts.append(self[N.resid_mid(l)])
                labels.append(f"{l}_mid")
        stack = torch.stack(parts)
        return (stack, labels) if return_labels else stack

    def decompose_resid(
        self, layer: int | None = None, *, mode: str = "all", incl_embeds: bool = True, return_labels: bool = False
    ) -> Float[Tensor, "component batch pos d_model"] | tuple[Tensor, list[str]]:
        """The residual stream entering ``layer`` as the sum of its parts.

        Parts: ``embed``, ``pos_embed``, then each earlier block's ``attn_out`` and
        ``mlp_out`` (``mode="attn"`` or ``"mlp"`` keeps one kind). With ``mode="all"`` and
        embeddings included the parts sum to ``accumulated_resid`` at that layer.
        """
        validate.choice("mode", mode, ("all", "attn", "mlp"))
        validate.boolean("incl_embeds", incl_embeds)
        validate.boolean("return_labels", return_labels)
        last = self._layer_bound(layer)
        parts, labels = [], []
        if incl_embeds:
            parts += [self[N.EMBED], self[N.POS_EMBED]]
            labels += ["embed", "pos_embed"]
        for l in range(last):
            if mode in ("all", "attn"):
                parts.append(self[N.attn_out(l)])
                labels.append(f"{l}_attn_out")
            if mode in ("all", "mlp"):
                parts.append(self[N.mlp_out(l)])
                labels.append(f"{l}_mlp_out")
        if not parts:
            raise InvalidArgumentError(f"decompose_resid(layer={layer}, incl_embeds=False) has no components: nothing comes before block 0")
        stack = torch.stack(parts)
        return (stack, labels) if return_labels else stack

    def head_results(self, layer: int) -> Float[Tensor, "batch pos head d_model"]:
        """Each head's output in the residual stream, ``z @ W_O`` per head (``b_O`` not included)."""
        z = self[N.z(validate.layer_in(layer, self.n_layers))]
        w_o = self._require_weights("head_results").W_O_layer(layer).to(z.device, z.dtype)
        return einsum(z, w_o, "batch pos head d_head, head d_head d_model -> batch pos head d_model")

    def stack_head_results(
        self, layer: int | None = None, *, return_labels: bool = False
    ) -> Float[Tensor, "component batch pos d_model"] | tuple[Tensor, list[str]]:
        """Every head's result in blocks ``0..layer-1``, stacked as ``L{l}H{h}`` components."""
        validate.boolean("return_labels", return_labels)
        last = self._layer_bound(layer)
        if last == 0:
            raise LayerIndexError("stack_head_results(layer=0) has no heads: blocks before layer 0 do not exist")
        per_layer = [self.head_results(l) for l in range(last)]
        stack = rearrange(torch.stack(per_layer), "layer batch pos head d_model -> (layer head) batch pos d_model")
        n_heads = per_layer[0].shape[2]
        labels = [f"L{l}H{h}" for l in range(last) for h in range(n_heads)]
        return (stack, labels) if return_labels else stack

    def apply_final_ln(
        self, stack: Float[Tensor, "... batch pos d_model"], *, frozen: bool = False
    ) -> Float[Tensor, "... batch pos d_model"]:
        """Apply GPT-2's final layer norm (``ln_f``) to every entry of a residual stack.

        ``frozen=False`` normalises each entry with its own mean and variance, then applies
        ``ln_f``'s weight and bias: what the model would compute if that entry were the final
        residual stream (the logit lens). ``frozen=True`` is the linear map used for direct
        logit attribution: centre each entry, divide by the *final* stream's captured
        ``ln_final.hook_scale``, multiply by the weight, no bias; the entries of a
        decomposition then sum to ``ln_f(final) - bias``.
        """
        ln_f = self._require_weights("apply_final_ln").ln_final
        validate.boolean("frozen", frozen)
        if not isinstance(stack, Tensor) or not stack.is_floating_point():
            got = f"a {stack.dtype} tensor" if isinstance(stack, Tensor) else type(stack).__name__
            raise InvalidTypeError(f"apply_final_ln needs a floating-point tensor [..., d_model], got {got}")
        if stack.ndim == 0 or stack.shape[-1] != ln_f.weight.shape[0]:
            raise ShapeError(f"apply_final_ln needs a stack whose last axis is d_model={ln_f.weight.shape[0]}, "
                             f"got shape {tuple(stack.shape)}")
        weight, bias = ln_f.weight.to(stack.device, stack.dtype), ln_f.bias.to(stack.device, stack.dtype)
        if not frozen:
            return F.layer_norm(stack, (stack.shape[-1],), weight, bias, ln_f.eps)
        scale = self[N.LN_FINAL_SCALE].to(stack.device, stack.dtype)
        if scale.shape[:-1] != stack.shape[-3:-1]:
            raise ShapeError(
                f"the stack's batch and positions {tuple(stack.shape[-3:-1])} do not match the cached "
                f"final scale's {tuple(scale.shape[:-1])}"
            )
        return (stack - stack.mean(-1, keepdim=True)) / scale * weight

    def _require_weights(self, what: str) -> Weights:
        if self._weights is None:
            raise InvalidArgumentError(f"{what} needs the model's weights: load the cache with ActivationCache.load(path, probe=probe)")
        return self._weights

    # -- persistence ---------------------------------------------------------------
    def save(self, path: str | Path, **extra_metadata: str) -> None:
        """Write every tensor and the metadata (model, prompts, token ids, versions) to safetensors.

        ``extra_metadata`` adds string entries of your own; the keys gpt2probe reads back
        (``format``, ``model_name``, ``n_layers``, ``prompts``, ``versions``) are refused.
        """
        from safetensors.torch import save_file

        from .atomic import atomic_path
        from .savefile import merge_metadata

        tensors, seen = {}, set()
        for name, t in self._data.items():  # resid_post(l) is resid_pre(l+1): safetensors refuses shared storage
            t = t.detach().contiguous().cpu()
            tensors[name] = t.clone() if t.data_ptr() in seen else t
            seen.add(t.data_ptr())
        if self.tokens is not None:
            tensors[_TOKEN_KEYS[0]] = self.tokens.ids.cpu().contiguous()
            tensors[_TOKEN_KEYS[1]] = self.tokens.attention_mask.cpu().contiguous()
        metadata = merge_metadata({
            "format": _FORMAT,
            "model_name": self.model_name,
            "n_layers": str(self.n_layers),
            "prompts": json.dumps(list(self.tokens.prompts) if self.tokens and self.tokens.prompts else None),
            "versions": json.dumps(versions()),
        }, extra_metadata)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        probe: Any = None,
        weights: Weights | None = None,
        device: str | torch.device = "cpu",
    ) -> ActivationCache:
        """Read a cache written by :meth:`save`.

        Pass ``probe`` (a :class:`~gpt2probe.GPT2Probe`; only its ``weights`` are kept) or
        ``weights`` for the methods that need weights.

        The metadata is checked against the tensors (hook names for the layer count, batch
        and position sizes against the tokens, mask against ids, prompt count): a file that
        disagrees with itself is a :class:`~gpt2probe.errors.FileFormatError`.
        """
        from . import savefile

        if probe is not None:
            weights = probe.weights
        where = str(path)
        metadata, data = savefile.read(path, fmt=_FORMAT, what="cache", writer="ActivationCache.save", device=device)
        n_layers = savefile.entry(metadata, "n_layers", where, int)
        model_name = savefile.entry(metadata, "model_name", where, str, parse=False)
        prompts = savefile.entry(metadata, "prompts", where, (list, type(None)))
        savefile.require(n_layers >= 1, where, f"n_layers is {n_layers}")
        tokens = _loaded_tokens(data, prompts, where)
        _check_activations(data, n_layers, tokens, where)
        order = {name: i for i, name in enumerate(N.all_names(n_layers))}
        data = dict(sorted(data.items(), key=lambda item: order[item[0]]))  # forward order
        cache = cls(data, n_layers=n_layers, model_name=model_name, tokens=tokens, weights=weights)
        cache.metadata = metadata
        return cache


_FORMAT = "gpt2probe.ActivationCache"
_ATTENTION = (".attn.hook_pattern", ".attn.hook_attn_scores")
_RESIDUAL_WIDTH = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
                   N.EMBED, N.POS_EMBED, N.LN_FINAL_NORMALIZED)


def _loaded_tokens(data: dict[str, Tensor], prompts: list | None, where: str) -> Tokens | None:
    """Pop the saved token ids and mask from ``data`` and check them against each other and the prompts."""
    from .savefile import require

    present = [key in data for key in _TOKEN_KEYS]
    require(all(present) or not any(present), where, f"has only one of {list(_TOKEN_KEYS)}")
    if not any(present):
        require(prompts is None, where, f"names {len(prompts or [])} prompts but holds no token ids")
        return None
    ids, mask = data.pop(_TOKEN_KEYS[0]), data.pop(_TOKEN_KEYS[1])
    for name, t in zip(_TOKEN_KEYS, (ids, mask)):
        require(t.ndim == 2 and not t.is_floating_point() and not t.is_complex(), where,
                f"{name} must be a 2-D integer tensor, got {t.dtype} of shape {tuple(t.shape)}")
    require(ids.shape == mask.shape, where, f"token ids {tuple(ids.shape)} and attention mask {tuple(mask.shape)} differ in shape")
    require(bool(((mask == 0) | (mask == 1)).all()), where, "the attention mask holds values other than 0 and 1")
    require(ids.shape[1] == 0 or bool((mask.sum(-1) > 0).all()), where, "a prompt's attention mask is all zeros")
    require(bool((ids >= 0).all()), where, "the token ids include negative values")
    if prompts is not None:
        require(all(isinstance(p, str) for p in prompts), where, "the prompts entry holds non-strings")
        require(len(prompts) == ids.shape[0], where, f"names {len(prompts)} prompts but holds token ids for {ids.shape[0]}")
    return Tokens(ids.long(), mask.long(), tuple(prompts) if prompts else None)


def _check_activations(data: Mapping[str, Tensor], n_layers: int, tokens: Tokens | None, where: str) -> None:
    """Every tensor is a hook of an ``n_layers`` model, floating point, with the tokens' batch and positions."""
    from .savefile import require

    valid = set(N.all_names(n_layers))
    unknown = sorted(set(data) - valid)
    require(not unknown, where, f"holds tensors that are not hooks of a {n_layers}-layer model: {unknown[:5]}")
    batch, n_pos = tuple(tokens.ids.shape) if tokens is not None else (None, None)
    for name, t in data.items():
        require(t.is_floating_point(), where, f"{name!r} has dtype {t.dtype}; activations are floating point")
        attention = name.endswith(_ATTENTION)
        require(t.ndim == (4 if attention else t.ndim) and t.ndim >= 3, where,
                f"{name!r} has shape {tuple(t.shape)}; expected [batch, {'head, query_pos, key_pos' if attention else 'pos, ...'}]")
        batch = t.shape[0] if batch is None else batch
        n_pos = (t.shape[2] if attention else t.shape[1]) if n_pos is None else n_pos
        got = (t.shape[0], *(t.shape[2:4] if attention else t.shape[1:2]))
        want = (batch, *((n_pos, n_pos) if attention else (n_pos,)))
        require(got == want, where, f"{name!r} has shape {tuple(t.shape)}, which does not fit {batch} prompts of {n_pos} positions")
    widths = {name: t.shape[-1] for name, t in data.items() if name.endswith(_RESIDUAL_WIDTH)}
    require(len(set(widths.values())) <= 1, where, f"residual-stream tensors disagree on d_model: {widths}")
