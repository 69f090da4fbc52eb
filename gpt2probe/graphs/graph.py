"""The attribution graph: nodes, the adjacency matrix of direct effects, and each target's constant.

Nodes are ordered as circuit-tracer orders them: active features (by layer, position,
feature), then error nodes (layer-major: ``layer * n_pos + pos``), then token embeddings (one
per position), then logits (most likely first). ``adjacency[target, source]`` is the direct
linear effect of ``source`` on ``target``'s pre-activation (features) or demeaned logit, in
the local replacement model. For every feature and logit node::

    adjacency[i].sum() + constant[i] + unselected_input[i] == node_values[i]

``constant`` holds what no node explains (transcoder and attention biases, LayerNorm biases,
position embeddings); ``unselected_input`` the effect of active features left out of the
graph (by ``max_feature_nodes``, or by pruning before a save), zero otherwise.
``node_values`` are pre-activations for features and demeaned logits
(``logit - mean(logits)``) for logits; for error and token nodes, which have no inputs, the
norm of the vector they write (for display only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jaxtyping import Float, Int
from torch import Tensor

from ..errors import InvalidArgumentError, LayerIndexError, PositionError, ShapeError
from ..validate import index_below
from . import influence as I
from .files import read_graph_fields, save_graph


@dataclass(frozen=True, repr=False)
class AttributionGraph:
    """One prompt's attribution graph (build it with :func:`gpt2probe.attribution_graph`)."""

    model_name: str
    tokens: list[int]
    str_tokens: list[str]
    n_layers: int
    d_transcoder: int
    features: Int[Tensor, "n_features 3"]  # (layer, position, feature index)
    activations: Float[Tensor, " n_features"]
    logit_tokens: list[int]
    logit_str_tokens: list[str]
    logit_probabilities: Float[Tensor, " n_logits"]
    adjacency: Float[Tensor, "node node"]
    node_values: Float[Tensor, " node"]
    constant: Float[Tensor, " node"]
    unselected_input: Float[Tensor, " node"]
    n_active_features: int

    def __post_init__(self) -> None:
        n = self.n_nodes
        if self.features.ndim != 2 or self.features.shape[1] != 3:
            raise ShapeError(f"features has shape {tuple(self.features.shape)}; expected [n_features, 3] (layer, position, feature)")
        if self.activations.shape != (self.n_features,):
            raise ShapeError(f"activations has shape {tuple(self.activations.shape)}; expected ({self.n_features},)")
        if len(self.str_tokens) != self.n_pos:
            raise ShapeError(f"{len(self.str_tokens)} token strings for {self.n_pos} tokens")
        if len(self.logit_str_tokens) != self.n_logits or self.logit_probabilities.shape != (self.n_logits,):
            raise ShapeError(f"{self.n_logits} logit tokens but {len(self.logit_str_tokens)} strings and probabilities of shape "
                             f"{tuple(self.logit_probabilities.shape)}")
        if self.adjacency.shape != (n, n):
            raise ShapeError(f"adjacency has shape {tuple(self.adjacency.shape)}; with these nodes it must be ({n}, {n})")
        for name in ("node_values", "constant", "unselected_input"):
            if getattr(self, name).shape != (n,):
                raise ShapeError(f"{name} has shape {tuple(getattr(self, name).shape)}; expected ({n},)")

    # -- sizes and node slices -------------------------------------------------------
    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return self.features.shape[0]

    @property
    def n_logits(self) -> int:
        return len(self.logit_tokens)

    @property
    def n_nodes(self) -> int:
        return self.n_features + (self.n_layers + 1) * self.n_pos + self.n_logits

    @property
    def error_slice(self) -> slice:
        return slice(self.n_features, self.n_features + self.n_layers * self.n_pos)

    @property
    def token_slice(self) -> slice:
        start = self.n_features + self.n_layers * self.n_pos
        return slice(start, start + self.n_pos)

    @property
    def logit_slice(self) -> slice:
        return slice(self.n_nodes - self.n_logits, self.n_nodes)

    def feature_node(self, layer: int, pos: int, feature: int) -> int:
        """The node index of a feature, or an error naming it if it is not in the graph."""
        hits = ((self.features[:, 0] == layer) & (self.features[:, 1] == pos) & (self.features[:, 2] == feature)).nonzero()
        if len(hits) == 0:
            raise InvalidArgumentError(f"feature {feature} of layer {layer} at position {pos} is not a node of this graph "
                                       "(inactive on this prompt, or left out by max_feature_nodes)")
        return int(hits[0, 0])

    def error_node(self, layer: int, pos: int) -> int:
        """The node index of layer ``layer``'s error node at position ``pos``."""
        # node indices are sums of offsets: -1 or n_pos would silently name a neighbouring node
        layer = index_below("layer", layer, self.n_layers, LayerIndexError)
        return self.error_slice.start + layer * self.n_pos + index_below("position", pos, self.n_pos, PositionError)

    def token_node(self, pos: int) -> int:
        """The node index of the token embedding at position ``pos``."""
        return self.token_slice.start + index_below("position", pos, self.n_pos, PositionError)

    def logit_node(self, token: int) -> int:
        if token not in self.logit_tokens:
            raise InvalidArgumentError(f"token {token} is not a logit node; the logit nodes are {self.logit_tokens}")
        return self.logit_slice.start + self.logit_tokens.index(token)

    def describe(self, node: int) -> str:
        """A short label: ``"L3 f17 @5"``, ``"err L3 @5"``, ``"emb ' cat' @5"``, ``"logit ' mat'"``."""
        node = index_below("node", node, self.n_nodes)
        if node < self.n_features:
            layer, pos, feat = self.features[node].tolist()
            return f"L{layer} f{feat} @{pos}"
        if node < self.error_slice.stop:
            layer, pos = divmod(node - self.n_features, self.n_pos)
            return f"err L{layer} @{pos}"
        if node < self.token_slice.stop:
            pos = node - self.token_slice.start
            return f"emb {self.str_tokens[pos]!r} @{pos}"
        return f"logit {self.logit_str_tokens[node - self.logit_slice.start]!r}"

    # -- scores and pruning ----------------------------------------------------------
    def replacement_score(self) -> float:
        """Share of the tokens' and errors' influence on the logits that starts at tokens (circuit-tracer's)."""
        return I.scores(self.adjacency, self.logit_probabilities, self.error_slice, self.token_slice)[0]

    def completeness_score(self) -> float:
        """Influence-weighted share of the nodes' inputs that does not come from error nodes (circuit-tracer's)."""
        return I.scores(self.adjacency, self.logit_probabilities, self.error_slice, self.token_slice)[1]

    def node_influence(self) -> Float[Tensor, " node"]:
        """Each node's total influence on the logits (weighted by their probabilities)."""
        return I.influence(I.normalized(self.adjacency), I.logit_weights(self.n_nodes, self.logit_probabilities))

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> I.PruneResult:
        """The nodes and edges that carry ``node_threshold`` / ``edge_threshold`` of the influence on the logits."""
        return I.prune(self.adjacency, self.logit_probabilities, n_features=self.n_features, n_tokens=self.n_pos,
                       node_threshold=node_threshold, edge_threshold=edge_threshold)

    # -- files -----------------------------------------------------------------------
    def save(self, path: str | Path, *, node_threshold: float | None = None, edge_threshold: float | None = None,
             slug: str | None = None, supernodes: list[list[str]] | None = None) -> Path:
        """Write the graph as circuit-tracer's / Neuronpedia's graph JSON (see :mod:`gpt2probe.graphs.files`).

        Without thresholds every node and every non-zero edge is written; with them, only what
        :meth:`prune` keeps (as circuit-tracer's ``create_graph_files`` writes, with 0.8 and 0.98).
        ``supernodes`` (``[[name, node_id, ...], ...]``) are written to ``qParams.supernodes``, where
        Neuronpedia and the offline viewer read groups of nodes.
        """
        return save_graph(self, path, node_threshold=node_threshold, edge_threshold=edge_threshold, slug=slug,
                          supernodes=supernodes)

    @classmethod
    def load(cls, path: str | Path) -> AttributionGraph:
        """Read a graph written by :meth:`save`."""
        return cls(**read_graph_fields(path))

    def __repr__(self) -> str:
        return (f"AttributionGraph({self.model_name!r}, {self.n_pos} tokens, {self.n_features} of {self.n_active_features} "
                f"active features, {self.n_logits} logits, {int((self.adjacency != 0).sum())} edges)")
