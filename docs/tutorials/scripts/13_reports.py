"""Reports: figures, and token strings that display as they are

gpt2probe's figures are Plotly figures, and `gpt2probe.report.write_html` puts them in
one self-contained HTML page. Token strings need care on the way: Plotly renders a
subset of HTML inside labels, so a token such as `" &amp;"` or `"<b>"` would show as
something else. This tutorial shows the problem, the escaping that fixes it, and writes
a logit-lens report.
"""

import tempfile
from pathlib import Path

import torch

import gpt2probe
from gpt2probe import report
from gpt2probe.shipped import NOTES

torch.manual_seed(0)
probe = gpt2probe.load("tiny-english", device="cpu")

# %%
# ## Tokens that look like markup
#
# Some of GPT-2's tokens are markup to Plotly: `<|endoftext|>` (id 50256) looks like an
# unknown tag and vanishes, and so would `"></"`. Prompts, shown in titles and hover
# labels, can hold entities: `"&amp;"` would display as `&`. `$...$` can turn into
# LaTeX where MathJax is loaded, and whitespace-only tokens are invisible.
tricky = [probe.to_string([50256]), probe.to_string([12240]), " &amp; x", "$x$", " ", "\n"]
for token in tricky:
    ids = probe.tokenizer(token, add_special_tokens=False)["input_ids"]
    print(f"{token!r:<16} ids {ids}")

# %%
# ## `display_token`
#
# Every token string a gpt2probe figure shows goes through `display_token`: markup is
# escaped (so Plotly shows the characters literally), `$` cannot start MathJax, and
# whitespace becomes visible (`␣` for a space, `↵` for a newline).
for token in tricky:
    print(f"{token!r:<16} -> {report.display_token(token)}")

# %%
# ## A report
#
# Figures read result objects (they never run the model); `write_html` writes the page
# atomically, with plotly.js inline and a Content-Security-Policy that forbids network
# requests, so the report opens offline and fetches nothing.
lens = gpt2probe.logit_lens(probe, "x = a &amp; b <b>bold</b>", k=5, targets="next")
figure = report.lens_heatmap(lens[0], metric="prob")
print("x tick labels:", list(figure.layout.xaxis.ticktext))
with tempfile.TemporaryDirectory() as tmp:
    path = report.write_html(
        Path(tmp) / "lens.html", {"Logit lens": figure}, title="Logit lens",
        model_name=lens.model_name, prompts=lens.prompts, notes=NOTES["tiny-english"],
    )
    page = path.read_text(encoding="utf-8")
print("self-contained (no <script src=...>):", "<script src=" not in page)
print("network requests forbidden:", "default-src 'none'" in page)
print("the raw prompt's <b> never reaches the page unescaped:", "<b>bold</b>" not in page)

# %%
# ## The figure
#
# The lens heatmap written into that report, drawn here. Its tick labels show the
# prompt's tokens literally: `&amp;`, `<b>` and `</b>` appear as typed, not as `&` or
# as bold text, and the spaces before words show as `␣`.
figure
