"""Set transcoder features to chosen values in the real model and read the logits.

Setting feature ``f`` of layer ``L`` at position ``p`` to ``v`` adds ``(v - a) * W_dec[f]`` to block
``L``'s MLP output at ``p``, where ``a`` is the feature's activation on the input the MLP receives
in this very pass (so an intervention upstream is seen). The MLPs themselves keep running: the
model is the real one, with the transcoder's error term implicitly kept (SAELens's
``use_error_term=True`` splice), and every later layer responds to the change as the model does.
With ``freeze_attention=True`` the attention patterns and LayerNorm scales are held at their
values on the unedited prompt, as in the local replacement model of an attribution graph.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import torch
from jaxtyping import Float
from torch import Tensor

from .. import names as N
from .. import validate
from ..errors import InvalidArgumentError, InvalidTypeError, LayerIndexError, PositionError, PromptError
from ..tokens import Inputs
from .replacement import capture_prompt
from .transcoders import Probe, Transcoders, check_transcoders


def _check_interventions(interventions: object, *, n_layers: int, n_pos: int, d_sae: dict[int, int]) -> dict[int, list]:
    if not isinstance(interventions, Mapping):
        raise InvalidTypeError(f"interventions must be a dict {{(layer, position, feature): value}}, got {type(interventions).__name__}")
    by_layer: dict[int, list] = {}
    seen: set[tuple[int, int, int]] = set()
    for given, value in interventions.items():
        if not isinstance(given, tuple) or len(given) != 3:
            raise InvalidTypeError(f"an intervention key is (layer, position, feature) of integers, got {given!r}")
        try:  # ints, NumPy integers and 0-d integer tensors (an argmax); bools and floats are refused
            layer, pos, feat = (validate.integer_like("index", k) for k in given)
        except InvalidTypeError:
            raise InvalidTypeError(f"an intervention key is (layer, position, feature) of integers, got {given!r}") from None
        key = (layer, pos, feat)
        if key in seen:  # (tensor(0), 1, 2) and (0, 1, 2) are two dict keys for one feature: it would be shifted twice
            raise InvalidArgumentError(f"intervention {key} is given twice (as {given!r} and another key with the same integers)")
        seen.add(key)
        if not 0 <= layer < n_layers:
            raise LayerIndexError(f"intervention {key}: layer {layer} is outside 0..{n_layers - 1}")
        if layer not in d_sae:
            raise InvalidArgumentError(f"intervention {key}: no transcoder was given for layer {layer}")
        if not 0 <= pos < n_pos:
            raise PositionError(f"intervention {key}: position {pos} is outside the prompt's 0..{n_pos - 1}")
        if not 0 <= feat < d_sae[layer]:
            raise InvalidArgumentError(f"intervention {key}: feature {feat} is outside transcoder {layer}'s 0..{d_sae[layer] - 1}")
        if isinstance(value, Tensor) and value.ndim == 0 and value.dtype != torch.bool:
            value = value.item()  # a value read off an activation tensor (acts[0, 3, 5] * 2)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InvalidArgumentError(f"intervention {key}: the value must be a finite number, got {value!r}")
        by_layer.setdefault(layer, []).append((pos, feat, float(value)))
    return by_layer


def intervene_features(
    probe: Probe,
    prompt: Inputs,
    transcoders: Transcoders,
    interventions: Mapping[tuple, float | Tensor],
    *,
    freeze_attention: bool = False,
    prepend_bos: bool = False,
) -> Float[Tensor, "batch pos d_vocab"]:
    """The model's logits with transcoder features set to the given values (see the module docstring).

    Args:
        probe: the model.
        prompt: one prompt (text, token ids, or :class:`Tokens` of one row).
        transcoders: transcoders for (at least) the layers intervened on: a list (each with
            ``cfg.layer``) or ``{layer: transcoder}``.
        interventions: ``{(layer, position, feature): value}``; ``0`` ablates a feature. Indices may be NumPy
            integers or 0-d tensors, values any finite real number or 0-d tensor.
        freeze_attention: hold attention patterns and LayerNorm scales at the unedited prompt's values.

    Returns:
        Logits ``[1, pos, d_vocab]``.

    Example:
        >>> logits = probe.intervene_features("The cat sat on the", tcs, {(3, 5, 1021): 0.0})
    """
    if not isinstance(freeze_attention, bool):
        raise InvalidTypeError(f"freeze_attention must be True or False, got {freeze_attention!r}")
    cfg = probe.cfg
    tokens = probe.as_tokens(prompt, prepend_bos=prepend_bos)
    if tokens.ids.shape[0] != 1:
        raise PromptError(f"intervene_features runs one prompt; got a batch of {tokens.ids.shape[0]}")
    tcs = check_transcoders(transcoders, n_layers=cfg.n_layers, d_model=cfg.d_model, dtype=cfg.dtype, device=cfg.device, require_all=False)
    by_layer = _check_interventions(interventions, n_layers=cfg.n_layers, n_pos=tokens.ids.shape[1],
                                    d_sae={layer: tc.W_enc.shape[1] for layer, tc in tcs.items()})
    frozen = capture_prompt(probe, tokens).frozen if freeze_attention else {}
    mlp_in: dict[int, Tensor] = {}

    def read_mlp_in(tensor: Tensor, hook) -> None:
        mlp_in[hook.layer] = tensor

    def edit_mlp_out(tensor: Tensor, hook) -> Tensor:
        tc = tcs[hook.layer]
        acts = tc.encode(mlp_in[hook.layer])
        out = tensor.clone()
        for pos, feat, value in by_layer[hook.layer]:
            out[:, pos] += (value - acts[:, pos, feat])[:, None] * tc.W_dec[feat]
        return out

    def freeze(tensor: Tensor, hook) -> Tensor:
        return frozen[hook.name].expand_as(tensor)

    hooks = [(name, freeze) for name in frozen]
    for layer in by_layer:
        hooks += [(N.ln_normalized(layer, 2), read_mlp_in), (N.mlp_out(layer), edit_mlp_out)]
    with torch.no_grad():
        return probe.run_with_hooks(tokens, hooks)

