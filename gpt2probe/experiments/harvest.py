"""``gpt2probe harvest``: corpus-scale summaries (the dashboard is ``gpt2probe harvest-report``).

Runs the same under ``python -m gpt2probe harvest`` and under
``torchrun --nproc_per_node N -m gpt2probe harvest ...`` (one process per device; gloo on
CPU, nccl on CUDA; several nodes with torchrun's usual ``--nnodes``/``--rdzv-*`` flags).
Mistakes in the command line print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import GPT2ProbeError
from . import options
from .common import Parser, UsageError, check_device, finite_float, positive_int, run_command


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="gpt2probe harvest",
                description="Per-unit statistics and max-activating examples of GPT-2 hooks over a whole corpus.")
    p.add_argument("--model", required=True, help="hub id, save_pretrained directory, or shipped model (tiny-english)")
    options.add(p, "--corpus", "text files or globs, .jsonl, .parquet, datasets dirs", required=True)
    p.add_argument("--hooks", required=True, nargs="+", help="hook names or globs, e.g. 'blocks.*.mlp.hook_post'")
    p.add_argument("--out", required=True, type=Path, help="output directory (new or empty, or the one to --resume)")
    options.add(p, "--field")
    options.add(p, "--column")
    p.add_argument("--seq-len", type=positive_int, help="tokens per packed window (default: model context, at most 128)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default: 8)")
    options.add(p, "--examples", "kept per unit (default: 20)", default=20)
    p.add_argument("--window", type=int, default=8, help="context tokens kept either side of an example (default: 8)")
    p.add_argument("--threshold", type=finite_float, default=0.0, help="'active' means above this (default: 0)")
    p.add_argument("--bins", type=positive_int, default=64, help="histogram bins per unit (default: 64)")
    p.add_argument("--directions", type=Path,
                   help="safetensors file {hook name: [n, d_model]}: summarise projections on these directions")
    p.add_argument("--save-raw", nargs="+", default=[], metavar="HOOK", help="also write these hooks' raw activations")
    options.add(p, "--seed", "shuffles the documents within each block (default: none, corpus order)")
    p.add_argument("--block-chars", type=positive_int, help="characters per unit of work (default: 65536)")
    options.add(p, "--max-documents")
    p.add_argument("--checkpoint-every", type=positive_int,
                   help="windows between checkpoints (default: after the first batch past 60 s since the last)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted harvest in --out")
    options.add(p, "--device")
    p.add_argument("--dtype", help="float32 (default), float16, bfloat16")
    options.add(p, "--no-progress")
    options.add_deprecated(p, "harvest")
    return p


def load_model(name: str, device: str | None, dtype: str | None = None):
    """A hub id, a directory, or the name of a model shipped with gpt2probe (loaded exactly, never a fallback)."""
    from ..loading import load
    from ..shipped import NOTES, shipped_model

    target = str(shipped_model(name)) if name in NOTES and not Path(name).exists() else name
    try:
        return load(target, device=device, dtype=dtype)
    except GPT2ProbeError:
        raise
    except (OSError, ValueError, KeyError) as error:  # transformers' own complaints about a broken checkpoint
        raise UsageError(f"cannot load --model {name!r}: {type(error).__name__}: {error}") from None


def _device(arg: str | None) -> str | None:
    if arg is not None:
        return arg
    import torch

    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return None


def run(args: argparse.Namespace):
    from ..harvest import Corpus, harvest

    check_device(args.device)
    if args.window < 0:
        raise UsageError(f"--window must be 0 or more, got {args.window}")
    corpus = Corpus(paths=args.corpus, field=args.field, column=args.column, max_documents=args.max_documents)
    directions = None
    if args.directions is not None:
        from safetensors.torch import load_file

        if not args.directions.is_file():
            raise UsageError(f"--directions {str(args.directions)!r} is not a file")
        directions = load_file(str(args.directions))
    probe = load_model(args.model, _device(args.device), args.dtype)
    result = harvest(probe, corpus, hooks=args.hooks, out=args.out, top_k=args.examples, window=args.window,
                     seq_len=args.seq_len, batch_size=args.batch_size, threshold=args.threshold, n_bins=args.bins,
                     directions=directions, save_raw=args.save_raw, seed=args.seed, block_chars=args.block_chars,
                     resume=args.resume, checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                     model_source=args.model)
    if result is not None and int(os.environ.get("RANK", "0")) == 0:
        t = result.manifest["totals"]
        print(f"Harvested {t['tokens']} tokens of {t['documents']} documents over {len(result.hooks)} hooks "
              f"into {args.out}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gpt2probe harvest``; 0 on success, 2 with one ``error:`` line on a mistake."""
    return run_command(build_parser(), run, argv, check=None,
                       interrupted="interrupted (run again with --resume to continue from the last checkpoint)")
