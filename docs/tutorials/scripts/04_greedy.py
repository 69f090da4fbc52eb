"""Greedy decoding, and why it repeats itself

Generating text is a loop: predict the next token, append it, predict again. Greedy
decoding always appends the single most likely token. It is deterministic and often
gets stuck in a loop; this tutorial shows both, and how to look at the loop.
"""

import torch

import gpt2probe
from gpt2probe.generation import generate

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")

# %%
# ## The loop, by hand
#
# Five steps of "take the argmax and append it". Each step reruns the whole sequence,
# which is simple and slow.
ids = probe.to_tokens("The value of").ids
for _ in range(5):
    new = probe(ids)[0, -1].argmax()
    ids = torch.cat([ids, new.view(1, 1)], dim=1)
print(repr(probe.to_string(ids[0])))

# %%
# ## `generate`
#
# `generate` runs the same loop with Hugging Face's key-value cache: the prompt once, then
# one new token per step. With `greedy=True` (or `temperature=0`) it takes the argmax.
out = generate(probe, "The value of", max_new_tokens=5, greedy=True)
print(out)
print("same as by hand:", out.texts[0] == probe.to_string(ids[0]))

# %%
# ## Greedy text repeats
#
# Longer greedy continuations fall into a cycle. This small model, trained on Python's
# documentation and source code, full of indentation, ends up emitting spaces forever.
out = generate(probe, "The module provides", max_new_tokens=60, greedy=True)
new = out.new_tokens(0).tolist()
print(probe.to_str_tokens(new)[:12], "...")
print(probe.to_str_tokens(new)[-12:])

# %%
# Finding the cycle: the shortest period with which the end of the continuation
# repeats at least three times.


def period(seq: list[int], max_period: int = 10) -> int | None:
    """The smallest p such that the last 3 * p tokens repeat with period p."""
    for p in range(1, max_period + 1):
        tail = seq[-3 * p :]
        if len(tail) == 3 * p and all(tail[i] == tail[i - p] for i in range(p, len(tail))):
            return p
    return None


p = period(new)
print("period:", p, "repeating unit:", probe.to_str_tokens(new[-p:]) if p else None)

# %%
# ## Why: the loop reinforces itself
#
# Greedy decoding ignores how sure the model was. One forward pass over the prompt and
# its continuation gives the probability the model assigned to each token greedy chose.
# The words at the start are far from certain: the chosen token often has a third of
# the probability or less, and other continuations were nearly as likely (sampling, the
# next tutorial, would take them). Once the model has switched to spaces, another space
# takes almost all of the probability at every step, so greedy decoding can never leave
# the loop, although the model grows slightly less sure as the run of spaces lengthens.
sequence = out.sequence(0)
n_prompt = len(sequence) - len(new)
probs = probe(sequence)[0].softmax(-1)
chosen = probs[n_prompt - 1 : -1].gather(-1, sequence[n_prompt:, None])[:, 0]
for step in (0, 1, 2, 5, 10, 20, 30, 40, 50, 59):
    token = probe.to_string([new[step]])
    print(f"step {step:>2}: chose {token!r:<6} with p = {chosen[step].item():.3f}")

# %%
# ## The figure: how sure each greedy step was
#
# The probability the model gave to each token greedy decoding chose, step by step (hover
# for the token). The early steps are uncertain (except inside a word the model knows,
# such as `__dict__`); once the continuation has fallen into its cycle, every repetition
# is close to certain.
import plotly.graph_objects as go  # noqa: E402

from gpt2probe.report import display_token  # noqa: E402

chosen_tokens = [display_token(probe.to_string([i])) for i in new]
figure = go.Figure(go.Scatter(x=list(range(len(new))), y=chosen.tolist(), mode="lines+markers", text=chosen_tokens,
                              hovertemplate="step %{x}: %{text} with p = %{y:.3f}<extra></extra>"))
figure.update_layout(title="Probability of the token greedy decoding chose, per step", xaxis_title="step",
                     yaxis_title="p(chosen token)", yaxis_range=[0, 1], height=360, template="plotly_white")
figure
