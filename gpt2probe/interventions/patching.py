"""Activation patching: which activations carry the difference between two prompts.

Run a *clean* prompt and a *corrupted* one that differs in a few tokens (the same
number of tokens, so positions match one to one). Then rerun one of them with a single
activation taken from the other, and measure how far a metric moves:

``direction="denoise"`` (default)
    run the corrupted prompt and patch in one clean activation: a value near 1 means
    that activation alone is *sufficient* to restore the clean behaviour.
``direction="noise"``
    run the clean prompt and patch in one corrupted activation: a value near 0 means
    that activation is *necessary* for the clean behaviour.

Values are normalised so that the clean run gives 1 and the corrupted run gives 0, in
both directions (``normalize=False`` keeps the metric's own units).

What one patch replaces (``kind``):

================  ==============================  ======================================
kind              hook                            one patch
================  ==============================  ======================================
``resid_pre``     ``blocks.{l}.hook_resid_pre``   one position (``per_position=False``: all)
``resid_mid``     ``blocks.{l}.hook_resid_mid``   likewise
``resid_post``    ``blocks.{l}.hook_resid_post``  likewise
``attn_out``      ``blocks.{l}.hook_attn_out``    likewise
``mlp_out``       ``blocks.{l}.hook_mlp_out``     likewise
``head``          ``blocks.{l}.attn.hook_z``      one head, every position
``head_q/k/v``    ``blocks.{l}.attn.hook_q/k/v``  one head's queries/keys/values, every position
``head_pattern``  ``blocks.{l}.attn.hook_pattern``  one head's attention pattern
================  ==============================  ======================================

The source prompt runs once (capturing only the hooks patched), the base prompt once,
then every patch; patched runs are stacked ``batch_size`` at a time into one forward pass.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import names as N
from .. import validate
from ..errors import InvalidArgumentError, InvalidTypeError, PromptError, ShapeError
from ..model.hooks import HookFn, HookPoint
from ..probe import GPT2Probe, require_probe
from ..tokens import Inputs, Tokens, per_prompt

Metric = Callable[[Tensor], "Tensor | float"]
Token = str | int


@dataclass(frozen=True)
class KindSpec:
    """How one ``kind`` names its hook and what a single patch covers."""

    hook: Callable[[int], str]
    axis: Literal["pos", "head"]
    head_axis: int = 2  # the head axis of the activation, counting batch as 0


KINDS: dict[str, KindSpec] = {
    "resid_pre": KindSpec(N.resid_pre, "pos"),
    "resid_mid": KindSpec(N.resid_mid, "pos"),
    "resid_post": KindSpec(N.resid_post, "pos"),
    "attn_out": KindSpec(N.attn_out, "pos"),
    "mlp_out": KindSpec(N.mlp_out, "pos"),
    "head": KindSpec(N.z, "head"),
    "head_q": KindSpec(N.q, "head"),
    "head_k": KindSpec(N.k, "head"),
    "head_v": KindSpec(N.v, "head"),
    "head_pattern": KindSpec(N.pattern, "head", head_axis=1),
}


@dataclass(frozen=True, repr=False)
class PatchingResult:
    """The metric after each patch, laid out on named axes.

    ``values`` has one axis per entry of ``axis_names`` (``("layer", "pos")``,
    ``("layer",)`` or ``("layer", "head")``) with the labels in ``axis_labels``.
    Position labels are the clean prompt's tokens (``"clean/corrupted"`` where they
    differ; for a batch, the first prompt's) and may repeat. ``clean_metric`` and
    ``corrupted_metric`` are the unpatched runs, in the metric's own units.
    """

    kind: str
    direction: str
    values: Float[Tensor, "..."]
    axis_names: tuple[str, ...]
    axis_labels: tuple[tuple[str, ...], ...]
    clean_metric: float
    corrupted_metric: float
    normalized: bool

    def __post_init__(self) -> None:
        shape = tuple(len(labels) for labels in self.axis_labels)
        if len(self.axis_names) != len(self.axis_labels) or tuple(self.values.shape) != shape:
            raise ShapeError(
                f"values has shape {tuple(self.values.shape)} but the axes {self.axis_names} have {shape} labels"
            )

    def largest(self, n: int = 5) -> list[tuple[tuple[str, ...], float]]:
        """The ``n`` cells with the largest values (axis labels, value), largest first."""
        validate.integer("n", n, minimum=0)
        flat = self.values.flatten()
        out = []
        for i in flat.argsort(descending=True)[:n].tolist():
            cell, rest = [], i
            for labels in reversed(self.axis_labels):
                cell.append(labels[rest % len(labels)])
                rest //= len(labels)
            out.append((tuple(reversed(cell)), float(flat[i])))
        return out

    def __repr__(self) -> str:
        shape = ", ".join(f"{name}={len(labels)}" for name, labels in zip(self.axis_names, self.axis_labels))
        top = ", ".join(f"{'/'.join(cell)} {value:.3g}" for cell, value in self.largest(2))
        return (f"PatchingResult({self.kind!r}, {self.direction}, [{shape}], clean {self.clean_metric:.4g}, "
                f"corrupted {self.corrupted_metric:.4g}, {'normalized' if self.normalized else 'raw'}; largest {top})")

    def _repr_html_(self) -> str:
        """The cells with the largest values, in normalised and raw units, and the two unpatched runs."""
        from ..display.tables import Tok, table

        raw = self.raw().flatten()
        order = self.values.flatten().argsort(descending=True)[:10].tolist()
        rows = [[*(Tok(c) if name == "pos" else c for name, c in zip(self.axis_names, cell)), value, float(raw[i])]
                for (cell, value), i in zip(self.largest(10), order)]
        shape = " x ".join(f"{len(labels)} {name}" for name, labels in zip(self.axis_names, self.axis_labels))
        return table(
            f"Activation patching of {self.kind} ({self.direction}): the 10 largest of {shape}",
            [*self.axis_names, "normalised" if self.normalized else "value", "raw metric"], rows,
            notes=[f"clean {self.clean_metric:.4g}, corrupted {self.corrupted_metric:.4g} (the metric's own units)"],
        )

    def raw(self) -> Float[Tensor, "..."]:
        """``values`` in the metric's own units (undoing the normalisation, if any)."""
        if not self.normalized:
            return self.values
        return self.corrupted_metric + self.values * (self.clean_metric - self.corrupted_metric)


def logit_diff_metric(answer: Int[Tensor, " batch"], wrong: Int[Tensor, " batch"]) -> Metric:
    """``logit[answer] - logit[wrong]`` at the last position, averaged over the batch.

    Under left padding the last position is every prompt's last real token.
    """
    for what, ids in (("answer", answer), ("wrong", wrong)):
        if not isinstance(ids, Tensor) or ids.is_floating_point() or ids.ndim != 1:
            got = f"a {ids.dtype} tensor of shape {tuple(ids.shape)}" if isinstance(ids, Tensor) else type(ids).__name__
            raise InvalidTypeError(f"{what} must be a 1-d integer tensor of token ids, one per prompt; got {got}")

    def metric(logits: Float[Tensor, "batch pos d_vocab"]) -> Tensor:
        last = logits[:, -1].float()
        rows = torch.arange(last.shape[0], device=last.device)
        return (last[rows, answer.to(last.device)] - last[rows, wrong.to(last.device)]).mean()

    return metric


def token_ids(probe: GPT2Probe, tokens: Token | Sequence[Token], n_prompts: int, what: str) -> Tensor:
    """One token id per prompt from a token (string or id) or a list of them."""
    items = per_prompt(tokens, n_prompts, f"{what} tokens")
    return torch.tensor([probe.to_single_token(t) for t in items], dtype=torch.long)


def check_aligned(clean: Tokens, corrupted: Tokens) -> None:
    """Clean and corrupted prompts must match position by position (same lengths, same padding)."""
    if clean.ids.shape[0] != corrupted.ids.shape[0]:
        raise PromptError(f"{clean.ids.shape[0]} clean prompts but {corrupted.ids.shape[0]} corrupted ones: pair them one to one")
    if clean.ids.shape == corrupted.ids.shape and torch.equal(clean.attention_mask, corrupted.attention_mask):
        return
    if clean.ids.shape[0] == 1:
        raise PromptError(
            f"the clean prompt has {int(clean.lengths[0])} tokens but the corrupted prompt has "
            f"{int(corrupted.lengths[0])}: patching matches positions one to one, so both need the same number of tokens"
        )
    raise PromptError(
        f"clean prompts have {clean.lengths.tolist()} tokens but corrupted prompts have {corrupted.lengths.tolist()}: "
        "patching matches positions one to one, so each pair needs the same number of tokens"
    )


def patch_hook(source: Tensor, index: tuple = ()) -> HookFn:
    """A hook function that copies ``source[:, *index]`` into ``activation[:, *index]``.

    ``index`` selects after the batch axis: ``(3,)`` is position 3 of a residual stream,
    ``(slice(None), 0)`` head 0 of ``hook_z`` at every position, ``()`` everything.
    """

    def hook(activation: Tensor, point: HookPoint) -> Tensor:
        if source.shape != activation.shape:
            raise ShapeError(f"patching {point.name!r}: the source has shape {tuple(source.shape)}, the run {tuple(activation.shape)}")
        out = activation.clone()
        out[(slice(None), *index)] = source[(slice(None), *index)].to(out)
        return out

    return hook


@dataclass(frozen=True)
class _Unit:
    """One patched run: where its value goes, which hook, which entries after the batch axis."""

    cell: tuple[int, ...]
    name: str
    index: tuple


def _units(probe: GPT2Probe, spec: KindSpec, n_pos: int, per_position: bool) -> tuple[list[_Unit], tuple[int, ...]]:
    n_layers = probe.cfg.n_layers
    if spec.axis == "head":
        lead = (slice(None),) * (spec.head_axis - 1)
        units = [_Unit((l, h), spec.hook(l), (*lead, h)) for l in range(n_layers) for h in range(probe.cfg.n_heads)]
        return units, (n_layers, probe.cfg.n_heads)
    if per_position:
        return [_Unit((l, p), spec.hook(l), (p,)) for l in range(n_layers) for p in range(n_pos)], (n_layers, n_pos)
    return [_Unit((l,), spec.hook(l), ()) for l in range(n_layers)], (n_layers,)


def _stacked_hooks(units: Sequence[_Unit], source: dict[str, Tensor], n_batch: int) -> list[tuple[str, HookFn]]:
    """Hooks for ``len(units)`` copies of the base batch stacked along batch: copy ``k`` gets patch ``k``."""
    by_name: dict[str, list[tuple[int, tuple]]] = {}
    for k, unit in enumerate(units):
        by_name.setdefault(unit.name, []).append((k, unit.index))

    def make(items: list[tuple[int, tuple]]) -> HookFn:
        def hook(activation: Tensor, point: HookPoint) -> Tensor:
            src = source[point.name].to(activation)
            out = activation.clone()
            for k, index in items:
                out[(slice(k * n_batch, (k + 1) * n_batch), *index)] = src[(slice(None), *index)]
            return out

        return hook

    return [(name, make(items)) for name, items in by_name.items()]


def _scalar(value: Tensor | float, where: str = "") -> float:
    """The metric's value as a float: one finite number, or an error.

    A NaN would compare unequal to everything and fill a whole grid with NaN; an inf would
    normalise every cell to 0 or NaN.
    """
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ShapeError(f"the metric must return one number, got a tensor of shape {tuple(value.shape)}")
        number = float(value.detach().float().item())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    else:
        raise InvalidTypeError(f"the metric must return a number or a one-element tensor, got {type(value).__name__}")
    if not math.isfinite(number):
        raise InvalidArgumentError(
            f"the metric returned {number}{where}: a non-finite value cannot be compared or normalised "
            "(is it a log of 0 or a division by 0?)"
        )
    return number


def chosen_metric(probe: GPT2Probe, metric: Metric | None, answer: Token | Sequence[Token] | None,
                  wrong: Token | Sequence[Token] | None, n_batch: int) -> Metric:
    """``metric``, or the default ``logit[answer] - logit[wrong]`` (:func:`logit_diff_metric`) when it is ``None``.

    ``metric`` replaces the default metric built from ``answer`` and ``wrong``: giving both would ignore one.
    """
    if metric is None:
        if answer is None or wrong is None:
            raise InvalidArgumentError("the default metric needs answer=... and wrong=... (or pass metric=fn(logits) -> scalar)")
        return logit_diff_metric(token_ids(probe, answer, n_batch, "answer"), token_ids(probe, wrong, n_batch, "wrong"))
    if not callable(metric):
        raise InvalidTypeError(f"metric must be a function fn(logits) -> scalar, got {type(metric).__name__}")
    if answer is not None or wrong is not None:
        given = " and ".join(f"{n}=" for n, v in (("answer", answer), ("wrong", wrong)) if v is not None)
        raise InvalidArgumentError(
            f"metric= and {given} were both given, but answer and wrong only build the default metric "
            "(logit[answer] - logit[wrong]), which metric= replaces: give one or the other"
        )
    return metric


def _position_labels(probe: GPT2Probe, clean: Tokens, corrupted: Tokens) -> tuple[str, ...]:
    labels = []
    for a, b in zip(clean.ids[0].tolist(), corrupted.ids[0].tolist()):
        sa, sb = probe.to_string([a]), probe.to_string([b])
        labels.append(sa if a == b else f"{sa}/{sb}")
    return tuple(labels)


@torch.no_grad()
def patch(
    probe: GPT2Probe,
    clean: Inputs,
    corrupted: Inputs,
    *,
    kind: str = "resid_pre",
    metric: Metric | None = None,
    answer: Token | Sequence[Token] | None = None,
    wrong: Token | Sequence[Token] | None = None,
    direction: str = "denoise",
    per_position: bool = True,
    normalize: bool = True,
    batch_size: int = 16,
    prepend_bos: bool = False,
) -> PatchingResult:
    """Patch each layer's (and position's, or head's) activation between two prompts and measure ``metric``.

    Args:
        clean, corrupted: prompts (or token ids) with the same number of tokens; lists
            pair prompt ``i`` with prompt ``i``.
        kind: what one patch replaces; see the table in the module docstring.
        metric: ``fn(logits) -> scalar``. Default: ``logit[answer] - logit[wrong]`` at the
            last position, averaged over prompts (:func:`logit_diff_metric`).
        answer, wrong: the tokens of the default metric (strings that are one token, or
            ids; one for all prompts or one per prompt). Unused when ``metric`` is given.
        direction: ``"denoise"`` patches clean activations into the corrupted run;
            ``"noise"`` patches corrupted activations into the clean run.
        per_position: for residual/attention/MLP kinds, patch one position at a time
            (``[layer, pos]``) or all positions at once (``[layer]``).
        normalize: report ``(m - corrupted) / (clean - corrupted)`` (clean = 1, corrupted = 0).
        batch_size: patched runs per forward pass (memory grows with it).
    """
    require_probe(probe)
    validate.choice("kind", kind, KINDS)
    if direction not in ("denoise", "noise"):
        raise InvalidArgumentError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    validate.integer("batch_size", batch_size, minimum=1)
    validate.boolean("per_position", per_position)
    validate.boolean("normalize", normalize)
    clean_t = probe.as_tokens(clean, prepend_bos=prepend_bos).to(probe.cfg.device)
    corrupted_t = probe.as_tokens(corrupted, prepend_bos=prepend_bos).to(probe.cfg.device)
    check_aligned(clean_t, corrupted_t)
    n_batch, n_pos = clean_t.ids.shape
    metric = chosen_metric(probe, metric, answer, wrong, n_batch)

    spec = KINDS[kind]
    units, shape = _units(probe, spec, n_pos, per_position)
    base, source = (corrupted_t, clean_t) if direction == "denoise" else (clean_t, corrupted_t)
    source_logits, cache = probe.run_with_cache(source, names=sorted({u.name for u in units}))
    source_acts = dict(cache)
    source_metric = _scalar(metric(source_logits), f" on the {'clean' if direction == 'denoise' else 'corrupted'} run")
    base_metric = _scalar(metric(probe(base)), f" on the {'corrupted' if direction == 'denoise' else 'clean'} run")
    clean_metric, corrupted_metric = (source_metric, base_metric) if direction == "denoise" else (base_metric, source_metric)
    if normalize and clean_metric == corrupted_metric:
        raise InvalidArgumentError(
            f"the clean and corrupted runs give the same metric value ({clean_metric}), so it cannot be "
            "normalised; choose prompts that differ on the metric or pass normalize=False"
        )

    values = torch.empty(shape)
    for start in range(0, len(units), batch_size):
        chunk = units[start : start + batch_size]
        stacked = Tokens(base.ids.repeat(len(chunk), 1), base.attention_mask.repeat(len(chunk), 1))
        logits = probe.run_with_hooks(stacked, _stacked_hooks(chunk, source_acts, n_batch))
        for k, unit in enumerate(chunk):
            values[unit.cell] = _scalar(metric(logits[k * n_batch : (k + 1) * n_batch]),
                                        f" with {unit.name} patched at {unit.index}")
    if normalize:
        values = (values - corrupted_metric) / (clean_metric - corrupted_metric)

    layers = tuple(f"L{l}" for l in range(probe.cfg.n_layers))
    if spec.axis == "head":
        axes, labels = ("layer", "head"), (layers, tuple(f"H{h}" for h in range(probe.cfg.n_heads)))
    elif per_position:
        axes, labels = ("layer", "pos"), (layers, _position_labels(probe, clean_t, corrupted_t))
    else:
        axes, labels = ("layer",), (layers,)
    return PatchingResult(kind=kind, direction=direction, values=values, axis_names=axes, axis_labels=labels,
                          clean_metric=clean_metric, corrupted_metric=corrupted_metric, normalized=normalize)
