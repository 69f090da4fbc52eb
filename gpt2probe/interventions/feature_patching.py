"""Which features carry a behaviour: exact and attribution patching over an SAE's (or transcoder's) features.

The unit of :func:`gpt2probe.interventions.patch` is a head or a position of a stream;
here it is one feature of a spliced SAE, at every position (or at each position with
``per_position=True``). The SAE is spliced with its error term, so the base run computes
exactly what the model computes and a patch changes only the patched feature's write.

``feature_patch``: for each feature, rerun the base prompt with that feature's activation
taken from the source run (``direction="denoise"``: corrupted base, clean source). Patched
runs are stacked ``batch_size`` at a time into one forward pass.

``feature_attribution``: the first-order estimate of every feature at once from one
forward and one backward pass (Nanda 2023's attribution patching, as
:func:`gpt2probe.interventions.attribution_patch` computes it for heads):
``base_metric + sum over positions of (a_source - a_base) * d metric / d a``.

Values are normalised as :func:`~gpt2probe.interventions.patch` normalises them (clean 1,
corrupted 0) unless ``normalize=False``; :meth:`FeatureEffects.top` ranks features by how
far they move the metric from the base run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import InvalidArgumentError, InvalidTypeError, ShapeError
from ..probe import GPT2Probe
from ..sae.config import SAEConfig, check_fits
from ..tokens import Inputs, Tokens
from ..validate import boolean, index_below, integer
from .attribution_patching import prepare
from .patching import Metric


@dataclass(frozen=True)
class FeatureEffects:
    """Patching results per feature: ``values [d_sae]`` (or ``[pos, d_sae]`` per position).

    Attributes:
        hook: the spliced module's ``cfg.hook_name`` (its features are ``"<hook>.hook_sae_acts_post"``).
        method: ``"exact"`` or ``"atp"``.
        features: the feature indices ``values`` covers (its last axis), in order.
        clean_metric, corrupted_metric: the metric on each unpatched run.
        base: the value of an unpatched base run on ``values``'s scale (0 for denoise, 1 for noise when normalised).
    """

    hook: str
    method: str
    values: Float[Tensor, "*pos n_features"]
    features: tuple[int, ...]
    clean_metric: float
    corrupted_metric: float
    normalized: bool
    base: float

    def __post_init__(self) -> None:
        if self.values.shape[-1] != len(self.features):
            raise ShapeError(f"values has {self.values.shape[-1]} entries on its last axis but {len(self.features)} features")
        if not torch.isfinite(self.values).all():
            raise InvalidArgumentError("a patched metric is not finite (NaN or inf): check the metric and the SAE")

    def top(self, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` features (summed over positions, if per position) that move the metric most, with their value."""
        k = integer("k", k, minimum=0)  # a slice bound: k=-1 would silently drop the least important feature
        values = self.values if self.values.ndim == 1 else self.values.sum(0) - (self.values.shape[0] - 1) * self.base
        order = (values - self.base).abs().argsort(descending=True, stable=True)[:k]
        return [(self.features[i], float(values[i])) for i in order.tolist()]

    def __repr__(self) -> str:
        best = ", ".join(f"{f}: {v:.3g}" for f, v in self.top(3))
        return f"FeatureEffects({self.hook!r}, {self.method}, {len(self.features)} features; top {best})"


def _scalar(value: Tensor | float) -> Tensor:
    value = torch.as_tensor(value)
    if value.numel() != 1:
        raise ShapeError(f"the metric must return one number per run, got shape {tuple(value.shape)}")
    return value.reshape(())


def _acts_name(sae: Any) -> str:
    return f"{sae.cfg.hook_name}.hook_sae_acts_post"


def _source_acts(probe: GPT2Probe, sae: Any, tokens: Tokens) -> Tensor:
    _, cache = probe.run_with_cache_with_saes(tokens, saes=[sae], names=[_acts_name(sae)], use_error_term=True)
    return cache[_acts_name(sae)]


def _metrics(probe: GPT2Probe, prep: Any) -> tuple[float, float]:
    return float(_scalar(prep.metric(probe(prep.clean)))), float(_scalar(prep.metric(probe(prep.corrupted))))


def _normalise(raw: Tensor, clean: float, corrupted: float, normalize: bool) -> Tensor:
    if not normalize:
        return raw
    if clean == corrupted:
        raise InvalidArgumentError(f"the clean and corrupted runs give the same metric ({clean:.4g}): nothing to normalise "
                                   "by; pass normalize=False")
    return (raw - corrupted) / (clean - corrupted)


def _wanted(d_sae: int, features: Sequence[int] | None) -> list[int] | None:
    """The features asked for, checked before any run (``None``: those whose activations differ, found later)."""
    if features is None:
        return None
    if isinstance(features, Tensor) and features.ndim == 1:
        features = features.tolist()
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
        raise InvalidTypeError(f"features must be a list of feature indices (or None for those that differ), got "
                               f"{type(features).__name__}")
    # int(1.7) would patch feature 1, and -1 the last feature: each must be an integer in 0..d_sae-1
    return [index_below(f"features[{i}]", f, d_sae) for i, f in enumerate(features)]


def _features(wanted: list[int] | None, source: Tensor, base: Tensor) -> list[int]:
    if wanted is not None:
        return wanted
    # the features whose activation differs between the runs: the others cannot move anything
    return torch.nonzero((source != base).flatten(0, -2).any(0)).flatten().tolist()


def _check_coder(sae: Any, probe: GPT2Probe) -> None:
    """A gpt2probe SAE or transcoder (what splicing takes), refused before any run if it is not one."""
    if not isinstance(getattr(sae, "cfg", None), SAEConfig) or not callable(getattr(sae, "run_stages", None)):
        raise InvalidTypeError(f"sae must be a gpt2probe SAE or Transcoder, got {type(sae).__name__}")
    check_fits(sae.cfg, probe.cfg)


def _check_switches(per_position: object, normalize: object) -> None:
    boolean("per_position", per_position)
    boolean("normalize", normalize)  # normalize="no" is truthy: it would normalise


def feature_patch(
    probe: GPT2Probe, sae: Any, clean: Inputs, corrupted: Inputs, *, metric: Metric | None = None, answer=None,
    wrong=None, features: Sequence[int] | None = None, direction: str = "denoise", per_position: bool = False,
    normalize: bool = True, batch_size: int = 16, prepend_bos: bool = False,
) -> FeatureEffects:
    """Exact patching of each feature (see the module docstring).

    Args:
        sae: a gpt2probe SAE or Transcoder that fits ``probe``.
        metric: ``fn(logits) -> scalar``; by default the logit difference ``answer - wrong``.
        features: which features to patch (default: those whose activations differ between the runs).
        per_position: one patch per (position, feature) instead of per feature.
        batch_size: patched runs per forward pass.

    Example:
        >>> effects = feature_patch(probe, sae, clean, corrupted, answer=" Mary", wrong=" John")  # doctest: +SKIP
        >>> effects.top(5)  # doctest: +SKIP
    """
    prep = prepare(probe, clean, corrupted, metric=metric, answer=answer, wrong=wrong, direction=direction,
                   prepend_bos=prepend_bos)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    _check_coder(sae, probe)
    _check_switches(per_position, normalize)
    wanted = _wanted(sae.cfg.d_sae, features)
    source, base = _source_acts(probe, sae, prep.source), _source_acts(probe, sae, prep.base)
    chosen = _features(wanted, source, base)
    n_pos = base.shape[1]
    cells = [(p, f) for p in range(n_pos) for f in chosen] if per_position else [(None, f) for f in chosen]
    n_batch = prep.base.ids.shape[0]
    raw: list[Tensor] = []
    for start in range(0, len(cells), batch_size):
        chunk = cells[start:start + batch_size]
        tokens = Tokens(prep.base.ids.repeat(len(chunk), 1), prep.base.attention_mask.repeat(len(chunk), 1))

        def patch(acts: Tensor, hook, chunk=chunk) -> Tensor:
            out = acts.clone()
            for i, (pos, feature) in enumerate(chunk):
                rows = slice(i * n_batch, (i + 1) * n_batch)
                where = (rows, slice(None) if pos is None else pos, feature)
                out[where] = source[(slice(None), *where[1:])]
            return out

        with probe.saes([sae], use_error_term=True):
            logits = probe.run_with_hooks(tokens, {_acts_name(sae): patch})
        raw += [_scalar(prep.metric(logits[i * n_batch:(i + 1) * n_batch])).float().cpu() for i in range(len(chunk))]
    clean_m, corrupted_m = _metrics(probe, prep)
    values = torch.stack(raw) if raw else torch.zeros(0)
    if per_position:
        values = values.reshape(n_pos, len(chosen))
    base_value = corrupted_m if direction == "denoise" else clean_m
    return FeatureEffects(sae.cfg.hook_name, "exact", _normalise(values, clean_m, corrupted_m, normalize), tuple(chosen),
                          clean_m, corrupted_m, normalize, float(_normalise(torch.tensor(base_value), clean_m, corrupted_m,
                                                                            normalize)))


def feature_attribution(
    probe: GPT2Probe, sae: Any, clean: Inputs, corrupted: Inputs, *, metric: Metric | None = None, answer=None,
    wrong=None, features: Sequence[int] | None = None, direction: str = "denoise", per_position: bool = False,
    normalize: bool = True, prepend_bos: bool = False,
) -> FeatureEffects:
    """Attribution patching of every feature from one forward and one backward pass (see the module docstring).

    Arguments as :func:`feature_patch`; ``features`` only selects which estimates to return.
    """
    prep = prepare(probe, clean, corrupted, metric=metric, answer=answer, wrong=wrong, direction=direction,
                   prepend_bos=prepend_bos)
    _check_coder(sae, probe)
    _check_switches(per_position, normalize)
    wanted = _wanted(sae.cfg.d_sae, features)
    source = _source_acts(probe, sae, prep.source)
    kept: dict[str, Tensor] = {}

    def keep(acts: Tensor, hook) -> None:
        acts.retain_grad()
        kept["acts"] = acts

    with probe.saes([sae], use_error_term=True), probe.hooks({_acts_name(sae): keep}):
        base_metric = _scalar(prep.metric(probe(prep.base, grad=True)))
    base_metric.backward()
    acts = kept["acts"]
    grad = acts.grad if acts.grad is not None else torch.zeros_like(acts)
    product = ((source - acts.detach()) * grad).sum(0)  # over prompts: the metric is a batch mean already
    estimate = float(base_metric.detach()) + (product if per_position else product.sum(0))
    chosen = _features(wanted, source, acts.detach())
    estimate = estimate[..., chosen].float().cpu()
    clean_m, corrupted_m = _metrics(probe, prep)
    base_value = corrupted_m if direction == "denoise" else clean_m
    return FeatureEffects(sae.cfg.hook_name, "atp", _normalise(estimate, clean_m, corrupted_m, normalize), tuple(chosen),
                          clean_m, corrupted_m, normalize, float(_normalise(torch.tensor(base_value), clean_m, corrupted_m,
                                                                            normalize)))
