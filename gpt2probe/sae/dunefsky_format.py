"""Dunefsky et al.'s GPT-2 small transcoders (``transcoder_circuits``; weights on the hub as ``pchlenski/gpt2-transcoders``).

Files: one ``torch.save`` file per layer, named like
``final_sparse_autoencoder_gpt2-small_blocks.8.ln2.hook_normalized_24576.pt``, holding a
dict ``{"cfg": <their training config object>, "state_dict": {...}}`` with

- ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_out]``,
- ``b_dec [d_in]``: subtracted from the input before encoding,
- ``b_dec_out [d_out]``: added to the output,

and a config whose ``hook_point`` is ``blocks.L.ln2.hook_normalized`` and ``out_hook_point``
``blocks.L.hook_mlp_out``. Their forward pass is
``relu((x - b_dec) @ W_enc + b_enc) @ W_dec + b_dec_out``. gpt2probe's transcoders have one
output bias and no input bias, so the input bias is folded into the encoder bias
(``b_enc - b_dec @ W_enc``, computed in float64): the same function of ``x``, equal to
their forward pass up to float32 rounding.

The file is read with torch's weights-only unpickler: the config object's class (from
their ``sae_training`` package) is replaced by an inert record of its fields, so nothing
in the file is imported or executed. A safetensors file with the same five tensors (and
the hooks given explicitly) is read too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .. import names as N
from ..errors import FileFormatError, MissingFileError
from .config import SAEConfig
from .saelens_format import check_finite

TENSORS = ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out")
_LAYER_IN_NAME = re.compile(r"blocks\.(\d+)\.ln2\.hook_normalized")


def _inert_class(qualified: str) -> type:
    """A stand-in for a class named in a checkpoint: keeps the pickled fields, runs nothing."""
    module, _, name = qualified.rpartition(".")

    def setstate(self, state: Any) -> None:
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})

    return type(name, (), {"__module__": module, "__setstate__": setstate})


def _load_pt(path: Path) -> dict[str, Any]:
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        with torch.serialization.safe_globals([_inert_class(q) for q in unsafe]):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure of a damaged or foreign file is reported as such
        raise FileFormatError(f"{str(path)!r} is not a readable transcoder checkpoint: {type(error).__name__}: {error}") from None
    if not isinstance(loaded, dict) or "state_dict" not in loaded:
        raise FileFormatError(f"{str(path)!r} should hold a dict with 'cfg' and 'state_dict' (Dunefsky et al.'s format)")
    return loaded


def _hooks_from(path: Path, cfg_obj: Any) -> tuple[str, str]:
    fields = vars(cfg_obj) if cfg_obj is not None and hasattr(cfg_obj, "__dict__") else {}
    hook_in, hook_out = fields.get("hook_point"), fields.get("out_hook_point")
    if not isinstance(hook_in, str):
        match = _LAYER_IN_NAME.search(path.name)
        if match is None:
            raise FileFormatError(f"{str(path)!r}: no hook_point in its config and none in its file name")
        hook_in = match.group(0)
    if not isinstance(hook_out, str):
        layer = N.layer_of(hook_in)
        if layer is None:
            raise FileFormatError(f"{str(path)!r}: cannot tell the layer of hook_point {hook_in!r}")
        hook_out = N.mlp_out(layer)
    return hook_in, hook_out


def read_dunefsky(path: Path, *, hook_name: str | None = None, hook_name_out: str | None = None
                  ) -> tuple[SAEConfig, dict[str, torch.Tensor]]:
    """A transcoder's config and tensors (gpt2probe's layout, float32, CPU) from one of Dunefsky et al.'s files.

    Args:
        path: the ``.pt`` file (or a ``.safetensors`` file with the same five tensors).
        hook_name, hook_name_out: override the hooks (needed for a safetensors file, which
            carries no config; by default a ``.pt`` file's own ``hook_point`` and
            ``out_hook_point``).
    """
    if not path.is_file():
        raise MissingFileError(f"{str(path)!r} does not exist")
    cfg_obj = None
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise FileFormatError(f"{str(path)!r} is not a readable safetensors file: {error}") from None
        if hook_name is None:
            match = _LAYER_IN_NAME.search(path.name)
            if match is None:
                # Transcoder.load takes no hooks: say how to give them through it too
                raise FileFormatError(f"{str(path)!r} carries no config and its name no hook: put the hook it reads in "
                                      "its name (e.g. 'blocks.4.ln2.hook_normalized.safetensors') for Transcoder.load, "
                                      "or pass hook_name='blocks.L.ln2.hook_normalized' to read_dunefsky")
            hook_name = match.group(0)
    else:
        loaded = _load_pt(path)
        state, cfg_obj = loaded["state_dict"], loaded.get("cfg")
    if not isinstance(state, dict):
        raise FileFormatError(f"{str(path)!r}: its state_dict is a {type(state).__name__}, not a dict of tensors")
    missing = [name for name in TENSORS if not isinstance(state.get(name), torch.Tensor)]
    if missing:
        raise FileFormatError(f"{str(path)!r} lacks {missing}; Dunefsky et al.'s transcoders hold {list(TENSORS)}")
    for name in TENSORS:
        if not state[name].dtype.is_floating_point:
            raise FileFormatError(f"{str(path)!r}: {name} is {state[name].dtype}, not floating point")
        check_finite(path, name, state[name])
    for name in ("W_enc", "W_dec"):
        if state[name].ndim != 2:
            raise FileFormatError(f"{str(path)!r}: {name} has shape {list(state[name].shape)}; a matrix was expected")
    if hook_name is not None:  # given (or, for safetensors, from the file name): the output hook follows its layer
        layer = N.layer_of(hook_name)
        if hook_name_out is None:  # not the file's own out_hook_point: that is another layer's when hook_name overrides
            if layer is None:
                raise FileFormatError(f"{str(path)!r}: hook_name {hook_name!r} names no layer, so the MLP output the "
                                      "transcoder writes is unknown: pass hook_name_out too")
            hook_name_out = N.mlp_out(layer)
        found_in, found_out = hook_name, hook_name_out
    else:
        found_in, found_out = _hooks_from(path, cfg_obj)
    W_enc, b_enc, W_dec, b_dec, b_dec_out = (state[name].double() for name in TENSORS)
    d_in, d_sae = W_enc.shape
    d_out = W_dec.shape[1]
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_out), "b_dec": (d_in,), "b_dec_out": (d_out,)}
    for name, shape in shapes.items():
        if tuple(state[name].shape) != shape:
            raise FileFormatError(f"{str(path)!r}: {name} has shape {list(state[name].shape)}, expected {list(shape)}")
    cfg = SAEConfig(
        d_in=d_in, d_sae=d_sae, d_out=d_out, architecture="standard",
        hook_name=found_in, hook_name_out=hook_name_out or found_out,
        apply_b_dec_to_input=False, model_name="gpt2",
        metadata={"source": "Dunefsky et al. 2024 transcoder", "file": path.name},
    )
    tensors = {
        "W_enc": W_enc.float(),
        "b_enc": (b_enc - b_dec @ W_enc).float(),  # the input bias, folded in
        "W_dec": W_dec.float(),
        "b_dec": b_dec_out.float(),
    }
    return cfg, tensors
