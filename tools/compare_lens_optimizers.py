"""Compare the tuned lens's optimisers on ``tiny-english`` at one budget: the table in docs/tuned-lens.md.

Each configuration trains a lens with ``tools/train_tiny_english_lens.py`` (same corpus,
budget and seed) and is measured on the held-out topics; the logit lens is the baseline.
Run from the repository root (one thread keeps it polite on a shared machine; expect a few
minutes per configuration)::

    python tools/compare_lens_optimizers.py --threads 1 --json /tmp/lens-optimizers.json

It prints a Markdown table of held-out ``KL(final || stream)`` per stream, in nats, rounded
to 3 decimals (the last digits of float32 training differ between CPUs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_tiny_english_lens  # noqa: E402

CONFIGS = {
    "sgd": ("SGD Nesterov, lr 1.0 (torch 0.1)", ["--optimizer", "sgd", "--lr", "1.0"]),
    "adam-1e-3": ("Adam (AMSGrad), lr 1e-3", ["--optimizer", "adam", "--lr", "1e-3"]),
    "adam-1e-2": ("Adam (AMSGrad), lr 1e-2", ["--optimizer", "adam", "--lr", "1e-2"]),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write every run's evaluation here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    budget = ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
              "--seed", str(args.seed), "--threads", str(args.threads)]
    reports = {}
    for key in args.configs:
        label, flags = CONFIGS[key]
        print(f"== {label}", flush=True)
        with tempfile.TemporaryDirectory(prefix="lens-compare-") as out:
            reports[key] = train_tiny_english_lens.main(["--out", out, *flags, *budget])
    first = reports[args.configs[0]]["kl_to_final_nats"]
    header = ["stream", "logit lens", *(CONFIGS[key][0] for key in args.configs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for stream in first:
        cells = [f"`{stream}`", f"{first[stream]['logit_lens']:.3f}"]
        cells += [f"{reports[key]['kl_to_final_nats'][stream]['tuned_lens']:.3f}" for key in args.configs]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(f"\nheld-out KL(final || stream), nats ({args.steps} steps x {args.batch_size} x {args.seq_len}, "
          f"seed {args.seed}):\n{table}")
    if args.json is not None:
        args.json.write_text(json.dumps({"table": table, "runs": reports}, indent=2) + "\n", encoding="utf-8")
    return reports


if __name__ == "__main__":
    main()
