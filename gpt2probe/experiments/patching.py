"""Activation patching on a clean/corrupted prompt pair, as an HTML report of heatmaps: ``gpt2probe patching``.

Each clean activation is patched into the corrupted run in turn (``--direction noise`` does
the reverse) and the logit difference ``answer - wrong`` at the last token is reported,
normalised so that the clean run is 1 and the corrupted run 0: the residual stream by layer
and position, each layer's attention and MLP output by position, and each attention head.
When the clean and corrupted runs barely differ on the metric, the normalised values amplify
noise: the terminal and the report say so, and the report gives the raw metric beside the
normalised one.

By default a pair the model tells apart: on GPT-2 the indirect-object pair "When Mary and
John went to the store, John gave a drink to" (answer " Mary") against the same prompt with
the second name swapped (answer " John"); on the offline tiny-english, which has not learned
that task, in-context copying: "Each thread holds a lock on the queue while it reads. When
the thread is done it releases the lock on the" (answer " queue", copied) against the same
text with " file" in place of the first " queue" (answer " file").

``--method atp|atp*|ig`` estimates every cell from gradients instead (attribution
patching, a few passes instead of one per cell); ``--compare-exact`` also runs exact
patching and shows the estimate against it: a scatter plot of the same cells with their
Pearson and Spearman correlations and top-10 overlap, and the cells that disagree most.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import options, pairs
from .common import (
    Parser,
    UsageError,
    add_common_arguments,
    add_plotly_argument,
    check_same_length,
    doc_help,
    load_model,
    positive_int,
    run_command,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from ..interventions import PatchingResult

DEFAULT_OUT = "reports/activation_patching.html"
METHODS = ("exact", "atp", "atp*", "ig")

# kind -> (section heading, what one cell means)
PANELS = {
    "resid_pre": ("Residual stream (resid_pre) by layer and position", "residual stream entering the layer, at one position"),
    "attn_out": ("Attention output by layer and position", "the layer's attention output, at one position"),
    "mlp_out": ("MLP output by layer and position", "the layer's MLP output, at one position"),
    "head": ("Attention heads (output z, every position)", "one head's output at every position"),
}


def build_parser() -> Parser:
    description, epilog = doc_help(__doc__)
    parser = Parser(prog="gpt2probe patching", description=description,
                    epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    pairs.add_pair_arguments(parser)
    parser.add_argument("--direction", choices=("denoise", "noise"), default="denoise",
                        help="denoise: clean activations into the corrupted run (default); noise: the reverse")
    options.add(parser, "--batch-size", "patched copies of the prompt per forward pass (default: 16)", default=16)
    options.add(parser, "--method", "of the cells: exact, one patched run per cell (default); atp: attribution "
                "patching, a gradient estimate of every cell; atp*: atp with the attention softmax recomputed exactly "
                "for queries/keys, plus GradDrop; ig: integrated gradients", choices=METHODS, default="exact")
    parser.add_argument("--ig-steps", dest="steps", type=positive_int, default=None,
                        help="integration points for --method ig (default 16)")
    parser.add_argument("--compare-exact", action="store_true",
                        help="also run exact patching and show the estimate against it, cell by cell")
    add_common_arguments(parser, DEFAULT_OUT, text_only=True)
    add_plotly_argument(parser)
    options.add_deprecated(parser, "patching")
    return parser


def metric_scale(results: Sequence[PatchingResult]) -> float:
    """The size of the metric's values: the largest |value| among the unpatched and every patched run."""
    first = results[0]
    raw = [float(r.raw().abs().max()) for r in results if r.values.numel()]
    return max([abs(first.clean_metric), abs(first.corrupted_metric), *raw])


def small_gap_warning(results: Sequence[PatchingResult]) -> str | None:
    """A warning when ``|clean - corrupted|`` is small next to the metric's scale, else ``None``."""
    first = results[0]
    return pairs.gap_warning(first.clean_metric, first.corrupted_metric, metric_scale(results),
                             "Normalised values divide by that gap (read the raw metric in each cell's hover)")


def top_cells(result: PatchingResult, n: int = 5) -> list[str]:
    """The ``n`` cells with the largest values, as text lines (raw metric beside normalised values)."""
    values = result.values.float()
    raw = result.raw().float().flatten()
    flat = values.flatten()
    order = flat.argsort(descending=True)[:n]
    rows, cols = result.axis_labels
    lines = []
    for index in order.tolist():
        i, j = divmod(index, len(cols))
        where = f"{rows[i]} pos {j} {cols[j]!r}" if result.axis_names[1] == "pos" else f"{rows[i]}{cols[j]}"
        extra = f"  (raw {float(raw[index]):+.4f})" if result.normalized else ""
        lines.append(f"    {where:<36} {float(flat[index]):+.3f}{extra}")
    return lines


SIGNED_CAVEATS = {
    "ig": ("integrated gradients: each cell is its share of its layer's total effect (a layer's cells sum to "
           "patching the whole layer), not an estimate of patching that cell alone"),
    "atp*": ("atp*: rank cells by magnitude (GradDrop); a signed value can have the wrong sign where the "
             "linearised part after the attention pattern is far off (see docs/attribution-patching.md)"),
}
"""What a reader of each estimate's cells must know; printed and put in the report's notes."""


def check_method(args: argparse.Namespace) -> None:
    """``--ig-steps`` needs ``--method ig``; ``--compare-exact`` needs an estimating method."""
    if args.steps is not None and args.method != "ig":
        raise UsageError(f"--ig-steps is only used with --method ig (got --method {args.method})")
    if args.compare_exact and args.method == "exact":
        raise UsageError("--compare-exact compares an estimate with exact patching: "
                         "add --method atp, atp* or ig")


def estimate_figures(exact: PatchingResult, estimate: PatchingResult, heading: str, method: str) -> dict[str, go.Figure]:
    """The estimate against exact patching on the same cells: a scatter plot and the cells that disagree most."""
    from ..interventions.agreement import compare
    from ..report.attribution_patching import disagreement_table, estimate_scatter

    agreement = compare(exact, estimate, k=10)
    print(f"  {heading.lower()}: {method} vs exact: Pearson {agreement.pearson:.3f}, Spearman {agreement.spearman:.3f}, "
          f"top-{agreement.k} overlap {agreement.top_k_overlap:.0%}")
    return {f"{heading}: {method} against exact patching": estimate_scatter(agreement, method=method),
            f"{heading}: where {method} and exact patching disagree most": disagreement_table(agreement, method=method)}


def run(args: argparse.Namespace) -> Path:
    check_method(args)
    check_same_length(args)
    from ..interventions import attribution_patch, patch
    from ..report import patching_heatmap, write_html

    probe, notes = pairs.load_for_pair(args, "patching", "Patching results from such a small model mean little for GPT-2: "
                                       "it has not learned the indirect-object circuit GPT-2 is known for, so "
                                       "the default pair here is one it does tell apart (in-context copying).",
                                       load_model)
    cfg = probe.cfg
    common = dict(answer=args.answer, wrong=args.wrong, direction=args.direction, batch_size=args.batch_size)
    exact = {kind: patch(probe, args.clean, args.corrupted, kind=kind, **common)
             for kind in PANELS} if args.method == "exact" or args.compare_exact else {}
    results = exact if args.method == "exact" else {
        kind: attribution_patch(probe, args.clean, args.corrupted, kind=kind, method=args.method, steps=args.steps,
                                **common)
        for kind in PANELS
    }
    label = "exact patching" if args.method == "exact" else args.method + (f" ({args.steps or 16} steps)"
                                                                           if args.method == "ig" else "")
    first = results["resid_pre"]
    print(f"Clean:     {args.clean!r}\nCorrupted: {args.corrupted!r}")
    print(f"logit({args.answer!r}) - logit({args.wrong!r}) at the last token: "
          f"clean {first.clean_metric:+.4f}, corrupted {first.corrupted_metric:+.4f}, "
          f"gap {first.clean_metric - first.corrupted_metric:+.4f}")
    warning = small_gap_warning(list(results.values()))
    if warning:
        print(f"WARNING: {warning}")
        notes.append(f"Warning: {warning}")
    print(f"Patching direction: {args.direction} (values normalised: clean = 1, corrupted = 0); method: {label}")
    if args.method in SIGNED_CAVEATS:
        print(f"Note: {SIGNED_CAVEATS[args.method]}")
        notes.append(SIGNED_CAVEATS[args.method])
    for kind, result in results.items():
        print(f"  top {PANELS[kind][0].lower()}:")
        print("\n".join(top_cells(result)))
    figures: dict[str, go.Figure] = {}
    for kind, (heading, meaning) in PANELS.items():
        if args.method == "exact":
            figures[heading] = patching_heatmap(results[kind], heading, meaning)
            continue
        estimated = f"{heading}, estimated by {label}"
        figures[estimated] = patching_heatmap(results[kind], estimated, meaning)
        if args.compare_exact:
            exact_heading = f"{heading}, exact patching"
            figures[exact_heading] = patching_heatmap(exact[kind], exact_heading, meaning)
            figures.update(estimate_figures(exact[kind], results[kind], heading, args.method))
    if warning:  # the heatmaps flag a small gap themselves; the estimate's scatter plots and tables do not
        for fig in figures.values():
            pairs.flag_small_gap(fig)
    path = write_html(
        args.out, figures,
        plotlyjs=args.plotly, title="Activation patching", model_name=cfg.model_name, prompts=[args.clean, args.corrupted],
        notes=notes or None,
        metadata={
            "Answer / wrong": f"{args.answer!r} / {args.wrong!r}",
            "Direction": args.direction,
            "Method": label + (", compared with exact patching" if args.compare_exact else ""),
            "Clean logit difference": f"{first.clean_metric:+.4f}",
            "Corrupted logit difference": f"{first.corrupted_metric:+.4f}",
            "Gap (clean - corrupted)": f"{first.clean_metric - first.corrupted_metric:+.4f}",
            "Metric scale (largest |value|)": f"{metric_scale(list(results.values())):.4f}",
        },
    )
    print(f"Report written to {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``gpt2probe patching``: 0 on success, 2 with one ``error:`` line on a mistake."""
    return run_command(build_parser(), run, argv)
