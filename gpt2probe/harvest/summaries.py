"""Running statistics per unit that merge exactly: across batches, ranks and restarts.

Every field is either an integer count (exact in any order), a min/max (exact in any
order), a float64 mean and sum of squared deviations merged with Chan et al.'s pairwise
formula (equal up to float64 rounding in any order, bit-identical in the same order),
or a :class:`~gpt2probe.harvest.topk.TopK` (exact in any order). A resumed run replays the
same batches in the same order onto the saved state, so it is bit-identical to a run that
was never interrupted.

Axes: ``unit`` (a neuron, head, dimension or direction of one hook), ``bin`` (histogram
bins: one underflow bin, ``n_bins`` bins between each unit's edges, one overflow bin),
``head`` (attention heads).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .topk import FIELDS as TOPK_FIELDS
from .topk import TopK, batch_candidates, contexts, merge_sparse


class NonFiniteActivationError(ValueError):
    """Raised by :meth:`UnitSummary.update` for a NaN or infinite activation."""


def valid_rows(acts: Float[Tensor, "batch pos unit"], valid: Tensor) -> tuple[Float[Tensor, "token unit"], Tensor | None]:
    """The ``[token, unit]`` rows of the real (not padding) positions, and their flat ``b * pos + p`` indices.

    In a harvest only a block's last window is short, and it is the batch's last, so the real
    positions are a prefix of the flattened batch: then the rows are a view (no copy) and the
    index is ``None`` (row ``i`` is position ``i``).
    """
    n_batch, n_pos, n_units = acts.shape
    flat = acts.reshape(n_batch * n_pos, n_units)
    valid = valid.cpu()
    if n_batch == 0 or bool((valid[:-1] == n_pos).all()):
        return flat[: (n_batch - 1) * n_pos + int(valid[-1].clamp(0, n_pos))] if n_batch else flat, None
    keep = (torch.arange(n_pos) < valid[:, None]).reshape(-1)
    rows = keep.nonzero().squeeze(1)
    return flat.index_select(0, rows.to(flat.device)), rows


def _batch_moments(flat: Float[Tensor, "token unit"], scratch: Tensor) -> tuple[Tensor, Tensor]:
    """Each unit's batch mean (float64 sum) and sum of squared deviations M2 (float32 sum, corrected in float64).

    The mean is summed in float64, so that merged means agree to float64 rounding in any
    order. M2 sums squared deviations from the float32-rounded mean ``c`` in float32 (a float64
    sum first converts every value, several times the cost of the sum; torch's cascade
    summation keeps the relative error near a few float32 roundings), then removes the
    rounding of ``c`` exactly: ``M2 = S2 - n (mean - c)**2``.
    """
    n = flat.shape[0]
    mean = flat.sum(0, dtype=torch.float64) / n
    centre = mean.to(flat.dtype)
    dev = torch.sub(flat, centre, out=scratch)
    s2 = dev.mul_(dev).sum(0).double()
    shift = mean - centre.double()
    return mean, (s2 - n * shift * shift).clamp_min(0)


def _count_above(flat: Float[Tensor, "token unit"], threshold: float, scratch: Tensor) -> Tensor:
    """How many values of each unit exceed ``threshold`` (int64 on the CPU).

    Summing a bool tensor converts it to int64 first; 0.0/1.0 floats summed in float32 are
    exact below 2**24 rows and several times faster.
    """
    if flat.shape[0] >= 2**24:
        return (flat > threshold).sum(0).cpu()
    return torch.gt(flat, threshold, out=scratch).sum(0).to(torch.int64).cpu()


def chan_merge(n_a: Tensor, mean_a: Tensor, m2_a: Tensor, n_b: Tensor, mean_b: Tensor, m2_b: Tensor):
    """Merge two (count, mean, M2) triples (Chan, Golub & LeVeque 1979), in float64."""
    n = n_a + n_b
    safe = torch.where(n > 0, n, torch.ones_like(n)).double()
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b.double() / safe)
    m2 = m2_a + m2_b + delta * delta * (n_a.double() * n_b.double() / safe)
    return n, mean, m2


@dataclass
class UnitSummary:
    """Running summaries of ``n_units`` scalar units of one hook.

    ``lo``/``hi`` are each unit's histogram range (fixed before the first update, so that
    histograms from different ranks add up bin by bin); ``threshold`` defines "active".
    """

    lo: Float[Tensor, " unit"]
    hi: Float[Tensor, " unit"]
    n_bins: int
    threshold: float
    window: int
    count: Tensor | None = None
    mean: Tensor | None = None
    m2: Tensor | None = None
    min: Tensor | None = None
    max: Tensor | None = None
    active: Tensor | None = None
    hist: Tensor | None = None
    top: TopK | None = None
    k: int = 20

    def __post_init__(self) -> None:
        u = self.lo.shape[0]
        if self.count is None:
            self.count = torch.zeros((), dtype=torch.int64)
            self.mean = torch.zeros(u, dtype=torch.float64)
            self.m2 = torch.zeros(u, dtype=torch.float64)
            self.min = torch.full((u,), torch.inf)
            self.max = torch.full((u,), -torch.inf)
            self.active = torch.zeros(u, dtype=torch.int64)
            self.hist = torch.zeros(u, self.n_bins + 2, dtype=torch.int64)
            self.top = TopK.empty(u, self.k, self.window)

    @property
    def n_units(self) -> int:
        return self.lo.shape[0]

    def edges(self) -> Float[Tensor, "unit edge"]:
        """Bin edges ``[unit, n_bins + 1]`` (bins 1..n_bins of :attr:`hist`; bin 0 is below, the last above)."""
        steps = torch.linspace(0, 1, self.n_bins + 1, dtype=torch.float64)
        return self.lo.double()[:, None] + (self.hi - self.lo).double()[:, None] * steps

    def update(self, acts: Float[Tensor, "batch pos unit"], tokens: Tensor, doc: Tensor, pos: Tensor,
               valid: Tensor) -> None:
        """Add one batch; positions at or after ``valid[b]`` are padding and ignored."""
        n_batch, n_pos, n_units = acts.shape
        flat, rows = valid_rows(acts, valid)
        n = flat.shape[0]
        if n == 0:
            return
        # Two reductions: torch.aminmax over the outer axis is many times slower than amin + amax.
        bmin, bmax = flat.amin(0), flat.amax(0)
        if not bool(torch.isfinite(bmin).all() & torch.isfinite(bmax).all()):
            raise NonFiniteActivationError("an activation is NaN or infinite")
        scratch = torch.empty_like(flat)  # one [token, unit] buffer for every pass below: no other temporaries
        mean_b, m2_b = _batch_moments(flat, scratch)
        n_b = torch.tensor(n, dtype=torch.int64)
        self.count, self.mean, self.m2 = chan_merge(self.count, self.mean, self.m2, n_b, mean_b.cpu(), m2_b.cpu())
        bmin, bmax = bmin.float().cpu(), bmax.float().cpu()
        self.min = torch.minimum(self.min, bmin)
        self.max = torch.maximum(self.max, bmax)
        self.active += _count_above(flat, self.threshold, scratch)
        self._histogram(flat, scratch)
        self._update_top(flat, rows, bmax, acts, tokens, doc, pos, valid)

    def _histogram(self, flat: Tensor, scratch: Tensor) -> None:
        """Bin ``(x - lo) / (hi - lo) * n_bins``, floored and clamped to [-1, n_bins], shifted by 1 (in place)."""
        lo, hi = self.lo.to(flat.device), self.hi.to(flat.device)
        scaled = torch.sub(flat, lo, out=scratch).div_(hi - lo).mul_(self.n_bins).floor_().clamp_(-1, self.n_bins)
        # Every value is now a small integer, so adding each unit's offset in the flat [unit, bin]
        # table (and 1: bin 0 is below lo) is exact in float32; then one cast to int32 (half the
        # memory traffic of int64) and one bincount.
        width = self.n_bins + 2
        n_units = flat.shape[1]
        if n_units * width < 2**24:
            idx = scaled.add_(torch.arange(n_units, device=flat.device, dtype=flat.dtype) * width + 1).to(torch.int32)
        else:  # offsets too large for float32 integers
            idx = scaled.to(torch.int64) + (torch.arange(n_units, device=flat.device) * width + 1)
        self.hist += torch.bincount(idx.view(-1), minlength=n_units * width).view(n_units, width).cpu()

    def _update_top(self, flat, rows, bmax, acts, tokens, doc, pos, valid) -> None:
        """Merge the batch into the top-k, looking only at values that can enter it.

        A unit's top-k can only change where the batch reaches its current k-th value (ties
        included: they may win on document and position); late in a corpus that is a handful
        of values. Units whose top-k is not yet full take every value (the dense path).
        """
        n_units = flat.shape[1]
        kth = self.top.values[:, -1].clone()  # the dense path below rewrites rows in place
        need = bmax >= kth
        if not bool(need.any()):
            return
        full = need & torch.isfinite(kth)
        dense = (need & ~full).nonzero().squeeze(1)
        if dense.numel():
            part = acts if dense.numel() == n_units else acts.index_select(2, dense.to(acts.device))
            cand = batch_candidates(part, tokens, doc, pos, valid, self.k, self.window)
            if dense.numel() == n_units:
                self.top = self.top.merge(cand)
            else:
                self.top.update_rows(dense, cand)
        sparse = full.nonzero().squeeze(1)
        if not sparse.numel():
            return
        if sparse.numel() == n_units:
            mask = flat >= kth.to(flat.device)
            token, unit = mask.nonzero(as_tuple=True)
        else:
            dev = flat.device
            mask = flat.index_select(1, sparse.to(dev)) >= kth[sparse].to(dev)
            token, j = mask.nonzero(as_tuple=True)
            unit = sparse.to(dev)[j]
        values = flat.reshape(-1).take(token * n_units + unit).float().cpu()
        token, unit = token.cpu(), unit.cpu()
        row = token if rows is None else rows.cpu()[token]  # flat [batch * pos] index of each candidate
        d, p = doc.reshape(-1)[row], pos.reshape(-1)[row]
        merge_sparse(self.top, unit, values, d, p,
                     lambda i: contexts(acts, tokens, valid, row[i], unit[i], self.window))

    def merge(self, other: UnitSummary) -> UnitSummary:
        """A new summary holding both (commutative up to float64 rounding of the mean and M2)."""
        count, mean, m2 = chan_merge(self.count, self.mean, self.m2, other.count, other.mean, other.m2)
        return UnitSummary(
            lo=self.lo, hi=self.hi, n_bins=self.n_bins, threshold=self.threshold, window=self.window, k=self.k,
            count=count, mean=mean, m2=m2, min=torch.minimum(self.min, other.min),
            max=torch.maximum(self.max, other.max), active=self.active + other.active,
            hist=self.hist + other.hist, top=self.top.merge(other.top),
        )

    def state(self) -> dict[str, Tensor]:
        """Every tensor, for saving (the scalars go in the manifest)."""
        out = {"lo": self.lo, "hi": self.hi, "count": self.count, "mean": self.mean, "m2": self.m2,
               "min": self.min, "max": self.max, "active": self.active, "hist": self.hist}
        out.update({f"top_{f}": getattr(self.top, f) for f in TOPK_FIELDS})
        return out

    @classmethod
    def from_state(cls, state: dict[str, Tensor], *, n_bins: int, threshold: float, window: int, k: int) -> UnitSummary:
        top = TopK(**{f: state[f"top_{f}"] for f in TOPK_FIELDS})
        return cls(lo=state["lo"], hi=state["hi"], n_bins=n_bins, threshold=threshold, window=window, k=k,
                   count=state["count"], mean=state["mean"], m2=state["m2"], min=state["min"], max=state["max"],
                   active=state["active"], hist=state["hist"], top=top)


@dataclass
class AttentionSummary:
    """Per head, the attention paid to the window's first token and to the previous token.

    ``first``: every valid query's weight on key 0 (query 0 included, whose weight is 1).
    ``prev``: every valid query ``q >= 1``'s weight on key ``q - 1``. Sums in float64.
    """

    n_heads: int
    first_sum: Tensor | None = None
    first_count: Tensor | None = None
    prev_sum: Tensor | None = None
    prev_count: Tensor | None = None

    def __post_init__(self) -> None:
        if self.first_sum is None:
            self.first_sum = torch.zeros(self.n_heads, dtype=torch.float64)
            self.prev_sum = torch.zeros(self.n_heads, dtype=torch.float64)
            self.first_count = torch.zeros((), dtype=torch.int64)
            self.prev_count = torch.zeros((), dtype=torch.int64)

    def update(self, pattern: Float[Tensor, "batch head query_pos key_pos"], valid: Tensor) -> None:
        n_pos = pattern.shape[-1]
        q = torch.arange(n_pos)
        keep = (q < valid[:, None]).to(pattern.device)  # [batch, query_pos]
        first = pattern[..., 0].double() * keep[:, None]
        self.first_sum += first.sum((0, 2)).cpu()
        self.first_count += int(keep.sum())
        if n_pos > 1:
            prev = pattern.diagonal(offset=-1, dim1=-2, dim2=-1).double() * keep[:, None, 1:]
            self.prev_sum += prev.sum((0, 2)).cpu()
            self.prev_count += int(keep[:, 1:].sum())

    def merge(self, other: AttentionSummary) -> AttentionSummary:
        return AttentionSummary(self.n_heads, self.first_sum + other.first_sum, self.first_count + other.first_count,
                                self.prev_sum + other.prev_sum, self.prev_count + other.prev_count)

    def state(self) -> dict[str, Tensor]:
        return {"first_sum": self.first_sum, "first_count": self.first_count,
                "prev_sum": self.prev_sum, "prev_count": self.prev_count}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> AttentionSummary:
        return cls(state["first_sum"].shape[0], **state)
