"""The logit lens, the tuned lens and direct logit attribution."""

from .attribution import Attribution, direct_logit_attribution
from .logit_lens import NEXT_TOKEN, logit_lens
from .result import LensResult, PromptLens
from .tuned import TunedLens

__all__ = ["NEXT_TOKEN", "Attribution", "LensResult", "PromptLens", "TunedLens", "direct_logit_attribution",
           "logit_lens"]
