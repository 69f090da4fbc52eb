"""The local replacement model of one prompt: MLPs replaced by transcoders, everything nonlinear frozen.

On the prompt's own forward pass we record the attention patterns and every LayerNorm scale;
the *replacement* pass then runs the real model through hooks with

* each attention pattern and LayerNorm scale replaced by its recorded value (so attention and
  LayerNorm are linear maps of the residual stream),
* each block's MLP output replaced by ``b_dec + x @ W_skip + written``, where ``written`` is what
  the transcoder's active features and the layer's error node write (``acts @ W_dec`` plus
  ``true MLP output - transcoder output``); the MLP itself contributes no gradient,
* the token embedding (``hook_embed``) replaced by the value given.

With the recorded embedding and everything written the pass reproduces the model's activations
and logits exactly; with all of them zero it gives each node's *constant* (biases, position
embeddings and frozen terms). The pass is affine in the embedding and in what is written, so
a backward pass from any target gives that target's direct linear effects.

The model is reached only through the probe's hooks; nothing here touches its modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .. import names as N
from ..errors import UnsupportedError
from ..tokens import Tokens
from .transcoders import Probe, TranscoderLike, skip_out


@dataclass(frozen=True)
class PromptRun:
    """What the prompt's own forward pass gives the graph (batch of one, on the model's device)."""

    ids: Int[Tensor, " pos"]
    embed: Float[Tensor, "pos d_model"]
    mlp_in: Float[Tensor, "layer pos d_model"]  # ln2.hook_normalized: what each transcoder reads
    mlp_out: Float[Tensor, "layer pos d_model"]
    frozen: dict[str, Tensor]  # ln1/ln2/ln_final scales [1, pos, 1] and attention patterns [1, head, pos, pos]
    logits: Float[Tensor, " d_vocab"]  # at the last position


def frozen_names(n_layers: int) -> list[str]:
    """The hooks whose values the replacement model freezes: attention patterns and LayerNorm scales."""
    out = []
    for layer in range(n_layers):
        out += [N.ln_scale(layer, 1), N.pattern(layer), N.ln_scale(layer, 2)]
    return out + [N.LN_FINAL_SCALE]


def capture_prompt(probe: Probe, tokens: Tokens) -> PromptRun:
    """Run the prompt once and keep what the replacement model is built from."""
    n_layers = probe.cfg.n_layers
    mlp_in = [N.ln_normalized(layer, 2) for layer in range(n_layers)]
    mlp_out = [N.mlp_out(layer) for layer in range(n_layers)]
    frozen = frozen_names(n_layers)
    logits, cache = probe.run_with_cache(tokens, names=[N.EMBED, *mlp_in, *mlp_out, *frozen])
    return PromptRun(
        ids=tokens.ids[0].to(probe.cfg.device),
        embed=cache[N.EMBED][0],
        mlp_in=torch.stack([cache[name][0] for name in mlp_in]),
        mlp_out=torch.stack([cache[name][0] for name in mlp_out]),
        frozen={name: cache[name] for name in frozen},
        logits=logits[0, -1],
    )


@dataclass
class ReplacementPass:
    """One replacement pass over a batch of copies of the prompt.

    ``mlp_in[l]`` is what transcoder ``l`` reads and ``final`` the stream after ``ln_final``
    (both functions of the anchors). With ``grad``, ``embed_anchor`` and ``mlp_anchors[l]`` are
    zero tensors added to the embedding and to block ``l``'s MLP output: the gradient of a
    target with respect to them is its gradient with respect to those points of the stream.
    """

    mlp_in: list[Tensor]
    final: Float[Tensor, "batch pos d_model"]
    embed_anchor: Tensor | None
    mlp_anchors: list[Tensor | None]


def replacement_pass(
    probe: Probe,
    run: PromptRun,
    transcoders: list[TranscoderLike],
    *,
    embed: Float[Tensor, "pos d_model"],
    written: Float[Tensor, "layer pos d_model"],
    batch: int = 1,
    grad: bool = False,
) -> ReplacementPass:
    """Run the frozen replacement model with the given embedding and per-layer writes (see the module docstring)."""
    n_layers = probe.cfg.n_layers
    n_pos, d_model = embed.shape
    shape = (batch, n_pos, d_model)
    ids = run.ids[None].expand(batch, n_pos)

    def anchor() -> Tensor | None:
        if not grad:
            return None
        return torch.zeros(shape, dtype=embed.dtype, device=embed.device, requires_grad=True)

    embed_anchor = anchor()
    mlp_anchors = [anchor() for _ in range(n_layers)]
    mlp_in: list[Tensor | None] = [None] * n_layers

    def set_embed(tensor: Tensor, hook) -> Tensor:
        value = embed.expand(shape)
        return value + embed_anchor if embed_anchor is not None else value.clone()

    def freeze(tensor: Tensor, hook) -> Tensor:
        return run.frozen[hook.name].expand_as(tensor)

    def read_mlp_in(tensor: Tensor, hook) -> None:
        mlp_in[hook.layer] = tensor

    def set_mlp_out(tensor: Tensor, hook) -> Tensor:
        layer = hook.layer
        tc = transcoders[layer]
        out = tc.b_dec + written[layer] + skip_out(tc, mlp_in[layer])
        out = out.expand(shape)
        return out + mlp_anchors[layer] if mlp_anchors[layer] is not None else out.contiguous()

    hooks = [(N.EMBED, set_embed)] + [(name, freeze) for name in run.frozen]
    for layer in range(n_layers):
        hooks += [(N.ln_normalized(layer, 2), read_mlp_in), (N.mlp_out(layer), set_mlp_out)]
    with probe.hooks(hooks), torch.set_grad_enabled(grad):
        final, _ = probe.run_with_cache(Tokens(ids, torch.ones_like(ids)), names=[], grad=grad, unembed=False)
    read = [t for t in mlp_in if t is not None]
    if len(read) != n_layers:  # the ln2 hook runs once per block in every forward pass
        raise UnsupportedError(f"the replacement run read the MLP input of {len(read)} of {n_layers} blocks")
    return ReplacementPass(mlp_in=read, final=final, embed_anchor=embed_anchor, mlp_anchors=mlp_anchors)
