"""Test doubles for attribution graphs: a minimal transcoder, random ones, and a hand-built toy with a known path."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from transformers import GPT2Config, GPT2LMHeadModel


@dataclass
class ToyTranscoder:
    """The smallest object that fits ``gpt2probe.graphs.TranscoderLike``: ReLU, JumpReLU or top-k."""

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    layer: int
    W_skip: torch.Tensor | None = None
    threshold: float = 0.0  # JumpReLU: active only above it
    k: int | None = None  # top-k
    cfg: SimpleNamespace = field(init=False)

    def __post_init__(self) -> None:
        self.cfg = SimpleNamespace(layer=self.layer)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = x @ self.W_enc + self.b_enc
        if self.k is not None:
            top = torch.topk(pre, self.k, dim=-1)
            out = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
            return torch.relu(out)
        return pre * (pre > self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.encode(x) @ self.W_dec + self.b_dec
        return out + x @ self.W_skip if self.W_skip is not None else out


def random_transcoders(
    n_layers: int, d_model: int, d_sae: int, seed: int, *, skip: bool = False, kind: str = "relu"
) -> list[ToyTranscoder]:
    """Seeded random transcoders with a few active features per position."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for layer in range(n_layers):
        W_enc = torch.randn(d_model, d_sae, generator=gen) / d_model**0.5
        b_enc = -1.0 + 0.3 * torch.randn(d_sae, generator=gen)
        W_dec = 0.5 * torch.randn(d_sae, d_model, generator=gen)
        b_dec = 0.1 * torch.randn(d_model, generator=gen)
        W_skip = 0.1 * torch.randn(d_model, d_model, generator=gen) if skip else None
        extra = {"threshold": 0.2} if kind == "jumprelu" else {"k": 4} if kind == "topk" else {}
        if kind == "topk":
            b_enc = b_enc + 1.0
        out.append(ToyTranscoder(W_enc, b_enc, W_dec, b_dec, layer, W_skip=W_skip, **extra))
    return out


def identity_gap(graph) -> float:
    """max |edges in + constant + unselected input - value| over feature and logit nodes."""
    rows = list(range(graph.n_features)) + list(range(graph.logit_slice.start, graph.n_nodes))
    lhs = graph.adjacency.sum(1) + graph.constant + graph.unselected_input
    return float((lhs[rows] - graph.node_values[rows]).abs().max())


# -- the hand-built toy ------------------------------------------------------------------
# d_model 8; every direction below is orthogonal to the all-ones vector, so LayerNorm's
# centring leaves it alone, and to the others, so only the intended path carries signal.
D_MODEL = 8


def _dir(*pairs: tuple[int, float]) -> torch.Tensor:
    v = torch.zeros(D_MODEL)
    for i, x in pairs:
        v[i] = x
    return v / v.norm()


U_IN = _dir((0, 1), (1, -1))  # what token 3 embeds
U_MID = _dir((2, 1), (3, -1))  # what feature A (layer 0) writes
U_OUT = _dir((4, 1), (5, -1))  # what feature B (layer 1) writes; token 4's unembedding
U_A = _dir((6, 1), (7, -1))
U_B = _dir((0, 1), (1, 1), (6, -1), (7, -1))
TOKEN_IN, TOKEN_OUT = 3, 4
PROMPT = [0, 2, TOKEN_IN]  # the known path runs at the last position: emb(3) -> A -> B -> logit(4)


def toy_model() -> GPT2LMHeadModel:
    """2 layers, 1 head, attention zeroed, LayerNorms the identity, MLPs with one live neuron each.

    Layer 0's neuron 0 fires on token 3's direction and writes ``U_MID``; layer 1's neuron 0
    reads ``U_MID`` and writes ``U_OUT``, token 4's unembedding. Pre-activations are about +-10,
    where GELU equals ReLU to float precision, so ReLU transcoders copied from the MLPs
    reproduce them exactly and error nodes are zero.
    """
    config = GPT2Config(n_layer=2, n_embd=D_MODEL, n_head=1, n_positions=8, vocab_size=6, n_inner=4,
                        bos_token_id=5, eos_token_id=5, attn_implementation="eager")
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for name, p in model.named_parameters():
            if "ln_" in name and name.endswith("weight"):
                p.fill_(1.0)
        s = 3.0
        wte = model.transformer.wte.weight  # rows sum to zero: demeaned logits need no correction
        wte[0], wte[1], wte[2] = s * U_A, -s * U_A, s * U_B
        wte[TOKEN_IN], wte[TOKEN_OUT] = s * U_IN, s * U_OUT
        wte[5] = -(wte[2] + wte[TOKEN_IN] + wte[TOKEN_OUT])
        gain, bias = 5.0, -5.0
        for layer, (read, write) in enumerate([(U_IN, U_MID), (U_MID, U_OUT)]):
            mlp = model.transformer.h[layer].mlp
            mlp.c_fc.weight[:, 0] = gain * read
            mlp.c_fc.bias[:] = -10.0
            mlp.c_fc.bias[0] = bias
            mlp.c_proj.weight[0] = write
    return model.eval()


def toy_transcoders(model: GPT2LMHeadModel) -> list[ToyTranscoder]:
    """Each MLP as a ReLU transcoder (LayerNorms are the identity, so the MLP reads hook_normalized)."""
    out = []
    for layer, block in enumerate(model.transformer.h):
        W_in, b_in = block.mlp.c_fc.weight.detach().clone(), block.mlp.c_fc.bias.detach().clone()
        W_out, b_out = block.mlp.c_proj.weight.detach().clone(), block.mlp.c_proj.bias.detach().clone()
        out.append(ToyTranscoder(W_in, b_in, W_out, b_out, layer))
    return out


def synthetic_graph(n_layers: int = 12, n_pos: int = 64, per_site: int = 3, n_logits: int = 10, density: float = 0.01,
                    seed: int = 0):
    """A random graph of a given size (no model): for timing the viewer on a 64-token, 12-layer graph.

    Edges run only from earlier layers and positions at or before the target's, as in a real graph;
    the identity holds with zero constants (values are the edge sums).
    """
    from gpt2probe.graphs import AttributionGraph

    gen = torch.Generator().manual_seed(seed)
    feats = torch.tensor([(layer, pos, 7 * f + layer) for layer in range(n_layers) for pos in range(n_pos)
                          for f in range(per_site)])
    n_feat = len(feats)
    layer_of = torch.cat([feats[:, 0], torch.arange(n_layers).repeat_interleave(n_pos), torch.full((n_pos,), -1),
                          torch.full((n_logits,), n_layers)])
    pos_of = torch.cat([feats[:, 1], torch.arange(n_pos).repeat(n_layers), torch.arange(n_pos),
                        torch.full((n_logits,), n_pos - 1)])
    n = len(layer_of)
    valid = (layer_of[None, :] < layer_of[:, None]) & (pos_of[None, :] <= pos_of[:, None])
    valid[n_feat:n - n_logits] = False  # error and token nodes have no inputs
    keep = valid & (torch.rand((n, n), generator=gen) < density)
    keep[n - n_logits:] = valid[n - n_logits:] & (torch.rand((n_logits, n), generator=gen) < 20 * density)
    adjacency = torch.randn((n, n), generator=gen) * keep
    values = adjacency.sum(1)
    values[n_feat:n - n_logits] = 1.0
    probs = torch.softmax(torch.randn(n_logits, generator=gen), 0).sort(descending=True).values
    return AttributionGraph(
        model_name="synthetic", tokens=list(range(n_pos)), str_tokens=[f" t{i}" for i in range(n_pos)], n_layers=n_layers,
        d_transcoder=7 * per_site + n_layers, features=feats, activations=torch.rand(n_feat, generator=gen) + 0.1,
        logit_tokens=list(range(n_logits)), logit_str_tokens=[f" o{i}" for i in range(n_logits)],
        logit_probabilities=probs, adjacency=adjacency, node_values=values, constant=torch.zeros(n),
        unselected_input=torch.zeros(n), n_active_features=n_feat,
    )
