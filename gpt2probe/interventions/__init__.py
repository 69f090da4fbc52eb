"""Causal interventions: ablate components, patch activations between prompts, steer the residual stream.

All of them are hook functions ``fn(activation, hook)`` on :meth:`GPT2Probe.hooks`, so they
combine with each other and with captures, and are removed when their ``with`` block ends.
"""

from .ablation import ablate, ablation_hooks, mean_ablation_hook, resample_ablation_hook, zero_ablation_hook
from .attribution_patching import AttributionResult, attribution_patch
from .circuit import Circuit, FaithfulnessResult, circuit, circuit_of_nodes, faithfulness
from .edges import EdgeScores, edge_attribution_patch
from .feature_patching import FeatureEffects, feature_attribution, feature_patch
from .graph import Edge, Node
from .patching import KINDS, PatchingResult, logit_diff_metric, patch, patch_hook
from .pruning import FalseNegativeBound, PruningCheck
from .steering import alpha_for_ratio, mean_difference_vector, residual_norm, steer, steering_hook

__all__ = [
    "FeatureEffects",
    "feature_attribution",
    "feature_patch",
    "KINDS",
    "AttributionResult",
    "Circuit",
    "Edge",
    "EdgeScores",
    "FaithfulnessResult",
    "FalseNegativeBound",
    "Node",
    "PatchingResult",
    "PruningCheck",
    "ablate",
    "ablation_hooks",
    "alpha_for_ratio",
    "attribution_patch",
    "circuit",
    "circuit_of_nodes",
    "edge_attribution_patch",
    "faithfulness",
    "logit_diff_metric",
    "mean_ablation_hook",
    "mean_difference_vector",
    "patch",
    "patch_hook",
    "resample_ablation_hook",
    "residual_norm",
    "steer",
    "steering_hook",
    "zero_ablation_hook",
]
