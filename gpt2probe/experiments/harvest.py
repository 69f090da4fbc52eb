"""``gpt2probe harvest``: corpus-scale summaries (the dashboard is ``gpt2probe harvest-report``).

Runs the same under ``python -m gpt2probe harvest`` and under
``torchrun --nproc_per_node N -m gpt2probe harvest ...`` (one process per device; gloo on
CPU, nccl on CUDA; several nodes with torchrun's usual ``--nnodes``/``--rdzv-*`` flags).
Mistakes in the command line print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..configs.base import add_arguments, from_args
from ..configs.harvest import HarvestConfig
from ..errors import GPT2ProbeError
from . import options
from .coders import load_coder
from .common import Parser, UsageError, check_device, check_out_dir, check_text_model, positive_int, run_command


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="gpt2probe harvest",
                description="Per-unit statistics and max-activating examples of GPT-2 hooks over a whole corpus.")
    options.add(p, "--model", "(tiny-english)", required=True)
    options.add(p, "--corpus", "text files or globs, .jsonl, .parquet, datasets dirs", required=True)
    options.add(p, "--hooks", "(or globs, e.g. 'blocks.*.mlp.hook_post')", default=[])
    options.add(p, "--sae", "summarise their features as units (gpt2probe sae report shows them)", nargs="+", default=[])
    options.add(p, "--out", "a directory, new or empty, or the one to --resume", required=True)
    options.add(p, "--field")
    options.add(p, "--column")
    # the settings that change the result: one flag per HarvestConfig field, help and defaults from its fields
    add_arguments(HarvestConfig, p, shared=options.SHARED, add_shared=options.add)
    p.add_argument("--directions", type=Path, metavar="FILE",
                   help="safetensors file {hook name: [n, d_model]}: summarise projections on these directions "
                        "(its hooks are harvested, with or without --hooks)")
    options.add(p, "--max-documents")
    p.add_argument("--checkpoint-windows", type=positive_int, metavar="WINDOWS",
                   help="windows harvested between checkpoints (default: after the first batch past 60 s since the last)")
    options.add(p, "--resume")
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


def run(args: argparse.Namespace):
    from ..distributed import local_device, rank_from_env
    from ..harvest import Corpus, harvest

    check_device(args.device)
    config = from_args(HarvestConfig, args)
    if not args.hooks and not args.sae and args.directions is None:
        raise UsageError("give --hooks (hook names or globs), --sae (SAE folders) or --directions (a file of "
                         "directions per hook), or several")
    check_out_dir(args.out)
    check_text_model(args, "harvest", reads="a text corpus")
    corpus = Corpus(paths=args.corpus, field=args.field, column=args.column, max_documents=args.max_documents)
    directions = None
    if args.directions is not None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not args.directions.is_file():
            raise UsageError(f"--directions {str(args.directions)!r} is not a file")
        try:
            directions = load_file(str(args.directions))
        except (SafetensorError, OSError) as error:
            raise UsageError(f"--directions {str(args.directions)!r} is not a readable safetensors file "
                             f"({error})") from None
    hooks = [*args.hooks, *(name for name in directions or {} if name not in args.hooks)]  # the file names its hooks
    saes = [load_coder(path) for path in args.sae]
    probe = load_model(args.model, local_device(args.device), args.dtype)
    check_text_model(args, "harvest", probe, reads="a text corpus")
    result = harvest(probe, corpus, hooks=hooks, saes=saes, sae_sources=[str(p.resolve()) for p in args.sae],
                     out=args.out, config=config, directions=directions,
                     resume=args.resume, checkpoint_windows=args.checkpoint_windows, progress=not args.no_progress,
                     model_source=args.model)
    if result is not None and rank_from_env() == 0:
        t = result.manifest["totals"]
        print(f"Harvested {t['tokens']} tokens of {t['documents']} documents over {len(result.hooks)} hooks "
              f"into {args.out}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gpt2probe harvest``; 0 on success, 2 with one ``error:`` line on a mistake."""
    return run_command(build_parser(), run, argv, check=None,
                       interrupted="interrupted (run again with --resume to continue from the last checkpoint)")
