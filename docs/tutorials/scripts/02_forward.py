"""One forward pass and the shape of the logits

A forward pass turns `pos` token ids into `pos` rows of logits, one score per vocabulary
entry. Row `i` is the model's guess for token `i + 1`. This tutorial runs one pass,
reads the shape, checks the probe against the Hugging Face model it wraps, and shows why
a left-padded batch needs position ids.
"""

import torch

import gpt2probe

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")

# %%
# ## Logits: `[batch, pos, d_vocab]`
#
# Calling the probe runs the model (without gradients) and returns the logits.
text = "The function returns a list of"
logits = probe(text)
print("tokens:", probe.to_str_tokens(text))
print("logits shape [batch, pos, d_vocab]:", tuple(logits.shape))
print("dtype:", logits.dtype)

# %%
# Every position predicts the *next* token. Reading the argmax at each position shows
# what the model expected after each prefix; the last row is the prediction for the
# token after the prompt, the one generation would use.
str_tokens = probe.to_str_tokens(text)
guesses = logits[0].argmax(-1)
for i, token in enumerate(str_tokens):
    actual = str_tokens[i + 1] if i + 1 < len(str_tokens) else "?"
    print(f"after {token!r:<12} predicts {probe.to_string([int(guesses[i])])!r:<12} actual next: {actual!r}")

# %%
# ## The same numbers as Hugging Face
#
# The probe is a thin layer over a plain `GPT2LMHeadModel` (`probe.model`): with no hooks
# attached, its logits are the model's own.
ids = probe.to_tokens(text).ids
with torch.no_grad():
    hf_logits = probe.model(ids).logits
print("identical to HF:", torch.equal(logits, hf_logits))

# %%
# ## A batch equals separate runs
#
# A batch is left-padded with `<|endoftext|>`. The probe passes the attention mask *and*
# position ids that skip the pads, so each row matches a run of its prompt alone, up to
# float32 rounding: the padded batch multiplies matrices of other shapes, so the last
# digits can differ. The tolerance is relative to the size of the logits.
prompts = ["import os", "The function returns a list of"]
batch = probe.to_tokens(prompts)
batch_logits = probe(batch)
for row, prompt in enumerate(prompts):
    alone = probe(prompt)[0]
    real = batch_logits[row, batch.real_positions(row)]
    close = torch.allclose(real, alone, rtol=0.0, atol=1e-5 * alone.abs().max().item())
    print(f"row {row} {prompt!r}: equals its run alone (to 1e-5 of the largest logit): {close}")

# %%
# Calling the Hugging Face model with the mask but *without* position ids numbers the
# positions 0, 1, 2, ... from the first pad, so the short prompt's tokens get the wrong
# position embeddings and different predictions. This is the left-padding trap.
with torch.no_grad():
    no_positions = probe.model(input_ids=batch.ids, attention_mask=batch.attention_mask).logits
alone = probe(prompts[0])[0]
wrong = no_positions[0, batch.real_positions(0)]
print(f"without position ids: max |batch - alone| = {(wrong - alone).abs().max().item():.2f}")
print("position ids used by the probe:", batch.position_ids[0].tolist())

# %%
# ## The figure: one row of logits
#
# The last position's logits (the scores for the token after `"The function returns a
# list of"`), for the 10 highest-scoring tokens. They are raw scores, not
# probabilities: the next tutorial turns them into probabilities with a softmax.
import plotly.graph_objects as go  # noqa: E402

from gpt2probe.report import display_token  # noqa: E402
from gpt2probe.report.style import category_axis  # noqa: E402

top = logits[0, -1].topk(10)
labels = [display_token(probe.to_string([i])) for i in top.indices.tolist()]
figure = go.Figure(go.Bar(x=list(range(10)), y=top.values.tolist(), text=labels,
                          hovertemplate="%{text}: logit %{y:.2f}<extra></extra>", textposition="none"))
figure.update_xaxes(category_axis(labels), title_text="token")
figure.update_layout(title="The 10 largest logits at the last position", yaxis_title="logit", height=360,
                     template="plotly_white")
figure
