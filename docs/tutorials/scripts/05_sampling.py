"""Temperature, top-k and nucleus sampling

Sampling draws the next token from the model's distribution instead of taking its top.
Three knobs reshape that distribution first: temperature sharpens or flattens it,
top-k keeps the k most likely tokens, and nucleus (top-p) sampling keeps the smallest set
whose probability adds up to p. This tutorial applies each to one fixed distribution,
then generates with them. Every draw is seeded, so the output is reproducible.
"""

import torch

import gpt2probe
from gpt2probe.generation import generate, sampling_probs

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")
prompt = "The function returns"
logits = probe(prompt)[0, -1]


def describe(probs: torch.Tensor, label: str) -> None:
    kept = int((probs > 0).sum())
    top = probs.topk(3)
    shown = ", ".join(f"{probe.to_string([i])!r} {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
    print(f"{label:<18} tokens kept: {kept:>5}   top 3: {shown}")


# %%
# ## Temperature
#
# Logits are divided by the temperature before the softmax. Below 1 the distribution
# sharpens towards the top token (0 is greedy); above 1 it flattens.
for t in (0.0, 0.5, 1.0, 2.0):
    describe(sampling_probs(logits, temperature=t), f"temperature {t}")

# %%
# ## Top-k and nucleus (top-p)
#
# Top-k keeps a fixed number of tokens; top-p keeps as many as it takes to reach
# probability p, so it keeps few when the model is sure and many when it is not. The
# kept probabilities are renormalised.
describe(sampling_probs(logits), "no filter")
describe(sampling_probs(logits, top_k=10), "top_k=10")
describe(sampling_probs(logits, top_p=0.5), "top_p=0.5")
describe(sampling_probs(logits, top_p=0.9), "top_p=0.9")

# %%
# The nucleus is the shortest run of the sorted probabilities whose sum reaches p:
sorted_probs = logits.softmax(-1).sort(descending=True).values
needed = int((sorted_probs.cumsum(0) < 0.9).sum()) + 1
print("tokens needed to reach 0.9:", needed, "| kept by top_p=0.9:", int((sampling_probs(logits, top_p=0.9) > 0).sum()))

# %%
# ## Generating with a seed
#
# `generate` draws from a CPU random generator seeded per prompt, so a seed reproduces a
# run exactly on the same machine and device, and different seeds give different
# continuations. The random draws are the same on any device; the tokens drawn are too unless
# the logits differ in their last bits (another CPU or a GPU) right at a sampling boundary.
runs = {seed: generate(probe, prompt, max_new_tokens=12, temperature=1.0, seed=seed) for seed in (0, 1)}
for seed, out in runs.items():
    print(f"seed {seed}: {out.continuations[0]!r}")
again = generate(probe, prompt, max_new_tokens=12, temperature=1.0, seed=0)
print("seed 0 again, identical:", torch.equal(again.new_ids, runs[0].new_ids))

# %%
# ## The trade-off
#
# Low temperature and small k or p stay close to the greedy text (and its repetitions);
# high temperature produces more varied, less coherent text.
for label, settings in [
    ("temperature 0.3", dict(temperature=0.3)),
    ("top_k 5", dict(top_k=5)),
    ("top_p 0.9", dict(top_p=0.9)),
    ("temperature 1.5", dict(temperature=1.5)),
]:
    out = generate(probe, prompt, max_new_tokens=12, seed=0, **settings)
    print(f"{label:<16} {out.continuations[0]!r}")

# %%
# ## The figure: one distribution, three temperatures
#
# The probabilities of the 10 most likely next tokens after `"The function returns"` at
# temperature 0.5, 1 and 2. Low temperature piles the probability onto the top token;
# high temperature spreads it over many.
import plotly.graph_objects as go  # noqa: E402

from gpt2probe.report import display_token  # noqa: E402
from gpt2probe.report.style import category_axis  # noqa: E402

top_ids = logits.topk(10).indices
labels = [display_token(probe.to_string([i])) for i in top_ids.tolist()]
figure = go.Figure([
    go.Bar(name=f"temperature {t}", x=list(range(10)), y=sampling_probs(logits, temperature=t)[top_ids].tolist(),
           hovertemplate=f"temperature {t}: p = %{{y:.3f}}<extra></extra>")
    for t in (0.5, 1.0, 2.0)
])
figure.update_xaxes(category_axis(labels), title_text="token")
figure.update_layout(title="The top 10 tokens' probabilities at three temperatures", barmode="group",
                     yaxis_title="probability", height=380, template="plotly_white")
figure
