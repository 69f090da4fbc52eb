"""The k largest activations of every unit, with where they happened and their context.

Order is total and fixed: by value (descending), then document id, then position in the
document (both ascending). Because every candidate set is reduced with the same order,
merging partial results (batches, ranks, restarts) in any order gives the same answer:
the k first elements of the union under that order.

Axes: ``unit`` (a neuron, head, dimension or direction of one hook), ``k`` (slots),
``ctx`` (the context window, ``2 * window + 1`` tokens centred on the example).
Empty slots hold value ``-inf``, document ``-1``; context tokens outside the sequence
hold token ``-1`` and activation ``nan``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

FIELDS = ("values", "doc", "pos", "ctx_tokens", "ctx_acts")


def lexsort_desc(values: Tensor, doc: Tensor, pos: Tensor) -> Tensor:
    """Indices that order the last axis by (value desc, doc asc, pos asc): three stable sorts, least key first."""
    order = torch.argsort(pos, dim=-1, stable=True)
    order = order.gather(-1, torch.argsort(doc.gather(-1, order), dim=-1, stable=True))
    return order.gather(-1, torch.argsort(values.gather(-1, order), dim=-1, descending=True, stable=True))


@dataclass
class TopK:
    """Per-unit top-k examples; the tensors are ``[unit, k]`` (contexts ``[unit, k, ctx]``)."""

    values: Float[Tensor, "unit k"]
    doc: Int[Tensor, "unit k"]
    pos: Int[Tensor, "unit k"]
    ctx_tokens: Int[Tensor, "unit k ctx"]
    ctx_acts: Float[Tensor, "unit k ctx"]

    @classmethod
    def empty(cls, n_units: int, k: int, window: int) -> TopK:
        ctx = 2 * window + 1
        return cls(
            values=torch.full((n_units, k), -torch.inf),
            doc=torch.full((n_units, k), -1, dtype=torch.int64),
            pos=torch.full((n_units, k), -1, dtype=torch.int64),
            ctx_tokens=torch.full((n_units, k, ctx), -1, dtype=torch.int32),
            ctx_acts=torch.full((n_units, k, ctx), torch.nan),
        )

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def merge(self, other: TopK) -> TopK:
        """The k best of both, in the fixed order (commutative and associative)."""
        cat = {f: torch.cat([getattr(self, f), getattr(other, f)], dim=1) for f in FIELDS}
        order = lexsort_desc(cat["values"], cat["doc"], cat["pos"])[:, : self.k]
        out = {}
        for f in FIELDS:
            t = cat[f]
            idx = order if t.ndim == 2 else order.unsqueeze(-1).expand(-1, -1, t.shape[-1])
            out[f] = t.gather(1, idx)
        return TopK(**out)


    def update_rows(self, rows: Int[Tensor, " row"], candidates: TopK) -> None:
        """Merge ``candidates`` (one row per entry of ``rows``) into those rows, in place."""
        current = TopK(**{f: getattr(self, f)[rows] for f in FIELDS})
        merged = current.merge(candidates)
        for f in FIELDS:
            getattr(self, f)[rows] = getattr(merged, f)


def merge_sparse(top: TopK, unit: Int[Tensor, " cand"], values: Float[Tensor, " cand"], doc: Int[Tensor, " cand"],
                 pos: Int[Tensor, " cand"], context) -> None:
    """Merge a flat list of candidate examples into full rows of ``top``, in place; the result is :meth:`TopK.merge`'s.

    A batch's candidates are few (only values at or above a unit's current k-th value can
    enter its top-k), so rather than re-sorting whole rows this inserts them: each row is
    already in the fixed order, so a candidate's new slot is the number of the row's entries
    ahead of it plus the number of the row's other candidates ahead of it, and an old entry
    moves down by the number of candidates ahead of it; whatever lands at slot k or beyond
    drops out. A touched row may end in empty slots (value ``-inf``: every finite candidate is
    ahead of them, so they only move down), and no candidate may repeat a
    (document, position) already in its row. ``context(i)`` gives ``(ctx_tokens, ctx_acts)``
    of the candidates at indices ``i``; it is called once, for those that enter a top-k.
    """
    k = top.k
    order = torch.argsort(pos, stable=True)  # candidates in (unit, value desc, doc, pos) order
    order = order.gather(0, torch.argsort(doc.gather(0, order), stable=True))
    order = order.gather(0, torch.argsort(values.gather(0, order), descending=True, stable=True))
    order = order.gather(0, torch.argsort(unit.gather(0, order), stable=True))
    unit, values, doc, pos = unit[order], values[order], doc[order], pos[order]
    rows, seg, counts = torch.unique_consecutive(unit, return_inverse=True, return_counts=True)
    n_rows = rows.numel()
    starts = torch.cumsum(counts, 0) - counts
    ahead_cands = torch.arange(unit.numel()) - starts[seg]  # the row's candidates ahead of each candidate
    old_v, old_d, old_p = top.values[rows], top.doc[rows], top.pos[rows]  # [row, k]
    ov, od, op = old_v[seg], old_d[seg], old_p[seg]  # [cand, k]: each candidate's row
    v, d, p = values[:, None], doc[:, None], pos[:, None]
    ahead = (ov > v) | ((ov == v) & ((od < d) | ((od == d) & (op < p))))
    ahead_old = ahead.sum(1)  # the row's entries ahead of each candidate (a prefix of the row)
    new_slot = ahead_old + ahead_cands
    # Old entry i moves down by the number of candidates ahead of it: those with ahead_old <= i.
    enter = torch.zeros(n_rows, k + 1, dtype=torch.int64)
    enter.view(-1).index_add_(0, seg * (k + 1) + ahead_old, torch.ones_like(ahead_old))
    old_slot = torch.arange(k) + enter[:, :k].cumsum(1)  # [row, k]
    keep_old = (old_slot < k).view(-1)
    dest_old = (torch.arange(n_rows)[:, None] * k + old_slot).view(-1)[keep_old]
    src_old = torch.arange(n_rows * k)[keep_old]
    keep_new = new_slot < k
    dest_new = (seg * k + new_slot)[keep_new]
    winners = order[keep_new]  # indices into the caller's candidate list
    ctx_tokens, ctx_acts = context(winners)
    for name, old, new in (("values", old_v, values), ("doc", old_d, doc), ("pos", old_p, pos),
                           ("ctx_tokens", top.ctx_tokens[rows], ctx_tokens), ("ctx_acts", top.ctx_acts[rows], ctx_acts)):
        flat_old = old.reshape(n_rows * k, -1)
        out = torch.empty_like(flat_old)
        out.index_copy_(0, dest_old, flat_old.index_select(0, src_old))
        out.index_copy_(0, dest_new, (new[keep_new] if name in ("values", "doc", "pos") else new).reshape(-1, flat_old.shape[1]))
        getattr(top, name)[rows] = out.view(old.shape)


def batch_candidates(
    acts: Float[Tensor, "batch pos unit"],
    tokens: Int[Tensor, "batch pos"],
    doc: Int[Tensor, "batch pos"],
    pos: Int[Tensor, "batch pos"],
    valid: Int[Tensor, " batch"],
    k: int,
    window: int,
) -> TopK:
    """The exact top-k of one batch under the fixed order, with contexts, on the CPU.

    ``torch.topk`` finds the k largest values quickly but breaks ties arbitrarily; units whose
    k-th value is tied with a value left out are redone exactly (rare: dead or saturated units).
    Positions at or after ``valid[b]`` (padding at the end of a window) are never candidates.
    """
    n_batch, n_pos, n_units = acts.shape
    flat = acts.reshape(n_batch * n_pos, n_units)
    keep = (torch.arange(n_pos, device=valid.device) < valid[:, None]).reshape(-1)
    rows = keep.nonzero().squeeze(1).to(acts.device)
    if rows.numel() < n_batch * n_pos:
        flat = flat.index_select(0, rows)
    else:
        rows = None
    n_tokens = flat.shape[0]
    kk = min(k, n_tokens)
    by_unit = flat.T.contiguous()  # [unit, token]: topk along the contiguous axis is several times faster
    top_vals, top_idx = torch.topk(by_unit, kk, dim=1)
    row_of = rows.cpu() if rows is not None else None
    doc_flat, pos_flat = doc.reshape(-1), pos.reshape(-1)
    if row_of is not None:
        doc_flat, pos_flat = doc_flat[row_of], pos_flat[row_of]
    threshold = top_vals[:, -1:]
    n_ge = (by_unit >= threshold).sum(1).cpu()
    top_vals, top_idx = top_vals.cpu(), top_idx.cpu()
    for unit in (n_ge > kk).nonzero().squeeze(1).tolist():  # ties at the boundary: exact slow path
        column = by_unit[unit].cpu()
        cand = (column >= top_vals[unit, -1]).nonzero().squeeze(1)
        order = lexsort_desc(column[cand], doc_flat[cand], pos_flat[cand])[:kk]
        top_idx[unit] = cand[order]
        top_vals[unit] = column[cand[order]]
    sel_doc, sel_pos = doc_flat[top_idx], pos_flat[top_idx]
    order = lexsort_desc(top_vals, sel_doc, sel_pos)
    top_idx = top_idx.gather(1, order)
    # Back to the row in the unfiltered [batch * pos] layout, then gather the contexts.
    full_idx = row_of[top_idx] if row_of is not None else top_idx
    ctx_tokens, ctx_acts = contexts(acts, tokens, valid, full_idx, torch.arange(n_units)[:, None], window)
    cand = TopK(
        values=top_vals.gather(1, order).float(),
        doc=doc.reshape(-1)[full_idx], pos=pos.reshape(-1)[full_idx],
        ctx_tokens=ctx_tokens, ctx_acts=ctx_acts,
    )
    return _pad(cand, k, window) if kk < k else cand  # fewer tokens than slots: empty slots last


def contexts(
    acts: Float[Tensor, "batch pos unit"],
    tokens: Int[Tensor, "batch pos"],
    valid: Int[Tensor, " batch"],
    row: Int[Tensor, "..."],
    unit: Int[Tensor, "..."],
    window: int,
) -> tuple[Int[Tensor, "... ctx"], Float[Tensor, "... ctx"]]:
    """The tokens and ``unit``'s activations within ``window`` of each flat position ``row`` (``b * pos + p``).

    ``row`` and ``unit`` broadcast together. Context positions outside the example's window (before
    its start, or at or after ``valid[b]``) get token ``-1`` and activation ``nan``. One flat
    ``take`` per tensor: far cheaper than three-way advanced indexing.
    """
    n_batch, n_pos, n_units = acts.shape
    row, unit = torch.broadcast_tensors(row.cpu(), unit.cpu())
    b, p = row // n_pos, row % n_pos
    ctx_p = p.unsqueeze(-1) + torch.arange(-window, window + 1)  # [..., ctx]
    inside = (ctx_p >= 0) & (ctx_p < valid.cpu()[b].unsqueeze(-1))
    at = b.unsqueeze(-1) * n_pos + ctx_p.clamp(0, n_pos - 1)
    flat_acts = acts.reshape(-1)
    ctx_acts = flat_acts.take((at * n_units + unit.unsqueeze(-1)).to(flat_acts.device)).float().cpu()
    ctx_tokens = tokens.cpu().reshape(-1).take(at).to(torch.int32)
    return torch.where(inside, ctx_tokens, -1), torch.where(inside, ctx_acts, torch.nan)


def _pad(cand: TopK, k: int, window: int) -> TopK:
    empty = TopK.empty(cand.values.shape[0], k - cand.k, window)
    return TopK(**{f: torch.cat([getattr(cand, f), getattr(empty, f)], dim=1) for f in FIELDS})
