"""Next-token probabilities and top-k

The logits of the last position are scores; a softmax turns them into a probability for
every token in the vocabulary. This tutorial computes that distribution by hand, reads
its top-k with `gpt2probe.generation.next_token`, and scores a whole text token by token.
"""

import torch

import gpt2probe
from gpt2probe.generation import next_token

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")

# %%
# ## By hand
#
# The prediction for the token after the prompt lives in the last position's logits.
# Softmax makes them probabilities that sum to 1 over all 50,257 tokens.
prompt = "The return value of the function is"
last = probe(prompt)[0, -1]
probs = last.softmax(-1)
print("sum of probabilities:", round(probs.sum().item(), 4))
top = probs.topk(5)
for p, i in zip(top.values.tolist(), top.indices.tolist()):
    print(f"{probe.to_string([i])!r:<12} id {i:>5}  p = {p:.4f}")

# %%
# ## `next_token`
#
# `next_token` does the same and keeps ids, token strings, probabilities and raw logits.
# Its table shows token strings with `repr`, so leading spaces and newlines are visible.
prediction = next_token(probe, prompt, k=5)
print(prediction.table())
print()
token, p = prediction.top1()
print(f"top-1: {token!r} with p = {p:.4f}")
print("same ids as by hand:", torch.equal(prediction.ids[0], top.indices))

# %%
# A list of prompts runs as one left-padded batch; each row is read at its own last
# real token.
print(next_token(probe, ["import", "The value of x is", "for i in"], k=3))

# %%
# ## Probabilities are not certainties
#
# The k shown are the head of the distribution. How much mass they hold, and the
# entropy of the whole distribution (in nats; `ln(50257) = 10.82` is uniform), say how
# sure the model is.
entropy = -(probs * probs.log()).sum()
print(f"top-5 mass: {top.values.sum().item():.3f}")
print(f"entropy: {entropy.item():.3f} nats")

# %%
# ## Scoring a text
#
# Position `i` predicts token `i + 1`, so one pass scores every token of a text at once:
# the log-probability of each actual next token, and their mean negated (the loss the
# model was trained to minimise).
text = "The function returns a list of strings."
ids = probe.to_tokens(text).ids
logprobs = probe(ids)[0].log_softmax(-1)
actual = logprobs[:-1].gather(-1, ids[0, 1:, None])[:, 0]
for token, lp in zip(probe.to_str_tokens(text)[1:], actual.tolist()):
    print(f"{token!r:<12} log p = {lp:7.3f}")
print(f"mean loss: {-actual.mean().item():.3f} nats per token")

# %%
# ## The figure: the text, scored
#
# Each bar is the log-probability the model gave to one token of the text, given the
# tokens before it (the numbers printed above). Bars near 0 are tokens the model
# expected; long bars are surprises.
import plotly.graph_objects as go  # noqa: E402

from gpt2probe.report import display_token  # noqa: E402
from gpt2probe.report.style import category_axis  # noqa: E402

scored = probe.to_str_tokens(text)[1:]
figure = go.Figure(go.Bar(x=list(range(len(scored))), y=actual.tolist(),
                          hovertemplate="token %{x}: log p %{y:.3f}<extra></extra>"))
figure.update_xaxes(category_axis([display_token(t) for t in scored]), title_text="token (predicted from the ones before)")
figure.update_layout(title="Log-probability of each actual next token", yaxis_title="log p (nats)", height=380,
                     template="plotly_white")
figure
