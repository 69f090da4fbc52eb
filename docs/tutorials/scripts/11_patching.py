"""Activation patching: where does the answer live?

Ablation asks whether a component matters; *patching* asks where the information that
decides an answer is. Run a *clean* input and a *corrupted* one that differs in one
token, then rerun the corrupted input with one activation copied from the clean run: if
the clean answer comes back, that activation carried it. This tutorial patches the
residual stream position by position, and then each head, in `toy-induction`.
[Tutorial 15](15_induction_circuit.md) patches the heads of the copying circuit that
`tiny-english` learned, and compares exact patching with attribution patching there.
"""

import torch

import gpt2probe
from gpt2probe import names
from gpt2probe.interventions import patch

torch.manual_seed(0)
probe = gpt2probe.load("toy-induction", device="cpu")

# %%
# ## Clean and corrupted inputs
#
# The clean input is a block of tokens followed by a repeat that stops one token short:
# an induction head predicts the block's last token, 9. The corrupted input replaces
# that 9 in the first copy by 30, so the model should now predict 30. Both have the same
# length, so positions correspond one to one.
clean = torch.tensor([0, 5, 6, 7, 8, 9, 5, 6, 7, 8])
corrupted = torch.tensor([0, 5, 6, 7, 8, 30, 5, 6, 7, 8])
ANSWER, WRONG = 9, 30
for label, ids in (("clean", clean), ("corrupted", corrupted)):
    last = probe(ids)[0, -1]
    print(f"{label:<9} predicts {int(last.argmax())}; logit[9] - logit[30] = {(last[ANSWER] - last[WRONG]).item():7.3f}")

# %%
# ## Patching the residual stream
#
# `patch` reruns the corrupted input once per (layer, position), each time replacing the
# stream entering that layer at that position with its clean value, and reports the
# metric `logit[answer] - logit[wrong]` normalised so that the corrupted run gives 0
# and the clean run 1.
result = patch(probe, clean, corrupted, kind="resid_pre", answer=ANSWER, wrong=WRONG)
print("axes:", result.axis_names)
print("pos:", " ".join(f"{p:6d}" for p in range(len(clean))))
for layer, row in zip(result.axis_labels[0], result.values.tolist()):
    print(f"{layer:<3}", " ".join(f"{v:6.2f}" for v in row))

# %%
# Entering layer 0, only position 5, where the two inputs differ, matters. Entering
# layer 1, position 5 still carries the answer: the induction head at the last position
# attends there (the token after the earlier 8) and copies what it finds. Nowhere else
# does the clean stream restore anything.
#
# ## Patching heads
#
# `kind="head"` patches one head's output (`hook_z`) at every position at once. Only
# the induction head restores the answer by itself: it is the component that moves the
# information to the last position. (Position labels in `result.axis_labels` are token
# strings from the GPT-2 tokenizer, meaningless for this toy vocabulary.)
heads = patch(probe, clean, corrupted, kind="head", answer=ANSWER, wrong=WRONG)
for layer, row in zip(heads.axis_labels[0], heads.values.tolist()):
    print(f"{layer:<3}", " ".join(f"H{h} {v:5.2f}" for h, v in enumerate(row)))

# %%
# ## The same patch by hand
#
# One patch is a hook that swaps in a saved activation. Here, the stream entering
# layer 1 at position 5, copied from the clean run into the corrupted one:
_, clean_cache = probe.run_with_cache(clean, names=[names.resid_pre(1)])
saved = clean_cache[names.resid_pre(1)]


def put_back(resid: torch.Tensor, hook) -> torch.Tensor:
    resid = resid.clone()
    resid[:, 5] = saved[:, 5]
    return resid


last = probe.run_with_hooks(corrupted, fwd_hooks=[(names.resid_pre(1), put_back)])[0, -1]
clean_m, corrupted_m = result.clean_metric, result.corrupted_metric
value = ((last[ANSWER] - last[WRONG]).item() - corrupted_m) / (clean_m - corrupted_m)
print(f"by hand: {value:.2f}; from patch(): {result.values[1, 5].item():.2f}")

# %%
# ## Noising
#
# `direction="noise"` does the opposite: run the clean input and patch in one corrupted
# activation. A value near 0 means that activation was *necessary* for the clean answer.
noised = patch(probe, clean, corrupted, kind="head", answer=ANSWER, wrong=WRONG, direction="noise")
for layer, row in zip(noised.axis_labels[0], noised.values.tolist()):
    print(f"{layer:<3}", " ".join(f"H{h} {v:5.2f}" for h, v in enumerate(row)))

# %%
# ## The figure
#
# `gpt2probe.report.patching_heatmap` draws the residual-stream patching result from
# above: one row per layer, one column per position, each cell the normalised metric
# after patching that one stream (1 = the clean answer fully restored, 0 = no effect;
# blue positive, red negative). The two restoring cells are position 5 entering layers 0
# and 1, where the inputs differ; the figure's subtitle gives the raw clean and corrupted
# metrics the normalisation is based on.
from gpt2probe import report  # noqa: E402

figure = report.patching_heatmap(result, "Patching the residual stream, clean into corrupted",
                                 "the stream entering one layer at one position")
figure
