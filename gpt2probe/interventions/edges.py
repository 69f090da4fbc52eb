"""Edge attribution patching: score every edge of the residual-stream graph from gradients.

An edge ``s -> r`` (see :mod:`gpt2probe.interventions.graph`) is patched by adding the
change of sender ``s``'s write, ``d_s = s(source) - s(base)``, to receiver ``r``'s input only.
Its attribution (EAP, Syed et al. 2023) is the first-order effect of that, summed over
positions and prompts:

    score(s -> r) = sum over batch, pos, d_model of  d_s * d metric / d (input of r)

with the gradient taken on the base run (corrupted for ``direction="denoise"``). The
gradient at a receiver's input is the gradient at its own read only (one head's queries,
keys or values, one MLP, or the unembedding), pulled back through its LayerNorm.

Methods:
``"atp"``
    the estimate above.
``"atp*"``
    the QK fix of Kramár et al. 2024 for edges into queries and keys: the receiver's
    queries (keys) are recomputed exactly from its patched input (LayerNorm included),
    the head's attention pattern is recomputed exactly through its softmax, and only
    the rest of the model is linearised: ``(pattern' - pattern) . d metric / d pattern``.
    A saturated softmax (e.g. an induction head resting on BOS) no longer hides the edge.
    And GradDrop, as for nodes (:mod:`gpt2probe.interventions.attribution_patching`): each
    edge's score is recomputed ``L`` times, with the gradient through layer ``l``'s reads of
    the residual stream stopped, and ``graddrop(edge) = 1 / (L - 1) * sum_l |score_l(edge)|``
    (Kramár et al. 2024, eq. 11). Edges are ranked by ``graddrop``; ``scores`` stay signed.
``"ig"`` (EAP-IG, Hanna et al. 2024)
    the receiver gradients are averaged over ``steps`` points on the straight path from
    the base run's token embeddings to the source run's (midpoints), then dotted with
    ``d_s`` as above.

Scores are in the metric's own units; :meth:`EdgeScores.normalized` divides them by
``clean_metric - corrupted_metric``. Edges are ordered by ``|score|`` (``"atp*"``: by ``graddrop``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .. import names as N
from .. import validate
from ..errors import InvalidArgumentError, ShapeError
from ..probe import GPT2Probe, Inputs
from .attribution_patching import ig_steps, prepare
from .gradients import Edit, copy_rows, grad_run
from .graph import Edge, Node, all_edges, feeds, receivers, senders
from .patching import Metric, Token, _scalar

EDGE_METHODS = ("atp", "atp*", "ig")


@dataclass(frozen=True)
class EdgeScores:
    """Every edge of the graph with its score, largest ``|score|`` first (``"atp*"``: largest ``graddrop``)."""

    edges: tuple[Edge, ...]
    scores: Float[Tensor, " edge"]
    clean_metric: float
    corrupted_metric: float
    method: str
    direction: str
    n_layers: int
    n_heads: int
    steps: int | None = None
    graddrop: Float[Tensor, " edge"] | None = None
    """``"atp*"`` only: each edge's GradDrop score (metric units, unsigned), in the order of ``edges``."""

    def __post_init__(self) -> None:
        if self.scores.shape != (len(self.edges),):
            raise ShapeError(f"{len(self.edges)} edges but scores of shape {tuple(self.scores.shape)}")
        if self.graddrop is not None and self.graddrop.shape != self.scores.shape:
            raise ShapeError(f"graddrop has shape {tuple(self.graddrop.shape)}, scores {tuple(self.scores.shape)}")

    def __len__(self) -> int:
        return len(self.edges)

    def normalized(self) -> Float[Tensor, " edge"]:
        """Scores as a fraction of ``clean_metric - corrupted_metric``."""
        gap = self.clean_metric - self.corrupted_metric
        if gap == 0:
            raise InvalidArgumentError("the clean and corrupted metrics are equal, so scores cannot be normalised")
        return self.scores / gap

    def top(self, n: int) -> list[tuple[Edge, float]]:
        """The ``n`` highest-ranked edges with their scores."""
        validate.integer("n", n, minimum=0)
        return [(e, float(s)) for e, s in zip(self.edges[:n], self.scores[:n])]

    def score(self, edge: Edge | str) -> float:
        """The score of one edge (an :class:`Edge` or its string, ``"L0H0 -> L1H0.k"``)."""
        edge = Edge.parse(edge) if isinstance(edge, str) else edge
        try:
            return float(self.scores[self.edges.index(edge)])
        except ValueError:
            raise InvalidArgumentError(f"{edge} is not an edge of this {self.n_layers}-layer graph") from None

    def rank(self, edge: Edge | str) -> int:
        """0 for the highest-ranked edge."""
        edge = Edge.parse(edge) if isinstance(edge, str) else edge
        if edge not in self.edges:
            raise InvalidArgumentError(f"{edge} is not an edge of this {self.n_layers}-layer graph")
        return self.edges.index(edge)


class _Weights:
    """The weights an edge sweep reads, converted to float64 once (from :class:`gpt2probe.model.weights.Weights`)."""

    def __init__(self, probe: GPT2Probe) -> None:
        w = probe.weights
        self.W_Q, self.W_K, self.W_V = (t.double() for t in (w.W_Q, w.W_K, w.W_V))
        self.b_Q, self.b_K = w.b_Q.double(), w.b_K.double()
        self.W_O, self.W_in = w.W_O.double(), w.W_in.double()
        blocks = [w.block(l) for l in range(w.n_layers)]
        self.ln1 = [b.ln1.to(dtype=torch.float64) for b in blocks]
        self.ln2 = [b.ln2.to(dtype=torch.float64) for b in blocks]
        self.scaling = [b.attention_scaling for b in blocks]


def _grad_names(n_layers: int) -> list[str]:
    names = []
    for l in range(n_layers):
        names += [N.q(l), N.k(l), N.v(l), N.mlp_pre(l)]
    return names + [N.resid_post(n_layers - 1)]


def _receiver_grads(W: _Weights, acts: dict[str, Tensor], grads: dict[str, Tensor], rows: slice,
                    n_layers: int) -> Tensor:
    """``d metric / d (input of r)`` for every receiver, in :func:`graph.receivers` order: ``[receiver, batch, pos, d_model]``."""
    out = []
    for l in range(n_layers):
        x = acts[N.resid_pre(l)][rows].double()
        for name, weight in ((N.q(l), W.W_Q), (N.k(l), W.W_K), (N.v(l), W.W_V)):
            g = torch.einsum("bphd,hmd->hbpm", grads[name][rows].double(), weight[l])
            out.append(W.ln1[l].backward(g, x))
        g = torch.einsum("bpn,mn->bpm", grads[N.mlp_pre(l)][rows].double(), W.W_in[l])
        out.append(W.ln2[l].backward(g, acts[N.resid_mid(l)][rows].double())[None])
    out.append(grads[N.resid_post(n_layers - 1)][rows].double()[None])
    return torch.cat(out)


def _sender_deltas(W: _Weights, source: dict[str, Tensor], base: dict[str, Tensor], n_layers: int) -> Tensor:
    """``s(source) - s(base)`` for every sender, in :func:`graph.senders` order: ``[sender, batch, pos, d_model]``."""
    out = [(source[N.EMBED] - base[N.EMBED]).double()[None]]
    for l in range(n_layers):
        dz = (source[N.z(l)] - base[N.z(l)]).double()
        out.append(torch.einsum("bphd,hdm->hbpm", dz, W.W_O[l]))
        out.append((source[N.mlp_out(l)] - base[N.mlp_out(l)]).double()[None])
    return torch.cat(out)


def _qk_fixed(W: _Weights, layer: int, deltas: Tensor, acts: dict[str, Tensor], grads: dict[str, Tensor],
              rows: slice = slice(None)) -> tuple[Tensor, Tensor]:
    """AtP* scores of ``deltas[s]`` sent into every head's queries and keys of ``layer``: ``([sender, head], [sender, head])``."""
    x = acts[N.resid_pre(layer)][rows].double()
    ln = W.ln1[layer]
    normed, patched = ln(x), ln(x + deltas)
    dq = torch.einsum("sbpm,hmd->sbphd", patched - normed, W.W_Q[layer])
    dk = torch.einsum("sbpm,hmd->sbphd", patched - normed, W.W_K[layer])
    q = torch.einsum("bpm,hmd->bphd", normed, W.W_Q[layer]) + W.b_Q[layer]
    k = torch.einsum("bpm,hmd->bphd", normed, W.W_K[layer]) + W.b_K[layer]
    scores = acts[N.attn_scores(layer)][rows].double()
    pattern = torch.softmax(scores, -1)
    grad = grads[N.pattern(layer)][rows].double()
    scale = W.scaling[layer]
    results = []
    for change in (torch.einsum("sbqhd,bkhd->sbhqk", dq, k), torch.einsum("bqhd,sbkhd->sbhqk", q, dk)):
        new = torch.softmax(scores + scale * change, -1)
        results.append(((new - pattern) * grad).sum(dim=(1, 3, 4)))
    return results[0], results[1]


def edge_attribution_patch(
    probe: GPT2Probe,
    clean: Inputs,
    corrupted: Inputs,
    *,
    metric: Metric | None = None,
    answer: Token | Sequence[Token] | None = None,
    wrong: Token | Sequence[Token] | None = None,
    direction: str = "denoise",
    method: str = "atp",
    steps: int | None = None,
    batch_size: int = 16,
    prepend_bos: bool = False,
) -> EdgeScores:
    """Score every edge between components from gradients (see the module docstring).

    Args:
        clean, corrupted, metric, answer, wrong, direction, prepend_bos: as for :func:`patch`.
        method: ``"atp"``, ``"atp*"`` or ``"ig"``.
        steps: integration points for ``"ig"`` (default 16); only valid with ``"ig"``.
        batch_size: path points per forward pass for ``"ig"``, dropped layers per pass for ``"atp*"``.
    """
    validate.choice("method", method, EDGE_METHODS)
    n_steps = ig_steps(method, steps)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    prep = prepare(probe, clean, corrupted, metric=metric, answer=answer, wrong=wrong, direction=direction,
                   prepend_bos=prepend_bos)
    n_layers, n_heads = probe.cfg.n_layers, probe.cfg.n_heads
    W = _Weights(probe)
    sender_names = [N.EMBED] + [n for l in range(n_layers) for n in (N.z(l), N.mlp_out(l))]
    with torch.no_grad():
        source_logits, source_cache = probe.run_with_cache(prep.source, names=sender_names)
        source_metric = _scalar(prep.metric(source_logits))
        source = dict(source_cache)
    grad_names = _grad_names(n_layers)
    keep = sender_names + [n for l in range(n_layers) for n in (N.resid_pre(l), N.resid_mid(l))]
    if method == "atp*":
        grad_names += [N.pattern(l) for l in range(n_layers)]
        keep += [N.attn_scores(l) for l in range(n_layers)]

    star_acts: dict = {}  # AtP*'s extra terms read the base run's activations and gradients
    star_grads: dict = {}
    if method == "ig":
        with torch.no_grad():
            base_logits, base_cache = probe.run_with_cache(prep.base, names=sender_names)
            base_metric = _scalar(prep.metric(base_logits))
        base = dict(base_cache)
        grad_sum = None
        n_batch = prep.base.ids.shape[0]
        alphas = [(k + 0.5) / n_steps for k in range(n_steps)]
        for start in range(0, n_steps, batch_size):
            chunk = alphas[start : start + batch_size]
            run = grad_run(probe, prep.base, grad_names, prep.metric, copies=len(chunk), keep=keep,
                           edits={N.EMBED: _interpolate(chunk, source[N.EMBED], n_batch)})
            for c in range(len(chunk)):
                g = _receiver_grads(W, run.acts, run.grads, copy_rows(c, n_batch), n_layers)
                grad_sum = g if grad_sum is None else grad_sum + g
        if grad_sum is None:  # ig_steps gave at least one point
            raise InvalidArgumentError(f"steps must be a positive integer, got {n_steps}")
        receiver_grads = grad_sum / n_steps
    else:
        run = grad_run(probe, prep.base, grad_names, prep.metric, keep=keep)
        base_metric = run.metrics[0]
        base = {name: run.acts[name] for name in sender_names}
        receiver_grads = _receiver_grads(W, run.acts, run.grads, slice(None), n_layers)
        if method == "atp*":
            star_acts, star_grads = run.acts, run.grads

    deltas = _sender_deltas(W, source, base, n_layers)
    matrix = _edge_matrix(W, deltas, receiver_grads, star_acts, star_grads, slice(None), n_layers, n_heads,
                          method == "atp*")
    send, recv = senders(n_layers, n_heads), receivers(n_layers, n_heads)
    dropped = None
    if method == "atp*":
        if n_layers < 2:
            raise InvalidArgumentError("method='atp*' needs at least 2 layers: GradDrop's score divides by n_layers - 1")
        dropped = _graddrop(probe, prep, W, deltas, grad_names, keep, batch_size) / (n_layers - 1)

    s_index = {s: i for i, s in enumerate(send)}
    r_index = {r: i for i, r in enumerate(recv)}
    edges = all_edges(n_layers, n_heads)
    pick = torch.tensor([[s_index[e.sender], r_index[(e.receiver, e.input)]] for e in edges])
    scores = matrix[pick[:, 0], pick[:, 1]].cpu()
    rank_by = scores.abs()
    if dropped is not None:
        dropped = dropped[pick[:, 0], pick[:, 1]].cpu()
        rank_by = dropped
    order = sorted(range(len(edges)), key=lambda i: (-float(rank_by[i]), i))
    clean_metric, corrupted_metric = (
        (source_metric, base_metric) if direction == "denoise" else (base_metric, source_metric))
    return EdgeScores(edges=tuple(edges[i] for i in order), scores=scores[order].float(), clean_metric=clean_metric,
                      corrupted_metric=corrupted_metric, method=method, direction=direction, n_layers=n_layers,
                      n_heads=n_heads, steps=n_steps if method == "ig" else None,
                      graddrop=None if dropped is None else dropped[order].float())


def _edge_matrix(W: _Weights, deltas: Tensor, receiver_grads: Tensor, acts: dict[str, Tensor],
                 grads: dict[str, Tensor], rows: slice, n_layers: int, n_heads: int, qk_fix: bool) -> Tensor:
    """``[sender, receiver]`` scores: ``delta . gradient``, with AtP*'s exact pattern for q/k inputs if ``qk_fix``."""
    matrix = deltas.flatten(1) @ receiver_grads.flatten(1).T
    if not qk_fix:
        return matrix
    send, recv = senders(n_layers, n_heads), receivers(n_layers, n_heads)
    column = {r: i for i, r in enumerate(recv)}
    for l in range(n_layers):
        feeding = [i for i, s in enumerate(send) if feeds(s, Node("head", l, 0))]
        q_scores, k_scores = _qk_fixed(W, l, deltas[feeding], acts, grads, rows)
        for h in range(n_heads):
            matrix[feeding, column[(Node("head", l, h), "q")]] = q_scores[:, h]
            matrix[feeding, column[(Node("head", l, h), "k")]] = k_scores[:, h]
    return matrix


def _graddrop(probe: GPT2Probe, prep, W: _Weights, deltas: Tensor, grad_names: list[str], keep: list[str],
              batch_size: int) -> Tensor:
    """Sum over layers ``l`` of ``|edge matrix|`` with layer ``l``'s residual reads stop-gradiented."""
    from .attribution_patching import graddrop_runs

    n_layers, n_heads = probe.cfg.n_layers, probe.cfg.n_heads
    total = None
    for rows, run in graddrop_runs(probe, prep, grad_names, keep, batch_size):
        grads = _receiver_grads(W, run.acts, run.grads, rows, n_layers)
        matrix = _edge_matrix(W, deltas, grads, run.acts, run.grads, rows, n_layers, n_heads, True).abs()
        total = matrix if total is None else total + matrix
    if total is None:  # one run per layer, and atp* needs at least 2 layers
        raise InvalidArgumentError("GradDrop needs layers to drop; this model has none")
    return total


def _interpolate(alphas: list[float], source: Tensor, n_batch: int) -> Edit:
    """Copy ``c``'s token embeddings moved a fraction ``alphas[c]`` of the way to ``source``'s."""

    def edit(activation: Tensor, point) -> Tensor:
        out = activation.clone()
        for c, alpha in enumerate(alphas):
            rows = copy_rows(c, n_batch)
            out[rows] = activation[rows] + alpha * (source.to(activation) - activation[rows])
        return out

    return edit
