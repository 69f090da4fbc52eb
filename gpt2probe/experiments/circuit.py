"""Edge attribution and an exactly measured circuit on a clean/corrupted prompt pair: ``gpt2probe circuit``.

Every edge between components (token embedding, each head, each MLP -> each later head's
query/key/value input, each later MLP, the logits) is scored from gradients (``--method``);
the ``--top`` edges form the circuit, which is then run exactly with every other edge
carrying its corrupted value. The report draws the circuit (layers left to right, edge
width by score) with the fraction of the clean - corrupted logit difference it recovers,
and lists the top edges. When clean and corrupted barely differ on the metric, the fraction
recovered and the normalised scores divide by noise: the terminal and the report say so.

By default a pair the model tells apart, as for ``gpt2probe patching``: on GPT-2 the
indirect-object pair "When Mary and John went to the store, John gave a drink to" (answer
" Mary") against the same prompt with the second name swapped (answer " John"); on the
offline tiny-english, in-context copying (a sentence whose ending repeats "lock on the";
the answer is the word that followed it earlier, " queue", against the same text with
" file" there).
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

DEFAULT_OUT = "reports/circuit.html"
METHODS = ("atp", "atp*", "ig")


def build_parser() -> Parser:
    description, epilog = doc_help(__doc__)
    parser = Parser(prog="gpt2probe circuit", description=description,
                    epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    pairs.add_pair_arguments(parser)
    options.add(parser, "--method", "of the edges: atp (gradients), atp* (exact attention softmax for query/key "
                "edges), ig (integrated gradients from the corrupted to the clean embeddings); default atp*",
                choices=METHODS, default="atp*")
    parser.add_argument("--ig-steps", dest="steps", type=positive_int, default=None,
                        help="integration points for --method ig (default 16)")
    options.add(parser, "--top", "edges kept in the circuit (default: 20)", default=20)
    add_common_arguments(parser, DEFAULT_OUT, text_only=True)
    add_plotly_argument(parser)
    options.add_deprecated(parser, "circuit")
    return parser


def edge_table(scored, n: int) -> go.Figure:
    import plotly.graph_objects as go

    from ..display.escape import escape_text
    from ..report.style import TABLE_ROW, fmt_score, table_cells, table_layout

    top = scored.top(n)
    gap = scored.clean_metric - scored.corrupted_metric
    fig = go.Figure(go.Table(
        header={"values": table_cells([["rank"], ["edge"], ["score"], ["score / (clean - corrupted)"]]),
                "height": TABLE_ROW},
        cells={"values": table_cells([list(range(1, len(top) + 1)), [escape_text(str(e)) for e, _ in top],
                                      [fmt_score(s) for _, s in top],
                                      [fmt_score(s / gap) if gap else "n/a" for _, s in top]]),
               "align": "left", "height": TABLE_ROW}))
    fig.update_layout(title=f"The {len(top)} highest-ranked of {len(scored)} edges ({escape_text(scored.method)})",
                      **table_layout(len(top)))
    return fig


def circuit_gap_warning(result) -> str | None:
    """A warning when clean and corrupted barely differ, so that the fraction recovered divides by noise."""
    clean, corrupted = result.clean_metric, result.corrupted_metric
    scale = max(abs(clean), abs(corrupted), abs(result.circuit_metric))
    return pairs.gap_warning(clean, corrupted, scale, f"The fraction recovered ({result.recovered:.1%}) and the "
                                                      "normalised edge scores divide by that gap")


def run(args: argparse.Namespace) -> Path:
    from ..interventions import circuit, edge_attribution_patch, faithfulness
    from ..report import write_html
    from ..report.attribution_patching import circuit_graph
    from ..report.style import fmt_score

    if args.steps is not None and args.method != "ig":
        raise UsageError(f"--ig-steps is only used with --method ig (got --method {args.method})")
    check_same_length(args)
    probe, notes = pairs.load_for_pair(args, "circuit", "A circuit found in such a small model means little for GPT-2: it "
                                       "has not learned the indirect-object circuit GPT-2 is known for, so the "
                                       "default pair here is one it does tell apart (in-context copying).",
                                       load_model)
    cfg = probe.cfg
    common = dict(answer=args.answer, wrong=args.wrong)
    scored = edge_attribution_patch(probe, args.clean, args.corrupted, method=args.method, steps=args.steps, **common)
    top = min(args.top, len(scored))
    chosen = circuit(scored, top=top)
    result = faithfulness(probe, chosen, args.clean, args.corrupted, **common)
    print(f"Clean:     {args.clean!r}\nCorrupted: {args.corrupted!r}")
    print(f"logit({args.answer!r}) - logit({args.wrong!r}) at the last token: "
          f"clean {result.clean_metric:+.4f}, corrupted {result.corrupted_metric:+.4f}, "
          f"gap {result.clean_metric - result.corrupted_metric:+.4f}")
    warning = circuit_gap_warning(result)
    if warning is not None:
        notes.append(warning)
        print(f"WARNING: {warning}")
    print(f"Top edges ({args.method}):")
    for edge, score in scored.top(min(10, top)):
        print(f"    {str(edge):<24} {fmt_score(score)}")
    print(f"Circuit of the top {top} of {len(scored)} edges recovers {result.recovered:.1%} of the metric "
          f"({result.circuit_metric:+.4f})" + (" (see the warning: the gap is small)" if warning else ""))
    figures = {"Circuit": circuit_graph(scored, chosen, result), "Top edges": edge_table(scored, top)}
    if warning:  # both show values divided by the gap
        for fig in figures.values():
            pairs.flag_small_gap(fig)
    path = write_html(
        args.out, figures,
        plotlyjs=args.plotly, title="Circuit", model_name=cfg.model_name, prompts=[args.clean, args.corrupted],
        notes=notes or None,
        metadata={
            "Answer / wrong": f"{args.answer!r} / {args.wrong!r}",
            "Edge scores": args.method + (f" ({scored.steps} steps)" if scored.steps else ""),
            "Circuit": f"top {top} of {len(scored)} edges",
            "Faithfulness (fraction of clean - corrupted recovered)": f"{result.recovered:.4f}",
            "Clean / corrupted / circuit logit difference":
                f"{result.clean_metric:+.4f} / {result.corrupted_metric:+.4f} / {result.circuit_metric:+.4f}",
        },
    )
    print(f"Report written to {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``gpt2probe circuit``: 0 on success, 2 with one ``error:`` line on a mistake."""
    return run_command(build_parser(), run, argv)
