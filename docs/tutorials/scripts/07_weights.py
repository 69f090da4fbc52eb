"""The parameters, the tied embedding and W_U

GPT-2's weights are plain tensors in the Hugging Face model; gpt2probe also offers them
in TransformerLens's orientation (`W_E`, `W_Q[layer, head]`, `W_U`, ...). This tutorial
counts the parameters, shows that the unembedding is the embedding transposed (GPT-2
ties them, and its `lm_head` has no bias), and rebuilds the logits by hand from them.
"""

import torch

import gpt2probe
from gpt2probe import names

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")
cfg = probe.cfg

# %%
# ## The configuration
#
# `probe.cfg` holds the sizes under TransformerLens's names (Hugging Face calls them
# `n_layer`, `n_embd`, `n_head`, `n_positions`, `vocab_size`).
print(f"n_layers={cfg.n_layers} d_model={cfg.d_model} n_heads={cfg.n_heads} d_head={cfg.d_head}")
print(f"d_mlp={cfg.d_mlp} d_vocab={cfg.d_vocab} n_ctx={cfg.n_ctx} act_fn={cfg.act_fn}")

# %%
# ## Counting parameters
#
# `model.parameters()` yields each tensor once, so the tied unembedding is not counted
# twice. In a model this small, the embedding matrix (`d_vocab * d_model`) is most of it.
model = probe.model
total = sum(p.numel() for p in model.parameters())
embedding = model.transformer.wte.weight.numel()
print(f"parameters: {total:,}")
print(f"token embedding: {embedding:,} ({embedding / total:.0%})")
for name, p in list(model.named_parameters())[:8]:
    print(f"{name:<36} {tuple(p.shape)}")

# %%
# ## Weights in TransformerLens's orientation
#
# Hugging Face's `Conv1D` stores `[in, out]` matrices and packs Q, K and V into one
# `c_attn`. The probe's properties split them per head, as TransformerLens does.
for name in ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "b_O", "W_in", "W_out", "W_U", "b_U"):
    print(f"{name:<6} {tuple(getattr(probe, name).shape)}")

# %%
# The split is a view of the packed matrix: head 1's queries are columns
# `d_head : 2 * d_head` of `c_attn.weight` in layer 0.
c_attn = model.transformer.h[0].attn.c_attn.weight
print("W_Q[0, 1] is a slice of c_attn:", torch.equal(probe.W_Q[0, 1], c_attn[:, cfg.d_head : 2 * cfg.d_head]))

# %%
# ## The tied embedding
#
# GPT-2 uses one matrix to embed tokens and to unembed the final stream: `lm_head.weight`
# *is* `wte.weight` (the same memory), so `W_U = W_E.T`. And `lm_head` has no bias, so
# `b_U` is zero.
print("lm_head.weight is wte.weight:", model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr())
print("W_U == W_E.T:", torch.equal(probe.W_U, probe.W_E.T))
print("lm_head.bias:", model.lm_head.bias)
print("b_U is all zero:", bool((probe.b_U == 0).all()))

# %%
# ## Logits by hand
#
# The logits are the final residual stream, normalised by `ln_f`, times `W_U`. With
# the tied matrix, the logit of a token is a dot product between the normalised stream
# and that token's *embedding*.
prompt = "The function returns a list of"
logits, cache = probe.run_with_cache(prompt, names=[names.resid_post(cfg.n_layers - 1)])
final = cache[names.resid_post(cfg.n_layers - 1)]
by_hand = probe.model.transformer.ln_f(final) @ probe.W_U + probe.b_U
print("ln_f(final) @ W_U == logits:", torch.allclose(by_hand, logits, atol=1e-4))
token = probe.to_single_token(" strings")
dot = probe.model.transformer.ln_f(final)[0, -1] @ probe.W_E[token]
print(f"logit of ' strings': {logits[0, -1, token].item():.4f}; dot with its embedding: {dot.item():.4f}")

# %%
# ## The weights are read-only views
#
# The properties share memory with the model and are detached. To experiment with
# edited weights, clone them or edit a copy of the model.
print("shares memory with the model:", probe.W_E.data_ptr() == model.transformer.wte.weight.data_ptr())
print("requires grad:", probe.W_E.requires_grad)

# %%
# ## The figure: where the parameters are
#
# The parameter count of each kind of tensor, summed over the layers (the tied
# unembedding counted once, with the token embedding). In this small model the token
# embedding, `d_vocab * d_model`, dwarfs everything else; in GPT-2 small it is still
# about a third of the 124 M.
import plotly.graph_objects as go  # noqa: E402

groups = {"token embedding": 0, "position embedding": 0, "attention": 0, "MLP": 0, "layer norms": 0}
for name, p in model.named_parameters():
    kind = ("token embedding" if "wte" in name else "position embedding" if "wpe" in name
            else "attention" if ".attn." in name else "MLP" if ".mlp." in name else "layer norms")
    groups[kind] += p.numel()
figure = go.Figure(go.Bar(x=list(groups), y=list(groups.values()), hovertemplate="%{x}: %{y:,} parameters<extra></extra>"))
figure.update_layout(title=f"{total:,} parameters, by kind", yaxis_title="parameters", yaxis_type="log", height=360,
                     template="plotly_white")
figure
