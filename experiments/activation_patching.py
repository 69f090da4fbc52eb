"""Activation patching on a clean/corrupted prompt pair, as an HTML report of heatmaps.

    python experiments/activation_patching.py
    python experiments/activation_patching.py --clean "..." --corrupted "..." --answer " Paris" --wrong " Rome"

By default the indirect-object pair: "When Mary and John went to the store, John gave a
drink to" (answer " Mary") against the same prompt with the second name swapped (answer
" John"). Each clean activation is patched into the corrupted run in turn (``--direction
noise`` does the reverse) and the logit difference ``answer - wrong`` at the last token is
reported, normalised so that the clean run is 1 and the corrupted run 0: the residual
stream by layer and position, each layer's attention and MLP output by position, and each
attention head. When GPT-2's weights are unavailable the shipped offline model is used and
both the terminal and the report say so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

from gpt2probe.errors import GPT2ProbeError
from gpt2probe.interventions import PatchingResult, patch
from gpt2probe.report import display_token, escape_text, write_html
from gpt2probe.shipped import load_with_fallback

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
ANSWER, WRONG = " Mary", " John"
DEFAULT_OUT = Path("reports/activation_patching.html")

# kind -> (section heading, what one cell means)
PANELS = {
    "resid_pre": ("Residual stream (resid_pre) by layer and position", "residual stream entering the layer, at one position"),
    "attn_out": ("Attention output by layer and position", "the layer's attention output, at one position"),
    "mlp_out": ("MLP output by layer and position", "the layer's MLP output, at one position"),
    "head": ("Attention heads (output z, every position)", "one head's output at every position"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt2", help="hub id or save_pretrained directory (default: gpt2)")
    parser.add_argument("--clean", default=CLEAN, help="the clean prompt")
    parser.add_argument("--corrupted", default=CORRUPTED, help="the corrupted prompt (same number of tokens)")
    parser.add_argument("--answer", default=ANSWER, help="the clean prompt's answer, one token (default: ' Mary')")
    parser.add_argument("--wrong", default=WRONG, help="the corrupted prompt's answer, one token (default: ' John')")
    parser.add_argument("--direction", choices=("denoise", "noise"), default="denoise",
                        help="denoise: clean activations into the corrupted run (default); noise: the reverse")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--batch-size", type=int, default=16, help="patched runs per forward pass (default: 16)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report path (default: {DEFAULT_OUT})")
    parser.add_argument("--no-fallback", action="store_true", help="fail instead of using the shipped offline model")
    return parser


def patching_heatmap(result: PatchingResult, heading: str, meaning: str) -> go.Figure:
    """A layer (y) by position or head (x) heatmap, red = restores the clean behaviour, blue = the opposite."""
    values = result.values.float()
    rows, cols = result.axis_labels
    is_pos = result.axis_names[1] == "pos"
    col_text = [display_token(label) if is_pos else escape_text(label) for label in cols]
    bound = max(1.0, float(values.abs().max()))
    unit = "normalised: clean = 1, corrupted = 0" if result.normalized else "metric"
    fig = go.Figure(go.Heatmap(
        z=values.tolist(),
        x=list(range(len(cols))),
        y=list(range(len(rows))),
        text=[[f"{v:.2f}" for v in row] for row in values.tolist()],
        texttemplate="%{text}",
        textfont=dict(size=10),
        hovertext=[[f"<b>{escape_text(r)} {'position ' + str(j) + ' ' if is_pos else ''}{col_text[j]}</b><br>"
                    f"patched value {float(values[i, j]):+.3f}" for j in range(len(cols))] for i, r in enumerate(rows)],
        hovertemplate="%{hovertext}<extra></extra>",
        colorscale="RdBu", reversescale=True, zmid=0, zmin=-bound, zmax=bound,
        colorbar=dict(title=dict(text="patched")),
        xgap=1, ygap=1,
    ))
    direction = ("clean activation patched into the corrupted run" if result.direction == "denoise"
                 else "corrupted activation patched into the clean run")
    fig.update_layout(
        title=dict(text=f"{escape_text(heading)}<br><sup>each cell: {escape_text(meaning)}; {direction}; {unit}</sup>"),
        xaxis=dict(title=dict(text="position (clean/corrupted token)" if is_pos else "head"),
                   tickmode="array", tickvals=list(range(len(cols))), ticktext=col_text),
        yaxis=dict(title=dict(text="layer"), tickmode="array", tickvals=list(range(len(rows))),
                   ticktext=[escape_text(r) for r in rows], autorange="reversed"),
        height=max(320, 28 * len(rows) + 200),
        width=max(760, (60 if is_pos else 44) * len(cols) + 260),
    )
    return fig


def top_cells(result: PatchingResult, n: int = 5) -> list[str]:
    """The ``n`` cells with the largest values, as text lines."""
    values = result.values.float()
    flat = values.flatten()
    order = flat.argsort(descending=True)[:n]
    rows, cols = result.axis_labels
    lines = []
    for index in order.tolist():
        i, j = divmod(index, len(cols))
        where = f"{rows[i]} pos {j} {cols[j]!r}" if result.axis_names[1] == "pos" else f"{rows[i]}{cols[j]}"
        lines.append(f"    {where:<36} {float(flat[index]):+.3f}")
    return lines


def run(args: argparse.Namespace) -> Path:
    probe, fallback_note = load_with_fallback(args.model, device=args.device, allow_fallback=not args.no_fallback)
    model_name = probe.cfg.model_name
    notes = []
    if fallback_note is not None:
        notes.append(
            f"GPT-2's weights ({args.model!r}) were not available, so this report uses gpt2probe's small offline model "
            f"{model_name!r} ({probe.cfg.n_layers} layers, d_model {probe.cfg.d_model}). Patching results from such a "
            "small model mean little: it has not learned the indirect-object circuit GPT-2 is known for."
        )
    print(f"Model: {model_name} ({probe.cfg.n_layers} layers, {probe.cfg.n_heads} heads per layer)")
    for note in notes:
        print(f"NOTE: {note}")
    results = {
        kind: patch(probe, args.clean, args.corrupted, kind=kind, answer=args.answer, wrong=args.wrong,
                    direction=args.direction, batch_size=args.batch_size)
        for kind in PANELS
    }
    first = results["resid_pre"]
    print(f"Clean:     {args.clean!r}\nCorrupted: {args.corrupted!r}")
    print(f"logit({args.answer!r}) - logit({args.wrong!r}) at the last token: "
          f"clean {first.clean_metric:+.3f}, corrupted {first.corrupted_metric:+.3f}")
    print(f"Patching direction: {args.direction} (values normalised: clean = 1, corrupted = 0)")
    for kind, result in results.items():
        print(f"  top {PANELS[kind][0].lower()}:")
        print("\n".join(top_cells(result)))
    figures = {heading: patching_heatmap(results[kind], heading, meaning) for kind, (heading, meaning) in PANELS.items()}
    path = write_html(
        args.out, figures, title="Activation patching", model_name=model_name, prompts=[args.clean, args.corrupted],
        notes=notes or None,
        metadata={
            "Answer / wrong": f"{args.answer!r} / {args.wrong!r}",
            "Direction": args.direction,
            "Clean logit difference": f"{first.clean_metric:+.4f}",
            "Corrupted logit difference": f"{first.corrupted_metric:+.4f}",
        },
    )
    print(f"Report written to {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (GPT2ProbeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
