"""Rank handling under ``torchrun``: one place that knows the process group, for every long-running command.

``torchrun --nproc_per_node N`` starts N processes with ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` in their environment. A command joins the group with :func:`process_group`
(gloo on CPU, NCCL on CUDA, one device per local rank), asks :func:`rank_world` who it is,
and leaves the group when done if it created it. Outside ``torchrun`` it is rank 0 of 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def world_size_from_env() -> int:
    """The number of processes ``torchrun`` started (1 outside it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_from_env() -> int:
    """This process's global rank as ``torchrun`` says (0 outside it); readable before the group exists."""
    return int(os.environ.get("RANK", "0"))


def local_rank_from_env() -> int:
    """This process's rank on its machine as ``torchrun`` says (0 outside it): which GPU it takes."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def group():
    """``torch.distributed`` when a process group is initialised, else ``None``."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group: (0, 1) without one."""
    dist = group()
    return (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    dist = group()
    if dist:
        dist.barrier()


def local_device(device: str | None) -> str | None:
    """The device for this process: ``device`` as given, else ``cuda:LOCAL_RANK`` under torchrun when CUDA is there.

    ``None`` leaves the choice to the loader (the best available).
    """
    if device is not None:
        return device
    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        return f"cuda:{local_rank_from_env()}"
    return None


@contextmanager
def process_group(device: torch.device | str | None) -> Iterator[bool]:
    """Join the group ``torchrun`` describes (if any, and not yet joined); leave it at exit if we joined it.

    Yields whether this call created the group. NCCL when ``device`` is CUDA (made the current
    device first), gloo otherwise.
    """
    created = False
    if world_size_from_env() > 1 and group() is None:
        import torch.distributed as dist

        cuda = device is not None and torch.device(device).type == "cuda"
        if cuda and device is not None:
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        created = True
    try:
        yield created
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()
