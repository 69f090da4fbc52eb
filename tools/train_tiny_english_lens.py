"""Train the tuned lens shipped for ``tiny-english`` and measure it on held-out documentation.

The lens is trained on the same documents as the model itself: Python's documentation
(``pydoc_data.topics``) minus the topics the model's training held out, which are listed
in ``gpt2probe/assets/tiny-english/training.json`` (``val_topics``). Those held-out topics
are the evaluation text: for every stream, the mean ``KL(final || stream)`` over all their
positions, read through the logit lens and through the tuned lens.

Rebuild the shipped lens (from the repository root; about ``steps * batch_size * 128``
tokens of training, a few minutes on 2 CPU cores)::

    python tools/train_tiny_english_lens.py --out gpt2probe/assets/tiny-english/tuned-lens

It writes the lens (``tuned_lens.safetensors``, ``tuned_lens.json``) and ``evaluation.json``
(per-stream held-out KL of both lenses, training time) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydoc_data.topics  # noqa: E402

import torch  # noqa: E402

import gpt2probe  # noqa: E402
from gpt2probe.experiments.options import add_old_spelling, take_old_spellings  # noqa: E402
from gpt2probe.lens.tuned_training import OPTIMIZERS, pack_windows  # noqa: E402
from gpt2probe.shipped import shipped_model  # noqa: E402

MODEL = "tiny-english"
OPTIMIZER, ADAM_LR = "adam", 1e-2
"""At this tool's 40-step budget Adam at 1e-2 is below the library's default SGD at every stream
(``tools/compare_lens_optimizers.py``; docs/tuned-lens.md), so the shipped lens uses it."""


def split_topics(model_dir: Path) -> tuple[list[str], list[str]]:
    """(training topics, held-out topics) exactly as the model's own training split them."""
    held_out = json.loads((model_dir / "training.json").read_text(encoding="utf-8"))["val_topics"]
    topics = pydoc_data.topics.topics
    missing = [name for name in held_out if name not in topics]
    if missing:
        raise SystemExit(f"error: this Python's pydoc_data.topics lacks the held-out topics {missing}")
    return [name for name in sorted(topics) if name not in held_out], sorted(held_out)


@torch.no_grad()
def held_out_kl(probe, lens, texts: list[str], seq_len: int) -> list[float]:
    """Mean KL(final || stream) per stream over every position of the held-out windows."""
    windows, _ = pack_windows(probe, texts, seq_len)
    result = gpt2probe.logit_lens(probe, windows, k=1, batch_size=16, lens=lens)
    return torch.stack([item.kl_to_final for item in result]).double().mean(dim=(0, 2)).tolist()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for the lens and evaluation.json")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--optimizer", default=OPTIMIZER, choices=sorted(OPTIMIZERS))
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default: {ADAM_LR:g} for adam, as the shipped lens; the library's "
                        f"{OPTIMIZERS['sgd']:g} for sgd)")
    p.add_argument("--warmup-fraction", type=float, default=None,
                   help="warm-up fraction of the steps (default: the reference's rule, see train_tuned_lens)")
    # The old spelling: gpt2probe's --warmup (finetune, sae) counts steps, this one a fraction.
    add_old_spelling(p, "--warmup", "--warmup-fraction", "it is a fraction of the steps, --warmup-fraction "
                     "(--warmup counts steps in gpt2probe finetune and sae)", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return take_old_spellings(p, p.parse_args(argv))  # (evaluation.json records the settings: no old_ entry)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.lr is None:
        args.lr = ADAM_LR if args.optimizer == "adam" else OPTIMIZERS[args.optimizer]
    torch.set_num_threads(args.threads)
    model_dir = shipped_model(MODEL)
    probe = gpt2probe.load(model_dir, device="cpu")
    train_names, held_out = split_topics(model_dir)
    topics = pydoc_data.topics.topics
    checkpoints = Path(tempfile.mkdtemp(prefix="tuned-lens-"))
    began = time.perf_counter()
    lens = gpt2probe.TunedLens.train(
        probe, [topics[name] for name in train_names], steps=args.steps, batch_size=args.batch_size,
        seq_len=args.seq_len, optimizer=args.optimizer, lr=args.lr, warmup=args.warmup_fraction, seed=args.seed,
        checkpoint_dir=checkpoints,
        corpus=f"pydoc_data.topics of Python {sys.version.split()[0]}: the {len(train_names)} topics tiny-english "
               f"was trained on (held out: {', '.join(held_out)})",
        progress=lambda step, loss: print(f"step {step:4d}  loss {loss:.4f}  {time.perf_counter() - began:6.1f}s",
                                          flush=True),
    )
    seconds = time.perf_counter() - began
    shutil.rmtree(checkpoints)
    texts = [topics[name] for name in held_out]
    logit = held_out_kl(probe, None, texts, args.seq_len)
    tuned = held_out_kl(probe, lens, texts, args.seq_len)
    labels = ["embed"] + [f"L{layer}" for layer in range(probe.cfg.n_layers)]
    report = {"model": MODEL, "held_out_topics": held_out, "training_seconds": round(seconds, 1),
              "training_cpu_seconds": lens.training["cpu_seconds"],
              "threads": args.threads, "settings": vars(args) | {"out": str(args.out)},
              "kl_to_final_nats": {label: {"logit_lens": round(a, 4), "tuned_lens": round(b, 4)}
                                   for label, a, b in zip(labels, logit, tuned)}}
    lens.save(args.out)
    (args.out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"trained in {seconds:.0f}s wall, {lens.training['cpu_seconds']:.0f}s CPU ({args.threads} threads); "
          "held-out KL(final || stream), nats:")
    for label, a, b in zip(labels, logit, tuned):
        print(f"  {label:6s} logit lens {a:7.4f}   tuned lens {b:7.4f}")
    return report


if __name__ == "__main__":
    main()
