"""Next-token predictions and text generation, with hooks active at every step.

:func:`next_token` is the table researchers build by hand from ``logits[0, -1]``.
:func:`generate` decodes with Hugging Face's KV cache: the prompt is run once, then each
step feeds only the new token. The sampling rule lives in pure functions
(:func:`filter_logits`, :func:`sampling_probs`, :func:`sample_tokens`) so that it can be
checked on a fixed logits vector.

Axes: ``new`` counts generated tokens; ``k`` the top-k predictions kept (see
:mod:`gpt2probe.axes` for the others).

Notes for hook writers: hooks passed to :func:`generate` run on the prompt pass (every
prompt position, ``pos = prompt length``) and then on every step, where the KV cache means
the activation holds only the new token (``pos = 1``; attention patterns are
``[batch, head, 1, key_pos]`` with ``key_pos`` the whole sequence so far). A hook that acts
on all positions alike (e.g. adding a steering vector to ``hook_resid_pre``) therefore acts
on every token; a hook that indexes positions sees only the new one at each step.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformers import GPT2LMHeadModel, PreTrainedTokenizerBase

from . import names as N
from . import validate
from .cache import ActivationCache
from .errors import InvalidArgumentError, InvalidTypeError, PromptError, ShapeError
from .model.config import ProbeConfig, model_eos_candidates
from .model.decoding import KVCache
from .model.hooks import HookFn, HookPoint, HookRegistry
from .model.weights import Weights
from .tokens import Inputs, Tokens, decode, special_id
from .validate import finite_result

Hooks = Mapping[str, HookFn] | Iterable[tuple[str, HookFn]]


@runtime_checkable
class ProbeLike(Protocol):
    """What generation needs of a probe: :class:`gpt2probe.probe.GPT2Probe` is one.

    A protocol rather than an import, so that ``probe.py`` can import this module to offer
    ``probe.generate`` and ``probe.next_token`` as methods without an import cycle.
    """

    model: GPT2LMHeadModel
    tokenizer: PreTrainedTokenizerBase
    weights: Weights
    registry: HookRegistry

    @property
    def cfg(self) -> ProbeConfig: ...

    def as_tokens(self, inputs: Inputs, *, prepend_bos: bool = False) -> Tokens: ...

    def forward(self, inputs: Inputs, *, prepend_bos: bool = False, grad: bool = False) -> Tensor: ...

    def hooks(self, fwd_hooks: Hooks) -> AbstractContextManager: ...

    def decode_step(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, kv_cache: KVCache | None = None, *,
        grad: bool = False,
    ) -> tuple[Tensor, KVCache]: ...


def require_probe(value: object) -> ProbeLike:
    """``value`` if it has what generation needs of a probe; otherwise an error saying how to make one."""
    if not isinstance(value, ProbeLike):
        hint = " (a model object: wrap it with gpt2probe.load(model))" if isinstance(value, torch.nn.Module) else ""
        raise InvalidTypeError(f"probe must be a GPT2Probe from gpt2probe.load(...), got {type(value).__name__}{hint}")
    return value

Seed = int | Sequence[int]
Number = float | int
_MAX_SEED = 2**63


# -- sampling rule ---------------------------------------------------------------------
def check_sampling(temperature: Number, top_k: int | None, top_p: Number | None) -> None:
    """Raise ``TypeError`` / ``ValueError`` naming the bad setting and what is valid."""
    if not validate.is_number(temperature):
        raise InvalidTypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if top_k is not None and not validate.is_number(top_k, (int,)):
        raise InvalidTypeError(f"top_k must be None or an integer, got {type(top_k).__name__}")
    if top_p is not None and not validate.is_number(top_p):
        raise InvalidTypeError(f"top_p must be None or a number, got {type(top_p).__name__}")
    if not math.isfinite(temperature) or temperature < 0:
        raise InvalidArgumentError(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and top_k < 1:
        raise InvalidArgumentError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise InvalidArgumentError(f"top_p must be None or a number in (0, 1], got {top_p!r}")


def filter_logits(
    logits: Float[Tensor, "*batch d_vocab"],
    *,
    temperature: Number = 1.0,
    top_k: int | None = None,
    top_p: Number | None = None,
) -> Float[Tensor, "*batch d_vocab"]:
    """The logits sampling draws from: scaled by ``1 / temperature``, filtered tokens set to ``-inf``.

    Applied in this order (as Hugging Face's warpers): temperature, then top-k, then top-p
    on the distribution top-k left.

    - ``temperature == 0``: only the argmax is kept (greedy; the first index on ties).
    - ``top_k``: keeps the tokens whose logit is among the k highest (tokens tied with the
      k-th logit are kept too, so that the result does not depend on sort order).
    - ``top_p`` (nucleus): keeps the smallest set of most probable tokens whose total
      probability is ``>= top_p`` -- always at least one token; tokens tied with the least
      probable kept one are kept too. ``top_p == 1`` keeps everything.

    Computed in float32 (or float64 if given); the input is not modified.
    """
    check_sampling(temperature, top_k, top_p)
    logits = logits if logits.dtype == torch.float64 else logits.float()
    if temperature == 0:
        keep = F.one_hot(logits.argmax(-1), logits.shape[-1]).bool()
        return logits.masked_fill(~keep, -math.inf)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1:
        probs = logits.softmax(-1)
        sorted_probs = probs.sort(dim=-1, descending=True).values
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        # The last sorted token still needed is the one whose preceding mass is < top_p.
        n_keep = (mass_before < top_p).sum(-1, keepdim=True).clamp(min=1)
        threshold = sorted_probs.gather(-1, n_keep - 1)
        logits = logits.masked_fill(probs < threshold, -math.inf)
    return logits


def sampling_probs(
    logits: Float[Tensor, "*batch d_vocab"],
    *,
    temperature: Number = 1.0,
    top_k: int | None = None,
    top_p: Number | None = None,
) -> Float[Tensor, "*batch d_vocab"]:
    """The distribution :func:`sample_tokens` draws from: ``softmax(filter_logits(...))``."""
    return filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p).softmax(-1)


def sample_tokens(
    logits: Float[Tensor, "batch d_vocab"],
    *,
    temperature: Number = 1.0,
    top_k: int | None = None,
    top_p: Number | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Int[Tensor, " batch"]:
    """One token per row: the argmax if ``temperature == 0``, else a draw from :func:`sampling_probs`.

    ``generator`` is one CPU ``torch.Generator`` for the whole batch, or a list with one per
    row (row ``i`` then draws from ``generator[i]`` only, whatever the other rows are).
    Draws are made on the CPU, so a seed gives the same draws on every device for the same
    logits. Greedy decoding draws nothing.
    """
    if temperature == 0:
        check_sampling(temperature, top_k, top_p)
        return logits.argmax(-1).cpu()
    probs = sampling_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p).cpu()
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator)[:, 0]
    if len(generator) != probs.shape[0]:
        raise ShapeError(f"{len(generator)} generators for {probs.shape[0]} rows: give one per row, or one for all")
    return torch.cat([torch.multinomial(probs[i : i + 1], 1, generator=g)[:, 0] for i, g in enumerate(generator)])


# -- next-token predictions -----------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class NextTokens:
    """The top-k next tokens after each prompt's last token.

    ``probs`` are the full softmax over the vocabulary (they do not sum to 1 over the k
    shown); ``logits`` are the raw logits. Row ``i`` belongs to ``prompts[i]``.
    """

    prompts: list[str]
    ids: Int[Tensor, "batch k"]
    tokens: list[list[str]]
    probs: Float[Tensor, "batch k"]
    logits: Float[Tensor, "batch k"]

    def __post_init__(self) -> None:
        batch, k = self.ids.shape
        if len(self.prompts) != batch or len(self.tokens) != batch or any(len(row) != k for row in self.tokens):
            raise ShapeError(f"prompts and tokens must be nested [batch={batch}][k={k}]")

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def k(self) -> int:
        return self.ids.shape[1]

    def top1(self, index: int = 0) -> tuple[str, float]:
        """The most likely next token of prompt ``index`` and its probability."""
        return self.tokens[index][0], float(self.probs[index, 0])

    def table(self, index: int = 0) -> str:
        """A plain-text table of prompt ``index``'s predictions (token strings shown with ``repr``)."""
        shown = [repr(t) for t in self.tokens[index]]
        width = max([5, *map(len, shown)])
        lines = [f"next token after {self.prompts[index]!r}", f"{'rank':>4}  {'token':<{width}}  {'id':>6}  {'prob':>7}  {'logit':>8}"]
        for rank, token in enumerate(shown):
            lines.append(
                f"{rank + 1:>4}  {token:<{width}}  {int(self.ids[index, rank]):>6}  "
                f"{float(self.probs[index, rank]):>7.4f}  {float(self.logits[index, rank]):>8.3f}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n\n".join(self.table(i) for i in range(len(self)))

    def __repr__(self) -> str:
        from .display.tables import short

        rows = [f"  {short(p, 40)} -> " + ", ".join(f"{t!r} {float(q):.3g}" for t, q in zip(self.tokens[i][:3], self.probs[i][:3]))
                for i, p in enumerate(self.prompts[:4])]
        more = [f"  ... {len(self) - 4} more prompts"] if len(self) > 4 else []
        return "\n".join([f"NextTokens({len(self)} prompts, k={self.k}; top 3 with probabilities; print() for the table)", *rows, *more])

    def _repr_html_(self) -> str:
        """One column per prompt (up to 8), one row per rank: token and probability."""
        from .display.tables import Tok, table

        shown = range(min(len(self), 8))
        headers = ["rank"] + [h for i in shown for h in (f"[{i}] token", "prob")]
        rows = [[rank + 1] + [c for i in shown for c in (Tok(self.tokens[i][rank]), float(self.probs[i, rank]))]
                for rank in range(self.k)]
        notes = [f"[{i}] {p!r}" for i, p in enumerate(self.prompts[:8])]
        if len(self) > 8:
            notes.append(f"... {len(self) - 8} more prompts (print() shows every one)")
        return table(f"Next tokens ({len(self)} prompts, k={self.k})", headers, rows, notes=notes)


def _prompt_texts(probe: ProbeLike, tokens: Tokens) -> list[str]:
    if tokens.prompts is not None:
        return list(tokens.prompts)
    return [decode(probe.tokenizer, tokens.ids[i, tokens.real_positions(i)].tolist()) for i in range(tokens.ids.shape[0])]


def next_token(probe: ProbeLike, prompt: Inputs, k: int = 10, *, prepend_bos: bool = False) -> NextTokens:
    """The ``k`` most likely next tokens after one prompt or each of a batch (with active hooks).

    A batch is left-padded, so each row's prediction is read at its own last real token.
    """
    require_probe(probe)
    if not validate.is_number(k, (int,)):
        raise InvalidTypeError(f"k must be an integer, got {type(k).__name__}")
    if not 1 <= k <= probe.cfg.d_vocab:
        raise InvalidArgumentError(f"k must be an integer in [1, {probe.cfg.d_vocab}] (the vocabulary size), got {k!r}")
    tokens = probe.as_tokens(prompt, prepend_bos=prepend_bos)
    last = finite_result("the next-token logits", probe.forward(tokens)[:, -1].float())  # topk over NaN is arbitrary
    top = last.topk(k, dim=-1)
    probs = last.softmax(-1).gather(-1, top.indices)
    ids = top.indices.cpu()
    return NextTokens(
        prompts=_prompt_texts(probe, tokens),
        ids=ids,
        tokens=[[decode(probe.tokenizer, [i]) for i in row] for row in ids.tolist()],
        probs=probs.cpu(),
        logits=top.values.cpu(),
    )


# -- generation ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False, repr=False)
class Generation:
    """What :func:`generate` produced, one row per prompt.

    ``new_ids[i, j]`` is the j-th token generated for prompt i; ``new_mask[i, j]`` is False
    after the row stopped (the EOS that stopped it is kept and counted); masked entries
    repeat the row's EOS. ``texts`` are prompt + continuation, ``continuations`` the kept new
    tokens alone, both decoded as is (an EOS shows as ``<|endoftext|>``).

    ``captures`` (when asked for) holds each captured activation over every position the
    model ran: the (left-padded) prompt, then one position per step; its ``tokens`` are
    those fed tokens. ``captures[name][:, -n_new:]`` (see :meth:`step_activations`) are the
    positions whose outputs chose each new token. ``seeds`` are the per-row seeds used
    (``None`` for greedy decoding): pass them back to reproduce a sampled run.
    """

    prompts: list[str]
    prompt_tokens: Tokens
    new_ids: Int[Tensor, "batch new"]
    new_mask: Bool[Tensor, "batch new"]
    finished: Bool[Tensor, " batch"]
    texts: list[str]
    continuations: list[str]
    seeds: tuple[int, ...] | None = None
    captures: ActivationCache | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def n_new(self) -> int:
        """Generation steps taken (fewer than ``max_new_tokens`` if every row stopped at EOS)."""
        return self.new_ids.shape[1]

    def new_tokens(self, index: int) -> Int[Tensor, " new"]:
        """The kept new token ids of prompt ``index`` (through its EOS, if it stopped)."""
        return self.new_ids[index][self.new_mask[index]]

    def sequence(self, index: int) -> Int[Tensor, " pos"]:
        """Prompt ``index``'s own tokens followed by its kept new tokens."""
        prompt = self.prompt_tokens.ids[index, self.prompt_tokens.real_positions(index)]
        return torch.cat([prompt, self.new_tokens(index)])

    def step_activations(self, name: str) -> Tensor:
        """A captured activation at the positions whose outputs chose each new token.

        ``[batch, new, ...]`` (``[batch, head, new, key_pos]`` for attention scores and patterns).
        """
        if self.captures is None:
            raise InvalidArgumentError("nothing was captured: pass capture=... to generate")
        tensor = self.captures[name]
        dim = 2 if _is_attention(name) else 1
        return tensor.narrow(dim, tensor.shape[dim] - self.n_new, self.n_new)

    def __str__(self) -> str:
        mode = "greedy" if self.seeds is None else f"sampled, seeds {list(self.seeds)}"
        lines = [f"Generation({len(self)} prompts, {self.n_new} steps, {mode})"]
        lines += [f"[{i}] {p!r} -> {c!r}" for i, (p, c) in enumerate(zip(self.prompts, self.continuations))]
        return "\n".join(lines)

    def __repr__(self) -> str:
        from .display.tables import short

        mode = "greedy" if self.seeds is None else "sampled"
        captured = f", {len(self.captures)} captures" if self.captures is not None else ""
        lines = [f"Generation({len(self)} prompts, {self.n_new} steps, {mode}{captured})"]
        lines += [f"  [{i}] {short(p, 30)} -> {short(c, 50)}" for i, (p, c) in enumerate(zip(self.prompts[:4], self.continuations))]
        if len(self) > 4:
            lines.append(f"  ... {len(self) - 4} more (print() shows every one)")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """One row per prompt: the prompt, its continuation, new tokens kept, whether it stopped at EOS."""
        from .display.tables import table

        rows = [[i, p, c, int(self.new_mask[i].sum()), bool(self.finished[i])]
                for i, (p, c) in enumerate(zip(self.prompts, self.continuations))]
        mode = "greedy" if self.seeds is None else f"sampled, seeds {list(self.seeds)}"
        return table(f"Generation ({self.n_new} steps, {mode})", ["#", "prompt", "continuation", "new tokens", "stopped at EOS"], rows)


def _is_attention(name: str) -> bool:
    return N.is_attention_map(name)


def _row_seeds(seed: Seed | None, batch: int) -> tuple[int, ...]:
    if seed is None:
        seed = secrets.randbits(62)
    if isinstance(seed, int) and validate.is_number(seed, (int,)):
        seeds = tuple(seed + i for i in range(batch))
    elif isinstance(seed, str | bytes) or not isinstance(seed, Sequence):
        raise InvalidTypeError(f"seed must be an integer or a list of one integer per prompt, got {type(seed).__name__} {seed!r}")
    else:
        seeds = tuple(seed)
        if len(seeds) != batch:
            raise InvalidArgumentError(
                f"seed is a list of {len(seeds)} seeds but there are {batch} prompts: give one per prompt, or one int"
            )
    for s in seeds:
        if not validate.is_number(s, (int,)) or not 0 <= s < _MAX_SEED:
            raise InvalidArgumentError(f"seeds must be integers in [0, 2**63), got {s!r}")
    return seeds


def _eos_ids(probe: ProbeLike, eos_token_id: int | Sequence[int] | None) -> Tensor:
    """The EOS ids: given, else the first set of the model's generation config, its config, the tokenizer.

    Default ids outside the vocabulary (a tokenizer's ``<|endoftext|>`` on a small-vocabulary
    model) are dropped: such a model never stops early.
    """
    d_vocab = probe.cfg.d_vocab
    if eos_token_id is not None:
        ids = [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
        if isinstance(ids, str | bytes | Tensor) or not isinstance(ids, Sequence):
            raise InvalidTypeError(f"eos_token_id must be a token id or a list of ids, got {type(eos_token_id).__name__}")
        for i in ids:
            validate.integer("eos_token_id", i)
        bad = [i for i in ids if not 0 <= i < d_vocab]
        if bad:
            raise InvalidArgumentError(f"eos_token_id {bad} is outside the vocabulary [0, {d_vocab})")
        return torch.tensor(ids, dtype=torch.long)
    candidates = (*model_eos_candidates(probe.model), special_id(probe.tokenizer, "eos"))
    found = next((c for c in candidates if c is not None), None)
    if found is None:
        ids = []
    elif isinstance(found, int):
        ids = [found]
    elif isinstance(found, list | tuple) and all(isinstance(i, int) for i in found):
        ids = list(found)
    else:
        raise InvalidArgumentError(
            f"the model's eos_token_id is {found!r}, neither a token id nor a list of ids: pass eos_token_id=..."
        )
    return torch.tensor([i for i in ids if 0 <= i < d_vocab], dtype=torch.long)


def _check_generate(probe: ProbeLike, tokens: Tokens, max_new_tokens: int) -> None:
    if not validate.is_number(max_new_tokens, (int,)):
        raise InvalidTypeError(f"max_new_tokens must be an integer, got {type(max_new_tokens).__name__}")
    if max_new_tokens < 0:
        raise InvalidArgumentError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    n_prompt, n_ctx = tokens.ids.shape[1], probe.cfg.n_ctx
    if n_prompt + max_new_tokens > n_ctx:
        longest = "the prompt has" if tokens.ids.shape[0] == 1 else "the longest prompt has"
        raise PromptError(
            f"{longest} {n_prompt} tokens and max_new_tokens={max_new_tokens} would make {n_prompt + max_new_tokens}, "
            f"but the model's context holds n_ctx={n_ctx}: ask for at most {max(n_ctx - n_prompt, 0)} new tokens"
        )


def _concat_steps(name: str, parts: list[Tensor], total: int) -> Tensor:
    """Per-pass captures joined along positions; attention gets its future keys filled in."""
    if not _is_attention(name):
        return torch.cat(parts, dim=1)
    fill = 0.0 if name.endswith("hook_pattern") else torch.finfo(parts[0].dtype).min
    return torch.cat([F.pad(p, (0, total - p.shape[-1]), value=fill) for p in parts], dim=2)


def _check_greedy(greedy: object, temperature: Number, top_k: int | None, top_p: Number | None, seed: object) -> None:
    """``greedy=True`` takes the argmax: a sampling option given with it would be ignored, so it is refused."""
    if not validate.boolean("greedy", greedy):
        return
    given = [f"{name}={value!r}" for name, value, unused in (
        ("temperature", temperature, temperature not in (0, 1)),
        ("top_k", top_k, top_k is not None),
        ("top_p", top_p, top_p is not None),
        ("seed", seed, seed is not None),
    ) if unused]
    if given:
        raise InvalidArgumentError(
            f"greedy=True takes the argmax at every step, so {', '.join(given)} would be ignored: "
            "drop greedy=True to sample with them, or drop them for greedy decoding"
        )


@torch.no_grad()
def generate(
    probe: ProbeLike,
    prompt_or_prompts: Inputs,
    max_new_tokens: int,
    *,
    temperature: Number = 1.0,
    top_k: int | None = None,
    top_p: Number | None = None,
    greedy: bool = False,
    seed: Seed | None = None,
    stop_at_eos: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    hooks: Hooks | None = None,
    capture: N.NameSelection = None,
    prepend_bos: bool = False,
) -> Generation:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Args:
        prompt_or_prompts: a string, a list of strings (left-padded; each row continues
            from its own last token and its own positions), token ids, or :class:`Tokens`.
        temperature, top_k, top_p: the sampling rule of :func:`filter_logits`.
        greedy: take the argmax at every step (also when ``temperature == 0``).
        seed: row ``i`` of a batch draws from its own CPU ``torch.Generator`` seeded with
            ``seed + i`` (or ``seed[i]`` for a list), so it reproduces a single-prompt run
            with that seed; the global RNG is never used. ``None`` picks a fresh seed,
            reported in ``Generation.seeds``.
        stop_at_eos: a row that emits EOS stops: its later tokens are masked out, and
            generation ends when every row has stopped.
        eos_token_id: overrides the EOS id(s) (default: the model's generation config, then
            its config, then the tokenizer's ``<|endoftext|>``).
        hooks: ``{name: fn}`` or ``[(name, fn)]`` as in :meth:`GPT2Probe.hooks`, active for
            the prompt pass and every step (see the module notes: steps have ``pos = 1``).
        capture: hook names to record on every pass (a list, glob, regex or predicate as in
            ``run_with_cache``); captures see the activations after ``hooks`` edited them.

    ``n`` new tokens take ``n`` forward passes: the prompt, then ``n - 1`` one-token steps
    with the KV cache (the last token is never fed back).
    """
    require_probe(probe)
    tokens = probe.as_tokens(prompt_or_prompts, prepend_bos=prepend_bos).to("cpu")
    _check_generate(probe, tokens, max_new_tokens)
    check_sampling(temperature, top_k, top_p)
    _check_greedy(greedy, temperature, top_k, top_p, seed)
    validate.boolean("stop_at_eos", stop_at_eos)
    captured = N.resolve(capture, probe.registry.valid_names) if capture is not None else []
    greedy = greedy or temperature == 0
    batch = tokens.ids.shape[0]
    seeds = None if greedy else _row_seeds(seed, batch)
    generators = [] if seeds is None else [torch.Generator().manual_seed(s) for s in seeds]
    eos = _eos_ids(probe, eos_token_id)

    def choose(logits: Tensor) -> Tensor:
        finite_result(f"the logits of new token {len(steps)}", logits)  # argmax over NaN picks arbitrarily
        if greedy:
            return logits.argmax(-1).cpu()
        return sample_tokens(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generators)

    store: dict[str, list[Tensor]] = {name: [] for name in captured}

    def record(tensor: Tensor, hook: HookPoint) -> None:
        store[hook.name].append(tensor.detach())

    device = probe.cfg.device
    run = tokens.to(device)
    input_ids, attention_mask, position_ids = run.ids, run.attention_mask, run.position_ids
    next_position = position_ids[:, -1:] + 1
    past = None
    steps: list[Tensor] = []
    kept: list[Tensor] = []
    finished = torch.zeros(batch, dtype=torch.bool)
    user_hooks = probe.hooks(hooks) if hooks is not None else nullcontext()
    with user_hooks, probe.registry.using((name, record) for name in captured):
        for step in range(max_new_tokens):
            logits, past = probe.decode_step(input_ids, attention_mask, position_ids, past)
            new = choose(logits)
            if steps:
                new = torch.where(finished, steps[-1], new)  # stopped rows repeat their EOS
            kept.append(~finished)
            steps.append(new)
            if stop_at_eos:
                finished = finished | torch.isin(new, eos)
            if step == max_new_tokens - 1 or bool(finished.all()):
                break
            input_ids = new[:, None].to(device)
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
            position_ids, next_position = next_position, next_position + 1

    new_ids = torch.stack(steps, dim=1) if steps else torch.zeros((batch, 0), dtype=torch.long)
    new_mask = torch.stack(kept, dim=1) if kept else torch.zeros((batch, 0), dtype=torch.bool)
    prompts = _prompt_texts(probe, tokens)
    decode = probe.tokenizer.decode
    continuations, texts = [], []
    for i in range(batch):
        new_i = new_ids[i][new_mask[i]].tolist()
        continuations.append(decode(new_i))
        texts.append(decode(tokens.ids[i, tokens.real_positions(i)].tolist() + new_i))
    captures = None
    if captured:
        fed = torch.cat([tokens.ids, new_ids[:, :-1]], dim=1)  # the last new token is never run
        mask = torch.cat([tokens.attention_mask, torch.ones_like(new_ids[:, :-1])], dim=1)
        data = {name: _concat_steps(name, parts, fed.shape[1]) for name, parts in store.items() if parts}
        fed_tokens = Tokens(fed, mask, tokens.prompts)
        captures = ActivationCache(data, n_layers=probe.cfg.n_layers, model_name=probe.cfg.model_name, tokens=fed_tokens,
                                   weights=probe.weights)
    return Generation(
        prompts=prompts,
        prompt_tokens=tokens,
        new_ids=new_ids,
        new_mask=new_mask,
        finished=finished,
        texts=texts,
        continuations=continuations,
        seeds=seeds,
        captures=captures,
    )
