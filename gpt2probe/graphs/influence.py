"""Influence on the logits through an attribution graph, the graph's two scores, and pruning.

Definitions follow circuit-tracer (Ameisen et al. 2025): each row of the adjacency matrix is
normalised to absolute values summing to one (the share of a target's direct input that each
source gives); a node's *influence* is the total, over every path to the logits, of the
products of these shares, weighted by the logits' probabilities, i.e. ``w @ (A + A^2 + ...)``.
The graph is acyclic (effects only run to later layers or to the logits), so the series ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..errors import GPT2ProbeError, InvalidArgumentError

MAX_ITER = 1000


def normalized(adjacency: Float[Tensor, "target source"]) -> Float[Tensor, "target source"]:
    """``|adjacency|`` with each row scaled to sum to one (rows without input stay zero)."""
    a = adjacency.abs()
    return a.div_(a.sum(dim=1, keepdim=True).clamp(min=1e-10))  # in place: one copy of the matrix, not two


def influence(a_norm: Float[Tensor, "target source"], weights: Float[Tensor, " target"]) -> Float[Tensor, " source"]:
    """``weights @ (A + A^2 + ...)``: total influence of each node on the weighted targets."""
    current = weights @ a_norm
    total = current.clone()
    for _ in range(MAX_ITER):
        if not bool(current.any()):
            return total
        current = current @ a_norm
        total += current
    raise GPT2ProbeError(f"influence did not converge in {MAX_ITER} steps: the adjacency matrix has a cycle "
                         "(not an attribution graph)")


def row_influence(rows: Float[Tensor, "row col"], row_node: Int[Tensor, " row"], logit_probs: Float[Tensor, " logit"],
                  n_cols: int) -> Float[Tensor, " col"]:
    """Influence on the logits from a partial graph, to choose which features to expand next.

    ``rows[i]`` is the row of node ``row_node[i]``: a column index, or ``n_cols + j`` for logit ``j``.
    """
    a_norm = normalized(rows)
    node_weight = torch.zeros(n_cols + len(logit_probs))
    node_weight[n_cols:] = logit_probs
    current = node_weight[row_node]
    total = torch.zeros(n_cols)
    for _ in range(MAX_ITER):
        contribution = current @ a_norm
        if not bool(contribution.any()):
            return total
        total += contribution
        padded = torch.cat([contribution, torch.zeros(len(logit_probs))])
        current = padded[row_node]
    raise GPT2ProbeError(f"influence did not converge in {MAX_ITER} steps: the partial graph has a cycle")


def logit_weights(n_nodes: int, logit_probs: Float[Tensor, " logit"]) -> Float[Tensor, " node"]:
    """Each node's weight as a target: the logits' probabilities, zero elsewhere (logits are the last nodes)."""
    weights = torch.zeros(n_nodes)
    weights[n_nodes - len(logit_probs):] = logit_probs
    return weights


def scores(adjacency: Tensor, logit_probs: Tensor, error_slice: slice, token_slice: slice) -> tuple[float, float]:
    """``(replacement_score, completeness_score)`` as circuit-tracer's ``compute_graph_scores`` defines them.

    Replacement: of the influence on the logits that starts at the tokens or at error nodes,
    the share that starts at tokens (and so runs through features alone). Completeness: over
    all nodes weighted by their influence on the output (logits counted by their probability),
    the share of their normalised input that does not come straight from an error node.
    """
    a_norm = normalized(adjacency)
    weights = logit_weights(adjacency.shape[0], logit_probs)
    node_influence = influence(a_norm, weights)
    token_inf = node_influence[token_slice].sum()
    error_inf = node_influence[error_slice].sum()
    replacement = token_inf / (token_inf + error_inf)
    non_error = 1 - a_norm[:, error_slice].sum(dim=-1)
    output_inf = node_influence + weights
    completeness = (non_error * output_inf).sum() / output_inf.sum()
    return float(replacement), float(completeness)


@dataclass(frozen=True)
class PruneResult:
    """Which nodes and edges a pruned graph keeps, and each node's cumulative influence share.

    ``cumulative_scores[i]`` is the share of all influence held by node ``i`` and every node more
    influential than it (so the most influential node has the smallest score).
    """

    node_mask: Bool[Tensor, " node"]
    edge_mask: Bool[Tensor, "target source"]
    cumulative_scores: Float[Tensor, " node"]


def _threshold(scores_: Tensor, keep: float) -> Tensor:
    """The score above which the highest scores hold the fraction ``keep`` of the total."""
    ordered = torch.sort(scores_, descending=True).values
    cumulative = torch.cumsum(ordered, 0) / ordered.sum().clamp(min=1e-30)
    index = min(int(torch.searchsorted(cumulative, torch.tensor(keep))), len(ordered) - 1)
    return ordered[index]


def prune(adjacency: Tensor, logit_probs: Tensor, *, n_features: int, n_tokens: int, node_threshold: float,
          edge_threshold: float) -> PruneResult:
    """Prune by cumulative influence on the logits, as circuit-tracer's ``prune_graph``.

    Keep the nodes holding ``node_threshold`` of the influence on the logits, then the edges holding
    ``edge_threshold`` of the influence among them; tokens and logits are always kept, and feature
    and error nodes left without outgoing edges (features: or incoming ones) are dropped, repeatedly.
    """
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
    n_nodes, n_logits = adjacency.shape[0], len(logit_probs)
    weights = logit_weights(n_nodes, logit_probs)
    node_influence = influence(normalized(adjacency), weights)
    node_mask = node_influence >= _threshold(node_influence, node_threshold)
    fixed = n_nodes - n_logits - n_tokens  # features and errors; tokens and logits after them
    node_mask[fixed:] = True
    pruned = adjacency.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    a_norm = normalized(pruned)
    edge_influence = influence(a_norm, weights) + weights
    edge_scores = a_norm * edge_influence[:, None]
    edge_mask = edge_scores >= _threshold(edge_scores.flatten(), edge_threshold)
    edge_mask &= edge_scores > 0
    while True:
        before = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[:fixed] &= edge_mask[:, :fixed].any(0)
        node_mask[:n_features] &= edge_mask[:n_features].any(1)
        if bool((node_mask == before).all()):
            break
    order = torch.argsort(node_influence, descending=True, stable=True)
    cumulative = torch.cumsum(node_influence[order], 0) / node_influence.sum().clamp(min=1e-30)
    cumulative_scores = torch.empty_like(node_influence)
    cumulative_scores[order] = cumulative
    return PruneResult(node_mask, edge_mask, cumulative_scores)
