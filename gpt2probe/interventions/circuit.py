"""Circuits (sets of edges) and their faithfulness, measured by running the model exactly.

:func:`faithfulness` runs the *clean* prompt with every edge outside the circuit carrying
its corrupted value (path patching of edges). Each receiver's input is built as

    input(r) = corrupted input(r) + sum over in-circuit edges s -> r of (s(this run) - s(corrupted))

where ``s(this run)`` is what sender ``s`` writes in this same forward pass (its own inputs
already built this way), so clean information reaches the logits only along circuit
edges. With every edge in the circuit this is the clean run; with none, the corrupted run.
Each head's queries, keys and values are recomputed from their own input (LayerNorm
included); the MLP's and the unembedding's inputs go through their LayerNorm as usual.
The result is the fraction of the clean-minus-corrupted metric the circuit recovers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import names as N
from .. import validate
from ..errors import InvalidArgumentError, InvalidTypeError
from ..model.hooks import HookFn, HookPoint
from ..model.layernorm import LayerNorm
from ..probe import GPT2Probe, Inputs
from .attribution_patching import prepare
from .edges import EdgeScores
from .graph import EMBED, LOGITS, Edge, Node, all_edges
from .patching import Metric, Token, _scalar


@dataclass(frozen=True)
class Circuit:
    """A set of edges, with the scores they were chosen by (if any)."""

    edges: frozenset[Edge]
    scores: tuple[tuple[Edge, float], ...] = ()

    @property
    def nodes(self) -> list[Node]:
        """Every sender and receiver on an edge, sorted left to right."""
        return sorted({n for e in self.edges for n in (e.sender, e.receiver)}, key=lambda n: (n.column, n.head))

    def __len__(self) -> int:
        return len(self.edges)

    def __contains__(self, edge: object) -> bool:
        return (Edge.parse(edge) if isinstance(edge, str) else edge) in self.edges


def circuit(edges: EdgeScores | Iterable[Edge | str], top: int | None = None) -> Circuit:
    """The ``top`` highest-ranked edges of ``edges`` (all of them when ``top`` is None), or the edges given."""
    if isinstance(edges, EdgeScores):
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 0):
            raise InvalidArgumentError(f"top must be a non-negative integer, got {top!r}")
        kept = edges.top(len(edges) if top is None else top)
        return Circuit(frozenset(e for e, _ in kept), tuple(kept))
    if top is not None:
        raise InvalidArgumentError("top=... selects from scored edges (an EdgeScores); pass the edges themselves otherwise")
    return Circuit(edge_set(edges))


def edge_set(edges: object) -> frozenset[Edge]:
    """Edges given as :class:`Edge` objects or strings such as ``"L0H0 -> L1H0.k"``, as a set; anything else is refused."""
    if isinstance(edges, str | bytes) or not isinstance(edges, Iterable):
        raise InvalidTypeError(
            f"a circuit is a Circuit or a list of edges (Edge objects or strings such as 'L0H0 -> L1H0.k'), "
            f"got {type(edges).__name__} {edges!r}"
        )
    out = set()
    for i, e in enumerate(edges):
        if isinstance(e, str):
            e = Edge.parse(e)
        elif not isinstance(e, Edge):
            raise InvalidTypeError(f"edge {i} is {type(e).__name__} {e!r}; an edge is an Edge or a string such as 'L0H0 -> L1H0.k'")
        out.add(e)
    return frozenset(out)


def circuit_of_nodes(nodes: Iterable[Node | str], n_layers: int, n_heads: int) -> Circuit:
    """Every edge of the graph between the given nodes (``embed`` and ``logits`` included when listed)."""
    validate.integer("n_layers", n_layers, minimum=1)
    validate.integer("n_heads", n_heads, minimum=1)
    if isinstance(nodes, str | bytes) or not isinstance(nodes, Iterable):
        raise InvalidTypeError(f"nodes must be a list of nodes such as ['L0H0', 'logits'], got {type(nodes).__name__}")
    keep = {Node.parse(n) if isinstance(n, str) else n for n in nodes}
    return Circuit(frozenset(e for e in all_edges(n_layers, n_heads) if e.sender in keep and e.receiver in keep))


@dataclass(frozen=True)
class FaithfulnessResult:
    """``recovered = (circuit_metric - corrupted_metric) / (clean_metric - corrupted_metric)``."""

    recovered: float
    circuit_metric: float
    clean_metric: float
    corrupted_metric: float
    n_edges: int
    total_edges: int


@torch.no_grad()
def faithfulness(
    probe: GPT2Probe,
    circuit: Circuit | Iterable[Edge | str],
    clean: Inputs,
    corrupted: Inputs,
    *,
    metric: Metric | None = None,
    answer: Token | Sequence[Token] | None = None,
    wrong: Token | Sequence[Token] | None = None,
    prepend_bos: bool = False,
) -> FaithfulnessResult:
    """Run the clean prompt with everything outside ``circuit`` patched to the corrupted run (module docstring)."""
    if not isinstance(circuit, Circuit):
        circuit = Circuit(edge_set(circuit))
    prep = prepare(probe, clean, corrupted, metric=metric, answer=answer, wrong=wrong, direction="denoise",
                   prepend_bos=prepend_bos)
    n_layers, n_heads = probe.cfg.n_layers, probe.cfg.n_heads
    graph = all_edges(n_layers, n_heads)
    unknown = sorted(circuit.edges - set(graph))
    if unknown:
        raise InvalidArgumentError(
            f"{len(unknown)} circuit edge(s) are not in this {n_layers}-layer, {n_heads}-head graph, e.g. {unknown[0]}; "
            "an edge goes from embed, L<l>H<h> or MLP<l> to a later L<l>H<h>.q/k/v, MLP<l> or logits")

    names = [N.EMBED] + [n for l in range(n_layers) for n in (N.z(l), N.mlp_out(l), N.resid_pre(l), N.resid_mid(l),
                                                                N.q(l), N.k(l), N.v(l))]
    names.append(N.resid_post(n_layers - 1))
    logits, cache = probe.run_with_cache(prep.corrupted, names=names)
    corrupted_metric = _scalar(prep.metric(logits))
    clean_metric = _scalar(prep.metric(probe(prep.clean)))
    if clean_metric == corrupted_metric:
        raise InvalidArgumentError(
            f"the clean and corrupted runs give the same metric value ({clean_metric}), so the recovered fraction is undefined")
    corr = dict(cache)
    W_Q, W_K, W_V, W_O = probe.weights.W_Q, probe.weights.W_K, probe.weights.W_V, probe.weights.W_O
    biases = {"q": probe.weights.b_Q, "k": probe.weights.b_K, "v": probe.weights.b_V}
    weights = {"q": W_Q, "k": W_K, "v": W_V}
    ln1 = [probe.weights.block(l).ln1 for l in range(n_layers)]

    incoming: dict[tuple[Node, str], list[Node]] = {}
    for e in circuit.edges:
        incoming.setdefault((e.receiver, e.input), []).append(e.sender)
    sent: dict[Node, Tensor] = {}  # sender -> (this run - corrupted run) of its write

    def delta_in(receiver: Node, which: str = "") -> Tensor | None:
        terms = [sent[s] for s in incoming.get((receiver, which), ()) if s in sent]
        return sum(terms[1:], terms[0]) if terms else None

    def on_embed(activation: Tensor, point: HookPoint) -> None:
        sent[EMBED] = activation - corr[N.EMBED]

    # Each hook is made for its block's layer (a HookPoint's layer is Optional: the embeddings have none).
    def on_z(layer: int) -> HookFn:
        def hook(activation: Tensor, point: HookPoint) -> None:
            dz = activation - corr[N.z(layer)]
            for h in range(n_heads):
                sent[Node("head", layer, h)] = dz[:, :, h] @ W_O[layer, h]

        return hook

    def on_mlp_out(layer: int) -> HookFn:
        def hook(activation: Tensor, point: HookPoint) -> None:
            sent[Node("mlp", layer)] = activation - corr[N.mlp_out(layer)]

        return hook

    def on_qkv(which: str, layer: int) -> HookFn:
        def hook(activation: Tensor, point: HookPoint) -> Tensor:
            ln = ln1[layer]
            out = corr[getattr(N, which)(layer)].clone()
            for h in range(n_heads):
                delta = delta_in(Node("head", layer, h), which)
                if delta is not None:
                    x = ln(corr[N.resid_pre(layer)] + delta)
                    out[:, :, h] = x @ weights[which][layer, h] + biases[which][layer, h]
            return out

        return hook

    def on_normalized(receiver: Node, resid: str, ln: LayerNorm) -> HookFn:
        def hook(activation: Tensor, point: HookPoint) -> Tensor:
            delta = delta_in(receiver)
            x = corr[resid] if delta is None else corr[resid] + delta
            return ln.normalize(x)

        return hook

    hooks: list[tuple[str, HookFn]] = [(N.EMBED, on_embed)]
    for l in range(n_layers):
        hooks += [(N.q(l), on_qkv("q", l)), (N.k(l), on_qkv("k", l)), (N.v(l), on_qkv("v", l)), (N.z(l), on_z(l)),
                  (N.ln_normalized(l, 2), on_normalized(Node("mlp", l), N.resid_mid(l), probe.weights.block(l).ln2)),
                  (N.mlp_out(l), on_mlp_out(l))]
    hooks.append((N.LN_FINAL_NORMALIZED,
                  on_normalized(LOGITS, N.resid_post(n_layers - 1), probe.weights.ln_final)))
    circuit_metric = _scalar(prep.metric(probe.run_with_hooks(prep.clean, hooks)))
    return FaithfulnessResult(
        recovered=(circuit_metric - corrupted_metric) / (clean_metric - corrupted_metric),
        circuit_metric=circuit_metric, clean_metric=clean_metric, corrupted_metric=corrupted_metric,
        n_edges=len(circuit), total_edges=len(graph))
