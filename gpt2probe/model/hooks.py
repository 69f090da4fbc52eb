"""Hook points on the unmodified Hugging Face modules, with TransformerLens's names.

Each *site* is one place in GPT-2's forward pass (a module's input or output) that serves
one or more hook names; e.g. the output of ``attn.c_attn`` serves ``hook_q``, ``hook_k``
and ``hook_v``. A site installs its PyTorch hooks only while some hook function is
registered for one of its names, so a probe with nothing registered adds no hooks at all.

A hook function is called as ``fn(activation, hook)`` where ``hook`` is a :class:`HookPoint`;
it may return a tensor of the same shape, dtype and device to replace the activation.

Every captured or replaced value is what the model actually consumes or produces at that
point, after every edit upstream of it, whatever order the hooks were registered in.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from einops import rearrange
from torch import Tensor
from transformers import GPT2LMHeadModel
from transformers.models.gpt2.modeling_gpt2 import GPT2Block

from .. import names as N
from ..errors import ConcurrentUseError, HookNameError, HookReturnError, InvalidTypeError, UnsupportedError
from .attention import AttentionSeam
from .layernorm import LayerNorm
from .modules import attention_modules


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
    """A module's output (``hook_embed``, ``hook_pos_embed``, ``hook_attn_out``, ``mlp.hook_pre``)."""

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
    before the LayerNorm's weight and bias. Both are computed in float32, as torch's own
    LayerNorm kernel does for float16 and bfloat16 inputs (GPT-2's residual stream has entries
    near 3,000 whose squares overflow float16), then given to hooks in the input's dtype.
    The module's output is only replaced when a hook function edits one of them.
    """

    def __init__(self, module: torch.nn.LayerNorm, prefix: str) -> None:
        super().__init__([f"{prefix}.hook_scale", f"{prefix}.hook_normalized"])
        self.module = module

    def install(self, dispatch: Dispatch) -> list[Any]:
        def hook(module, args, output):
            x = args[0]
            ln = LayerNorm.of(module)  # read at every call: the parameters may have been replaced or edited
            centered, scale32 = ln.center_and_scale(x.float())
            scale = scale32.to(x.dtype)
            new_scale = dispatch(self.names[0], scale)
            normalized32 = centered / (scale32 if new_scale is scale else new_scale.float())
            normalized = normalized32.to(x.dtype)
            new_normalized = dispatch(self.names[1], normalized)
            if new_scale is scale and new_normalized is normalized:
                return None
            if new_normalized is not normalized:
                normalized32 = new_normalized.float()
            return ln.affine(normalized32).to(output.dtype)

        return [self.module.register_forward_hook(hook)]


class BlockTailSite(Site):
    """``hook_resid_mid``, ``hook_mlp_out`` and ``hook_resid_post`` of one block.

    Inside ``GPT2Block.forward`` the residual stream between attention and MLP never passes
    a module boundary of its own: the block adds the attention output to its input, feeds
    the sum to ``ln_2`` and adds the MLP output to the same sum. So ``resid_mid`` is read as
    ``ln_2``'s input (what the model actually consumes, after every upstream edit, whatever
    order hooks were registered in). A replacement of it is given to ``ln_2`` and the
    block's output is recomputed as ``new_resid_mid + mlp_out``, the block's own sum with
    the new stream. The three names share one site so that this correction always happens
    before ``resid_post`` hooks see the block's output.
    """

    def __init__(self, block: GPT2Block, layer: int) -> None:
        super().__init__([N.resid_mid(layer), N.mlp_out(layer), N.resid_post(layer)])
        self.block = block

    def install(self, dispatch: Dispatch) -> list[Any]:
        mid_name, mlp_name, post_name = self.names
        state: dict[str, Tensor | None] = {}

        def at_ln_2(module, args):
            mid = args[0]
            new = dispatch(mid_name, mid)
            state["mid"] = None if new is mid else new
            return None if new is mid else (new, *args[1:])

        def at_mlp(module, args, output):
            new = dispatch(mlp_name, output)
            state["mlp_out"] = new
            return None if new is output else new

        def at_block(module, args, output):
            hidden = _first(output)
            new_mid, mlp_out = state.pop("mid", None), state.pop("mlp_out", None)
            if new_mid is None:
                post = hidden
            elif mlp_out is None:  # ln_2's input was replaced but the MLP's forward hook never ran
                raise UnsupportedError(
                    f"{mid_name} was replaced but this block's MLP did not run between ln_2 and the block's "
                    f"output, so {post_name} cannot be recomputed; this transformers release's GPT2Block "
                    "is not supported"
                )
            else:
                post = new_mid + mlp_out
            new = dispatch(post_name, post)
            return None if new is hidden else _replace_first(output, new)

        return [
            self.block.ln_2.register_forward_pre_hook(at_ln_2),
            self.block.mlp.register_forward_hook(at_mlp),
            self.block.register_forward_hook(at_block),
        ]


class PatternSite(Site):
    """``hook_attn_scores`` and ``hook_pattern`` ``[batch, head, query_pos, key_pos]``, from a hooked eager attention."""

    def __init__(self, seam: AttentionSeam, layer: int) -> None:
        super().__init__([N.attn_scores(layer), N.pattern(layer)])
        self.seam, self.layer = seam, layer

    def install(self, dispatch: Dispatch) -> list[Any]:
        by_kind = {"attn_scores": self.names[0], "pattern": self.names[1]}
        return [self.seam.hook(self.layer, lambda kind, t: dispatch(by_kind[kind], t))]


def build_sites(model: GPT2LMHeadModel, seam: AttentionSeam) -> list[Site]:
    """Every site of a GPT-2 model, in forward order.

    Each PyTorch hook slot (one module's pre-hooks or forward hooks) is used by at most one
    site, so the order in which sites were installed never changes what a hook sees.
    """
    transformer, n_heads = model.transformer, model.config.n_head
    sites: list[Site] = [OutputSite(transformer.wte, N.EMBED), OutputSite(transformer.wpe, N.POS_EMBED)]
    # GPT2Model builds ``h`` from GPT2Block only; ModuleList types its items as plain Modules.
    for layer, block in enumerate(cast("list[GPT2Block]", transformer.h)):
        sites += [
            InputSite(block, N.resid_pre(layer)),
            LayerNormSite(block.ln_1, f"blocks.{layer}.ln1"),
            QKVSite(block.attn.c_attn, layer, n_heads),
            PatternSite(seam, layer),
            InputSite(block.attn.c_proj, N.z(layer), n_heads=n_heads),
            OutputSite(block.attn, N.attn_out(layer)),
            LayerNormSite(block.ln_2, f"blocks.{layer}.ln2"),
            OutputSite(block.mlp.c_fc, N.mlp_pre(layer)),
            InputSite(block.mlp.c_proj, N.mlp_post(layer)),
            BlockTailSite(block, layer),
        ]
    sites.append(LayerNormSite(transformer.ln_f, "ln_final"))
    return sites


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}, {value.dtype} on {value.device}"
    return f"a {type(value).__name__}"


def check_replacement(name: str, result: object, activation: Tensor) -> Tensor:
    """``result`` if it can stand in for ``activation`` exactly; otherwise an error naming the hook, what it expected and what came.

    Nothing is cast or moved: a float32 tensor returned for a float16 activation (or a CPU
    tensor for a CUDA one) is refused rather than silently converted.
    """
    if (
        not isinstance(result, Tensor)
        or result.shape != activation.shape
        or result.dtype != activation.dtype
        or result.device != activation.device
    ):
        raise HookReturnError(
            f"the hook function on {name!r} returned {_describe(result)}; it must return None or "
            f"{_describe(activation)} (the activation's shape, dtype and device: use .to(activation) to convert)"
        )
    return result


class ModelLock:
    """Which thread may run the model now; shared by every probe of one model.

    Unlike an ``RLock``, it may be released from another thread than the one that took it:
    a ``with probe.hooks(...)`` block entered in one thread and exited in another (a
    generator or an async task handed between threads) frees the model instead of leaving
    it locked for ever. Nested holds by the owning thread are counted.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._depth = 0

    @property
    def owner(self) -> int | None:
        """The ident of the thread holding the model, or ``None``."""
        return self._owner

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._depth and self._owner != me:
                raise ConcurrentUseError(
                    "this model is running or has hooks attached in another thread (through this probe or another "
                    "probe of the same model); a model is not thread-safe: use one model per thread, "
                    "or guard calls with a lock"
                )
            self._owner, self._depth = me, self._depth + 1

    def release(self) -> None:
        with self._mutex:
            if self._depth == 0:
                raise ConcurrentUseError("ModelLock released more often than acquired")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None


def hook_pairs(fwd_hooks: object) -> list[tuple[str, HookFn]]:
    """``(name, fn)`` pairs from a mapping or an iterable of pairs, each a hook name and a function of two arguments.

    Checked here, before anything is attached, so that ``None``, ``{5: fn}``, a 3-tuple or
    ``lambda t: t`` fail at once with our error rather than as Python's inside a forward pass.
    """
    if isinstance(fwd_hooks, Mapping):
        items = list(fwd_hooks.items())
    elif isinstance(fwd_hooks, (str, bytes, Tensor)) or not isinstance(fwd_hooks, Iterable):
        raise InvalidTypeError(
            f"hooks must be a dict {{name: fn}} or a list of (name, fn) pairs, got {type(fwd_hooks).__name__}"
        )
    else:
        items = list(fwd_hooks)
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, tuple | list) or len(item) != 2:
            what = f"a {len(item)}-tuple" if isinstance(item, tuple | list) else f"a {type(item).__name__}"
            raise InvalidTypeError(f"hook {i} is {what}; each hook is a pair (name, fn)")
        name, fn = item
        if not isinstance(name, str):
            raise HookNameError(f"hook names are strings such as 'blocks.0.hook_resid_pre', got {type(name).__name__} {name!r}")
        check_hook_function(name, fn)
        pairs.append((name, fn))
    return pairs


def check_hook_function(name: str, fn: object) -> None:
    """Refuse a hook that is not a function, or one that cannot be called as ``fn(activation, hook)``."""
    if not callable(fn):
        raise InvalidTypeError(f"the hook on {name!r} is {type(fn).__name__}, not a function fn(activation, hook)")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some built-ins have no signature: they are called and fail on their own
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise InvalidTypeError(
            f"the hook on {name!r} has the signature {getattr(fn, '__name__', type(fn).__name__)}{signature}, "
            "but hook functions are called as fn(activation, hook): add the second argument "
            "(e.g. lambda activation, hook: ...)"
        ) from None


_REGISTRIES: weakref.WeakKeyDictionary[torch.nn.Module, HookRegistry] = weakref.WeakKeyDictionary()
_REGISTRIES_MUTEX = threading.Lock()


class HookRegistry:
    """The hook functions registered on one model, and the PyTorch hooks that serve them.

    There is one registry per model object, shared by every probe built on it
    (:meth:`for_model`): its lock is the model's, so two probes of one model can neither
    run at once nor switch off each other's hooks. The registry keeps the model's
    submodules, never the model object itself, so a model that is no longer used is freed.
    """

    def __init__(self, model: GPT2LMHeadModel) -> None:
        self.seam = AttentionSeam(model.config, attention_modules(model))
        self.sites = build_sites(model, self.seam)
        self.valid_names = N.all_names(model.config.n_layer)
        self._site_of = {name: site for site in self.sites for name in site.names}
        self._fns: dict[str, list[tuple[int, HookFn]]] = {}
        self._handles: dict[Site, list[Any]] = {}  # installed site -> its PyTorch handles
        self._ids = itertools.count()
        self._extra: dict[str, str] = {}  # name served by a hook function (a spliced SAE's stages) -> its base name
        self.lock = ModelLock()
        self._in_hook: str | None = None  # the name whose hook function is running (only the lock's owner runs them)

    @classmethod
    def for_model(cls, model: GPT2LMHeadModel) -> HookRegistry:
        """The registry of ``model``, created on first use and shared by all its probes."""
        with _REGISTRIES_MUTEX:
            registry = _REGISTRIES.get(model)
            if registry is None:
                registry = _REGISTRIES[model] = cls(model)
            return registry

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the model for this thread.

        Hooks fire on every forward pass, whichever thread runs it, so two threads capturing or
        intervening at once would read each other's activations.
        """
        self.lock.acquire()
        try:
            yield
        finally:
            self.lock.release()

    def _dispatch(self, name: str, tensor: Tensor) -> Tensor:
        owner = self.lock.owner
        if owner is not None and owner != threading.get_ident():
            raise ConcurrentUseError(
                f"the model ran in one thread while another thread holds its hooks (at {name!r}); "
                "a model is not thread-safe: use one model per thread, or guard calls with a lock"
            )
        if self._in_hook is not None:
            raise ConcurrentUseError(
                f"the hook function on {self._in_hook!r} ran the model again (a forward pass reached {name!r} "
                "while that hook function was still running); a forward pass inside a hook would run every "
                "attached hook on the wrong prompt and mix its state with the outer pass: compute what the hook "
                "needs before the run, or in a separate call after it"
            )
        point = HookPoint(name)
        for _, fn in list(self._fns.get(name, ())):
            self._in_hook = name
            try:
                result = fn(tensor, point)
            finally:
                self._in_hook = None
            if result is not None:
                tensor = check_replacement(name, result, tensor)
        return tensor

    def check(self, name: str) -> None:
        if name not in self._site_of and name not in self._extra:
            raise N.unknown_name_error(name, self.current_names)

    @property
    def current_names(self) -> list[str]:
        """Every name that can be hooked now: the model's, and after each base name the extra names it serves."""
        if not self._extra:
            return list(self.valid_names)
        out: list[str] = []
        for name in self.valid_names:
            out.append(name)
            out += [extra for extra, base in self._extra.items() if base == name]
        return out

    @contextmanager
    def extra_names(self, names: Iterable[tuple[str, str]]) -> Iterator[None]:
        """Make ``(name, base)`` pairs hookable while the block runs; a function on ``base`` serves them.

        A spliced SAE's stages (``"<hook>.hook_sae_acts_post"``...) are such names: the hook
        function the splice puts on ``<hook>`` calls :meth:`dispatch` for each, so hooks,
        captures and interventions reach features with the machinery every other name uses.
        Names already served are refused (two SAEs on one hook would be ambiguous).
        """
        pairs = list(names)
        for name, base in pairs:
            self.check(base)
            if name in self._site_of or name in self._extra:
                raise HookNameError(f"{name!r} is already a hook name (is an SAE spliced there already?)")
        for name, base in pairs:
            self._extra[name] = base
        try:
            yield
        finally:
            for name, _ in pairs:
                self._extra.pop(name, None)

    def hooked(self, name: str) -> bool:
        """Whether any hook function is registered on ``name`` now."""
        return name in self._fns

    def dispatch(self, name: str, tensor: Tensor) -> Tensor:
        """Run the hook functions registered on ``name`` (an extra name) on ``tensor``; returns the possibly replaced tensor.

        Called from inside a hook function (a splice serving its stages), which is the one nesting of
        hook functions that is not a second forward pass: a forward pass never reaches an extra name
        by itself. A hook function on an extra name that runs the model is still refused, at the
        first model hook that pass reaches.
        """
        if name not in self._extra:
            raise HookNameError(f"dispatch serves the extra names of a splice; {name!r} is not one")
        running = self._in_hook
        self._in_hook = None
        try:
            return self._dispatch(name, tensor)
        finally:
            self._in_hook = running

    def add(self, name: str, fn: HookFn) -> tuple[str, int]:
        """Register ``fn`` on ``name``; returns a key for :meth:`remove`."""
        self.check(name)
        check_hook_function(name, fn)
        site = self._site_of.get(name)  # None for an extra name: the function on its base name dispatches it
        if site is not None and site not in self._handles:
            self._handles[site] = site.install(self._dispatch)
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
        site = self._site_of.get(name)
        if site is not None and not any(n in self._fns for n in site.names):
            for handle in self._handles.pop(site, ()):
                handle.remove()

    @contextmanager
    def using(self, pairs: Iterable[tuple[str, HookFn]]) -> Iterator[None]:
        """Register every pair on entry and remove them on exit, exceptions included.

        All names are checked before anything is registered, so an unknown name leaks nothing.
        The model is held for this thread until exit (which may happen in another thread).
        """
        pairs = hook_pairs(pairs)
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
        return [n for n in self.current_names if n in self._fns]


def count_torch_hooks(model: torch.nn.Module) -> int:
    """PyTorch hooks attached anywhere in ``model`` (for tests and sanity checks)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
