"""One attention head from scratch

Introductions to GPT write self-attention in a dozen lines: three linear maps turn each
token's vector into a query, a key and a value; every query is compared with every key
by a dot product scaled by `1/sqrt(d_head)`; a causal mask hides the later tokens; a
softmax turns each row of scores into weights; the head's output is the weighted sum of
the values, projected back to `d_model`. This tutorial writes that head as a small
PyTorch module, loads it with one head of `tiny-english` (its `W_Q`, `W_K`, `W_V`, `W_O`
and biases, as the probe exposes them in TransformerLens's orientation), and checks that
it computes the same pattern as the captured `hook_pattern` and the same output as that
head's result: the bridge from the textbook picture to the hooks.
"""

import math

import torch
from torch import nn

import gpt2probe
from gpt2probe import names

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")
cfg = probe.cfg
print(f"d_model={cfg.d_model} n_heads={cfg.n_heads} d_head={cfg.d_head}")

# %%
# ## The textbook head
#
# Written as the introductions write it: `nn.Linear` maps for the query, key and value,
# scores scaled by `1/sqrt(d_head)`, a causal mask, a softmax, the weighted sum of the
# values, and an output projection back to the residual stream's width. It returns the
# output and the pattern.


class Head(nn.Module):
    """One causal self-attention head."""

    def __init__(self, d_model: int, d_head: int) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, d_head)
        self.key = nn.Linear(d_model, d_head)
        self.value = nn.Linear(d_model, d_head)
        self.out = nn.Linear(d_head, d_model, bias=False)  # the bias is the layer's, added once for all heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [batch, pos, d_model] -> output [batch, pos, d_model], pattern [batch, query_pos, key_pos]."""
        q, k, v = self.query(x), self.key(x), self.value(x)  # each [batch, pos, d_head]
        scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])  # [batch, query_pos, key_pos]
        n = x.shape[1]
        later = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)  # key after query
        scores = scores.masked_fill(later, float("-inf"))
        pattern = scores.softmax(dim=-1)  # each row sums to 1
        z = pattern @ v  # [batch, pos, d_head]: the weighted sum of the values
        return self.out(z), pattern


# %%
# ## Loading one head of GPT-2
#
# The probe gives the weights in TransformerLens's orientation: a head computes
# `x @ W_Q[layer, head] + b_Q[layer, head]`, with `W_Q` of shape `[d_model, d_head]`.
# `nn.Linear` stores its weight as `[out, in]` and computes `x @ weight.T + bias`, so each
# matrix goes in transposed. `W_O[layer, head]`, `[d_head, d_model]`, is this head's
# block of rows of the layer's output projection (Hugging Face's `c_proj`); the
# projection's bias `b_O[layer]` belongs to the layer and is added once, after the heads'
# outputs are summed.


def load_head(layer: int, index: int) -> Head:
    """A textbook head holding head `index` of block `layer`."""
    head = Head(cfg.d_model, cfg.d_head)
    with torch.no_grad():
        for linear, W, b in ((head.query, probe.W_Q, probe.b_Q), (head.key, probe.W_K, probe.b_K),
                             (head.value, probe.W_V, probe.b_V)):
            linear.weight.copy_(W[layer, index].T)
            linear.bias.copy_(b[layer, index])
        head.out.weight.copy_(probe.W_O[layer, index].T)
    return head


LAYER, HEAD = 1, 2
head = load_head(LAYER, HEAD)
for name in ("W_Q", "b_Q", "W_O", "b_O"):
    print(f"{name}: all layers {tuple(getattr(probe, name).shape)}")
print("query weight [d_head, d_model]:", tuple(head.query.weight.shape))

# %%
# ## The same input as the model's head
#
# GPT-2 normalises the residual stream before attention (pre-LN): the head reads
# `ln_1(resid_pre)`, the stream entering the block through the block's first layer norm.
# One `run_with_cache` captures that stream and every activation of the layer's attention.
prompt = "The function returns a list of the values in the list"
logits, cache = probe.run_with_cache(
    prompt,
    names=[names.resid_pre(LAYER), names.q(LAYER), names.pattern(LAYER), names.z(LAYER), names.attn_out(LAYER)],
)
x = probe.model.transformer.h[LAYER].ln_1(cache[names.resid_pre(LAYER)])
with torch.no_grad():
    output, pattern = head(x)
print("tokens:", probe.to_str_tokens(prompt))
print("x:", tuple(x.shape), " pattern:", tuple(pattern.shape), " output:", tuple(output.shape))

# %%
# ## Equal to the hooks
#
# Every intermediate of the textbook head is one of the hooks, for this head's index:
# `hook_q` holds the queries `[batch, pos, head, d_head]`, `hook_pattern` the patterns
# `[batch, head, query_pos, key_pos]`, `hook_z` the weighted values. The head's output,
# its *result* `z @ W_O` in the residual stream, is `cache.head_results(layer)`
# (`[batch, pos, head, d_model]`, TransformerLens's `hook_result`). Float32 sums in
# another order differ in the last bits, so the comparisons use tolerances.
with torch.no_grad():
    q = head.query(x)
    z = pattern @ head.value(x)
checks = {
    "queries == hook_q": (q, cache[names.q(LAYER)][:, :, HEAD]),
    "pattern == hook_pattern": (pattern, cache[names.pattern(LAYER)][:, HEAD]),
    "weighted values == hook_z": (z, cache[names.z(LAYER)][:, :, HEAD]),
    "output == head_results": (output, cache.head_results(LAYER)[:, :, HEAD]),
}
for label, (ours, captured) in checks.items():
    print(f"{label:<26} {torch.allclose(ours, captured, rtol=1e-4, atol=1e-5)}  (rtol 1e-4, atol 1e-5)")

# %%
# The pattern's last row, to two decimals: how much the last token, `' list'`, reads
# from each token of the prompt, itself included. The row sums to 1, and no row puts any
# weight above the diagonal, on a later token: that is the causal mask.
str_tokens = probe.to_str_tokens(prompt)
row = pattern[0, -1]
print(" ".join(f"{token!r}:{w:.2f}" for token, w in zip(str_tokens, row.tolist())))
print("row sum:", round(row.sum().item(), 4), "| weights above the diagonal:", float(pattern[0].triu(1).abs().max()))

# %%
# ## The layer is the sum of its heads
#
# Running every head of the layer this way and adding `b_O` once gives the attention
# layer's output, `hook_attn_out`: multi-head attention is independent heads whose
# results are added.
with torch.no_grad():
    total = probe.b_O[LAYER] + sum(load_head(LAYER, h)(x)[0] for h in range(cfg.n_heads))
print("sum of the heads + b_O == hook_attn_out:",
      torch.allclose(total, cache[names.attn_out(LAYER)], rtol=1e-4, atol=1e-5))

# %%
# ## The figure
#
# Left, the pattern computed by the textbook head; right, the `hook_pattern` captured
# from the model for the same head. Rows are queries (the token reading), columns keys
# (the token read); the colour is the weight, and every cell above the diagonal is 0,
# the causal mask. The two panels are the same picture.
import plotly.graph_objects as go  # noqa: E402
from plotly.subplots import make_subplots  # noqa: E402

from gpt2probe.report import display_token  # noqa: E402
from gpt2probe.report.style import category_axis  # noqa: E402

labels = [display_token(t) for t in str_tokens]
figure = make_subplots(rows=1, cols=2, subplot_titles=("from scratch", "hook_pattern"), horizontal_spacing=0.14)
for col, values in ((1, pattern[0]), (2, cache[names.pattern(LAYER)][0, HEAD])):
    figure.add_trace(go.Heatmap(z=values.tolist(), zmin=0, zmax=1, colorscale="Blues", showscale=col == 2,
                                hovertemplate="query %{y}, key %{x}: weight %{z:.3f}<extra></extra>"), row=1, col=col)
    figure.update_xaxes(category_axis(labels), title_text="key", row=1, col=col)
    figure.update_yaxes(category_axis(labels), title_text="query", autorange="reversed", row=1, col=col)
figure.update_layout(title=f"Head L{LAYER}H{HEAD}: the pattern from scratch, and as captured", height=520,
                     template="plotly_white", margin=dict(t=90))
figure
