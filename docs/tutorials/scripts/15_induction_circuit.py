"""A circuit that training made: induction heads in tiny-english

Tutorials [9](09_attention.md) to [11](11_patching.md) found a circuit in
`toy-induction`, whose weights were set by hand so that the answer was known in advance.
`tiny-english` was trained instead: its weights come from gradient descent on Python's
documentation, docstrings and source code (plus passages and random blocks that repeat),
and nothing told it how to copy. It learned to anyway. This tutorial follows that circuit with the same tools, without assuming which
heads form it: the loss on a repeated sequence, head scores, attention patterns,
zero-ablation, exact activation patching and attribution patching.
"""

import pydoc_data.topics
import tempfile
from collections import Counter
from pathlib import Path

import torch

import gpt2probe
from gpt2probe import head_scores, names
from gpt2probe.head_scores import head_label

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")
print(probe)

# %%
# ## Repeated random tokens
#
# Random tokens cannot be predicted from language, so a model that predicts them the
# second time must have read them the first time. The tokens are drawn from the 3,000
# commonest in Python's documentation (a token the model never saw in training has an
# untrained embedding, which tests the training data rather than the circuit). Each
# sequence is `<|endoftext|>`, 20 random tokens, and the same 20 again: 16 sequences of
# 41 tokens.
HALF, N_SEQS, EOT = 20, 16, 50256
counts = Counter(t for text in pydoc_data.topics.topics.values() for t in probe.tokenizer(text).input_ids)
counts.pop(EOT, None)
pool = torch.tensor([token for token, _ in counts.most_common(3000)])
generator = torch.Generator().manual_seed(1)
halves = torch.stack([pool[torch.randperm(len(pool), generator=generator)[:HALF]] for _ in range(N_SEQS)])
ids = torch.cat([torch.full((N_SEQS, 1), EOT), halves, halves], dim=1)
tokens = probe.to_str_tokens(ids[0])
print("shape:", tuple(ids.shape))
print("sequence 0:", tokens[:1 + HALF])
print("then again:", tokens[1 + HALF:])

# %%
# ## The behaviour: the repeated half is predicted
#
# The loss (nats) on each token, averaged over the 16 sequences: the first half from its
# second token (the first follows `<|endoftext|>` alone), and the whole repeated half.
# Guessing uniformly over the 50,257 tokens would cost `ln 50257 = 10.82` nats.


def half_losses(logits: torch.Tensor) -> tuple[float, float]:
    """Mean loss predicting the first half's tokens 2..20 and the repeated half's 20 tokens."""
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    return losses[:, 1:HALF].mean().item(), losses[:, HALF:].mean().item()


first, repeated = half_losses(probe(ids))
print(f"first half:    {first:.2f} nats")
print(f"repeated half: {repeated:.2f} nats")
print(f"copying advantage: {first - repeated:.2f} nats per token")

# %%
# The first half costs more than a uniform guess: the model confidently predicts
# language, and random tokens are not language. The second half costs a fraction of it.
#
# ## Head scores
#
# An induction circuit needs two heads in different layers: a *previous-token head*,
# which copies into each position the token before it, and an *induction head* later,
# which at a repeated token attends to the position right after that token's earlier
# occurrence (the position whose previous token matches the current one) and copies what
# it finds. `gpt2probe.head_scores` measures both from the attention patterns of one
# run: the mean weight on the previous position, and, over the repeated half, the mean
# weight on the induction target.
_, cache = probe.run_with_cache(ids, names=head_scores.PATTERN_NAMES)
scores = {
    "previous_token": head_scores.previous_token_scores(cache),
    "induction": head_scores.induction_scores_from_cache(cache, HALF),
}
for key, grid in scores.items():
    print(f"{head_scores.SCORE_LABELS[key]} scores, one row per layer:")
    for layer, row in enumerate(grid.tolist()):
        print(f"  L{layer}", " ".join(f"H{h} {v:.2f}" for h, v in enumerate(row)))
    top = head_scores.rank_heads(grid, top=3)
    print("  top:", ", ".join(f"{head_label(layer, head)} {v:.2f}" for layer, head, v in top))
previous_head = head_scores.rank_heads(scores["previous_token"], top=1)[0][:2]
induction_heads = [(layer, head) for layer, head, v in head_scores.rank_heads(scores["induction"], top=2)]

# %%
# The best previous-token head is in layer 0 and the two best induction heads are in
# the last layer: the order the circuit needs, since the induction head's keys must
# already hold "the token before me" when it reads them.
#
# ## What the heads look at
#
# The pattern of one sequence, query by query at the start of the repeated half: the
# position where the previous-token head and the top induction head put their largest
# weight. Position 21 is the first token of the repeat; the induction target of query
# `q` is position `q - 19`, the token that followed the current one last time.
patterns = {layer: cache[names.pattern(layer)][0] for layer in range(probe.cfg.n_layers)}
print(f"{'query':<21}" + "".join(f"{head_label(*head) + ' reads':<30}" for head in (previous_head, induction_heads[0])))
for query in range(1 + HALF, 1 + HALF + 8):
    line = f"{query:>2} {tokens[query]!r:<18}"
    for layer, head in (previous_head, induction_heads[0]):
        key = int(patterns[layer][head, query].argmax())
        line += f"{f'{key:>2} {tokens[key]!r}':<22} {patterns[layer][head, query, key].item():.2f}  "
    print(line.rstrip())

# %%
# In this sequence, at the first token of the repeat the induction head still rests
# mostly on `<|endoftext|>`; from the second on it reads the target. Over all 16
# sequences, the induction heads' mean weight on the target grows along the repeat
# (queries 21 to 40):
queries = torch.arange(1 + HALF, 1 + 2 * HALF)
for layer, head in induction_heads:
    on_target = cache[names.pattern(layer)][:, head, queries, queries - (HALF - 1)].mean(0)
    print(head_label(layer, head), " ".join(f"{w:.2f}" for w in on_target.tolist()))

# %%
# ## The attention viewer
#
# `gpt2probe attention --model tiny-english` writes every head of a prompt into one
# offline HTML page: thumbnails of all heads with their scores, one head drawn large, and
# the tokens (hover one to see what it attends to and what attends to it). The same page
# from Python, for this sequence:
from gpt2probe.report import encode_attention, write_attention_viewer  # noqa: E402

data = encode_attention(torch.stack([patterns[layer] for layer in range(probe.cfg.n_layers)]), tokens, scores)
with tempfile.TemporaryDirectory() as tmp:
    path, threshold = write_attention_viewer(
        Path(tmp) / "attention.html", data, title="Attention patterns: tiny-english",
        model_name="tiny-english", prompt="<|endoftext|> + 20 random tokens + the same 20 again",
    )
    page = path.read_text(encoding="utf-8")
print(f"{data.n_layers} x {data.n_heads} heads of {data.n_tokens} tokens; weights dropped to fit: {threshold}")
print("self-contained (no <script src=...>):", "<script src=" not in page)

# %%
# The same patterns as a Plotly figure (`pattern_figure`), opened on the top induction
# head: in the repeated half (the lower half of the rows) its weight sits on a diagonal
# 19 positions behind the query, the token after the earlier occurrence. The dropdown
# switches heads: the previous-token head is a diagonal one step below the main one.
from gpt2probe.report.attention_figures import pattern_figure  # noqa: E402

figure = pattern_figure(patterns, tokens, scores=scores)
shown = [trace.name for trace in figure.data].index(head_label(*induction_heads[0]))
figure.update_traces(visible=False).data[shown].visible = True  # open on the induction head, not L0H0
figure.layout.updatemenus[0].active = shown
figure.layout.title.text = figure.layout.updatemenus[0].buttons[shown].args[1]["title.text"]
figure

# %%
# ## Ablation: is the circuit necessary?
#
# Scores say where a head looks, not whether the model needs it. `ablate` replaces a
# head's output for every forward pass inside the `with` block. If the induction heads do
# the copying, removing them should take the repeated half's loss back towards the first
# half's; the share of the copying advantage given back is
# `(ablated - repeated) / (first - repeated)` (0: none, 1: all). Zero-ablation sets the
# output to 0; mean-ablation (tutorial 10) to its mean over other repeated sequences,
# which keeps the head's typical output and removes only what depends on the input. Two controls: the
# other heads of the last layer, and every head of the middle layers.
from gpt2probe.interventions import ablate  # noqa: E402

generator = torch.Generator().manual_seed(2)
other_halves = torch.stack([pool[torch.randperm(len(pool), generator=generator)[:HALF]] for _ in range(N_SEQS)])
reference = torch.cat([torch.full((N_SEQS, 1), EOT), other_halves, other_halves], dim=1)
last = probe.cfg.n_layers - 1
cases = {
    head_label(*induction_heads[0]): [induction_heads[0]],
    head_label(*induction_heads[1]): [induction_heads[1]],
    "both induction heads": induction_heads,
    head_label(*previous_head): [previous_head],
    f"other heads of L{last}": [(last, h) for h in range(probe.cfg.n_heads) if (last, h) not in induction_heads],
    "every head of L1 and L2": [(layer, head) for layer in (1, 2) for head in range(probe.cfg.n_heads)],
}
ablated = {}
print(f"{'ablated':<24} {'zero: first':>11} {'repeated':>9} {'given back':>11}   {'mean: repeated':>14} {'given back':>11}")
for label, heads in cases.items():
    for mode in ("zero", "mean"):
        with ablate(probe, heads=heads, mode=mode, reference=reference):
            ablated[label, mode] = half_losses(probe(ids))
    (zero_first, zero_repeated), (_, mean_repeated) = ablated[label, "zero"], ablated[label, "mean"]
    given_back = [(loss - repeated) / (first - repeated) for loss in (zero_repeated, mean_repeated)]
    print(f"{label:<24} {zero_first:>11.2f} {zero_repeated:>9.2f} {given_back[0]:>11.2f}   "
          f"{mean_repeated:>14.2f} {given_back[1]:>11.2f}")

# %%
# Either induction head alone gives back part of the advantage and the two together
# most of it: they share the work. The previous-token head matters about as much as
# both: it copies nothing itself, but without it the induction heads cannot find the
# earlier occurrence. The controls give back little under mean-ablation; zeroing eight
# middle heads costs more, probably because it also removes the typical output that the
# last layer expects (zero-ablation raises the first half's loss too).
#
# The figure: the repeated half's loss under each ablation, against the first half's loss
# without one (dashed), which is what no copying at all would cost.
import plotly.graph_objects as go  # noqa: E402

from gpt2probe.report.style import category_axis  # noqa: E402

labels = ["none", *cases]
figure = go.Figure([
    go.Bar(name=mode + "-ablation", x=list(range(len(labels))),
           y=[repeated if label == "none" else ablated[label, mode][1] for label in labels],
           hovertemplate="%{y:.2f} nats<extra>" + mode + "</extra>")
    for mode in ("zero", "mean")
])
figure.add_hline(y=first, line_dash="dash", annotation_text="first half, no ablation")
figure.update_xaxes(category_axis(labels))
figure.update_layout(title="Loss on the repeated half, with heads ablated", yaxis_title="loss (nats)",
                     barmode="group", height=420, template="plotly_white")
figure

# %%
# ## Activation patching: where does the copied token come from?
#
# A clean prompt is 20 random tokens and the first 10 again; the model should predict
# the 11th. The corrupted prompt has the same second part after 20 *other* random
# tokens, so there is nothing to copy. The metric is the log-probability of the token
# the clean prompt should copy, averaged over 4 such pairs. `patch(kind="head")` reruns
# the corrupted prompt once per head with that head's clean output (`hook_z`, every
# position) put in, and reports the metric normalised so that the corrupted run gives 0
# and the clean run 1.
from gpt2probe.interventions import attribution_patch, patch  # noqa: E402

clean = ids[:4, : 1 + HALF + 10]
corrupted = clean.clone()
corrupted[:, 1 : 1 + HALF] = ids[4:8, 1 : 1 + HALF]
answer = ids[:4, 1 + HALF + 10]


def metric(logits: torch.Tensor) -> torch.Tensor:
    """Mean log-probability of the token to copy, at the last position."""
    logprobs = logits[:, -1].log_softmax(-1)
    return logprobs[torch.arange(len(answer)), answer].mean()


exact = patch(probe, clean, corrupted, kind="head", metric=metric)
print(f"log p(answer): clean {exact.clean_metric:.2f}, corrupted {exact.corrupted_metric:.2f}, "
      f"gap {exact.clean_metric - exact.corrupted_metric:.2f} nats")
for layer, row in zip(exact.axis_labels[0], exact.values.tolist()):
    print(f"{layer:<3}", " ".join(f"H{h} {v:5.2f}" for h, v in enumerate(row)))
exact_top = head_scores.rank_heads(exact.values.abs(), top=3)
print("largest |effect|:", ", ".join(f"{head_label(l, h)} {exact.values[l, h].item():+.2f}" for l, h, _ in exact_top))

# %%
# Patching either induction head's clean output restores a large part of the answer:
# their output is what carries the copied token to the last position. The
# previous-token head's clean output makes things *worse*. Patched alone, it writes the
# clean first half's "token before me" into positions that still hold the corrupted
# tokens, so the induction heads now find the position after the earlier occurrence,
# and copy the corrupted token they find there. The same patch, with the metric the
# log-probability of that corrupted token:
target = corrupted[:, 1 + 10]  # the corrupted token where the clean answer stood in the first half


def metric_target(logits: torch.Tensor) -> torch.Tensor:
    """Mean log-probability of the corrupted token at the induction target."""
    logprobs = logits[:, -1].log_softmax(-1)
    return logprobs[torch.arange(len(target)), target].mean()


misled = patch(probe, clean, corrupted, kind="head", metric=metric_target, normalize=False)
layer, head = previous_head
print(f"log p(corrupted token at the target): corrupted run {misled.corrupted_metric:.2f}, "
      f"with {head_label(layer, head)} patched {misled.values[layer, head].item():.2f}")

# %%
# ## Attribution patching: the same question from one gradient
#
# Exact patching costs one forward pass per head. Attribution patching (AtP) estimates
# every cell from the corrupted run's gradient of the metric, `(a_clean - a_corrupted) .
# d metric / d a`: one forward and one backward pass. AtP ranks cells by the size of
# their estimated effect; `compare` measures how well that agrees with exact patching.
from gpt2probe.interventions.agreement import compare  # noqa: E402

estimate = attribution_patch(probe, clean, corrupted, kind="head", metric=metric, method="atp")
for layer, row in zip(estimate.axis_labels[0], estimate.values.tolist()):
    print(f"{layer:<3}", " ".join(f"H{h} {v:5.2f}" for h, v in enumerate(row)))
estimate_top = head_scores.rank_heads(estimate.magnitude, top=3)
print("largest |effect|, exact:", [head_label(l, h) for l, h, _ in exact_top])
print("largest |effect|, AtP:  ", [head_label(l, h) for l, h, _ in estimate_top])
agreement = compare(exact, estimate, k=3)
print(f"top-3 overlap {agreement.top_k_overlap:.0%}; Pearson {agreement.pearson:.2f}, "
      f"Spearman {agreement.spearman:.2f} over the {len(agreement.labels)} heads")

# %%
# AtP ranks the same three heads on top, which is what it is for: a cheap filter that
# chooses which cells to patch exactly. Its values are not exact patching's: it
# underestimates the induction heads several times over (a gradient taken on the
# corrupted run, where the induction heads find nothing to attend to, sees only the
# small local slope of an attention pattern that the clean keys move far), and it
# misses the sign of the previous-token head, whose effect passes through another
# head's attention pattern. The figure:
# each head's exact effect against AtP's estimate (nats of log-probability; the dotted
# line is perfect agreement).
from gpt2probe.report.attribution_patching import estimate_scatter  # noqa: E402

figure = estimate_scatter(agreement, method="AtP", units="nats")
figure

# %%
# ## What it means
#
# Each tool gave one kind of evidence, and they fit one circuit. The losses show the
# behaviour: the model predicts a random sequence the second time it sees it. The scores
# and patterns show heads attending the way a copying circuit must, a previous-token head
# in layer 0 and two induction heads in the last layer. Ablation shows that the model
# needs them: the two induction heads share the copying, and the previous-token head is
# needed as much as both. Patching shows what each carries: the induction heads' outputs
# carry the copied token to where it is predicted, and the previous-token head's output
# decides where they look (patched alone it misleads them, which is the two heads
# composing). Attribution patching finds the same heads at the cost of one backward pass,
# but not the size of their effects.
#
# Unlike `toy-induction` (tutorials 9 to 11), nothing here was known before the run: the
# heads were found by their scores, and every claim above is a number the script printed.
# What it does not show: how the middle layers help (mean-ablating them costs a little
# copying), what the heads do on real text, and anything about GPT-2: `tiny-english` is
# a 4-layer model trained for minutes, useful to see the tools work on a circuit that
# training made.
