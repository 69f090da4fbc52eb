"""What an SAE or transcoder is: sizes, architecture, where it reads and writes, checked once when built.

:class:`SAEConfig` is frozen: a setting is given when the config is built (a misspelt
keyword is a ``TypeError`` then, never an attribute silently added later), and every value
is checked in ``__post_init__`` so that a config that exists is one gpt2probe can run.
Device and dtype are the parameters' own (``sae.cfg`` is refreshed after ``sae.to(...)``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import names as N
from .. import validate
from ..configs.sae import ARCHITECTURES as ARCHITECTURES  # declared with the training settings (torch-free, for the CLI)
from ..errors import InvalidArgumentError, InvalidTypeError, SAEMismatchError
from ..model.config import ProbeConfig

NORMALIZATIONS = ("none", "expected_average_only_in")
# Architectures whose features fire above a learned per-feature threshold at inference
# (batch top-k is trained with a batch-wide top-k and used with a threshold, as its paper does).
THRESHOLDED = ("jumprelu", "batchtopk")


def _check_int(name: str, value: object, *, low: int = 1) -> int:
    """``value`` if it is an integer ``>= low``, else an error naming ``SAEConfig.<name>``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"SAEConfig.{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < low:
        raise InvalidArgumentError(f"SAEConfig.{name} must be >= {low}, got {value}")
    return value


def _check_hook_name(what: str, name: object) -> None:
    """A hook name gpt2probe knows (for some number of layers), e.g. ``blocks.3.hook_resid_post``."""
    if not isinstance(name, str):
        raise InvalidTypeError(f"SAEConfig.{what} must be a hook name string, got {type(name).__name__} {name!r}")
    layer = N.layer_of(name)
    valid = N.all_names(1 if layer is None else layer + 1)
    if name not in valid:
        raise N.unknown_name_error(name, valid)


@dataclass(frozen=True, kw_only=True)
class SAEConfig:
    """An SAE's or transcoder's settings, in SAELens 6's names.

    Attributes:
        d_in: width of the activation read (``d_model`` for the residual stream).
        d_sae: number of features.
        architecture: ``"standard"`` (ReLU), ``"topk"`` (the ``k`` largest pre-activations,
            ReLU'd), ``"batchtopk"`` (trained with a batch-wide top-k, used with the
            per-feature ``threshold`` at inference) or ``"jumprelu"`` (ReLU, zero at or
            below ``threshold``).
        hook_name: where the SAE reads (and, for an SAE, writes back), e.g.
            ``"blocks.3.hook_resid_post"``; a transcoder reads ``blocks.L.ln2.hook_normalized``.
        hook_name_out: where a transcoder writes (``blocks.L.hook_mlp_out``); ``None`` for an SAE.
        d_out: width written; equals ``d_in`` for an SAE (``None`` means that).
        k: top-k's active features per token (an integer); for ``"batchtopk"`` the average
            number of active features per token it was trained for (kept as a record, the
            threshold decides at inference); ``None`` for the others.
        apply_b_dec_to_input: subtract ``b_dec`` from the input before encoding. ``None``
            means SAELens's default: True for an SAE, False for a transcoder (whose ``b_dec``
            lives in the output space, so True is refused there).
        normalize_activations: ``"none"``, or ``"expected_average_only_in"`` as SAELens
            saves it: the training-time input scaling already folded into the weights, so
            inference uses the weights as they are (SAELens 6 does the same). SAELens's
            run-time modes (``"constant_norm_rescale"``, ``"layer_norm"``) are refused.
        rescale_acts_by_decoder_norm: top-k only: rank pre-activations scaled by each
            decoder row's norm, and divide them back out before decoding (SAELens's option).
        skip: a transcoder with a skip connection ``W_skip [d_in, d_out]``.
        center_input: the SAE was trained on TransformerLens's model with
            ``center_writing_weights=True`` (SAELens's ``gpt2-small-res-jb`` and others),
            whose residual stream is Hugging Face's minus each token's mean over
            ``d_model``: subtract that mean before encoding and add it back to the
            reconstruction. Every reader of a ``d_model``-wide stream starts with a
            LayerNorm, which removes the mean, so the model downstream is unchanged by it.
        dtype, device: the parameters' dtype and device.
        model_name: the model the SAE was trained on, if known.
        metadata: anything else a file carried (SAELens's ``metadata``), kept for saving back.
    """

    d_in: int
    d_sae: int
    hook_name: str
    architecture: str = "standard"
    hook_name_out: str | None = None
    d_out: int | None = None
    k: int | float | None = None
    apply_b_dec_to_input: bool | None = None
    normalize_activations: str = "none"
    rescale_acts_by_decoder_norm: bool = False
    skip: bool = False
    center_input: bool = False
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")
    model_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        _check_int("d_in", self.d_in)
        _check_int("d_sae", self.d_sae)
        if self.d_out is None:
            object.__setattr__(self, "d_out", self.d_in)
        _check_int("d_out", self.d_out)
        if self.architecture not in ARCHITECTURES:
            raise InvalidArgumentError(
                f"SAEConfig.architecture {self.architecture!r} is not one of {', '.join(map(repr, ARCHITECTURES))}"
            )
        self._check_k()
        if self.normalize_activations not in NORMALIZATIONS:
            raise InvalidArgumentError(
                f"normalize_activations={self.normalize_activations!r} is not supported: gpt2probe runs "
                f"{' and '.join(map(repr, NORMALIZATIONS))} (weights used as stored); SAELens's run-time "
                "modes 'constant_norm_rescale' and 'layer_norm' rescale each input and are not implemented"
            )
        if self.apply_b_dec_to_input is None:
            object.__setattr__(self, "apply_b_dec_to_input", not self.is_transcoder)
        for flag in ("apply_b_dec_to_input", "rescale_acts_by_decoder_norm", "skip", "center_input"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidTypeError(f"SAEConfig.{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.rescale_acts_by_decoder_norm and self.architecture != "topk":
            raise InvalidArgumentError("rescale_acts_by_decoder_norm is a top-k option; architecture is "
                                       f"{self.architecture!r}")
        _check_hook_name("hook_name", self.hook_name)
        if self.hook_name_out is not None:
            _check_hook_name("hook_name_out", self.hook_name_out)
        if not self.is_transcoder:
            if self.d_out != self.d_in:
                raise InvalidArgumentError(f"an SAE writes back where it reads: d_out ({self.d_out}) must equal "
                                           f"d_in ({self.d_in}); a map between two hooks is a Transcoder")
            if self.skip:
                raise InvalidArgumentError("skip=True (W_skip) is a transcoder's option; this config has no hook_name_out")
        elif self.center_input:
            raise InvalidArgumentError("center_input is an SAE option (a transcoder reads LayerNorm's already-centered output)")
        elif self.apply_b_dec_to_input:
            raise InvalidArgumentError("apply_b_dec_to_input must be False for a transcoder: its b_dec is in the "
                                       "output space (as SAELens requires too)")
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise InvalidTypeError(f"SAEConfig.dtype must be a floating torch.dtype, got {self.dtype!r}")
        # a string such as "cuda:0" becomes a torch.device; one this machine lacks (or "bogus") is our error now, not
        # an AssertionError or RuntimeError from torch when the parameters are made
        device = validate.device("SAEConfig.device", self.device)
        if device is None:
            raise InvalidTypeError("SAEConfig.device must be a device such as 'cpu' or 'cuda', got None")
        object.__setattr__(self, "device", device)
        if not isinstance(self.metadata, dict):
            raise InvalidTypeError(f"SAEConfig.metadata must be a dict, got {type(self.metadata).__name__}")

    def _check_k(self) -> None:
        if self.architecture == "topk":
            if _check_int("k", self.k) > self.d_sae:
                raise InvalidArgumentError(f"top-k's k ({self.k}) cannot exceed d_sae ({self.d_sae})")
        elif self.architecture == "batchtopk":
            if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, (int, float))
                                       or not math.isfinite(self.k) or not 0 < self.k <= self.d_sae):
                raise InvalidArgumentError(f"batch top-k's k is the average number of active features, in (0, d_sae]; "
                                           f"got {self.k!r}")
        elif self.k is not None:
            raise InvalidArgumentError(f"k is a top-k setting; architecture {self.architecture!r} takes k=None, got {self.k!r}")

    @classmethod
    def for_transcoder(cls, layer: int, *, d_model: int, d_sae: int, **settings: Any) -> SAEConfig:
        """A transcoder's config for block ``layer``: reads ``blocks.L.ln2.hook_normalized``, writes ``blocks.L.hook_mlp_out``."""
        _check_int("layer", layer, low=0)
        return cls(d_in=d_model, d_sae=d_sae, hook_name=N.ln_normalized(layer, 2), hook_name_out=N.mlp_out(layer), **settings)

    @property
    def is_transcoder(self) -> bool:
        """Whether it writes somewhere else than it reads (``hook_name_out`` is set)."""
        return self.hook_name_out is not None

    @property
    def layer(self) -> int | None:
        """The block of ``hook_name`` (``None`` for the embeddings and the final norm)."""
        return N.layer_of(self.hook_name)

    @property
    def write_hook(self) -> str:
        """Where the reconstruction goes: ``hook_name_out`` for a transcoder, else ``hook_name``."""
        return self.hook_name_out if self.hook_name_out is not None else self.hook_name

    @property
    def write_width(self) -> int:
        """The width of what is written: ``d_out`` (``__post_init__`` set a ``None`` to ``d_in``)."""
        return self.d_in if self.d_out is None else self.d_out

    @property
    def topk_k(self) -> int:
        """Top-k's ``k``, the integer ``__post_init__`` checked; an error for the other architectures."""
        if self.architecture != "topk" or not isinstance(self.k, int):
            raise InvalidArgumentError(f"only architecture 'topk' keeps exactly k features per token; this config is "
                                       f"{self.architecture!r} with k={self.k!r}")
        return self.k

    @property
    def thresholded(self) -> bool:
        """Whether the architecture has a per-feature ``threshold`` parameter."""
        return self.architecture in THRESHOLDED

    def replace(self, **changes: Any) -> SAEConfig:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)


def stream_width(hook: str, probe_cfg: ProbeConfig) -> int | None:
    """The last-axis width of ``hook``'s ``[batch, pos, width]`` activation, or ``None`` for per-head and score hooks."""
    if hook.endswith(("mlp.hook_pre", "mlp.hook_post")):
        return probe_cfg.d_mlp
    if hook.endswith(("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
                      "hook_normalized", "hook_embed", "hook_pos_embed")):
        return probe_cfg.d_model
    return None


def check_fits(cfg: SAEConfig, probe_cfg: ProbeConfig) -> None:
    """Refuse an SAE whose hooks or widths do not fit the probe's model.

    Raises:
        SAEMismatchError: a hook the model lacks (too few layers), one whose activation is
            not a ``[batch, pos, width]`` stream (per-head ``hook_z``, attention patterns,
            scales), or ``d_in``/``d_out`` that differ from the hook's width.
    """
    valid = N.all_names(probe_cfg.n_layers)
    name = probe_cfg.model_name
    for hook in (cfg.hook_name, cfg.hook_name_out):
        if hook is None:
            continue
        if hook not in valid:
            raise SAEMismatchError(f"the SAE reads or writes {hook!r}, which {name} ({probe_cfg.n_layers} layers) does not have")
        if stream_width(hook, probe_cfg) is None:
            raise SAEMismatchError(f"the SAE's hook {hook!r} is not a [batch, pos, width] stream; gpt2probe splices SAEs "
                                "on the residual stream, attention and MLP outputs, LayerNorm outputs and MLP neurons")
    for what, width, hook in (("d_in", cfg.d_in, cfg.hook_name), ("d_out", cfg.d_out, cfg.write_hook)):
        expected = stream_width(hook, probe_cfg)
        if width != expected:
            raise SAEMismatchError(
                f"the SAE's {what} is {width}, but {hook!r} of {name} has width {expected}: this SAE was made for another model"
            )


def check_placed(coder: Any, cfg: SAEConfig, probe_cfg: ProbeConfig) -> None:
    """Refuse a coder in another dtype or on another device than the probe's model (nothing is cast silently).

    Raises:
        SAEMismatchError: naming both placements and the move that fixes it.
    """
    if (cfg.dtype, cfg.device) != (probe_cfg.dtype, probe_cfg.device):
        raise SAEMismatchError(
            f"{coder!r} is {cfg.dtype} on {cfg.device} but the model is {probe_cfg.dtype} on {probe_cfg.device}: "
            f"move it with sae.to(probe.cfg.device, probe.cfg.dtype) (nothing is cast silently)"
        )
