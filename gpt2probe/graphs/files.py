"""Attribution graphs as JSON in the node/link format of circuit-tracer's frontend and Neuronpedia.

The file is ``{"metadata", "qParams", "nodes", "links"}`` with circuit-tracer's node fields
(``node_id``, ``feature``, ``layer``, ``ctx_idx``, ``feature_type``, ``jsNodeId``, ``influence``,
``activation``, ``token_prob``...) and links ``{"source", "target", "weight"}``. Node ids follow
circuit-tracer (``"{layer}_{feature}_{pos}"``, ``"E_{token}_{pos}"``, ``"{n_layers + 1}_{token}_{pos}"``)
except error nodes: circuit-tracer names them ``"0_{layer}_{pos}"``, which is also the id of
layer 0's feature ``layer`` at that position; here they are ``"err_{layer}_{pos}"`` (the
frontend only uses ids as keys).

``metadata["gpt2probe"]`` carries what gpt2probe needs to read the graph back exactly: token
ids, sizes, and per node its value, constant and the input from nodes or edges the file
leaves out, so ``edges in + constant + left-out input == value`` holds for a loaded graph too.
This module reads and writes plain values: it never imports the graph class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_text_atomic
from ..errors import FileFormatError, MissingFileError
from ..versions import __version__

FORMAT = "gpt2probe.attribution_graph/1"


def _node_entries(graph: Any, influence: torch.Tensor) -> list[dict]:
    """One circuit-tracer node dict per node of ``graph``, in node order."""
    entries = []
    n_pos, n_layers = graph.n_pos, graph.n_layers
    for i in range(graph.n_nodes):
        base = {"run_idx": 0, "reverse_ctx_idx": 0, "clerp": "", "token_prob": 0.0, "is_target_logit": False,
                "influence": float(influence[i]), "activation": None}
        if i < graph.n_features:
            layer, pos, feat = graph.features[i].tolist()
            base.update(node_id=f"{layer}_{feat}_{pos}", feature=feat, layer=str(layer), ctx_idx=pos,
                        feature_type="cross layer transcoder", jsNodeId=f"{layer}_{feat}-0", activation=float(graph.activations[i]))
        elif i < graph.error_slice.stop:
            layer, pos = divmod(i - graph.n_features, n_pos)
            base.update(node_id=f"err_{layer}_{pos}", feature=-1, layer=str(layer), ctx_idx=pos,
                        feature_type="mlp reconstruction error", jsNodeId=f"{layer}_{pos}-0")
        elif i < graph.token_slice.stop:
            pos = i - graph.token_slice.start
            tok = graph.tokens[pos]
            base.update(node_id=f"E_{tok}_{pos}", feature=pos, layer="E", ctx_idx=pos, feature_type="embedding",
                        jsNodeId=f"E_{tok}-{pos}")
        else:
            j = i - graph.logit_slice.start
            tok, prob = graph.logit_tokens[j], float(graph.logit_probabilities[j])
            base.update(node_id=f"{n_layers + 1}_{tok}_{n_pos - 1}", feature=tok, layer=str(n_layers + 1), ctx_idx=n_pos - 1,
                        feature_type="logit", jsNodeId=f"L_{tok}-{n_pos - 1}", token_prob=prob, is_target_logit=j == 0,
                        clerp=f"Output {graph.logit_str_tokens[j]!r} (p={prob:.3f})")
        entries.append(base)
    return entries


def graph_json(graph: Any, *, node_threshold: float | None, edge_threshold: float | None, slug: str | None,
               supernodes: list[list[str]] | None = None) -> dict:
    """The JSON document of ``graph`` (pruned when a threshold is given, see ``AttributionGraph.save``).

    ``supernodes`` go to ``qParams.supernodes`` as Neuronpedia writes them: ``[[name, node_id, ...], ...]``.
    """
    supernodes = check_supernodes(supernodes or [], "supernodes")
    adjacency = graph.adjacency
    if node_threshold is None and edge_threshold is None:
        node_mask = torch.ones(graph.n_nodes, dtype=torch.bool)
        edge_mask = adjacency != 0
        cumulative = graph.prune(1.0, 1.0).cumulative_scores
    else:
        pruned = graph.prune(1.0 if node_threshold is None else node_threshold, 1.0 if edge_threshold is None else edge_threshold)
        node_mask, cumulative = pruned.node_mask, pruned.cumulative_scores
        edge_mask = pruned.edge_mask & (adjacency != 0)
    edge_mask = edge_mask & node_mask[:, None] & node_mask[None, :]
    entries = _node_entries(graph, cumulative)
    kept = node_mask.nonzero(as_tuple=True)[0].tolist()
    targets, sources = edge_mask.nonzero(as_tuple=True)
    weights = adjacency[targets, sources].tolist()
    links = [{"source": entries[s]["node_id"], "target": entries[t]["node_id"], "weight": w}
             for t, s, w in zip(targets.tolist(), sources.tolist(), weights)]
    left_out = graph.unselected_input + (adjacency * ~edge_mask).sum(dim=1)
    per_node = {entries[i]["node_id"]: [float(graph.node_values[i]), float(graph.constant[i]), float(left_out[i])] for i in kept}
    return {
        "metadata": {
            "slug": slug or "gpt2probe-graph",
            "scan": graph.model_name,
            "transcoder_list": [],
            "prompt_tokens": list(graph.str_tokens),
            "prompt": "".join(graph.str_tokens),
            "node_threshold": node_threshold,
            "gpt2probe": {
                "format": FORMAT,
                "version": __version__,
                "tokens": list(graph.tokens),
                "n_layers": graph.n_layers,
                "d_transcoder": graph.d_transcoder,
                "n_active_features": graph.n_active_features,
                "logit_str_tokens": list(graph.logit_str_tokens),
                "edge_threshold": edge_threshold,
                "node_value_constant_left_out": per_node,
            },
        },
        "qParams": {"pinnedIds": [], "supernodes": supernodes, "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": [entries[i] for i in kept],
        "links": links,
    }


def save_graph(graph: Any, path: str | Path, *, node_threshold: float | None, edge_threshold: float | None,
               slug: str | None, supernodes: list[list[str]] | None = None) -> Path:
    """Write ``graph_json(graph, ...)`` to ``path`` atomically."""
    document = graph_json(graph, node_threshold=node_threshold, edge_threshold=edge_threshold, slug=slug,
                          supernodes=supernodes)
    return write_text_atomic(path, json.dumps(document, allow_nan=False))


def check_supernodes(value: object, where: str) -> list[list[str]]:
    """``value`` if it is Neuronpedia's supernode list ``[[name, node_id, ...], ...]``, else a :class:`FileFormatError`."""
    ok = isinstance(value, list) and all(
        isinstance(group, list) and len(group) >= 2 and all(isinstance(x, str) for x in group) for group in value)
    if not ok:
        raise FileFormatError(f"{where} must be a list of [name, node_id, ...] lists of strings (Neuronpedia's "
                              f"qParams.supernodes), got {str(value)[:200]}")
    return [list(group) for group in value]  # type: ignore[union-attr]


def read_supernodes(path: str | Path) -> list[list[str]]:
    """The supernodes (``qParams.supernodes``) of a graph JSON file, as the viewer or Neuronpedia saves them."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no graph JSON file at {str(path)!r}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        groups = document["qParams"]["supernodes"]
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _fail(path, f"it is not valid JSON ({error})") from None
    except (KeyError, TypeError):
        raise _fail(path, "it has no qParams.supernodes") from None
    return check_supernodes(groups, f"{str(path)!r}'s qParams.supernodes")


def _fail(path: Path, what: str) -> FileFormatError:
    return FileFormatError(f"{str(path)!r} is not an attribution graph written by gpt2probe: {what}")


def read_graph_fields(path: str | Path) -> dict:
    """The constructor arguments of the graph saved at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no attribution graph file at {str(path)!r}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        meta = document["metadata"]["gpt2probe"]
        nodes, links = document["nodes"], document["links"]
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _fail(path, f"it is not valid JSON ({error})") from None
    except (KeyError, TypeError):
        raise _fail(path, "it has no metadata.gpt2probe, nodes and links") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(path, f"its format is {meta.get('format') if isinstance(meta, dict) else meta!r}, expected {FORMAT!r}")
    try:
        return _fields(document, meta, nodes, links)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise _fail(path, f"a node or link is malformed ({type(error).__name__}: {error})") from None


def _fields(document: dict, meta: dict, nodes: list, links: list) -> dict:
    tokens = [int(t) for t in meta["tokens"]]
    n_layers, n_pos = int(meta["n_layers"]), len(tokens)
    features = sorted((int(n["layer"]), int(n["ctx_idx"]), int(n["feature"]), float(n["activation"]), n["node_id"])
                      for n in nodes if n["feature_type"] == "cross layer transcoder")
    logits = [n for n in nodes if n["feature_type"] == "logit"]
    n_feat, n_logits = len(features), len(logits)
    n_nodes = n_feat + (n_layers + 1) * n_pos + n_logits
    index: dict[str, int] = {}
    for i, f in enumerate(features):
        index[f[4]] = i
    for layer in range(n_layers):
        for pos in range(n_pos):
            index[f"err_{layer}_{pos}"] = n_feat + layer * n_pos + pos
    for pos, tok in enumerate(tokens):
        index[f"E_{tok}_{pos}"] = n_feat + n_layers * n_pos + pos
    for j, n in enumerate(logits):
        index[n["node_id"]] = n_nodes - n_logits + j
    adjacency = torch.zeros((n_nodes, n_nodes), dtype=torch.float32)
    for link in links:
        adjacency[index[link["target"]], index[link["source"]]] = float(link["weight"])
    values, constant, left_out = (torch.zeros(n_nodes, dtype=torch.float32) for _ in range(3))
    for node_id, (value, const, rest) in meta["node_value_constant_left_out"].items():
        values[index[node_id]], constant[index[node_id]], left_out[index[node_id]] = value, const, rest
    prompt_tokens = document["metadata"]["prompt_tokens"]
    return {
        "model_name": document["metadata"]["scan"],
        "tokens": tokens,
        "str_tokens": list(prompt_tokens),
        "n_layers": n_layers,
        "d_transcoder": int(meta["d_transcoder"]),
        "features": torch.tensor([f[:3] for f in features], dtype=torch.long).reshape(n_feat, 3),
        "activations": torch.tensor([f[3] for f in features], dtype=torch.float32),
        "logit_tokens": [int(n["feature"]) for n in logits],
        "logit_str_tokens": list(meta["logit_str_tokens"]),
        "logit_probabilities": torch.tensor([float(n["token_prob"]) for n in logits], dtype=torch.float32),
        "adjacency": adjacency,
        "node_values": values,
        "constant": constant,
        "unselected_input": left_out,
        "n_active_features": int(meta["n_active_features"]),
    }
