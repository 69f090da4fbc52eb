"""Ablation: knock a component out and measure what breaks

To test whether a component matters, remove its contribution and see how the model's
behaviour changes. This tutorial ablates heads of `toy-induction`, whose circuit is
known (`L0H0` previous-token head, `L1H0` induction head), first with a hand-written hook
and then with `gpt2probe.interventions.ablate`, in the three usual ways: zero, mean and
resample. [Tutorial 15](15_induction_circuit.md) ablates the induction heads that
`tiny-english` learned in training, whose roles nobody set by hand.
"""

import torch

import gpt2probe
from gpt2probe import names
from gpt2probe.hooks import count_torch_hooks
from gpt2probe.interventions import ablate
from gpt2probe.toy import repeated_random_tokens

torch.manual_seed(0)
probe = gpt2probe.load("toy-induction", device="cpu")
HALF = 10
ids = repeated_random_tokens(n_seqs=8, half_len=HALF, vocab_size=64, seed=0)


def second_copy_loss(logits: torch.Tensor) -> float:
    """Mean loss (nats) predicting tokens 2..L of the second copy, which induction can predict."""
    logprobs = logits[:, HALF + 1 : 2 * HALF].log_softmax(-1)
    targets = ids[:, HALF + 2 :]
    return -logprobs.gather(-1, targets[..., None]).mean().item()


# %%
# ## The behaviour to break
#
# On `[BOS, x, x]` the model cannot predict the first copy (loss `ln 64 = 4.159` nats,
# uniform over its 64 tokens) and predicts the second copy almost perfectly.
clean = probe(ids)
print(f"second-copy loss, clean run: {second_copy_loss(clean):.4f} nats (uniform: {torch.log(torch.tensor(64.0)):.3f})")

# %%
# ## Ablation by hand
#
# A head's output is its `hook_z`, `[batch, pos, head, d_head]`: the attention-weighted
# values before `W_O`. A hook function that returns a modified tensor replaces the
# activation; zeroing head 0's slice removes that head's contribution.


def zero_head_0(z: torch.Tensor, hook) -> torch.Tensor:
    z = z.clone()
    z[:, :, 0] = 0.0
    return z


for layer in (0, 1):
    logits = probe.run_with_hooks(ids, fwd_hooks=[(names.z(layer), zero_head_0)])
    print(f"L{layer}H0 zeroed: second-copy loss {second_copy_loss(logits):.4f}")
print("PyTorch hooks left attached:", count_torch_hooks(probe.model))

# %%
# Both heads are necessary: without the previous-token head, the induction head has no
# "token before" information to match on; without the induction head, nothing copies.
#
# ## `ablate`
#
# `ablate` is a `with` block that attaches the same hooks for every forward pass inside
# it and removes them on exit, exceptions included. Heads are `(layer, head)` pairs;
# whole MLPs and single neurons work the same way.
for heads in ([(0, 0)], [(1, 0)], [(0, 1), (1, 1), (1, 2)]):
    with ablate(probe, heads=heads):
        print(f"zero-ablate {heads}: loss {second_copy_loss(probe(ids)):.4f}")
print("hooks after the with blocks:", count_torch_hooks(probe.model))

# %%
# ## Zero, mean and resample
#
# Zero ablation also removes a component's typical offset, which can break a model in
# ways unrelated to the input. *Mean* ablation replaces the activation with its average
# over a reference batch; *resample* ablation with its value on another reference
# example. Both need a reference: other repeated sequences, drawn with another seed.
reference = repeated_random_tokens(n_seqs=16, half_len=HALF, vocab_size=64, seed=1)
for mode in ("zero", "mean", "resample"):
    with ablate(probe, heads=[(1, 0)], mode=mode, reference=reference, seed=0):
        print(f"{mode:<8} ablation of L1H0: loss {second_copy_loss(probe(ids)):.4f}")

# %%
# Resampling the induction head's output from another sequence makes the model copy
# that sequence's tokens instead: worse than uniform, because it confidently predicts
# the wrong tokens.
#
# ## Errors name what is valid
try:
    with ablate(probe, heads=[(2, 0)]):
        pass
except gpt2probe.LayerIndexError as error:
    print("LayerIndexError:", error)

# %%
# ## The figure
#
# The second-copy loss of the clean run and of each ablation above, against the loss of
# a uniform guess (dashed). Knocking out either head of the circuit takes the model back
# to guessing, or worse; the other heads do not matter.
import plotly.graph_objects as go  # noqa: E402

from gpt2probe.report.style import category_axis  # noqa: E402

losses = {"clean": second_copy_loss(probe(ids))}
for label, heads, mode in (("zero L0H0", [(0, 0)], "zero"), ("zero L1H0", [(1, 0)], "zero"),
                           ("zero other heads", [(0, 1), (1, 1), (1, 2)], "zero"),
                           ("mean L1H0", [(1, 0)], "mean"), ("resample L1H0", [(1, 0)], "resample")):
    with ablate(probe, heads=heads, mode=mode, reference=reference, seed=0):
        losses[label] = second_copy_loss(probe(ids))
figure = go.Figure(go.Bar(x=list(range(len(losses))), y=list(losses.values()),
                          hovertemplate="%{y:.3f} nats<extra></extra>"))
figure.add_hline(y=float(torch.log(torch.tensor(64.0))), line_dash="dash", annotation_text="uniform guess (ln 64)")
figure.update_xaxes(category_axis(list(losses)))
figure.update_layout(title="Second-copy loss under each ablation", yaxis_title="loss (nats)", height=380,
                     template="plotly_white")
figure
