"""Top activating contexts of a graph's features, for the viewer's panel: from a harvest, or computed over texts.

Both sources give the same plain structure, ready for JSON: ``{"L_F": [context, ...]}`` keyed by
layer and feature index, each context ``{"value", "tokens", "acts", "center"}`` (the feature's
value at the context's own token, the context's token strings, the value at every token, and
the index of the own token), best first.

* :func:`contexts_from_texts` runs the model over texts and encodes each layer's MLP input with
  the transcoder: values are activations, exactly as the graph's.
* :func:`contexts_from_harvest` reads a harvest, per layer, either of the transcoders' features
  (``gpt2probe harvest --sae``: values are activations, exactly as the graph's; the harvested
  coder's digest must be the transcoder's) or of their encoder directions on
  ``blocks.L.ln2.hook_normalized`` (``gpt2probe harvest --directions`` with ``W_enc.T``): that
  harvest stores projections ``x . W_enc[:, f]``, so values are pre-activations
  (projection + ``b_enc[f]``), whose order is the activation's for ReLU and JumpReLU. The
  directions are checked against the encoder; a harvest of other directions is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .. import names as N
from ..errors import InvalidArgumentError, InvalidTypeError, LayerIndexError
from ..validate import index_below, integer
from .transcoders import Probe, Transcoders, check_transcoders

Contexts = dict[str, list[dict]]


def _by_layer(features: Sequence[tuple[int, int]], tcs: list, *, k: object) -> dict[int, list[int]]:
    """``{layer: [feature, ...]}``, every pair checked against the transcoders.

    Features index columns of ``W_enc``: a negative index would silently show another
    feature's contexts (``-1`` is the last one) under the asked feature's key.
    """
    integer("k (contexts per feature)", k, minimum=1)
    if isinstance(features, (str, bytes)) or not isinstance(features, Iterable):
        raise InvalidTypeError(f"features must be a list of (layer, feature) pairs, got {type(features).__name__}")
    out: dict[int, list[int]] = {}
    pairs = set()
    for pair in features:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidTypeError(f"features must be (layer, feature) pairs of integers, got {pair!r}")
        layer = index_below(f"the layer of feature pair {tuple(pair)!r},", pair[0], len(tcs), LayerIndexError)
        d_sae = int(tcs[layer].W_enc.shape[1])
        pairs.add((layer, index_below(f"transcoder {layer}'s feature", pair[1], d_sae)))
    for layer, feature in sorted(pairs):
        out.setdefault(layer, []).append(feature)
    return out


def contexts_from_texts(probe: Probe, transcoders: Transcoders, texts: Sequence[str], features: Sequence[tuple[int, int]],
                        *, k: int = 5, window: int = 8) -> Contexts:
    """Each feature's ``k`` highest activations over ``texts`` (only where it is active), with ``window`` tokens either side.

    Args:
        features: ``(layer, feature)`` pairs.
    """
    cfg = probe.cfg
    tcs = check_transcoders(transcoders, n_layers=cfg.n_layers, d_model=cfg.d_model, dtype=cfg.dtype, device=cfg.device)
    wanted = _by_layer(features, tcs, k=k)
    integer("window (tokens either side)", window, minimum=0)
    names = [N.ln_normalized(layer, 2) for layer in wanted]
    # best[layer]: values, text index and position, [n_features, k], descending
    best = {layer: (torch.full((len(f), k), -torch.inf), torch.full((len(f), k), -1, dtype=torch.long),
                    torch.full((len(f), k), -1, dtype=torch.long)) for layer, f in wanted.items()}
    per_text_acts: dict[int, dict[int, torch.Tensor]] = {}
    for t, text in enumerate(texts):
        _, cache = probe.run_with_cache(text, names=names)
        per_text_acts[t] = {}
        for layer, feats in wanted.items():
            with torch.no_grad():
                acts = tcs[layer].encode(cache[N.ln_normalized(layer, 2)][0])[:, feats].float().cpu()  # [pos, f]
            per_text_acts[t][layer] = acts
            values, where, pos = best[layer]
            n_pos = acts.shape[0]
            cand_v = torch.cat([values, acts.T], dim=1)
            cand_t = torch.cat([where, torch.full((len(feats), n_pos), t)], dim=1)
            cand_p = torch.cat([pos, torch.arange(n_pos).expand(len(feats), n_pos)], dim=1)
            top = torch.topk(cand_v, k, dim=1)
            best[layer] = (top.values, cand_t.gather(1, top.indices), cand_p.gather(1, top.indices))
    out: Contexts = {}
    for layer, feats in wanted.items():
        values, where, pos = best[layer]
        for i, feature in enumerate(feats):
            found = []
            for j in range(k):
                value = float(values[i, j])
                if not value > 0:  # inactive (or never seen): not an activating context
                    break
                t, p = int(where[i, j]), int(pos[i, j])
                ids = probe.as_tokens(texts[t]).ids[0]
                lo, hi = max(0, p - window), min(len(ids), p + window + 1)
                found.append({"value": value, "tokens": probe.to_str_tokens(ids[lo:hi]),
                              "acts": per_text_acts[t][layer][lo:hi, i].tolist(), "center": p - lo})
            out[f"{layer}_{feature}"] = found
    return out


def contexts_from_harvest(probe: Probe, transcoders: Transcoders, directory: str | os.PathLike,
                          features: Sequence[tuple[int, int]], *, k: int = 5) -> tuple[Contexts, list[str]]:
    """``(contexts, notes)`` from a harvest of the transcoders' features or encoder directions (see the module docstring).

    Raises:
        InvalidArgumentError: the harvest holds none of the layers' features or encoder directions,
            or holds features of another coder than transcoder ``L``, or directions on
            ``blocks.L.ln2.hook_normalized`` that are not transcoder ``L``'s encoder.
    """
    from ..harvest import Harvest
    from ..harvest.units import coder_digest, feature_name

    cfg = probe.cfg
    tcs = check_transcoders(transcoders, n_layers=cfg.n_layers, d_model=cfg.d_model, dtype=cfg.dtype, device=cfg.device)
    wanted = _by_layer(features, tcs, k=k)
    harvest = Harvest.load(directory)
    out: Contexts = {}
    missing, from_features, from_directions = [], [], []
    for layer, feats in wanted.items():
        hook = N.ln_normalized(layer, 2)
        features_hook = feature_name(hook)
        if features_hook in harvest.hooks:  # the transcoder's own activations: the graph's values
            entry = next(h for h in harvest.manifest["hooks"] if h["name"] == features_hook).get("coder")
            if not isinstance(entry, dict) or entry.get("sha256") != coder_digest(tcs[layer]):
                raise InvalidArgumentError(
                    f"the harvest in {str(Path(directory))!r} holds the features of another coder on {hook!r} than "
                    f"transcoder {layer} (weights or settings differ): harvest these transcoders (harvest --sae)")
            for feature in feats:
                out[f"{layer}_{feature}"] = [
                    {"value": e.value, "tokens": probe.to_str_tokens(e.tokens), "acts": list(e.acts), "center": e.center}
                    for e in harvest.top_examples(features_hook, feature)[:k] if e.value > 0]
            from_features.append(layer)
            continue
        if hook not in harvest.hooks:
            missing.append(layer)
            continue
        directions = harvest.directions(hook)
        encoder = tcs[layer].W_enc.detach().T.float().cpu()
        if directions is None or directions.shape != encoder.shape or not torch.allclose(
                directions.float(), encoder, rtol=1e-4, atol=1e-6):
            got = "no directions" if directions is None else f"directions of shape {tuple(directions.shape)}"
            raise InvalidArgumentError(
                f"the harvest in {str(Path(directory))!r} holds {got} on {hook!r}, not transcoder {layer}'s encoder "
                f"(W_enc.T, {tuple(encoder.shape)}): harvest the transcoders' features (harvest --sae), or "
                "--directions holding each transcoder's W_enc.T")
        b_enc = tcs[layer].b_enc.detach().float().cpu()
        for feature in feats:
            bias = float(b_enc[feature])
            out[f"{layer}_{feature}"] = [
                {"value": e.value + bias, "tokens": probe.to_str_tokens(e.tokens), "acts": [a + bias for a in e.acts],
                 "center": e.center}
                for e in harvest.top_examples(hook, feature)[:k]]
        from_directions.append(layer)
    if missing and len(missing) == len(wanted):
        raise InvalidArgumentError(
            f"the harvest in {str(Path(directory))!r} has none of {[N.ln_normalized(la, 2) for la in missing]}: "
            "harvest the transcoders' features (harvest --sae) or their encoder directions (W_enc.T) on "
            "blocks.L.ln2.hook_normalized")
    notes = []
    if from_features:
        notes.append(f"Feature contexts of layer(s) {from_features} come from the harvest in {Path(directory)}: "
                     "values are the transcoders' activations.")
    if from_directions:
        notes.append(f"Feature contexts of layer(s) {from_directions} come from the harvest in {Path(directory)}: "
                     "values are pre-activations (x . W_enc[:, f] + b_enc[f]).")
    if missing:
        notes.append(f"The harvest has neither features nor directions for layer(s) {missing}: their features show "
                     "no contexts.")
    return out, notes
