"""The logit lens and direct logit attribution."""

from .attribution import Attribution, direct_logit_attribution
from .logit_lens import NEXT_TOKEN, logit_lens
from .result import LensResult, PromptLens

__all__ = ["NEXT_TOKEN", "Attribution", "LensResult", "PromptLens", "direct_logit_attribution", "logit_lens"]
