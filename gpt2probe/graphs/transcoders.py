"""What an attribution graph needs from a transcoder, and the checks that it has it.

A transcoder of layer ``L`` stands in for block ``L``'s MLP: it reads the MLP's input as
:func:`gpt2probe.names.ln_normalized` ``(L, 2)`` exposes it, ``blocks.L.ln2.hook_normalized``
(LayerNorm's ``(x - mean) / scale``, *before* ``ln_2``'s weight and bias, which a transcoder
folds into ``W_enc`` and ``b_enc``, as Dunefsky et al.'s GPT-2 transcoders read TransformerLens's
``fold_ln`` model), and writes ``blocks.L.hook_mlp_out``:

    acts = encode(x)                         # an elementwise gate of x @ W_enc + b_enc
    out  = acts @ W_dec + b_dec (+ x @ W_skip)

Any object with these attributes works (gpt2probe's own ``Transcoder``, a SAELens one, a
hand-built test double): :class:`TranscoderLike` is a protocol, so this package depends on
no transcoder implementation.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from .. import names as N
from ..errors import InvalidArgumentError, InvalidTypeError, ShapeError, UnsupportedError


@runtime_checkable
class TranscoderLike(Protocol):
    """What an attribution graph reads from a per-layer transcoder.

    ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_out]``, ``b_dec [d_out]``,
    ``W_skip [d_in, d_out]`` or ``None``, ``cfg.layer``, and ``encode(x)`` returning the feature
    activations after the nonlinearity (ReLU, JumpReLU, top-k).
    """

    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor
    W_skip: Tensor | None
    cfg: Any

    def encode(self, x: Tensor) -> Tensor: ...


Transcoders = Sequence[TranscoderLike] | Mapping[int, TranscoderLike]

# A GPT2Probe. Typed loosely because gpt2probe.probe attaches this package's functions as
# methods (probe.intervene_features): importing it here would make an import cycle.
Probe = Any


def _layer_of(tc: object, index: int) -> int:
    cfg = getattr(tc, "cfg", None)
    layer = getattr(cfg, "layer", None)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise InvalidTypeError(
            f"transcoder {index} has no integer cfg.layer (got {layer!r}); each transcoder must say which block's MLP it replaces"
        )
    return layer


def check_transcoders(
    transcoders: object, *, n_layers: int, d_model: int, dtype: torch.dtype, device: torch.device, require_all: bool = True
) -> Any:
    """The transcoders ordered by layer, one per block, after checking every shape, dtype and device.

    Returns a list indexed by layer; with ``require_all=False``, a dict ``{layer: transcoder}`` of
    those given.

    ``transcoders`` is a sequence (each one's ``cfg.layer`` says where it goes) or a mapping
    ``{layer: transcoder}``. A block without a transcoder, two for one block, a transcoder
    that reads another hook than ``blocks.L.ln2.hook_normalized`` or whose matrices do not fit
    the model are refused, naming what is wrong and what would fit.
    """
    if isinstance(transcoders, Mapping):
        items = list(transcoders.items())
        for key, tc in items:
            if isinstance(key, bool) or not isinstance(key, numbers.Integral):
                hint = f" (write {{{int(key)}: transcoder}})" if isinstance(key, str) and key.strip().isdigit() else ""
                raise InvalidTypeError(f"a dict of transcoders is keyed by integer layer, got {type(key).__name__} "
                                       f"{key!r}{hint}; valid layers: 0..{n_layers - 1}")
            layer = int(key)  # a NumPy integer too
            if _layer_of(tc, layer) != layer:
                raise InvalidArgumentError(f"the transcoder given for layer {layer} says cfg.layer = {_layer_of(tc, layer)}")
        listed = [tc for _, tc in items]
    elif isinstance(transcoders, Sequence) and not isinstance(transcoders, (str, bytes)):
        listed = list(transcoders)
    else:
        one = ": pass transcoders=[tc], or load_transcoders(...) for one per layer" if hasattr(transcoders, "cfg") else ""
        raise InvalidTypeError(
            f"transcoders must be a list of transcoders or a dict {{layer: transcoder}}, got {type(transcoders).__name__}{one}"
        )
    by_layer: dict[int, TranscoderLike] = {}
    for i, tc in enumerate(listed):
        if not isinstance(tc, TranscoderLike):
            missing = [a for a in ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip", "cfg", "encode") if not hasattr(tc, a)]
            raise InvalidTypeError(f"transcoder {i} ({type(tc).__name__}) lacks {', '.join(missing)}: see gpt2probe.graphs.TranscoderLike")
        layer = _layer_of(tc, i)
        if not 0 <= layer < n_layers:
            raise InvalidArgumentError(f"transcoder {i} is for layer {layer}; this model has layers 0..{n_layers - 1}")
        if layer in by_layer:
            raise InvalidArgumentError(f"two transcoders for layer {layer}; give exactly one per layer")
        _check_one(tc, layer, d_model=d_model, dtype=dtype, device=device)
        by_layer[layer] = tc
    if not require_all:
        return by_layer
    missing_layers = [layer for layer in range(n_layers) if layer not in by_layer]
    if missing_layers:
        raise InvalidArgumentError(
            f"no transcoder for layer(s) {missing_layers}: an attribution graph replaces every MLP, so it needs one "
            f"transcoder per layer 0..{n_layers - 1}"
        )
    return [by_layer[layer] for layer in range(n_layers)]


def _check_one(tc: TranscoderLike, layer: int, *, d_model: int, dtype: torch.dtype, device: torch.device) -> None:
    if getattr(tc.cfg, "rescale_acts_by_decoder_norm", False) is True:
        # its decode divides each activation by ||W_dec[f]||: what a feature writes is not a * W_dec[f], so an
        # intervention (and an edge) computed from W_dec would be off by that norm
        raise UnsupportedError(
            f"the transcoder of layer {layer} has rescale_acts_by_decoder_norm=True; graphs and feature interventions "
            "need out = acts @ W_dec + b_dec: fold the norms into the weights (W_enc and b_enc times each row norm "
            "of W_dec, W_dec divided by it)"
        )
    hook = getattr(tc.cfg, "hook_name", None)
    expected_hook = N.ln_normalized(layer, 2)
    if hook is not None and hook != expected_hook:
        raise UnsupportedError(
            f"the transcoder of layer {layer} reads {hook!r}; attribution graphs need transcoders that read {expected_hook!r}"
        )
    d_sae = tc.W_enc.shape[-1] if tc.W_enc.ndim == 2 else -1
    expected = {"W_enc": (d_model, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_model), "b_dec": (d_model,)}
    if tc.W_skip is not None:
        expected["W_skip"] = (d_model, d_model)
    for name, shape in expected.items():
        tensor = getattr(tc, name)
        if not isinstance(tensor, Tensor):
            raise InvalidTypeError(f"transcoder {layer}'s {name} is {type(tensor).__name__}, not a tensor")
        if tuple(tensor.shape) != shape:
            raise ShapeError(
                f"transcoder {layer}'s {name} has shape {tuple(tensor.shape)}; with this model (d_model={d_model}) it must be {shape}"
            )
        if tensor.dtype != dtype or tensor.device != device:
            raise InvalidArgumentError(
                f"transcoder {layer}'s {name} is {tensor.dtype} on {tensor.device}; the model is {dtype} on {device}: "
                "move the transcoder first"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise InvalidArgumentError(f"transcoder {layer}'s {name} holds NaN or infinite values")


def skip_out(tc: TranscoderLike, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
    """The skip connection's output ``x @ W_skip`` (zero without one): the linear part of a transcoder."""
    return x @ tc.W_skip if tc.W_skip is not None else torch.zeros_like(x)


def encode_checked(tc: TranscoderLike, x: Float[Tensor, "pos d_model"], layer: int) -> tuple[Tensor, Tensor]:
    """``(acts, pre)``: ``tc.encode(x)`` and ``x @ W_enc + b_enc``, checked to agree wherever a feature is active.

    The graph's edges into a feature are the linear terms of ``x @ W_enc + b_enc``; that is its
    activation only if ``encode`` gates those pre-activations elementwise (ReLU, JumpReLU, top-k)
    and passes active ones through unchanged. A transcoder that shifts or scales its input
    inside ``encode`` (``apply_b_dec_to_input``, activation normalisation) is refused here.
    """
    with torch.no_grad():
        acts = tc.encode(x)
        pre = x @ tc.W_enc + tc.b_enc
    if not isinstance(acts, Tensor) or acts.shape != pre.shape:
        got = tuple(acts.shape) if isinstance(acts, Tensor) else type(acts).__name__
        raise ShapeError(f"transcoder {layer}'s encode returned {got}; expected feature activations of shape {tuple(pre.shape)}")
    if not bool(torch.isfinite(acts).all()):
        raise InvalidArgumentError(f"transcoder {layer}'s encode returned NaN or infinite activations on this prompt")
    active = acts != 0
    if bool(active.any()):
        diff = (acts[active] - pre[active]).abs()
        tol = 1e-4 * (1 + pre[active].abs())
        if bool((diff > tol).any()):
            worst = float(diff.max())
            raise UnsupportedError(
                f"transcoder {layer}'s encode(x) differs from x @ W_enc + b_enc on active features (by up to {worst:.3g}); "
                "attribution graphs need an elementwise gate (ReLU, JumpReLU, top-k) of those pre-activations, with no "
                "input shift or normalisation inside encode"
            )
    return acts, pre
