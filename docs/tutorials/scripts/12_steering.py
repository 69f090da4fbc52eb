"""Steering: push the residual stream in a direction

If a property of the text (a topic, a sentiment) is represented as a direction in the
residual stream, adding that direction while the model runs should push its output
towards the property. This tutorial builds a direction as a *mean difference* between
two sets of prompts in `tiny-english`, adds it with `gpt2probe.interventions.steer`,
measures the effect on next-token probabilities, compares it with a random direction,
and steers generation.
"""

import torch

import gpt2probe
from gpt2probe import names
from gpt2probe.generation import generate
from gpt2probe.interventions import mean_difference_vector, steer, steering_hook

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")

# %%
# ## A direction from two sets of prompts
#
# Prompts about exceptions, and prompts about lists. `mean_difference_vector` reads the
# residual stream entering a layer for each prompt (here averaged over each prompt's
# tokens, `position=None`) and subtracts the means of the two sets.
about_exceptions = [
    "An exception is raised when the error",
    "The try statement handles the exception",
    "If an error occurs, an exception",
    "raise ValueError and the exception",
]
about_lists = [
    "A list is a sequence of items",
    "The list contains the elements",
    "Append the item to the list",
    "Items of a list are",
]
LAYER = 2
vector = mean_difference_vector(probe, about_exceptions, about_lists, layer=LAYER, position=None)
print("vector shape:", tuple(vector.shape), "norm:", round(vector.norm().item(), 3))

# %%
# ## Measuring the push
#
# On a neutral prompt, compare the probabilities of `" exception"` and `" list"` as the
# direction is added with growing strength `alpha` (negative values push the other
# way). The log-ratio summarises the balance between the two.
prompt = "The result is an"
exception, list_ = probe.to_single_token(" exception"), probe.to_single_token(" list")


def balance() -> tuple[float, float, float]:
    probs = probe(prompt)[0, -1].softmax(-1)
    return probs[exception].item(), probs[list_].item(), (probs[exception] / probs[list_]).log().item()


for alpha in (-4.0, -2.0, 0.0, 2.0, 4.0):
    with steer(probe, LAYER, vector, alpha=alpha):
        p_exc, p_list, log_ratio = balance()
    print(f"alpha {alpha:+.0f}: p(' exception') {p_exc:.4f}  p(' list') {p_list:.4f}  log ratio {log_ratio:+.2f}")

# %%
# ## A control: a random direction
#
# Any large enough vector changes the output. A fair test compares with random
# directions of the same norm: they should not move the balance consistently.
generator = torch.Generator().manual_seed(0)
for i in range(3):
    random_direction = torch.randn(probe.cfg.d_model, generator=generator)
    random_direction *= vector.norm() / random_direction.norm()
    with steer(probe, LAYER, random_direction, alpha=4.0):
        _, _, log_ratio = balance()
    print(f"random direction {i}, alpha +4: log ratio {log_ratio:+.2f}")

# %%
# Random directions of the same norm lower the log ratio instead of raising it: the
# mean-difference direction's push is not just the effect of adding a large vector.
#
# ## What `steer` does
#
# `steer` attaches one hook on `blocks.{layer}.hook_resid_pre` that adds `alpha * vector`
# at every position. The same by hand:


def add_vector(resid: torch.Tensor, hook) -> torch.Tensor:
    return resid + 4.0 * vector


by_hand = probe.run_with_hooks(prompt, fwd_hooks=[(names.resid_pre(LAYER), add_vector)])
with steer(probe, LAYER, vector, alpha=4.0):
    steered = probe(prompt)
print("steer == hook by hand:", torch.allclose(by_hand, steered, atol=1e-5))

# %%
# ## Steering generation
#
# Hooks stay active for every step of `generate`, so the steered model writes steered
# text. With the same seed, only the steering differs between these runs.
start = "When the function is called, the"
for alpha in (0.0, 4.0):
    out = generate(probe, start, max_new_tokens=12, temperature=0.7, seed=0,
                   hooks=[(names.resid_pre(LAYER), steering_hook(vector, alpha))])
    print(f"alpha {alpha:+.0f}: {out.continuations[0]!r}")

# %%
# ## The figure
#
# The log ratio `log p(' exception') / p(' list')` on the neutral prompt as the strength
# `alpha` grows, for the mean-difference direction and for three random directions of
# the same norm. The mean-difference line climbs all the way from `alpha = -4` to `+4`;
# the random lines move much less, mostly down from the unsteered value: any vector this
# large disturbs the prediction, but only the mean-difference direction moves it
# consistently from one word to the other.
import plotly.graph_objects as go  # noqa: E402

alphas = [-4.0, -2.0, 0.0, 2.0, 4.0]
directions = {"mean difference": vector}
generator = torch.Generator().manual_seed(0)
for i in range(3):
    random_direction = torch.randn(probe.cfg.d_model, generator=generator)
    directions[f"random {i}"] = random_direction * vector.norm() / random_direction.norm()
figure = go.Figure()
for label, direction in directions.items():
    ratios = []
    for alpha in alphas:
        with steer(probe, LAYER, direction, alpha=alpha):
            ratios.append(balance()[2])
    figure.add_trace(go.Scatter(x=alphas, y=ratios, mode="lines+markers", name=label,
                                line=dict(dash=None if label == "mean difference" else "dot")))
figure.update_layout(title="Steering strength against the balance of ' exception' and ' list'",
                     xaxis_title="alpha", yaxis_title="log p(' exception') / p(' list')", height=380,
                     template="plotly_white")
figure
