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
from .coders import load_coder
from .common import Parser, UsageError, check_device, finite_float, positive_int, run_command


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="gpt2probe harvest",
                description="Per-unit statistics and max-activating examples of GPT-2 hooks over a whole corpus.")
    p.add_argument("--model", required=True, help="hub id, save_pretrained directory, or shipped model (tiny-english)")
    p.add_argument("--corpus", required=True, nargs="+", help="text files or globs, .jsonl, .parquet, datasets dirs")
    p.add_argument("--hooks", nargs="+", default=[], help="hook names or globs, e.g. 'blocks.*.mlp.hook_post'")
    p.add_argument("--sae", nargs="+", default=[], type=Path, metavar="DIR",
                   help="SAE or transcoder folders: summarise their features as units (gpt2probe sae report shows them)")
    p.add_argument("--out", required=True, type=Path, help="output directory (new or empty, or the one to --resume)")
    p.add_argument("--field", help="JSONL field holding the text")
    p.add_argument("--column", help="Parquet / datasets column holding the text")
    p.add_argument("--seq-len", type=positive_int, help="tokens per packed window (default: model context, at most 128)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (default: 8)")
    p.add_argument("--top-k", type=positive_int, default=20, help="max-activating examples kept per unit (default: 20)")
    p.add_argument("--window", type=int, default=8, help="context tokens kept either side of an example (default: 8)")
    p.add_argument("--threshold", type=finite_float, default=0.0, help="'active' means above this (default: 0)")
    p.add_argument("--bins", type=positive_int, default=64, help="histogram bins per unit (default: 64)")
    p.add_argument("--directions", type=Path,
                   help="safetensors file {hook name: [n, d_model]}: summarise projections on these directions")
    p.add_argument("--save-raw", nargs="+", default=[], metavar="HOOK", help="also write these hooks' raw activations")
    p.add_argument("--seed", type=int, help="shuffle documents within each block with this seed (default: none)")
    p.add_argument("--block-chars", type=positive_int, help="characters per unit of work (default: 65536)")
    p.add_argument("--max-documents", type=positive_int, help="only the first N documents")
    p.add_argument("--checkpoint-every", type=positive_int,
                   help="windows between checkpoints (default: after the first batch past 60 s since the last)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted harvest in --out")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda:LOCAL_RANK under torchrun, else the best)")
    p.add_argument("--dtype", help="float32 (default), float16, bfloat16")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    if not args.hooks and not args.sae:
        raise UsageError("give --hooks (hook names or globs) or --sae (SAE folders), or both")
    corpus = Corpus(paths=args.corpus, field=args.field, column=args.column, max_documents=args.max_documents)
    directions = None
    if args.directions is not None:
        from safetensors.torch import load_file

        if not args.directions.is_file():
            raise UsageError(f"--directions {str(args.directions)!r} is not a file")
        directions = load_file(str(args.directions))
    saes = [load_coder(path) for path in args.sae]
    probe = load_model(args.model, _device(args.device), args.dtype)
    result = harvest(probe, corpus, hooks=args.hooks, saes=saes, sae_sources=[str(p.resolve()) for p in args.sae],
                     out=args.out, top_k=args.top_k, window=args.window,
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
