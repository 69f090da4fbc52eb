"""``SAE`` and ``Transcoder``: one encoder and decoder, the same parameters and math as SAELens 6.

Both compute::

    acts  = act(x_in @ W_enc + b_enc)        x_in = x - b_dec if apply_b_dec_to_input else x
    out   = acts @ W_dec + b_dec  (+ x @ W_skip for a transcoder with a skip connection)

with ``act`` chosen by ``cfg.architecture`` (:mod:`gpt2probe.sae.activations`). An SAE
reconstructs the activation it reads; a transcoder reads one hook (the MLP's input,
``blocks.L.ln2.hook_normalized``) and predicts another (``blocks.L.hook_mlp_out``).

Parameters: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_out]``,
``b_dec [d_out]``, ``threshold [d_sae]`` (JumpReLU and batch top-k, else ``None``),
``W_skip [d_in, d_out]`` (transcoders with a skip connection, else ``None``).

Inputs are never cast: a float16 activation given to a float32 SAE is an error that says
to move one of them (``sae.to(x.dtype)``), so no precision changes behind the user's back.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from ..errors import InvalidArgumentError, InvalidTypeError, ShapeError
from . import activations, evaluation, files, pretrained, training
from .config import SAEConfig

# The stages of one pass that splicing exposes as ``"<hook>.<stage>"`` names (SAELens's names).
INPUT, ACTS_PRE, ACTS_POST, RECONS, ERROR = (
    "hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_error",
)
STAGES = (INPUT, ACTS_PRE, ACTS_POST, RECONS, ERROR)

Tap = Callable[[str, Tensor], Tensor]
C = TypeVar("C", bound="SparseCoder")


def _no_tap(stage: str, tensor: Tensor) -> Tensor:
    return tensor


class SparseCoder(nn.Module):
    """What :class:`SAE` and :class:`Transcoder` share: parameters, encode, decode, moves and reprs."""

    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter
    threshold: nn.Parameter | None
    W_skip: nn.Parameter | None

    def __init__(self, cfg: SAEConfig, *, generator: torch.Generator | None = None) -> None:
        """Parameters of ``cfg``'s sizes on ``cfg.device`` in ``cfg.dtype``.

        ``W_dec`` is drawn Kaiming-uniform (from ``generator`` when given, for the same
        numbers on every run) with unit-norm rows, ``W_enc`` is its transpose for an SAE
        (an independent draw for a transcoder), biases, threshold and ``W_skip`` are zero.
        Loading replaces them all.
        """
        super().__init__()
        if not isinstance(cfg, SAEConfig):
            raise InvalidTypeError(f"{type(self).__name__} needs an SAEConfig, got {type(cfg).__name__}")
        self._check_kind(cfg)
        self._cfg = cfg
        factory = {"dtype": cfg.dtype, "device": cfg.device}
        w_dec = torch.empty(cfg.d_sae, cfg.write_width, dtype=torch.float32)
        nn.init.kaiming_uniform_(w_dec, generator=generator)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        if cfg.is_transcoder:
            w_enc = torch.empty(cfg.d_in, cfg.d_sae, dtype=torch.float32)
            nn.init.kaiming_uniform_(w_enc, generator=generator)
        else:
            w_enc = w_dec.T.clone()
        self.W_enc = nn.Parameter(w_enc.to(**factory).contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, **factory))
        self.W_dec = nn.Parameter(w_dec.to(**factory))
        self.b_dec = nn.Parameter(torch.zeros(cfg.write_width, **factory))
        self.threshold = nn.Parameter(torch.zeros(cfg.d_sae, **factory)) if cfg.thresholded else None
        self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.write_width, **factory)) if cfg.skip else None

    @staticmethod
    def _check_kind(cfg: SAEConfig) -> None:
        """Refuse a config this class does not serve (an SAE config for a Transcoder, and back)."""

    # -- config, device and dtype ---------------------------------------------------------
    @property
    def cfg(self) -> SAEConfig:
        """The settings, with the device and dtype the parameters have now (after any ``.to(...)``)."""
        param = self.W_enc
        if (param.device, param.dtype) != (self._cfg.device, self._cfg.dtype):
            self._cfg = dataclasses.replace(self._cfg, device=param.device, dtype=param.dtype)
        return self._cfg

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_enc.dtype

    # -- the computation ------------------------------------------------------------------
    def _check_input(self, x: Tensor, width: int, what: str) -> None:
        if not isinstance(x, Tensor):
            raise InvalidTypeError(f"{what} must be a tensor, got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != width:
            raise ShapeError(f"{what} has shape {tuple(x.shape)}; its last axis must be {width} wide")
        if x.dtype != self.dtype or x.device != self.device:
            raise InvalidArgumentError(
                f"{what} is {x.dtype} on {x.device} but the {type(self).__name__} is {self.dtype} on {self.device}: "
                f"move one of them (sae.to(x.device, x.dtype) or x.to(sae.W_enc)); nothing is cast silently"
            )

    def _pre(self, x_in: Float[Tensor, "*batch d_in"], tap: Tap) -> Float[Tensor, "*batch d_sae"]:
        # "expected_average_only_in": SAELens folds the training-time input scale into the
        # weights it saves, and runs inference on the raw activation, as here.
        if self._cfg.apply_b_dec_to_input:
            x_in = x_in - self.b_dec
        # The bias is added in place: the same float additions as ``x_in @ W_enc + b_enc``
        # without a second [..., d_sae] tensor (96 MiB per 1,024 tokens at d_sae 24,576; with
        # encode_with_support's in-place ReLU, ~20% off a harvest's encoder on a loaded 2-core
        # CPU). Autograd allows it: the product's backward needs its inputs, not its output.
        pre = (x_in @ self.W_enc).add_(self.b_enc)
        if self._cfg.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        return tap(ACTS_PRE, pre)

    def _activate(self, pre: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_sae"]:
        arch = self._cfg.architecture
        if arch == "standard":
            return activations.relu(pre)
        if arch == "topk":
            return activations.topk(pre, self._cfg.topk_k)
        threshold = self.threshold  # built for the thresholded architectures, the only ones left here
        if threshold is None:
            raise InvalidArgumentError(f"this {arch!r} {type(self).__name__} has no threshold parameter")
        return activations.jumprelu(pre, threshold)

    def _encode(self, x: Float[Tensor, "*batch d_in"], tap: Tap) -> Float[Tensor, "*batch d_sae"]:
        return tap(ACTS_POST, self._activate(self._pre(x, tap)))

    def _decode(self, acts: Float[Tensor, "*batch d_sae"], tap: Tap) -> Float[Tensor, "*batch d_out"]:
        if self._cfg.rescale_acts_by_decoder_norm:
            acts = acts / self.W_dec.norm(dim=-1)
        return tap(RECONS, acts @ self.W_dec + self.b_dec)

    def _skip(self, x: Float[Tensor, "*batch d_in"]) -> Tensor | float:
        return 0.0 if self.W_skip is None else x @ self.W_skip

    def _centered(self, x: Float[Tensor, "*batch d_in"]) -> tuple[Tensor, Tensor | float]:
        """``x`` without each token's mean over its last axis when ``cfg.center_input``, and that mean."""
        if not self._cfg.center_input:
            return x, 0.0
        mean = x.mean(-1, keepdim=True)
        return x - mean, mean

    def encode(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_sae"]:
        """Feature activations (after the nonlinearity) of activations ``x``.

        Args:
            x: activations read at ``cfg.hook_name``, any leading shape, in the SAE's dtype and device.

        Returns:
            ``[..., d_sae]``, non-negative, mostly zero.

        Example:
            >>> acts = sae.encode(cache["blocks.2.hook_resid_post"])  # doctest: +SKIP
        """
        self._check_input(x, self._cfg.d_in, "the input")
        return self._encode(self._centered(x)[0], _no_tap)

    def encode_with_support(self, x: Float[Tensor, "*batch d_in"]
                            ) -> tuple[Float[Tensor, "*batch d_sae"], Int[Tensor, "*batch slot"] | None]:
        """:meth:`encode`, and where its non-zero activations can be, when the architecture says so for free.

        A top-k coder keeps ``k`` features per token: their indices (``[..., k]``, distinct)
        are returned beside the activations, and every activation outside them is exactly 0,
        so a caller summarising the features (the corpus harvest) reads ``k`` values per token
        instead of searching all ``d_sae``. Other architectures return ``None``: their zeros
        must be found in the activations.

        Args:
            x: activations read at ``cfg.hook_name``, as for :meth:`encode`.

        Returns:
            ``(acts, support)``: ``acts`` equal to ``encode(x)``; ``support`` the indices, or ``None``.

        Example:
            >>> acts, support = sae.encode_with_support(cache["blocks.2.hook_resid_post"])  # doctest: +SKIP
        """
        self._check_input(x, self._cfg.d_in, "the input")
        pre = self._pre(self._centered(x)[0], _no_tap)
        if self._cfg.architecture == "topk":
            return activations.topk_with_support(pre, self._cfg.topk_k)
        if self._cfg.architecture == "standard":  # ReLU in place: ``pre`` is this call's own, and no tap reads it
            return pre.relu_(), None
        return self._activate(pre), None

    def encode_pre(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_sae"]:
        """The pre-activations ``x_in @ W_enc + b_enc`` before the nonlinearity (SAELens's ``hidden_pre``)."""
        self._check_input(x, self._cfg.d_in, "the input")
        return self._pre(self._centered(x)[0], _no_tap)

    def decode(self, acts: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_out"]:
        """``acts @ W_dec + b_dec``: what the features write (without a transcoder's skip term).

        Args:
            acts: feature activations ``[..., d_sae]`` (from :meth:`encode`, or edited).
        """
        self._check_input(acts, self._cfg.d_sae, "the feature activations")
        return self._decode(acts, _no_tap)

    def forward(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_out"]:
        """The reconstruction (SAE) or prediction (transcoder, skip term included) of ``x``.

        With ``cfg.center_input`` the mean removed before encoding is added back.
        """
        self._check_input(x, self._cfg.d_in, "the input")
        x, mean = self._centered(x)
        return self._decode(self._encode(x, _no_tap), _no_tap) + self._skip(x) + mean

    def run_stages(self, x: Float[Tensor, "*batch d_in"], tap: Tap) -> Float[Tensor, "*batch d_out"]:
        """``forward`` with ``tap(stage, tensor)`` called at each stage, which may replace the tensor.

        The stages are ``hook_sae_input``, ``hook_sae_acts_pre``, ``hook_sae_acts_post``
        and ``hook_sae_recons`` (SAELens's hook names); splicing builds on this. The skip
        term (transcoders) is added after ``hook_sae_recons``, as in SAELens. With
        ``cfg.center_input``, ``hook_sae_input`` sees the centered input (what the encoder
        reads) and the mean is added back after ``hook_sae_recons``.
        """
        self._check_input(x, self._cfg.d_in, "the input")
        x, mean = self._centered(x)
        x = tap(INPUT, x)
        return self._decode(self._encode(x, tap), tap) + self._skip(x) + mean

    # -- files ----------------------------------------------------------------------------
    @classmethod
    def load(cls: type[C], path: str | os.PathLike, *, device: str | torch.device | None = None,
             dtype: str | torch.dtype | None = None) -> C:
        """Read an SAELens 6 folder (``cfg.json`` + ``sae_weights.safetensors``) or a Dunefsky et al. transcoder file.

        Args:
            path: the folder (or, for a transcoder, the ``.pt`` file; see
                :mod:`gpt2probe.sae.dunefsky_format`).
            device: where to put it (CPU by default, whatever the file says).
            dtype: convert to this dtype (the file's ``dtype`` by default).

        Raises:
            MissingFileError: no such folder or file.
            FileFormatError: a file that is damaged, lacks a setting or tensor, or uses an
                option gpt2probe does not run (named in the message).

        Example:
            >>> sae = gpt2probe.SAE.load("saes/blocks.2.hook_resid_post")  # doctest: +SKIP
        """
        return files.load_coder(cls, path, device=device, dtype=dtype)

    def save(self, path: str | os.PathLike) -> Path:
        """Write an SAELens 6 folder that SAELens's ``SAE.load_from_disk`` (and :meth:`load`) reads to the same numbers.

        Batch top-k is written as SAELens writes it for inference, a JumpReLU SAE with its
        thresholds (gpt2probe reads it back as batch top-k). Returns the folder.
        """
        return files.save_coder(self, path)

    @classmethod
    def from_pretrained(cls: type[C], release: str, sae_id: str, *, directory: str | os.PathLike | None = None,
                        device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> C:
        """One SAE of an SAELens release, e.g. ``SAE.from_pretrained("gpt2-small-res-jb", "blocks.8.hook_resid_pre")``.

        Downloaded through ``huggingface_hub`` on a connected machine, read from its cache
        offline (see :mod:`gpt2probe.sae.pretrained` for the rules). ``directory`` is a
        local copy of the release's repository, used instead of the hub; ``release`` may
        also be such a directory, or a hub repository id.

        Raises:
            WeightsUnavailableError: not cached and the hub cannot be reached (the message
                says how to get the files).
        """
        folder, centered = pretrained.locate(release, sae_id, directory)
        cfg, tensors, _ = files.read_any(folder)
        return files.build(cls, pretrained.with_release_settings(cfg, centered), tensors, device=device, dtype=dtype)

    # -- training and evaluation (gpt2probe.sae.training, gpt2probe.sae.evaluation) ----------
    fit = classmethod(training.fit)

    @training.train_method(training.train)  # on the class: training.train, e.g. SAE.train(probe, texts, hook=...)
    # pyright sees a descriptor where nn.Module has a method; on an instance it is Module.train (TrainMethod.__get__).
    def train(self: C, mode: bool = True) -> C:  # pyright: ignore[reportIncompatibleMethodOverride]
        """On an instance, PyTorch's ``nn.Module.train(mode)`` (``eval()`` calls it): switch training mode."""
        nn.Module.train(self, mode)
        return self

    def evaluate(self, probe, texts, **options) -> evaluation.Evaluation:
        """Reconstruction, sparsity and spliced-in language-model loss on ``texts``; see :func:`gpt2probe.sae.evaluation.evaluate`."""
        return evaluation.evaluate(self, probe, texts, **options)

    # -- display --------------------------------------------------------------------------
    def _summary(self) -> list[tuple[str, object]]:
        c = self.cfg
        rows: list[tuple[str, object]] = [("architecture", c.architecture)]
        if c.k is not None:
            rows.append(("k", c.k))
        rows.append(("reads", c.hook_name))
        if c.is_transcoder:
            rows.append(("writes", c.hook_name_out))
        rows += [("d_in", c.d_in), ("d_sae", c.d_sae)]
        if c.is_transcoder:
            rows += [("d_out", c.d_out), ("skip", c.skip)]
        rows += [("dtype", str(c.dtype).removeprefix("torch.")), ("device", str(c.device))]
        if c.center_input:
            rows.append(("center_input", True))
        if c.model_name:
            rows.append(("model", c.model_name))
        return rows

    def __repr__(self) -> str:
        c = self.cfg
        arch = f"{c.architecture}, k={c.k}" if c.architecture == "topk" else c.architecture
        where = f"{c.hook_name} -> {c.hook_name_out}" if c.is_transcoder else c.hook_name
        skip = ", skip" if c.skip else ""
        return (f"{type(self).__name__}({arch}, {where}, d_in={c.d_in}, d_sae={c.d_sae}{skip}, "
                f"{str(c.dtype).removeprefix('torch.')}, {c.device})")

    def _repr_html_(self) -> str:
        """A small table of the settings (notebooks)."""
        from ..display.tables import table

        return table(type(self).__name__, ["setting", "value"], [[k, v] for k, v in self._summary()])


class SAE(SparseCoder):
    """A sparse autoencoder on one hook point: ``decode(encode(x))`` reconstructs ``x``.

    Build one from an :class:`SAEConfig`, or load one (:meth:`load`, :meth:`from_pretrained`).

    Example:
        >>> from gpt2probe import SAE, SAEConfig
        >>> sae = SAE(SAEConfig(d_in=768, d_sae=24576, architecture="topk", k=32,
        ...                     hook_name="blocks.8.hook_resid_pre"))
        >>> sae.W_enc.shape, sae.W_dec.shape
        (torch.Size([768, 24576]), torch.Size([24576, 768]))
    """

    @staticmethod
    def _check_kind(cfg: SAEConfig) -> None:
        if cfg.is_transcoder:
            raise InvalidArgumentError(f"this config writes to {cfg.hook_name_out!r}, elsewhere than it reads: "
                                       "build a Transcoder, not an SAE")


class Transcoder(SparseCoder):
    """A sparse MLP replacement: reads the MLP's input and predicts its output (Dunefsky et al. 2024).

    ``forward(x)`` is ``decode(encode(x)) + x @ W_skip`` (the skip term only when
    ``cfg.skip``). By default it reads ``blocks.L.ln2.hook_normalized`` (the MLP's input
    before ``ln_2``'s weight and bias, as TransformerLens's folded LayerNorm gives it) and
    writes ``blocks.L.hook_mlp_out``.
    """

    @staticmethod
    def _check_kind(cfg: SAEConfig) -> None:
        if not cfg.is_transcoder:
            raise InvalidArgumentError("a Transcoder's config needs hook_name_out (where it writes, e.g. "
                                       "'blocks.3.hook_mlp_out'); one that writes where it reads is an SAE")
