"""Causal interventions: ablate components, patch activations between prompts, steer the residual stream.

All of them are hook functions ``fn(activation, hook)`` on :meth:`GPT2Probe.hooks`, so they
combine with each other and with captures, and are removed when their ``with`` block ends.
"""

from .attribution_patching import AttributionResult, attribution_patch
from .ablation import ablate, ablation_hooks, mean_ablation_hook, resample_ablation_hook, zero_ablation_hook
from .patching import KINDS, PatchingResult, logit_diff_metric, patch, patch_hook
from .steering import mean_difference_vector, steer, steering_hook

__all__ = [
    "KINDS",
    "AttributionResult",
    "PatchingResult",
    "ablate",
    "ablation_hooks",
    "attribution_patch",
    "logit_diff_metric",
    "mean_ablation_hook",
    "mean_difference_vector",
    "patch",
    "patch_hook",
    "resample_ablation_hook",
    "steer",
    "steering_hook",
    "zero_ablation_hook",
]
