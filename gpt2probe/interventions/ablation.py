"""Knock out attention heads, MLP layers or single neurons, and see what the model loses.

Three ways to remove a component's contribution:

``"zero"``
    replace its activation with 0.
``"mean"``
    replace it with its mean over a reference batch: one vector per component, averaged
    over every prompt and every *real* (non-pad) position, so the replacement is the same
    at every position. This removes what the component says about *this* input while
    keeping its typical offset, which zero ablation also removes.
``"resample"``
    replace it with its activation on another reference example (row ``b`` of the run
    takes reference row ``s_b != b``, drawn at random once per forward pass and shared by
    every ablated component). Positions are aligned index by index, so the reference
    must have as many positions as the run.

Where the ablation acts (TransformerLens names, see :mod:`gpt2probe.names`):

=========  ==========================  ==============================
component  hook                        activation
=========  ==========================  ==============================
head       ``blocks.{l}.attn.hook_z``  ``[batch, pos, head, d_head]``
MLP layer  ``blocks.{l}.hook_mlp_out``  ``[batch, pos, d_model]``
neuron     ``blocks.{l}.mlp.hook_post``  ``[batch, pos, d_mlp]``
=========  ==========================  ==============================

A head's ``z`` is its attention-weighted values before ``W_O``; zeroing it removes the
head's output except the layer's shared bias ``b_O``, which belongs to no head.

>>> with ablate(probe, heads=[(1, 0)]):
...     logits = probe(tokens)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import names as N
from .. import validate
from ..errors import InvalidArgumentError, InvalidTypeError, LayerIndexError, ShapeError
from ..model.hooks import HookFn, HookPoint
from ..probe import GPT2Probe, require_probe
from ..tokens import Inputs, Tokens

MODES = ("zero", "mean", "resample")

Index = Sequence[int] | None
"""Entries of the activation's third axis (``head`` of ``hook_z``, ``d_mlp`` of ``hook_post``); ``None``: all of it."""


def _select(index: Index) -> slice | list[int]:
    return slice(None) if index is None else validate.index_list("index", index)


def _check_in_range(chosen: slice | list[int], activation: Tensor, point: HookPoint) -> None:
    """Our error for an index outside the activation's third axis (an SAE's features, heads, neurons), not torch's."""
    if isinstance(chosen, slice):
        return
    size = activation.shape[2] if activation.ndim > 2 else 0
    bad = [i for i in chosen if not -size <= i < size]
    if bad:
        raise InvalidArgumentError(f"index {bad[0]} is outside {point.name!r}'s third axis of {size} entries "
                                   f"(valid: 0..{size - 1}, or -1..-{size})")


def zero_ablation_hook(index: Index = None) -> HookFn:
    """A hook function that sets ``activation[:, :, index]`` to 0 (``index=None``: everything)."""
    chosen = _select(index)

    def hook(activation: Tensor, point: HookPoint) -> Tensor:
        _check_in_range(chosen, activation, point)
        out = activation.clone()
        out[:, :, chosen] = 0.0
        return out

    return hook


def mean_ablation_hook(mean: Float[Tensor, "..."], index: Index = None) -> HookFn:
    """A hook function that sets ``activation[:, :, index]`` to ``mean[index]`` at every batch row and position.

    ``mean`` has the activation's shape without its ``batch`` and ``pos`` axes (e.g.
    ``[head, d_head]`` for ``hook_z``), as :func:`reference_means` returns it.
    """
    chosen = _select(index)

    def hook(activation: Tensor, point: HookPoint) -> Tensor:
        if mean.shape != activation.shape[2:]:
            raise ShapeError(
                f"the mean for {point.name!r} has shape {tuple(mean.shape)} but the activation without "
                f"batch and pos has shape {tuple(activation.shape[2:])}"
            )
        _check_in_range(chosen, activation, point)
        out = activation.clone()
        out[:, :, chosen] = mean.to(out)[chosen]
        return out

    return hook


def draw_sources(n_batch: int, n_reference: int, generator: torch.Generator) -> Int[Tensor, " batch"]:
    """For each run row ``b``, a random reference row other than ``b`` (any row when there is only one).

    Row ``b`` takes ``(b + offset) % n_reference`` with ``offset`` uniform in
    ``1..n_reference-1``, so when the reference batch is the batch being run no example
    is patched with itself.
    """
    if n_reference < 1:
        raise InvalidArgumentError("resample ablation needs at least one reference example")
    if n_reference == 1:
        return torch.zeros(n_batch, dtype=torch.long)
    offsets = torch.randint(1, n_reference, (n_batch,), generator=generator)
    return (torch.arange(n_batch) + offsets) % n_reference


def resample_ablation_hook(
    reference: Float[Tensor, "n_reference pos ..."],
    sources: Int[Tensor, " batch"] | Callable[[int], Tensor],
    index: Index = None,
) -> HookFn:
    """A hook function that sets ``activation[b, :, index]`` to ``reference[sources[b], :, index]``.

    ``sources`` gives the reference row of each run row, or is a function of the batch
    size returning them (what :func:`ablate` uses to draw new rows per forward pass).
    """
    chosen = _select(index)

    def hook(activation: Tensor, point: HookPoint) -> Tensor:
        if reference.shape[1:] != activation.shape[1:]:
            raise ShapeError(
                f"resample ablation of {point.name!r}: the reference activations have shape "
                f"{tuple(reference.shape[1:])} after the batch axis but the run's have {tuple(activation.shape[1:])}; "
                "positions are matched index by index, so the reference must have as many positions as the run"
            )
        rows = sources(activation.shape[0]) if callable(sources) else sources
        if rows.shape != (activation.shape[0],):
            raise ShapeError(f"{tuple(rows.shape)} source rows for a batch of {activation.shape[0]}")
        _check_in_range(chosen, activation, point)
        out = activation.clone()
        out[:, :, chosen] = reference[rows.to(reference.device)].to(out)[:, :, chosen]
        return out

    return hook


class _SourceDraw:
    """Source rows for resample ablation, drawn anew at the start of each forward pass (on ``hook_embed``)."""

    def __init__(self, n_reference: int, seed: int | None) -> None:
        self.n_reference = n_reference
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self._current: Tensor | None = None

    def new_pass(self, activation: Tensor, point: HookPoint) -> None:
        self._current = draw_sources(activation.shape[0], self.n_reference, self.generator)

    def sources(self, n_batch: int) -> Tensor:
        if self._current is None or len(self._current) != n_batch:
            self._current = draw_sources(n_batch, self.n_reference, self.generator)
        return self._current


def _ran_tokens(tokens: Tokens | None) -> Tokens:
    """The tokens of a reference run (``run_with_cache`` always records them; a cache without them is refused)."""
    if tokens is None:
        raise InvalidArgumentError("the reference run's cache holds no tokens, so its pads cannot be told apart")
    return tokens


def reference_means(
    probe: GPT2Probe, reference: Inputs, hook_names: Sequence[str]
) -> dict[str, Tensor]:
    """Each hook's activation averaged over the reference's prompts and real (non-pad) positions."""
    _, cache = probe.run_with_cache(reference, names=list(hook_names))
    mask = _ran_tokens(cache.tokens).attention_mask
    means = {}
    for name in hook_names:
        act = cache[name]
        weights = mask.to(act.device, act.dtype).reshape(*mask.shape, *([1] * (act.ndim - 2)))
        means[name] = (act * weights).sum((0, 1)) / weights.sum()
    return means


def _check_layer(probe: GPT2Probe, layer: int, what: str) -> None:
    validate.layer_in(layer, probe.cfg.n_layers, what=f"{what}: layer")


def _pair_list(what: str, value: object, pair: str) -> list[tuple[int, int]]:
    """A list of ``(layer, index)`` pairs; ``heads=[0]`` or ``heads=(0, 0)`` (one pair, not in a list) is refused."""
    example = f"[{pair}, ...], e.g. [(0, 1)]"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidTypeError(f"{what} must be a list of {pair} pairs {example}; got {type(value).__name__} {value!r}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) != 2:
            raise InvalidTypeError(f"{what}[{i}] is {item!r}, not a {pair} pair: {what} is a list {example}")
        out.append((item[0], item[1]))
    return out


def _targets(
    probe: GPT2Probe, heads: Sequence[tuple[int, int]], mlps: Sequence[int], neurons: Sequence[tuple[int, int]]
) -> dict[str, Index]:
    """Hook name -> entries of its third axis to ablate (``None``: the whole activation)."""
    cfg = probe.cfg
    heads, neurons = _pair_list("heads", heads, "(layer, head)"), _pair_list("neurons", neurons, "(layer, neuron)")
    if isinstance(mlps, str | bytes) or not isinstance(mlps, Sequence | Tensor):
        raise InvalidTypeError(f"mlps must be a list of layer indices, e.g. [0, 2]; got {type(mlps).__name__} {mlps!r}")
    per_head: dict[str, list[int]] = {}
    for layer, head in heads:
        _check_layer(probe, layer, f"head ({layer}, {head})")
        if not 0 <= validate.integer(f"head ({layer}, {head!r}): the head", head) < cfg.n_heads:
            raise LayerIndexError(f"head ({layer}, {head}): this model has heads 0..{cfg.n_heads - 1}")
        per_head.setdefault(N.z(layer), []).append(head)
    whole: dict[str, None] = {}
    for layer in mlps:
        _check_layer(probe, layer, f"MLP {layer}")
        whole[N.mlp_out(layer)] = None
    per_neuron: dict[str, list[int]] = {}
    for layer, neuron in neurons:
        _check_layer(probe, layer, f"neuron ({layer}, {neuron})")
        if not 0 <= validate.integer(f"neuron ({layer}, {neuron!r}): the neuron", neuron) < cfg.d_mlp:
            raise LayerIndexError(f"neuron ({layer}, {neuron}): this model has neurons 0..{cfg.d_mlp - 1}")
        per_neuron.setdefault(N.mlp_post(layer), []).append(neuron)
    # heads (hook_z), whole MLPs (hook_mlp_out), neurons (hook_post): three kinds of name, in this order
    return {**{name: sorted(set(index)) for name, index in per_head.items()}, **whole,
            **{name: sorted(set(index)) for name, index in per_neuron.items()}}


def ablation_hooks(
    probe: GPT2Probe,
    *,
    heads: Sequence[tuple[int, int]] = (),
    mlps: Sequence[int] = (),
    neurons: Sequence[tuple[int, int]] = (),
    mode: str = "zero",
    reference: Inputs | None = None,
    seed: int | None = None,
) -> list[tuple[str, HookFn]]:
    """The ``(name, fn)`` pairs that :func:`ablate` attaches, for ``probe.run_with_hooks``.

    Mean and resample ablation run the model once on ``reference`` here, without any
    ablation, and keep only the activations they need.
    """
    require_probe(probe)
    validate.choice("mode", mode, MODES)
    targets = _targets(probe, heads, mlps, neurons)
    if not targets:
        return []
    if mode == "zero":
        return [(name, zero_ablation_hook(index)) for name, index in targets.items()]
    if reference is None:
        raise InvalidArgumentError(f"mode={mode!r} needs reference=... (prompts or token ids to take activations from)")
    if mode == "mean":
        means = reference_means(probe, reference, list(targets))
        return [(name, mean_ablation_hook(means[name], index)) for name, index in targets.items()]
    _, cache = probe.run_with_cache(reference, names=list(targets))
    draw = _SourceDraw(_ran_tokens(cache.tokens).ids.shape[0], seed)
    pairs: list[tuple[str, HookFn]] = [(N.EMBED, draw.new_pass)]
    return pairs + [(name, resample_ablation_hook(cache[name], draw.sources, index)) for name, index in targets.items()]


@contextmanager
def ablate(
    probe: GPT2Probe,
    *,
    heads: Sequence[tuple[int, int]] = (),
    mlps: Sequence[int] = (),
    neurons: Sequence[tuple[int, int]] = (),
    mode: str = "zero",
    reference: Inputs | None = None,
    seed: int | None = None,
) -> Iterator[GPT2Probe]:
    """Ablate components for the duration of a ``with`` block; every forward pass inside sees it.

    Args:
        heads: ``(layer, head)`` pairs, ablated through ``attn.hook_z``.
        mlps: layers whose whole MLP output (``hook_mlp_out``) is ablated.
        neurons: ``(layer, index)`` pairs of MLP neurons (``mlp.hook_post``).
        mode: ``"zero"``, ``"mean"`` or ``"resample"`` (see the module docstring).
        reference: prompts or token ids for ``"mean"`` and ``"resample"`` (unused by ``"zero"``).
        seed: seeds the resample draws; ``None`` draws from fresh entropy.

    The hooks are removed on exit, exceptions included.
    """
    with probe.hooks(ablation_hooks(probe, heads=heads, mlps=mlps, neurons=neurons, mode=mode,
                                    reference=reference, seed=seed)):
        yield probe
