"""Compare a base GPT-2 with its fine-tune on the same prompts: :func:`compare` -> :class:`ModelDiff`.

Two forward passes (one per model, same tokens) give the next-token KL at every real
position, the residual-stream change per layer and the lens view; the head scores and
the cross-model patching sweep (:mod:`gpt2probe.diffing.localise`) add their own runs and
can be switched off. Every divergence is KL(base || tuned) in nats, computed in float64
from both models' logits (:func:`gpt2probe.divergence.kl_from_logits`: never negative, exact
where it is small), so a model compared with itself gives exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from .. import names as N
from .. import validate
from ..divergence import kl_from_logits
from ..errors import InvalidArgumentError, NonFiniteError
from ..head_scores import all_head_scores
from ..lens.logit_lens import stream_labels
from ..probe import GPT2Probe, Inputs, require_probe
from ..tokens import Tokens
from .localise import Localisation, localise
from .weight_changes import check_comparable, component_changes

DEFAULT_TOP_DISAGREEMENTS = 10


@dataclass(frozen=True)
class Disagreement:
    """One position where the two models' next-token distributions differ: the context ends at ``token``."""

    prompt: int
    position: int
    token: str
    kl: float
    base_top: str
    tuned_top: str


@dataclass(frozen=True)
class ModelDiff:
    """What changed between ``base`` and ``tuned``, on weights and on the given prompts.

    Streams (``stream_labels``) are the embedding and each block's output, as in the logit lens.
    """

    base_name: str
    tuned_name: str
    str_tokens: list[list[str]]
    """Each prompt's real tokens."""
    weight_changes: dict[str, float]
    """Component -> relative Frobenius change (see :func:`~gpt2probe.diffing.weight_changes`)."""
    kl: list[Float[Tensor, " pos"]]
    """Per prompt, KL(base || tuned) of the next-token distributions at each real position."""
    disagreements: list[Disagreement]
    """The positions with the largest KL, largest first."""
    stream_labels: list[str]
    resid_change: Float[Tensor, " stream"]
    """``||x_tuned - x_base|| / ||x_base||`` per stream, averaged over real positions and prompts."""
    lens_kl: Float[Tensor, " stream"] | None = None
    """KL(base lens || tuned lens) per stream, each model read through its own ``ln_f`` and ``W_U``
    (``None`` when ``compare(..., lens=False)``)."""
    lens_agreement: Float[Tensor, " stream"] | None = None
    """Fraction of real positions where the two lenses' top-1 tokens agree, per stream (``None`` without the lens)."""
    head_scores_base: dict[str, Float[Tensor, "layer head"]] = field(default_factory=dict)
    head_scores_tuned: dict[str, Float[Tensor, "layer head"]] = field(default_factory=dict)
    localisation: Localisation | None = None

    @property
    def mean_kl(self) -> float:
        """KL(base || tuned) averaged over every real position of every prompt."""
        values = torch.cat(self.kl)
        return float(values.mean()) if values.numel() else 0.0

    @property
    def first_departure(self) -> int | None:
        """The first stream at which the lenses' top-1 predictions disagree anywhere (``None``: never)."""
        if self.lens_agreement is None:
            return None
        below = (self.lens_agreement < 1.0).nonzero()
        return int(below[0]) if below.numel() else None

    @property
    def head_score_deltas(self) -> dict[str, Float[Tensor, "layer head"]]:
        """``tuned - base`` for each head score."""
        return {k: self.head_scores_tuned[k] - self.head_scores_base[k] for k in self.head_scores_base}

    def changed_components(self, threshold: float = 0.0) -> list[str]:
        """Components whose relative change exceeds ``threshold``, in forward order."""
        return [name for name, change in self.weight_changes.items() if change > threshold]

    def __repr__(self) -> str:
        changed = self.changed_components()
        if self.lens_agreement is None:
            departure = "(lens view skipped)"
        else:
            departure = "never" if self.first_departure is None else self.stream_labels[self.first_departure]
        return (
            f"ModelDiff({self.base_name!r} -> {self.tuned_name!r}: {len(changed)} of {len(self.weight_changes)} "
            f"components changed, mean KL {self.mean_kl:.4g} nats over {len(self.kl)} prompt(s), "
            f"lens first departs at {departure})"
        )


def compare(
    base: GPT2Probe,
    tuned: GPT2Probe,
    prompts: Inputs,
    *,
    head_scores: bool = True,
    patching: bool = True,
    patch_heads: bool = True,
    lens: bool = True,
    top_disagreements: int = DEFAULT_TOP_DISAGREEMENTS,
    prepend_bos: bool = False,
) -> ModelDiff:
    """Compare two checkpoints of one architecture and tokenizer on ``prompts``.

    Args:
        base, tuned: probes of the two models (e.g. ``gpt2probe.load("gpt2")`` and a fine-tune).
        prompts: text, a list of texts, token ids or :class:`~gpt2probe.Tokens`.
        head_scores: also score every head (previous-token, first-token, induction) in both.
        patching: also localise the change by patching base activations into the tuned run
            (each layer's attention and MLP output, and each head when ``patch_heads``).
        lens: also read every stream of both models through their logit lenses (KL and top-1
            agreement per stream): one projection onto the vocabulary per stream and model,
            about the cost of two logit lenses; ``False`` leaves the two forward passes alone.
        top_disagreements: how many positions to list in :attr:`ModelDiff.disagreements`.
    """
    for flag, value in (("head_scores", head_scores), ("patching", patching), ("patch_heads", patch_heads), ("lens", lens)):
        validate.boolean(flag, value)
    require_probe(base, "base")
    require_probe(tuned, "tuned")
    check_comparable(base, tuned)
    if not isinstance(top_disagreements, int) or isinstance(top_disagreements, bool) or top_disagreements < 0:
        raise InvalidArgumentError(f"top_disagreements must be a non-negative int, got {top_disagreements!r}")
    tokens = base.as_tokens(prompts, prepend_bos=prepend_bos)
    changes = component_changes(base.model, tuned.model)  # first: a NaN weight is named by its component
    n_layers = base.cfg.n_layers
    streams = [N.resid_pre(0), *(N.resid_post(layer) for layer in range(n_layers))]
    base_logits, base_cache = base.run_with_cache(tokens, names=streams, device="cpu", dtype=torch.float32)
    tuned_logits, tuned_cache = tuned.run_with_cache(tokens, names=streams, device="cpu", dtype=torch.float32)
    real = tokens.attention_mask.bool().cpu()
    for which, logits, cache in (("base", base_logits, base_cache), ("tuned", tuned_logits, tuned_cache)):
        for name in streams:
            _require_finite(cache[name], real, f"the {which} model's {name}")
        _require_finite(logits, real, f"the {which} model's logits")

    kl_grid = _kl(base_logits.float().cpu(), tuned_logits.float().cpu())
    _require_finite(kl_grid, real, "KL(base || tuned)")
    kl = [kl_grid[row][real[row]] for row in range(real.shape[0])]
    str_tokens = [base.to_str_tokens(tokens.ids[row][real[row]]) for row in range(real.shape[0])]
    disagreements = _disagreements(base, kl_grid, real, base_logits, tuned_logits, tokens, top_disagreements)

    resid_change, lens_kl, agreement = [], [], []
    for name in streams:
        x_base, x_tuned = base_cache[name], tuned_cache[name]
        norms = (x_tuned - x_base).norm(dim=-1) / x_base.norm(dim=-1).clamp_min(torch.finfo(torch.float32).tiny)
        resid_change.append(norms[real].mean())
        if not lens:
            continue
        if name == streams[-1]:  # the last stream through ln_f and W_U is the models' own logits
            lens_base, lens_tuned = base_logits.float().cpu(), tuned_logits.float().cpu()
        else:
            lens_base, lens_tuned = _lens_logits(base, x_base), _lens_logits(tuned, x_tuned)
        lens_kl.append(_kl(lens_base, lens_tuned)[real].mean())
        agreement.append((lens_base.argmax(-1) == lens_tuned.argmax(-1))[real].float().mean())

    scores_base = scores_tuned = {}
    if head_scores:
        scores_base = _head_scores(base, tokens)
        scores_tuned = _head_scores(tuned, tokens)
    localisation = localise(base, tuned, tokens, base_logits, heads=patch_heads) if patching else None
    return ModelDiff(
        base_name=base.cfg.model_name,
        tuned_name=tuned.cfg.model_name,
        str_tokens=str_tokens,
        weight_changes=changes,
        kl=kl,
        disagreements=disagreements,
        stream_labels=stream_labels(n_layers, include_mid=False),
        resid_change=torch.stack(resid_change),
        lens_kl=torch.stack(lens_kl) if lens else None,
        lens_agreement=torch.stack(agreement) if lens else None,
        head_scores_base=scores_base,
        head_scores_tuned=scores_tuned,
        localisation=localisation,
    )


def _require_finite(values: Tensor, real: Tensor, what: str) -> None:
    """Refuse NaN or infinite values at real positions: summarised, they would read as "no change" or rank arbitrarily."""
    bad = ~torch.isfinite(values.cpu())
    bad = (bad.reshape(*bad.shape[:2], -1).any(-1) if bad.ndim > 2 else bad) & real
    if bool(bad.any()):
        row, pos = bad.nonzero()[0].tolist()
        raise NonFiniteError(
            f"{what} holds NaN or infinite values at {int(bad.sum())} real position(s), the first in prompt {row} at "
            f"position {pos - int((~real[row]).sum())}: compare cannot summarise them (a weight, a hook or reduced "
            "precision produced them)")


def kl_divergence(
    base_logits: Float[Tensor, "... d_vocab"], tuned_logits: Float[Tensor, "... d_vocab"]
) -> Float[Tensor, "..."]:
    """KL(base || tuned) in nats over the last axis, from logits, in float64 (never negative)."""
    return _kl(base_logits, tuned_logits)


def _kl(base_logits: Tensor, tuned_logits: Tensor) -> Tensor:
    return kl_from_logits(base_logits, tuned_logits)


@torch.no_grad()
def _lens_logits(probe: GPT2Probe, stream: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
    """The logit lens of one stream through the probe's own final norm and unembedding, in float32 on the CPU."""
    ln_f = probe.weights.ln_final.to("cpu", torch.float32)
    normalized = ln_f(stream.float())
    return normalized @ probe.W_U.float().cpu()


def _disagreements(probe: GPT2Probe, kl_grid: Tensor, real: Tensor, base_logits: Tensor, tuned_logits: Tensor,
                   tokens: Tokens, top: int) -> list[Disagreement]:
    flat = torch.where(real, kl_grid, torch.full_like(kl_grid, -torch.inf)).flatten()
    count = min(top, int(real.sum()))
    values, order = flat.topk(count) if count else (flat[:0], flat[:0].long())
    n_pos, found = kl_grid.shape[1], []
    for value, index in zip(values.tolist(), order.tolist()):
        row, pos = divmod(index, n_pos)
        first_real = int((~real[row]).sum())
        found.append(Disagreement(
            prompt=row,
            position=pos - first_real,
            token=probe.to_str_tokens([int(tokens.ids[row, pos])])[0],
            kl=value,
            base_top=probe.to_str_tokens([int(base_logits[row, pos].argmax())])[0],
            tuned_top=probe.to_str_tokens([int(tuned_logits[row, pos].argmax())])[0],
        ))
    return found


def _head_scores(probe: GPT2Probe, tokens: Tokens) -> dict[str, Tensor]:
    scores = all_head_scores(probe, tokens, induction=True)
    return {key: scores[key] for key in ("previous_token", "first_token", "induction")}
