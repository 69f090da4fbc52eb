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
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import GPT2ProbeError

CHECKPOINT_DIR = "checkpoint"


class UsageError(Exception):
    """A mistake on the command line (printed as one ``error:`` line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage + error
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpt2probe tuned-lens",
                     description="Train a tuned lens (one affine translator per residual stream) for a GPT-2 model.")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    train = sub.add_parser("train", help="train a lens on text files and save it to --out",
                           description="Train a tuned lens on text files (each file one document) and save it.")
    train.add_argument("--model", required=True, help="hub id, save_pretrained directory or shipped model name")
    train.add_argument("--corpus", nargs="+", required=True, type=Path, metavar="FILE",
                       help="UTF-8 text files, one document each")
    train.add_argument("--steps", type=int, required=True, help="optimiser steps (each uses --batch-size new windows)")
    train.add_argument("--out", type=Path, required=True, help="directory to write the lens into")
    train.add_argument("--batch-size", type=int, default=8, help="windows per step, across all processes (default 8)")
    train.add_argument("--seq-len", type=int, help="tokens per window (default: the model's context length)")
    train.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="default: adam")
    train.add_argument("--lr", type=float, help="peak learning rate (default: 1e-3 for adam, 1.0 for sgd)")
    train.add_argument("--seed", type=int, default=0, help="orders the windows (default 0)")
    train.add_argument("--include-mid", action="store_true", help="also translate the mid-block streams")
    train.add_argument("--checkpoint-every", type=int, default=25, help="steps between checkpoints (default 25)")
    train.add_argument("--device", help="cpu, cuda, mps (default: the best available; cuda:LOCAL_RANK under torchrun)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{name} must be positive, got {value}")


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

    from ..lens import TunedLens
    from ..lens.tuned import METADATA_FILE
    from ..loading import load

    for name in ("steps", "batch_size", "seq_len", "lr", "checkpoint_every"):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    if (args.out / METADATA_FILE).exists():
        raise UsageError(f"--out {str(args.out)!r} already holds a trained lens; choose another directory or delete it")
    texts, corpus = read_corpus(args.corpus)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device
    if world > 1:
        import torch.distributed as dist

        cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
        if cuda:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        rank = int(os.environ.get("RANK", "0"))
        probe = _load_model(load, args.model, device)
        bar = None
        if rank == 0 and not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=args.steps, unit="step", file=sys.stderr, desc="tuned lens")

        def progress(step: int, loss: float) -> None:
            if bar is not None:
                bar.update(step - bar.n)
                bar.set_postfix(kl=f"{loss:.4f}")

        checkpoints = args.out / CHECKPOINT_DIR
        lens = TunedLens.train(probe, texts, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len,
                               optimizer=args.optimizer, lr=args.lr, seed=args.seed, include_mid=args.include_mid,
                               checkpoint_dir=checkpoints, checkpoint_every=args.checkpoint_every, corpus=corpus,
                               progress=progress)
        if bar is not None:
            bar.close()
        if rank == 0:
            lens.save(args.out)
            shutil.rmtree(checkpoints, ignore_errors=True)
            print(f"Tuned lens for {probe.cfg.model_name!r} ({len(lens.stream_names)} translators, "
                  f"{args.steps} steps, final mean KL {lens.training['final_loss_mean_per_stream']:.4f} nats) "
                  f"written to {args.out}")
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return args.out


def _load_model(load, model: str, device: str | None):
    from ..shipped import NOTES, shipped_model

    return load(shipped_model(model) if model in NOTES else model, device=device)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        train(args)
    except (UsageError, GPT2ProbeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
