"""The logit-lens experiment: run the lens on prompts, print a summary, write an HTML report.

Used by ``experiments/logit_lens.py`` and by ``gpt2probe logit-lens``. When the requested
hub model cannot be loaded (offline, not cached) it says so and falls back to the small
model shipped with gpt2probe, stating that in the terminal and in the report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import GPT2ProbeError
from ..lens import LensResult, direct_logit_attribution, logit_lens
from ..report import attribution_bars, kl_per_layer, lens_heatmap, target_trajectory, write_html
from ..shipped import load_with_fallback

DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"
OFFLINE_DEFAULT_PROMPT = "If the object is not a string, the function will return"
DEFAULT_OUT = "reports/logit_lens.html"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2probe logit-lens",
        description="Read every layer of GPT-2 through the final layer norm and the unembedding, and write an HTML report.",
    )
    parser.add_argument("--model", default="gpt2", help="hub id or save_pretrained directory (default: gpt2)")
    parser.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    parser.add_argument("--prompts-file", type=Path, help="a text file with one prompt per line")
    parser.add_argument("--target", help="a token to follow through the layers (default: each prompt's final top-1)")
    parser.add_argument("--k", type=int, default=5, help="top predictions kept per cell (default: 5)")
    parser.add_argument("--include-mid", action="store_true", help="also read the stream between attention and MLP")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"report path (default: {DEFAULT_OUT})")
    parser.add_argument("--no-fallback", action="store_true", help="fail instead of using the shipped offline model")
    return parser


def read_prompts(args: argparse.Namespace, offline: bool) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += [line for line in args.prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return prompts or [OFFLINE_DEFAULT_PROMPT if offline else DEFAULT_PROMPT]


def summary_table(result: LensResult) -> str:
    """Top-1 prediction of every stream at each prompt's last position, as plain text."""
    blocks = []
    for item in result:
        width = max(len("stream"), *(len(label) for label in item.stream_labels))
        lines = [f"Prompt: {item.prompt!r}", f"  {'stream':<{width}}  top-1 next token      prob"]
        for s, label in enumerate(item.stream_labels):
            token, prob = item.top1(stream=s, position=-1)
            lines.append(f"  {label:<{width}}  {token!r:<20}  {prob:6.3f}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def run(args: argparse.Namespace) -> Path:
    probe, note = load_with_fallback(args.model, device=args.device, allow_fallback=not args.no_fallback)
    prompts = read_prompts(args, offline=note is not None)
    if args.target is not None:
        targets = args.target
    else:  # follow each prompt's final answer back through the layers
        final = probe(prompts)[:, -1].argmax(-1)
        targets = [int(t) for t in final]
    progress = _progress_bar(len(prompts))
    result = logit_lens(probe, prompts, k=args.k, targets=targets, include_mid=args.include_mid,
                        progress=progress.update_to if progress else None)
    if progress:
        progress.close()
    first = result[0]
    attr = direct_logit_attribution(probe, prompts[0], int(first.target_ids[-1]))
    figures: dict[str, object] = {}
    for i, item in enumerate(result):
        tag = f" (prompt {i + 1})" if len(result) > 1 else ""
        figures[f"Top-1 prediction by layer and position{tag}"] = lens_heatmap(item, "prob")
        figures[f"KL divergence to the final prediction{tag}"] = kl_per_layer(item)
        figures[f"Target {item.target_tokens[-1]!r} across layers{tag}"] = target_trajectory(item)
    figures[f"Direct logit attribution of {attr.metric_label} (prompt 1)"] = attribution_bars(attr)
    path = write_html(args.out, figures, title="Logit lens", model_name=probe.cfg.model_name, prompts=prompts,
                      notes=[note] if note else None, metadata={"k": args.k, "include_mid": args.include_mid})
    print(summary_table(result))
    if note:
        print(f"\nNote: {note}")
    print(f"\nReport written to {path}")
    return path


def _progress_bar(total: int):
    if total < 2:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="prompt", file=sys.stderr)
    bar.update_to = lambda done: bar.update(done - bar.n)
    return bar


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except GPT2ProbeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
