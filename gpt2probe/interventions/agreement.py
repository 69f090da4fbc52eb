"""How well an estimate (attribution patching) agrees with exact patching on the same cells.

Both results must lie on the same axes (:func:`attribution_patch` returns :func:`patch`'s
axes for the same arguments). A cell's *effect* is its value minus the unpatched run's
(the corrupted run for ``denoise``, the clean run for ``noise``), in the metric's units;
cells are ranked by ``|effect|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..display.escape import token_text
from ..errors import InvalidArgumentError, InvalidTypeError
from .patching import PatchingResult


@dataclass(frozen=True)
class Agreement:
    """Correlations, the overlap of the top ``k`` cells, and the cells that disagree most.

    ``worst`` holds ``(cell label, exact effect, estimated effect)``, largest ``|difference|``
    first, effects in the metric's own units.
    """

    pearson: float
    spearman: float
    k: int
    top_k_overlap: float
    worst: tuple[tuple[str, float, float], ...]
    labels: tuple[str, ...]
    exact: Tensor
    estimate: Tensor


def cell_labels(result: PatchingResult) -> list[str]:
    """One label per cell, in ``values.flatten()`` order: ``"L3 pos 5 ␣John"``, ``"L1H0"``, ``"L2"``.

    Tokens are written as every report writes them (:func:`~gpt2probe.display.escape.token_text`:
    ``␣`` for a space, ``↵`` for a newline), since the labels end up in the report's figures.
    """
    layers = result.axis_labels[0]
    if result.axis_names == ("layer", "head"):
        return [f"{l}{h}" for l in layers for h in result.axis_labels[1]]
    if result.axis_names == ("layer", "pos"):
        return [f"{l} pos {p} {token_text(t)}" for l in layers for p, t in enumerate(result.axis_labels[1])]
    return list(layers)


def effects(result: PatchingResult) -> Tensor:
    """Each cell's value minus the unpatched run's, in the metric's units, flattened."""
    base = result.corrupted_metric if result.direction == "denoise" else result.clean_metric
    return (result.raw().double() - base).flatten()


def _ranks(x: Tensor) -> Tensor:
    """Ranks 0..n-1 with ties given their average rank (as Spearman's rho needs)."""
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=x.dtype)
    for value in torch.unique(x):
        tied = x == value
        if int(tied.sum()) > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float("nan") if denominator == 0 else float((a * b).sum()) / denominator


def compare(exact: PatchingResult, estimate: PatchingResult, *, k: int = 10, worst: int = 10) -> Agreement:
    """Pearson and Spearman correlation of the cells, overlap of the top ``k`` by ``|effect|``, worst cells."""
    for what, result in (("exact", exact), ("estimate", estimate)):
        if not hasattr(result, "values") or not hasattr(result, "axis_labels"):
            raise InvalidTypeError(f"{what} must be a PatchingResult or AttributionResult, got {type(result).__name__}")
    if (exact.kind, exact.direction, exact.axis_names, exact.axis_labels) != (
            estimate.kind, estimate.direction, estimate.axis_names, estimate.axis_labels):
        raise InvalidArgumentError(
            f"the results are not on the same cells: {exact.kind}/{exact.direction} {exact.axis_names} vs "
            f"{estimate.kind}/{estimate.direction} {estimate.axis_names}; run both with the same arguments")
    for name, value in (("k", k), ("worst", worst)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    a, b = effects(exact), effects(estimate)
    labels = cell_labels(exact)
    k = min(k, len(a))
    top_a = set(torch.argsort(a.abs(), descending=True, stable=True)[:k].tolist())
    top_b = set(torch.argsort(b.abs(), descending=True, stable=True)[:k].tolist())
    differences = torch.argsort((a - b).abs(), descending=True, stable=True)[:worst].tolist()
    return Agreement(
        pearson=_pearson(a, b), spearman=_pearson(_ranks(a), _ranks(b)), k=k,
        top_k_overlap=len(top_a & top_b) / k,
        worst=tuple((labels[i], float(a[i]), float(b[i])) for i in differences),
        labels=tuple(labels), exact=a.float(), estimate=b.float())
