"""Forward passes that keep the gradient of a metric at chosen hook points.

Attribution patching needs ``d metric / d activation`` at many hook points from one
backward pass. Each hooked activation is replaced by ``activation + zero`` where ``zero``
is a scalar leaf that requires grad: the model consumes that tensor, so its gradient is the
*total* derivative (every later path included), and the graph exists even when the
model's parameters are frozen. ``edit`` hooks may change what the model consumes first
(interpolated activations for integrated gradients, a stop-gradient for GradDrop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidArgumentError, UnsupportedError
from ..model.hooks import HookPoint
from ..probe import GPT2Probe
from ..tokens import Tokens

Edit = Callable[[Tensor, HookPoint], Tensor]


@dataclass(frozen=True)
class GradRun:
    """One forward and backward pass: per-copy metrics, the activations and their gradients."""

    metrics: list[float]
    acts: dict[str, Tensor]
    grads: dict[str, Tensor]


def grad_run(
    probe: GPT2Probe,
    tokens: Tokens,
    names: Sequence[str],
    metric: Callable[[Tensor], Tensor | float],
    *,
    copies: int = 1,
    edits: dict[str, Edit] | None = None,
    keep: Sequence[str] = (),
) -> GradRun:
    """Run ``copies`` stacked copies of ``tokens``; gradients of the summed per-copy metric at ``names``.

    Copies are independent rows of one batch, so the gradient at copy ``c``'s rows is the
    gradient of copy ``c``'s own metric. ``keep`` names activations captured (detached) without
    gradients. Returns detached activations (after ``edits``) and gradients on ``names``.
    ``metric`` is typed as patching's metrics are; one that returns anything but a one-element
    tensor (a float cannot be differentiated) is refused by name.
    """
    n_batch = tokens.ids.shape[0]
    stacked = tokens if copies == 1 else Tokens(tokens.ids.repeat(copies, 1), tokens.attention_mask.repeat(copies, 1))
    edits = edits or {}
    live: dict[str, Tensor] = {}
    kept: dict[str, Tensor] = {}
    zeros = {name: torch.zeros((), device=probe.cfg.device, dtype=probe.cfg.dtype, requires_grad=True) for name in names}

    def make(name: str):
        def hook(activation: Tensor, point: HookPoint) -> Tensor | None:
            out = edits[name](activation, point) if name in edits else activation
            if name in zeros:
                out = out + zeros[name]
                live[name] = out
            if name in keep:
                kept[name] = out.detach()
            return None if out is activation else out

        return hook

    hooked = list(dict.fromkeys([*names, *edits, *keep]))
    with torch.enable_grad():
        logits = probe.run_with_hooks(stacked, [(name, make(name)) for name in hooked], grad=True)
        values: list[Tensor] = []
        for value in [metric(logits[c * n_batch : (c + 1) * n_batch]) for c in range(copies)]:
            if not isinstance(value, Tensor) or value.numel() != 1:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise InvalidArgumentError(f"attribution needs a metric that returns a one-element tensor (to differentiate), got {got}")
            values.append(value)
        total = torch.stack([v.reshape(()) for v in values]).sum()
        if not total.requires_grad:
            raise InvalidArgumentError(
                "the metric's value has no gradient with respect to the activations (argmax, .item(), a comparison, "
                "an integer result or torch.no_grad() inside the metric cut the graph); attribution differentiates "
                "the metric, so it must be computed from the logits with differentiable operations, "
                "e.g. logits[:, -1, answer] - logits[:, -1, wrong]"
            )
        bad = [float(v.detach().float()) for v in values if not bool(torch.isfinite(v.detach()).all())]
        if bad:
            raise InvalidArgumentError(f"the metric returned {bad[0]}: a non-finite value has no usable gradient")
        missing = [name for name in names if name not in live]
        if missing:
            raise UnsupportedError(
                f"hooks {missing} never ran during the forward pass, so their gradients cannot be read; "
                "attribution needs every hooked site on the path from the input to the metric"
            )
        grads = torch.autograd.grad(total, [live[name] for name in names], allow_unused=True)
    acts = {name: live[name].detach() for name in names}
    acts.update(kept)
    return GradRun(
        metrics=[float(v.detach().float()) for v in values],
        acts=acts,
        grads={name: torch.zeros_like(acts[name]) if g is None else g.detach() for name, g in zip(names, grads)},
    )


def copy_rows(copy: int, n_batch: int) -> slice:
    """The batch rows of stacked copy ``copy``."""
    return slice(copy * n_batch, (copy + 1) * n_batch)
