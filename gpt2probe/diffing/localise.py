"""Where in the tuned model does the change live? Patch the base model's activations into the tuned run.

For each unit (a layer's attention output, its MLP output, or one head's output) the tuned
model is run on the same tokens with that unit's activation replaced by the base model's,
at every position. A head's output is its share of the attention output, ``z[:, :, h] @
W_O[h]`` (TransformerLens's ``hook_result``), so the patch swaps the tuned head's share for
the base head's, each computed with its own model's ``W_O``: a change to any of the head's
``W_Q``, ``W_K``, ``W_V`` or ``W_O`` is seen. (Patching ``hook_z`` would miss a change to
``W_O``.) ``b_O`` belongs to no head: it is part of the layer's ``attn_out`` only. The
fraction of the divergence it removes,

    restored = 1 - KL(base || tuned patched) / KL(base || tuned),

is 1 when the whole change flows through that unit (e.g. the only fine-tuned component is
that MLP: the patched run then reproduces the base logits exactly) and 0 when it does not
matter. Values are averaged over real positions and prompts; they are undefined (NaN) when
the two models agree everywhere. KLs are float64 (:func:`gpt2probe.divergence.kl_from_logits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .. import names as N
from ..divergence import kl_from_logits
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
    """Per head (its output ``z_h @ W_O[h]`` patched), or ``None`` when heads were not swept."""

    def __repr__(self) -> str:
        best = int(self.layers.nan_to_num(-1.0).flatten().argmax())
        layer, site = divmod(best, len(SITES))
        return (f"Localisation(total KL {self.total_kl:.4g} nats; most restored by layer {layer} {SITES[site]}: "
                f"{float(self.layers[layer, site]):.3f})")


def _mean_kl(base_logits: Tensor, logits: Tensor, real: Tensor) -> float:
    kl = kl_from_logits(base_logits, logits.to(base_logits.device))
    return float(kl[real.to(kl.device)].mean())


def _replace(source: Tensor):
    def hook(activation: Tensor, hook) -> Tensor:
        return source.to(device=activation.device, dtype=activation.dtype)

    return hook


def _replace_head_output(base_z: Tensor, base_w_o: Tensor, tuned_w_o: Tensor, head: int):
    """Hooks on the tuned run: remember its ``z``, then swap head ``head``'s share of ``attn_out``.

    ``attn_out - z_tuned[h] @ W_O_tuned[h] + z_base[h] @ W_O_base[h]``; the products are
    taken in float32 (or the model's dtype if wider) and the difference added once.
    """
    seen: dict[str, Tensor] = {}

    def keep_z(z: Tensor, hook) -> None:
        seen["z"] = z

    def swap(attn_out: Tensor, hook) -> Tensor:
        dtype = torch.promote_types(attn_out.dtype, torch.float32)
        z_tuned = seen.pop("z")[:, :, head].to(dtype)
        z_base = base_z[:, :, head].to(device=attn_out.device, dtype=dtype)
        delta = z_base @ base_w_o.to(attn_out.device, dtype) - z_tuned @ tuned_w_o.to(attn_out.device, dtype)
        return (attn_out.to(dtype) + delta).to(attn_out.dtype)

    return keep_z, swap


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
        rows = []
        for layer in range(n_layers):
            base_w_o, tuned_w_o = base.weights.W_O_layer(layer), tuned.weights.W_O_layer(layer)
            row = []
            for head in range(base.cfg.n_heads):
                keep_z, swap = _replace_head_output(cache[N.z(layer)], base_w_o[head], tuned_w_o[head], head)
                row.append(restored({N.z(layer): keep_z, N.attn_out(layer): swap}))
            rows.append(row)
        per_head = torch.tensor(rows)
    return Localisation(total_kl=total, layers=layers, heads=per_head)
