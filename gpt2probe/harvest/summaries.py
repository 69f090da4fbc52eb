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
from .topk import TopK, batch_candidates


class NonFiniteActivationError(ValueError):
    """Raised by :meth:`UnitSummary.update` for a NaN or infinite activation."""


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
        _, n_pos, n_units = acts.shape
        keep = (torch.arange(n_pos) < valid[:, None]).reshape(-1)
        flat = acts.reshape(-1, n_units)
        if not bool(keep.all()):
            flat = flat[keep.to(flat.device)]
        n = flat.shape[0]
        if n == 0:
            return
        bmax, bmin = flat.amax(0), flat.amin(0)
        if not (torch.isfinite(bmax).all() and torch.isfinite(bmin).all()):
            raise NonFiniteActivationError("an activation is NaN or infinite")
        # Batch mean in float64; squared deviations around the float32-rounded mean, corrected exactly.
        mean_b = flat.sum(0, dtype=torch.float64) / n
        centre = mean_b.to(flat.dtype)
        dev = flat - centre
        ss = (dev * dev).sum(0, dtype=torch.float64)
        shift = mean_b - centre.double()
        m2_b = (ss - n * shift * shift).clamp_min(0)
        n_b = torch.tensor(n, dtype=torch.int64)
        self.count, self.mean, self.m2 = chan_merge(self.count, self.mean, self.m2, n_b, mean_b.cpu(), m2_b.cpu())
        self.min = torch.minimum(self.min, bmin.float().cpu())
        self.max = torch.maximum(self.max, bmax.float().cpu())
        self.active += (flat > self.threshold).sum(0).cpu()
        lo, hi = self.lo.to(flat.device), self.hi.to(flat.device)
        scaled = (flat.float() - lo) / (hi - lo) * self.n_bins
        idx = scaled.floor().clamp(-1, self.n_bins).long() + 1  # 0: below lo, n_bins + 1: at or above hi
        idx += torch.arange(n_units, device=idx.device) * (self.n_bins + 2)
        self.hist += torch.bincount(idx.reshape(-1), minlength=n_units * (self.n_bins + 2)).view(n_units, -1).cpu()
        # Only units whose batch maximum reaches their current k-th value can change their top-k
        # (ties included: they may win on document and position); late in a corpus that is few.
        need = (bmax.float().cpu() >= self.top.values[:, -1]).nonzero().squeeze(1)
        if need.numel() == n_units:
            self.top = self.top.merge(batch_candidates(acts, tokens, doc, pos, valid, self.k, self.window))
        elif need.numel():
            part = acts.index_select(2, need.to(acts.device))
            cand = batch_candidates(part, tokens, doc, pos, valid, self.k, self.window)
            self.top.update_rows(need, cand)

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
