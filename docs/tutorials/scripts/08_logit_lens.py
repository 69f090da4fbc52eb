"""The logit lens

If the model stopped after block `l`, what would it predict? The logit lens answers by
reading each layer's residual stream through the final layer norm and the unembedding,
exactly as the model reads its last one. This tutorial runs `gpt2probe.logit_lens`,
explains its streams (`embed`, `L{l}.mid`, `L{l}`), and rebuilds one read-out by hand.
"""

import torch
import torch.nn.functional as F

import gpt2probe
from gpt2probe import names

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")
prompt = "The function returns a list of the"

# %%
# ## Top predictions, layer by layer
#
# One call returns, for every stream and position, the top-k tokens, entropy and the KL
# divergence to the model's final prediction. Streams are `embed` (the embeddings
# alone), then `L0` ... `L{n-1}` (the stream after each block); the last is the model's
# own output.
lens = gpt2probe.logit_lens(probe, prompt, k=3)
item = lens[0]
print("streams:", item.stream_labels)
print("tokens: ", item.str_tokens)
for s, label in enumerate(item.stream_labels):
    tokens = ", ".join(f"{t!r} {p:.3f}" for t, p in zip(item.top_tokens[s][-1], item.top_probs[s, -1].tolist()))
    print(f"{label:<6} KL to final {item.kl_to_final[s, -1].item():6.3f}  top-3 after the last token: {tokens}")

# %%
# The `embed` stream predicts the current token again (`' the'` after `' the'`): with
# the unembedding tied to the embedding, a token's embedding has a large dot product with
# itself. The blocks move the prediction away from that, towards a next token; the KL to
# the final prediction shrinks to 0 at the last stream, which *is* the model's output.
#
# ## Following the actual next token
#
# `targets="next"` tracks, at each position, the probability and rank of the token that
# really comes next. In this 4-layer model the jump mostly happens in block 0: the
# embeddings alone give the actual next token almost no probability, and after the first
# block it often has about as much as it will get; the later blocks move it up or down.
# The exceptions are the first two tokens, `' function'` and `' returns'`, which gain
# their probability only in the last block.
lens = gpt2probe.logit_lens(probe, prompt, targets="next")
item = lens[0]
print("stream  " + " ".join(f"{t!r:>10}" for t in item.target_tokens[:-1]))
for s, label in enumerate(item.stream_labels):
    print(f"{label:<7} " + " ".join(f"{p:10.4f}" for p in item.target_prob[s, :-1].tolist()))
print("rank of the actual next token at the last stream:", item.target_rank[-1, :-1].tolist())

# %%
# ## Between attention and MLP
#
# `include_mid=True` adds `L{l}.mid`, the stream after block `l`'s attention and before
# its MLP (`blocks.{l}.hook_resid_mid`), which separates what attention and the MLP
# each changed.
mid = gpt2probe.logit_lens(probe, prompt, k=1, include_mid=True, positions="last")[0]
for s, label in enumerate(mid.stream_labels):
    token, p = mid.top1(stream=s)
    print(f"{label:<7} {token!r:<12} {p:.3f}")

# %%
# ## By hand
#
# The read-out of one stream is `ln_f(stream) @ W_U`, with `ln_f` normalising the stream
# by its *own* mean and variance. The final stream is `blocks.{n-1}.hook_resid_post`,
# before `ln_f`; that is why the lens applies `ln_f` once to every stream, the last one
# included (Hugging Face's `hidden_states[-1]` would already be normalised).
layer = 1
_, cache = probe.run_with_cache(prompt, names=[names.resid_post(layer)])
stream = cache[names.resid_post(layer)][0, -1]
ln_f = probe.model.transformer.ln_f
probs = F.softmax(ln_f(stream) @ probe.W_U, dim=-1)
top = probs.topk(3)
lens = gpt2probe.logit_lens(probe, prompt, k=3, positions="last")[0]
s = lens.stream_labels.index(f"L{layer}")
print("by hand:", [probe.to_string([i]) for i in top.indices.tolist()], [round(p, 4) for p in top.values.tolist()])
print("lens:   ", lens.top_tokens[s][0], [round(p, 4) for p in lens.top_probs[s, 0].tolist()])
print("same:", torch.equal(top.indices, lens.top_ids[s, 0]) and torch.allclose(top.values, lens.top_probs[s, 0], atol=1e-5))

# %%
# ## Batches and saving
#
# A list of prompts runs in left-padded batches; positions always index each prompt's
# own tokens. Results save to safetensors and load back without the model.
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

lens = gpt2probe.logit_lens(probe, ["import os", "The function returns a list of the"], k=1, positions="last")
for item in lens:
    print(f"{item.prompt!r:<38} final top-1: {item.top1()[0]!r}")
with tempfile.TemporaryDirectory() as tmp:
    lens.save(Path(tmp) / "lens.safetensors")
    loaded = gpt2probe.LensResult.load(Path(tmp) / "lens.safetensors")
print("loaded:", loaded.prompts, torch.equal(loaded[1].top_ids, lens[1].top_ids))

# %%
# ## The figure
#
# `gpt2probe.report.lens_heatmap` draws a lens result: one row per stream (the embeddings
# at the bottom, the model's output at the top), one column per input token. Each cell
# shows that stream's top-1 prediction for the next token, coloured by its probability;
# the top axis shows the token that actually comes next, and outlined cells are those
# whose top-1 is that token. The buttons switch the colour to the entropy, the KL to the
# final prediction, or the actual next token's probability or rank; hovering a cell
# lists its top-k.
from gpt2probe import report  # noqa: E402

figure = report.lens_heatmap(gpt2probe.logit_lens(probe, prompt, k=3, targets="next")[0], metric="prob")
figure
