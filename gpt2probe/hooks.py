"""Hook points on the unmodified Hugging Face modules, with TransformerLens's names.

Each *site* is one place in GPT-2's forward pass (a module's input or output) that serves
one or more hook names; e.g. the output of ``attn.c_attn`` serves ``hook_q``, ``hook_k``
and ``hook_v``. A site installs its PyTorch hooks only while some hook function is
registered for one of its names, so a probe with nothing registered adds no hooks at all.

A hook function is called as ``fn(activation, hook)`` where ``hook`` is a :class:`HookPoint`;
it may return a tensor of the same shape to replace the activation.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor
from transformers import GPT2LMHeadModel

from . import names as N
from .attention import PatternHookHandle
from .errors import ConcurrentUseError, InvalidTypeError, ShapeError


@dataclass(frozen=True)
class HookPoint:
    """What a hook function learns about where it was called."""

    name: str

    @property
    def layer(self) -> int | None:
        return N.layer_of(self.name)


HookFn = Callable[[Tensor, HookPoint], "Tensor | None"]
Dispatch = Callable[[str, Tensor], Tensor]


def _first(output: Any) -> Tensor:
    """Blocks and attention return tuples in some transformers versions: take ``[0]`` here, once."""
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output: Any, tensor: Tensor) -> Any:
    return (tensor, *output[1:]) if isinstance(output, tuple) else tensor


def _hidden_arg(args: tuple, kwargs: dict) -> Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden_arg(args: tuple, kwargs: dict, tensor: Tensor) -> tuple[tuple, dict]:
    if args:
        return (tensor, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": tensor}


class Site:
    """One place in the forward pass; ``install`` returns handles with ``.remove()``."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)

    def install(self, dispatch: Dispatch) -> list[Any]:
        raise NotImplementedError


class OutputSite(Site):
    """A module's output (``hook_embed``, ``hook_mlp_out``, ``hook_resid_post``, ``mlp.hook_pre``)."""

    def __init__(self, module: torch.nn.Module, name: str) -> None:
        super().__init__([name])
        self.module, self.name = module, name

    def install(self, dispatch: Dispatch) -> list[Any]:
        def hook(module, args, output):
            tensor = _first(output)
            new = dispatch(self.name, tensor)
            return None if new is tensor else _replace_first(output, new)

        return [self.module.register_forward_hook(hook)]


class InputSite(Site):
    """A module's first input, optionally viewed per head (``hook_resid_pre``, ``hook_z``, ``mlp.hook_post``)."""

    def __init__(self, module: torch.nn.Module, name: str, n_heads: int | None = None) -> None:
        super().__init__([name])
        self.module, self.name, self.n_heads = module, name, n_heads

    def install(self, dispatch: Dispatch) -> list[Any]:
        def hook(module, args, kwargs):
            tensor = _hidden_arg(args, kwargs)
            view = tensor if self.n_heads is None else rearrange(tensor, "b p (h dh) -> b p h dh", h=self.n_heads)
            new = dispatch(self.name, view)
            if new is view:
                return None
            if self.n_heads is not None:
                new = rearrange(new, "b p h dh -> b p (h dh)")
            return _with_hidden_arg(args, kwargs, new)

        return [self.module.register_forward_pre_hook(hook, with_kwargs=True)]


class QKVSite(Site):
    """``c_attn``'s packed output, split into ``hook_q``, ``hook_k``, ``hook_v`` ``[batch, pos, head, d_head]``."""

    def __init__(self, c_attn: torch.nn.Module, layer: int, n_heads: int) -> None:
        super().__init__([N.q(layer), N.k(layer), N.v(layer)])
        self.module, self.n_heads = c_attn, n_heads

    def install(self, dispatch: Dispatch) -> list[Any]:
        def hook(module, args, output):
            parts = output.chunk(3, dim=-1)
            views = [rearrange(p, "b p (h dh) -> b p h dh", h=self.n_heads) for p in parts]
            new = [dispatch(name, view) for name, view in zip(self.names, views)]
            if all(a is b for a, b in zip(new, views)):
                return None
            return torch.cat([rearrange(t, "b p h dh -> b p (h dh)") for t in new], dim=-1)

        return [self.module.register_forward_hook(hook)]


class LayerNormSite(Site):
    """A LayerNorm's ``hook_scale`` ``[batch, pos, 1]`` and ``hook_normalized``, as TransformerLens defines them.

    The scale is ``sqrt(var(x) + eps)`` and the normalized stream is ``(x - mean(x)) / scale``,
    before the LayerNorm's weight and bias. The module's output is only replaced when a
    hook function edits one of them.
    """

    def __init__(self, module: torch.nn.LayerNorm, prefix: str) -> None:
        super().__init__([f"{prefix}.hook_scale", f"{prefix}.hook_normalized"])
        self.module = module

    def install(self, dispatch: Dispatch) -> list[Any]:
        def hook(module, args, output):
            x = args[0]
            centered = x - x.mean(-1, keepdim=True)
            scale = (centered.pow(2).mean(-1, keepdim=True) + module.eps).sqrt()
            new_scale = dispatch(self.names[0], scale)
            normalized = centered / new_scale
            new_normalized = dispatch(self.names[1], normalized)
            if new_scale is scale and new_normalized is normalized:
                return None
            return new_normalized * module.weight + module.bias

        return [self.module.register_forward_hook(hook)]


class AttnOutSite(Site):
    """``hook_attn_out`` and ``hook_resid_mid`` of one block.

    The block adds the attention output to its input internally, so ``resid_mid`` is
    computed here as ``attn_out + resid_pre`` (the block's own sum) and an edit to it is
    applied by adjusting the attention output that the block adds.
    """

    def __init__(self, block: torch.nn.Module, layer: int) -> None:
        super().__init__([N.attn_out(layer), N.resid_mid(layer)])
        self.block = block

    def install(self, dispatch: Dispatch) -> list[Any]:
        stash: dict[str, Tensor] = {}

        def remember_input(module, args, kwargs):
            stash["resid_pre"] = _hidden_arg(args, kwargs)

        def hook(module, args, output):
            attn = _first(output)
            new_attn = dispatch(self.names[0], attn)
            resid_pre = stash.pop("resid_pre")
            mid = new_attn + resid_pre
            new_mid = dispatch(self.names[1], mid)
            if new_mid is not mid:
                new_attn = new_mid - resid_pre
            return None if new_attn is attn else _replace_first(output, new_attn)

        return [
            self.block.register_forward_pre_hook(remember_input, with_kwargs=True),
            self.block.attn.register_forward_hook(hook),
        ]


class PatternSite(Site):
    """``hook_attn_scores`` and ``hook_pattern`` ``[batch, head, query_pos, key_pos]``, from a hooked eager attention."""

    def __init__(self, model: GPT2LMHeadModel, layer: int) -> None:
        super().__init__([N.attn_scores(layer), N.pattern(layer)])
        self.model, self.layer = model, layer

    def install(self, dispatch: Dispatch) -> list[Any]:
        by_kind = {"attn_scores": self.names[0], "pattern": self.names[1]}
        return [PatternHookHandle(self.model, self.layer, lambda kind, t: dispatch(by_kind[kind], t))]


def build_sites(model: GPT2LMHeadModel) -> list[Site]:
    """Every site of a GPT-2 model, in forward order."""
    transformer, n_heads = model.transformer, model.config.n_head
    sites: list[Site] = [OutputSite(transformer.wte, N.EMBED), OutputSite(transformer.wpe, N.POS_EMBED)]
    for layer, block in enumerate(transformer.h):
        sites += [
            InputSite(block, N.resid_pre(layer)),
            LayerNormSite(block.ln_1, f"blocks.{layer}.ln1"),
            QKVSite(block.attn.c_attn, layer, n_heads),
            PatternSite(model, layer),
            InputSite(block.attn.c_proj, N.z(layer), n_heads=n_heads),
            AttnOutSite(block, layer),
            LayerNormSite(block.ln_2, f"blocks.{layer}.ln2"),
            OutputSite(block.mlp.c_fc, N.mlp_pre(layer)),
            InputSite(block.mlp.c_proj, N.mlp_post(layer)),
            OutputSite(block.mlp, N.mlp_out(layer)),
            OutputSite(block, N.resid_post(layer)),
        ]
    sites.append(LayerNormSite(transformer.ln_f, "ln_final"))
    return sites


class HookRegistry:
    """The hook functions registered on one model, and the PyTorch hooks that serve them."""

    def __init__(self, model: GPT2LMHeadModel) -> None:
        self.model = model
        self.sites = build_sites(model)
        self.valid_names = N.all_names(model.config.n_layer)
        self._site_of = {name: site for site in self.sites for name in site.names}
        self._fns: dict[str, list[tuple[int, HookFn]]] = {}
        self._handles: dict[int, list[Any]] = {}  # id(site) -> installed handles
        self._ids = itertools.count()
        self._busy = threading.RLock()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the model for this thread: hooks fire on every forward pass, whichever thread runs it,
        so two threads capturing or intervening at once would read each other's activations."""
        if not self._busy.acquire(blocking=False):
            raise ConcurrentUseError(
                "this probe is running or has hooks attached in another thread; a probe is not thread-safe: "
                "use one probe (with its own model) per thread, or guard calls with a lock"
            )
        try:
            yield
        finally:
            self._busy.release()

    def _dispatch(self, name: str, tensor: Tensor) -> Tensor:
        point = HookPoint(name)
        for _, fn in list(self._fns.get(name, ())):
            result = fn(tensor, point)
            if result is not None:
                if not isinstance(result, Tensor) or result.shape != tensor.shape:
                    got = tuple(result.shape) if isinstance(result, Tensor) else type(result).__name__
                    raise ShapeError(
                        f"the hook function on {name!r} returned {got}; it must return None or a tensor "
                        f"of the activation's shape {tuple(tensor.shape)}"
                    )
                tensor = result
        return tensor

    def check(self, name: str) -> None:
        if name not in self._site_of:
            raise N.unknown_name_error(name, self.valid_names)

    def add(self, name: str, fn: HookFn) -> tuple[str, int]:
        """Register ``fn`` on ``name``; returns a key for :meth:`remove`."""
        self.check(name)
        if not callable(fn):
            raise InvalidTypeError(f"the hook on {name!r} is {type(fn).__name__}, not a function fn(activation, hook)")
        site = self._site_of[name]
        if id(site) not in self._handles:
            self._handles[id(site)] = site.install(self._dispatch)
        key = (name, next(self._ids))
        self._fns.setdefault(name, []).append((key[1], fn))
        return key

    def remove(self, key: tuple[str, int]) -> None:
        name, ident = key
        remaining = [(i, f) for i, f in self._fns.get(name, ()) if i != ident]
        if remaining:
            self._fns[name] = remaining
        else:
            self._fns.pop(name, None)
        site = self._site_of[name]
        if not any(n in self._fns for n in site.names):
            for handle in self._handles.pop(id(site), ()):
                handle.remove()

    @contextmanager
    def using(self, pairs: Iterable[tuple[str, HookFn]]) -> Iterator[None]:
        """Register every pair on entry and remove them on exit, exceptions included.

        All names are checked before anything is registered, so an unknown name leaks nothing.
        """
        pairs = list(pairs)
        for name, _ in pairs:
            self.check(name)
        with self.exclusive():
            keys: list[tuple[str, int]] = []
            try:
                for name, fn in pairs:
                    keys.append(self.add(name, fn))
                yield
            finally:
                for key in reversed(keys):
                    self.remove(key)

    @property
    def active_names(self) -> list[str]:
        return [n for n in self.valid_names if n in self._fns]


def count_torch_hooks(model: torch.nn.Module) -> int:
    """PyTorch hooks attached anywhere in ``model`` (for tests and sanity checks)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
