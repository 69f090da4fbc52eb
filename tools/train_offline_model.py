"""Train ``tiny-english``, the offline GPT-2-architecture model gpt2probe ships, with its copying circuit.

Real GPT-2 weights cannot always be downloaded, and a random model gives the tools nothing to
find. This script trains a GPT-2-architecture model (``GPT2LMHeadModel``, GPT-2's full 50,257-token
vocabulary, tied embeddings) from scratch on text that ships with every CPython: the documentation,
the standard library's docstrings and sources, and repeated passages of them
(``tools/offline_corpus.py``). Gradient descent forms a previous-token head and induction heads in
it: the shipped model copies in context, which the tests, the tutorials and the examples show.

The shipped model was trained on a GPU lent for one session (an H200, 5.4 minutes; the model card
``gpt2probe/assets/tiny-english/README.md`` gives the exact command, every setting spelled out).
The corpus was tokenized here first and carried there (``--corpus``), so the run used exactly the
CPython 3.11 text the card records; ``tools/device_train.sh`` is the script that ran. The same
command runs on a CPU (``--device cpu``), about ten hours on two cores.

The run is seeded, checkpoints every ``--checkpoint-every`` steps into ``--out``/checkpoint (run the
same command again to continue), and prints the held-out loss and the circuit's vital signs (loss on
each half of repeated random tokens, best previous-token and induction scores) at every evaluation;
``training.json`` keeps their history. ``--out`` is required, so the shipped copy is never
overwritten by accident.

What the earlier CPU runs (d_model 128, 4 layers, 256 positions, batches of 8 windows, lr 3e-3,
bfloat16 autocast, 1.2-1.4 s a step on two cores) found, and why the recipe is what it is:

- Runs of 400 to 1,250 steps (2 million tokens at most) learned the language but formed no
  circuit, with or without repeated passages: best previous-token score 0.09 (about what uniform
  attention scores), best induction score 0.04, no copying of a repeated random half. The GPU run
  saw 74 million tokens; its induction heads formed between 1,000 and 2,000 steps (16 to 33
  million tokens: ``training.json``'s history).
- The position table was drowned: weight decay shrank the position rows (norm 0.4-0.7) while the
  tied token embeddings grew to norm 4, so after ``ln_1`` attention had almost no position signal
  to build a previous-token head from. The position table starts as sinusoids (row norm 0.8 at
  width 128, ``sinusoidal_positions``) and is not decayed.
- ``random_repeats`` (uniform random tokens, each block repeated) is the one source on which only
  copying lowers the loss; blocks drawn with the corpus's own frequencies taught nothing (guessing
  common tokens does as well as copying).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from collections import Counter
from pathlib import Path

import torch
import transformers
from offline_corpus import EOT_ID, BatchSampler, Corpus, build_corpus, load_corpus
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB_SIZE = 50257
DEFAULT_MIX = "code=0.3,docstrings=0.1,docs=0.2,repeats=0.4"
COPY_HALF_LEN = 20  # the repeated-sequence check: <|endoftext|> + 20 random tokens + the same 20
COPY_SEQS = 16
COPY_POOL = 3000  # the random tokens are drawn from the 3,000 commonest in Python's docs


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
        # No dropout: the run sees each window about once, and dropout slows the circuit's forming.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (
        n_layer, n_embd, n_head, n_positions
    ), "GPT2Config ignored a size argument"
    model = GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight, "embeddings are not tied"
    with torch.no_grad():
        model.transformer.wpe.weight.copy_(sinusoidal_positions(n_positions, n_embd))
    return model


def sinusoidal_positions(n_positions: int, n_embd: int, scale: float = 0.1) -> torch.Tensor:
    """The original Transformer's sinusoids, entries in [-scale, scale]: the learned positions' starting point.

    GPT-2 learns its position embeddings from a random start; the learned ones end up close to
    sinusoids of several frequencies. Starting there gives attention an offset it can read from
    the first step (a previous-token head needs one), instead of waiting for it to be learned:
    runs from a random start showed no previous-token head after 700 steps. Rows have norm
    ``scale * sqrt(n_embd / 2)`` (0.8 at width 128), comparable to the token embeddings' after a
    few hundred steps, so ``ln_1`` keeps the position signal; they are trained as usual (not decayed).
    """
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, n_embd, 2, dtype=torch.float32) * (-math.log(10000.0) / n_embd))
    table = torch.zeros(n_positions, n_embd)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return scale * table


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        mix[name.strip()] = float(weight)
    return mix


@torch.no_grad()
def evaluate(model: GPT2LMHeadModel, ids: torch.Tensor, n_ctx: int) -> float:
    """Mean next-token loss (nats) over consecutive non-overlapping windows of ``ids``, in float32."""
    windows = ids.unfold(0, n_ctx + 1, n_ctx).to(model.device)
    total, count = 0.0, 0
    for chunk in windows.split(32):
        logits = model(chunk[:, :-1]).logits
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), chunk[:, 1:].reshape(-1), reduction="sum"
        ).item()
        count += chunk[:, 1:].numel()
    return total / count


def copy_check_tokens(corpus: Corpus, seed: int) -> torch.Tensor:
    """``[COPY_SEQS, 1 + 2 * COPY_HALF_LEN]``: ``<|endoftext|>``, 20 common tokens, the same 20 again."""
    counts = Counter(corpus.train["docs"].tolist())
    counts.pop(EOT_ID, None)
    pool = torch.tensor([t for t, _ in counts.most_common(COPY_POOL)])
    gen = torch.Generator().manual_seed(seed)
    halves = torch.stack([pool[torch.randperm(len(pool), generator=gen)[:COPY_HALF_LEN]] for _ in range(COPY_SEQS)])
    bos = torch.full((COPY_SEQS, 1), EOT_ID)
    return torch.cat([bos, halves, halves], dim=1)


@torch.no_grad()
def circuit_signs(model: GPT2LMHeadModel, ids: torch.Tensor) -> dict[str, float]:
    """Loss on each half of the repeated sequences and the best previous-token and induction heads.

    The scores are computed here from the attention weights transformers returns (the same
    definitions as ``gpt2probe.head_scores``, which checks the shipped model independently), so
    the trainer needs only torch and transformers wherever it runs. ``model`` is a CPU copy.
    """
    model.set_attn_implementation("eager")  # the only implementation that returns the weights
    out = model(ids, output_attentions=True)
    logits = out.logits.float()
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    first = losses[:, 1:COPY_HALF_LEN].mean().item()  # tokens 2..20 (token 1 follows only BOS)
    repeated = losses[:, COPY_HALF_LEN:].mean().item()  # tokens 21..40, the copy
    patterns = torch.stack(out.attentions, dim=1).float()  # [batch, layer, head, query, key]
    prev = patterns.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))  # [layer, head]
    induction = patterns.diagonal(offset=-(COPY_HALF_LEN - 1), dim1=-2, dim2=-1)[..., -COPY_HALF_LEN:].mean(dim=(0, -1))
    return {
        "copy_loss_first": first,
        "copy_loss_repeated": repeated,
        "best_previous_token": prev.max().item(),
        "best_previous_token_head": divmod(int(prev.argmax()), prev.shape[1]),
        "best_induction": induction.max().item(),
        "best_induction_head": divmod(int(induction.argmax()), induction.shape[1]),
    }


def seen_positions(corpus: Corpus, n: int = 8) -> torch.Tensor:
    """``[len(val_ids)]`` bool: the held-out tokens that end an ``n``-token run found in the training text.

    Runs are compared by a polynomial hash of their ids (int64, wrapping), which cannot miss a
    run that does occur; a collision could only mark a novel token as seen, never the reverse.
    """

    def hashes(ids: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(len(ids) - n + 1, dtype=torch.long)
        for i in range(n):
            h = h * 1_000_003 + ids[i : len(ids) - n + 1 + i]
        return h

    train = torch.unique(torch.cat([hashes(ids) for ids in corpus.train.values()]))
    seen = torch.zeros(len(corpus.val_ids), dtype=torch.bool)
    seen[n - 1 :] = torch.isin(hashes(corpus.val_ids), train)
    return seen


@torch.no_grad()
def novel_text_loss(model: GPT2LMHeadModel, corpus: Corpus) -> dict[str, float]:
    """Held-out loss in 128-token windows on the tokens :func:`seen_positions` does not mark, and their share."""
    seen = seen_positions(corpus)
    windows = corpus.val_ids.unfold(0, 129, 128)
    logits = model(windows[:, :-1].to(model.device)).logits.float()
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), windows[:, 1:].to(model.device), reduction="none")
    targets_seen = seen[1 : 1 + losses.numel()].reshape(losses.shape).to(model.device)
    return {"val_seen_fraction": seen.float().mean().item(), "final_val_loss_novel": losses[~targets_seen].mean().item()}


def lr_factor(step: int, warmup: int, steps: int, floor: float = 0.1) -> float:
    """Linear warmup to the peak rate, then cosine decay to ``floor`` of it."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True,
                   help="directory to write (required; the shipped copy is gpt2probe/assets/tiny-english)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128, help="n_embd")
    p.add_argument("--n-head", type=int, default=8)
    p.add_argument("--n-ctx", type=int, default=256, help="n_positions and training window length")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--mix", default=DEFAULT_MIX, help="source=weight,... (sources: docs, docstrings, code, repeats, random_repeats)")
    p.add_argument("--first-mix", default="random_repeats=1",
                   help="the mix of the first --first-steps steps (a curriculum: copying first, then language)")
    p.add_argument("--first-steps", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the matrix products (faster on CPUs with bf16)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda to train on a GPU (the evaluation runs on a CPU copy)")
    p.add_argument("--corpus", type=Path, default=None,
                   help="a corpus saved by offline_corpus.save_corpus (to train elsewhere on this CPython's text); "
                        "default: tokenize this CPython's text now")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds: at step 41, lower --steps to what fits in this wall-clock time, timed on steps 11-40 "
                        "(before the warmup ends, so the run is the one `--steps N` gives; the model card records N)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=100)
    return p.parse_args(argv)


SETTINGS = ("steps", "seed", "n_layer", "d_model", "n_head", "n_ctx", "batch_size", "lr", "warmup",
            "weight_decay", "val_fraction", "mix", "first_mix", "first_steps", "bf16", "device")


def save_checkpoint(path: Path, step: int, model, optimizer, gen, history, recent, wall, args) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({
        "step": step, "steps": args.steps, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "history": history,
        "recent": recent, "wall": wall, "settings": {k: getattr(args, k) for k in SETTINGS},
    }, tmp)
    tmp.replace(path)


def reproduce_command(args) -> str:
    """The command line that repeats this run: every setting spelled out, ``--steps`` as run."""
    parts = ["python tools/train_offline_model.py --out OUT"]
    for name in SETTINGS:
        value = getattr(args, name)
        flag = "--" + {"d_model": "d-model", "n_ctx": "n-ctx"}.get(name, name.replace("_", "-"))
        if isinstance(value, bool):
            parts += [flag] if value else []
        else:
            parts.append(f"{flag} {value}")
    return " \\\n    ".join(parts)


def head_name(layer_head) -> str:
    return f"L{layer_head[0]}H{layer_head[1]}"


def model_card(args, command: str, metrics: dict) -> str:
    """The README.md written next to the checkpoint."""
    signs = metrics["circuit"]
    mix = ", ".join(f"{name} {weight:.0%}" for name, weight in parse_mix(args.mix).items())
    sizes = ", ".join(f"{name} {n:,}" for name, n in metrics["train_tokens_by_source"].items())
    return f"""# tiny-english: an offline GPT-2-architecture model

A {metrics['n_params'] / 1e6:.1f}M-parameter GPT-2 language model (`GPT2LMHeadModel`) trained
from scratch inside the gpt2probe repository, so the toolkit has a model with real structure
to show when pretrained GPT-2 weights cannot be downloaded: layer-by-layer predictions for the
logit lens, and a copying circuit (a previous-token head feeding an induction head) that
gradient descent formed.

**Warning:** its predictions are those of a ~{metrics['n_params'] / 1e6:.0f}M-parameter model
trained for minutes on Python's own text. Use it to see the tools work, not as a stand-in
for GPT-2: do not draw conclusions about GPT-2 from it.

- Architecture: GPT-2, n_layer={args.n_layer}, n_embd={args.d_model}, n_head={args.n_head},
  n_positions={args.n_ctx}, vocab_size={VOCAB_SIZE} (GPT-2's full BPE vocabulary), tied
  input/output embeddings. Weights stored in float16 (`model.safetensors`). Initialised as
  transformers does, except the position embeddings, which start as sinusoids of entries
  within ±0.1 and are trained like every other weight but without weight decay (see
  `sinusoidal_positions`).
- Tokenizer: GPT-2's, built from `gpt2probe/data/vocab.json` and `merges.txt`
  (not duplicated here). `<|endoftext|>` (id {EOT_ID}) separates documents.
- Training text, all from CPython {metrics['python']} (`tools/offline_corpus.py`), sampled per window
  with weights {mix}; tokens per source: {sizes}.
  - docs: `pydoc_data.topics.topics` ({metrics['n_topics']} documentation topics). Whole topics are
    held out for validation ({metrics['val_tokens']:,} tokens): {', '.join(metrics['val_topics'])}.
  - docstrings: every module, class and function docstring (40 characters or more) of the standard
    library's {metrics['n_files']} `.py` files (its tests, `pydoc_data` and `site-packages` excluded).
  - code: the source text of the same files.
  - repeats: windows of passages of the three sources (8 to 95 tokens), each followed after a gap
    of 0 to 31 tokens of other text by the same passage again. Text repeats in real corpora, but
    too rarely for a short run to learn in-context copying from it.
  - random_repeats: windows of blocks of 5 to 63 tokens drawn uniformly from the
    {metrics['random_vocabulary']:,} tokens that occur 5 or more times in the three sources, each block
    followed at once by itself. Only copying predicts a block's second half, so the gradient that
    forms the copying circuit is not drowned by what the model can guess from the language.
- Training: {args.steps} AdamW steps (lr {args.lr}, betas 0.9/0.95, {args.warmup} warmup steps then
  cosine to a tenth, weight decay {args.weight_decay} on matrices, gradient norm clipped at 1),
  batches of {args.batch_size} random {args.n_ctx}-token windows ({args.steps * args.batch_size * args.n_ctx / 1e6:.0f}M tokens),
  seed {args.seed}, {'bfloat16 autocast, ' if args.bf16 else ''}{metrics['wall_seconds'] / 60:.1f} minutes of
  wall-clock on {metrics['device']} (torch {metrics['torch']}, transformers {metrics['transformers']}).
- Held-out loss on the documentation topics (nats/token): {metrics['final_val_loss']:.3f} in
  {args.n_ctx}-token windows, {metrics['final_val_loss_128']:.3f} in 128-token windows (the
  previous tiny-english, 4 layers of width 64 trained on the documentation only: 4.165 in
  128-token windows; uniform over the vocabulary: {math.log(VOCAB_SIZE):.2f}). Read it with care:
  the documentation topics overlap (a statement's own topic and the topic of its chapter hold the
  same paragraphs), so {metrics['val_seen_fraction']:.0%} of the held-out tokens end an 8-token run that also
  occurs in the training text. On the other {1 - metrics['val_seen_fraction']:.0%}, text no training window
  contains, the loss is {metrics['final_val_loss_novel']:.3f} in 128-token windows (the previous model: 4.852).
- In-context copying, on {COPY_SEQS} sequences of `<|endoftext|>` + {COPY_HALF_LEN} random tokens from
  the {COPY_POOL:,} commonest in the documentation + the same {COPY_HALF_LEN} again: loss
  {signs['copy_loss_first']:.2f} nats on the first half, {signs['copy_loss_repeated']:.2f} on the repeat.
  Best previous-token score {signs['best_previous_token']:.2f} ({head_name(signs['best_previous_token_head'])}),
  best induction score {signs['best_induction']:.2f} ({head_name(signs['best_induction_head'])}).
  The circuit's history over training is in `training.json`.

Reproduce (from the repository root; a stopped run continues from its checkpoint; add
`--corpus FILE` with a corpus that `offline_corpus.save_corpus` wrote on CPython
{metrics['python']} to train on exactly this text from another Python or machine):

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
    mix = parse_mix(args.mix)
    first_mix = parse_mix(args.first_mix)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    if args.corpus is not None:
        corpus, python_version = load_corpus(args.corpus)
    else:
        from gpt2probe.tokenizer import gpt2_tokenizer

        tokenizer = gpt2_tokenizer()
        assert len(tokenizer) == VOCAB_SIZE and tokenizer.eos_token_id == EOT_ID
        corpus, python_version = build_corpus(tokenizer, args.seed, args.val_fraction), platform.python_version()
    print(corpus.describe(), f"(CPython {python_version})", flush=True)
    sampler = BatchSampler(corpus, args.n_ctx)
    copy_ids = copy_check_tokens(corpus, args.seed)

    model = build_model(args.n_layer, args.d_model, args.n_head, args.n_ctx).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters", flush=True)

    # The position table is not decayed: decay shrank it while the (tied) token embeddings grew to
    # 20x its size, and LayerNorm then left attention almost no position signal to read.
    positions = model.transformer.wpe.weight
    decay = [p for p in model.parameters() if p.dim() >= 2 and p is not positions]
    no_decay = [p for p in model.parameters() if p.dim() < 2 or p is positions]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), fused=device.type == "cuda",
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    history, recent, wall, first_step = [], [], 0.0, 1
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        settings = {k: getattr(args, k) for k in SETTINGS}
        if state["settings"] != settings:
            raise SystemExit(f"{checkpoint} was written with other settings: {state['settings']} (now {settings}); "
                             "use another --out or delete the checkpoint")
        model.load_state_dict(state["model"])
        args.steps = state["steps"]
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history, recent, wall, first_step = state["history"], state["recent"], state["wall"], state["step"] + 1
        print(f"resuming after step {state['step']}", flush=True)

    start = time.perf_counter() - wall
    model.train()
    step = first_step
    while step <= args.steps:
        if args.time_budget is not None and first_step == 1 and step in (11, 41):
            # Steps 11-40 give the pace (the first ones pay for start-up); evaluations take the rest.
            if step == 11:
                paced_from = time.perf_counter()
                step_pace = 0.0
            else:
                step_pace = (time.perf_counter() - paced_from) / 30
            fits = 40 + int((args.time_budget - (time.perf_counter() - start)) / step_pace * 0.9) if step_pace else args.steps
            if fits < args.steps:
                print(f"--time-budget {args.time_budget:.0f}s: {args.steps} steps lowered to {fits}", flush=True)
                args.steps = max(fits, args.warmup + 1, step)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step - 1, args.warmup, args.steps)
        batch = sampler(first_mix if step <= args.first_steps else mix, args.batch_size, gen).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(batch[:, :-1], labels=batch[:, :-1]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        recent.append(loss.detach())
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            on_cpu = copy.deepcopy(model).to("cpu", torch.float32)
            record = {"step": step, "tokens": step * args.batch_size * args.n_ctx,
                      "train_loss": torch.stack(recent).float().mean().item(),
                      "val_loss": evaluate(model, corpus.val_ids, args.n_ctx), **circuit_signs(on_cpu, copy_ids),
                      "seconds": time.perf_counter() - start}
            del on_cpu
            model.train()
            history.append(record)
            recent = []
            print(f"step {step:5d}  train {record['train_loss']:.3f}  val {record['val_loss']:.3f}  "
                  f"copy {record['copy_loss_first']:.2f}->{record['copy_loss_repeated']:.2f}  "
                  f"prev {record['best_previous_token']:.2f}{record['best_previous_token_head']}  "
                  f"ind {record['best_induction']:.2f}{record['best_induction_head']}  "
                  f"{record['seconds']:6.0f}s", flush=True)
        if step % args.checkpoint_every == 0 and step < args.steps:
            save_checkpoint(checkpoint, step, model, optimizer, gen, history, recent, time.perf_counter() - start, args)
        step += 1
    wall = time.perf_counter() - start

    model.eval()
    # The weights first: whatever happens in the bookkeeping below, the trained model is kept.
    copy.deepcopy(model).to(torch.float16).save_pretrained(out, safe_serialization=True)
    final = history[-1]
    metrics = {
        "steps": args.steps,
        "seed": args.seed,
        "n_params": n_params,
        "config": {"n_layer": args.n_layer, "n_embd": args.d_model, "n_head": args.n_head,
                   "n_positions": args.n_ctx, "vocab_size": VOCAB_SIZE},
        "hyperparameters": {"batch_size": args.batch_size, "lr": args.lr, "warmup": args.warmup,
                            "weight_decay": args.weight_decay, "val_fraction": args.val_fraction,
                            "mix": mix, "first_mix": first_mix, "first_steps": args.first_steps,
                            "bf16": args.bf16},
        "n_topics": corpus.n_topics,
        "n_files": corpus.n_files,
        "train_tokens_by_source": {name: len(ids) for name, ids in corpus.train.items()},
        "val_tokens": len(corpus.val_ids),
        "random_vocabulary": len(corpus.vocabulary),
        "val_topics": corpus.val_topics,
        "final_train_loss": final["train_loss"],
        "final_val_loss": final["val_loss"],
        "final_val_loss_128": evaluate(model, corpus.val_ids, 128) if args.n_ctx >= 128 else float("nan"),
        **(novel_text_loss(model, corpus) if args.n_ctx >= 128 else
           {"val_seen_fraction": float("nan"), "final_val_loss_novel": float("nan")}),
        "circuit": {k: v for k, v in final.items() if k not in ("step", "train_loss", "val_loss", "seconds")},
        "history": history,
        "wall_seconds": wall,
        "python": python_version,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    (out / "training.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    command = reproduce_command(args)
    (out / "README.md").write_text(model_card(args, command, metrics), encoding="utf-8")
    checkpoint.unlink(missing_ok=True)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"saved to {out} ({size / 2**20:.2f} MiB) in {wall / 60:.1f} min")
    return metrics


if __name__ == "__main__":
    main()
