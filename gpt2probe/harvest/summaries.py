"""Running statistics per unit that merge exactly: across batches, ranks and restarts.

Every field is either an integer count (exact in any order), a min/max (exact in any
order), a float64 mean and sum of squared deviations merged with Chan et al.'s pairwise
formula (each batch's from float32 sums of deviations, so within float32 rounding of a
deviation, or for sparse units from float64 sums over the non-zero values, :mod:`.sparse`;
the same batches merged in any order agree to float64 rounding, and in the same
order bit for bit), or a :class:`~gpt2probe.harvest.topk.TopK` (exact in any order). A resumed run replays the
same batches in the same order onto the saved state, so it is bit-identical to a run that
was never interrupted.

Axes: ``unit`` (a neuron, head, dimension or direction of one hook), ``bin`` (histogram
bins: one underflow bin, ``n_bins`` bins between each unit's edges, one overflow bin),
``head`` (attention heads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import InvalidTypeError, NonFiniteActivationError
from .sparse import BatchStats, batch_stats, entries
from .topk import FIELDS as TOPK_FIELDS
from .topk import TopK, batch_candidates, contexts, merge_sparse


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


# On the CPU a batch's [token, unit] activations (12 MB for GPT-2 small's MLP at 1,024 tokens)
# are summarised a slice of units at a time, each slice small enough to stay in the core's
# cache through all the passes below (1 MB: on a 2-core AMD EPYC VM, 36 ms per hook and batch
# against 43 ms for one pass over all of GPT-2 small's 3,072 units; 256 KB to 2 MB were
# within that machine's ~10% noise of each other).
CHUNK_ELEMENTS = 1 << 18
# Top-k candidates wait until there are about this many per unit, then are inserted together
# (memory: ~150 bytes each with the default window; under 2 MB per hook of GPT-2 small).
FLUSH_PER_UNIT = 4


# On an accelerator the slices only bound the scratch buffers (64 MB of float32 at most).
DEVICE_CHUNK_ELEMENTS = 1 << 24


def chunk_units(n_tokens: int, n_units: int, device: torch.device) -> int:
    """How many units to summarise at once: a cache-sized slice on the CPU, a memory-bounded one on an accelerator."""
    budget = CHUNK_ELEMENTS if device.type == "cpu" else DEVICE_CHUNK_ELEMENTS
    return max(1, min(n_units, max(16, budget // max(n_tokens, 1))))


def _moments(x: Float[Tensor, "token unit"], scratch: Tensor) -> tuple[Tensor, Tensor]:
    """Each unit's mean and sum of squared deviations M2 (float64), from float32 sums of deviations.

    Deviations from ``c``, the float32 mean, are summed twice: ``S1 = sum(x - c)`` (the error
    of ``c``, at the size of a deviation, not of the mean) and ``S2 = sum((x - c)**2)``; then
    ``mean = c + S1 / n`` and ``M2 = S2 - S1**2 / n`` exactly (the shifted-data formulas), in
    float64. Every sum runs in float32 (torch's cascade summation: relative error near a few
    float32 roundings); a float64 sum would first convert every value, several times the cost.
    """
    n = x.shape[0]
    centre = x.sum(0).div_(n)
    dev = torch.sub(x, centre, out=scratch)
    s1 = dev.sum(0).double()
    s2 = dev.mul_(dev).sum(0).double()
    return centre.double() + s1 / n, (s2 - s1 * s1 / n).clamp_min(0)


def _count_above(x: Float[Tensor, "token unit"], threshold: float, scratch: Tensor) -> Tensor:
    """How many values of each unit exceed ``threshold`` (int64).

    Summing a bool tensor converts it to int64 first; 0.0/1.0 floats summed in float32 are
    exact below 2**24 rows and several times faster.
    """
    if x.shape[0] >= 2**24:
        return (x > threshold).sum(0)
    return torch.gt(x, threshold, out=scratch).sum(0).to(torch.int64)


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
    Candidates for the top-k are collected over several batches and inserted together
    (:meth:`flush`); reading :attr:`top`, :meth:`state` and :meth:`merge` flush first.
    Start a run with :meth:`empty`; :meth:`from_state` and :meth:`merge` build one from existing tensors.

    ``floor`` (SAE features): only values above it enter the top-k, so a feature that fired
    on fewer than ``k`` tokens keeps empty slots instead of zeros from arbitrary tokens. Then
    every unit's top-k takes only candidates: the values above the floor (or at or above the
    k-th value once the top-k is full), which for sparse features are few. With a floor at
    or above 0, on the CPU, every other statistic is computed from the non-zero values too
    (:meth:`sparse`).
    """

    lo: Float[Tensor, " unit"]
    hi: Float[Tensor, " unit"]
    n_bins: int
    threshold: float
    window: int
    count: Tensor  # [] int64: tokens summarised
    mean: Float[Tensor, " unit"]  # float64
    m2: Float[Tensor, " unit"]  # float64 sum of squared deviations
    min: Float[Tensor, " unit"]
    max: Float[Tensor, " unit"]
    active: Tensor  # [unit] int64: values above the threshold
    hist: Tensor  # [unit, bin] int64
    settled_top: TopK
    k: int = 20
    floor: float | None = None

    @classmethod
    def empty(cls, lo: Float[Tensor, " unit"], hi: Float[Tensor, " unit"], *, n_bins: int, threshold: float,
              window: int, k: int = 20, floor: float | None = None) -> UnitSummary:
        """A summary of no tokens yet, with fixed histogram ranges ``lo``/``hi``."""
        u = lo.shape[0]
        return cls(lo=lo, hi=hi, n_bins=n_bins, threshold=threshold, window=window, k=k, floor=floor,
                   count=torch.zeros((), dtype=torch.int64), mean=torch.zeros(u, dtype=torch.float64),
                   m2=torch.zeros(u, dtype=torch.float64), min=torch.full((u,), torch.inf),
                   max=torch.full((u,), -torch.inf), active=torch.zeros(u, dtype=torch.int64),
                   hist=torch.zeros(u, n_bins + 2, dtype=torch.int64), settled_top=TopK.empty(u, k, window))

    def __post_init__(self) -> None:
        # Histogram bin of x: floor(x * scale + shift), clamped to [0, n_bins + 1] (bin 0 below lo).
        self._scale = (self.n_bins / (self.hi.double() - self.lo.double())).float()
        self._shift = (1 - self.lo.double() * self._scale.double()).float()
        # With a floor, "x > floor" is "x >= the next float32 above floor": one comparison for every unit.
        self._above_floor = (None if self.floor is None else
                             torch.nextafter(torch.tensor(float(self.floor)), torch.tensor(torch.inf)))
        self._pending: list[tuple[Tensor, ...]] = []  # candidate examples not yet in settled_top
        self._n_pending = 0

    @property
    def n_units(self) -> int:
        return self.lo.shape[0]

    @property
    def top(self) -> TopK:
        """The top-k examples of every unit (every collected candidate included)."""
        self.flush()
        return self.settled_top

    def edges(self) -> Float[Tensor, "unit edge"]:
        """Bin edges ``[unit, n_bins + 1]`` (bins 1..n_bins of :attr:`hist`; bin 0 is below, the last above)."""
        steps = torch.linspace(0, 1, self.n_bins + 1, dtype=torch.float64)
        return self.lo.double()[:, None] + (self.hi - self.lo).double()[:, None] * steps

    def sparse(self, device: torch.device) -> bool:
        """Whether :meth:`update` reads only the non-zero values (:mod:`.sparse`) rather than every value.

        For units with a ``floor`` at or above 0 (SAE features: a zero never enters their
        top-k), on the CPU. On an accelerator the dense passes cost little, and the sparse
        path's per-unit sums (a scatter-add) would use atomics, whose order, and so whose
        last bits, change from run to run: a resumed run would no longer be bit-identical.
        """
        return self.floor is not None and self.floor >= 0 and device.type == "cpu"

    def update(self, acts: Float[Tensor, "batch pos unit"], tokens: Tensor, doc: Tensor, pos: Tensor,
               valid: Tensor, support: Int[Tensor, "batch pos slot"] | None = None) -> None:
        """Add one batch; positions at or after ``valid[b]`` are padding and ignored.

        Raises :class:`NonFiniteActivationError` (leaving the summary as it was) for a NaN or
        infinite value. Every statistic is computed for a cache-sized slice of units at a
        time, or, for sparse units (:meth:`sparse`), from the non-zero values alone: those at
        the ``support`` units of each position when given (every other value must be exactly 0,
        as :meth:`gpt2probe.SAE.encode_with_support` promises), else those found in ``acts``.
        """
        flat, rows = valid_rows(acts, valid)
        n, n_units = flat.shape
        if n == 0:
            return
        dev = flat.device
        if self.sparse(dev) and self._above_floor is not None:  # (sparse() implies the floor)
            self._update_sparse(flat, rows, support, self._above_floor, acts, tokens, doc, pos, valid)
            return
        kth = self.settled_top.values[:, -1]
        full = torch.isfinite(kth)  # units whose top-k is full take only values that can enter it
        if self._above_floor is not None:  # every unit takes only candidates: values above the floor at least
            full = torch.ones_like(full)
            kth = torch.maximum(kth, self._above_floor)
        sparse_kth = torch.where(full, kth, torch.inf).to(dev)
        width = chunk_units(n, n_units, dev)
        scratch = torch.empty(n, width, device=dev)  # reused by every pass: no other [token, unit] temporaries
        bins = torch.empty(n, width, dtype=torch.int64, device=dev)  # bincount reads int64 fastest
        n_cells = self.n_bins + 2
        offsets = torch.arange(width, device=dev) * n_cells
        scale, shift = self._scale.to(dev), self._shift.to(dev)
        bmin, bmax = torch.empty(n_units, device=dev), torch.empty(n_units, device=dev)
        mean_b = torch.empty(n_units, dtype=torch.float64, device=dev)
        m2_b = torch.empty(n_units, dtype=torch.float64, device=dev)
        active = torch.empty(n_units, dtype=torch.int64, device=dev)
        hist = torch.empty(n_units, n_cells, dtype=torch.int64, device=dev)
        for c0 in range(0, n_units, width):
            c1 = min(c0 + width, n_units)
            w = c1 - c0
            x, scr = flat[:, c0:c1], scratch[:, :w]
            # Two reductions: torch.aminmax over the outer axis is many times slower than amin + amax.
            min_c, max_c = torch.amin(x, 0, out=bmin[c0:c1]), torch.amax(x, 0, out=bmax[c0:c1])
            if not bool(torch.isfinite(min_c + max_c).all()):  # NaN or inf anywhere reaches the min or max
                raise NonFiniteActivationError("an activation is NaN or infinite")
            mean_b[c0:c1], m2_b[c0:c1] = _moments(x, scr)
            active[c0:c1] = _count_above(x, self.threshold, scr)
            # Bins: one fused multiply-add, a clamp, a cast (truncation is the floor: nothing is
            # negative after the clamp) and each unit's offset in a flat [unit, bin] table.
            torch.addcmul(shift[c0:c1], x, scale[c0:c1], out=scr).clamp_(0, n_cells - 1)
            idx = bins[:, :w]
            idx.copy_(scr).add_(offsets[:w])
            hist[c0:c1] = torch.bincount(idx.reshape(-1), minlength=w * n_cells).view(w, n_cells)
        bmin, bmax = bmin.cpu(), bmax.cpu()
        self._fold(n, BatchStats(mean_b.cpu(), m2_b.cpu(), bmin, bmax, active.cpu(), hist.cpu()))
        self._collect(flat, rows, bmax >= sparse_kth.cpu(), sparse_kth, acts, tokens, doc, pos, valid)
        dense = (~full).nonzero().squeeze(1)  # units whose top-k is not full yet take every value
        if dense.numel():
            part = acts if dense.numel() == n_units else acts.index_select(2, dense.to(dev))
            cand = batch_candidates(part, tokens, doc, pos, valid, self.k, self.window)
            if dense.numel() == n_units:
                self.settled_top = self.settled_top.merge(cand)
            else:
                self.settled_top.update_rows(dense, cand)

    def _update_sparse(self, flat, rows, support, above_floor: Tensor, acts, tokens, doc, pos, valid) -> None:
        """:meth:`update` from the listed (non-zero) values only; see :mod:`.sparse`."""
        n, n_units = flat.shape
        e = entries(flat, rows, support)
        if not bool(torch.isfinite(e.values).all()):  # NaN and infinities are non-zero: always listed
            raise NonFiniteActivationError("an activation is NaN or infinite")
        self._fold(n, batch_stats(e, n, n_units, threshold=self.threshold, scale=self._scale, shift=self._shift,
                                  n_cells=self.n_bins + 2))
        # Top-k candidates: listed values above the floor and at or above their unit's k-th (a zero is neither).
        kth = torch.maximum(self.settled_top.values[:, -1], above_floor)
        take = torch.ge(e.values, kth.index_select(0, e.unit)).nonzero().squeeze(1)
        if take.numel():
            self._keep(e.token.index_select(0, take), e.unit.index_select(0, take), e.values.index_select(0, take),
                       rows, acts, tokens, doc, pos, valid)

    def _fold(self, n: int, b: BatchStats) -> None:
        """Add one batch's statistics (of ``n`` tokens) to the running ones."""
        self.count, self.mean, self.m2 = chan_merge(self.count, self.mean, self.m2, torch.tensor(n), b.mean, b.m2)
        self.min = torch.minimum(self.min, b.min)
        self.max = torch.maximum(self.max, b.max)
        self.active += b.active
        self.hist += b.hist

    def _collect(self, flat, rows, need, kth, acts, tokens, doc, pos, valid) -> None:
        """Find the batch's candidates (values at or above their unit's k-th) and :meth:`_keep` them.

        Only the units whose batch maximum reaches their k-th value (``need``) are searched.
        """
        n_units = flat.shape[1]
        cols = need.nonzero().squeeze(1).to(flat.device)
        if not cols.numel():
            return
        if cols.numel() == n_units:
            token, unit = torch.ge(flat, kth).nonzero(as_tuple=True)
        else:
            token, j = torch.ge(flat.index_select(1, cols), kth[cols]).nonzero(as_tuple=True)
            unit = cols[j]
        values = flat.reshape(-1).take(token * n_units + unit).float()
        self._keep(token, unit, values, rows, acts, tokens, doc, pos, valid)

    def _keep(self, token, unit, values, rows, acts, tokens, doc, pos, valid) -> None:
        """Hold candidates (row ``token`` of the batch's real rows, ``unit``, value), with contexts, for :meth:`flush`.

        Late in a corpus a batch holds a few dozen candidates, and inserting them costs mostly
        a fixed overhead; so they are gathered over batches and inserted at once, when there
        are about :data:`FLUSH_PER_UNIT` per unit. The k-th values used to filter are those of the last
        insertion (lower or equal to the current ones), so no candidate is missed. A batch
        with that many candidates by itself (early in a corpus, features whose top-k is not
        full yet take every value above the floor) is inserted at once, and only the
        contexts of the candidates that enter a top-k are gathered.
        """
        n_units = acts.shape[-1]
        values, token, unit = values.cpu(), token.cpu(), unit.cpu()
        row = token if rows is None else rows.cpu()[token]  # flat [batch * pos] index of each candidate
        cand_doc, cand_pos = doc.reshape(-1)[row].cpu(), pos.reshape(-1)[row].cpu()
        if unit.numel() >= FLUSH_PER_UNIT * n_units + 256:
            self.flush()
            merge_sparse(self.settled_top, unit, values, cand_doc, cand_pos,
                         lambda i: contexts(acts, tokens, valid, row[i], unit[i], self.window))
            return
        ctx_tokens, ctx_acts = contexts(acts, tokens, valid, row, unit, self.window)
        self._pending.append((unit, values, cand_doc, cand_pos, ctx_tokens, ctx_acts))
        self._n_pending += unit.numel()
        if self._n_pending >= FLUSH_PER_UNIT * n_units + 256:
            self.flush()

    def flush(self) -> None:
        """Insert every collected candidate into :attr:`settled_top` (exact: the result does not depend on when)."""
        if not self._pending:
            return
        unit, values, doc, pos, ctx_tokens, ctx_acts = (torch.cat(parts) for parts in zip(*self._pending))
        self._pending, self._n_pending = [], 0
        merge_sparse(self.settled_top, unit, values, doc, pos, lambda i: (ctx_tokens[i], ctx_acts[i]))

    def merge(self, other: UnitSummary) -> UnitSummary:
        """A new summary holding both (commutative up to float64 rounding of the mean and M2)."""
        count, mean, m2 = chan_merge(self.count, self.mean, self.m2, other.count, other.mean, other.m2)
        return UnitSummary(
            lo=self.lo, hi=self.hi, n_bins=self.n_bins, threshold=self.threshold, window=self.window, k=self.k,
            count=count, mean=mean, m2=m2, min=torch.minimum(self.min, other.min),
            max=torch.maximum(self.max, other.max), active=self.active + other.active,
            hist=self.hist + other.hist, settled_top=self.top.merge(other.top), floor=self.floor,
        )

    def state(self) -> dict[str, Tensor]:
        """Every tensor, for saving (the scalars go in the manifest)."""
        top = self.top
        out = {"lo": self.lo, "hi": self.hi, "count": self.count, "mean": self.mean, "m2": self.m2,
               "min": self.min, "max": self.max, "active": self.active, "hist": self.hist}
        out.update({f"top_{f}": getattr(top, f) for f in TOPK_FIELDS})
        return out

    @classmethod
    def from_state(cls, state: dict[str, Tensor], *, n_bins: int, threshold: float, window: int, k: int,
                   floor: float | None = None) -> UnitSummary:
        top = TopK(**{f: state[f"top_{f}"] for f in TOPK_FIELDS})
        return cls(lo=state["lo"], hi=state["hi"], n_bins=n_bins, threshold=threshold, window=window, k=k, floor=floor,
                   count=state["count"], mean=state["mean"], m2=state["m2"], min=state["min"], max=state["max"],
                   active=state["active"], hist=state["hist"], settled_top=top)


@dataclass
class AttentionSummary:
    """Per head, the attention paid to the window's first token and to the previous token.

    ``first``: every valid query's weight on key 0 (query 0 included, whose weight is 1).
    ``prev``: every valid query ``q >= 1``'s weight on key ``q - 1``. Sums in float64.
    """

    n_heads: int
    first_sum: Float[Tensor, " head"]  # float64
    first_count: Tensor  # [] int64
    prev_sum: Float[Tensor, " head"]  # float64
    prev_count: Tensor  # [] int64

    @classmethod
    def empty(cls, n_heads: int) -> AttentionSummary:
        """A summary of no queries yet."""
        return cls(n_heads, first_sum=torch.zeros(n_heads, dtype=torch.float64),
                   first_count=torch.zeros((), dtype=torch.int64),
                   prev_sum=torch.zeros(n_heads, dtype=torch.float64), prev_count=torch.zeros((), dtype=torch.int64))

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


Summary: TypeAlias = UnitSummary | AttentionSummary  # one hook's running summary, by its kind


def merge_summaries(a: Summary, b: Summary) -> Summary:
    """``a.merge(b)`` for two summaries of the same hook (so of the same kind)."""
    if isinstance(a, UnitSummary) and isinstance(b, UnitSummary):
        return a.merge(b)
    if isinstance(a, AttentionSummary) and isinstance(b, AttentionSummary):
        return a.merge(b)
    raise InvalidTypeError(f"cannot merge a {type(a).__name__} with a {type(b).__name__}: "
                           "only summaries of the same hook (UnitSummary with UnitSummary, "
                           "AttentionSummary with AttentionSummary) merge")
