"""What one "unit" of a hook is, and how to read its value at every position.

============================  ==============================================  ==========
hook                          unit                                            kind
============================  ==============================================  ==========
``mlp.hook_pre``/``hook_post``  a neuron                                       neuron
``hook_q/k/v/z``              a head: the L2 norm of its ``d_head`` vector      head_norm
``hook_pattern``              a head: attention to the first/previous token     attention
residual-width hooks          a dimension, or a user-given direction            dim / direction
``hook_scale``                the single scale                                  dim
============================  ==============================================  ==========

``hook_attn_scores`` has no useful per-head scalar (its masked entries are ``-inf``) and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import einsum
from torch import Tensor

from .. import names as N
from ..errors import HookNameError
from .errors import HarvestConfigError


@dataclass(frozen=True)
class HookPlan:
    """How one hook is summarised."""

    name: str
    kind: str  # neuron | head_norm | attention | dim | direction
    n_units: int
    directions: Tensor | None = None  # [unit, d_model], for kind "direction"

    def unit_label(self, unit: int) -> str:
        layer = N.layer_of(self.name)
        prefix = f"L{layer}" if layer is not None else ""
        tag = {"neuron": "N", "head_norm": "H", "attention": "H", "dim": "D", "direction": "dir"}[self.kind]
        return f"{prefix}{tag}{unit}"

    def unit_values(self, activation: Tensor) -> Tensor:
        """``[batch, pos, unit]`` in float32 from the hook's activation (not for ``attention``)."""
        if self.kind == "head_norm":
            return activation.float().norm(dim=-1)
        if self.kind == "direction":
            return einsum(activation.float(), self.directions.to(activation.device), "b p d, u d -> b p u")
        return activation.float()


def plan_hooks(hooks: list[str], valid: list[str], *, d_model: int, d_mlp: int, n_heads: int,
               directions: dict[str, Tensor] | None = None) -> list[HookPlan]:
    """Check every name (and direction) before any work; return the plans in forward order."""
    directions = dict(directions or {})
    if not hooks:
        raise HarvestConfigError("no hooks given; pass hook names such as 'blocks.0.mlp.hook_post' "
                                 "or a glob such as 'blocks.*.mlp.hook_post'")
    selected = N.resolve(hooks, valid)  # raises HookNameError with the nearest names
    for name in directions:
        if name not in selected:
            raise HookNameError(f"a direction was given for {name!r}, which is not among the harvested hooks "
                                f"{selected}")
    plans = []
    for name in selected:
        if name.endswith("hook_attn_scores"):
            raise HarvestConfigError(f"{name!r}: attention scores have no per-head summary (masked entries are "
                                     "-inf); harvest the pattern instead: " + repr(name.replace("attn_scores", "pattern")))
        if name.endswith("hook_pattern"):
            plans.append(HookPlan(name, "attention", n_heads))
        elif N.is_per_head(name):
            plans.append(HookPlan(name, "head_norm", n_heads))
        elif N.is_mlp(name):
            plans.append(HookPlan(name, "neuron", d_mlp))
        elif name.endswith("hook_scale"):
            plans.append(HookPlan(name, "dim", 1))
        elif name in directions:
            d = torch.as_tensor(directions[name], dtype=torch.float32)
            if d.ndim == 1:
                d = d[None]
            if d.ndim != 2 or d.shape[1] != d_model or d.shape[0] == 0:
                raise HarvestConfigError(f"directions for {name!r} must be [n, d_model={d_model}], got {tuple(d.shape)}")
            if not torch.isfinite(d).all():
                raise HarvestConfigError(f"directions for {name!r} contain NaN or infinite values")
            plans.append(HookPlan(name, "direction", d.shape[0], d.contiguous()))
        else:
            plans.append(HookPlan(name, "dim", d_model))
    return plans
