"""Figures of lens and attribution results, and self-contained HTML reports.

>>> from gpt2probe import report
>>> fig = report.lens_heatmap(result[0], metric="prob")
>>> report.write_html("lens.html", [fig], title="Logit lens", model_name=result.model_name,
...                   prompts=result.prompts)
"""

from .attention_figures import pattern_figure, score_grid_figure
from .attention_viewer import AttentionData, encode_attention, write_attention_viewer
from .escape import display_token, escape_text
from .figures import attribution_bars, kl_per_layer, lens_heatmap, target_trajectory
from .html import write_html

__all__ = [
    "AttentionData",
    "encode_attention",
    "pattern_figure",
    "score_grid_figure",
    "write_attention_viewer",
    "attribution_bars",
    "display_token",
    "escape_text",
    "kl_per_layer",
    "lens_heatmap",
    "target_trajectory",
    "write_html",
]
