"""What one "unit" of a hook is, and how to read its value at every position.

============================  ==============================================  ==========
hook                          unit                                            kind
============================  ==============================================  ==========
``mlp.hook_pre``/``hook_post``  a neuron                                       neuron
``hook_q/k/v/z``              a head: the L2 norm of its ``d_head`` vector      head_norm
``hook_pattern``              a head: attention to the first/previous token     attention
residual-width hooks          a dimension, or a user-given direction            dim / direction
``hook_scale``                the single scale                                  dim
an SAE's or transcoder's      a feature: ``encode`` of the hook it reads        feature
``hook_name``
============================  ==============================================  ==========

A feature plan is named ``"<hook_name>.hook_sae_acts_post"`` (the name splicing gives the
same activations) and reads ``hook_name``; its values are the coder's ``encode`` of the
captured activation, computed on the fly in float32 (the coder itself when it is float32 on
the model's device, else a cast copy, leaving the user's as it was: the harvest summarises in
float32 whatever the model's dtype), so no
``[token, d_sae]`` tensor outlives its batch. This package does not import
:mod:`gpt2probe.sae` (which builds on the harvest's corpus code): a coder is anything with
``cfg.hook_name``, ``cfg.d_in``, ``cfg.d_sae`` and ``encode``.

``hook_attn_scores`` has no useful per-head scalar (its masked entries are ``-inf``) and is refused.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

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
    kind: str  # neuron | head_norm | attention | dim | direction | feature
    n_units: int
    directions: Tensor | None = None  # [unit, d_model], for kind "direction"
    coder: Any = None  # for kind "feature": the SAE or transcoder in float32 on the model's device (or a cast copy)

    @property
    def hook(self) -> str:
        """The hook whose activation is captured: the plan's own name, or the coder's ``hook_name``."""
        return self.coder.cfg.hook_name if self.coder is not None else self.name

    def unit_label(self, unit: int) -> str:
        layer = N.layer_of(self.name)
        prefix = f"L{layer}" if layer is not None else ""
        tag = {"neuron": "N", "head_norm": "H", "attention": "H", "dim": "D", "direction": "dir", "feature": "F"}[self.kind]
        return f"{prefix}{tag}{unit}"

    def unit_values(self, activation: Tensor) -> Tensor:
        """``[batch, pos, unit]`` in float32 from the hook's activation (not for ``attention``)."""
        if self.kind == "head_norm":
            return activation.float().norm(dim=-1)
        if self.kind == "direction":
            if self.directions is None:
                raise HarvestConfigError(f"{self.name}: a 'direction' plan needs its directions ([unit, d_model])")
            return einsum(activation.float(), self.directions.to(activation.device), "b p d, u d -> b p u")
        if self.kind == "feature":
            return self.coder.encode(activation.float())
        return activation.float()

    def feature_values(self, activation: Tensor) -> tuple[Tensor, Tensor | None]:
        """A feature plan's ``[batch, pos, unit]`` values, and the ``[batch, pos, slot]`` units outside which they are 0.

        The second is the coder's ``encode_with_support`` (a top-k coder's kept features), or
        ``None`` for a coder that cannot say (then the summaries search the values' zeros).
        """
        with_support = getattr(self.coder, "encode_with_support", None)
        if with_support is None:
            return self.unit_values(activation), None
        return with_support(activation.float())


FEATURE_SUFFIX = "hook_sae_acts_post"


def feature_name(hook_name: str) -> str:
    """The harvested name of the features of a coder reading ``hook_name`` (splicing's name for them)."""
    return f"{hook_name}.{FEATURE_SUFFIX}"


def coder_digest(coder: Any) -> str:
    """SHA-256 of a coder's settings that change its features, and of its parameters (to match a resumed run)."""
    h = hashlib.sha256()
    c = coder.cfg
    for key in ("architecture", "hook_name", "hook_name_out", "d_in", "d_sae", "k", "apply_b_dec_to_input",
                "rescale_acts_by_decoder_norm", "center_input"):
        h.update(f"{key}={getattr(c, key, None)!r};".encode())
    for name, t in sorted(coder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def plan_features(coders: list[Any], valid: list[str], *, d_model: int, d_mlp: int, device: torch.device
                  ) -> list[HookPlan]:
    """One ``feature`` plan per SAE or transcoder, each checked against the model before any work."""
    plans = []
    for coder in coders:
        cfg = getattr(coder, "cfg", None)
        if cfg is None or not callable(getattr(coder, "encode", None)) or not hasattr(cfg, "d_sae"):
            raise HarvestConfigError(f"saes must be gpt2probe SAE or Transcoder objects (load a folder with "
                                     f"gpt2probe.SAE.load(path)), got {type(coder).__name__}")
        hook = cfg.hook_name
        if hook not in valid:
            raise HookNameError(f"{coder!r} reads {hook!r}, which this model does not have")
        width = d_mlp if N.is_mlp(hook) else d_model if N.is_residual_width(hook) else None
        if width is None:
            raise HarvestConfigError(f"{coder!r} reads {hook!r}, which is not a [batch, pos, width] stream; features "
                                     "are harvested from residual-width hooks and MLP activations")
        if cfg.d_in != width:
            raise HarvestConfigError(f"{coder!r} reads {cfg.d_in} values per token but {hook!r} has {width}: "
                                     "it was made for another model")
        if (getattr(coder, "dtype", None), getattr(coder, "device", None)) == (torch.float32, device):
            local = coder  # used as it is (a copy of GPT-2 small's 12 SAEs would be 1.7 GB more)
        else:  # cast a copy: Module.to is in place, and the user's coder stays as it was
            local = copy.deepcopy(coder).to(device=device, dtype=torch.float32)
            local.eval()
        plans.append(HookPlan(feature_name(hook), "feature", int(cfg.d_sae), coder=local))
    return plans


def plan_hooks(hooks: list[str], valid: list[str], *, d_model: int, d_mlp: int, n_heads: int,
               directions: dict[str, Tensor] | None = None, allow_none: bool = False) -> list[HookPlan]:
    """Check every name (and direction) before any work; return the plans in forward order."""
    directions = dict(directions or {})
    if not hooks and not allow_none:
        raise HarvestConfigError("no hooks given; pass hook names such as 'blocks.0.mlp.hook_post' "
                                 "or a glob such as 'blocks.*.mlp.hook_post'")
    selected = N.resolve(hooks, valid) if hooks else []  # raises HookNameError with the nearest names
    for name in directions:
        if name not in selected:
            raise HookNameError(f"a direction was given for {name!r}, which is not among the harvested hooks "
                                f"{selected}")
    plans = []
    for name in selected:
        if name in directions and (name.endswith(("hook_pattern", "hook_attn_scores", "hook_scale"))
                                   or N.is_per_head(name) or N.is_mlp(name)):
            # these hooks have their own units (heads, neurons): the directions would be dropped without a word
            raise HarvestConfigError(f"directions were given for {name!r}, which is not a [batch, pos, d_model] stream; "
                                     "project on the residual stream, attn_out, mlp_out or a LayerNorm's "
                                     "hook_normalized (e.g. 'blocks.0.ln2.hook_normalized')")
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
