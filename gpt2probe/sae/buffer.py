"""Training batches of activations: from a tensor, or streamed through a bounded shuffle buffer.

Two sources, one interface (``next()`` -> ``[batch, width]``, ``sample(n)``, ``state_dict()``,
``load_state_dict()``):

- :class:`TensorBatches`: the rows of one tensor, in a fresh seeded order every epoch.
- :class:`StreamBatches`: chunks of rows from any iterator (a model run over a corpus,
  precomputed shards) mixed in a buffer of ``capacity`` rows: fill, shuffle, hand out the
  first half as batches, keep the second half, refill. Memory is ``capacity x width``
  whatever the corpus size; a row is handed out at most ``capacity / 2`` rows after its
  neighbours at the earliest, so consecutive tokens of a document are spread over batches.

Both are deterministic given their ``torch.Generator``, and their state (generator, buffer
contents, position) is saved in checkpoints, so a resumed run sees exactly the batches an
uninterrupted one would. A transcoder's input and target travel as one row ``[x, y]``, so
shuffling keeps them paired.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import ActivationError, ShapeError


def check_rows(rows: Tensor, width: int, what: str) -> Tensor:
    """``rows`` as ``[n, width]`` (leading axes flattened), refusing other widths and NaN or infinity."""
    if not isinstance(rows, Tensor) or not rows.dtype.is_floating_point:
        raise ActivationError(f"{what} must be a floating-point tensor, got {type(rows).__name__} "
                              f"{getattr(rows, 'dtype', '')}".rstrip())
    if rows.ndim == 0 or rows.shape[-1] != width:
        raise ShapeError(f"{what} has shape {tuple(rows.shape)}; its last axis must be {width} wide")
    rows = rows.reshape(-1, width)
    if not torch.isfinite(rows).all():
        bad = int((~torch.isfinite(rows)).any(-1).sum())
        raise ActivationError(f"{what} holds NaN or infinite values in {bad} of {rows.shape[0]} rows; "
                              "remove them (an SAE cannot learn from them)")
    return rows


@runtime_checkable
class Batches(Protocol):
    """Where training batches come from: :class:`TensorBatches` or :class:`StreamBatches`."""

    def next(self) -> Tensor: ...
    def sample(self, n: int) -> Tensor: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TensorBatches:
    """Batches of ``batch_size`` rows of ``data``, reshuffled every epoch (a batch may span two epochs)."""

    def __init__(self, data: Float[Tensor, "n width"], batch_size: int, generator: torch.Generator) -> None:
        if data.shape[0] < batch_size:
            raise ActivationError(f"{data.shape[0]} activations are fewer than one batch ({batch_size}); "
                                  "pass more activations or a smaller batch_size")
        self.data, self.batch_size, self.gen = data, batch_size, generator
        self.perm = torch.randperm(data.shape[0], generator=generator)
        self.pos = 0

    def next(self) -> Float[Tensor, "batch width"]:
        parts, need = [], self.batch_size
        while need:
            if self.pos == self.perm.shape[0]:
                self.perm, self.pos = torch.randperm(self.data.shape[0], generator=self.gen), 0
            take = self.perm[self.pos:self.pos + need]
            parts.append(take)
            self.pos += take.shape[0]
            need -= take.shape[0]
        return self.data[torch.cat(parts)]

    def sample(self, n: int) -> Float[Tensor, "m width"]:
        """Up to ``n`` rows in a fixed random order (for initialisation; independent of the batches)."""
        gen = torch.Generator().manual_seed(0)
        return self.data[torch.randperm(self.data.shape[0], generator=gen)[:n]]

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.perm, self.pos = state["perm"].clone(), int(state["pos"])


@runtime_checkable
class ChunkSource(Protocol):
    """Chunks of rows, with a position that can be saved and restored (see :class:`~.stream.CorpusActivations`)."""

    width: int

    def chunks(self) -> Iterator[Tensor]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class IteratorSource:
    """A plain iterator of ``[..., width]`` tensors (no position to save: resuming is refused)."""

    resumable = False

    def __init__(self, iterator: Iterator[Tensor], width: int, what: str = "the activations") -> None:
        self.iterator, self.width, self.what, self.seen = iterator, width, what, 0

    def chunks(self) -> Iterator[Tensor]:
        for chunk in self.iterator:
            rows = check_rows(chunk, self.width, f"{self.what} (chunk {self.seen})")
            self.seen += 1
            yield rows

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise ActivationError("a run on an iterator of activations cannot be resumed (an iterator cannot be "
                              "rewound); pass a tensor, or train on a model and corpus")


class StreamBatches:
    """Batches from a :class:`ChunkSource` through a shuffle buffer of ``capacity`` rows (``>= 2 * batch_size``)."""

    def __init__(self, source: ChunkSource, batch_size: int, capacity: int, generator: torch.Generator,
                 dtype: torch.dtype = torch.float32) -> None:
        if capacity < 2 * batch_size:
            raise ActivationError(f"the shuffle buffer ({capacity} rows) must hold at least two batches "
                                  f"({2 * batch_size} rows)")
        self.source, self.batch_size, self.capacity, self.gen = source, batch_size, capacity, generator
        self.storage = torch.empty(capacity, source.width, dtype=dtype)
        self.fill = 0  # rows held
        self.ptr = 0  # next row to hand out
        self.end = 0  # rows that may be handed out before the next refill
        self.pending = torch.empty(0, source.width, dtype=dtype)  # the part of a chunk that did not fit
        self._chunks: Iterator[Tensor] | None = None
        self.exhausted = False

    def _pull(self) -> Tensor | None:
        if self._chunks is None:
            self._chunks = self.source.chunks()
        try:
            return next(self._chunks)
        except StopIteration:
            self.exhausted = True
            return None

    def _refill(self) -> None:
        keep = self.fill - self.end
        self.storage[:keep] = self.storage[self.end:self.fill].clone()
        self.fill = keep
        while self.fill < self.capacity:
            chunk = self.pending if self.pending.shape[0] else self._pull()
            if chunk is None:
                break
            take = min(chunk.shape[0], self.capacity - self.fill)
            self.storage[self.fill:self.fill + take] = chunk[:take]
            self.pending = chunk[take:].to(self.storage.dtype)
            self.fill += take
        perm = torch.randperm(self.fill, generator=self.gen)
        self.storage[:self.fill] = self.storage[perm]
        half = self.fill if self.exhausted else self.fill // 2
        self.ptr, self.end = 0, half // self.batch_size * self.batch_size
        if self.end == 0:
            raise ActivationError(f"the activations ran out: fewer than one batch ({self.batch_size} rows) left")

    def next(self) -> Float[Tensor, "batch width"]:
        if self.ptr == self.end:
            self._refill()
        rows = self.storage[self.ptr:self.ptr + self.batch_size].clone()
        self.ptr += self.batch_size
        return rows

    def sample(self, n: int) -> Float[Tensor, "m width"]:
        """Up to ``n`` rows of the first buffer fill (fills it if needed; the batches are unchanged)."""
        if self.fill == 0:
            self._refill()
        return self.storage[:min(n, self.fill)].clone()

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "storage": self.storage[:self.fill].clone(), "ptr": self.ptr,
                "end": self.end, "pending": self.pending.clone(), "exhausted": self.exhausted,
                "source": self.source.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state["source"])
        self._chunks = None
        self.gen.set_state(state["gen"])
        self.fill = state["storage"].shape[0]
        self.storage[:self.fill] = state["storage"]
        self.ptr, self.end = int(state["ptr"]), int(state["end"])
        self.pending, self.exhausted = state["pending"].clone(), bool(state["exhausted"])
