"""One batch's summaries of sparse units (SAE and transcoder features), read from their non-zero entries only.

A feature is exactly 0 on almost every token (top-k keeps ``k`` of ``d_sae`` per token; ReLU
and JumpReLU zero most), so the dense passes over a ``[token, unit]`` batch (minimum,
maximum, moments, count above the threshold, histogram: several passes over ``d_sae``
values per token) mostly summarise zeros. Here each statistic is computed from the listed
entries (every non-zero value, and possibly some zeros) and the unlisted zeros are added
in closed form: ``n - listed`` zeros per unit. The results are the dense ones: counts, the
histogram, the minimum and the maximum exactly; the mean and M2 to float64 rounding of an
exact two-pass sum (the dense path's float32 sums of deviations are the less exact of the two).

Axes: ``entry`` (one listed ``(token, unit)`` value), ``token`` (a real position of the
batch), ``unit`` (a feature), ``bin`` (histogram bins, as in :mod:`.summaries`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor


class Entries(NamedTuple):
    """A batch's listed values: every non-zero one, perhaps some zeros, each ``(token, unit)`` at most once."""

    token: Int[Tensor, " entry"]  # row of the [token, unit] batch
    unit: Int[Tensor, " entry"]
    values: Float[Tensor, " entry"]


class BatchStats(NamedTuple):
    """One batch's statistics per unit, as :class:`~.summaries.UnitSummary` folds them in."""

    mean: Tensor  # [unit] float64
    m2: Tensor  # [unit] float64
    min: Tensor  # [unit]
    max: Tensor  # [unit]
    active: Tensor  # [unit] int64
    hist: Tensor  # [unit, bin] int64


def entries(flat: Float[Tensor, "token unit"], rows: Int[Tensor, " token"] | None,
            support: Int[Tensor, "batch pos slot"] | None) -> Entries:
    """The listed values of ``flat`` (the real rows of a batch, :func:`~.summaries.valid_rows`).

    With ``support`` (each position's units outside which the value is exactly 0, as a
    top-k coder gives them) the entries are those ``slot`` values per token, in token order;
    without it, the non-zero values, found by one search of ``flat``. ``rows`` (or ``None``
    for a prefix) maps a row of ``flat`` to its ``b * pos + p`` position in the batch.
    """
    n, n_units = flat.shape
    if support is None:
        token, unit = flat.nonzero(as_tuple=True)
        return Entries(token, unit, flat[token, unit])
    by_position = support.reshape(-1, support.shape[-1])
    kept = by_position[:n] if rows is None else by_position.index_select(0, rows.to(by_position.device))
    token = torch.arange(n, device=flat.device)[:, None].expand(kept.shape).reshape(-1)
    return Entries(token, kept.reshape(-1), flat.gather(1, kept).reshape(-1))


def batch_stats(e: Entries, n: int, n_units: int, *, threshold: float, scale: Float[Tensor, " unit"],
                shift: Float[Tensor, " unit"], n_cells: int) -> BatchStats:
    """Every statistic of ``n`` tokens of ``n_units`` units that are 0 except at the entries ``e``.

    Sums run over the entries in float64 (their few values convert cheaply): the mean first,
    then the squared deviations from it; each unlisted zero deviates by ``-mean``, so they add
    ``zeros * mean**2``. ``bincount`` adds its weights one after another in entry order (token
    order within a unit), so the same batch gives the same bits every time. Histogram bins
    use the dense path's float32 formula, ``floor(x * scale + shift)`` clamped; a zero's bin
    is ``floor(shift)`` clamped (``0 * scale + shift`` is ``shift`` exactly).
    """
    unit, values = e.unit, e.values
    zeros = n - torch.bincount(unit, minlength=n_units)  # unlisted values: all exactly 0
    some_zero = zeros > 0
    x = values.double()
    mean = torch.bincount(unit, weights=x, minlength=n_units) / n
    dev = x - mean.index_select(0, unit)
    m2 = torch.bincount(unit, weights=dev * dev, minlength=n_units) + zeros * mean * mean
    # Minimum and maximum: a unit with an unlisted zero starts from 0.
    lo = torch.full((n_units,), torch.inf, dtype=values.dtype).masked_fill_(some_zero, 0.0)
    hi = torch.full((n_units,), -torch.inf, dtype=values.dtype).masked_fill_(some_zero, 0.0)
    lo.scatter_reduce_(0, unit, values, "amin")
    hi.scatter_reduce_(0, unit, values, "amax")
    # Counts as float64 weights (exact below 2**53): far cheaper than selecting the entries above the threshold.
    active = torch.bincount(unit, weights=(values > threshold).to(x.dtype), minlength=n_units).to(torch.int64)
    if 0.0 > threshold:
        active += zeros
    bins = torch.addcmul(shift.index_select(0, unit), values, scale.index_select(0, unit))
    cells = bins.clamp_(0, n_cells - 1).to(torch.int64).add_(unit * n_cells)
    hist = torch.bincount(cells, minlength=n_units * n_cells).view(n_units, n_cells)
    zero_bin = shift.clamp(0, n_cells - 1).to(torch.int64)
    hist.index_put_((torch.arange(n_units), zero_bin), zeros, accumulate=True)
    return BatchStats(mean, m2, lo, hi, active, hist)
