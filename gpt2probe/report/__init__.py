"""Figures of gpt2probe's results, and self-contained HTML reports.

One module per kind of figure: :mod:`~gpt2probe.report.lens` (logit lens),
:mod:`~gpt2probe.report.attribution` (direct logit attribution),
:mod:`~gpt2probe.report.patching` (activation patching), :mod:`~gpt2probe.report.steering`
(steering); :mod:`~gpt2probe.report.html` writes the page and its text tables
(:class:`Table`). Every string is made to display literally by :mod:`gpt2probe.display.escape`,
the leaf below the core that result objects also use for their notebook tables.
Figures only read result objects: they never call the model and never write files.

Two rules hold for every figure (:mod:`~gpt2probe.report.style`):

* **signed values: blue = positive, red = negative** (Plotly's ``RdBu`` centred on zero,
  symmetric range, white = 0), for attributions, patching effects and probability changes;
* **category axes** (tokens, streams, heads) are numeric positions with explicit tick
  texts, never Plotly categories, which would merge a prompt's repeated tokens.

>>> from gpt2probe import report
>>> fig = report.lens_heatmap(result[0], metric="prob")
>>> report.write_html("lens.html", [fig], title="Logit lens", model_name=result.model_name,
...                   prompts=result.prompts)
"""

from ..display.escape import display_token, escape_text
from .attention_figures import pattern_figure, score_grid_figure
from .attention_viewer import AttentionData, encode_attention, write_attention_viewer
from .attribution import attribution_bars
from .html import Table, write_html
from .lens import kl_per_layer, kl_per_layer_compare, lens_aggregate, lens_heatmap, target_trajectory
from .patching import patching_heatmap
from .steering import change_bars, continuations_table, top_tokens_table

__all__ = [
    "AttentionData",
    "encode_attention",
    "pattern_figure",
    "score_grid_figure",
    "write_attention_viewer",
    "Table",
    "attribution_bars",
    "change_bars",
    "continuations_table",
    "display_token",
    "escape_text",
    "kl_per_layer",
    "kl_per_layer_compare",
    "lens_aggregate",
    "lens_heatmap",
    "patching_heatmap",
    "target_trajectory",
    "top_tokens_table",
    "write_html",
]
