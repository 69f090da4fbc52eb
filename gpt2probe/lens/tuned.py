"""The tuned lens (Belrose et al. 2023): a learned affine translator per residual stream.

The logit lens reads stream ``h`` as ``ln_f(h) @ W_U``, as if ``h`` were the last layer's
output. Early streams are not in that basis, so the read-out is biased there. The tuned
lens first maps each stream with its own translator ``h -> h + A h + b`` and then reads it
out the same way; translators are trained (:mod:`gpt2probe.lens.tuned_training`) so that
the translated stream predicts what the model finally predicts.

``A`` and ``b`` start at zero: an untrained lens (:meth:`TunedLens.identity`) *is* the logit
lens, bit for bit. The last stream (the model's output) has no translator.

Saved as two files in a directory: ``tuned_lens.safetensors`` (``weight [stream, d_model,
d_model]``, ``bias [stream, d_model]``) and ``tuned_lens.json`` (which streams, the model's
sizes and a fingerprint of its weights, how the lens was trained, versions). Loading onto
a model with other weights is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from .. import names as N
from ..atomic import write_text_atomic
from ..errors import DamagedFileError, LensMismatchError, ShapeError
from ..jsonfile import read_object
from ..savefile import write_safetensors
from ..versions import versions
from .translators import Translators

if TYPE_CHECKING:
    from ..probe import GPT2Probe

FORMAT = "gpt2probe.TunedLens/1"
WEIGHTS_FILE = "tuned_lens.safetensors"
METADATA_FILE = "tuned_lens.json"


def translated_streams(n_layers: int, include_mid: bool) -> list[str]:
    """Hook names of the streams a tuned lens translates: every lens stream but the last (the model's output)."""
    out = [N.resid_pre(0)]
    for layer in range(n_layers):
        out += [N.resid_mid(layer)] if include_mid else []
        out += [N.resid_post(layer)] if layer < n_layers - 1 else []
    return out


def model_fingerprint(probe: GPT2Probe) -> str:
    """SHA-256 of the model's sizes and parameters rounded to float16.

    Float16 and float32 copies of the same checkpoint agree; different weights give a different fingerprint.
    """
    digest = hashlib.sha256()
    c = probe.cfg
    digest.update(json.dumps([c.n_layers, c.d_model, c.n_heads, c.d_mlp, c.d_vocab, c.n_ctx]).encode())
    with torch.no_grad():
        for name, param in probe.model.named_parameters():
            digest.update(name.encode())
            digest.update(param.detach().to(device="cpu", dtype=torch.float16).contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_description(probe: GPT2Probe) -> dict[str, Any]:
    """What a saved lens records about its model (sizes, name and fingerprint)."""
    c = probe.cfg
    return {"model_name": c.model_name, "n_layers": c.n_layers, "d_model": c.d_model, "d_vocab": c.d_vocab,
            "n_ctx": c.n_ctx, "fingerprint": model_fingerprint(probe)}


def _check_sizes(model: dict[str, Any], probe: GPT2Probe) -> None:
    c = probe.cfg
    for key, value in (("n_layers", c.n_layers), ("d_model", c.d_model), ("d_vocab", c.d_vocab)):
        if model.get(key) != value:
            raise LensMismatchError(
                f"this tuned lens was trained for {model.get('model_name')!r} with {key}={model.get(key)}, "
                f"but the model {c.model_name!r} has {key}={value}: train a lens for this model")


class TunedLens:
    """Translators for one model's residual streams, applied by :func:`gpt2probe.logit_lens` (``lens=``).

    Build one with :meth:`identity` (untrained: exactly the logit lens), :meth:`train` or
    :meth:`load`. ``stream_names`` are the hook names translated, in forward order.
    """

    def __init__(self, stream_names: Sequence[str], d_model: int, *, model: dict[str, Any],
                 training: dict[str, Any] | None = None) -> None:
        self.stream_names = list(stream_names)
        self.translators = Translators(len(self.stream_names), d_model)
        self.translators.requires_grad_(False)
        self.model = dict(model)
        self.training = dict(training or {})

    def __repr__(self) -> str:
        steps = self.training.get("steps")
        how = f"trained {steps} steps" if steps else "untrained (identity)"
        return f"TunedLens({self.model.get('model_name')!r}, {len(self.stream_names)} translators, {how})"

    @property
    def include_mid(self) -> bool:
        return any(name.endswith("hook_resid_mid") for name in self.stream_names)

    @classmethod
    def identity(cls, probe: GPT2Probe, *, include_mid: bool = False) -> TunedLens:
        """An untrained lens (zero translators): reading through it gives the logit lens exactly."""
        return cls(translated_streams(probe.cfg.n_layers, include_mid), probe.cfg.d_model,
                   model=model_description(probe)).to(probe.cfg.device)

    @classmethod
    def train(cls, probe: GPT2Probe, texts: Sequence[str], **kwargs) -> TunedLens:
        """Train translators for ``probe`` on ``texts``; see :func:`gpt2probe.lens.tuned_training.train_tuned_lens`."""
        from .tuned_training import train_tuned_lens

        start = cls.identity(probe, include_mid=kwargs.get("include_mid", False))
        return train_tuned_lens(probe, texts, start=start, **kwargs)

    # -- applying ------------------------------------------------------------------
    def check_model(self, probe: GPT2Probe) -> None:
        """Refuse a model whose sizes differ from the lens's model (cheap; :meth:`load` also checks the weights)."""
        _check_sizes(self.model, probe)

    @torch.no_grad()
    def translate(self, stack: Float[Tensor, "stream batch pos d_model"], names: Sequence[str]
                  ) -> Float[Tensor, "stream batch pos d_model"]:
        """Translate every stream of ``stack`` (hook ``names``, the last being the model's output, left as is)."""
        if len(names) != stack.shape[0]:
            raise ShapeError(f"{len(names)} stream names for a stack of {stack.shape[0]} streams")
        d_model = self.translators.weight.shape[-1]
        if stack.ndim != 4 or stack.shape[-1] != d_model:
            raise ShapeError(f"translate takes a [stream, batch, pos, d_model={d_model}] stack; got shape "
                             f"{tuple(stack.shape)}")
        if self.translators.weight.device != stack.device:
            raise LensMismatchError(f"the tuned lens is on {self.translators.weight.device} but the streams are on "
                                    f"{stack.device}: call lens.to({str(stack.device)!r})")
        index = {name: i for i, name in enumerate(self.stream_names)}
        out = []
        for s, name in enumerate(names[:-1]):
            if name not in index:
                raise LensMismatchError(
                    f"this tuned lens has no translator for {name!r}; it translates {', '.join(self.stream_names)}"
                    + (" (train it with include_mid=True to read the mid-block streams)" if "resid_mid" in name else ""))
            out.append(self.translators(stack[s], index[name]))
        return torch.stack([*out, stack[-1]])

    def to(self, device: str | torch.device) -> TunedLens:
        """Move the translators (in place) to ``device``; returns the lens."""
        self.translators.to(device)
        return self

    # -- persistence ---------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        return {"format": FORMAT, "stream_names": self.stream_names, "model": self.model,
                "training": self.training, "versions": versions()}

    def save(self, directory: str | Path) -> Path:
        """Write ``tuned_lens.safetensors`` and ``tuned_lens.json`` into ``directory`` (atomically, each)."""
        directory = Path(directory)
        tensors = {"weight": self.translators.weight.detach().cpu().contiguous(),
                   "bias": self.translators.bias.detach().cpu().contiguous()}
        write_safetensors(directory / WEIGHTS_FILE, tensors, {"format": FORMAT})
        write_text_atomic(directory / METADATA_FILE, json.dumps(self.metadata(), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, probe: GPT2Probe, *, allow_different_weights: bool = False) -> TunedLens:
        """Read a lens written by :meth:`save` for ``probe``'s model.

        Refused (:class:`~gpt2probe.errors.LensMismatchError`) when the model's sizes differ,
        or its weights' fingerprint differs unless ``allow_different_weights=True`` (e.g. a
        lens trained on a base model, read on a fine-tuned copy: at your own risk).
        """
        directory = Path(directory)
        meta_path, weights_path = directory / METADATA_FILE, directory / WEIGHTS_FILE
        if not meta_path.is_file() or not weights_path.is_file():
            raise LensMismatchError(f"{str(directory)!r} is not a tuned lens directory: it needs {METADATA_FILE} "
                                    f"and {WEIGHTS_FILE} (written by TunedLens.save or `gpt2probe tuned-lens train`)")
        fix = f"Train the lens again (`gpt2probe tuned-lens train`) or delete {str(directory)!r}."
        meta = read_object(meta_path, fix=fix)
        if meta.value.get("format") != FORMAT:
            raise LensMismatchError(f"{str(meta_path)!r} has format {meta.value.get('format')!r}; expected {FORMAT!r}")
        names = meta.get("stream_names", list, items=str)
        model = meta.object("model")
        for key in ("n_layers", "d_model", "d_vocab"):
            model.get(key, int)
        model.get("model_name", str)
        fingerprint = model.get("fingerprint", str)
        training = meta.get("training", dict)
        _check_sizes(model.value, probe)  # before any tensor is built from the file's sizes
        expected_names = [translated_streams(probe.cfg.n_layers, mid) for mid in (False, True)]
        if names not in expected_names:
            meta.fail(f"stream_names {names[:6]}{'...' if len(names) > 6 else ''} are not the streams of a "
                      f"{probe.cfg.n_layers}-layer model in forward order (expected {expected_names[0]} or, with "
                      f"include_mid, {expected_names[1]})")
        if not allow_different_weights:
            mine = model_fingerprint(probe)
            if mine != fingerprint:
                raise LensMismatchError(
                    f"the tuned lens in {str(directory)!r} was trained on {model.value['model_name']!r} "
                    f"(weights fingerprint {fingerprint[:12]}), but this model "
                    f"{probe.cfg.model_name!r} has other weights (fingerprint {mine[:12]}); "
                    "pass allow_different_weights=True to read it anyway")
        d_model = probe.cfg.d_model
        expected = {"weight": (len(names), d_model, d_model), "bias": (len(names), d_model)}
        tensors = _read_weights(weights_path, expected, fix)
        lens = cls(names, d_model, model=dict(model.value), training=dict(training))
        with torch.no_grad():
            lens.translators.weight.copy_(tensors["weight"])
            lens.translators.bias.copy_(tensors["bias"])
        return lens.to(probe.cfg.device)


def _read_weights(path: Path, expected: dict[str, tuple[int, ...]], fix: str) -> dict[str, Tensor]:
    """The translators' tensors in ``path``, checked for names, shapes, dtype and finiteness before use."""
    from safetensors import SafetensorError, safe_open

    where = str(path)
    try:
        with safe_open(where, framework="pt", device="cpu") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
            if shapes != expected:
                raise DamagedFileError(f"{where!r} holds tensors {shapes}; this lens needs {expected}. {fix}")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as error:
        raise DamagedFileError(f"{where!r} is not a complete safetensors file (truncated or damaged?): {error}. {fix}"
                               ) from None
    for key, tensor in tensors.items():
        if tensor.dtype != torch.float32:
            raise DamagedFileError(f"{where!r}: {key!r} is {tensor.dtype}; a tuned lens is saved in float32. {fix}")
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise DamagedFileError(f"{where!r}: {key!r} holds {bad} NaN or infinite value(s). {fix}")
    return tensors
