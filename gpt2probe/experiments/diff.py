"""``gpt2probe diff``: compare a base GPT-2 with a fine-tuned one and write an HTML report.

    gpt2probe diff --base tiny-english --finetuned runs/tiny-code --prompt "def f(x):" --out reports/diff.html

The report holds the weight-change heatmap (layer x component), KL per token on each
prompt, the per-layer lens divergence, head-score deltas and the patching localisation.
Both models are loaded exactly as named (hub id, directory or shipped name): no fallback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from . import options
from .common import Parser, UsageError, add_plotly_argument, load_model, read_prompts_file, run_command

DEFAULT_OUT = "reports/diff.html"
DEFAULT_PROMPTS = ("def read_config(path):\n    with open(path) as f:", "The value of the expression is")


def build_parser() -> Parser:
    parser = Parser(
        prog="gpt2probe diff",
        description="Compare a base GPT-2 with a fine-tune of it: weights, predictions, lens, heads, localisation.",
    )
    parser.add_argument("--base", required=True, help="base model: hub id, directory, or shipped name (tiny-english)")
    options.add(parser, "--finetuned", required=True)
    options.add(parser, "--prompt", "repeat for several", action="append")
    options.add(parser, "--prompts-file")
    parser.add_argument("--no-heads", action="store_true", help="skip head scores (three extra runs per model)")
    parser.add_argument("--no-patching", action="store_true", help="skip the cross-model patching sweep")
    parser.add_argument("--no-lens", action="store_true", help="skip the per-layer logit-lens comparison")
    parser.add_argument("--layers-only", action="store_true", help="patch layer outputs only, not each head")
    options.add(parser, "--device")
    options.add(parser, "--out", f"a report file (default: {DEFAULT_OUT})", default=Path(DEFAULT_OUT))
    add_plotly_argument(parser)
    parser.set_defaults(model=None)  # the shared checks look at --model; this command has --base and --finetuned
    options.add_deprecated(parser, "diff")
    return parser


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts from ``--prompt`` and ``--prompts-file``, or the defaults (one code, one prose)."""
    prompts = list(args.prompt or [])
    if any(not p.strip() for p in prompts):
        raise UsageError("--prompt must not be empty")
    if args.prompts_file is not None:
        prompts += read_prompts_file(args.prompts_file)
    return prompts or list(DEFAULT_PROMPTS)


def _load(name: str, option: str, device: str | None):
    if not name.strip():
        raise UsageError(f"{option} is empty; give a hub id, a directory or a shipped model name")
    probe, _ = load_model(argparse.Namespace(model=name, device=device, no_fallback=True))
    return probe


def run(args: argparse.Namespace) -> Path:
    from ..diffing import compare
    from ..report.diff import head_score_deltas, kl_per_token, lens_divergence, localisation_heatmap, weight_change_heatmap
    from ..report.html import write_html

    prompts = read_prompts(args)
    base = _load(args.base, "--base", args.device)
    tuned = _load(args.finetuned, "--finetuned", args.device)
    diff = compare(base, tuned, prompts, head_scores=not args.no_heads, patching=not args.no_patching,
                   patch_heads=not args.layers_only, lens=not args.no_lens)
    print(diff)
    print(f"changed components: {', '.join(diff.changed_components()) or 'none'}")
    for item in diff.disagreements[:5]:
        print(f"  prompt {item.prompt + 1} after {item.token!r} (position {item.position}): KL {item.kl:.4f} nats, "
              f"top-1 {item.base_top!r} -> {item.tuned_top!r}")
    figures = {"Weight changes": weight_change_heatmap(diff), "Divergence through depth": lens_divergence(diff)}
    for index in range(len(prompts)):
        figures[f"Next-token KL, prompt {index + 1}"] = kl_per_token(diff, index)
    if diff.head_scores_base:
        figures["Head scores"] = head_score_deltas(diff)
    if diff.localisation is not None:
        figures["Localisation by patching"] = localisation_heatmap(diff)
    path = write_html(args.out, figures,
        plotlyjs=args.plotly, title="Base vs fine-tuned", model_name=f"{diff.base_name} → {diff.tuned_name}",
                      prompts=prompts, metadata={"mean KL (nats)": f"{diff.mean_kl:.4g}"})
    print(f"report: {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``gpt2probe diff``: 0 on success, 2 with one ``error:`` line on a mistake."""
    return run_command(build_parser(), run, argv)
