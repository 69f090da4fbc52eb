"""SAE training throughput: gpt2probe's trainer vs SAELens's ``SAETrainer`` on the same activations.

Both train a top-k SAE (same ``d_in``, ``d_sae``, ``k``, tokens per step, number of steps, Adam,
float32, CPU, 1 torch thread) on the *same* activations: the residual stream
``blocks.L.hook_resid_post`` of the shipped tiny-english model over Python's documentation
topics, captured once and written to a safetensors file. SAELens 6 needs TransformerLens < 4,
so it runs in its own virtual environment (``--saelens-python``, default
``/work/main/.venv-saelens/bin/python``) as a subprocess that reads that file.

What each side does per step is what it does by default for a top-k SAE: gpt2probe decodes
only the kept (token, feature) pairs and adds the aux-k loss; SAELens (``TopKTrainingSAE``,
``aux_loss_coefficient=1``, dense decode unless ``use_sparse_activations``) adds its aux-k loss
and its dead-feature and sparsity bookkeeping. Both estimate the input scale first
(``expected_average_only_in``); gpt2probe also initialises ``b_dec`` at a geometric median.
Timed: the whole training call after a short warm-up run, tokens/s = steps x tokens per step / seconds;
the median of ``--repeats`` interleaved runs (gpt2probe, SAELens, gpt2probe, ...).

    python -m benchmarks.bench_sae_training --out benchmarks/results/cpu-sae-training.md   # about a minute

On a shared machine the absolute figures are noise; the ratio of interleaved runs is what to read.
``--train-batch-size-tokens`` is the activation rows per optimiser step (SAELens's and ``gpt2probe
sae train``'s name); it was ``--batch-size``, which everywhere else counts sequences per pass through
the model, and that spelling still works here, with a warning.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from gpt2probe.experiments.options import add_old_spelling, take_old_spellings  # noqa: E402

SAELENS_PYTHON = str(REPO / ".venv-saelens" / "bin" / "python")  # scripts/setup.sh --saelens builds it
TRAIN_BATCH_SIZE_TOKENS = 4096  # SAELens's default

# Run by SAELens's interpreter: train once for warm-up, then time `repeats` runs, print JSON seconds.
SAELENS_CHILD = r"""
import json, sys, time, torch
from safetensors.torch import load_file
from sae_lens import SAETrainer
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
torch.set_num_threads(1)
args = json.loads(sys.argv[1])
acts = load_file(args["path"])["activations"]
batch = args["train_batch_size_tokens"]  # rows (tokens) per optimiser step

def provider(seed):
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(acts.shape[0], generator=gen)
        for i in range(0, acts.shape[0] - batch + 1, batch):
            yield acts[perm[i:i + batch]]

def run(steps):
    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=args["d_sae"], k=args["k"], dtype="float32",
                                                device="cpu", normalize_activations="expected_average_only_in"))
    cfg = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch,
                           lr=args["lr"], lr_end=args["lr"] / 10, lr_warm_up_steps=steps // 20, lr_decay_steps=steps // 5, device="cpu",
                           n_batches_for_norm_estimate=4)
    started = time.perf_counter()
    SAETrainer(cfg, sae, provider(0)).fit()
    return time.perf_counter() - started

run(args["warmup_steps"])
print(json.dumps([run(args["steps"]) for _ in range(args["repeats"])]))
"""


def capture(model: str, hook: str, path: Path) -> torch.Tensor:
    """The hook's activations over the documentation topics the model did not hold out, written to ``path``."""
    from safetensors.torch import save_file

    import gpt2probe
    from gpt2probe.harvest.corpus import Corpus
    from gpt2probe.sae.stream import CorpusActivations
    from tools.train_tiny_english_saes import model_directory, split_topics

    directory = model_directory(model)
    probe = gpt2probe.load(directory, device="cpu")
    texts, _ = split_topics(directory)
    rows = torch.cat(list(CorpusActivations(probe, Corpus(texts=texts), [hook], seq_len=128, epochs=1).chunks()))
    save_file({"activations": rows.contiguous()}, str(path))
    return rows


def time_gpt2probe(acts: torch.Tensor, args: argparse.Namespace, steps: int) -> float:
    from gpt2probe import SAE

    started = time.perf_counter()
    SAE.fit(acts, d_sae=args.d_sae, k=args.k, hook_name=args.hook, steps=steps,
            train_batch_size_tokens=args.train_batch_size_tokens, lr=args.lr, progress=False)
    return time.perf_counter() - started


def time_saelens(path: Path, args: argparse.Namespace) -> list[float]:
    settings = {"path": str(path), "d_sae": args.d_sae, "k": args.k, "train_batch_size_tokens": args.train_batch_size_tokens, "lr": args.lr,
                "steps": args.steps, "warmup_steps": 5, "repeats": 1}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    done = subprocess.run([args.saelens_python, "-c", SAELENS_CHILD, json.dumps(settings)], capture_output=True,
                          text=True, env=env, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"SAELens's run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-english")
    p.add_argument("--hook", default="blocks.2.hook_resid_post")
    p.add_argument("--d-sae", type=int, default=512)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--train-batch-size-tokens", type=int, default=None,
                   help=f"activation rows (tokens) per optimiser step, SAELens's train_batch_size_tokens "
                        f"(default {TRAIN_BATCH_SIZE_TOKENS})")
    add_old_spelling(p, "--batch-size", "--train-batch-size-tokens", "it counted tokens per optimiser step, which "
                     "is --train-batch-size-tokens (--batch-size counts sequences per pass in gpt2probe's commands)",
                     type=int)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--saelens-python", default=SAELENS_PYTHON)
    p.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    args = take_old_spellings(p, p.parse_args(argv))
    if args.train_batch_size_tokens is None:
        args.train_batch_size_tokens = TRAIN_BATCH_SIZE_TOKENS
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "activations.safetensors"
        acts = capture(args.model, args.hook, path)
        time_gpt2probe(acts, args, 5)  # warm-up
        ours, theirs = [], []
        for _ in range(args.repeats):  # interleaved, so that load from other processes hits both alike
            ours.append(time_gpt2probe(acts, args, args.steps))
            theirs += time_saelens(path, args)
    tokens = args.steps * args.train_batch_size_tokens
    rate_ours, rate_theirs = tokens / statistics.median(ours), tokens / statistics.median(theirs)
    result = {"tokens": tokens, "rows": acts.shape[0], "d_in": acts.shape[1], "gpt2probe_tokens_per_s": rate_ours,
              "saelens_tokens_per_s": rate_theirs, "ratio": rate_ours / rate_theirs, "gpt2probe_s": ours,
              "saelens_s": theirs}
    table = "\n".join([
        f"Top-k SAE (d_in {acts.shape[1]}, d_sae {args.d_sae}, k {args.k}) on {args.model} {args.hook}, "
        f"{acts.shape[0]:,} activations, {args.train_batch_size_tokens:,} tokens a step, {args.steps} steps, 1 thread, "
        f"median of {args.repeats}",
        "",
        "| trainer | tokens/s | seconds per run |",
        "|---|---:|---:|",
        f"| gpt2probe `SAE.fit` | {rate_ours:,.0f} | {statistics.median(ours):.1f} |",
        f"| SAELens `SAETrainer` | {rate_theirs:,.0f} | {statistics.median(theirs):.1f} |",
        f"| ratio | {rate_ours / rate_theirs:.2f}x | |",
    ])
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
