"""A finished harvest on disk, and the object that reads it back.

An output directory holds ``harvest.json`` (the manifest: model, corpus, hooks, options,
totals) and ``summaries.safetensors`` (every tensor, named ``"{hook}::{field}"``; no pickle).
While a run is in progress it also holds ``checkpoint/`` (one state file per rank, written
atomically) and, with ``save_raw``, ``raw/`` (Parquet shards and their ``manifest.json``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file
from torch import Tensor

from ..atomic import write_text_atomic
from ..errors import DamagedFileError, FileFormatError, HookNameError, InvalidTypeError, LayerIndexError, MissingFileError
from ..jsonfile import JsonObject, read_object
from ..savefile import write_safetensors
from .summaries import AttentionSummary, Summary, UnitSummary

FORMAT = "gpt2probe-harvest/1"
MANIFEST = "harvest.json"
SUMMARIES = "summaries.safetensors"
SEP = "::"


def save_tensors(path: Path, groups: dict[str, dict[str, Tensor]], metadata: dict[str, str] | None = None) -> None:
    """Write ``{hook: {field: tensor}}`` as one safetensors file, atomically."""
    flat = {f"{hook}{SEP}{name}": t.detach().cpu().contiguous().clone()
            for hook, fields in groups.items() for name, t in fields.items()}
    write_safetensors(path, flat, metadata)


def load_tensors(path: Path, fix: str = "") -> dict[str, dict[str, Tensor]]:
    """A safetensors file's tensors grouped by hook (the part of each key before ``::``)."""
    from safetensors import SafetensorError

    fix = fix or _fix(path.parent)
    if not path.is_file():
        raise DamagedFileError(f"{str(path)!r} is missing. {fix}")
    try:
        tensors = load_file(str(path))
    except SafetensorError as error:
        raise DamagedFileError(f"{str(path)!r} is not a complete safetensors file (truncated or damaged?): {error}. "
                               f"{fix}") from None
    groups: dict[str, dict[str, Tensor]] = {}
    for key, tensor in tensors.items():
        if SEP not in key:
            raise DamagedFileError(f"{str(path)!r} holds a tensor {key!r} that names no hook. {fix}")
        hook, name = key.split(SEP, 1)
        groups.setdefault(hook, {})[name] = tensor
    return groups


def read_metadata(path: Path, fix: str = "") -> dict[str, str]:
    """The string metadata of a safetensors file's header."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except SafetensorError as error:
        raise DamagedFileError(f"{str(path)!r} is not a complete safetensors file (truncated or damaged?): {error}. "
                               f"{fix or _fix(path.parent)}") from None


def _fix(directory: Path) -> str:
    return f"Delete {str(directory)!r} and harvest again (or harvest into a new directory)."


KINDS = ("neuron", "head_norm", "attention", "dim", "direction", "feature")


def read_manifest(path: Path, fix: str = "") -> JsonObject:
    """``harvest.json``, with every entry that is read back checked for presence and type."""
    fix = fix or _fix(path.parent)
    doc = read_object(path, fix=fix)
    if doc.value.get("format") != FORMAT:
        raise FileFormatError(f"{str(path)!r} has format {doc.value.get('format')!r}; this gpt2probe reads {FORMAT!r}")
    model = doc.object("model")
    model.get("name", str)
    model.optional("source", (str, type(None)))
    for key in ("n_layers", "d_model", "n_heads", "d_mlp"):
        if model.get(key, int) < 1:
            model.fail(f"model.{key} is {model.value[key]}")
    check_plan(doc, fix)
    totals = doc.object("totals")
    for key in ("tokens", "windows", "documents"):
        totals.get(key, int)
    for source in doc.object("corpus").objects("sources"):
        source.get("path", str)
        source.get("first_doc", int)
        source.get("documents", int)
    doc.get("world_size", int)
    doc.get("fingerprint", dict)
    return doc


def check_plan(doc: JsonObject, fix: str) -> None:
    """The ``hooks`` and ``options`` entries of a manifest or a run file."""
    names = []
    for hook in doc.objects("hooks"):
        names.append(hook.get("name", str))
        if hook.get("kind", str) not in KINDS:
            hook.fail(f"{hook.path}.kind is {hook.value['kind']!r}; valid: {', '.join(KINDS)}")
        if hook.get("n_units", int) < 1:
            hook.fail(f"{hook.path}.n_units is {hook.value['n_units']}")
    if len(set(names)) != len(names):
        doc.fail(f"the hooks {names} repeat a name")
    options = doc.object("options")
    for key in ("n_bins", "window", "top_k", "seq_len"):
        if options.get(key, int) < (0 if key == "window" else 1):
            options.fail(f"options.{key} is {options.value[key]}")
    options.get("threshold", float)


def expected_state(kind: str, n_units: int, options: dict) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shape and dtype of every tensor a hook's summary saves (see ``UnitSummary.state``), built without allocating."""
    if kind == "attention":
        return {"first_sum": ((n_units,), torch.float64), "prev_sum": ((n_units,), torch.float64),
                "first_count": ((), torch.int64), "prev_count": ((), torch.int64)}
    u, k, ctx = n_units, options["top_k"], 2 * options["window"] + 1
    return {"lo": ((u,), torch.float32), "hi": ((u,), torch.float32), "count": ((), torch.int64),
            "mean": ((u,), torch.float64), "m2": ((u,), torch.float64), "min": ((u,), torch.float32),
            "max": ((u,), torch.float32), "active": ((u,), torch.int64), "hist": ((u, options["n_bins"] + 2), torch.int64),
            "top_values": ((u, k), torch.float32), "top_doc": ((u, k), torch.int64), "top_pos": ((u, k), torch.int64),
            "top_ctx_tokens": ((u, k, ctx), torch.int32), "top_ctx_acts": ((u, k, ctx), torch.float32)}


def check_groups(groups: dict[str, dict[str, Tensor]], hooks: list[dict], options: dict, where: str, fix: str) -> None:
    """Refuse summaries whose tensors are not exactly those the hooks and options imply."""
    def fail(problem: str) -> None:
        raise DamagedFileError(f"{where!r} is damaged: {problem}. {fix}")

    extra = sorted(set(groups) - {h["name"] for h in hooks})
    if extra:
        fail(f"it holds tensors of hooks that were not harvested: {extra[:5]}")
    for hook in hooks:
        name = hook["name"]
        group = dict(groups.get(name, {}))
        directions = group.pop("directions", None)
        expected = expected_state(hook["kind"], hook["n_units"], options)
        missing, unexpected = sorted(set(expected) - set(group)), sorted(set(group) - set(expected))
        if missing or unexpected:
            fail(f"{name!r} lacks the tensors {missing} or has unexpected ones {unexpected}")
        for field, (shape, dtype) in expected.items():
            t = group[field]
            if tuple(t.shape) != shape or t.dtype != dtype:
                fail(f"{name}{SEP}{field} is {t.dtype} {tuple(t.shape)}; expected {dtype} {shape}")
        if hook["kind"] == "direction" and (directions is None or directions.ndim != 2
                                            or directions.shape[0] != hook["n_units"]
                                            or not directions.is_floating_point()):
            fail(f"{name!r} lacks its [unit={hook['n_units']}, d_model] directions")


def summaries_from_state(groups: dict[str, dict[str, Tensor]], hooks: list[dict], options: dict
                         ) -> dict[str, Summary]:
    """Rebuild each hook's summary objects from their saved tensors and options."""
    out: dict[str, Summary] = {}
    for hook in hooks:
        state = {k: v for k, v in groups[hook["name"]].items() if k != "directions"}
        if hook["kind"] == "attention":
            out[hook["name"]] = AttentionSummary.from_state(state)
        else:
            # SAE features keep only active examples (above the threshold) in their top-k.
            floor = options["threshold"] if hook["kind"] == "feature" else None
            out[hook["name"]] = UnitSummary.from_state(state, n_bins=options["n_bins"], threshold=options["threshold"],
                                                       window=options["window"], k=options["top_k"], floor=floor)
    return out


@dataclass(frozen=True)
class Example:
    """One max-activating position of a unit."""

    value: float
    doc: int  #: document id (see ``Harvest.document_source``)
    pos: int  #: position of the token in its document
    tokens: list[int]  #: the context, ``window`` tokens either side (cut at the window's edges)
    acts: list[float]  #: the unit's activation at each context token
    center: int  #: index of the example's own token in ``tokens``


@dataclass(frozen=True)
class Histogram:
    """``counts[0]`` is below ``edges[0]``, ``counts[-1]`` at or above ``edges[-1]``, the rest between edges."""

    counts: Int[Tensor, "bin"]
    edges: Float[Tensor, " edge"]


class Harvest:
    """Read-only view of a finished harvest. Build with :meth:`load` (or get one from :func:`gpt2probe.harvest`)."""

    def __init__(self, directory: Path, manifest: dict, groups: dict[str, dict[str, Tensor]]) -> None:
        self.directory = directory
        self.manifest = manifest
        self._groups = groups
        self._hooks = {h["name"]: h for h in manifest["hooks"]}
        self._summaries = summaries_from_state(groups, manifest["hooks"], manifest["options"])

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Harvest:
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            hint = " (a run is in progress or was interrupted: resume it)" if (directory / "checkpoint").is_dir() else ""
            raise MissingFileError(f"{str(directory)!r} holds no finished harvest (no {MANIFEST}){hint}")
        fix = _fix(directory)
        manifest = read_manifest(path, fix).value
        groups = load_tensors(directory / SUMMARIES, fix)
        check_groups(groups, manifest["hooks"], manifest["options"], str(directory / SUMMARIES), fix)
        return cls(directory, manifest, groups)

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        save_tensors(directory / SUMMARIES, self._groups)
        write_text_atomic(directory / MANIFEST, json.dumps(self.manifest, indent=1, sort_keys=True))
        return directory

    def __repr__(self) -> str:
        t = self.manifest["totals"]
        return (f"Harvest({self.manifest['model']['name']!r}, hooks={len(self._hooks)}, tokens={t['tokens']}, "
                f"documents={t['documents']})")

    # -- lookup ----------------------------------------------------------------------------
    @property
    def hooks(self) -> list[str]:
        return list(self._hooks)

    def kind(self, hook: str) -> str:
        return self._hook(hook)["kind"]

    def n_units(self, hook: str) -> int:
        return self._hook(hook)["n_units"]

    def _hook(self, hook: str) -> dict:
        if hook not in self._hooks:
            raise HookNameError(f"{hook!r} was not harvested; harvested hooks: {', '.join(self._hooks)}")
        return self._hooks[hook]

    def _units(self, hook: str) -> UnitSummary:
        summary = self._summaries[self._hook(hook)["name"]]
        if isinstance(summary, AttentionSummary):
            raise InvalidTypeError(f"{hook!r} is an attention pattern: read it with .attention({hook!r})")
        return summary

    def _unit(self, hook: str, unit: int) -> int:
        n = self.n_units(hook)
        if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < n:  # True is no unit 1
            raise LayerIndexError(f"unit {unit!r} is outside {hook!r}'s units [0, {n})")
        return unit

    # -- results ---------------------------------------------------------------------------
    def top_values(self, hook: str) -> Float[Tensor, "unit k"]:
        """The k largest activations of every unit, descending (``-inf`` in slots never filled)."""
        return self._units(hook).top.values.clone()

    def top_examples(self, hook: str, unit: int) -> list[Example]:
        """The unit's max-activating examples, best first, with their contexts."""
        top = self._units(hook).top
        unit = self._unit(hook, unit)
        window = self.manifest["options"]["window"]
        out = []
        for j in range(top.k):
            if int(top.doc[unit, j]) < 0:
                break
            tokens, acts = top.ctx_tokens[unit, j], top.ctx_acts[unit, j]
            inside = tokens >= 0
            first = int(inside.nonzero()[0])
            out.append(Example(value=float(top.values[unit, j]), doc=int(top.doc[unit, j]), pos=int(top.pos[unit, j]),
                               tokens=tokens[inside].tolist(), acts=acts[inside].tolist(), center=window - first))
        return out

    def stats(self, hook: str) -> dict[str, Tensor]:
        """Per-unit tensors of one hook's statistics.

        Keys: ``count``, ``mean``, ``var`` (population), ``std``, ``min``, ``max``,
        ``frequency`` (fraction above the threshold) and ``active`` (how many above).
        """
        s = self._units(hook)
        count = s.count.expand(s.n_units).clone()
        n = count.clamp_min(1).double()
        var = s.m2 / n
        return {"count": count, "mean": s.mean.clone(), "var": var, "std": var.sqrt(), "min": s.min.clone(),
                "max": s.max.clone(), "active": s.active.clone(), "frequency": s.active.double() / n}

    def histogram(self, hook: str, unit: int) -> Histogram:
        s = self._units(hook)
        unit = self._unit(hook, unit)
        return Histogram(counts=s.hist[unit].clone(), edges=s.edges()[unit])

    def attention(self, hook: str) -> dict[str, Tensor]:
        """For a ``hook_pattern``: per head, mean attention to the first token and to the previous token."""
        summary = self._summaries[self._hook(hook)["name"]]
        if not isinstance(summary, AttentionSummary):
            raise InvalidTypeError(f"{hook!r} is not an attention pattern; read it with .stats({hook!r})")
        return {"first": summary.first_sum / summary.first_count.clamp_min(1),
                "prev": summary.prev_sum / summary.prev_count.clamp_min(1)}

    def directions(self, hook: str) -> Tensor | None:
        """The directions a ``direction`` hook was projected on (``[unit, d_model]``), else ``None``."""
        return self._groups[self._hook(hook)["name"]].get("directions")

    def unit_label(self, hook: str, unit: int) -> str:
        from .units import HookPlan

        h = self._hook(hook)
        return HookPlan(h["name"], h["kind"], h["n_units"]).unit_label(unit)

    def document_source(self, doc: int) -> tuple[str, int]:
        """Which source a document id came from, and its index inside that source."""
        for source in self.manifest["corpus"]["sources"]:
            if source["first_doc"] <= doc < source["first_doc"] + source["documents"]:
                return source["path"], doc - source["first_doc"]
        raise LayerIndexError(f"document {doc} is outside this harvest's {self.manifest['totals']['documents']} documents")
