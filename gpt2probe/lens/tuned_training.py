"""Train a tuned lens: fit each translator so its stream predicts what the model finally predicts.

The model is frozen and run without gradients; only the translators learn. The loss is, for
every translated stream, ``KL(final || translated)`` averaged over all positions of the
batch's token windows, summed over streams (each translator sees the gradient of its own
stream's mean KL). Windows are ``seq_len`` consecutive tokens of the texts packed end to
end with ``<|endoftext|>`` between documents; they are shuffled once with ``seed`` and each
step takes the next ``batch_size`` of them, so no window is seen twice and a corpus too
short for ``steps`` is an error, never a silent early stop or a second epoch.

Memory stays bounded: a ``[rows, d_vocab]`` block of logits at a time (``max_chunk_bytes``),
one stream at a time, with gradients accumulated over blocks, so ``[stream, batch, pos,
d_vocab]`` never exists. Under ``torchrun`` (an initialised ``torch.distributed`` process
group) each rank takes its share of every batch and DistributedDataParallel averages the
gradients: with the same global batch and seed, N processes train the same translators as
one, to float rounding.

Optimisers follow the reference implementation (AlignmentResearch/tuned-lens,
``scripts/ingredients.py`` and ``train_loop.py``):

- ``"sgd"``: Nesterov momentum 0.9, weight decay 1e-3, no warmup by default. ``lr`` is the
  reference's ``lr_scale`` (default 1.0); torch's SGD receives ``lr * (1 - momentum)``,
  because PyTorch's momentum buffer sums the gradients without the ``(1 - momentum)``
  factor and so scales every step by ``1 / (1 - momentum)``.
- ``"adam"``: AMSGrad as in the reference, betas (0.9, 0.999), lr 1e-3 by default, warmup
  over ``min(1000, steps // 5)`` steps by default. Weight decay is decoupled (AdamW): the
  reference passes it to ``Adam``, where it becomes an L2 term that Adam rescales per
  coordinate, so parameters with large gradients would hardly be decayed at all.

Both: the gradient's global norm is clipped to ``clip_grad_norm`` (1.0, as the reference)
before each step, and the learning rate decays linearly to zero at the last step after any
warmup. The default is ``"sgd"``; see docs/tuned-lens.md for the held-out comparison behind it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor

from .. import names as N
from .. import validate
from ..configs.base import to_dict
from ..configs.tuned_lens import TunedLensTrainConfig
from ..distributed import rank_world
from ..errors import CorpusError, DamagedFileError, LensMismatchError
from ..jsonfile import check_kind, parse_object, parse_value
from ..savefile import write_safetensors
from ..schedule import lr_factor
from ..tokens import special_id
from ..windows import pack_ids, tokenize
from .translators import Translators

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel

    from ..probe import GPT2Probe

CHECKPOINT_FILE = "tuned_lens_checkpoint.safetensors"
CHECKPOINT_FORMAT = "gpt2probe.TunedLensCheckpoint/2"  # /2: SGD's lr scaled by (1 - momentum), clipping, AMSGrad/AdamW
OPTIMIZERS = {"sgd": 1.0, "adam": 1e-3}  # name -> default peak learning rate (for sgd: the reference's lr_scale)
DEFAULT_OPTIMIZER = "sgd"
"""The reference's recipe: on tiny-english at 40 x 8 x 128 tokens it is within 0.01 nats of the best Adam
setting after the first stream and needs no learning-rate search (docs/tuned-lens.md has the table)."""
MOMENTUM = 0.9
"""SGD's momentum and Adam's beta1, as in the reference."""
CLIP_GRAD_NORM = 1.0
"""The reference clips the gradient's global norm to 1.0 before every step."""
MAX_ADAM_WARMUP = 1000
ProgressFn = Callable[[int, float], None]


def pack_windows(probe: GPT2Probe, texts: Sequence[str], seq_len: int) -> tuple[Int[Tensor, "window pos"], int]:
    """Tokenize ``texts``, join them with ``<|endoftext|>`` after each, and cut ``seq_len``-token windows.

    Returns the windows (the tail shorter than a window is dropped) and the number of tokens.
    """
    if isinstance(texts, (str, bytes)) or not all(isinstance(t, str) for t in texts):
        raise CorpusError("texts must be a list of strings (documents), e.g. [open(f).read() for f in files]; "
                          f"got {type(texts).__name__}" + (" (a single string)" if isinstance(texts, str) else ""))
    eos = special_id(probe.tokenizer, "eos")
    if eos is None or not 0 <= eos < probe.cfg.d_vocab:
        raise CorpusError(f"the tokenizer's end-of-text id {eos} is not in the model's vocabulary (d_vocab="
                          f"{probe.cfg.d_vocab}): a tuned lens is trained on text, which this model cannot read")
    documents = tokenize(probe.tokenizer, texts)
    largest = max((max(d, default=eos) for d in documents), default=eos)
    if largest >= probe.cfg.d_vocab:
        raise CorpusError(f"the texts give token id {largest} but the model's vocabulary has {probe.cfg.d_vocab} ids")
    windows = pack_ids(documents, seq_len, eos, pad_last=False)
    return windows.tokens, windows.n_tokens


def default_warmup_steps(optimizer: str, steps: int) -> int:
    """The reference's warm-up rule: none for SGD; ``min(1000, steps // 5)`` steps for Adam.

    (The reference compares its enum to the string ``"adam"``, so its own Adam runs get no
    warm-up; this is the rule it states, "Adam generally performs poorly without an LR warmup".)
    """
    return min(MAX_ADAM_WARMUP, steps // 5) if optimizer == "adam" else 0


def make_optimizer(params: list[torch.nn.Parameter], optimizer: str, lr: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """The reference's optimiser for ``optimizer`` at peak ``lr`` (see the module docstring)."""
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr * (1 - MOMENTUM), momentum=MOMENTUM, nesterov=True,
                               weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=(MOMENTUM, 0.999), weight_decay=weight_decay, amsgrad=True)


def train_tuned_lens(
    probe: GPT2Probe,
    texts: Sequence[str],
    *,
    steps: int,
    batch_size: int = 8,
    seq_len: int | None = None,
    lr: float | None = None,
    optimizer: str = DEFAULT_OPTIMIZER,
    weight_decay: float = 1e-3,
    warmup: float | None = None,
    clip_grad_norm: float | None = CLIP_GRAD_NORM,
    seed: int = 0,
    include_mid: bool = False,
    progress: ProgressFn | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 25,
    corpus: str | None = None,
    max_chunk_bytes: int = 64 * 2**20,
    start: Any,
) -> Any:
    """Train a tuned lens for ``probe``'s (frozen) model on ``texts``.

    Args:
        texts: documents (strings); packed into windows with ``<|endoftext|>`` between them.
        steps: optimiser steps; each uses ``batch_size`` fresh windows of ``seq_len`` tokens
            (default: the model's context length). ``steps * batch_size`` windows must exist.
        lr: peak learning rate (default 1.0 for ``"sgd"``, 1e-3 for ``"adam"``). For SGD this
            is the reference's ``lr_scale``: torch's SGD gets ``lr * (1 - 0.9)``.
        optimizer: ``"sgd"`` (the default and the paper's: Nesterov momentum 0.9) or ``"adam"``
            (AdamW with AMSGrad).
        weight_decay: decoupled for Adam (AdamW), L2 in the gradient for SGD (as torch's SGD).
        warmup: fraction of the steps spent warming up linearly, then linear decay to zero;
            ``None``: the reference's rule (SGD none, Adam ``min(1000, steps // 5)`` steps).
        clip_grad_norm: clip the gradient's global norm to this before each step (``None``: never).
        seed: orders the windows; everything else is deterministic (translators start at zero).
        include_mid: also translate the stream between each block's attention and MLP.
        progress: called as ``progress(step, loss)`` after each step (rank 0 only); ``loss``
            is the mean KL over streams and tokens, in nats.
        checkpoint_dir: save the translators and optimiser there every ``checkpoint_every``
            steps and at the end (one file, written atomically), and resume from what is there:
            an interrupted run continued gives the same lens as an uninterrupted one.
        corpus: a description of the texts, recorded in the lens's metadata.
        start: the untrained lens to train, ``TunedLens.identity(probe, include_mid=...)``
            (:meth:`TunedLens.train <gpt2probe.lens.tuned.TunedLens.train>` passes it; this
            module does not import the lens class, so the two modules form no import cycle).

    Raises:
        CorpusError: the texts give fewer than ``steps * batch_size`` windows.
        LensMismatchError: ``checkpoint_dir`` holds a checkpoint of a different run.
    """
    rank, world = rank_world()
    seq_len = probe.cfg.n_ctx if seq_len is None else seq_len
    _check_settings(probe, steps, batch_size, seq_len, lr, optimizer, weight_decay, warmup, checkpoint_every, world)
    if clip_grad_norm is not None and not (isinstance(clip_grad_norm, (int, float)) and math.isfinite(clip_grad_norm)
                                           and clip_grad_norm > 0):
        raise CorpusError(f"clip_grad_norm must be a positive number or None, got {clip_grad_norm!r}")
    lr = OPTIMIZERS[optimizer] if lr is None else lr
    windows, n_tokens = pack_windows(probe, texts, seq_len)
    needed = steps * batch_size
    if len(windows) < needed:
        raise CorpusError(
            f"the texts give {len(windows)} windows of {seq_len} tokens ({n_tokens} tokens with an <|endoftext|> after "
            f"each of {len(texts)} documents), but {steps} steps of {batch_size} windows need {needed}: give more text, "
            f"or at most {len(windows) // batch_size} steps at this batch size (windows are never reused)")
    if warmup is None:
        warmup_steps = default_warmup_steps(optimizer, steps)
    else:
        warmup_steps = max(1, round(warmup * steps)) if warmup > 0 else 0
    lens = start
    corpus_digest = hashlib.sha256(windows.numpy().tobytes()).hexdigest()
    settings = to_dict(TunedLensTrainConfig(steps=steps, batch_size=batch_size, seq_len=seq_len, optimizer=optimizer,
                                            lr=lr, weight_decay=weight_decay, warmup=warmup,
                                            clip_grad_norm=clip_grad_norm, seed=seed, include_mid=include_mid))
    del settings["warmup"]  # recorded as the steps it resolved to, as checkpoints and lenses always have
    run = {**settings, "warmup_steps": warmup_steps, "momentum": MOMENTUM,
           "model_fingerprint": lens.model["fingerprint"], "corpus_digest": corpus_digest}
    translators: Translators = lens.translators
    translators.requires_grad_(True)
    params = list(translators.parameters())
    opt = make_optimizer(params, optimizer, lr, weight_decay)
    base_lr = opt.param_groups[0]["lr"]  # lr as torch sees it (SGD: scaled by 1 - momentum)
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    start = _resume(checkpoint, run, translators, opt) if checkpoint is not None and checkpoint.is_file() else 0
    ddp = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        on_gpu = translators.weight.device.type == "cuda"
        ddp = DistributedDataParallel(translators, device_ids=[translators.weight.device] if on_gpu else None)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))
    local = batch_size // world
    began, began_cpu, loss = time.perf_counter(), time.process_time(), float("nan")
    was_training = probe.model.training
    probe.model.eval()  # dropout off: the model is read, never changed
    try:
        for step in range(start, steps):
            for group in opt.param_groups:
                group["lr"] = base_lr * lr_factor(step, steps=steps, warmup=warmup_steps)  # linear decay to zero
            first = step * batch_size + rank * local
            batch = windows[order[first : first + local]]
            opt.zero_grad(set_to_none=True)
            loss = _accumulate(probe, lens, translators, batch, ddp, max_chunk_bytes)
            if clip_grad_norm is not None:  # after DDP's all-reduce: every rank clips the same averaged gradient
                torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
            opt.step()
            if world > 1:
                total = torch.tensor([loss], dtype=torch.float64)
                torch.distributed.all_reduce(total)
                loss = float(total) / world
            if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                if rank == 0:
                    _save_checkpoint(checkpoint, run, step + 1, translators, opt)
                if world > 1:
                    torch.distributed.barrier()
            if progress is not None and rank == 0:
                progress(step + 1, loss)
    finally:
        probe.model.train(was_training)
        translators.requires_grad_(False)
    lens.training = {
        **{key: value for key, value in run.items() if key not in ("model_fingerprint", "corpus_digest")},
        "corpus": {"description": corpus, "n_texts": len(texts), "n_tokens": n_tokens, "n_windows": len(windows),
                   "tokens_seen": steps * batch_size * seq_len, "digest": corpus_digest},
        "loss": "sum over streams of mean KL(final || translated stream), nats",
        "final_loss_mean_per_stream": loss,
        "world_size": world,
        "resumed_at_step": start,
        "wall_seconds": round(time.perf_counter() - began, 2),
        "cpu_seconds": round(time.process_time() - began_cpu, 2),  # all threads of this process
    }
    return lens


def _check_settings(probe: GPT2Probe, steps: int, batch_size: int, seq_len: int, lr: float | None, optimizer: str,
                    weight_decay: float, warmup: float | None, checkpoint_every: int, world: int) -> None:
    def bad(message: str) -> None:
        raise CorpusError(message)

    def integer(value: object) -> bool:  # a bool is an int to Python: steps=True would train one step
        return validate.is_number(value, (int,))

    number = validate.is_number
    if not integer(steps) or steps < 1:
        bad(f"steps must be a positive integer, got {steps!r}")
    if not integer(batch_size) or batch_size < 1:
        bad(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size % world:
        bad(f"batch_size {batch_size} must be a multiple of the {world} processes (each takes an equal share)")
    if not integer(seq_len) or not 2 <= seq_len <= probe.cfg.n_ctx:
        bad(f"seq_len must be an integer between 2 and the model's context length {probe.cfg.n_ctx}, got {seq_len!r}")
    if optimizer not in OPTIMIZERS:
        bad(f"unknown optimizer {optimizer!r}; valid: {', '.join(map(repr, OPTIMIZERS))}")
    if lr is not None and not (number(lr) and math.isfinite(lr) and lr > 0):
        bad(f"lr must be a positive number, got {lr!r}")
    if not (number(weight_decay) and weight_decay >= 0):
        bad(f"weight_decay must be >= 0, got {weight_decay!r}")
    if warmup is not None and not (number(warmup) and 0 <= warmup < 1):
        bad(f"warmup is a fraction of the steps in [0, 1) or None (the reference's rule), got {warmup!r}")
    if not integer(checkpoint_every) or checkpoint_every < 1:
        bad(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")


def _accumulate(probe: GPT2Probe, lens: Any, translators: Translators, batch: Int[Tensor, "batch pos"],
                ddp: DistributedDataParallel | None, max_chunk_bytes: int) -> float:
    """Forward ``batch`` (frozen model), then backpropagate the KL of every stream, block of rows by block.

    Each backward call frees its graph, so memory holds one ``[rows, d_vocab]`` block of one
    stream at a time. Under DDP every backward but the last runs in ``no_sync`` (gradients
    accumulate locally) and the last one averages the accumulated gradients across ranks.
    Returns the mean KL over streams and this rank's tokens.
    """
    names = lens.stream_names
    final_name = N.resid_post(probe.cfg.n_layers - 1)
    ln_f = probe.weights.ln_final.to(dtype=torch.float32)  # detached: the model stays frozen
    W_U = probe.W_U.float()  # detached view of the tied embedding, [d_model, d_vocab]
    device = W_U.device
    d_model, d_vocab = probe.cfg.d_model, probe.cfg.d_vocab
    n_windows, seq_len = batch.shape
    n_tokens = n_windows * seq_len
    stream_bytes = (len(names) + 1) * seq_len * d_model * 4
    per_forward = max(1, min(n_windows, (4 * max_chunk_bytes) // stream_bytes))
    rows_per_chunk = max(1, max_chunk_bytes // (4 * d_vocab))
    norm = lambda h: ln_f(h.float())  # noqa: E731
    total = 0.0
    for w0 in range(0, n_windows, per_forward):
        ids = batch[w0 : w0 + per_forward].to(device)
        _, cache = probe.run_with_cache(ids, names=[*names, final_name], unembed=False)
        streams = [cache[name].reshape(-1, d_model) for name in names]
        final = cache[final_name].reshape(-1, d_model)
        del cache
        n_rows = final.shape[0]
        for r0 in range(0, n_rows, rows_per_chunk):
            with torch.no_grad():
                final_logp = torch.log_softmax(norm(final[r0 : r0 + rows_per_chunk]) @ W_U, -1)
                final_p = final_logp.exp()
                neg_entropy = (final_p * final_logp).sum(-1)  # sum p log p: constant, kept to report the KL
                del final_logp
                # sum_v p_v logit_v = normalized . (W_U p): one [rows, d_model] product for every stream
                expected_unembed = final_p @ W_U.T
                del final_p
            last_chunk = w0 + per_forward >= n_windows and r0 + rows_per_chunk >= n_rows
            for s in range(len(names)):
                sync = ddp is None or (last_chunk and s == len(names) - 1)
                module = translators if ddp is None else ddp
                with ddp.no_sync() if ddp is not None and not sync else nullcontext():
                    normalized = norm(module(streams[s][r0 : r0 + rows_per_chunk], s))
                    # KL(final || q) = sum p log p - sum p logit + logsumexp(logit), since sum p = 1
                    kl = neg_entropy - (normalized * expected_unembed).sum(-1) + _logsumexp_of_projection(normalized, W_U)
                    loss = kl.sum() / n_tokens
                    loss.backward()
                total += float(loss.detach())
    return total / len(names)


class _LogSumExpOfProjection(torch.autograd.Function):
    """``logsumexp(x @ W, -1)`` whose backward needs one pass over the ``[rows, d_vocab]`` block.

    Forward keeps only ``e = exp(x @ W - max)`` (computed in place in the logits' memory) and
    its row sums ``z``; the gradient ``softmax(x @ W) @ W.T * g`` is then ``(e @ W.T) * g / z``,
    scaling a ``[rows, d_model]`` product instead of a ``[rows, d_vocab]`` one. Autograd's own
    logsumexp would keep the logits and make several more passes over the vocabulary.
    """

    @staticmethod
    def forward(ctx, x, W):
        logits = x @ W
        top = logits.amax(-1, keepdim=True)
        e = logits.sub_(top).exp_()
        z = e.sum(-1)
        ctx.save_for_backward(e, z, W)
        return top.squeeze(-1) + z.log()

    @staticmethod
    def backward(ctx, *grad_outputs):
        (grad,) = grad_outputs
        e, z, W = ctx.saved_tensors
        return (e @ W.T) * (grad / z)[:, None], None


def _logsumexp_of_projection(x: Tensor, W: Tensor) -> Tensor:
    return _LogSumExpOfProjection.apply(x, W)


def _save_checkpoint(path: Path, run: dict[str, Any], step: int, translators: Translators,
                     opt: torch.optim.Optimizer) -> None:
    tensors = {"weight": translators.weight.detach().cpu().contiguous(),
               "bias": translators.bias.detach().cpu().contiguous()}
    for index, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            value = value if isinstance(value, Tensor) else torch.tensor(value)
            tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
    metadata = {"format": CHECKPOINT_FORMAT, "step": str(step), "run": json.dumps(run, sort_keys=True)}
    write_safetensors(path, tensors, metadata)


def _resume(path: Path, run: dict[str, Any], translators: Translators, opt: torch.optim.Optimizer) -> int:
    """Load the checkpoint at ``path`` into ``translators`` and ``opt``; returns the number of steps done.

    Everything is checked before anything is copied: a damaged checkpoint is an error naming
    the file, never a half-restored optimiser.
    """
    from safetensors import SafetensorError, safe_open

    where = str(path)
    fix = f"Delete {where!r} to train from the start."
    try:
        with safe_open(where, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as error:
        raise DamagedFileError(f"{where!r} is not a complete safetensors file (truncated or damaged?): {error}. {fix}"
                               ) from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise LensMismatchError(f"{where!r} is not a tuned-lens training checkpoint")
    saved = parse_object(metadata.get("run", ""), where=where, fix=fix, path="metadata entry 'run'",
                         keys="run").value
    step = check_kind(parse_value(metadata.get("step", ""), where=where, fix=fix, path="metadata entry 'step'"),
                      int, where=where, fix=fix, path="metadata entry 'step'")
    differ = {key: (saved.get(key), run[key]) for key in run if saved.get(key) != run[key]}
    if differ:
        what = "; ".join(f"{key}: checkpoint {old!r}, now {new!r}" for key, (old, new) in differ.items())
        raise LensMismatchError(f"{where!r} is a checkpoint of a different training run ({what}): "
                                "rerun with the same settings to resume, or use another checkpoint directory")
    if not 0 <= step <= run["steps"]:
        raise DamagedFileError(f"{where!r} says {step} steps were done of a {run['steps']}-step run. {fix}")
    params = {"weight": translators.weight, "bias": translators.bias}
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        parts = key.split(".", 2)
        if key in params:
            ok = value.shape == params[key].shape and value.dtype == params[key].dtype
        elif len(parts) == 3 and parts[0] == "optimizer" and parts[1].isdigit() and int(parts[1]) < len(params):
            state.setdefault(int(parts[1]), {})[parts[2]] = value
            param = list(translators.parameters())[int(parts[1])]
            ok = value.ndim == 0 or value.shape == param.shape
        else:
            ok = False
        if not ok:
            raise DamagedFileError(f"{where!r}: tensor {key!r} ({value.dtype}, {tuple(value.shape)}) does not belong to "
                                   f"this run's translators. {fix}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise DamagedFileError(f"{where!r}: tensor {key!r} holds NaN or infinite values. {fix}")
    missing = [key for key in params if key not in tensors]
    if missing:
        raise DamagedFileError(f"{where!r} lacks the tensors {missing}. {fix}")
    try:
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as error:
        raise DamagedFileError(f"{where!r}: its optimiser state does not fit this run ({error}). {fix}") from None
    with torch.no_grad():
        translators.weight.copy_(tensors["weight"])
        translators.bias.copy_(tensors["bias"])
    return step
