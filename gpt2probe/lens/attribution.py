"""Direct logit attribution: which parts of the residual stream wrote the final logit.

Through the final layer norm with its scale *frozen* at the value of the actual final
stream, the logit (or a logit difference) is linear in the residual stream, so it splits
exactly into the contributions of the embeddings, every attention head (plus each
layer's output bias ``b_O``), and every MLP. ``ln_f``'s bias adds one constant term,
reported separately, and the parts plus that term equal the model's logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import einsum, repeat
from jaxtyping import Float
from torch import Tensor

from .. import names as N
from .. import validate
from ..display.escape import token_text
from ..errors import PromptError, ShapeError
from ..probe import GPT2Probe, require_probe
from ..tokens import Inputs


@dataclass(frozen=True, repr=False)
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

    def largest(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` components with the largest absolute contribution, largest first."""
        order = self.values.abs().argsort(descending=True)[:n].tolist()
        return [(self.labels[i], float(self.values[i])) for i in order]

    def __repr__(self) -> str:
        top = ", ".join(f"{label} {value:+.3g}" for label, value in self.largest(3))
        # The position's token as the metric label shows its tokens (logit(␣Paris)): token_text, in brackets.
        return (f"Attribution({self.metric_label} at position {self.position} ({token_text(self.position_token)}): "
                f"total {self.total:.4g} = parts {float(self.values.sum()):.4g} + ln_f bias {self.bias_term:.3g}; largest {top})")

    def _repr_html_(self) -> str:
        """The components by absolute contribution, and the heads with the largest contributions."""
        from ..display.tables import table

        rows = [[label, value] for label, value in self.largest(len(self.labels))]
        n_heads = self.head_values.shape[1]
        flat = self.head_values.flatten()
        heads = [f"L{i // n_heads}H{i % n_heads} {float(flat[i]):+.3g}" for i in flat.abs().argsort(descending=True)[:5].tolist()]
        return table(
            f"Direct logit attribution of {self.metric_label} at position {self.position} ({token_text(self.position_token)})",
            ["component", "contribution"], rows,
            notes=[f"total {self.total:.4g} = sum of parts {float(self.values.sum()):.4g} + ln_f bias {self.bias_term:.4g}",
                   "largest heads: " + ", ".join(heads), f"prompt: {self.prompt!r}"],
        )

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.labels),):
            raise ShapeError(f"values has shape {tuple(self.values.shape)} but there are {len(self.labels)} labels")
        if self.attn_bias.shape != self.head_values.shape[:1]:
            raise ShapeError(
                f"attn_bias has shape {tuple(self.attn_bias.shape)} but head_values has {self.head_values.shape[0]} layers"
            )


@torch.no_grad()
def direct_logit_attribution(
    probe: GPT2Probe,
    prompt: Inputs,
    target: str | int,
    *,
    baseline: str | int | None = None,
    position: int = -1,
    prepend_bos: bool = False,
) -> Attribution:
    """Split the logit of ``target`` (minus that of ``baseline``, if given) at ``position``.

    The parts are exact through ``ln_f`` with its scale frozen at the final stream's value:
    ``sum(values) + bias_term`` equals the model's own logit (difference).
    """
    require_probe(probe)
    tokens = probe.as_tokens(prompt, prepend_bos=prepend_bos)
    if tokens.ids.shape[0] != 1:
        raise ShapeError(f"direct_logit_attribution takes one prompt, got {tokens.ids.shape[0]}")
    n_tokens = tokens.ids.shape[1]
    if not -n_tokens <= validate.integer("position", position) < n_tokens:
        raise PromptError(f"position {position} is outside a prompt of {n_tokens} tokens (valid: {-n_tokens}..{n_tokens - 1})")
    position %= n_tokens
    target_id = probe.to_single_token(target)
    baseline_id = probe.to_single_token(baseline) if baseline is not None else None
    n_layers = probe.cfg.n_layers
    wanted = [N.EMBED, N.POS_EMBED, N.LN_FINAL_SCALE] + [N.z(l) for l in range(n_layers)] + [N.mlp_out(l) for l in range(n_layers)]
    logits, cache = probe.run_with_cache(tokens, names=wanted)

    # Everything below runs in float32 whatever the model's dtype: in float16 the centred
    # residual parts (entries near 3,000 in GPT-2 small) and their products with W_U lose
    # the digits that make the parts add up to the logit.
    W_U = probe.W_U.float()
    direction = W_U[:, target_id] - (W_U[:, baseline_id] if baseline_id is not None else 0)

    def project(stack: Float[Tensor, "component 1 pos d_model"]) -> Float[Tensor, " component"]:
        frozen = cache.apply_final_ln(stack.float(), frozen=True)[:, 0, position]
        return frozen @ direction

    def head_results(layer: int) -> Float[Tensor, "head 1 pos d_model"]:
        z, w_o = cache[N.z(layer)].float(), probe.weights.W_O_layer(layer).float()
        return einsum(z, w_o, "one pos head d_head, head d_head d_model -> head one pos d_model")

    heads = torch.stack([project(head_results(l)) for l in range(n_layers)])
    b_O = probe.b_O.float()  # [layer, d_model]: each attention layer's output bias, outside every head
    attn_bias = project(repeat(b_O, "layer d -> layer 1 pos d", pos=n_tokens))
    embeds = project(torch.stack([cache[N.EMBED], cache[N.POS_EMBED]]))
    mlps = project(torch.stack([cache[N.mlp_out(l)] for l in range(n_layers)]))

    labels, values = ["embed", "pos_embed"], [embeds[0], embeds[1]]
    for l in range(n_layers):
        labels += [f"L{l} attn", f"L{l} mlp"]
        values += [heads[l].sum() + attn_bias[l], mlps[l]]
    bias_term = float(probe.weights.ln_final.bias.float() @ direction.float())
    row = logits[0, position].float()
    total = float(row[target_id] - (row[baseline_id] if baseline_id is not None else 0))
    target_str = probe.to_string([target_id])
    # Tokens as every report writes them (logit(↵), logit(␣Paris)): this label is the report's figure title.
    label = f"logit({token_text(target_str)})" + (
        f" - logit({token_text(probe.to_string([baseline_id]))})" if baseline_id is not None else "")
    return Attribution(
        prompt=tokens.prompts[0] if tokens.prompts else probe.to_string(tokens.ids[0].tolist()),
        position=position,
        position_token=probe.to_string([int(tokens.ids[0, position])]),
        metric_label=label,
        labels=labels,
        values=torch.stack(values).cpu(),
        head_values=heads.cpu(),
        attn_bias=attn_bias.cpu(),
        bias_term=bias_term,
        total=total,
    )
