"""How much each component's weights moved between a base and a fine-tuned checkpoint."""

from __future__ import annotations

import math

import torch

from ..errors import ModelMismatchError, NonFiniteError
from ..probe import GPT2Probe
from .components import component_tensors

ARCHITECTURE_FIELDS = ("n_layer", "n_embd", "n_head", "n_inner", "n_positions", "vocab_size",
                       "activation_function", "layer_norm_epsilon")
"""The config fields two checkpoints must share to be compared component by component."""


def check_comparable(base: GPT2Probe, tuned: GPT2Probe) -> None:
    """Raise :class:`~gpt2probe.errors.ModelMismatchError` unless the two probes share architecture and tokenizer."""
    if not isinstance(base, GPT2Probe) or not isinstance(tuned, GPT2Probe):
        raise ModelMismatchError(
            f"compare takes two GPT2Probe objects (gpt2probe.load(...)), got {type(base).__name__} and "
            f"{type(tuned).__name__}"
        )
    differing = [
        f"{field} {getattr(base.model.config, field, None)!r} vs {getattr(tuned.model.config, field, None)!r}"
        for field in ARCHITECTURE_FIELDS
        if getattr(base.model.config, field, None) != getattr(tuned.model.config, field, None)
    ]
    if differing:
        raise ModelMismatchError(
            f"the two models differ in architecture ({'; '.join(differing)}): only checkpoints of the same "
            "architecture (a model and its fine-tune) can be compared"
        )
    if _tokenizer_fingerprint(base.tokenizer) != _tokenizer_fingerprint(tuned.tokenizer):
        raise ModelMismatchError(
            "the two models use different tokenizers (their vocabularies differ): token-level comparisons "
            "would pair unrelated tokens; load both with the same tokenizer"
        )


def _tokenizer_fingerprint(tokenizer) -> tuple:
    """Size, special tokens and every 61st token string: tells two tokenizers apart.

    Cheaper than building their 50k-entry vocabulary dicts (``get_vocab`` takes ~0.7 s each).
    """
    size = len(tokenizer)
    return (size, tokenizer.bos_token_id, tokenizer.eos_token_id,
            tuple(tokenizer.convert_ids_to_tokens(list(range(0, size, 61)) + [size - 1])))


def weight_changes(base: GPT2Probe, tuned: GPT2Probe) -> dict[str, float]:
    """``component -> ||W_tuned - W_base|| / ||W_base||`` (Frobenius norms over the component's tensors).

    Components are listed in :mod:`gpt2probe.diffing.components`. The norms are taken in
    float64 on the CPU, so an unchanged component gives exactly ``0.0``. A component whose
    base weights are all zero gives ``inf`` if it changed (relative change is undefined there).
    A NaN or infinite weight in either model is a :class:`~gpt2probe.errors.NonFiniteError`
    naming the component.
    """
    check_comparable(base, tuned)
    return component_changes(base.model, tuned.model)


def _non_finite(weights: torch.Tensor) -> int:
    """How many values of ``weights`` are NaN or infinite.

    One sum decides the common case: it is finite only if every value is (a NaN or an
    infinity never sums back to a finite number), and it allocates nothing, where an
    ``isfinite`` mask of a 124M-parameter model costs about a second on one CPU thread. Only
    a sum that is not finite, which may also be an overflow, counts the values one by one.
    """
    if torch.isfinite(weights.sum()):
        return 0
    return int((~torch.isfinite(weights)).sum())


@torch.no_grad()
def component_changes(base: torch.nn.Module, tuned: torch.nn.Module) -> dict[str, float]:
    """:func:`weight_changes` of two ``GPT2LMHeadModel`` objects already known to share an architecture."""
    changes: dict[str, float] = {}
    for (name, base_parts), (_, tuned_parts) in zip(component_tensors(base), component_tensors(tuned)):
        pairs = [(b, t.to(b.device)) for b, t in zip(base_parts, tuned_parts)]
        for which, parts in (("base", base_parts), ("tuned", tuned_parts)):
            bad = sum(_non_finite(p) for p in parts if p.is_floating_point())
            if bad:  # NaN != NaN: the change would be NaN, and "change > 0" would count it as unchanged
                raise NonFiniteError(
                    f"the {which} model's {name} weights hold {bad} NaN or infinite value(s): its change cannot be "
                    "measured (and the model's outputs are not meaningful); fix or reload that checkpoint")
        if all(torch.equal(b, t) for b, t in pairs):  # bit-for-bit equal: exactly 0, and no float64 pass
            changes[name] = 0.0
            continue
        diff_sq = sum(float(torch.linalg.vector_norm(t.double() - b.double()) ** 2) for b, t in pairs)
        base_sq = sum(float(torch.linalg.vector_norm(b, dtype=torch.float64) ** 2) for b, _ in pairs)
        changes[name] = math.sqrt(diff_sq / base_sq) if base_sq > 0 else math.inf
    return changes
