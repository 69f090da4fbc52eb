"""The logit lens, the tuned lens, direct logit attribution and the logit effects of a direction."""

from .attribution import Attribution, direct_logit_attribution
from .logit_effects import logit_effects, top_logit_effects
from .logit_lens import NEXT_TOKEN, logit_lens
from .result import LensResult, PromptLens
from .tuned import TunedLens

__all__ = ["NEXT_TOKEN", "Attribution", "LensResult", "PromptLens", "TunedLens", "direct_logit_attribution",
           "logit_effects", "logit_lens", "top_logit_effects"]
