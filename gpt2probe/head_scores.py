"""One number per attention head: how much it attends to the previous token, the first token, itself, or the induction target.

Every score is a mean of attention weights read from captured patterns
(``blocks.{l}.attn.hook_pattern``, ``[batch, head, query_pos, key_pos]``), one entry per
``[layer, head]``. Which queries are averaged is part of each score's definition:

* Only real positions count. A left-padded batch's pad rows are never queries, and pad
  columns are never keys (the model gives them zero weight anyway), so a batch scores the
  same as its prompts run one by one and pooled (see ``per_prompt``).
* A prompt's first real token can attend only to itself (weight 1 by construction), so it
  is never a query in :func:`previous_token_scores`, :func:`first_token_scores` or
  :func:`diagonal_scores`: they average over the queries that had a choice.
* Pooled scores (the default) weigh every counted (prompt, query) pair equally, so a long
  prompt counts more than a short one; ``per_prompt=True`` returns each prompt's own mean.

:func:`induction_scores` runs the model on ``[BOS, x, x]`` sequences of random distinct
tokens (:func:`gpt2probe.toy.repeated_random_tokens`) and reads the attention from the
second copy to the token after the first occurrence of the current token.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from einops import einsum
from jaxtyping import Float, Int
from torch import Tensor

from . import names as N
from . import validate
from .cache import ActivationCache
from .errors import HookNameError, InvalidArgumentError, InvalidTypeError, ShapeError
from .probe import GPT2Probe, require_probe
from .tokens import Inputs, special_id
from .toy import repeated_random_tokens

PATTERN_NAMES = "blocks.*.attn.hook_pattern"
"""The ``names`` selection that captures exactly what the scores read."""

SCORE_LABELS = {
    "previous_token": "previous-token",
    "first_token": "first-token",
    "diagonal": "diagonal (self)",
    "induction": "induction",
}
"""The keys of :func:`all_head_scores`, in order, with a label for tables and figures."""

DEFAULT_MAX_HALF_LEN = 50
HeadScores = Float[Tensor, "layer head"]
PromptHeadScores = Float[Tensor, "batch layer head"]


# -- reading the cache -------------------------------------------------------------------
def _patterns(cache: ActivationCache) -> list[Tensor]:
    """Every layer's pattern, or an error naming the hooks to capture."""
    if not isinstance(cache, ActivationCache):
        raise InvalidTypeError(f"head scores read an ActivationCache (from probe.run_with_cache), got {type(cache).__name__}")
    missing = [N.pattern(layer) for layer in range(cache.n_layers) if N.pattern(layer) not in cache]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise HookNameError(
            f"head scores need every layer's attention pattern, but the cache lacks {shown}; capture them with "
            f"probe.run_with_cache(inputs, names={PATTERN_NAMES!r})"
        )
    patterns = [cache[N.pattern(layer)] for layer in range(cache.n_layers)]
    shape = patterns[0].shape
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ShapeError(f"an attention pattern must be [batch, head, query_pos, key_pos] with query_pos == key_pos, got {tuple(shape)}")
    return patterns


def _attention_mask(cache: ActivationCache, patterns: list[Tensor]) -> Int[Tensor, "batch pos"]:
    """The cache's attention mask (1 = real token), checked to be left padding that fits the patterns."""
    if cache.tokens is None:
        raise InvalidArgumentError("the cache carries no tokens, so its padding is unknown: use a cache from probe.run_with_cache")
    mask = cache.tokens.attention_mask.long()
    batch, _, n_pos, _ = patterns[0].shape
    if tuple(mask.shape) != (batch, n_pos):
        raise ShapeError(f"the cache's attention mask has shape {tuple(mask.shape)} but its patterns need ({batch}, {n_pos})")
    if mask.shape[1] > 1 and bool((mask.diff(dim=-1) < 0).any()):
        raise InvalidArgumentError("the attention mask is not left padding (a real token before a pad): scores assume left-padded batches")
    return mask.to(patterns[0].device)


def _counted_queries(mask: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos"]:
    """1 at real queries that have at least one earlier real token, else 0."""
    has_previous = torch.zeros_like(mask)
    has_previous[:, 1:] = mask[:, :-1]
    return (mask * has_previous).double()


def _reduce(
    values: Float[Tensor, "batch head n"], weights: Float[Tensor, "batch n"], *, per_prompt: bool
) -> Float[Tensor, " head"] | Float[Tensor, "batch head"]:
    """Weighted mean over queries: pooled over the batch, or one mean per prompt (NaN where nothing counts)."""
    values = values.double()
    if per_prompt:
        total = einsum(values, weights, "batch head n, batch n -> batch head")
        return total / weights.sum(-1, keepdim=True)
    total = einsum(values, weights, "batch head n, batch n -> head")
    return total / weights.sum()


def _score(
    cache: ActivationCache,
    per_prompt: bool,
    read: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    what: str,
) -> HeadScores | PromptHeadScores:
    """Apply ``read(pattern, mask) -> (values [batch head n], weights [batch n])`` to every layer."""
    validate.boolean("per_prompt", per_prompt)
    patterns = _patterns(cache)
    mask = _attention_mask(cache, patterns)
    per_layer = []
    for pattern in patterns:
        values, weights = read(pattern, mask)
        if not per_prompt and float(weights.sum()) == 0:
            raise InvalidArgumentError(f"{what}: no query counts (every prompt has a single real token); use longer prompts")
        per_layer.append(_reduce(values, weights, per_prompt=per_prompt))
    stacked = torch.stack(per_layer, dim=-2)  # [layer, head] or [batch, layer, head]
    return stacked.float().cpu()


# -- scores from a cache -----------------------------------------------------------------
def previous_token_scores(cache: ActivationCache, *, per_prompt: bool = False) -> HeadScores | PromptHeadScores:
    """Mean attention from each query to the position just before it.

    Averages ``pattern[b, h, q, q - 1]`` over every real query ``q`` whose previous position
    is a real token too (all real positions but each prompt's first), pooled over the batch;
    ``per_prompt=True`` gives ``[batch, layer, head]`` with NaN for one-token prompts.
    """

    def read(pattern: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        values = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)  # [batch, head, pos-1]: query q = j + 1, key j
        return values, _counted_queries(mask)[:, 1:]

    return _score(cache, per_prompt, read, "previous_token_scores")


def first_token_scores(cache: ActivationCache, *, per_prompt: bool = False) -> HeadScores | PromptHeadScores:
    """Mean attention from each query to its prompt's first real token (BOS, or the attention sink).

    Averages ``pattern[b, h, q, f_b]``, ``f_b`` being prompt ``b``'s first real position,
    over every real query except ``f_b`` itself (which has no other choice), pooled over the
    batch; ``per_prompt=True`` gives ``[batch, layer, head]`` with NaN for one-token prompts.
    """

    def read(pattern: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        first = mask.argmax(dim=-1)  # left padding: the first 1 in each row
        index = first[:, None, None, None].expand(pattern.shape[0], pattern.shape[1], pattern.shape[2], 1)
        return pattern.gather(-1, index)[..., 0], _counted_queries(mask)

    return _score(cache, per_prompt, read, "first_token_scores")


def diagonal_scores(cache: ActivationCache, *, per_prompt: bool = False) -> HeadScores | PromptHeadScores:
    """Mean attention from each query to itself.

    Averages ``pattern[b, h, q, q]`` over every real query except each prompt's first
    (whose self-attention is 1 by construction), pooled over the batch;
    ``per_prompt=True`` gives ``[batch, layer, head]`` with NaN for one-token prompts.
    """

    def read(pattern: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return pattern.diagonal(dim1=-2, dim2=-1), _counted_queries(mask)

    return _score(cache, per_prompt, read, "diagonal_scores")


def induction_scores_from_cache(
    cache: ActivationCache, half_len: int, *, per_prompt: bool = False
) -> HeadScores | PromptHeadScores:
    """Mean attention from the second copy of a repeated block to the induction target.

    The cache must come from sequences whose last ``2 * half_len`` tokens are a block
    repeated twice (``[BOS, x, x]`` or ``[x, x]``, no padding). For each of the last
    ``half_len`` positions ``q`` it averages ``pattern[b, h, q, q - (half_len - 1)]``: the
    token right after the earlier occurrence of the current token.
    """
    patterns = _patterns(cache)
    n_pos = patterns[0].shape[-1]
    if not (1 <= half_len and 2 * half_len <= n_pos):
        raise InvalidArgumentError(f"half_len must be in [1, {n_pos // 2}] for sequences of {n_pos} tokens, got {half_len}")
    if cache.tokens is not None:
        ids, mask = cache.tokens.ids, cache.tokens.attention_mask
        if not bool(mask[:, -2 * half_len :].all()) or not torch.equal(ids[:, -half_len:], ids[:, -2 * half_len : -half_len]):
            raise InvalidArgumentError(f"the cached tokens do not end in a block of {half_len} tokens repeated twice")
    offset = half_len - 1

    def read(pattern: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        values = pattern.diagonal(offset=-offset, dim1=-2, dim2=-1)  # query q = j + offset, key j
        weights = torch.zeros(values.shape[0], values.shape[-1], dtype=torch.float64, device=values.device)
        weights[:, -half_len:] = 1.0
        return values, weights

    return _score(cache, per_prompt, read, "induction_scores")


# -- scores that run the model -----------------------------------------------------------
def induction_scores(
    probe: GPT2Probe,
    *,
    half_len: int | None = None,
    n_seqs: int = 8,
    seed: int = 0,
    vocab: int | None = None,
) -> HeadScores:
    """Each head's mean attention to the induction target on repeated random tokens.

    Runs ``n_seqs`` sequences ``[BOS, x, x]``, ``x`` being ``half_len`` distinct tokens drawn
    from ``range(vocab)`` (default: the model's whole vocabulary) without BOS, and averages
    over every second-copy position and sequence (:func:`induction_scores_from_cache`).
    BOS is the tokenizer's ``<|endoftext|>`` when the model's vocabulary has it, else token 0.
    ``half_len`` defaults to the largest of at most 50 that fits the context and the vocabulary.
    Only the patterns are captured, on the CPU.
    """
    require_probe(probe)
    d_vocab, n_ctx = probe.cfg.d_vocab, probe.cfg.n_ctx
    vocab = d_vocab if vocab is None else validate.integer("vocab", vocab)
    validate.integer("n_seqs", n_seqs, minimum=1)
    validate.integer("seed", seed, minimum=0)
    if half_len is not None:
        validate.integer("half_len", half_len)
    if not 2 <= vocab <= d_vocab:
        raise InvalidArgumentError(f"vocab must be in [2, {d_vocab}] (the model's vocabulary), got {vocab}")
    bos = special_id(probe.tokenizer, "bos")
    bos = bos if bos is not None and bos < d_vocab else 0
    pool = vocab - (1 if bos < vocab else 0)
    longest = min((n_ctx - 1) // 2, pool)
    half_len = min(DEFAULT_MAX_HALF_LEN, longest) if half_len is None else half_len
    if not 1 <= half_len <= longest:
        raise InvalidArgumentError(
            f"half_len must be in [1, {longest}]: 2 * half_len + 1 tokens must fit n_ctx={n_ctx} and "
            f"{pool} distinct tokens are available; got {half_len}"
        )
    ids = repeated_random_tokens(n_seqs, half_len, vocab, seed, bos=bos)
    _, cache = probe.run_with_cache(ids, names=PATTERN_NAMES, device="cpu", dtype=torch.float32)
    return induction_scores_from_cache(cache, half_len)


def all_head_scores(
    probe: GPT2Probe,
    prompts: Inputs,
    *,
    induction: bool = True,
    half_len: int | None = None,
    n_seqs: int = 8,
    seed: int = 0,
) -> dict[str, HeadScores]:
    """Every score, keyed as in :data:`SCORE_LABELS`: three from one run on ``prompts``, induction from its own.

    ``prompts`` is anything the probe runs (text, a list of texts, token ids, :class:`~gpt2probe.Tokens`).
    """
    require_probe(probe)
    validate.boolean("induction", induction)
    _, cache = probe.run_with_cache(prompts, names=PATTERN_NAMES, device="cpu", dtype=torch.float32)
    scores = {
        "previous_token": previous_token_scores(cache),
        "first_token": first_token_scores(cache),
        "diagonal": diagonal_scores(cache),
    }
    if induction:
        scores["induction"] = induction_scores(probe, half_len=half_len, n_seqs=n_seqs, seed=seed)
    return scores


def rank_heads(scores: Float[Tensor, "layer head"], top: int | None = 10) -> list[tuple[int, int, float]]:
    """The ``top`` heads as ``(layer, head, score)``, highest first (ties by layer, then head; NaN left out).

    A head scores NaN where nothing counted towards it (one-token prompts); when every head is
    NaN there is nothing to rank, and an empty list would read as "no head stands out", so
    that is an error.
    """
    if not isinstance(scores, Tensor):
        raise InvalidTypeError(f"scores must be a [layer, head] tensor, got {type(scores).__name__}")
    if scores.ndim != 2:
        raise ShapeError(f"scores must be [layer, head], got shape {tuple(scores.shape)}")
    if top is not None and validate.integer("top", top) < 1:
        raise InvalidArgumentError(f"top must be a positive number of heads (or None for all), got {top}")
    n_heads = scores.shape[1]
    rows = [(i // n_heads, i % n_heads, value) for i, value in enumerate(scores.flatten().tolist()) if not math.isnan(value)]
    if not rows and scores.numel():
        raise InvalidArgumentError(
            f"every one of the {scores.numel()} head scores is NaN, so no head can be ranked (were the prompts "
            "one token long, or did the model produce NaN?)"
        )
    rows.sort(key=lambda row: (-row[2], row[0], row[1]))
    return rows if top is None else rows[:top]


def head_label(layer: int, head: int) -> str:
    """``L{layer}H{head}``, the label used in tables and figures."""
    return f"L{layer}H{head}"
