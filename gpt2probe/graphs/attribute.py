"""Build an attribution graph: every active feature's, error's and token's direct effect on every feature and logit.

The method is Ameisen et al. (2025), as circuit-tracer implements it: in the local replacement
model (:mod:`.replacement`) every target is a linear function of the sources, so one backward
pass from a target gives its whole row of the adjacency matrix. Targets are processed
``batch_size`` at a time through the replacement model's backward map, written out in
:mod:`.backward` (a batch of targets at positions up to ``p`` costs ``[batch, p, d_model]``
per layer, and only the layers below its highest target).

Memory is bounded by design: besides the weights and one forward pass of the prompt, it is the
rows being filled, ``[n_logits + kept features, sources]`` in float32, and the final adjacency
``[nodes, nodes]``, both known before any work; a graph whose edges would not fit in
``max_edge_bytes`` is refused before any work, naming a ``max_feature_nodes`` that fits. The
influence ranking that chooses features (``max_feature_nodes``) streams over row chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor

from ..errors import InvalidArgumentError, InvalidTypeError, PromptError
from ..tokens import Inputs
from .backward import LinearBackward
from .graph import AttributionGraph
from .influence import row_influence
from .replacement import PromptRun, capture_prompt, replacement_pass
from .transcoders import Probe, TranscoderLike, Transcoders, check_transcoders, encode_checked, skip_out

DEFAULT_MAX_EDGE_BYTES = 4 * 2**30
ASSEMBLY_CHUNK = 1024  # rows copied into the adjacency matrix at a time


@dataclass(frozen=True)
class ActiveFeatures:
    """Every active feature of the prompt, ordered by (layer, position, feature)."""

    layer: Int[Tensor, " n"]
    pos: Int[Tensor, " n"]
    feature: Int[Tensor, " n"]
    activation: Float[Tensor, " n"]
    pre: Float[Tensor, " n"]  # x @ W_enc + b_enc: equal to the activation where active (checked)
    groups: list[tuple[int, int, int, int]]  # (layer, pos, start, end): contiguous runs of one site


def active_features(run: PromptRun, transcoders: list[TranscoderLike]) -> tuple[ActiveFeatures, Tensor]:
    """The active features and each layer's error ``true MLP output - transcoder output`` ``[layer, pos, d_model]``."""
    layers, positions, feats, acts_out, pres, errors = [], [], [], [], [], []
    for layer, tc in enumerate(transcoders):
        x = run.mlp_in[layer]
        acts, pre = encode_checked(tc, x, layer)
        with torch.no_grad():
            recon = acts @ tc.W_dec + tc.b_dec + skip_out(tc, x)
        errors.append(run.mlp_out[layer] - recon)
        pos, feat = acts.nonzero(as_tuple=True)  # row-major: by position, then feature
        layers.append(torch.full_like(pos, layer))
        positions.append(pos)
        feats.append(feat)
        acts_out.append(acts[pos, feat])
        pres.append(pre[pos, feat])
    layer_t, pos_t = torch.cat(layers).cpu(), torch.cat(positions).cpu()
    groups, start = [], 0
    keys = list(zip(layer_t.tolist(), pos_t.tolist()))
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            groups.append((keys[start][0], keys[start][1], start, i))
            start = i
    found = ActiveFeatures(layer_t, pos_t, torch.cat(feats).cpu(), torch.cat(acts_out), torch.cat(pres), groups)
    return found, torch.stack(errors)


def salient_logits(logits: Float[Tensor, " d_vocab"], *, max_logits: int, desired_logit_prob: float) -> tuple[Tensor, Tensor]:
    """The most likely tokens, in order, until their probabilities sum to ``desired_logit_prob`` (at most ``max_logits``)."""
    probs = torch.softmax(logits.float(), dim=-1)
    top_p, top_ids = torch.topk(probs, min(max_logits, probs.numel()))
    cutoff = int(torch.searchsorted(torch.cumsum(top_p, 0), torch.tensor(desired_logit_prob, device=top_p.device))) + 1
    return top_ids[:cutoff], top_p[:cutoff]


class RowComputer:
    """Rows of the adjacency matrix (direct effects on targets), ``batch`` targets per backward pass (:mod:`.backward`)."""

    def __init__(self, probe: Probe, run: PromptRun, transcoders: list[TranscoderLike], feats: ActiveFeatures,
                 errors: Tensor) -> None:
        self.run, self.feats, self.errors = run, feats, errors
        self.n_layers, self.n_pos = errors.shape[0], errors.shape[1]
        self.n_feat = len(feats.layer)
        self.n_cols = self.n_feat + (self.n_layers + 1) * self.n_pos
        with torch.no_grad():  # transcoder weights may be parameters that require grad: keep no history
            self._precompute(transcoders, feats, run.embed.device)
            self.backward = LinearBackward(probe, run, transcoders)

    def _precompute(self, transcoders: list[TranscoderLike], feats: ActiveFeatures, device: torch.device) -> None:
        run = self.run
        # Each active feature's write, a * W_dec[f] ([n, d_model]), and its encoder column ([n, d_model]).
        dec = torch.empty((self.n_feat, run.embed.shape[1]), dtype=run.embed.dtype, device=device)
        self.enc = torch.empty_like(dec)
        for layer, tc in enumerate(transcoders):
            mask = (feats.layer == layer).to(device)
            idx = feats.feature.to(device)[mask]
            dec[mask] = tc.W_dec[idx] * feats.activation[mask, None]
            self.enc[mask] = tc.W_enc[:, idx].T
        self.dec = dec
        pos_dev = feats.pos.to(device)
        counts = torch.bincount(feats.layer, minlength=self.n_layers).tolist()
        bounds = [0, *torch.tensor(counts).cumsum(0).tolist()]
        self.layer_ranges = list(zip(bounds[:-1], bounds[1:]))  # features are ordered by layer, then position
        # per layer, the writes grouped by position and zero-padded: [pos, max features at one position, d_model]
        self.padded = []
        for start, end in self.layer_ranges:
            pos = pos_dev[start:end]
            counts = torch.bincount(pos, minlength=self.n_pos)
            first = torch.cumsum(counts, 0) - counts
            slot = torch.arange(end - start, device=device) - first[pos]
            dec_pad = torch.zeros((self.n_pos, max(1, int(counts.max()) if end > start else 1), dec.shape[1]),
                                  dtype=dec.dtype, device=device)
            dec_pad[pos, slot] = dec[start:end]
            # how many of the layer's features sit before each position (features are sorted by position)
            before = torch.cat([torch.zeros(1, dtype=torch.long, device=device), torch.cumsum(counts, 0)]).tolist()
            self.padded.append((pos, slot, dec_pad, before))
        # what every layer's features and error node write together: the replacement model's own MLP outputs
        written = self.errors.clone()
        for layer, pos, start, end in feats.groups:
            written[layer, pos] += dec[start:end].sum(0)
        self.written = written

    def _read_layer(self, out: Tensor, layer: int, grad: Float[Tensor, "b p d_model"]) -> None:
        """Write the direct effects of layer ``layer``'s features and error nodes, given the gradient at its MLP output."""
        b, p, _ = grad.shape
        start = self.n_feat + layer * self.n_pos
        out[:, start:start + p] = einsum(grad, self.errors[layer, :p], "b p d, p d -> b p").float().cpu()
        first, end = self.layer_ranges[layer]
        pos, slot, dec_pad, before = self.padded[layer]
        n = before[p]  # features at positions < p: the others cannot affect these targets
        if end == first or n == 0:
            return
        # out[b, i] = grad[b, pos_i] . dec_i, as one batched matmul over positions
        by_pos = torch.bmm(grad.transpose(0, 1), dec_pad[:p].transpose(1, 2))  # [p, b, max features at a position]
        out[:, first:first + n] = by_pos[pos[:n], :, slot[:n]].T.float().cpu()

    @torch.no_grad()
    def rows(self, layers: Tensor, positions: Tensor, vectors: Tensor) -> Float[Tensor, "n n_cols"]:
        """Rows for targets ``vectors[i] . stream``, read at ``mlp_in[layers[i]]`` (``layers[i] == n_layers``: after ``ln_final``)."""
        n = len(layers)
        lb = self.backward
        device = vectors.device
        layers_d, pos_d = layers.to(device), positions.to(device)
        p = int(positions.max()) + 1  # causal: nothing after the last target position matters
        out = torch.zeros((n, self.n_cols), dtype=torch.float32)
        grad = torch.zeros((n, p, vectors.shape[1]), dtype=vectors.dtype, device=device)
        rows = torch.arange(n, device=device)
        final = layers_d == self.n_layers
        if bool(final.any()):
            grad[rows[final], pos_d[final]] += lb.targets_at_final(vectors[final], pos_d[final])
        for layer in range(min(int(layers.max()), self.n_layers - 1), -1, -1):
            self._read_layer(out, layer, grad)  # grad is now d target / d mlp_out[layer]
            skip = lb.skip_transpose(layer, grad)
            if skip is not None:
                grad = grad + skip
            here = layers_d == layer
            if bool(here.any()):
                grad[rows[here], pos_d[here]] += lb.targets_at_mlp_in(layer, vectors[here], pos_d[here])
            grad = grad + lb.attention_transpose(layer, grad)
        token_start = self.n_cols - self.n_pos
        out[:, token_start:token_start + p] = einsum(grad, self.run.embed[:p], "b p d, p d -> b p").float().cpu()
        return out


def _check_options(max_logits: object, desired_logit_prob: object, max_feature_nodes: object, batch_size: object) -> None:
    for name, value in (("max_logits", max_logits), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidTypeError(f"{name} must be an integer, got {value!r}")
        if value < 1:
            raise InvalidArgumentError(f"{name} must be at least 1, got {value}")
    if max_feature_nodes is not None:
        if isinstance(max_feature_nodes, bool) or not isinstance(max_feature_nodes, int):
            raise InvalidTypeError(f"max_feature_nodes must be an integer or None, got {max_feature_nodes!r}")
        if max_feature_nodes < 0:
            raise InvalidArgumentError(f"max_feature_nodes must be >= 0 (or None for all active features), got {max_feature_nodes}")
    if isinstance(desired_logit_prob, bool) or not isinstance(desired_logit_prob, (int, float)):
        raise InvalidTypeError(f"desired_logit_prob must be a number in (0, 1], got {desired_logit_prob!r}")
    if not 0 < desired_logit_prob <= 1:
        raise InvalidArgumentError(f"desired_logit_prob must lie in (0, 1], got {desired_logit_prob}")


def attribution_graph(
    probe: Probe,
    prompt: Inputs,
    *,
    transcoders: Transcoders,
    max_logits: int = 10,
    desired_logit_prob: float = 0.95,
    max_feature_nodes: int | None = None,
    batch_size: int = 32,
    max_edge_bytes: int = DEFAULT_MAX_EDGE_BYTES,
    prepend_bos: bool = False,
) -> AttributionGraph:
    """The attribution graph of ``prompt``'s next-token prediction over the local replacement model.

    Args:
        probe: the model.
        prompt: one prompt (text, token ids ``[pos]`` or ``[1, pos]``, or :class:`Tokens` of one row).
        transcoders: one transcoder per layer (a list, each with ``cfg.layer``, or ``{layer: transcoder}``),
            see :class:`gpt2probe.graphs.TranscoderLike`.
        max_logits: at most this many logit nodes.
        desired_logit_prob: logit nodes are the most likely next tokens until their probabilities
            sum to this.
        max_feature_nodes: keep at most this many feature nodes, chosen (as circuit-tracer does) by
            their estimated influence on the logits; ``None`` keeps every active feature.
        batch_size: targets per backward pass (each pass holds ``[batch_size, pos, d_model]``
            gradients and their temporaries).
        max_edge_bytes: refuse, before any work, a graph whose edge matrices would need more.
        prepend_bos: prepend ``<|endoftext|>`` to a text prompt.

    Returns:
        An :class:`AttributionGraph`; for every feature and logit node,
        ``adjacency[i].sum() + constant[i] + unselected_input[i] == node_values[i]``.

    Example:
        >>> graph = gpt2probe.attribution_graph(probe, "The cat sat on the", transcoders=tcs)
        >>> graph.replacement_score(), graph.completeness_score()
    """
    _check_options(max_logits, desired_logit_prob, max_feature_nodes, batch_size)
    tokens = probe.as_tokens(prompt, prepend_bos=prepend_bos)
    if tokens.ids.shape[0] != 1:
        raise PromptError(f"an attribution graph is of one prompt; got a batch of {tokens.ids.shape[0]}")
    if probe.model.training:
        raise InvalidArgumentError("the model is in training mode (dropout would make the graph random): call probe.model.eval() first")
    cfg = probe.cfg
    tcs = check_transcoders(transcoders, n_layers=cfg.n_layers, d_model=cfg.d_model, dtype=cfg.dtype, device=cfg.device)
    run = capture_prompt(probe, tokens)
    feats, errors = active_features(run, tcs)
    n_feat, n_layers, n_pos = len(feats.layer), cfg.n_layers, run.ids.shape[0]

    logit_ids, logit_probs = salient_logits(run.logits, max_logits=max_logits, desired_logit_prob=desired_logit_prob)
    n_logits = len(logit_ids)
    W_U, b_U = probe.W_U, probe.b_U
    logit_vecs = (W_U[:, logit_ids] - W_U.mean(dim=1, keepdim=True)).T  # demeaned, as circuit-tracer's logit targets

    n_keep = n_feat if max_feature_nodes is None else min(max_feature_nodes, n_feat)
    n_cols = n_feat + (n_layers + 1) * n_pos
    n_nodes = n_keep + (n_layers + 1) * n_pos + n_logits
    needed = 4 * ((n_keep + n_logits) * n_cols + 2 * n_nodes * n_nodes)
    if needed > max_edge_bytes:
        fits = _largest_fitting(n_feat, n_cols - n_feat, n_logits, max_edge_bytes)
        raise InvalidArgumentError(
            f"this graph has {n_feat} active features; keeping {n_keep} of them needs about {needed / 2**30:.1f} GiB of edges, "
            f"over max_edge_bytes={max_edge_bytes} ({max_edge_bytes / 2**30:.1f} GiB): pass max_feature_nodes <= {fits}, "
            "or raise max_edge_bytes"
        )

    batch = min(batch_size, max(n_keep, n_logits))
    computer = RowComputer(probe, run, tcs, feats, errors)
    edge_rows = torch.zeros((n_logits + n_keep, n_cols), dtype=torch.float32)
    row_node = torch.zeros(n_logits + n_keep, dtype=torch.long)  # column index of each row's node (logits: n_cols + j)
    final_layer = torch.full((n_logits,), n_layers)
    last_pos = torch.full((n_logits,), n_pos - 1)
    for i in range(0, n_logits, batch):
        sl = slice(i, min(i + batch, n_logits))
        edge_rows[sl] = computer.rows(final_layer[sl], last_pos[sl], logit_vecs[sl])
        row_node[sl] = torch.arange(sl.start, sl.stop) + n_cols

    visited = torch.zeros(n_feat, dtype=torch.bool)
    filled = n_logits
    while filled - n_logits < n_keep:
        if n_keep == n_feat:
            pending = torch.arange(n_feat)
        else:
            influence = row_influence(edge_rows[:filled], row_node[:filled], logit_probs.float().cpu(), n_cols)
            ranked = torch.argsort(influence[:n_feat], descending=True, stable=True)
            pending = ranked[~visited[ranked]][: min(4 * batch, n_keep - (filled - n_logits))]
            # in (layer, position) order, so each batch's backward pass stops at its lowest layer and latest position
            pending = pending[torch.argsort(feats.layer[pending] * n_pos + feats.pos[pending], stable=True)]
        for j in range(0, len(pending), batch):
            idx = pending[j:j + batch]
            end = filled + len(idx)
            idx_dev = idx.to(computer.enc.device)
            edge_rows[filled:end] = computer.rows(feats.layer[idx], feats.pos[idx], computer.enc[idx_dev])
            row_node[filled:end] = idx
            visited[idx] = True
            filled = end
    del computer

    constant = _constants(probe, run, tcs, feats, logit_vecs, logit_ids, b_U)
    return _assemble(
        probe=probe, run=run, tokens_ids=run.ids.cpu(), feats=feats, errors=errors, edge_rows=edge_rows, row_node=row_node,
        visited=visited, constant=constant, logit_ids=logit_ids.cpu(), logit_probs=logit_probs.float().cpu(), tcs=tcs,
    )


def _largest_fitting(n_feat: int, n_other: int, n_logits: int, budget: int) -> int:
    lo, hi = 0, n_feat
    while lo < hi:
        mid = (lo + hi + 1) // 2
        n_nodes = mid + n_other + n_logits
        if 4 * ((mid + n_logits) * (n_feat + n_other) + 2 * n_nodes * n_nodes) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


@torch.no_grad()
def _constants(probe: Probe, run: PromptRun, tcs: list[TranscoderLike], feats: ActiveFeatures, logit_vecs: Tensor,
               logit_ids: Tensor, b_U: Tensor) -> tuple[Tensor, Tensor]:
    """Each feature's and logit's value with every source zero: biases, position embeddings and frozen terms."""
    zero = replacement_pass(probe, run, tcs, embed=torch.zeros_like(run.embed), written=torch.zeros_like(run.mlp_in))
    feature_const = torch.empty(len(feats.layer), dtype=torch.float32)
    for layer, tc in enumerate(tcs):
        mask = feats.layer == layer
        if bool(mask.any()):
            pos, feat = feats.pos[mask].to(tc.W_enc.device), feats.feature[mask].to(tc.W_enc.device)
            x = zero.mlp_in[layer][0, pos]
            feature_const[mask] = ((x * tc.W_enc[:, feat].T).sum(-1) + tc.b_enc[feat]).float().cpu()
    final = zero.final[0, -1]
    logit_const = (logit_vecs @ final + b_U[logit_ids] - b_U.mean()).float().cpu()
    return feature_const, logit_const


def _assemble(*, probe: Probe, run: PromptRun, tokens_ids: Tensor, feats: ActiveFeatures, errors: Tensor,
              edge_rows: Tensor, row_node: Tensor, visited: Tensor, constant: tuple[Tensor, Tensor],
              logit_ids: Tensor, logit_probs: Tensor, tcs: list[TranscoderLike]) -> AttributionGraph:
    n_feat = len(feats.layer)
    n_layers, n_pos = errors.shape[0], errors.shape[1]
    n_logits = len(logit_ids)
    n_cols = n_feat + (n_layers + 1) * n_pos
    selected = visited.nonzero(as_tuple=True)[0]
    col_keep = torch.cat([selected, torch.arange(n_feat, n_cols)])
    unselected = torch.ones(n_feat, dtype=torch.bool)
    unselected[selected] = False
    n_sel = len(selected)
    n_nodes = n_sel + (n_layers + 1) * n_pos + n_logits
    # rows sorted: selected features in (layer, pos, feature) order, then logits in probability order
    position_of = torch.full((n_cols + n_logits,), -1, dtype=torch.long)
    position_of[selected] = torch.arange(n_sel)
    position_of[n_cols:] = torch.arange(n_logits) + n_nodes - n_logits
    target = position_of[row_node]
    adjacency = torch.zeros((n_nodes, n_nodes), dtype=torch.float32)
    unselected_input = torch.zeros(n_nodes, dtype=torch.float32)
    everything = n_sel == n_feat
    for i in range(0, len(target), ASSEMBLY_CHUNK):  # in chunks: no second full copy of the rows
        rows = edge_rows[i:i + ASSEMBLY_CHUNK]
        adjacency[target[i:i + ASSEMBLY_CHUNK], : n_nodes - n_logits] = rows if everything else rows[:, col_keep]
        if not everything:
            unselected_input[target[i:i + ASSEMBLY_CHUNK]] = rows[:, :n_feat][:, unselected].sum(-1)
    feature_const, logit_const = constant
    const = torch.zeros(n_nodes, dtype=torch.float32)
    const[:n_sel] = feature_const[selected]
    const[n_nodes - n_logits:] = logit_const
    values = torch.zeros(n_nodes, dtype=torch.float32)
    values[:n_sel] = feats.pre[selected.to(feats.pre.device)].float().cpu()
    values[n_sel:n_sel + n_layers * n_pos] = errors.norm(dim=-1).flatten().float().cpu()
    values[n_sel + n_layers * n_pos:n_nodes - n_logits] = run.embed.norm(dim=-1).float().cpu()
    logits = run.logits.float()
    values[n_nodes - n_logits:] = (logits[logit_ids.to(logits.device)] - logits.mean()).cpu()
    features = torch.stack([feats.layer[selected], feats.pos[selected], feats.feature[selected]], dim=1)
    return AttributionGraph(
        model_name=probe.cfg.model_name,
        tokens=tokens_ids.tolist(),
        str_tokens=probe.to_str_tokens(tokens_ids),
        n_layers=n_layers,
        d_transcoder=int(tcs[0].W_enc.shape[1]),
        features=features,
        activations=feats.activation[selected.to(feats.activation.device)].float().cpu(),
        logit_tokens=logit_ids.tolist(),
        logit_str_tokens=[probe.to_str_tokens([i])[0] for i in logit_ids.tolist()],
        logit_probabilities=logit_probs,
        adjacency=adjacency,
        node_values=values,
        constant=const,
        unselected_input=unselected_input,
        n_active_features=n_feat,
    )
