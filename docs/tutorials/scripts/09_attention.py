"""Attention patterns

Each attention head decides, for every query position, how much to read from each
earlier key position: its *pattern*, `[batch, head, query_pos, key_pos]`, rows summing
to 1. This tutorial captures patterns from `toy-induction`, a two-layer model whose
weights were built by hand so that head `L0H0` attends to the previous token and `L1H0`
is an induction head, then scores every head, and shows why Hugging Face's own
`output_attentions` cannot be trusted for this. [Tutorial 15](15_induction_circuit.md)
does the same on a circuit that training made: the previous-token and induction heads
`tiny-english` learned.
"""

import torch

import gpt2probe
from gpt2probe import head_scores, names
from gpt2probe.toy import repeated_random_tokens

torch.manual_seed(0)
probe = gpt2probe.load("toy-induction", device="cpu")
print(probe)

# %%
# ## Inputs: a random block, repeated
#
# The toy model has no text tokenizer: its vocabulary is the ids 0..63, with 0 as BOS.
# `repeated_random_tokens` draws `[BOS, x, x]` with `x` a block of distinct random ids.
# After the first copy, every token has been seen before, so an induction head can
# predict the next one by looking at what followed it last time.
ids = repeated_random_tokens(n_seqs=1, half_len=5, vocab_size=64, seed=0)
print(ids.tolist())

# %%
# ## Capturing patterns
#
# `blocks.{l}.attn.hook_pattern` holds the softmaxed pattern; `hook_attn_scores` the
# scores before the softmax (with the causal mask applied).
_, cache = probe.run_with_cache(ids, names="blocks.*.attn.hook_pattern")
pattern = cache[names.pattern(0)]
print("shape [batch, head, query_pos, key_pos]:", tuple(pattern.shape))
print("rows sum to 1:", torch.allclose(pattern.sum(-1), torch.ones(pattern.shape[:-1])))
print("nothing attends to the future:", bool((pattern.triu(diagonal=1) == 0).all()))


def show(p: torch.Tensor, label: str) -> None:
    """Print one head's pattern: rows are queries, columns keys, weights rounded to 0.1."""
    print(label, "   key:", " ".join(f"{k:>3}" for k in range(p.shape[1])))
    for q, row in enumerate(p.tolist()):
        cells = " ".join(f"{w:3.1f}" if k <= q else "  ." for k, w in enumerate(row))
        print(f"query {q:>2} (token {int(ids[0, q]):>2}): {cells}")


show(cache[names.pattern(0)][0, 0], "L0H0")

# %%
# `L0H0` puts all its weight one position back: a previous-token head. `L1H0`, in the
# second copy, attends to the position *after* the earlier occurrence of the current
# token (query 7 holds token 63, which first appeared at position 2; the head reads
# position 3), and before that it rests on BOS.
show(cache[names.pattern(1)][0, 0], "L1H0")

# %%
# ## Scoring every head
#
# `gpt2probe.head_scores` turns patterns into one number per head: the mean weight on
# the previous token, on the first token, on itself, and on the induction target (from
# its own run on repeated random tokens). The toy's other heads have zero weights, so
# they attend uniformly and score the same everywhere.
scores = head_scores.all_head_scores(probe, ids, half_len=20, n_seqs=4)
for key, grid in scores.items():
    print(f"{head_scores.SCORE_LABELS[key]:<16}", [[round(v, 2) for v in row] for row in grid.tolist()])
top = head_scores.rank_heads(scores["induction"], top=2)
print("top induction heads:", [(head_scores.head_label(layer, head), round(v, 3)) for layer, head, v in top])

# %%
# ## The trap: `output_attentions` under sdpa
#
# Hugging Face's default attention kernel (`sdpa`, and flash attention likewise) never
# materialises the pattern. With transformers 5, asking for it anyway returns no pattern
# at all (an empty tuple in recent releases, one `None` per layer in 5.0), with no warning:
print("attention implementation:", probe.model.config._attn_implementation)
with torch.no_grad():
    out = probe.model(ids, output_attentions=True)
patterns = [a for a in out.attentions if a is not None]
print("patterns returned under sdpa:", len(patterns))

# %%
# gpt2probe does not rely on `output_attentions`. While a hook needs `hook_pattern` or
# `hook_attn_scores`, it switches the model to a hooked copy of Hugging Face's eager
# attention (same mask, same arithmetic), and switches back afterwards. The patterns
# match a model loaded with eager attention:
eager = gpt2probe.load("toy-induction", device="cpu", attn_implementation="eager")
with torch.no_grad():
    reference = eager.model(ids, output_attentions=True).attentions
for layer in range(probe.cfg.n_layers):
    same = torch.allclose(cache[names.pattern(layer)], reference[layer], atol=1e-6)
    print(f"layer {layer}: probe pattern == eager output_attentions: {same}")
print("implementation after the capture:", probe.model.config._attn_implementation)

# %%
# ## Figures
#
# `gpt2probe.report.attention_figures.pattern_figure` draws every head's pattern as an
# interactive heatmap with a head selector, and `score_grid_figure` the scores as
# `[layer, head]` grids; `gpt2probe.report.write_html` writes them into one
# self-contained page. Below, the pattern figure of this input: rows are queries,
# columns keys, the colour the attention weight, and the dropdown switches heads:
# `L0H0` is a diagonal one step below the main one (the previous token); `L1H0`, in the
# second copy, a diagonal one step after the first copy's matching token; the other
# heads spread their weight evenly over the earlier tokens.
from gpt2probe.report.attention_figures import pattern_figure  # noqa: E402

tokens = [str(i) for i in ids[0].tolist()]
patterns = {layer: cache[names.pattern(layer)][0] for layer in range(probe.cfg.n_layers)}
figure = pattern_figure(patterns, tokens, scores=scores)
print(type(figure).__name__, "with", len(figure.data), "heatmaps")
figure
