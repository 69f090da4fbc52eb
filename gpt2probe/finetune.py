"""Fine-tune a GPT-2 on your own text: a plain, seeded training loop (the gpt-2-simple workflow in transformers).

The base probe is left untouched: :func:`finetune` trains a copy of its model and returns a
new probe, ready for :func:`gpt2probe.compare`; :func:`save_finetune` writes it with
``save_pretrained`` (loadable by transformers and :func:`gpt2probe.load`) plus a
``finetune.json`` record of how it was made.

Texts are tokenised, each followed by ``<|endoftext|>``, concatenated and cut into windows
of ``seq_len`` tokens; batches are drawn from a seeded permutation of the windows, epoch
after epoch, so a run is reproducible for a seed. ``train`` and ``freeze`` select which
components learn, by component name (``embed``, ``pos_embed``, ``blocks.2``,
``blocks.2.mlp``, ``blocks.*.attn``, ``blocks.1.ln1``, ``ln_final``): a frozen parameter
is never handed to the optimiser, so it stays bit-for-bit equal to the base model's.
The token embedding is tied to the unembedding, so ``embed`` trains (or freezes) both.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch
from jaxtyping import Int
from torch import Tensor

from . import validate
from .configs.base import build, to_dict
from .configs.finetune import MAX_DEFAULT_SEQ_LEN, FinetuneConfig
from .errors import FileWriteError, InvalidArgumentError, InvalidTypeError, PromptError
from .model.parameters import component_path as component_path  # re-exported: it was defined here
from .probe import GPT2Probe, require_probe
from .schedule import lr_factor
from .tokens import required_special_id
from .windows import pack_ids, tokenize


def _matches(path: str, selector: str) -> bool:
    return fnmatch.fnmatchcase(path, selector) or fnmatch.fnmatchcase(path, selector + ".*")


def trainable_parameters(model: torch.nn.Module, train: Sequence[str] | None, freeze: Sequence[str] | None) -> list[str]:
    """The HF names of the parameters that ``train``/``freeze`` leave trainable; unknown selectors are an error."""
    paths = {name: component_path(name) for name, _ in model.named_parameters()}
    for selector in [*(train or ()), *(freeze or ())]:
        if not isinstance(selector, str) or not any(_matches(p, selector) for p in paths.values()):
            raise InvalidArgumentError(
                f"{selector!r} selects no parameter; select components such as 'embed', 'pos_embed', 'blocks.2', "
                "'blocks.2.mlp', 'blocks.*.attn', 'blocks.0.ln1', 'ln_final'"
            )
    chosen = [n for n, p in paths.items() if not train or any(_matches(p, s) for s in train)]
    chosen = [n for n in chosen if not any(_matches(paths[n], s) for s in freeze or ())]
    if not chosen:
        raise InvalidArgumentError("train/freeze leave no parameter to train")
    return chosen


def pack_windows(probe: GPT2Probe, texts: Sequence[str], seq_len: int) -> Int[Tensor, "window pos"]:
    """Tokenise ``texts`` (each followed by ``<|endoftext|>``), concatenate, and cut into ``seq_len`` windows."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise PromptError("texts must be a list of strings (one per document)")
    eos = required_special_id(probe.tokenizer, "eos", "separating the documents")
    documents = tokenize(probe.tokenizer, texts)
    largest, d_vocab = max((max(d, default=eos) for d in documents), default=eos), probe.cfg.d_vocab
    if largest >= d_vocab:
        raise PromptError(
            f"the tokenizer turns the texts into ids up to {largest} (<|endoftext|> is {eos}), but the model's "
            f"vocabulary has only {d_vocab} tokens: this model cannot be trained on text with this tokenizer "
            "(a toy model with its own small vocabulary needs token ids, not text)"
        )
    windows = pack_ids(documents, seq_len, eos, pad_last=False)
    if windows.tokens.shape[0] == 0:
        raise PromptError(f"the texts hold {windows.n_tokens} tokens, fewer than one window of seq_len={seq_len}")
    return windows.tokens


@dataclass(frozen=True)
class FinetuneResult:
    """The fine-tuned probe and a record of the run."""

    probe: GPT2Probe
    losses: list[float]
    trained: list[str]
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0

    def __repr__(self) -> str:
        last = f"{self.losses[-1]:.3f}" if self.losses else "n/a"
        return (f"FinetuneResult({len(self.losses)} steps, loss {self.losses[0]:.3f} -> {last}, "
                f"{len(self.trained)} parameter tensors trained)") if self.losses else "FinetuneResult(0 steps)"


def _check_positive(name: str, value: object, kind: type = int) -> None:
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    else:
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0  # kind is int
    if not ok:
        raise InvalidArgumentError(f"{name} must be a positive {kind.__name__}, got {value!r}")


def finetune(
    probe: GPT2Probe,
    texts: Sequence[str],
    *,
    config: FinetuneConfig | None = None,
    progress: bool | Callable[[int, float], None] = False,
    **settings: Any,
) -> FinetuneResult:
    """Train a copy of ``probe``'s model on ``texts`` with AdamW; returns the fine-tuned probe.

    The settings are a :class:`~gpt2probe.configs.finetune.FinetuneConfig`, given as ``config``
    or as its fields (``steps`` required; ``batch_size=8, seq_len=None, lr=3e-4,
    weight_decay=0.0, warmup=None, seed=0, train=None, freeze=None``): the same fields are
    ``gpt2probe finetune``'s flags and the settings saved in ``finetune.json``.

    Args:
        config: the settings (default: ``FinetuneConfig(**settings)``).
        progress: ``True`` for a progress bar, or a callable ``fn(step, loss)``.
        settings: :class:`FinetuneConfig` fields: ``steps`` optimiser steps of ``batch_size``
            windows of ``seq_len`` tokens (default: the model's context, at most 128); AdamW's
            ``lr``, ``weight_decay`` and a linear warm-up over ``warmup`` steps (default 10% of
            ``steps``) before a cosine decay to 10% of ``lr``; ``train``, ``freeze``: component
            selectors (see the module docstring), by default all train.
    """
    require_probe(probe)
    if config is not None and settings:
        raise InvalidArgumentError(f"give the settings either as config or as keyword arguments, not both "
                                   f"(got config and {', '.join(sorted(settings))})")
    if config is None:  # build() returns an instance of the class it is given (or raises)
        config = cast(FinetuneConfig, build(FinetuneConfig, settings))
    steps, batch_size, seq_len, lr = config.steps, config.batch_size, config.seq_len, config.lr
    weight_decay, warmup, seed = config.weight_decay, config.warmup, config.seed
    train = list(config.train) if isinstance(config.train, tuple) else config.train
    freeze = list(config.freeze) if isinstance(config.freeze, tuple) else config.freeze
    _check_positive("steps", steps)
    if steps is None:  # required; _check_positive refuses None, which the type checker cannot see
        raise InvalidArgumentError("steps must be a positive int, got None")
    _check_positive("batch_size", batch_size)
    _check_positive("lr", lr, float)
    validate.finite_number("weight_decay", weight_decay)
    if weight_decay < 0:
        raise InvalidArgumentError(f"weight_decay must be >= 0 (0 for none), got {weight_decay!r}")
    validate.integer("seed", seed, minimum=-(2**63), maximum=2**64 - 1)  # what torch.manual_seed takes
    if warmup is not None:
        validate.integer("warmup", warmup, minimum=0)
    if not isinstance(progress, bool) and not callable(progress):
        raise InvalidTypeError(f"progress must be True, False or a function fn(step, loss), got {type(progress).__name__}")
    for what, selectors in (("train", train), ("freeze", freeze)):
        if isinstance(selectors, str | bytes) or not isinstance(selectors, Sequence | None):
            raise InvalidTypeError(f"{what} must be a list of component names such as ['blocks.2'] (or None), "
                                   f"got {type(selectors).__name__} {selectors!r}")
    seq_len = min(MAX_DEFAULT_SEQ_LEN, probe.cfg.n_ctx) if seq_len is None else seq_len
    _check_positive("seq_len", seq_len)
    if seq_len > probe.cfg.n_ctx:
        raise InvalidArgumentError(f"seq_len {seq_len} exceeds the model's context of {probe.cfg.n_ctx} tokens")
    warmup = max(1, steps // 10) if warmup is None else warmup
    windows = pack_windows(probe, texts, seq_len)

    model = copy.deepcopy(probe.model)
    names = trainable_parameters(model, train, freeze)
    params = dict(model.named_parameters())
    model.requires_grad_(False)
    for name in names:
        params[name].requires_grad_(True)
    optimizer = torch.optim.AdamW([params[n] for n in names], lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps=steps, warmup=warmup, shape="cosine", floor=0.1))

    generator = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # dropout
    order: list[int] = []
    losses: list[float] = []
    bar = _progress_bar(steps) if progress is True else None
    started = time.perf_counter()
    model.train()
    try:
        for step in range(steps):
            while len(order) < batch_size:
                order += torch.randperm(len(windows), generator=generator).tolist()
            batch, order = windows[order[:batch_size]].to(probe.cfg.device), order[batch_size:]
            logits = model(input_ids=batch, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch[:, 1:].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            elif callable(progress):
                progress(step + 1, losses[-1])
    finally:
        if bar is not None:
            bar.close()
        torch.random.set_rng_state(torch_state)
        model.eval()
        model.requires_grad_(False)
    resolved = replace(config, seq_len=seq_len, warmup=warmup, train=tuple(train or ()), freeze=tuple(freeze or ()))
    record = {"base_model": probe.cfg.model_name, **to_dict(resolved), "n_windows": len(windows),
              "n_documents": len(texts)}
    tuned = GPT2Probe(model, probe.tokenizer, model_name=f"{probe.cfg.model_name} (fine-tuned)")
    return FinetuneResult(tuned, losses, names, record, time.perf_counter() - started)


def _progress_bar(steps: int):
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc="gpt2probe finetune", unit="step")


def save_finetune(result: FinetuneResult, out: str | Path) -> Path:
    """Write the fine-tuned model (``save_pretrained``, safetensors), its tokenizer and ``finetune.json``."""
    import torch as _torch
    import transformers
    from safetensors import SafetensorError

    from .atomic import _umask, atomic_directory

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {str(out)!r} exists and is not a directory")
    record = {**result.settings, "trained": [component_path(n) for n in result.trained],
              "losses": [round(x, 5) for x in result.losses], "seconds": round(result.seconds, 1),
              "python": platform.python_version(), "torch": _torch.__version__,
              "transformers": transformers.__version__}
    with atomic_directory(out) as tmp:  # all or nothing: a full disk leaves no config.json without weights
        try:
            result.probe.model.save_pretrained(tmp)
            result.probe.tokenizer.save_pretrained(tmp)
        except SafetensorError as error:
            raise FileWriteError(f"cannot write {str(out)!r}: {error}") from None
        (tmp / "finetune.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        mode = 0o666 & ~_umask()  # safetensors creates its file 0600; every file gets the same mode as the others
        for path in tmp.iterdir():
            if path.is_file():
                os.chmod(path, mode)
    return out
