"""``gpt2probe diff``: compare a base GPT-2 with a fine-tuned one and write an HTML report.

    gpt2probe diff --base tiny-english --tuned runs/tiny-code --prompt "def f(x):" --out reports/diff.html

The report holds the weight-change heatmap (layer x component), KL per token on each
prompt, the per-layer lens divergence, head-score deltas and the patching localisation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import GPT2ProbeError
from ..loading import load
from ..report.diff import head_score_deltas, kl_per_token, lens_divergence, localisation_heatmap, weight_change_heatmap
from ..report.html import write_html

DEFAULT_OUT = "reports/diff.html"
DEFAULT_PROMPTS = ("def read_config(path):\n    with open(path) as f:", "The value of the expression is")


class UsageError(Exception):
    """A mistake on the command line, reported as one ``error:`` line with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2probe diff",
        description="Compare a base GPT-2 with a fine-tune of it: weights, predictions, lens, heads, localisation.",
    )
    parser.add_argument("--base", required=True, help="base model: hub id, directory, or shipped name (tiny-english)")
    parser.add_argument("--tuned", required=True, help="fine-tuned model: hub id, directory, or shipped name")
    parser.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    parser.add_argument("--prompts-file", type=Path, help="a UTF-8 text file with one prompt per line")
    parser.add_argument("--no-heads", action="store_true", help="skip head scores (three extra runs per model)")
    parser.add_argument("--no-patching", action="store_true", help="skip the cross-model patching sweep")
    parser.add_argument("--layers-only", action="store_true", help="patch layer outputs only, not each head")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"report path (default: {DEFAULT_OUT})")
    return parser


def read_prompts(args: argparse.Namespace) -> list[str]:
    """The prompts from ``--prompt`` and ``--prompts-file`` (split on ``\\n`` only), or the defaults."""
    prompts = list(args.prompt or [])
    if args.prompts_file is not None:
        try:
            text = args.prompts_file.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise UsageError(f"--prompts-file {str(args.prompts_file)!r} does not exist") from None
        except IsADirectoryError:
            raise UsageError(f"--prompts-file {str(args.prompts_file)!r} is a directory") from None
        except UnicodeDecodeError as error:
            raise UsageError(f"--prompts-file {str(args.prompts_file)!r} is not UTF-8 text ({error.reason})") from None
        from_file = [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
        if not from_file:
            raise UsageError(f"--prompts-file {str(args.prompts_file)!r} holds no prompt")
        prompts += from_file
    if any(not p.strip() for p in prompts):
        raise UsageError("--prompt must not be empty")
    return prompts or list(DEFAULT_PROMPTS)


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot be written, before any model is loaded."""
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a directory; give a file name such as {str(out / 'diff.html')!r}")
    parent = out.parent if str(out.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise UsageError(f"--out {str(out)!r}: {str(existing)!r} is not a directory")
    import os

    if not os.access(existing, os.W_OK):
        raise UsageError(f"--out {str(out)!r}: cannot write in {str(existing)!r}")


def check_device(device: str | None) -> None:
    import torch

    if device is None:
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r} is not a device; valid: cpu, cuda, cuda:N, mps") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: MPS is not available on this machine")


def run(args: argparse.Namespace) -> int:
    from ..diffing import compare

    prompts = read_prompts(args)
    check_out(args.out)
    check_device(args.device)
    base = load(args.base, device=args.device)
    tuned = load(args.tuned, device=args.device)
    diff = compare(base, tuned, prompts, head_scores=not args.no_heads, patching=not args.no_patching,
                   patch_heads=not args.layers_only)
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
    path = write_html(args.out, figures, title="Base vs fine-tuned", model_name=f"{diff.base_name} → {diff.tuned_name}",
                      prompts=prompts, metadata={"mean KL (nats)": f"{diff.mean_kl:.4g}"})
    print(f"report: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (UsageError, GPT2ProbeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
