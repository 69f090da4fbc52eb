"""Raw activations of chosen hooks, as Parquet shards that Hugging Face ``datasets`` reads directly.

One row per (valid) token: ``doc``, ``pos`` (position in the document), ``token`` and
``activation`` (the hook's activation at that position, flattened: ``d_mlp`` values for a
neuron hook, ``head * d_head`` for ``hook_z``, as float32). Shards live in
``raw/{hook}/rank-R-bBBBBBBBB-wWWWWWW.parquet``, named by the first (block, window) they hold.
A rank writes its pending rows before each checkpoint, so after a crash the shards that
start at or after the checkpoint's position are exactly the orphans, and are deleted on
resume. ``raw/manifest.json`` lists the shards of a finished run::

    datasets.load_dataset("parquet", data_files={"train": [...shards of one hook...]})
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

from ..atomic import atomic_path, write_text_atomic
from ..errors import FileFormatError

RAW_DIR = "raw"
ROWS_PER_SHARD = 1 << 16
_SHARD = re.compile(r"rank-(\d+)-b(\d+)-w(\d+)\.parquet$")


def _hook_dir(out: Path, hook: str) -> Path:
    return out / RAW_DIR / hook


class RawWriter:
    """Buffers one rank's rows per hook and writes them as shards."""

    def __init__(self, out: Path, rank: int, plans: dict) -> None:
        self.out, self.rank, self.plans = out, rank, plans
        self._rows: dict[str, list[dict[str, Tensor]]] = {name: [] for name in plans}
        self._start: dict[str, tuple[int, int]] = {}  # (block, window) of each hook's first unwritten row
        self._count = {name: 0 for name in plans}

    def add(self, hook: str, activation: Tensor, meta: dict) -> None:
        valid = meta["valid"]
        n_batch, n_pos = activation.shape[:2]
        keep = (torch.arange(n_pos) < valid[:, None]).reshape(-1)
        flat = activation.detach().reshape(n_batch * n_pos, -1).float().cpu()[keep]
        rows = {"doc": meta["doc"].reshape(-1)[keep], "pos": meta["pos"].reshape(-1)[keep],
                "token": meta["tokens"].reshape(-1)[keep].to(torch.int32), "activation": flat}
        if hook not in self._start:
            self._start[hook] = (meta["block"], meta["window"])
        self._rows[hook].append(rows)
        self._count[hook] += flat.shape[0]
        if self._count[hook] >= ROWS_PER_SHARD:
            self._write(hook)

    def flush(self) -> None:
        for hook in self.plans:
            self._write(hook)

    def _write(self, hook: str) -> None:
        if not self._rows[hook]:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = self._rows[hook]
        cols = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        acts = cols["activation"]
        table = pa.table({
            "doc": pa.array(cols["doc"].numpy()),
            "pos": pa.array(cols["pos"].numpy()),
            "token": pa.array(cols["token"].numpy()),
            "activation": pa.FixedSizeListArray.from_arrays(pa.array(acts.reshape(-1).numpy()), acts.shape[1]),
        })
        block, window = self._start.pop(hook)
        path = _hook_dir(self.out, hook) / f"rank-{self.rank:05d}-b{block:08d}-w{window:06d}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        self._rows[hook], self._count[hook] = [], 0


def discard_after(out: Path, rank: int, position: tuple[int, int]) -> None:
    """Delete this rank's shards that start at or after ``(block, window)``: written after its last checkpoint."""
    root = out / RAW_DIR
    if not root.is_dir():
        return
    for path in root.rglob("*.parquet"):
        m = _SHARD.search(path.name)
        if m and int(m.group(1)) == rank and (int(m.group(2)), int(m.group(3))) >= tuple(position):
            path.unlink()


def _shard_position(path: Path) -> tuple[int, int]:
    """A shard's ``(block, window)`` from its name; a foreign ``.parquet`` file in the directory is refused."""
    m = _SHARD.search(path.name)
    if m is None:
        raise FileFormatError(f"{str(path)!r} is not a raw shard written by the harvest (rank-R-bB-wW.parquet): "
                              "move it out of the harvest's directory")
    return int(m.group(2)), int(m.group(3))


def write_raw_manifest(out: Path, plans, options) -> Path:
    """List every shard per hook (sorted: block order within each rank), with the columns' meaning."""
    hooks = {}
    for plan in plans:
        if plan.name not in options.save_raw:
            continue
        shards = sorted(_hook_dir(out, plan.name).glob("*.parquet"),
                        key=_shard_position)
        hooks[plan.name] = [str(p.relative_to(out / RAW_DIR)) for p in shards]
    manifest = {
        "format": "parquet",
        "columns": {"doc": "document id", "pos": "position in the document", "token": "token id",
                    "activation": "the hook's activation at that token, flattened, float32"},
        "hooks": hooks,
        "read_with": "datasets.load_dataset('parquet', data_files=[raw/<shard>...], split='train')",
    }
    return write_text_atomic(out / RAW_DIR / "manifest.json", json.dumps(manifest, indent=1))
