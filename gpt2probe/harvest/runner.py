"""The harvesting loop: stream blocks, run the model with summary hooks, checkpoint, merge ranks.

One process, or one per device under ``torchrun`` (``torch.distributed`` with gloo on CPU,
nccl on CUDA): every block of the corpus goes to one rank (:func:`~.corpus.assign_blocks`,
balanced by characters), every rank keeps its own summaries and checkpoint, and at the end
rank 0 gathers and merges them in rank order and writes the result. Each rank checkpoints at
batch boundaries, so a resumed run replays exactly the batches an uninterrupted run would
have run after that point, onto exactly the saved state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from .. import validate
from ..atomic import write_text_atomic
from ..configs.base import to_dict
from ..configs.harvest import HarvestConfig
from ..distributed import barrier as _barrier
from ..distributed import group, process_group, rank_world
from ..errors import GPT2ProbeError, InvalidTypeError
from ..jsonfile import parse_object, read_object
from .corpus import Corpus, assign_blocks, block_sizes, blocks, pack
from .errors import CorpusError, HarvestConfigError, OutputDirError, ResumeMismatchError
from .raw import RawWriter, discard_after, write_raw_manifest
from .store import (
    FORMAT,
    MANIFEST,
    SUMMARIES,
    Harvest,
    check_groups,
    check_plan,
    load_tensors,
    read_manifest,
    read_metadata,
    save_tensors,
    summaries_from_state,
)
from .summaries import AttentionSummary, NonFiniteActivationError, Summary, UnitSummary, merge_summaries
from .units import HookPlan, coder_digest, plan_features, plan_hooks

CHECKPOINT_DIR = "checkpoint"
RUN_FILE = "run.json"
# Without --checkpoint-every, a rank checkpoints after the first batch that ends this long after
# its previous checkpoint. Writing every summary (tens of MB for GPT-2 small) after a fixed
# number of windows would cost more than the harvest on a fast device; what a crash loses is
# bounded by time instead. Checkpoint timing never changes the result.
CHECKPOINT_SECONDS = 60.0


Options = HarvestConfig
"""The settings that change the result: :class:`gpt2probe.configs.harvest.HarvestConfig` (its former name here)."""


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (tied tensors once), for matching a resumed run's model."""
    h = hashlib.sha256()
    seen = set()
    for name, t in sorted(model.state_dict().items()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def run_harvest(probe, corpus: Corpus, hooks: Sequence[str], out: str | os.PathLike, *, options: Options,
                directions: dict[str, Tensor] | None = None, resume: bool = False, checkpoint_windows: int | None = None,
                progress: bool = True, model_source: str | None = None, stop_after_windows: int | None = None,
                saes: Sequence = (), sae_sources: Sequence[str | None] | None = None) -> Harvest | None:
    """Harvest ``hooks`` and the features of ``saes`` over ``corpus`` into ``out``; see :func:`gpt2probe.harvest`.

    ``sae_sources`` (one per SAE, or ``None``) are recorded in the manifest so that
    ``gpt2probe sae report`` can find the coders again. ``stop_after_windows`` (for tests)
    makes each rank return after checkpointing that many windows, as if killed there.
    """
    out = Path(out)
    cfg = probe.cfg
    options = options.resolved(cfg.n_ctx)
    if checkpoint_windows is not None and checkpoint_windows < 1:
        raise HarvestConfigError(f"checkpoint_windows must be at least 1 window, got {checkpoint_windows}")
    saes = validate.coder_list("saes", saes)
    if isinstance(sae_sources, (str, bytes, os.PathLike)):  # a string is a sequence: it would be split into characters
        raise InvalidTypeError(f"sae_sources is one entry per SAE, got {type(sae_sources).__name__} {sae_sources!r}: "
                               "pass sae_sources=[source]")
    if sae_sources is not None and len(sae_sources) != len(saes):
        raise HarvestConfigError(f"{len(sae_sources)} sae_sources for {len(saes)} SAEs; give one (or None) per SAE")
    plans = plan_hooks(list(hooks) if not isinstance(hooks, str) else [hooks], probe.hook_names,
                       d_model=cfg.d_model, d_mlp=cfg.d_mlp, n_heads=cfg.n_heads, directions=directions,
                       allow_none=bool(saes))
    features = plan_features(saes, probe.hook_names, d_model=cfg.d_model, d_mlp=cfg.d_mlp, device=cfg.device)
    order = {n: i for i, n in enumerate(probe.hook_names)}
    plans = sorted(plans + features, key=lambda p: order[p.hook])  # forward order; stable: a hook before its features
    names = [p.name for p in plans]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise HarvestConfigError(f"two SAEs or transcoders read the same hook ({', '.join(repeated)}); harvest them "
                                 "in separate runs")
    for name in options.save_raw:
        if name not in names:
            raise HarvestConfigError(f"save_raw names {name!r}, which is not harvested; harvested: {', '.join(names)}")
        if name.endswith("hook_pattern"):
            raise HarvestConfigError(f"save_raw cannot store {name!r} (a [pos, pos] pattern per position)")
        if name in {p.name for p in features}:
            raise HarvestConfigError(f"save_raw cannot store SAE features ({name!r}: d_sae dense values per token); "
                                     "save the hook the SAE reads and encode its shards")
    sources = {p.name: (None if sae_sources is None else sae_sources[i]) for i, p in enumerate(features)}
    with process_group(cfg.device):
        return _run(probe, corpus, plans, out, options, resume, checkpoint_windows, progress, model_source,
                    stop_after_windows, sources)


def _fingerprint(probe, corpus: Corpus, plans: list[HookPlan], options: Options, world: int) -> dict:
    return {
        "model": {"name": probe.cfg.model_name, "sha256": weights_digest(probe.model)},
        "corpus": {"sources": corpus.describe(), "max_documents": corpus.max_documents,
                   "max_doc_chars": corpus.max_doc_chars},
        "hooks": [{"name": p.name, "kind": p.kind, "n_units": p.n_units,
                   "directions": None if p.directions is None else hashlib.sha256(
                       p.directions.numpy().tobytes()).hexdigest(),
                   **({} if p.coder is None else {"coder": _coder_entry(p.coder)})} for p in plans],
        "options": to_dict(options),
        "world_size": world,
    }


def _check_out_dir(out: Path, fingerprint: dict, resume: bool) -> str:
    """'fresh', 'resume' or 'done'; raises before anything is written when the directory does not fit."""
    run_file = out / CHECKPOINT_DIR / RUN_FILE
    finished = (out / MANIFEST).is_file()
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"the output {str(out)!r} is a file, not a directory")
    if not resume:
        if finished:
            raise OutputDirError(f"{str(out)!r} already holds a finished harvest; choose another --out, or pass "
                                 "--resume to return it")
        if run_file.is_file():
            raise OutputDirError(f"{str(out)!r} holds an unfinished harvest; pass --resume to continue it, or choose "
                                 "another --out")
        if out.is_dir() and any(out.iterdir()):
            raise OutputDirError(f"{str(out)!r} is not empty; harvest into a new or empty directory")
        return "fresh"
    if finished:
        saved = read_manifest(out / MANIFEST).get("fingerprint", dict)
        _compare(saved, fingerprint, out)
        return "done"
    if run_file.is_file():
        run = read_object(run_file, fix=f"Delete {str(out)!r} and harvest again (the run cannot be resumed).")
        check_plan(run, run.fix)
        _compare(run.value, fingerprint, out)
        return "resume"
    if out.is_dir() and any(out.iterdir()):
        raise OutputDirError(f"{str(out)!r} holds no harvest to resume (no {CHECKPOINT_DIR}/{RUN_FILE}) and is not "
                             "empty; choose another --out")
    return "fresh"


def _compare(saved: dict, now: dict, out: Path) -> None:
    diffs = []
    for key in ("model", "corpus", "hooks", "options", "world_size"):
        if saved.get(key) != now.get(key):
            if isinstance(now.get(key), dict) and isinstance(saved.get(key), dict):
                sub = [k for k in now[key] if saved[key].get(k) != now[key].get(k)]
                diffs.append(f"{key} ({', '.join(sub)})")
            else:
                diffs.append(key)
    if diffs:
        raise ResumeMismatchError(
            f"cannot resume the harvest in {str(out)!r}: it was started with a different {'; '.join(diffs)}. "
            "Resume with exactly the same model, corpus, hooks, options and number of processes, "
            "or harvest into another directory")


def _ckpt_path(out: Path, rank: int, world: int) -> Path:
    return out / CHECKPOINT_DIR / f"rank-{rank:05d}-of-{world:05d}.safetensors"


def _coder_entry(coder) -> dict:
    """What a feature hook records of its SAE or transcoder: where it reads and writes, and a digest."""
    c = coder.cfg
    return {"class": type(coder).__name__, "architecture": c.architecture, "hook_name": c.hook_name,
            "hook_name_out": c.hook_name_out, "d_in": c.d_in, "d_sae": c.d_sae, "sha256": coder_digest(coder)}


def _run(probe, corpus: Corpus, plans: list[HookPlan], out: Path, options: Options, resume: bool,
         checkpoint_windows: int | None, progress: bool, model_source: str | None, stop_after_windows: int | None,
         sae_sources: dict[str, str | None] | None = None):
    rank, world = rank_world()
    fingerprint = _fingerprint(probe, corpus, plans, options, world)
    state = _check_out_dir(out, fingerprint, resume)
    if state == "done":
        return Harvest.load(out)
    sizes = block_sizes(corpus, options.block_chars)  # reads everything once: bad records fail here
    if not sizes:
        raise CorpusError("the corpus holds no text (every document is empty)")
    _barrier()  # every rank has checked before anything is written
    ckpt = _ckpt_path(out, rank, world)
    if rank == 0 and state == "fresh":
        write_text_atomic(out / CHECKPOINT_DIR / RUN_FILE, json.dumps(fingerprint, indent=1, sort_keys=True))
    _barrier()

    if state == "resume" and ckpt.is_file():
        progress_state = _read_progress(ckpt, out)
        fix = f"Delete {str(ckpt)!r} to redo this rank's share, or delete {str(out)!r} and harvest again."
        groups = load_tensors(ckpt, fix)
        check_groups(groups, fingerprint["hooks"], fingerprint["options"], str(ckpt), fix)
        summaries = summaries_from_state(groups, fingerprint["hooks"], fingerprint["options"])
    else:
        progress_state = {"block": 0, "window": 0, "windows": 0, "tokens": 0, "seconds": 0.0, "done": False}
        summaries = _fresh_summaries(probe, corpus, plans, options)
    raw = RawWriter(out, rank, {p.name: p for p in plans if p.name in options.save_raw}) if options.save_raw else None
    if raw is not None:
        discard_after(out, rank, (progress_state["block"], progress_state["window"]))

    if not progress_state["done"]:
        _loop(probe, corpus, plans, summaries, options, progress_state, out, ckpt, raw, rank, world,
              checkpoint_windows, progress and rank == 0, sizes, stop_after_windows)
        if stop_after_windows is not None and not progress_state["done"]:
            return None
    return _finish(probe, corpus, plans, summaries, options, progress_state, out, fingerprint, rank, world,
                   model_source, sae_sources or {})


def _read_progress(ckpt: Path, out: Path) -> dict:
    """A rank checkpoint's progress entry, every field checked (it says where to resume)."""
    fix = f"Delete {str(ckpt)!r} to redo this rank's share, or delete {str(out)!r} and harvest again."
    meta = read_metadata(ckpt, fix)
    progress = parse_object(meta.get("progress", ""), where=str(ckpt), fix=fix, path="metadata entry 'progress'",
                         keys="progress")
    for key in ("block", "window", "windows", "tokens"):
        if progress.get(key, int) < 0:
            progress.fail(f"progress.{key} is {progress.value[key]}")
    progress.get("seconds", float)
    progress.get("done", bool)
    return dict(progress.value)


def _fresh_summaries(probe, corpus, plans, options) -> dict[str, Summary]:
    """Empty summaries, with histogram ranges calibrated on the corpus's first windows (identical on every rank)."""
    first = pack(next(blocks(corpus, options.block_chars)), probe.tokenizer, seq_len=options.seq_len,
                 eos=_eos(probe), seed=options.seed)
    n = min(options.calibration_windows, first.n_windows)
    lows: dict[str, Tensor] = {}
    highs: dict[str, Tensor] = {}
    unit_plans = [p for p in plans if p.kind != "attention"]

    def observe(plan: HookPlan):
        def fn(activation, hook):
            values = plan.unit_values(activation)
            v = first.valid[:n]
            keep = (torch.arange(values.shape[1]) < v[:, None]).to(values.device)
            flat = values[keep]
            lows[plan.name], highs[plan.name] = flat.amin(0).cpu(), flat.amax(0).cpu()
        return fn

    if unit_plans:
        _forward(probe, first.tokens[:n], [(p.hook, observe(p)) for p in unit_plans])
    out: dict[str, Summary] = {}
    for plan in plans:
        if plan.kind == "attention":
            out[plan.name] = AttentionSummary.empty(plan.n_units)
            continue
        if plan.kind == "feature":
            lo, hi = feature_edges(highs[plan.name])
            floor = options.threshold
        else:
            lo, hi = lows[plan.name].double(), highs[plan.name].double()
            span = (hi - lo).clamp_min(1e-3)
            lo, hi = (lo - 0.25 * span).float(), (hi + 0.5 * span).float()  # room for the rest of the corpus
            floor = None
        out[plan.name] = UnitSummary.empty(lo, hi, n_bins=options.n_bins, threshold=options.threshold,
                                           window=options.window, k=options.top_k, floor=floor)
    return out


def feature_edges(highs: Tensor) -> tuple[Tensor, Tensor]:
    """Histogram edges of SAE features from their largest activations on the calibration windows.

    A feature is zero on most tokens, so its histogram shows the tokens where it fires: the
    bins run from ``hi / 2**20`` (zeros, and anything smaller, fall in the underflow bin 0) to
    1.5 times the feature's calibration maximum, or the hook's largest one for a feature that
    did not fire there (values beyond go to the overflow bin).
    """
    highs = highs.double().clamp_min(0)
    fallback = float(highs.max()) if highs.numel() and float(highs.max()) > 0 else 1.0
    hi = 1.5 * torch.where(highs > 0, highs, torch.full_like(highs, fallback))
    return (hi / 2**20).float(), hi.float()


def _eos(probe) -> int:
    eos = probe.tokenizer.eos_token_id
    if eos is None:
        raise HarvestConfigError("the tokenizer has no end-of-text token to separate documents")
    return int(eos)


@contextmanager
def _hooked(probe, pairs: list) -> Iterator[Callable[[Tensor], None]]:
    """A function running the model with ``pairs`` attached, up to the last hooked name (``probe.run_until``).

    Hooks are attached once for the whole loop, not per batch; each pass stops after the last
    hooked name (nothing after it is needed, not even the unembedding).
    """
    order = {n: i for i, n in enumerate(probe.hook_names)}
    last = max((name for name, _ in pairs), key=order.__getitem__)

    def run(tokens: Tensor) -> None:
        probe.run_until(tokens, last, names=[])

    with probe.hooks(pairs):
        yield run


def _forward(probe, tokens: Tensor, pairs: list) -> None:
    """One hooked pass of the body over ``tokens``."""
    with _hooked(probe, pairs) as run:
        run(tokens)


def _loop(probe, corpus, plans, summaries, options, state, out, ckpt, raw, rank, world, checkpoint_windows,
          show_progress, sizes, stop_after_windows) -> None:
    mine = [owner == rank for owner in assign_blocks(sizes, world)]
    done_chars = sum(size for b, size in enumerate(sizes) if mine[b] and b < state["block"])
    bar = _progress_bar(sizes, mine, done_chars) if show_progress else None
    since = 0
    batch_meta: dict = {}

    def summarise(plan: HookPlan):
        summary = summaries[plan.name]

        def fn(activation, hook):
            valid = batch_meta["valid"]
            if plan.kind == "attention":
                summary.update(activation, valid)
                return
            values, support = plan.feature_values(activation) if plan.kind == "feature" else (
                plan.unit_values(activation), None)
            try:
                summary.update(values, batch_meta["tokens"], batch_meta["doc"], batch_meta["pos"], valid, support)
            except NonFiniteActivationError:
                raise GPT2ProbeError(f"{plan.name}: a NaN or infinite activation in block {batch_meta['block']}; "
                                     "the model's weights or dtype are broken") from None
            if raw is not None and plan.name in raw.plans:
                raw.add(plan.name, activation, batch_meta)
        return fn

    pairs = [(p.hook, summarise(p)) for p in plans]
    started, base_seconds = time.perf_counter(), state["seconds"]
    last_checkpoint = started
    eos = _eos(probe)
    try:
        with _hooked(probe, pairs) as forward:
            for block in blocks(corpus, options.block_chars):
                if not mine[block.index] or block.index < state["block"]:
                    continue
                packed = pack(block, probe.tokenizer, seq_len=options.seq_len, eos=eos, seed=options.seed)
                start = state["window"] if block.index == state["block"] else 0
                if bar is not None and start:  # resumed inside this block: its first windows were done before
                    bar.resume_at(done_chars + block.chars * start // packed.n_windows)
                for w in range(start, packed.n_windows, options.batch_size):
                    sl = slice(w, min(w + options.batch_size, packed.n_windows))
                    batch_meta.update(block=block.index, window=w, tokens=packed.tokens[sl], doc=packed.doc[sl],
                                      pos=packed.pos[sl], valid=packed.valid[sl])
                    forward(packed.tokens[sl])
                    n_win, n_tok = sl.stop - sl.start, int(packed.valid[sl].sum())
                    now = time.perf_counter()
                    state.update(block=block.index, window=sl.stop, windows=state["windows"] + n_win,
                                 tokens=state["tokens"] + n_tok, seconds=base_seconds + now - started)
                    if sl.stop == packed.n_windows:
                        state.update(block=block.index + 1, window=0)
                    since += n_win
                    if bar is not None:
                        bar.advance_to(done_chars + block.chars * sl.stop // packed.n_windows, state["tokens"])
                    due = since >= checkpoint_windows if checkpoint_windows else now - last_checkpoint >= CHECKPOINT_SECONDS
                    if due:
                        _checkpoint(ckpt, summaries, state, raw)
                        since, last_checkpoint = 0, time.perf_counter()
                        if stop_after_windows is not None and state["windows"] >= stop_after_windows:
                            return
                done_chars += block.chars
                if bar is not None:
                    bar.advance_to(done_chars, state["tokens"])
        state["done"] = True
        _checkpoint(ckpt, summaries, state, raw)
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(sizes: list[int], mine: list[bool], done_chars: int) -> HarvestProgress:
    return HarvestProgress(sum(size for b, size in enumerate(sizes) if mine[b]), done_chars)


class HarvestProgress:
    """The harvest's progress bar, counted in characters of the corpus (this rank's share).

    The corpus's characters are known exactly before the first window runs (the pass that
    checks every record counts them), its tokens only once all of it is tokenized. A bar in
    tokens had to guess its total and re-guess it after every block (625k, then 760k, then
    701k tokens on one run), and its time estimate jumped with it. Counted in characters,
    the total never changes, the count only grows (a block's characters are credited in
    proportion to its windows done) and the time left follows from a fixed total. The tokens
    harvested so far, an exact count, are shown beside it.
    """

    def __init__(self, total_chars: int, done_chars: int = 0) -> None:
        from tqdm import tqdm

        self.total = max(1, total_chars)
        self.bar = tqdm(total=self.total, initial=done_chars, unit="char", unit_scale=True, file=sys.stderr,
                        desc="harvest", dynamic_ncols=True)

    @property
    def n(self) -> int:
        return self.bar.n

    def resume_at(self, chars: int) -> None:
        """Credit work done before a resume without counting it in the speed (and so in the time left)."""
        self.bar.n = self.bar.last_print_n = min(max(chars, self.bar.n), self.total)

    def advance_to(self, chars: int, tokens: int) -> None:
        """Move to ``chars`` characters done (never back) with ``tokens`` harvested so far."""
        step = min(chars, self.total) - self.bar.n
        self.bar.set_postfix_str(f"{tokens:,} tokens", refresh=False)
        if step > 0:
            self.bar.update(step)

    def close(self) -> None:
        self.bar.close()


def _checkpoint(path: Path, summaries, state: dict, raw) -> None:
    if raw is not None:
        raw.flush()  # shards first: a shard never records windows beyond its checkpoint
    save_tensors(path, {name: s.state() for name, s in summaries.items()}, metadata={"progress": json.dumps(state)})


def _finish(probe, corpus, plans, summaries, options, state, out, fingerprint, rank, world, model_source,
            sae_sources: dict[str, str | None]):
    dist = group()
    totals = {"tokens": state["tokens"], "windows": state["windows"], "seconds": state["seconds"]}
    mine = ({k: s.state() for k, s in summaries.items()}, totals)
    if dist:
        gathered: list = [None] * world if rank == 0 else []  # filled on rank 0 only
        dist.gather_object(mine, gathered if rank == 0 else None, dst=0)
    else:
        gathered = [mine]
    if rank == 0:
        merged: dict[str, Summary] = {}
        tokens = windows = 0
        seconds = []
        for i, (groups, t) in enumerate(gathered):  # rank order: the same merge order every time
            parts = summaries_from_state(groups, fingerprint["hooks"], fingerprint["options"])
            merged = parts if i == 0 else {k: merge_summaries(merged[k], parts[k]) for k in merged}
            tokens, windows = tokens + t["tokens"], windows + t["windows"]
            seconds.append(round(t["seconds"], 3))
        groups = {k: s.state() for k, s in merged.items()}
        for plan in plans:
            if plan.directions is not None:
                groups[plan.name]["directions"] = plan.directions
        sources = corpus.source_counts()
        manifest = {
            "format": FORMAT,
            "model": {"name": probe.cfg.model_name, "source": model_source, "n_layers": probe.cfg.n_layers,
                      "d_model": probe.cfg.d_model, "n_heads": probe.cfg.n_heads, "d_mlp": probe.cfg.d_mlp},
            "corpus": {"sources": sources},
            "hooks": fingerprint["hooks"],
            "options": fingerprint["options"],
            "totals": {"tokens": tokens, "windows": windows, "documents": sum(s["documents"] for s in sources)},
            "world_size": world,
            # Time in the loop (forward passes and summaries; not loading, hashing or the first pass over the
            # corpus), per rank, summed over resumed segments. Not part of the result: differs run to run.
            "timing": {"loop_seconds_per_rank": seconds,
                       "tokens_per_second": round(tokens / max(max(seconds), 1e-9), 1)},
            "fingerprint": fingerprint,
        }
        if sae_sources:
            manifest["sae_sources"] = sae_sources  # where each feature hook's coder was read from (None: not a file)
        save_tensors(out / SUMMARIES, groups)
        if options.save_raw:
            write_raw_manifest(out, plans, options)
        write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    _barrier()
    return Harvest.load(out) if (out / MANIFEST).is_file() else None
