"""``gpt2probe finetune``: fine-tune a GPT-2 on text files, the gpt-2-simple workflow done with transformers.

    gpt2probe finetune --model tiny-english --corpus code/*.py --steps 200 --out runs/tiny-code
    gpt2probe finetune --model tiny-english --corpus notes.txt --steps 100 --train blocks.2 --out runs/only-layer-2

Writes a ``save_pretrained`` directory (loadable by transformers and ``gpt2probe.load``) with
``finetune.json`` recording the settings and losses; compare it with ``gpt2probe diff``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..configs.base import add_arguments, from_args
from ..configs.finetune import FinetuneConfig
from . import options
from .common import Parser, UsageError, check_device, check_out_dir, load_model, run_command


def build_parser() -> Parser:
    parser = Parser(prog="gpt2probe finetune", description="Fine-tune a GPT-2 on text files with a seeded AdamW loop.")
    options.add(parser, "--model", "(tiny-english)", required=True)
    options.add(parser, "--corpus", "UTF-8 text files, one document each", required=True, type=Path)
    options.add(parser, "--out", "a directory (save_pretrained)", required=True)
    # the training settings: one flag per FinetuneConfig field, help and defaults from its fields
    add_arguments(FinetuneConfig, parser, shared=options.SHARED, add_shared=options.add)
    options.add(parser, "--device")
    options.add_deprecated(parser, "finetune")
    return parser


def _read_texts(paths: Sequence[Path]) -> list[str]:
    texts = []
    for path in paths:
        try:
            texts.append(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise UsageError(f"--corpus {str(path)!r} does not exist") from None
        except IsADirectoryError:
            raise UsageError(f"--corpus {str(path)!r} is a directory; pass files (a shell glob such as dir/*.py)") from None
        except UnicodeDecodeError as error:
            raise UsageError(f"--corpus {str(path)!r} is not UTF-8 text ({error.reason})") from None
    return texts


def run(args: argparse.Namespace) -> Path:
    from ..finetune import finetune, save_finetune, trainable_parameters

    config = from_args(FinetuneConfig, args)
    if not config.lr > 0:
        raise UsageError(f"--lr must be positive, got {config.lr}")
    texts = _read_texts(args.corpus)
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise UsageError(f"--out {str(args.out)!r} exists and is not an empty directory; choose a new one")
    check_out_dir(args.out)  # before the work: a read-only place fails now, not after training
    check_device(args.device)
    probe, _ = load_model(argparse.Namespace(model=args.model, device=args.device, no_fallback=True))
    trainable_parameters(probe.model, args.train, args.freeze)  # selectors checked before any work
    result = finetune(probe, texts, config=config, progress=True)
    out = save_finetune(result, args.out)
    losses = result.losses
    window = max(1, min(50, len(losses) // 10))  # single steps are noisy: compare the first and last 10% (<= 50 steps)
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    print(f"{result}; loss {first:.3f} -> {last:.3f} (mean of the first and last {window} step"
          f"{'s' if window > 1 else ''}) in {result.seconds:.0f} s")
    print(f"saved to {out}; compare with: gpt2probe diff --base {args.model} --finetuned {out}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``gpt2probe finetune``: 0 on success, 2 with one ``error:`` line on a mistake.

    Its ``--out`` is a directory to create, so the report-path checks of the other commands do not apply.
    """
    return run_command(build_parser(), run, argv, check=None)
