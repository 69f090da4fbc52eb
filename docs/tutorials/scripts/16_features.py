"""Features: what tiny-english's sparse autoencoders see

A neuron responds to many unrelated things; a *sparse autoencoder* (SAE) rewrites an
activation as a sparse sum of learned directions, its *features*, which are often easier
to name. `tiny-english` ships an SAE on the residual stream after every block. This
tutorial trains a small one of its own in seconds, measures the shipped SAE of block 2 on
text it never saw, finds one of its features that means something readable, browses it,
splices the SAE into the model, and ablates that one feature to see what the model loses.
The reference for every call is [SAEs and transcoders](../saes.md).
"""

import json
import pydoc_data.topics
import tempfile
from collections import Counter
from pathlib import Path

import torch

import gpt2probe
from gpt2probe import SAE
from gpt2probe.harvest import Corpus
from gpt2probe.lens import logit_effects
from gpt2probe.shipped import shipped_model

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")
saes = gpt2probe.load_saes("tiny-english")  # {hook name: SAE}, in forward order
for sae in saes.values():
    print(sae)

# %%
# ## Held-out text
#
# The shipped SAEs were trained on Python's documentation topics, except the topics that
# the model's own training held out (listed in its `training.json`). Everything below is
# measured on those held-out topics: text that neither the model nor the SAEs trained on.
held_out_names = json.loads((shipped_model("tiny-english") / "training.json").read_text(encoding="utf-8"))["val_topics"]
topics = pydoc_data.topics.topics
held_out = [topics[name] for name in held_out_names]
train_texts = [text for name, text in sorted(topics.items()) if name not in held_out_names]
print(f"{len(train_texts)} training topics, {len(held_out)} held out:", ", ".join(held_out_names))

# %%
# ## Train a small SAE
#
# `SAE.train` runs the model over a corpus, keeps the activations at one hook and trains
# an SAE on them: here a top-k SAE (8 active features per token, 512 features) on the
# residual stream after block 2, on a few training topics, for 150 steps. It takes
# seconds, and it is a sketch: the shipped SAEs were trained on every training topic for
# many more steps by `tools/train_tiny_english_saes.py` (their settings are recorded in
# each SAE's `cfg.json`, printed below).
hook = "blocks.2.hook_resid_post"
quick = SAE.train(probe, train_texts[:12], hook=hook, d_sae=512, architecture="topk", k=8,
                  steps=150, train_batch_size_tokens=512, seed=0, progress=False)
sae = saes[hook]
for label, coder in (("trained here", quick), ("shipped", sae)):
    settings = coder.cfg.metadata["gpt2probe_training"]
    print(f"{label:>12}: {settings['steps']:,} steps of {settings['train_batch_size_tokens']:,} activations")

# %%
# ## Evaluate
#
# `evaluate` runs the model over text and reports, with SAELens's names, how many
# features are active per token (`l0`), how much of the activation's variance the SAE
# reconstructs (`explained_variance`), and the next-token loss of the model as it is
# (`ce_loss_clean`), with the SAE's reconstruction spliced in place of the activation
# (`ce_loss_spliced`) and with the activation zeroed (`ce_loss_zero`); `ce_loss_recovered`
# is the share of the gap between zeroing and the clean model that the SAE keeps. Here on
# the first 512 held-out tokens, for the shipped SAE and the one just trained: a small
# sample, to keep this tutorial fast (a feature's density, and so `dead_fraction`, needs
# far more text); the shipped SAEs' figures on all the held-out topics are in
# [SAEs and transcoders](../saes.md#shipped-with-tiny-english).
evaluations = {label: coder.evaluate(probe, held_out, max_tokens=512, batch_size=4) for label, coder in
               (("shipped", sae), ("trained here", quick))}
print(evaluations["shipped"])
for label, result in evaluations.items():
    print(f"{label:>12}: explained variance {result.explained_variance:.2f}, "
          f"spliced loss {result.ce_loss_spliced - result.ce_loss_clean:+.2f} nats over clean, "
          f"loss recovered {result.ce_loss_recovered:.2f}")

# %%
# The last two lines compare the sketch trained above with the shipped SAE on the same
# tokens. Whatever part of the activation an SAE does not reconstruct is lost to the model
# when the SAE is spliced in, which is why the spliced loss is above the clean one; the
# section on splicing below shows how to read and edit features without paying that cost.
#
# ## Find a feature
#
# What do the shipped SAE's features respond to? Reading each feature's top contexts (the
# harvest and the feature browser below list them) is how candidates turn up; a guess
# about one can then be tested on every token. One habit of Python's documentation is
# easy to test: it quotes every piece of code it names (`The "except"
# clause`, `by calling "sys.exception()"`), so at an opening quote a Python name comes
# next. Is there a feature for that? Encode the held-out text (packed into windows of 128
# tokens; `run_until` stops the model at the hook) and rank the features by how well their
# firing matches the opening-quote token `' "'`: the fraction of a feature's activations
# that fall on it (precision) and the fraction of opening quotes where it fires (recall).
ids = [t for text in held_out for t in probe.tokenizer(text)["input_ids"] + [probe.tokenizer.eos_token_id]]
windows = torch.tensor(ids[: len(ids) // 128 * 128]).view(-1, 128)  # [batch, pos]
acts = sae.encode(probe.run_until(windows, hook)[hook])  # [batch, pos, feature]
active = acts > 0
quote = (windows == probe.to_single_token(' "'))[..., None]
precision = (active & quote).sum((0, 1)) / active.sum((0, 1)).clamp(min=1)
recall = (active & quote).sum((0, 1)) / quote.sum()
f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-9)
for f in f1.topk(3).indices.tolist():
    print(f"feature {f:>3}: precision {precision[f]:.2f}, recall {recall[f]:.2f}")
feature = int(f1.argmax())
fired_on = Counter(probe.to_str_tokens(windows[active[..., feature]]))
print(f"feature {feature} fires on:", ", ".join(f"{t!r} {n / fired_on.total():.2f}" for t, n in fired_on.most_common(5)))

# %%
# The best match is the feature followed from here on. The last line shows which tokens
# it fires on, with the share of its activations on each: are the rest quotes too? (An
# opening quote at the start of a line is the token `'"'`, without the space.)
#
# ## Browse it
#
# The [harvest](../harvesting.md) summarises features as units: for each feature its top
# activating contexts, its density (the fraction of tokens where it fires) and a
# histogram of its activations. The feature's top contexts, its token in brackets:
harvest = gpt2probe.harvest(probe, Corpus(texts=held_out), saes=[sae], out=Path(tempfile.mkdtemp()) / "harvest",
                            progress=False)
name = f"{hook}.hook_sae_acts_post"  # the features' name, in the harvest and when the SAE is spliced in
print(f"feature {feature}: active on {harvest.stats(name)['frequency'][feature]:.1%} of held-out tokens")
for ex in harvest.top_examples(name, feature)[:8]:
    t, c = ex.tokens, ex.center  # the context's token ids, and the position of the feature's token in it
    print(f"{ex.value:6.2f}  {probe.to_string(t[:c]) + '[' + probe.to_string(t[c:c + 1]) + ']' + probe.to_string(t[c + 1:])!r}")

# %%
# The feature's *logit effects* are its decoder row read through the final LayerNorm's
# weight and the unembedding: the next tokens it pushes up and down directly.
# `logit_effects(d, probe)` is `d` times TransformerLens's folded `W_U` (`fold_ln=True`),
# the one Neuronpedia's pages use; the LayerNorm's division by the stream's norm is left out
# (it depends on the whole residual stream and scales every token alike).
effect = logit_effects(sae.W_dec[feature], probe)  # [d_vocab]
print("promotes:  ", probe.to_str_tokens(effect.topk(10).indices))
print("suppresses:", probe.to_str_tokens(effect.topk(10, largest=False).indices))

# %%
# The feature browser puts all of this in one offline HTML page, a page per feature in the
# spirit of Neuronpedia's: density, top contexts with every token shaded by the
# activation, the histogram, the logit effects, and a search box over features, context
# tokens and promoted tokens. Open `runs/16_features.html` in a browser and search for
# the feature's number. From the command line, `gpt2probe harvest --sae DIR` and
# `gpt2probe sae report` write the same page.
from gpt2probe.report.feature_browser import write_feature_browser  # noqa: E402

page = write_feature_browser(harvest, "runs/16_features.html", saes=[sae], probe=probe)
html = page.read_text(encoding="utf-8")
print(f"wrote {page.name}; self-contained (no <script src=...>):", "<script src=" not in html)

# %%
# ## Splice
#
# `probe.run_with_saes` runs the model with the SAE's reconstruction in place of the
# residual stream after block 2, as SAELens's `HookedSAETransformer` does. With
# `use_error_term=True` the spliced model adds back what the SAE misses (the activation
# minus its reconstruction), so its output is exactly the model's, while every stage of
# the SAE (`hook_sae_acts_post` and the others) is a hook name that can be read and edited.
prompt = 'The result is "'
clean = probe(prompt)
spliced = probe.run_with_saes(prompt, saes=[sae])
exact = probe.run_with_saes(prompt, saes=[sae], use_error_term=True)
print("use_error_term=True reproduces the logits exactly:", torch.equal(exact, clean))
print(f"without it: max |spliced - clean| = {(spliced - clean).abs().max():.1f}")


def show_top(label, logits, k=3):
    top = logits[0, -1].softmax(-1).topk(k)
    print(f"{label:>8}:", ", ".join(f"{t!r} {p:.2f}" for p, t in zip(top.values, probe.to_str_tokens(top.indices))))


show_top("clean", clean)
show_top("spliced", spliced)

# %%
# ## Ablate the feature
#
# With the error term in place, zeroing one feature removes exactly that feature's
# contribution (its activation times its decoder row) and nothing else. A hook on the
# feature's name does it, for every position of every forward pass inside the block:


def ablate(acts, hook):
    acts = acts.clone()
    acts[..., feature] = 0.0
    return acts


with probe.saes([sae], use_error_term=True), probe.hooks({name: ablate}):
    ablated = probe(prompt)
show_top("clean", clean)
show_top("ablated", ablated)

# %%
# Over the whole held-out text: where the feature fires, how much probability does the
# model lose on the token that actually came next, and how much elsewhere? And does it
# still expect a token glued to the quote (a name, with no space before it)? To keep
# this fast, the model runs once with and once without the feature, and only the
# positions compared are unembedded (`unembed=False` returns the final hidden states).
fires = active[:, :-1, feature]  # [batch, pos - 1]: the feature fires, and a next token exists
elsewhere = (~fires).nonzero()[::10]  # every tenth other position
glued = torch.tensor([not t.startswith((" ", "\n")) for t in probe.to_str_tokens(torch.arange(probe.cfg.d_vocab))])


def logprobs(hidden, where):
    rows, cols = where.unbind(-1)
    return (hidden[rows, cols] @ probe.W_U).log_softmax(-1), windows[rows, cols + 1]


with probe.saes([sae], use_error_term=True):
    hidden_clean, _ = probe.run_with_cache(windows, names=[], unembed=False)
    with probe.hooks({name: ablate}):
        hidden_ablated, _ = probe.run_with_cache(windows, names=[], unembed=False)
for label, where in (("where it fires", fires.nonzero()), ("elsewhere", elsewhere)):
    (before, target), (after, _) = logprobs(hidden_clean, where), logprobs(hidden_ablated, where)
    change = (after - before).gather(-1, target[:, None]).mean()
    print(f"{label:>14}: log p(next token) {change:+.2f} nats; p(a glued token) "
          f"{before.exp()[:, glued].sum(-1).mean():.2f} -> {after.exp()[:, glued].sum(-1).mean():.2f}")

# %%
# The figure: at the feature's strongest held-out activations, the probability of the
# token that came next, with and without the feature.
import plotly.graph_objects as go  # noqa: E402

from gpt2probe.report import display_token  # noqa: E402
from gpt2probe.report.style import category_axis  # noqa: E402

strongest = torch.stack(torch.unravel_index(acts[:, :-1, feature].flatten().topk(12).indices, fires.shape), -1)
labels = [display_token(probe.to_string(windows[r, max(0, c - 2):c + 2])) for r, c in strongest.tolist()]
bars = []
for label, hidden in (("clean", hidden_clean), (f"feature {feature} ablated", hidden_ablated)):
    logp, target = logprobs(hidden, strongest)
    bars.append(go.Bar(name=label, x=list(range(len(labels))), y=logp.gather(-1, target[:, None])[:, 0].exp().tolist(),
                       hovertemplate="%{y:.2f}<extra>" + label + "</extra>"))
figure = go.Figure(bars)
figure.update_xaxes(category_axis(labels))
figure.update_layout(title=f"p(next token) where feature {feature} fires hardest", yaxis_title="probability",
                     barmode="group", height=420, template="plotly_white")
figure

# %%
# ## What it shows
#
# The feature was found by a guess about the text and kept because the numbers fit it:
# it fires on opening quotes, its decoder row promotes Python names directly, and taking
# it out (with everything else the activation holds left in place by the error term)
# costs the model its prediction of a name where the feature fires, and almost nothing
# elsewhere. So the model's later layers use this direction to predict that code comes
# next. What it does not show: that the direction is the only route to that prediction
# (the error term holds whatever the SAE missed), what the feature does in text other
# than Python's documentation, or anything about GPT-2. The same steps apply to the
# published SAEs for GPT-2 small: see [GPT-2 small's published SAEs](../gpt2-small-saes.md).
