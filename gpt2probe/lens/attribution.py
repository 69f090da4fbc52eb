"""Direct logit attribution: which parts of the residual stream wrote the final logit.

Through the final layer norm with its scale *frozen* at the value of the actual final
stream, the logit (or a logit difference) is linear in the residual stream, so it splits
exactly into the contributions of the embeddings, every attention head (plus each
layer's output bias ``b_O``), and every MLP. ``ln_f``'s bias adds one constant term,
reported separately, and the parts plus that term equal the model's logit.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class Attribution:
    """Contributions to one metric (a logit or a logit difference) at one prompt position.

    ``values`` follows ``labels``: ``embed``, ``pos_embed``, then per layer ``L{l} attn``
    (all heads plus ``b_O``) and ``L{l} mlp``. ``head_values[l, h]`` splits each layer's
    attention into heads (``L{l} attn`` = heads' sum + ``attn_bias[l]``).
    ``sum(values) + bias_term == total``, the model's own value.
    """

    prompt: str
    position: int
    position_token: str
    metric_label: str
    labels: list[str]
    values: Float[Tensor, " component"]
    head_values: Float[Tensor, "layer head"]
    attn_bias: Float[Tensor, " layer"]
    bias_term: float
    total: float

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.labels),):
            raise ValueError(f"values has shape {tuple(self.values.shape)} but there are {len(self.labels)} labels")
        if self.attn_bias.shape != self.head_values.shape[:1]:
            raise ValueError(
                f"attn_bias has shape {tuple(self.attn_bias.shape)} but head_values has {self.head_values.shape[0]} layers"
            )
