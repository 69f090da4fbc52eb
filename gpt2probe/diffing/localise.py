"""Where in the tuned model does the change live? Patch the base model's activations into the tuned run.

For each unit (a layer's attention output, its MLP output, or one head's ``hook_z``) the
tuned model is run on the same tokens with that unit's activation replaced by the base
model's, at every position. The fraction of the divergence it removes,

    restored = 1 - KL(base || tuned patched) / KL(base || tuned),

is 1 when the whole change flows through that unit (e.g. the only fine-tuned component is
that MLP: the patched run then reproduces the base logits exactly) and 0 when it does not
matter. Values are averaged over real positions and prompts; they are undefined (NaN) when
the two models agree everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from .. import names as N
from ..probe import GPT2Probe
from ..tokens import Tokens

SITES = ("attn_out", "mlp_out")
"""The per-layer units, in forward order (columns of :attr:`Localisation.layers`)."""


@dataclass(frozen=True)
class Localisation:
    """The restored fraction of KL(base || tuned) per patched unit."""

    total_kl: float
    """KL(base || tuned) with nothing patched, averaged over real positions."""
    layers: Float[Tensor, "layer site"]
    """Columns: :data:`SITES` (attention output, MLP output)."""
    heads: Float[Tensor, "layer head"] | None
    """Per head (``hook_z`` patched), or ``None`` when heads were not swept."""

    def __repr__(self) -> str:
        best = self.layers.nan_to_num(-1.0).flatten().argmax().item()
        layer, site = divmod(best, len(SITES))
        return (f"Localisation(total KL {self.total_kl:.4g} nats; most restored by layer {layer} {SITES[site]}: "
                f"{float(self.layers[layer, site]):.3f})")


def _mean_kl(base_logits: Tensor, logits: Tensor, real: Tensor) -> float:
    log_p = F.log_softmax(base_logits.float(), dim=-1)
    log_q = F.log_softmax(logits.float().to(log_p.device), dim=-1)
    return float((log_p.exp() * (log_p - log_q)).sum(-1)[real].mean())


def _replace(source: Tensor):
    def hook(activation: Tensor, hook) -> Tensor:
        return source.to(device=activation.device, dtype=activation.dtype)

    return hook


def _replace_head(source: Tensor, head: int):
    def hook(z: Tensor, hook) -> Tensor:
        patched = z.clone()
        patched[:, :, head] = source[:, :, head].to(device=z.device, dtype=z.dtype)
        return patched

    return hook


@torch.no_grad()
def localise(base: GPT2Probe, tuned: GPT2Probe, tokens: Tokens, base_logits: Tensor, *, heads: bool = True) -> Localisation:
    """Patch each unit of ``base`` into ``tuned`` on ``tokens``; ``base_logits`` is base's plain run on them."""
    n_layers = base.cfg.n_layers
    names = [N.attn_out(layer) for layer in range(n_layers)] + [N.mlp_out(layer) for layer in range(n_layers)]
    if heads:
        names += [N.z(layer) for layer in range(n_layers)]
    _, cache = base.run_with_cache(tokens, names=names)
    real = tokens.attention_mask.bool().to(base_logits.device)
    total = _mean_kl(base_logits, tuned(tokens), real)

    def restored(hooks) -> float:
        if total == 0.0:
            return float("nan")
        return 1.0 - _mean_kl(base_logits, tuned.run_with_hooks(tokens, hooks), real) / total

    layers = torch.tensor([
        [restored({N.attn_out(layer): _replace(cache[N.attn_out(layer)])}),
         restored({N.mlp_out(layer): _replace(cache[N.mlp_out(layer)])})]
        for layer in range(n_layers)
    ])
    per_head = None
    if heads:
        per_head = torch.tensor([
            [restored({N.z(layer): _replace_head(cache[N.z(layer)], head)}) for head in range(base.cfg.n_heads)]
            for layer in range(n_layers)
        ])
    return Localisation(total_kl=total, layers=layers, heads=per_head)
