"""How many important cells could an estimate's ranking have pruned? A subsampling bound.

Attribution patching is a pre-filter (Kramár et al. 2024): rank every cell by its estimated
effect, keep the top ``keep`` and verify those with exact patching. The cells below the cut
are never patched, so a cell whose effect the estimate missed (a false negative) would go
unseen. The AtP* paper pairs its estimator with a diagnostic that patches a random subsample
of the pruned cells exactly and turns what it finds into a bound; this module computes one
such bound, distribution-free:

1. draw ``samples`` of the ``N`` pruned cells uniformly without replacement (seeded);
2. patch each exactly and take its effect ``|patched - base|`` in the result's units;
3. let ``M`` be the largest effect found. The number ``K`` of pruned cells whose effect
   exceeds ``M`` is the number ranked above the best sampled cell, so
   ``P(K >= k) = C(N - k, m) / C(N, m)`` (no sampled cell among the top ``k``) whatever
   the effects are. With ``confidence`` ``1 - delta``, ``K <= max_above``, the largest ``k``
   with ``P(K >= k) > delta`` (0 when every pruned cell was patched).

So: with probability at least ``confidence`` over the draw, at most ``max_above`` pruned
cells have an exact effect larger than ``max_effect``. Patching every cell would be the
exhaustive sweep this avoids; ``samples`` trades runs for a tighter ``max_above``
(about ``N ln(1/delta) / m``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .. import validate
from ..errors import InvalidArgumentError
from ..probe import GPT2Probe
from ..tokens import Tokens
from .patching import KINDS, Metric, _scalar, _stacked_hooks, _units


@dataclass(frozen=True)
class PruningCheck:
    """Settings of the false-negative bound: keep the top ``keep`` cells, patch ``samples`` of the rest."""

    keep: int
    samples: int
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        validate.integer("keep", self.keep, minimum=0)
        validate.integer("samples", self.samples, minimum=1)
        validate.integer("seed", self.seed, minimum=0)
        if isinstance(self.confidence, bool) or not isinstance(self.confidence, (int, float)) \
                or not 0 < self.confidence < 1:
            raise InvalidArgumentError(f"confidence must be a number in (0, 1), got {self.confidence!r}")


@dataclass(frozen=True)
class FalseNegativeBound:
    """What exact patching of a random subsample of the pruned cells says about the rest."""

    kept: tuple[tuple[int, ...], ...]
    """The top cells by the estimate's magnitude (indices into ``values``), to be verified exactly."""
    pruned: int
    """How many cells fell below the cut."""
    sampled: tuple[tuple[int, ...], ...]
    """The pruned cells patched exactly."""
    exact: Float[Tensor, " sample"]
    """Their exactly patched values, in the result's units (normalised if it is)."""
    effects: Float[Tensor, " sample"]
    """``|exact - base run's value|``: each sampled cell's effect size."""
    max_effect: float
    confidence: float
    max_above: int
    """With probability >= ``confidence``, at most this many pruned cells have an effect above ``max_effect``."""

    def __repr__(self) -> str:
        return (f"FalseNegativeBound(kept {len(self.kept)}, pruned {self.pruned}, sampled {len(self.sampled)}: "
                f"with {self.confidence:.0%} confidence at most {self.max_above} pruned cell(s) exceed "
                f"effect {self.max_effect:.3g})")


def max_above(n_pruned: int, n_sampled: int, confidence: float) -> int:
    """The largest ``k`` with ``C(N - k, m) / C(N, m) > 1 - confidence`` (0 if every cell was sampled)."""
    delta = 1.0 - confidence
    if n_sampled >= n_pruned:
        return 0
    k = 0
    # P(K >= k+1) = C(N-k-1, m) / C(N, m); stop at the first k+1 where it is <= delta
    while k + 1 <= n_pruned - n_sampled and math.comb(n_pruned - k - 1, n_sampled) / math.comb(n_pruned, n_sampled) > delta:
        k += 1
    return k


@torch.no_grad()
def bound_false_negatives(
    probe: GPT2Probe,
    magnitude: Float[Tensor, "..."],
    check: PruningCheck,
    *,
    kind: str,
    per_position: bool,
    base: Tokens,
    source: Tokens,
    metric: Metric,
    to_units,
    base_value: float,
    batch_size: int,
) -> FalseNegativeBound:
    """Keep the top ``check.keep`` cells of ``magnitude``, patch ``check.samples`` of the others exactly.

    ``to_units`` maps a raw metric value to the result's units; ``base_value`` is the base
    run in those units (0 for a normalised denoising result).
    """
    n_cells = magnitude.numel()
    if check.keep >= n_cells:
        raise InvalidArgumentError(f"PruningCheck keeps {check.keep} of {n_cells} cells: nothing is pruned to bound")
    order = _ranking(magnitude)
    kept, pruned = order[: check.keep], order[check.keep :]
    generator = torch.Generator().manual_seed(check.seed)
    picks = torch.randperm(len(pruned), generator=generator)[: check.samples].tolist()
    sampled = [pruned[i] for i in sorted(picks)]
    exact = _patch_cells(probe, kind, per_position, base, source, metric, sampled, batch_size)
    values = torch.tensor([to_units(v) for v in exact], dtype=torch.float64)
    effects = (values - base_value).abs()
    return FalseNegativeBound(
        kept=tuple(kept), pruned=len(pruned), sampled=tuple(sampled), exact=values, effects=effects,
        max_effect=float(effects.max()), confidence=float(check.confidence),
        max_above=max_above(len(pruned), len(sampled), check.confidence))


def _ranking(magnitude: Tensor) -> list[tuple[int, ...]]:
    """Cells by decreasing magnitude, ties by position (NaN refused)."""
    if not torch.isfinite(magnitude).all():
        raise InvalidArgumentError("cannot rank cells whose magnitude is not finite")
    flat = magnitude.flatten().double()
    order = sorted(range(flat.numel()), key=lambda i: (-float(flat[i]), i))
    return [tuple(int(x) for x in torch.unravel_index(torch.tensor(i), magnitude.shape)) for i in order]


def _patch_cells(probe: GPT2Probe, kind: str, per_position: bool, base: Tokens, source: Tokens, metric: Metric,
                 cells: Sequence[tuple[int, ...]], batch_size: int) -> list[float]:
    """The raw metric of the base run with each of ``cells`` patched from the source run, one cell per run."""
    spec = KINDS[kind]
    units, _ = _units(probe, spec, base.ids.shape[1], per_position)
    by_cell = {unit.cell: unit for unit in units}
    chosen = [by_cell[cell] for cell in cells]
    _, cache = probe.run_with_cache(source, names=sorted({u.name for u in chosen}))
    source_acts, n_batch, out = dict(cache), base.ids.shape[0], []
    for start in range(0, len(chosen), batch_size):
        chunk = chosen[start : start + batch_size]
        stacked = Tokens(base.ids.repeat(len(chunk), 1), base.attention_mask.repeat(len(chunk), 1))
        logits = probe.run_with_hooks(stacked, _stacked_hooks(chunk, source_acts, n_batch))
        out += [_scalar(metric(logits[k * n_batch : (k + 1) * n_batch])) for k in range(len(chunk))]
    return out
