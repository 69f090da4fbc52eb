"""Train the small offline GPT-2-architecture model that gpt2probe ships.

Real GPT-2 weights cannot always be downloaded, and a randomly initialised
model makes a logit-lens report meaningless (every layer predicts noise).
This script trains a tiny model with GPT-2's exact architecture and full
50,257-token vocabulary on English text that ships with every CPython (the
``pydoc_data.topics`` documentation), so the report has genuine
layer-by-layer structure to show without any network access.

The run is seeded and CPU-only (2 threads).  Reproduce the shipped checkpoint
from the repository root with::

    python tools/train_offline_model.py --out /tmp/tiny-english

(``--out`` is required, so the shipped ``gpt2probe/assets/tiny-english`` is never
overwritten by accident).

It writes ``model.safetensors`` (float16) and ``config.json``, a model card
``README.md`` and the metrics file ``training.json`` into ``--out``.  The
tokenizer is not saved there: the package ships ``vocab.json``/``merges.txt``
in ``gpt2probe/data`` and a copy would add more than 1 MB.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import pydoc_data.topics
import sys
import time
from pathlib import Path

import torch
import transformers
from offline_corpus import split_topics
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2probe.tokenizer import gpt2_tokenizer

EOT_ID = 50256
VOCAB_SIZE = 50257


def build_model(n_layer: int, n_embd: int, n_head: int, n_positions: int) -> GPT2LMHeadModel:
    """A GPT-2 LM with the full vocabulary and tied input/output embeddings."""
    config = GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=EOT_ID,
        eos_token_id=EOT_ID,
    )
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (
        n_layer, n_embd, n_head, n_positions
    ), "GPT2Config ignored a size argument"
    model = GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight, "embeddings are not tied"
    return model


def random_batch(ids: torch.Tensor, batch_size: int, n_ctx: int, gen: torch.Generator):
    """``batch_size`` random windows of ``n_ctx`` tokens from ``ids``."""
    starts = torch.randint(0, len(ids) - n_ctx + 1, (batch_size,), generator=gen)
    return torch.stack([ids[s : s + n_ctx] for s in starts.tolist()])


@torch.no_grad()
def evaluate(model: GPT2LMHeadModel, ids: torch.Tensor, n_ctx: int) -> float:
    """Mean next-token loss (nats) over consecutive non-overlapping windows of ``ids``."""
    model.eval()
    windows = ids.unfold(0, n_ctx + 1, n_ctx)
    total, count = 0.0, 0
    for chunk in windows.split(32):
        logits = model(chunk[:, :-1]).logits
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), chunk[:, 1:].reshape(-1), reduction="sum"
        ).item()
        count += chunk[:, 1:].numel()
    model.train()
    return total / count


def lr_lambda(warmup: int, steps: int, floor: float = 0.1):
    """Linear warmup to the peak rate, then cosine decay to ``floor`` of it."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True,
                   help="directory to write (required; the shipped copy is gpt2probe/assets/tiny-english)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--d-model", type=int, default=64, help="n_embd; 64 keeps float16 weights ~7 MB")
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-ctx", type=int, default=128, help="n_positions and training window length")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--eval-every", type=int, default=100)
    return p.parse_args(argv)


def model_card(args, command: str, metrics: dict) -> str:
    """The README.md written next to the checkpoint."""
    return f"""# tiny-english: an offline GPT-2-architecture model

A {metrics['n_params'] / 1e6:.1f}M-parameter GPT-2 language model (`GPT2LMHeadModel`) trained
from scratch inside the gpt2probe repository, so logit-lens reports show real
layer-by-layer structure when pretrained GPT-2 weights cannot be downloaded.

**Warning:** its predictions are those of a ~{metrics['n_params'] / 1e6:.0f}M-parameter model
trained for minutes on Python's documentation. It is useful to see logit-lens
structure, not a stand-in for GPT-2: do not draw conclusions about GPT-2 from it.

- Architecture: GPT-2, n_layer={args.n_layer}, n_embd={args.d_model}, n_head={args.n_head},
  n_positions={args.n_ctx}, vocab_size={VOCAB_SIZE} (GPT-2's full BPE vocabulary), tied
  input/output embeddings. Weights stored in float16 (`model.safetensors`).
- Tokenizer: GPT-2's, built from `gpt2probe/data/vocab.json` and `merges.txt`
  (not duplicated here). `<|endoftext|>` (id {EOT_ID}) separates documents.
- Corpus: `pydoc_data.topics.topics` from CPython {metrics['python']}
  ({metrics['n_topics']} documentation topics, {metrics['train_tokens'] + metrics['val_tokens']:,} tokens).
  Whole topics are held out for validation ({metrics['val_tokens']:,} tokens): {', '.join(metrics['val_topics'])}.
- Training: {args.steps} AdamW steps (lr {args.lr}, {args.warmup} warmup steps then cosine,
  weight decay {args.weight_decay}), batches of {args.batch_size} random {args.n_ctx}-token windows,
  seed {args.seed}, 2 CPU threads, {metrics['wall_seconds'] / 60:.1f} minutes of wall-clock.
  Train loss is the mean minibatch loss (dropout on) over the last {args.eval_every} steps.
- Final loss (nats/token): train {metrics['final_train_loss']:.3f}, validation
  {metrics['final_val_loss']:.3f} (uniform over the vocabulary: {math.log(VOCAB_SIZE):.2f}).

Reproduce (from the repository root):

```
{command}
```

Load with plain transformers:

```python
import torch
from transformers import GPT2LMHeadModel
model = GPT2LMHeadModel.from_pretrained("gpt2probe/assets/tiny-english", dtype=torch.float32)
```
"""


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(args.seed)

    tokenizer = gpt2_tokenizer()
    assert len(tokenizer) == VOCAB_SIZE and tokenizer.eos_token_id == EOT_ID
    train_ids, val_ids, val_names = split_topics(tokenizer, args.seed, args.val_fraction)
    print(f"corpus: {len(train_ids):,} train / {len(val_ids):,} val tokens; val topics {val_names}")

    model = build_model(args.n_layer, args.d_model, args.n_head, args.n_ctx)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters")

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup, args.steps))

    history, recent = [], []
    start = time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        batch = random_batch(train_ids, args.batch_size, args.n_ctx, gen)
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        recent.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            train_loss = sum(recent) / len(recent)
            val_loss = evaluate(model, val_ids, args.n_ctx)
            elapsed = time.perf_counter() - start
            history.append({"step": step, "train_loss": train_loss, "val_loss": val_loss, "seconds": elapsed})
            print(f"step {step:5d}  train {train_loss:.3f}  val {val_loss:.3f}  "
                  f"{elapsed:6.0f}s  ({step / elapsed:.2f} steps/s)", flush=True)
            recent = []
    wall = time.perf_counter() - start

    metrics = {
        "steps": args.steps,
        "seed": args.seed,
        "n_params": n_params,
        "config": {"n_layer": args.n_layer, "n_embd": args.d_model, "n_head": args.n_head,
                   "n_positions": args.n_ctx, "vocab_size": VOCAB_SIZE},
        "hyperparameters": {"batch_size": args.batch_size, "lr": args.lr, "warmup": args.warmup,
                            "weight_decay": args.weight_decay, "val_fraction": args.val_fraction},
        "n_topics": len(pydoc_data.topics.topics),
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "val_topics": val_names,
        "final_train_loss": history[-1]["train_loss"],
        "final_val_loss": history[-1]["val_loss"],
        "history": history,
        "wall_seconds": wall,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    (out / "training.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    command = f"python tools/train_offline_model.py {argv_text}".strip()
    (out / "README.md").write_text(model_card(args, command, metrics), encoding="utf-8")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"saved to {out} ({size / 2**20:.2f} MiB) in {wall / 60:.1f} min")
    return metrics


if __name__ == "__main__":
    main()
