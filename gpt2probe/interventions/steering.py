"""Steering: add a direction to the residual stream and watch the model's behaviour move.

The usual direction is a *mean difference*: the average residual stream on prompts with a
property minus the average on prompts without it (e.g. ``"Love"`` vs ``"Hate"``), read at
one layer. Adding ``alpha`` times it while the model runs (or generates) pushes the
output towards the property.

>>> v = mean_difference_vector(probe, ["Love"], ["Hate"], layer=6)
>>> with steer(probe, 6, v, alpha=4.0):
...     logits = probe("I think you are")

How strong ``alpha`` is depends on the size of the stream it is added to, which differs by
model and layer (GPT-2 small's middle residual stream has norms near 100, tiny-english's
near 10). :func:`alpha_for_ratio` picks the ``alpha`` that makes ``|alpha v|`` a given
fraction of the stream's typical norm (:func:`residual_norm`); ``gpt2probe steering`` does
so by default (``--norm-ratio``) and prints the ratio it used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor

from .. import names as N
from .. import validate
from ..errors import InvalidArgumentError, PromptError, ShapeError
from ..model.hooks import HookFn, HookPoint
from ..probe import GPT2Probe, require_probe
from ..tokens import Inputs

STREAMS = {"resid_pre": N.resid_pre, "resid_mid": N.resid_mid, "resid_post": N.resid_post}
Positions = int | Sequence[int] | None


def stream_name(probe: GPT2Probe, layer: int, stream: str) -> str:
    """The hook name of a residual stream, after checking the layer and stream."""
    require_probe(probe)
    validate.choice("stream", stream, STREAMS)
    return STREAMS[stream](validate.layer_in(layer, probe.cfg.n_layers))


def steering_hook(vector: Float[Tensor, " d_model"], alpha: float, positions: Positions = None) -> HookFn:
    """A hook function that adds ``alpha * vector`` to a residual stream ``[batch, pos, d_model]``.

    ``positions``: ``None`` adds it at every position (including positions generated
    later, one step at a time); an int or list of ints picks indices of the padded batch
    (negative from the end; ``-1`` is every prompt's last token under left padding).
    During :func:`gpt2probe.generation.generate` each step after the prompt holds only the
    new token, so positions index that one-token activation there.
    """
    validate.finite_tensor("the steering vector", vector)
    alpha = validate.finite_number("the steering scale alpha", alpha)
    if vector.ndim != 1:
        raise ShapeError(f"a steering vector has shape [d_model], got {tuple(vector.shape)}")
    chosen = slice(None) if positions is None else validate.index_list("steering positions", positions)

    def hook(activation: Tensor, point: HookPoint) -> Tensor:
        if activation.shape[-1] != vector.shape[0]:
            raise ShapeError(f"the steering vector has {vector.shape[0]} entries but {point.name!r} has d_model={activation.shape[-1]}")
        n_pos = activation.shape[1]
        if isinstance(chosen, list) and any(not -n_pos <= p < n_pos for p in chosen):
            raise PromptError(f"steering positions {chosen} fall outside a run of {n_pos} positions")
        out = activation.clone()
        out[:, chosen] += alpha * vector.to(out)
        return out

    return hook


@contextmanager
def steer(
    probe: GPT2Probe,
    layer: int,
    vector: Float[Tensor, " d_model"],
    alpha: float,
    positions: Positions = None,
    stream: str = "resid_pre",
) -> Iterator[GPT2Probe]:
    """Add ``alpha * vector`` to ``blocks.{layer}.hook_{stream}`` for the duration of a ``with`` block."""
    name = stream_name(probe, layer, stream)
    validate.finite_tensor("the steering vector", vector)
    if vector.shape != (probe.cfg.d_model,):
        raise ShapeError(f"the steering vector has shape {tuple(vector.shape)}; this model needs [{probe.cfg.d_model}]")
    with probe.hooks([(name, steering_hook(vector, alpha, positions))]):
        yield probe


@torch.no_grad()
def stream_at(
    probe: GPT2Probe, prompts: Inputs, layer: int, stream: str = "resid_pre", position: int | None = -1
) -> Float[Tensor, "batch d_model"]:
    """Each prompt's residual stream at one of its *real* tokens (``position``, negative from the end).

    ``position=None`` averages over each prompt's real tokens instead. Pads never count.
    """
    name = stream_name(probe, layer, stream)
    _, cache = probe.run_with_cache(prompts, names=[name])
    acts, tokens = cache[name], cache.tokens
    if tokens is None:  # run_with_cache records the tokens it ran
        raise InvalidArgumentError("the run's cache holds no tokens, so its pads cannot be told apart")
    rows = []
    for i in range(acts.shape[0]):
        real = acts[i, tokens.real_positions(i)]
        if position is None:
            rows.append(real.mean(0))
            continue
        if not -len(real) <= validate.integer("position", position) < len(real):
            raise PromptError(f"position {position} is outside prompt {i}, which has {len(real)} tokens")
        rows.append(real[position])
    return torch.stack(rows)


def mean_difference_vector(
    probe: GPT2Probe,
    prompts_a: Inputs,
    prompts_b: Inputs,
    layer: int,
    stream: str = "resid_pre",
    position: int | None = -1,
) -> Float[Tensor, " d_model"]:
    """Mean residual stream over ``prompts_a`` minus the mean over ``prompts_b``.

    Each prompt is read at ``position`` among its own real tokens (default: its last
    token; ``None``: the mean over its tokens), so left padding in a batch changes
    nothing.
    """
    return stream_at(probe, prompts_a, layer, stream, position).mean(0) - stream_at(probe, prompts_b, layer, stream, position).mean(0)


@torch.no_grad()
def residual_norm(probe: GPT2Probe, prompts: Inputs, layer: int, stream: str = "resid_pre") -> float:
    """The mean norm of the residual stream at ``layer``/``stream`` over ``prompts``' last real tokens.

    The last token, because that is where :func:`mean_difference_vector` reads its vectors;
    the first position is left out of the reference on purpose (GPT-2's stream there is many
    times larger than anywhere else).
    """
    return float(stream_at(probe, prompts, layer, stream).float().norm(dim=-1).mean())


def alpha_for_ratio(vector: Float[Tensor, " d_model"], reference_norm: float, ratio: float) -> float:
    """The ``alpha`` for which ``|alpha * vector| == ratio * reference_norm``.

    Args:
        vector: the steering direction (any size; only its norm matters here).
        reference_norm: the stream's typical norm, e.g. :func:`residual_norm`.
        ratio: the size of the added vector relative to that norm (0.5: half the stream's size).

    Raises:
        InvalidArgumentError: a ratio or norm that is not finite and positive, or a zero vector
            (the two sets of prompts gave the same stream), which no ``alpha`` can scale.
    """
    ratio = validate.finite_number("the norm ratio", ratio)
    reference_norm = validate.finite_number("the reference norm", reference_norm)
    if ratio <= 0 or reference_norm <= 0:
        raise InvalidArgumentError(f"the norm ratio and the reference norm must be > 0, got {ratio:g} and {reference_norm:g}")
    size = float(vector.detach().double().norm())
    if not size > 0:
        raise InvalidArgumentError("the steering vector is zero (both sets of prompts give the same stream): "
                                   "no alpha can scale it; use prompts that differ")
    return ratio * reference_norm / size
