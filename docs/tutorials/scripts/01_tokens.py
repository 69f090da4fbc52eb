"""Tokens: from text to ids and back

GPT-2 never sees characters or words: it sees token ids from a byte-level BPE vocabulary
of 50,257 entries. This tutorial loads the small offline model `tiny-english` (GPT-2's
architecture and GPT-2's real tokenizer) and looks at what the tokenizer does to text,
including the two things that surprise people most: leading spaces, and padding.
"""

import torch

import gpt2probe

torch.manual_seed(0)

# %%
# `gpt2probe.load` accepts a hub id such as `"gpt2"`, a directory written by
# `save_pretrained`, a model object, or the name of a model shipped with gpt2probe
# (`"tiny-english"`, `"toy-induction"`), which needs no download.
probe = gpt2probe.load("tiny-english", device="cpu")
print(probe)
print("vocabulary size:", probe.cfg.d_vocab)

# %%
# ## Text to tokens
#
# `to_str_tokens` shows how a prompt is split. Most common words are one token, and the
# space *before* a word belongs to that word's token: `" Paris"` and `"Paris"` are
# different tokens with different ids.
text = "The Eiffel Tower is in Paris"
print(probe.to_str_tokens(text))
print("' Paris' ->", probe.to_single_token(" Paris"))
print("'Paris'  ->", probe.to_single_token("Paris"))

# %%
# Rare words and names fall apart into several pieces, and so does code. A string that
# is not one token cannot be used where a single token is expected:
print(probe.to_str_tokens(" tokenization"))
print(probe.to_str_tokens("def __init__(self):"))
try:
    probe.to_single_token(" tokenization")
except gpt2probe.PromptError as error:
    print("PromptError:", error)

# %%
# ## Ids, and back to text
#
# `to_tokens` returns a `Tokens` object: the ids `[batch, pos]`, the attention mask
# (1 = a real token) and the prompts. Decoding the ids gives the text back exactly.
tokens = probe.to_tokens(text)
print("ids:", tokens.ids)
print("shape [batch, pos]:", tuple(tokens.ids.shape))
print("mask:", tokens.attention_mask)
print("decoded:", repr(probe.to_string(tokens.ids[0])))

# %%
# ## `<|endoftext|>` and the missing pad token
#
# GPT-2 has exactly one special token, `<|endoftext|>` (id 50256). It marks document
# boundaries in training and is also GPT-2's BOS and EOS. GPT-2 has *no* pad token, so
# gpt2probe pads with `<|endoftext|>` and relies on the attention mask to hide the pads.
tok = probe.tokenizer
print("bos/eos/pad:", tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, repr(tok.pad_token))
print(probe.to_str_tokens(text, prepend_bos=True))

# %%
# ## A batch is left-padded
#
# Prompts of different lengths are padded on the *left*, so every prompt's last real
# token sits at position -1, where the next-token prediction is read.
batch = probe.to_tokens(["The cat sat", "A much longer prompt than that one"])
print(batch.ids)
print(batch.attention_mask)
print("real tokens per prompt:", batch.lengths.tolist())
print("prompt 0 occupies positions", batch.real_positions(0))

# %%
# GPT-2 adds a *learned position embedding* to each token, so the position ids must skip
# the pads: the first real token of every prompt is position 0, as if it ran alone.
# `Tokens.position_ids` computes them from the mask (pads get 0; the mask hides them).
print(batch.position_ids)

# %%
# ## The figure: a left-padded batch
#
# The batch above, drawn: one row per prompt, one column per position, each cell
# labelled with its token (a space shows as `␣`). Blue cells are real tokens (attention
# mask 1); grey cells are the `<|endoftext|>` pads (mask 0) that the short prompt gets on
# its left, so that both prompts end in the last column.
import plotly.graph_objects as go  # noqa: E402

from gpt2probe.report import display_token  # noqa: E402
from gpt2probe.report.style import category_axis  # noqa: E402

cells = [[display_token(probe.to_string([i])) for i in row.tolist()] for row in batch.ids]
figure = go.Figure(go.Heatmap(
    z=batch.attention_mask.tolist(), text=cells, texttemplate="%{text}", showscale=False,
    colorscale=[[0, "#dddddd"], [1, "#9ecae1"]], zmin=0, zmax=1, xgap=2, ygap=2, textfont=dict(size=13),
    hovertemplate="prompt %{y}, position %{x}: %{text}<br>attention mask %{z}<extra></extra>",
))
figure.update_xaxes(title_text="position")
figure.update_yaxes(category_axis(["prompt 0", "prompt 1"]), autorange="reversed")
figure.update_layout(title="A left-padded batch: tokens, and the attention mask (grey = pad)", height=260,
                     template="plotly_white")
figure
