"""The logit lens: read every layer's residual stream through the final layer norm and ``W_U``.

Each stream is normalised with its *own* statistics by ``ln_f`` and projected with the
tied unembedding ``W_U = W_E.T``, which is what the model would output if the stream were
its last. The last stream is the model's own output. Only statistics leave this module:
the ``[stream, pos, d_vocab]`` logits are computed block by block, reduced, and dropped, so
extra memory stays below ``max_chunk_bytes`` (times a small constant) whatever the length.

One forward pass captures only the residual streams (``lm_head`` is skipped); the
projection, a matmul per block, is the dominant cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import names as N
from .. import validate
from ..errors import InvalidArgumentError, InvalidTypeError, PromptError, ShapeError
from ..model.layernorm import LayerNorm
from ..probe import GPT2Probe, require_probe
from ..tokens import Inputs, Tokens, per_prompt
from .result import LensResult, PromptLens
from .tuned import TunedLens

NEXT_TOKEN = "next"
"""``targets=NEXT_TOKEN``: at each position, the token that actually comes next in the prompt."""

Target = str | int
Targets = Target | Sequence[Target] | None
Positions = int | Sequence[int] | str | None


def stream_labels(n_layers: int, include_mid: bool) -> list[str]:
    """``embed``, then ``L{l}.mid`` (between attention and MLP, if asked) and ``L{l}`` (after block l)."""
    labels = ["embed"]
    for layer in range(n_layers):
        labels += ([f"L{layer}.mid"] if include_mid else []) + [f"L{layer}"]
    return labels


def stream_names(n_layers: int, include_mid: bool) -> list[str]:
    """The hook names whose activations are the lens's streams, in order."""
    out = [N.resid_pre(0)]
    for layer in range(n_layers):
        out += ([N.resid_mid(layer)] if include_mid else []) + [N.resid_post(layer)]
    return out


@dataclass(frozen=True)
class LensStats:
    """Statistics of a block of read-outs (leading dims are ``stream pos``)."""

    top_ids: Int[Tensor, "stream pos k"]
    top_probs: Float[Tensor, "stream pos k"]
    entropy: Float[Tensor, "stream pos"]
    kl_to_final: Float[Tensor, "stream pos"]
    target_logprob: Float[Tensor, "stream pos"] | None
    target_rank: Int[Tensor, "stream pos"] | None


EXACT_KL_BELOW = 1e-2
"""``kl_to_final`` below this (nats) is recomputed exactly: the fast float32 path is accurate to
~1e-6 nats absolute, i.e. 1e-4 relative at this threshold, and only worse below it."""


def _exact_small_kl(block: Float[Tensor, "stream pos d_model"], small: Tensor, ln_f: LayerNorm,
                    W_U: Float[Tensor, "d_model d_vocab"], max_chunk_bytes: int) -> Float[Tensor, " n"]:
    """``KL(final || stream)`` at the ``small`` entries (``[stream - 1, pos]`` mask), accurate where tiny.

    Both streams are normalised in float64 and their difference projected, so the logit
    differences ``delta = logit_final - logit_stream`` are accurate relative to their own size
    (not to the logits'). With ``p`` the final distribution (float64), ``log p - log q = delta
    + log E_p[exp(-delta)]`` and ``KL = E_p[exp(-d) - 1 + d]``, a sum of non-negative terms
    (see :mod:`gpt2probe.divergence`); ``expm1``/``log1p`` keep every step accurate for tiny ``d``.
    """
    stream_idx, pos_idx = small.nonzero(as_tuple=True)
    d_vocab = W_U.shape[1]
    normalized = ln_f.detach()(block.double())
    final = normalized[-1, pos_idx]
    diff = final - normalized[stream_idx, pos_idx]
    W = W_U.float()
    rows = max(1, max_chunk_bytes // (8 * d_vocab))
    out = []
    for r0 in range(0, len(pos_idx), rows):
        log_p = torch.log_softmax((final[r0 : r0 + rows].float() @ W).double(), -1)
        p = log_p.exp()
        del log_p
        delta = (diff[r0 : r0 + rows].float() @ W).double()
        shift = torch.log1p((p * torch.expm1(-delta)).sum(-1, keepdim=True))  # lse_stream - lse_final
        d = delta.add_(shift)
        out.append((p * torch.expm1(-d).add_(d)).sum(-1))
    return torch.cat(out)


@torch.no_grad()
def read_out(
    streams: Float[Tensor, "stream pos d_model"],
    ln_f: LayerNorm | torch.nn.LayerNorm,
    W_U: Float[Tensor, "d_model d_vocab"],
    *,
    k: int,
    target_ids: Int[Tensor, " pos"] | None = None,
    max_chunk_bytes: int = 64 * 2**20,
) -> LensStats:
    """Project ``streams`` (the last one being the final stream) and reduce to statistics, in chunks.

    Each chunk is a block of positions across all streams. Its logits go into one reused
    buffer, ``exp(logits - max)`` into a second and products into a third; everything
    else comes from those with as few passes over the vocabulary as possible:

    - ``lse = max + log(sum(e))`` and top-k probabilities ``exp(top_logit - lse)``;
    - entropy ``H = lse - E_p[logit]``;
    - ``KL(final || s) = (E_f[logit_f] - lse_f) - (E_f[logit_s] - lse_s)``, where ``E_f``
      averages under the final distribution.

    The expectations are taken of ``logit - max`` rather than raw logits, which keeps the
    float32 sums small and the differences above accurate: to ~1e-6 nats absolute. Where
    that is not accurate enough in relative terms, KLs below :data:`EXACT_KL_BELOW` are
    recomputed by :func:`_exact_small_kl` (float64, exact where small, never negative).
    """
    n_stream, n_pos, d_model = streams.shape
    _require_finite(streams)
    if isinstance(ln_f, torch.nn.Module):  # a torch LayerNorm module, read as it is now
        ln_f = LayerNorm.of(ln_f)
    d_vocab = W_U.shape[1]
    rows_per_chunk = max(1, max_chunk_bytes // (4 * d_vocab))
    pos_per_chunk = max(1, rows_per_chunk // n_stream)
    size = n_stream * min(pos_per_chunk, n_pos) * d_vocab
    logits_buffer = torch.empty(size, dtype=torch.float32, device=streams.device)
    exp_buffer = torch.empty_like(logits_buffer)
    product_buffer = torch.empty_like(logits_buffer)
    W_U = W_U.float()
    ln_f32 = ln_f.to(dtype=torch.float32)
    chunks: list[tuple] = []  # per chunk: (top_ids, top_probs, entropy, kl without the final stream, target stats)
    small_masks: list[Tensor] = []  # [stream - 1, pos] per chunk: KLs for the exact path
    for start in range(0, n_pos, pos_per_chunk):
        block = streams[:, start : start + pos_per_chunk]
        shape = (n_stream, block.shape[1], d_vocab)
        logits = logits_buffer[: shape[0] * shape[1] * d_vocab].view(shape)
        e = exp_buffer[: logits.numel()].view(shape)
        # in float32 whatever the model's dtype (a float16 stream's statistics overflow otherwise)
        normalized = ln_f32(block.float())
        torch.matmul(normalized, W_U, out=logits)
        top_logits, top_ids = logits.topk(k, dim=-1)
        target_logprob = target_rank = None
        target = None  # (the target's logit, where there is no target)
        if target_ids is not None:
            ids = target_ids[start : start + pos_per_chunk].to(logits.device)
            safe = ids.clamp(min=0)[None, :, None].expand(n_stream, -1, 1)
            target_logit = logits.gather(-1, safe)
            missing = (ids < 0)[None].expand(n_stream, -1)
            # counted as float 0/1 in a reused buffer: 5x faster than summing a bool tensor, exact below 2**24
            above = torch.gt(logits, target_logit, out=product_buffer[: logits.numel()].view(shape))
            target_rank = above.sum(-1).long().masked_fill(missing, -1)
            target = (target_logit, missing)
        # From here on ``logits`` holds logit - max (<= 0): smaller numbers, smaller rounding errors.
        shifted = logits.sub_(top_logits[..., :1])
        torch.exp(shifted, out=e)
        log_total = e.sum(-1).log()
        lse = top_logits[..., 0] + log_total
        # Products go through a third buffer and torch's pairwise sum: a BLAS dot (einsum) over
        # 50k terms accumulates float32 rounding errors about 30x larger.
        product = product_buffer[: logits.numel()].view(shape)
        cross = torch.mul(shifted[:-1], e[-1], out=product[:-1]).sum(-1) / log_total[-1].exp()  # E_final[logit_s - max_s]
        expected = torch.mul(e, shifted, out=product).sum(-1) / log_total.exp()  # E_p[logit - max]
        kl = ((expected[-1] - log_total[-1]) - (cross - log_total[:-1])).clamp(min=0.0)
        small_masks.append(kl < EXACT_KL_BELOW)
        if target is not None:
            target_logit, missing = target
            target_logprob = (target_logit[..., 0] - lse).masked_fill(missing, float("nan"))
        top_probs = (top_logits - lse[..., None]).exp()
        chunks.append((top_ids, top_probs, log_total - expected, kl, target_logprob, target_rank))
    # Which chunks hold small KLs is asked once, after the loop: an ``if small.any()`` per chunk
    # makes the host wait for the GPU every chunk (41 at 1,024 tokens) while the queue runs dry.
    # The exact path then redoes each such chunk's small entries as before.
    flagged = torch.stack([small.any() for small in small_masks]).tolist() if small_masks else []
    parts: list[LensStats] = []
    for (top_ids, top_probs, entropy, kl, target_logprob, target_rank), small, has_small, start in zip(
            chunks, small_masks, flagged, range(0, n_pos, pos_per_chunk)):
        if has_small:
            kl[small] = _exact_small_kl(streams[:, start : start + pos_per_chunk], small, ln_f, W_U,
                                        max_chunk_bytes).to(kl.dtype)
        kl = torch.cat([kl, torch.zeros_like(kl[:1])])  # KL(final || final) is 0 by definition
        parts.append(LensStats(top_ids, top_probs, entropy, kl, target_logprob, target_rank))
    return LensStats(
        top_ids=torch.cat([p.top_ids for p in parts], 1),
        top_probs=torch.cat([p.top_probs for p in parts], 1),
        entropy=torch.cat([p.entropy for p in parts], 1),
        kl_to_final=torch.cat([p.kl_to_final for p in parts], 1),
        target_logprob=_cat_targets([p.target_logprob for p in parts]),
        target_rank=_cat_targets([p.target_rank for p in parts]),
    )


def _cat_targets(chunks: list[Tensor | None]) -> Tensor | None:
    """The chunks' target statistics joined along ``pos``: None when there were no targets (every chunk alike)."""
    present = [chunk for chunk in chunks if chunk is not None]
    if not present:
        return None
    if len(present) != len(chunks):
        raise ShapeError(f"{len(present)} of {len(chunks)} chunks hold target statistics: all or none should")
    return torch.cat(present, 1)


def logit_lens(
    probe: GPT2Probe,
    prompts: Inputs,
    *,
    k: int = 5,
    targets: Targets = None,
    positions: Positions = None,
    include_mid: bool = False,
    prepend_bos: bool = False,
    batch_size: int = 8,
    max_chunk_bytes: int = 64 * 2**20,
    progress: Callable[[int], None] | None = None,
    lens: TunedLens | None = None,
) -> LensResult:
    """Ask every layer what it would predict if the model stopped there.

    Args:
        prompts: one prompt, a list of prompts (run as left-padded batches), token ids or
            :class:`~gpt2probe.Tokens`.
        k: top predictions kept per stream and position.
        targets: tokens to follow through the layers: ``None``; ``"next"`` (each
            position's actual next token); one token (a string that is a single token, or
            an id) for every position; or a list with one token per prompt.
        positions: ``None`` for every real position, ``"last"`` for each prompt's last
            real token, or indices into each prompt's tokens (negative from the end).
        include_mid: add the stream between each block's attention and MLP.
        progress: called with the number of prompts finished after each batch.
        lens: a :class:`~gpt2probe.TunedLens` to read every stream through its translator
            first (the tuned lens); ``None`` reads the streams as they are (the logit lens).

    Returns:
        A :class:`LensResult` with one :class:`PromptLens` per prompt.
    """
    require_probe(probe)
    validate.integer("k", k, minimum=1, maximum=probe.cfg.d_vocab)
    validate.boolean("include_mid", include_mid)
    validate.function("progress", progress)
    if lens is not None and not isinstance(lens, TunedLens):
        raise InvalidTypeError(f"lens must be a TunedLens (or None for the logit lens), got {type(lens).__name__}")
    validate.integer("batch_size", batch_size, minimum=1)
    validate.integer("max_chunk_bytes", max_chunk_bytes, minimum=1)
    if positions is not None and positions != "last":
        validate.index_list("positions", positions)
    tokens = probe.as_tokens(prompts, prepend_bos=prepend_bos)
    n_prompts = tokens.ids.shape[0]
    per_prompt_targets = _per_prompt_targets(probe, targets, n_prompts)
    labels = stream_labels(probe.cfg.n_layers, include_mid)
    hook_names = stream_names(probe.cfg.n_layers, include_mid)
    ln_f, W_U = probe.weights.ln_final, probe.W_U
    if lens is not None:
        lens.check_model(probe)
    items: list[PromptLens] = []
    for start in range(0, n_prompts, batch_size):
        batch = _slice(tokens, start, start + batch_size)
        _, cache = probe.run_with_cache(batch, names=hook_names, unembed=False)
        stack = torch.stack([cache[name] for name in hook_names])  # [stream, batch, pos, d_model]
        if lens is not None:
            stack = lens.translate(stack, hook_names)
        for row in range(batch.ids.shape[0]):
            index = start + row
            real = batch.real_positions(row)
            ids = batch.ids[row, real].cpu()
            chosen = _choose_positions(positions, len(ids))
            target_ids = _target_ids(per_prompt_targets[index], ids, chosen)
            stats = read_out(stack[:, row, real][:, chosen.to(stack.device)], ln_f, W_U, k=k,
                             target_ids=target_ids, max_chunk_bytes=max_chunk_bytes)
            items.append(_prompt_lens(probe, batch, row, ids, chosen, labels, stats, target_ids))
        del cache, stack
        if progress is not None:
            progress(min(start + batch_size, n_prompts))
    metadata = {"lens": "logit lens"} if lens is None else {"lens": "tuned lens", "tuned_lens": repr(lens)}
    return LensResult(model_name=probe.cfg.model_name, items=items, k=k, include_mid=include_mid, metadata=metadata)


def _require_finite(streams: Tensor) -> None:
    """NaN logits compare false with everything, so a target's rank would read 0 (the top): refuse them."""
    bad = ~torch.isfinite(streams).all(-1)
    if bool(bad.any()):
        stream, pos = bad.nonzero()[0].tolist()
        raise InvalidArgumentError(
            f"the residual stream {stream} (0 = embeddings) at analysed position {pos} holds NaN or inf: "
            "the lens cannot rank or score it; a hook or the model's weights produced non-finite values"
        )


def _slice(tokens: Tokens, start: int, stop: int) -> Tokens:
    """Rows ``start:stop`` of a batch, with the left padding they no longer need removed."""
    mask = tokens.attention_mask[start:stop]
    keep = int(mask.sum(-1).max())
    prompts = tokens.prompts[start:stop] if tokens.prompts else None
    return Tokens(tokens.ids[start:stop, -keep:], mask[:, -keep:], prompts)


def _choose_positions(positions: Positions, n_tokens: int) -> Tensor:
    if positions is None:
        return torch.arange(n_tokens)
    if positions == "last":
        return torch.tensor([n_tokens - 1])
    if isinstance(positions, str):
        raise InvalidArgumentError(f"positions must be None, 'last', an int or a list of ints, got {positions!r}")
    wanted = validate.index_list("positions", positions)
    out = []
    for p in wanted:
        if not -n_tokens <= p < n_tokens:
            raise PromptError(f"position {p} is outside a prompt of {n_tokens} tokens (valid: {-n_tokens}..{n_tokens - 1})")
        out.append(p % n_tokens)
    return torch.tensor(out, dtype=torch.long)


def _per_prompt_targets(probe: GPT2Probe, targets: Targets, n_prompts: int) -> list[str | int | None]:
    return [t if t is None or t == NEXT_TOKEN else probe.to_single_token(t)
            for t in per_prompt(targets, n_prompts, "targets")]


def _target_ids(target: str | int | None, ids: Tensor, chosen: Tensor) -> Tensor | None:
    if target is None:
        return None
    if target == NEXT_TOKEN:
        following = torch.cat([ids[1:], torch.tensor([-1])])
        return following[chosen]
    return torch.full((len(chosen),), int(target), dtype=torch.long)


def token_strings(probe: GPT2Probe, ids: Tensor) -> list:
    """Decode every id of a tensor to its string, keeping the tensor's nesting (ids < 0 give '')."""
    flat = ids.flatten().tolist()
    table = {i: (probe.tokenizer.decode([i]) if i >= 0 else "") for i in set(flat)}
    strings = [table[i] for i in flat]
    for size in reversed(ids.shape[1:]):
        strings = [strings[j : j + size] for j in range(0, len(strings), size)]
    return strings


def _prompt_lens(probe: GPT2Probe, batch: Tokens, row: int, ids: Tensor, chosen: Tensor, labels: list[str],
                 stats: LensStats, target_ids: Tensor | None) -> PromptLens:
    prompt = batch.prompts[row] if batch.prompts else probe.to_string(ids.tolist())
    logprob, rank = stats.target_logprob, stats.target_rank  # present with target_ids: PromptLens checks it
    return PromptLens(
        prompt=prompt,
        str_tokens=token_strings(probe, ids),
        token_ids=ids,
        positions=chosen,
        stream_labels=labels,
        top_ids=stats.top_ids.cpu(),
        top_probs=stats.top_probs.cpu(),
        top_tokens=token_strings(probe, stats.top_ids.cpu()),
        entropy=stats.entropy.cpu(),
        kl_to_final=stats.kl_to_final.cpu(),
        target_ids=target_ids,
        target_tokens=token_strings(probe, target_ids) if target_ids is not None else None,
        target_prob=logprob.exp().cpu() if logprob is not None else None,
        target_logprob=logprob.cpu() if logprob is not None else None,
        target_rank=rank.cpu() if rank is not None else None,
    )
