"""Data-parallel SAE and transcoder training under ``torchrun`` (gloo on CPU, nccl on CUDA).

How a run with ``W`` processes equals one process (to float tolerance, tested):

- **Activations.** Each pass of ``windows_per_pass`` windows is split into ``W`` contiguous
  parts; process ``r`` runs the model on part ``r`` and the rows are gathered in rank order
  (:meth:`World.gather_rows`), so every process sees the chunk one process would see.
- **Batches.** Every process keeps the same shuffle buffer (same chunks, same seeded
  generator), so every process draws the same global batch; it computes the loss on its
  contiguous share of the rows, weighted by its share of the batch, and the gradients are
  summed over processes (:meth:`World.sum_`): the gradient of the whole batch's mean loss.
  Batch top-k ranks the whole batch, so with it every process computes the whole batch.
- **State.** Adam, the decoder-norm projection, the dead-feature counters (features that
  fired anywhere) and the batch top-k threshold then evolve identically everywhere; rank 0
  alone writes checkpoints and shows progress.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from ..distributed import group, rank_world, world_size_from_env


def _initialised():
    """``torch.distributed``, for the methods that run only with more than one process (so it is initialised)."""
    import torch.distributed as dist

    return dist


@dataclass(frozen=True)
class World:
    """This process's rank and the number of processes (``World()`` is one process)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes files and shows progress (rank 0)."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items (parts differ in size by at most one, in rank order)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum_(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over processes in place (nothing with one process); returns it."""
        if self.size > 1:
            _initialised().all_reduce(tensor)
        return tensor

    def max_(self, tensor: Tensor) -> Tensor:
        """Element-wise maximum over processes in place; returns it."""
        if self.size > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def gather_rows(self, rows: Tensor) -> Tensor:
        """Every process's ``[n_r, width]`` rows, concatenated in rank order (``n_r`` may differ, or be 0)."""
        if self.size == 1:
            return rows
        dist = _initialised()
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
        dist.all_gather(sizes, torch.tensor([rows.shape[0]], dtype=torch.int64))
        most = int(max(int(s) for s in sizes))
        padded = torch.zeros(most, rows.shape[1], dtype=rows.dtype)
        padded[:rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:int(s)] for p, s in zip(parts, sizes)])

    def barrier(self) -> None:
        if self.size > 1:
            _initialised().barrier()


def current() -> World:
    """The world of the process group this process belongs to (one process when there is none)."""
    rank, size = rank_world()
    return World(rank, size)


@contextmanager
def joined() -> Iterator[World]:
    """Join the process group ``torchrun`` describes in the environment, if any and not joined yet.

    The group is kept for the rest of the process: gloo cannot build a second group from
    torchrun's rendezvous after the first is destroyed (measured: "connection refused"), so a
    script that trains several coders under torchrun reuses the one group. Training gathers
    activations and sums gradients on the CPU, so the group is gloo's. It is destroyed when
    the process exits: a gloo group left alive then aborts the process ("terminate called
    without an active exception", SIGABRT), and torchrun reports the run as failed.
    """
    if world_size_from_env() > 1 and group() is None:
        import atexit

        import torch.distributed as dist

        dist.init_process_group(backend="gloo")
        atexit.register(_leave)
    yield current()


def _leave() -> None:
    """Destroy the group :func:`joined` made, at exit, if the script has not already done so."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
