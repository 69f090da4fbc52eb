"""Build the hand-constructed GPT-2 model with a known induction circuit.

Ground truth for gpt2probe's attention-score, ablation and patching tests:
a 2-layer ``GPT2LMHeadModel`` whose every weight is set by hand (nothing is
trained), so the circuit is known exactly:

* layer 0, head 0 -- previous-token head: position i attends to i-1 and
  copies that token's identity into a "previous token" subspace;
* layer 1, head 0 -- induction head: position i attends to the position j
  whose previous token equals token[i] (the token after an earlier copy of
  token[i]) and copies token[j] into an output subspace that the tied
  unembedding reads, so the repeated half of ``[BOS, x, x]`` is predicted.

All other heads and both MLPs are zero.  Residual stream (``n_embd = 256``)
as four 64-dim blocks A | B | P | R, each feature written as a *centred*
one-hot code ``c_k = e_k - 1/64`` (zero sum, so LayerNorm's mean subtraction
is a no-op and LN only divides by the residual's rms; that rms is the same at
every position, up to ~1e-6, at both layers' inputs, because every code has the
same norm and attention is ~one-hot):

* token identity ``(c_t, c_t)`` in A, B   (``wte[t]``, times AMP)
* output         ``(o, -o)``    in A, B   (written by layer 1 head 0)
* position       ``c_i``        in P      (``wpe[i]``)
* previous token ``c_{t[i-1]}`` in R      (written by layer 0 head 0)

``ln_f`` has weight +g on A, -g on B and 0 elsewhere, so with the tied
unembedding ``logit_u = <ln_f(x), wte[u]>`` the token-identity part cancels
exactly and only the output part counts: ``logit_u ~ o_u - mean(o)``.
Without the induction head every logit is exactly 0 (loss ln 64).

Layer 1 head 0 also has an attention sink: a query bias along the all-ones
head direction (orthogonal to every centred code) meets a key component that
only position 0 (BOS) has.  The sink scores half the match score, so a match
wins by a wide margin, and with no match (the first copy) the head rests on
BOS, whose value is exactly zero, and predicts uniformly.

The weights are deterministic; ``--seed`` only seeds the random verification
sequences.  Rebuild from the repository root with::

    python tools/build_toy_induction.py --out /tmp/toy-induction

and compare with (or copy over) ``gpt2probe/assets/toy-induction``: ``--out`` is
required, so the shipped model is never overwritten by accident.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2probe.toy import repeated_random_tokens

VOCAB = 64  # token 0 is BOS; one block = one 64-dim code per token / position
N_POS = 64
N_HEAD = 4
N_EMBD = 4 * VOCAB  # blocks A | B | P | R
D_HEAD = N_EMBD // N_HEAD  # 64: one head holds a whole block
N_INNER = 64  # MLPs are zero; a small hidden size keeps the file ~2.5 MB
EPS = 1e-5
A, B, P, R = (slice(i * VOCAB, (i + 1) * VOCAB) for i in range(4))

AMP = 8.0  # norm scale of every code, so the residual rms is ~1 and LN's eps is negligible
PREV_MARGIN = 30.0  # layer 0: score of position i-1 minus any other position
MATCH_MARGIN = 24.0  # layer 1: score of the induction target minus a non-matching position
SINK_MARGIN = 12.0  # layer 1: score of BOS minus a non-matching position
LOGIT_GAP = 16.0  # logit of the copied token minus any other non-BOS token
PERIODS = (8, 13, 20, 31)  # half lengths checked by verify()


def codes() -> torch.Tensor:
    """Centred one-hot codes ``c_k = e_k - 1/64`` (rows): zero sum, <c_j, c_k> = delta - 1/64."""
    return torch.eye(VOCAB) - 1.0 / VOCAB


def rms(x: torch.Tensor) -> float:
    """What GPT-2's LayerNorm divides by for a zero-mean residual vector ``x``."""
    return math.sqrt(x.pow(2).mean().item() + EPS)


def make_config() -> GPT2Config:
    """GPT-2 config with the toy sizes (asserted: unknown kwargs must not be dropped silently)."""
    cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=N_POS, n_embd=N_EMBD, n_layer=2, n_head=N_HEAD, n_inner=N_INNER,
        layer_norm_epsilon=EPS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, tie_word_embeddings=True,
    )  # fmt: skip
    got = (cfg.vocab_size, cfg.n_positions, cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.n_inner)
    assert got == (VOCAB, N_POS, N_EMBD, 2, N_HEAD, N_INNER), got
    return cfg


@torch.no_grad()
def build_model() -> GPT2LMHeadModel:
    """Return the model with every weight set by hand (see the module docstring)."""
    model = GPT2LMHeadModel(make_config()).eval()
    for p in model.parameters():
        p.zero_()
    c = codes()
    h0, h1 = model.transformer.h
    q, k, v = (slice(i * N_EMBD, i * N_EMBD + D_HEAD) for i in range(3))  # head 0's columns in c_attn
    for ln in (h0.ln_1, h0.ln_2, h1.ln_1, h1.ln_2):
        ln.weight.fill_(1.0)

    # Embeddings: token identity (c_t, c_t) in A, B; position c_i in P.  Tied to lm_head.
    wte, wpe = model.transformer.wte.weight, model.transformer.wpe.weight
    wte[:, A], wte[:, B] = AMP * c, AMP * c
    wpe[:, P] = AMP * c[:N_POS]
    # LN divisors of a typical residual (every token, position and copied code has the same norm).
    x0 = wte[1] + wpe[1]  # layer 0 input
    x1 = x0.clone()
    x1[R] = AMP * c[0]  # layer 1 input: + previous token
    sigma0, sigma1 = rms(x0), rms(x1)

    # Layer 0, head 0: previous-token head.  The query maps position code c_i to
    # head direction e_{i-1}, the key maps c_j to e_j, so the score peaks at j = i - 1.
    w = h0.attn.c_attn.weight  # Conv1D: y = x @ w, shape (n_embd, 3 * n_embd)
    s = math.sqrt(PREV_MARGIN * math.sqrt(D_HEAD)) * sigma0 / AMP
    idx = torch.arange(1, VOCAB)
    w[P.start + idx, q.start + idx - 1] = s
    w[P, k] = s * torch.eye(VOCAB)
    w[A, v] = sigma0 / AMP * torch.eye(VOCAB)  # value = c_{t_j}
    h0.attn.c_proj.weight[:D_HEAD, R] = AMP * torch.eye(VOCAB)  # -> R block

    # Layer 1, head 0: induction head.  Query = current token (A), key = previous
    # token (R): they match exactly at the token after an earlier copy.
    w, bias = h1.attn.c_attn.weight, h1.attn.c_attn.bias
    s = math.sqrt(MATCH_MARGIN * math.sqrt(D_HEAD)) * sigma1 / AMP
    w[A, q] = s * torch.eye(VOCAB)
    w[R, k] = s * torch.eye(VOCAB)
    # Sink: query bias along all-ones (orthogonal to codes); only BOS's key (P code of position 0) has it.
    w[P.start, k] = sigma1 / AMP  # key += (delta_{j0} - 1/64) * ones
    bias[q] = SINK_MARGIN * math.sqrt(D_HEAD) / D_HEAD
    # Value: maps c_t to e_t - (1/63) sum_{d>=1} e_d for t >= 1 and BOS's c_0 to exactly 0.
    val = torch.eye(VOCAB)
    val[0] = 0.0
    val[0, 1:] = 1.0 / (VOCAB - 1)
    w[A, v] = sigma1 / AMP * val
    out = h1.attn.c_proj.weight[:D_HEAD]
    out[:, A], out[:, B] = AMP * torch.eye(VOCAB), -AMP * torch.eye(VOCAB)  # output (o, -o)

    # ln_f: +g on A, -g on B; token identity cancels, output (o, -o) gives logit_u ~ o_u - mean(o).
    o = c[1] @ val  # value of a copied token
    xf = x1.clone()  # ln_f input: + output (o, -o)
    xf[A] += AMP * o
    xf[B] -= AMP * o
    sigma_f = rms(xf)
    g = LOGIT_GAP * sigma_f / (2 * AMP * AMP)
    model.transformer.ln_f.weight[A], model.transformer.ln_f.weight[B] = g, -g
    return model


def ablate_head(model: GPT2LMHeadModel, layer: int, head: int) -> GPT2LMHeadModel:
    """A copy of ``model`` with the head's rows of ``attn.c_proj.weight`` zeroed (its output removed)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.transformer.h[layer].attn.c_proj.weight[head * D_HEAD : (head + 1) * D_HEAD] = 0.0
    return model


@torch.no_grad()
def measure(model: GPT2LMHeadModel, tokens: torch.Tensor) -> dict:
    """Circuit metrics on ``[BOS, x, x]`` sequences (``tokens`` from repeated_random_tokens)."""
    half = (tokens.shape[1] - 1) // 2
    out = model(tokens, output_attentions=True)
    pos = torch.arange(1, tokens.shape[1])
    rep = torch.arange(half + 1, 2 * half + 1)  # second copy; index p repeats p - half
    nll = -out.logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]  # nll[:, p]: token p+1
    pred = slice(half + 1, 2 * half)  # positions whose next token is predictable
    return {
        "prev_attn": out.attentions[0][:, 0, pos, pos - 1].mean().item(),
        "induction_attn": out.attentions[1][:, 0, rep, rep - half + 1].mean().item(),
        "loss_first": nll[:, 1:half].mean().item(),
        "loss_second": nll[:, pred].mean().item(),
        "acc_second": (out.logits[:, pred].argmax(-1) == tokens[:, half + 2 :]).float().mean().item(),
    }


def verify(model: GPT2LMHeadModel, seed: int, n_seqs: int = 16) -> list[dict]:
    """Measure the intact and ablated model for each period; assert the circuit's behaviour."""
    ablated = {"L1H0": ablate_head(model, 1, 0), "L0H0": ablate_head(model, 0, 0)}
    rows = []
    for i, half in enumerate(PERIODS):
        tokens = repeated_random_tokens(n_seqs, half, VOCAB, seed=seed + i)
        row = {"half_len": half, **measure(model, tokens)}
        for name, m in ablated.items():
            row[f"loss_second_ablate_{name}"] = measure(m, tokens)["loss_second"]
        rows.append(row)
        assert row["prev_attn"] >= 0.9 and row["induction_attn"] >= 0.9, row
        assert row["loss_second"] < 0.5 and row["acc_second"] > 0.99, row
        assert abs(row["loss_first"] - math.log(VOCAB)) < 0.5, row
        assert all(row[f"loss_second_ablate_{n}"] > row["loss_first"] - 0.5 for n in ablated), row
    return rows


def model_card(rows: list[dict], command: str) -> str:
    """The README.md written next to the checkpoint."""
    table = "\n".join(
        f"| {r['half_len']} | {r['prev_attn']:.4f} | {r['induction_attn']:.4f} | {r['loss_first']:.3f} | "
        f"{r['loss_second']:.2e} | {r['acc_second']:.3f} | {r['loss_second_ablate_L1H0']:.3f} | "
        f"{r['loss_second_ablate_L0H0']:.3f} |"
        for r in rows
    )
    return f"""# toy-induction: a hand-built GPT-2 with a known induction circuit

**The weights were constructed by hand, not trained.**  This is a ground-truth
model for gpt2probe's attention-score, ablation and patching tests (in the
spirit of compiled transformers used to evaluate interpretability tools).

Architecture: `GPT2LMHeadModel`, n_layer=2, n_head={N_HEAD}, n_embd={N_EMBD}
(d_head={D_HEAD}), n_positions={N_POS}, vocab_size={VOCAB} (token 0 = BOS),
n_inner={N_INNER}, tied embeddings, float32.  There is no tokenizer: inputs are
token ids and should start with BOS (token 0), the induction head's rest
position.

## Circuit

| layer | head | role |
|---|---|---|
| 0 | 0 | previous-token head: position i attends to i-1 and copies its token into the "previous token" subspace |
| 1 | 0 | induction head: position i attends to j where token[j-1] == token[i] (the token after an earlier copy of token[i]) and copies token[j] into the output subspace; with no earlier copy it rests on BOS (position 0) and writes nothing |
| 0, 1 | 1-3 | zero (Q, K, V and output weights are 0: uniform attention, no output) |
| 0, 1 | MLP | zero |

Residual stream: four 64-dim blocks A | B | P | R (dims 0-63, 64-127, 128-191,
192-255) holding centred one-hot codes `c_k = e_k - 1/64` (zero mean, so
LayerNorm only rescales): token identity `(c_t, c_t)` in A, B (wte); position
`c_i` in P (wpe); previous token in R (layer 0 head 0); output `(o, -o)` in A, B
(layer 1 head 0).  `ln_f` weights are +g on A, -g on B, 0 elsewhere, so through
the tied unembedding the token identity cancels and only the output subspace
sets the logits; without the induction head all logits are exactly 0.

## Measured behaviour

On `[BOS, x, x]` with x = `half_len` distinct random tokens from 1..63
(`gpt2probe.toy.repeated_random_tokens`, 16 sequences per row).  Attention is
the head's average weight on the previous token (L0H0, positions >= 1) and on
the induction target (L1H0, second copy).  Losses in nats (ln 64 = 4.159):
first copy predicting its tokens 2..L, second copy predicting its tokens 2..L;
ablations zero the head's rows of `attn.c_proj.weight`.

| half_len | L0H0 prev attn | L1H0 induction attn | loss 1st | loss 2nd | top-1 acc 2nd | loss 2nd, L1H0 ablated | loss 2nd, L0H0 ablated |
|---|---|---|---|---|---|---|---|
{table}

## Rebuild

```
{command}
```

Weights are deterministic (built by `tools/build_toy_induction.py`,
transformers {transformers.__version__}, torch {torch.__version__}); the seed only
picks the verification sequences.  Load with
`GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager")` to read
attention weights.
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True,
                   help="directory to write (required; the shipped copy is gpt2probe/assets/toy-induction)")
    p.add_argument("--seed", type=int, default=0, help="seeds the verification sequences only")
    return p.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # GPT2LMHeadModel's random init is overwritten, but keep runs seeded
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead
    build_model().save_pretrained(args.out, safe_serialization=True)
    model = GPT2LMHeadModel.from_pretrained(args.out, attn_implementation="eager").eval()  # verify the file
    rows = verify(model, args.seed)
    for r in rows:
        print({k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()})
    command = "python tools/build_toy_induction.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    (args.out / "README.md").write_text(model_card(rows, command), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
