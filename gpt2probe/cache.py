"""The activations of one forward pass, and the views of them researchers compute next.

:class:`ActivationCache` is a read-only mapping from hook names to tensors, plus the
residual-stream algebra TransformerLens users know: the accumulated residual stack, its
decomposition into embeddings, attention and MLP outputs, per-head results, and the final
layer norm applied to a stack. It saves to and loads from safetensors with its metadata.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from einops import einsum, rearrange
from jaxtyping import Float
from torch import Tensor

from . import names as N
from . import validate
from .errors import HookNameError, InvalidArgumentError, InvalidTypeError, LayerIndexError, ShapeError
from .model.weights import Weights
from .tokens import Tokens
from .versions import versions

_TOKEN_KEYS = ("__tokens__.ids", "__tokens__.attention_mask")


class ActivationCache(Mapping[str, Tensor]):
    """Captured activations by hook name; see :mod:`gpt2probe.names` for the names.

    The methods that need the model's weights (per-head results, the final layer norm)
    read them from ``weights`` (a :class:`~gpt2probe.model.weights.Weights`), never from a probe
    or a model: the cache depends on the weights it was given and nothing else.
    """

    metadata: dict[str, str]
    """The file's metadata; only a cache read by :meth:`load` has it."""

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
        from .display.tables import table

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
        if not frozen:
            return ln_f(stack)
        scale = self[N.LN_FINAL_SCALE].to(stack.device, stack.dtype)
        if scale.shape[:-1] != stack.shape[-3:-1]:
            raise ShapeError(
                f"the stack's batch and positions {tuple(stack.shape[-3:-1])} do not match the cached "
                f"final scale's {tuple(scale.shape[:-1])}"
            )
        return ln_f.frozen(stack, scale)

    def _require_weights(self, what: str) -> Weights:
        if self._weights is None:
            raise InvalidArgumentError(f"{what} needs the model's weights: load the cache with ActivationCache.load(path, probe=probe)")
        return self._weights

    # -- persistence ---------------------------------------------------------------
    def save(self, path: str | Path, **extra_metadata: str) -> None:
        """Write every tensor and the metadata (model, prompts, token ids, versions) to safetensors.

        ``extra_metadata`` adds string entries of your own; the keys gpt2probe reads back
        (``format``, ``model_name``, ``n_layers``, ``prompts``, ``d_vocab``, ``tokens_sha256``,
        ``versions``) are refused. ``tokens_sha256`` lets :meth:`load` notice prompts or ids
        edited afterwards.
        """
        from .savefile import merge_metadata, write_safetensors

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
            "d_vocab": json.dumps(int(self._weights.W_U.shape[-1]) if self._weights is not None else None),
            "tokens_sha256": _tokens_digest(self.tokens),
            "versions": json.dumps(versions()),
        }, extra_metadata)
        write_safetensors(path, tensors, metadata)

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
        d_vocab = savefile.entry(metadata, "d_vocab", where, (int, type(None))) if "d_vocab" in metadata else None
        savefile.require(1 <= n_layers <= _MAX_LAYERS, where, f"n_layers is {n_layers}; a GPT-2 has between 1 and "
                         f"{_MAX_LAYERS} blocks (the largest has 48)")
        if probe is not None or weights is not None:
            _check_model(where, model_name, n_layers, d_vocab, data, probe, weights)
            d_vocab = d_vocab if d_vocab is not None else weights.W_U.shape[-1] if weights is not None else None
        tokens = _loaded_tokens(data, prompts, where, d_vocab)
        if "tokens_sha256" in metadata:
            digest = savefile.entry(metadata, "tokens_sha256", where, str, parse=False)
            savefile.require(digest == _tokens_digest(tokens), where,
                             "its prompts or token ids were changed after saving (their checksum differs): "
                             "save the cache again from its source")
        if probe is not None and tokens is not None and tokens.prompts is not None:
            _check_prompts(tokens, probe.tokenizer, where)
        order = _forward_order(data, n_layers, where)  # from the tensors' names: nothing sized by n_layers is built
        _check_activations(data, n_layers, tokens, where)
        data = dict(sorted(data.items(), key=lambda item: order[item[0]]))  # forward order
        cache = cls(data, n_layers=n_layers, model_name=model_name, tokens=tokens, weights=weights)
        cache.metadata = metadata
        return cache


def _forward_order(data: Mapping[str, Tensor], n_layers: int, where: str) -> dict[str, tuple[int, int]]:
    """Each tensor's place in the forward pass, read from its name alone (no list of ``n_layers`` blocks is built).

    A file's ``n_layers`` is untrusted: building every hook name of a "1000000-layer" model
    took minutes and gigabytes before any check ran.
    """
    from .savefile import require

    ends = {N.EMBED: (-1, 0), N.POS_EMBED: (-1, 1), N.LN_FINAL_SCALE: (n_layers, 0), N.LN_FINAL_NORMALIZED: (n_layers, 1)}
    block = {name[len("blocks.0."):]: i for i, name in enumerate(N.block_names(0))}
    order, unknown = {}, []
    for name in data:
        layer = N.layer_of(name)
        rest = name.split(".", 2)[-1] if layer is not None else None
        if name in ends:
            order[name] = ends[name]
        elif layer is not None and layer < n_layers and rest in block and name == f"blocks.{layer}.{rest}":
            order[name] = (layer, block[rest])
        else:
            unknown.append(name)
    require(not unknown, where, f"holds tensors that are not hooks of a {n_layers}-layer model: {sorted(unknown)[:5]}")
    return order


def _tokens_digest(tokens: Tokens | None) -> str:
    """SHA-256 of the prompts, ids and mask as saved: a later edit of one without the others shows."""
    digest = hashlib.sha256()
    if tokens is not None:
        digest.update(json.dumps(list(tokens.prompts) if tokens.prompts else None).encode("utf-8"))
        for t in (tokens.ids, tokens.attention_mask):
            digest.update(repr(tuple(t.shape)).encode())
            digest.update(t.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _check_prompts(tokens: Tokens, tokenizer: Any, where: str) -> None:
    """Each prompt, tokenized, must begin its row's real ids (generation appends new tokens; BOS may lead)."""
    from .savefile import require

    for row, prompt in enumerate(tokens.prompts or ()):
        real = tokens.ids[row][tokens.attention_mask[row].bool()].tolist()
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        fits = real[: len(ids)] == ids or (real[:1] == [tokenizer.bos_token_id] and real[1 : len(ids) + 1] == ids)
        require(fits, where, f"prompt {row} ({prompt[:40]!r}) does not tokenize to its saved token ids: the prompts "
                             "metadata and the ids disagree (edited?); save the cache again")


def _check_model(where: str, model_name: str, n_layers: int, d_vocab: int | None, data: Mapping[str, Tensor],
                 probe: Any, weights: Weights | None) -> None:
    """A cache read with a probe (or weights) must come from a model of the same sizes."""
    from .errors import ModelMismatchError

    if probe is not None:
        mine = (probe.cfg.model_name, probe.cfg.n_layers, probe.cfg.d_model, probe.cfg.d_vocab)
    elif weights is not None:
        W_U = weights.W_U
        mine = ("the weights given", weights.n_layers, W_U.shape[0], W_U.shape[1])
    else:
        raise InvalidArgumentError("a loaded cache is checked against a probe or weights, and neither was given")
    name, layers, d_model, vocab = mine
    widths = {t.shape[-1] for key, t in data.items() if N.is_residual_width(key)}
    problems = [f"n_layers {n_layers} vs {layers}"] if n_layers != layers else []
    problems += [f"d_model {sorted(widths)} vs {d_model}"] if widths and widths != {d_model} else []
    problems += [f"d_vocab {d_vocab} vs {vocab}"] if d_vocab is not None and d_vocab != vocab else []
    if problems:
        raise ModelMismatchError(f"{where!r} was captured from {model_name!r}, which differs from {name!r} "
                                 f"({'; '.join(problems)}): load it with the probe of the model it came from")


_FORMAT = "gpt2probe.ActivationCache"
_MAX_LAYERS = 4096  # far above any GPT-2 (48 blocks); a file claiming more is damaged


def _loaded_tokens(data: dict[str, Tensor], prompts: list | None, where: str, d_vocab: int | None) -> Tokens | None:
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
    if d_vocab is not None and ids.numel():
        require(int(ids.max()) < d_vocab, where, f"the token ids go up to {int(ids.max())}, outside the model's "
                                                  f"vocabulary of {d_vocab} tokens")
    if prompts is not None:
        require(all(isinstance(p, str) for p in prompts), where, "the prompts entry holds non-strings")
        require(len(prompts) == ids.shape[0], where, f"names {len(prompts)} prompts but holds token ids for {ids.shape[0]}")
    return Tokens(ids.long(), mask.long(), tuple(prompts) if prompts else None)


def _check_activations(data: Mapping[str, Tensor], n_layers: int, tokens: Tokens | None, where: str) -> None:
    """Every tensor is a hook of an ``n_layers`` model, floating point, with the tokens' batch and positions."""
    from .savefile import require

    batch, n_pos = tuple(tokens.ids.shape) if tokens is not None else (None, None)
    for name, t in data.items():
        require(t.is_floating_point(), where, f"{name!r} has dtype {t.dtype}; activations are floating point")
        attention = N.is_attention_map(name)
        require(t.ndim == (4 if attention else t.ndim) and t.ndim >= 3, where,
                f"{name!r} has shape {tuple(t.shape)}; expected [batch, {'head, query_pos, key_pos' if attention else 'pos, ...'}]")
        batch = t.shape[0] if batch is None else batch
        n_pos = (t.shape[2] if attention else t.shape[1]) if n_pos is None else n_pos
        got = (t.shape[0], *(t.shape[2:4] if attention else t.shape[1:2]))
        want = (batch, *((n_pos, n_pos) if attention else (n_pos,)))
        require(got == want, where, f"{name!r} has shape {tuple(t.shape)}, which does not fit {batch} prompts of {n_pos} positions")
    widths = {name: t.shape[-1] for name, t in data.items() if N.is_residual_width(name)}
    require(len(set(widths.values())) <= 1, where, f"residual-stream tensors disagree on d_model: {widths}")
