"""``gpt2probe tuned-lens train``: train a tuned lens for a model on text files and save it.

Each ``--corpus`` file is one document. Training checkpoints to ``OUT/checkpoint`` as it
goes, so the same command run again after an interruption continues where it stopped;
on success the lens is saved into ``OUT`` and the checkpoint removed. Under
``torchrun --nproc_per_node N`` the batch is split across the N processes (gloo on CPU,
NCCL on CUDA); only rank 0 writes and shows progress.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ..configs.base import add_arguments, from_args, to_dict
from ..configs.tuned_lens import DEFAULT_SEQ_LEN, TunedLensTrainConfig
from . import options
from .common import Parser, UsageError, check_device, check_out_dir, load_model, run_command

CHECKPOINT_DIR = "checkpoint"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gpt2probe tuned-lens",
                    description="Train a tuned lens (one affine translator per residual stream) for a GPT-2 model.")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=Parser)
    train = sub.add_parser("train", help="train a lens on text files and save it to --out",
                           description="Train a tuned lens on text files (each file one document) and save it.")
    options.add(train, "--model", "(tiny-english)", required=True)
    options.add(train, "--corpus", "UTF-8 text files, one document each", required=True, type=Path)
    options.add(train, "--out", "a directory for the lens", required=True)
    add_arguments(TunedLensTrainConfig, train, shared=options.SHARED, add_shared=options.add)
    options.add(train, "--checkpoint-every", "(default: 25)", default=25)
    options.add(train, "--device")
    options.add(train, "--no-progress")
    return parser


def read_corpus(files: Sequence[Path]) -> tuple[list[str], str]:
    """The documents and a description (names, sizes, SHA-256) for the lens's metadata."""
    texts, parts = [], []
    for path in files:
        if not path.is_file():
            raise UsageError(f"--corpus {str(path)!r} is not a file")
        data = path.read_bytes()
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise UsageError(f"--corpus {str(path)!r} is not UTF-8 text ({error})") from None
        parts.append(f"{path.name} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]})")
    return texts, f"{len(files)} files: " + ", ".join(parts)


def train(args: argparse.Namespace) -> Path:
    import torch

    from ..distributed import local_rank_from_env, process_group, rank_from_env, world_size_from_env
    from ..lens import TunedLens
    from ..lens.tuned import METADATA_FILE

    check_device(args.device)
    if args.lr is not None and args.lr <= 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {str(args.out)!r} is a file; give a directory for the lens")
    check_out_dir(args.out)  # before the training: a read-only place fails now, not at the end
    if (args.out / METADATA_FILE).exists():
        raise UsageError(f"--out {str(args.out)!r} already holds a trained lens; choose another directory or delete it")
    texts, corpus = read_corpus(args.corpus)
    device = args.device
    if world_size_from_env() > 1 and torch.cuda.is_available() and (device is None or device.startswith("cuda")):
        device = f"cuda:{local_rank_from_env()}"  # one device per process, whatever --device cuda said
    with process_group(device):
        rank = rank_from_env()
        args.device = device
        probe, _ = load_model(args)
        if args.seq_len is None:
            args.seq_len = min(DEFAULT_SEQ_LEN, probe.cfg.n_ctx)
            if rank == 0:
                print(f"Windows of {args.seq_len} tokens (--seq-len to change)")
        config = from_args(TunedLensTrainConfig, args)
        bar = None
        if rank == 0 and not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=args.steps, unit="step", file=sys.stderr, desc="tuned lens")

        def progress(step: int, loss: float) -> None:
            if bar is not None:
                bar.update(step - bar.n)
                bar.set_postfix(kl=f"{loss:.4f}")

        checkpoints = args.out / CHECKPOINT_DIR
        try:
            lens = TunedLens.train(probe, texts, **to_dict(config), checkpoint_dir=checkpoints,
                                   checkpoint_every=args.checkpoint_every, corpus=corpus, progress=progress)
        finally:  # closing ends the bar's line, so an error (e.g. "corpus too short") starts on its own line
            if bar is not None:
                bar.close()
        if rank == 0:
            lens.save(args.out)
            shutil.rmtree(checkpoints, ignore_errors=True)
            print(f"Tuned lens for {probe.cfg.model_name!r} ({len(lens.stream_names)} translators, "
                  f"{args.steps} steps, final mean KL {lens.training['final_loss_mean_per_stream']:.4f} nats) "
                  f"written to {args.out}")
    return args.out


def main(argv: Sequence[str] | None = None) -> int:
    """``gpt2probe tuned-lens``: 0 on success, 2 with one ``error:`` line on a mistake (130 if interrupted)."""
    return run_command(build_parser(), train, argv, check=None,
                       interrupted=f"interrupted; run the same command again to resume from {CHECKPOINT_DIR}/")


if __name__ == "__main__":
    sys.exit(main())
