"""Base-versus-fine-tuned model diffing: what fine-tuning changed in the weights and in the computation.

>>> diff = gpt2probe.compare(base, tuned, ["def f(x):", "The value of the"])
>>> diff.changed_components()[:3], diff.mean_kl, diff.first_departure
"""

from .compare import Disagreement, ModelDiff, compare, kl_divergence
from .components import component_names
from .localise import Localisation, localise
from .weight_changes import check_comparable, weight_changes

__all__ = [
    "Disagreement",
    "Localisation",
    "ModelDiff",
    "check_comparable",
    "compare",
    "component_names",
    "kl_divergence",
    "localise",
    "weight_changes",
]
