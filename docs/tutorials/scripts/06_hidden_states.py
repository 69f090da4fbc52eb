"""Hidden states, layer by layer

Between the embeddings and the logits, GPT-2 keeps one vector per token, the *residual
stream* (`d_model` wide), and every block adds its attention and MLP outputs to it. This
tutorial captures the stream after each block with `run_with_cache`, compares it with
Hugging Face's `output_hidden_states`, and meets the first GPT-2 trap: the last hidden
state has already been through the final layer norm.
"""

import torch

import gpt2probe
from gpt2probe import names

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")
prompt = "The function returns a list of"

# %%
# ## Capturing the residual stream
#
# `run_with_cache` runs once and keeps the activations you name: a list of exact names, a
# glob such as `"blocks.*.hook_resid_post"`, a regex, or a predicate on names. Names are
# TransformerLens's, built by `gpt2probe.names`.
logits, cache = probe.run_with_cache(prompt, names="blocks.*.hook_resid_*")
print(cache)
for name, tensor in cache.items():
    print(f"{name:<28} {tuple(tensor.shape)}")

# %%
# `hook_resid_pre`, `hook_resid_mid` and `hook_resid_post` are the stream entering a
# block, between its attention and its MLP, and leaving it (`resid_post` of block `l` is
# `resid_pre` of block `l + 1`).
#
# `accumulated_resid` stacks the stream entering each block plus the final one:
# `[n_layers + 1, batch, pos, d_model]`. Its norm grows layer by layer, as every block
# adds to it.
stack, labels = cache.accumulated_resid(return_labels=True)
print("stack shape:", tuple(stack.shape))
for label, layer in zip(labels, stack):
    print(f"{label:<11} norm at the last position: {layer[0, -1].norm().item():8.3f}")

# %%
# ## Compared with Hugging Face's `hidden_states`
#
# `output_hidden_states=True` returns `n_layers + 1` tensors too. The first
# `n_layers` are the streams entering each block. The **last is not** the stream leaving
# the last block: Hugging Face applies the final layer norm `ln_f` to it first.
ids = probe.to_tokens(prompt).ids
with torch.no_grad():
    hidden = probe.model(ids, output_hidden_states=True).hidden_states
n = probe.cfg.n_layers
print("len(hidden_states):", len(hidden))
for layer in range(n):
    same = torch.allclose(hidden[layer], cache[names.resid_pre(layer)], atol=1e-5)
    print(f"hidden_states[{layer}] == resid_pre({layer}): {same}")
final = cache[names.resid_post(n - 1)]
ln_f = probe.model.transformer.ln_f
print(f"hidden_states[-1] == resid_post({n - 1}):      ", torch.allclose(hidden[-1], final, atol=1e-5))
print(f"hidden_states[-1] == ln_f(resid_post({n - 1})):", torch.allclose(hidden[-1], ln_f(final), atol=1e-5))

# %%
# So a logit lens built on `hidden_states` must *not* apply `ln_f` to the last entry a
# second time. Layer norm is not idempotent once its weight and bias are not 1 and 0,
# so doing it twice changes the logits:
W_U = probe.W_U
right = hidden[-1] @ W_U
twice = ln_f(hidden[-1]) @ W_U
print("ln_f once  == the model's logits:", torch.allclose(right, logits, atol=1e-4))
print("ln_f twice == the model's logits:", torch.allclose(twice, logits, atol=1e-4))
print(f"largest error from applying it twice: {(twice - logits).abs().max().item():.2f}")

# %%
# gpt2probe avoids the trap by never reading `hidden_states`: its hooks capture
# `blocks.{l}.hook_resid_post` (before `ln_f`) and `ln_final.hook_normalized`, and the
# logit lens applies `ln_f` to every stream exactly once.
#
# ## The stream is a sum
#
# The stream entering a block is the sum of the token and position embeddings and the
# outputs of every earlier attention layer and MLP. `decompose_resid` returns those parts.
names_needed = [names.EMBED, names.POS_EMBED, names.resid_post(n - 1)]
names_needed += [names.attn_out(l) for l in range(n)] + [names.mlp_out(l) for l in range(n)]
_, cache = probe.run_with_cache(prompt, names=names_needed)
parts, part_labels = cache.decompose_resid(return_labels=True)
print(part_labels)
print("parts sum to the final stream:", torch.allclose(parts.sum(0), cache[names.resid_post(n - 1)], atol=1e-4))

# %%
# ## Names are checked
#
# A misspelled or out-of-range name fails before anything runs, naming the nearest valid
# names; nothing is left attached to the model.
try:
    probe.run_with_cache(prompt, names=["blocks.9.hook_resid_post"])
except gpt2probe.HookNameError as error:
    print("HookNameError:", error)
try:
    probe.run_with_cache(prompt, names=["blocks.0.hook_resid_psot"])
except gpt2probe.HookNameError as error:
    print("HookNameError:", error)

# %%
# ## The figure: the stream's norm, layer by layer
#
# The norm of the residual stream entering each block (and the final one), at every
# position of the prompt: the `accumulated_resid` stack from above. Each block adds to
# the stream, and at most positions the norm grows from the embeddings (bottom) to the
# final stream (top). Adding can also shrink a vector: the first token's stream grows far
# larger than the others through the middle blocks, and the last block takes most of that
# away again.
import plotly.graph_objects as go  # noqa: E402

from gpt2probe.report import display_token  # noqa: E402
from gpt2probe.report.style import category_axis, colorbar  # noqa: E402

norms = stack[:, 0].norm(dim=-1)  # [stream, pos]
figure = go.Figure(go.Heatmap(z=norms.tolist(), colorscale="Viridis", colorbar=colorbar("norm"),
                              hovertemplate="stream %{y}, position %{x}: norm %{z:.2f}<extra></extra>"))
figure.update_xaxes(category_axis([display_token(t) for t in probe.to_str_tokens(prompt)]), title_text="token")
figure.update_yaxes(category_axis(labels), title_text="stream")
figure.update_layout(title="Norm of the residual stream entering each block", height=360, template="plotly_white")
figure
