"""Harvest throughput, memory and multi-process scaling on Python's own documentation.

Three measurements, all with one intra-op thread per process:

1. Throughput: ``gpt2probe.harvest`` with summaries for every ``mlp.hook_post`` of the model
   vs a plain forward pass over the *same packed windows* (the full language model, and the
   transformer body without the unembedding). Interleaved repeats, medians. "Harvest (loop)"
   is the harvest's own loop time (forward + summaries + packing); "end to end" adds loading
   nothing but includes hashing the weights, the first pass over the corpus and writing results.
   Target: harvest >= 0.85x the plain forward's tokens/s; the strict and fair comparison is the
   *body* forward (a harvest computes no logits).
2. Peak memory: the same harvest over the corpus and over 10 copies of it, each in a fresh
   process (``VmHWM`` of the whole process). Target: 10x the text, < 1.1x the peak.
3. Scaling: ``torchrun --nproc_per_node 2`` (gloo, 1 thread each) vs one process, tokens/s
   from the harvest's loop timing (and the whole command's wall time). Target on 2 idle
   cores: >= 1.6x. Blocks of work are shared out by size, so the corpus must hold many
   blocks (the default corpus, ~240k tokens in blocks of 16k characters, makes ~58; the
   ``--quick`` corpus used to be a single block, leaving rank 1 idle).
4. Features vs neurons (tiny-english and gpt2-small-random; ``--features-only`` runs it alone): the harvest of
   every layer's SAE features (the shipped SAEs, one per ``blocks.L.hook_resid_post``, 512
   features each) vs the harvest of every layer's ``mlp.hook_post`` neurons (4 x 128 = 512 per
   layer: as many units), over the same packed windows, with the plain body forward as the
   floor. Interleaved repeats; the ratio is the median of each round's paired ratio, so load
   that hits one round hits both harvests alike. Target: features >= ~1.0x the neurons'
   tokens/s (docs/saes.md: "feature harvesting costs about what the neuron harvest costs").
   With ``--model gpt2-small-random`` the SAEs are seeded random ones of SAELens's
   ``gpt2-small-res-jb`` shape: standard (ReLU), d_in 768, ``--d-sae`` 24,576 features, one per
   ``blocks.L.hook_resid_pre`` (where those SAEs read: the input of each block, layer 0's being
   the embeddings), ``b_enc`` calibrated on the model's own activations for an L0 near
   ``--target-l0`` (50), and a top-k variant (``--topk-k`` 32) that takes the harvest's support
   path; random weights, since only the shapes and the sparsity decide the speed. Each
   features harvest is timed in parts (encoder, summaries, the summaries' non-zero search);
   ``--features-memory`` adds the max RSS of one standard-SAE features harvest in a fresh process.

    python -m benchmarks.bench_harvest --out benchmarks/results/cpu-harvest.md           # ~240k tokens
    python -m benchmarks.bench_harvest --quick          # small, to check it runs
    python -m benchmarks.bench_harvest --model gpt2-small-random --max-documents 36 --repeats 1 \
        --skip-memory --skip-scaling --out benchmarks/results/cpu-harvest-gpt2-small.md  # ~50k tokens, ~12 min
    python -m benchmarks.bench_harvest --features-only --max-files 20 --repeats 3 \
        --out benchmarks/results/cpu-harvest-features.md  # features vs neurons alone
    python -m benchmarks.bench_harvest --model gpt2-small-random --features-only --max-documents 2 --repeats 3 \
        --features-memory --out benchmarks/results/cpu-harvest-gpt2-small-features.md  # ~3k tokens, ~15 min

On a shared machine every figure is noise: re-measure on an idle one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

HOOKS = "blocks.*.mlp.hook_post"


TOPICS = True


def _corpus(directory: Path, max_files: int, repeat: int = 1) -> list[str]:
    from gpt2probe.harvest.pydocs import write_python_docs

    paths = write_python_docs(directory, max_files=max_files, repeat=repeat, include_topics=TOPICS)
    return [str(p) for p in paths]


def _harvest_args(model: str, corpus: list[str], out: Path, args) -> list[str]:
    extra = ["--block-chars", str(args.block_chars)]
    extra += ["--max-documents", str(args.max_documents)] if args.max_documents else []
    return ["harvest", "--model", model, "--corpus", *corpus, "--field", "text", "--hooks", HOOKS, "--out", str(out),
            "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--no-progress", *extra]


def _corpus_object(corpus: list[str], args):
    from gpt2probe.harvest import Corpus

    return Corpus(corpus, field="text", max_documents=args.max_documents)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


def throughput(args, corpus: list[str], work: Path) -> dict:
    import torch

    import gpt2probe
    from gpt2probe.experiments.harvest import load_model
    from gpt2probe.harvest.corpus import blocks, pack

    torch.set_num_threads(1)
    probe = load_model(args.model, "cpu")
    c = _corpus_object(corpus, args)
    eos = probe.tokenizer.eos_token_id
    batches, tokens, n_blocks = [], 0, 0
    for block in blocks(c, args.block_chars):
        n_blocks += 1
        packed = pack(block, probe.tokenizer, seq_len=args.seq_len, eos=eos)
        tokens += int(packed.valid.sum())
        batches += list(packed.tokens.split(args.batch_size))

    @torch.no_grad()
    def plain(body: bool) -> None:
        run = probe.model.transformer if body else probe.model
        for b in batches:
            run(input_ids=b, use_cache=False)

    runs = {"plain LM forward": [], "plain body forward": [], "harvest end to end": [], "harvest loop": []}
    update_seconds: list[float] = []
    for r in range(args.repeats):
        update_seconds.clear()
        for name in ("plain LM forward", "plain body forward"):
            start = time.perf_counter()
            plain(body=name == "plain body forward")
            runs[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        with _timed_updates(update_seconds):
            h = gpt2probe.harvest(probe, c, hooks=HOOKS, out=work / f"tp-{r}", seq_len=args.seq_len,
                                  batch_size=args.batch_size, block_chars=args.block_chars, progress=False)
        runs["harvest end to end"].append(time.perf_counter() - start)
        runs["harvest loop"].append(max(h.manifest["timing"]["loop_seconds_per_rank"]))
        assert h.manifest["totals"]["tokens"] == tokens
    n_hooks = len(h.manifest["hooks"])
    per_batch = [sum(update_seconds[i:i + n_hooks]) for i in range(0, len(update_seconds), n_hooks)]
    return {"tokens": tokens, "blocks": n_blocks, "seconds": {k: statistics.median(v) for k, v in runs.items()},
            "summary_seconds_per_batch": per_batch, "loop_seconds": runs["harvest loop"][-1]}


def _batches(probe, c, args) -> tuple[list, int]:
    """The packed windows of the corpus in batches, as the harvest packs them, and the number of real tokens."""
    from gpt2probe.harvest.corpus import blocks, pack

    batches, tokens = [], 0
    for block in blocks(c, args.block_chars):
        packed = pack(block, probe.tokenizer, seq_len=args.seq_len, eos=probe.tokenizer.eos_token_id)
        tokens += int(packed.valid.sum())
        batches += list(packed.tokens.split(args.batch_size))
    return batches, tokens


MEMORY_CHILD = """
import json, resource, sys
from benchmarks.bench_harvest import one_features_harvest
one_features_harvest(json.loads(sys.argv[1]), sys.argv[2:])
print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def one_features_harvest(settings: dict, corpus: list[str]) -> None:
    """The child of :func:`features_memory`: build the model and the standard random SAEs, harvest once."""
    import torch

    import gpt2probe
    from gpt2probe.experiments.harvest import load_model

    args = argparse.Namespace(**settings)
    torch.set_num_threads(1)
    probe = load_model(args.model, "cpu")
    c = _corpus_object(corpus, args)
    saes, _ = random_saes(calibration_sample(probe, _batches(probe, c, args)[0], args), args, "standard")
    with tempfile.TemporaryDirectory() as tmp:
        gpt2probe.harvest(probe, c, out=Path(tmp) / "h", seq_len=args.seq_len, batch_size=args.batch_size,
                          block_chars=args.block_chars, progress=False, saes=saes)


def features_memory(args, corpus: list[str]) -> dict:
    """Max RSS of a fresh process that builds the standard random SAEs and runs one features harvest."""
    settings = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    done = subprocess.run([sys.executable, "-c", MEMORY_CHILD, json.dumps(settings), *corpus], env=_env(),
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return {"kind": "standard", "peak_mib": json.loads(done.stdout.strip().splitlines()[-1])["maxrss_kib"] / 1024}


def calibration_sample(probe, batches: list, args) -> dict[str, object]:
    """Every ``blocks.L.hook_resid_pre`` at the first ``--calibration-tokens`` positions of the windows (padding included)."""
    import torch

    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(probe.cfg.n_layers)]
    sample: dict[str, list] = {name: [] for name in names}
    n_sample = 0
    for b in batches:
        if n_sample >= args.calibration_tokens:
            break
        _, cache = probe.run_with_cache(b, names=names, unembed=False)
        for name in names:
            sample[name].append(cache[name].reshape(-1, probe.cfg.d_model))
        n_sample += b.numel()
    args.calibrated_positions = n_sample  # for the report
    return {name: torch.cat(parts) for name, parts in sample.items()}


def random_saes(sample: dict, args, architecture: str) -> tuple[list, list[float]]:
    """Seeded random SAEs of gpt2-small-res-jb's shape, one per ``blocks.L.hook_resid_pre``, and each one's L0.

    ``W_enc``/``W_dec`` are :class:`gpt2probe.SAE`'s own seeded initialisation (unit-norm
    random directions); only the shapes and the sparsity matter for speed. A standard
    (ReLU) SAE's ``b_enc`` is set from the model's own activations ``sample``
    (:func:`calibration_sample`): each feature's bias is minus the midpoint of its ``m``-th
    and ``m+1``-th largest pre-activation, ``m = positions * target_L0 / d_sae``, so that on
    the sample each feature fires on ``m`` positions and a position has about ``target_L0``
    active features. A top-k SAE keeps ``--topk-k`` per token and needs no bias. Returns the
    SAEs and each one's L0 on the sample (the report gives the harvest's own L0, from its
    counts over all its tokens).
    """
    import torch

    from gpt2probe.sae import SAE, SAEConfig

    saes, l0 = [], []
    for layer, (name, x) in enumerate(sample.items()):
        k = args.topk_k if architecture == "topk" else None
        cfg = SAEConfig(d_in=x.shape[-1], d_sae=args.d_sae, hook_name=name, architecture=architecture, k=k)
        sae = SAE(cfg, generator=torch.Generator().manual_seed(1000 + layer))
        with torch.no_grad():
            if architecture == "standard":
                m = max(1, round(x.shape[0] * args.target_l0 / args.d_sae))
                pre = sae.encode_pre(x)
                top = pre.topk(m + 1, dim=0).values  # [m + 1, d_sae], largest first
                sae.b_enc.copy_(-(top[m - 1] + top[m]) / 2)
                del pre, top
            l0.append(float((sae.encode(x) > 0).sum()) / x.shape[0])
        saes.append(sae)
    return saes, l0


def features(args, corpus: list[str], work: Path) -> dict:
    """Harvest every layer's SAE features vs every layer's MLP neurons, interleaved rounds.

    tiny-english: its shipped SAEs (as many features as neurons). Another model
    (gpt2-small-random): seeded random SAEs of gpt2-small-res-jb's shape (:func:`random_saes`),
    standard and, with ``--topk-k``, top-k. The features runs are timed in parts (encoder,
    summaries, and within the summaries the search for the non-zeros).
    """
    import torch

    import gpt2probe
    from gpt2probe.experiments.harvest import load_model

    torch.set_num_threads(1)
    probe = load_model(args.model, "cpu")
    c = _corpus_object(corpus, args)
    batches, tokens = _batches(probe, c, args)

    @torch.no_grad()
    def body() -> None:
        for b in batches:
            probe.model.transformer(input_ids=b, use_cache=False)

    kinds: dict[str, dict] = {"neurons": {"hooks": HOOKS}}
    calibration: dict[str, list[float]] = {}
    if args.label == "tiny-english":
        kinds["features"] = {"saes": list(gpt2probe.load_saes(args.model).values())}
    else:
        start = time.perf_counter()
        sample = calibration_sample(probe, batches, args)
        kinds["features"] = {"saes": (made := random_saes(sample, args, "standard"))[0]}
        calibration["features"] = made[1]
        if args.topk_k:
            kinds["features (top-k)"] = {"saes": (made := random_saes(sample, args, "topk"))[0]}
            calibration["features (top-k)"] = made[1]
        del sample
        print(f"random SAEs built and calibrated in {time.perf_counter() - start:.0f} s; L0 on the calibration "
              f"sample: {calibration}", file=sys.stderr)
    loop: dict[str, list[float]] = {"plain body forward": [], **{kind: [] for kind in kinds}}
    end_to_end: dict[str, list[float]] = {kind: [] for kind in kinds}
    parts: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds if kind != "neurons"}
    units: dict[str, int] = {}
    l0: dict[str, list[float]] = {}
    for r in range(args.repeats):
        start = time.perf_counter()
        body()
        loop["plain body forward"].append(time.perf_counter() - start)
        for kind, selection in kinds.items():
            timing: dict[str, float] = {}
            start = time.perf_counter()
            with _timed_parts(timing) if kind in parts else contextlib.nullcontext():
                h = gpt2probe.harvest(probe, c, out=work / f"feat-{kind}-{r}", seq_len=args.seq_len,
                                      batch_size=args.batch_size, block_chars=args.block_chars, progress=False,
                                      **selection)
            end_to_end[kind].append(time.perf_counter() - start)
            loop[kind].append(max(h.manifest["timing"]["loop_seconds_per_rank"]))
            assert h.manifest["totals"]["tokens"] == tokens
            units[kind] = sum(hook["n_units"] for hook in h.manifest["hooks"])
            if kind in parts:
                parts[kind].append(timing)
                l0[kind] = [float(h.stats(hook)["active"].sum()) / tokens for hook in h.hooks]
    if args.label == "tiny-english" and units["neurons"] != units["features"]:
        raise RuntimeError(f"unequal unit counts, the comparison would not be fair: {units}")
    # Each round's features tokens/s over its neurons tokens/s (= neurons seconds / features seconds).
    paired = {kind: [n / f for n, f in zip(loop["neurons"], loop[kind], strict=True)] for kind in parts}
    return {"tokens": tokens, "units": units, "n_layers": probe.cfg.n_layers,
            "seconds": {k: statistics.median(v) for k, v in loop.items()},
            "end_to_end": {k: statistics.median(v) for k, v in end_to_end.items()},
            "loops": loop, "paired": paired, "parts": parts, "l0": l0, "calibration": calibration,
            "load": os.getloadavg()}


@contextlib.contextmanager
def _timed_parts(out: dict[str, float]):
    """Add up the wall time of a features harvest's encoder, summaries, and the summaries' search and statistics."""
    from gpt2probe.harvest import summaries
    from gpt2probe.harvest.summaries import UnitSummary
    from gpt2probe.sae.coder import SparseCoder

    def wrap(owner, name: str, key: str):
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                out[key] = out.get(key, 0.0) + time.perf_counter() - start

        setattr(owner, name, timed)
        return owner, name, original

    patched = [wrap(SparseCoder, "encode_with_support", "encoder"), wrap(UnitSummary, "update", "summaries"),
               wrap(summaries, "entries", "summaries: list the non-zeros"),
               wrap(summaries, "batch_stats", "summaries: statistics")]
    try:
        yield
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)


@contextlib.contextmanager
def _timed_updates(out: list[float]):
    """Record the wall time of every ``UnitSummary.update`` (one per hook and batch, in order)."""
    from gpt2probe.harvest.summaries import UnitSummary

    original = UnitSummary.update

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            out.append(time.perf_counter() - start)

    UnitSummary.update = timed
    try:
        yield
    finally:
        UnitSummary.update = original


CHILD = """
import json, sys
import gpt2probe
from gpt2probe.experiments.harvest import main
code = main(sys.argv[1:])
status = {line.split(':')[0]: line.split(':')[1].strip() for line in open('/proc/self/status') if ':' in line}
print(json.dumps({"code": code, "VmHWM_kib": int(status["VmHWM"].split()[0])}))
"""


def memory(args, work: Path) -> dict:
    out = {}
    for repeat in (1, 10):
        corpus = _corpus(work / f"mem-corpus-{repeat}", args.max_files, repeat)
        scaled = argparse.Namespace(**{**vars(args), "max_documents": args.max_documents and args.max_documents * repeat})
        argv = _harvest_args(args.model, corpus, work / f"mem-{repeat}", scaled)[1:]
        done = subprocess.run([sys.executable, "-c", CHILD, *argv], env=_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        manifest = json.loads((work / f"mem-{repeat}" / "harvest.json").read_text())
        out[repeat] = {"peak_mib": result["VmHWM_kib"] / 1024, "tokens": manifest["totals"]["tokens"]}
    return out


def scaling(args, corpus: list[str], work: Path) -> dict:
    out = {}
    for n in (1, 2):
        dest = work / f"scale-{n}"
        cli = _harvest_args(args.model, corpus, dest, args)
        if n == 1:
            cmd = [sys.executable, "-m", "gpt2probe", *cli]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                   "-m", "gpt2probe", *cli]
        start = time.perf_counter()
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        manifest = json.loads((dest / "harvest.json").read_text())
        out[n] = {**manifest["timing"], "wall_seconds": wall, "tokens": manifest["totals"]["tokens"]}
    return out


def report(args, tp: dict, mem: dict, scale: dict) -> str:
    s = tp["seconds"]
    lines = [
        f"# Harvest benchmark: {args.label}",
        "",
        f"Model `{args.label}`, all `{HOOKS}`, seq_len {args.seq_len}, batch {args.batch_size}, 1 thread per process, "
        f"corpus: {'documentation topics + ' if TOPICS else ''}docstrings of the first {args.max_files} stdlib files"
        f"{f', first {args.max_documents} documents' if args.max_documents else ''} ({tp['tokens']:,} tokens), "
        f"blocks of {args.block_chars} characters. {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')}.",
        "",
        f"Command: `python -m benchmarks.bench_harvest {' '.join(sys.argv[1:])}`. Every figure moves with the machine's"
        " other load (the load average above includes this benchmark's own process): compare rows within one run.",
        "",
        "| run | median s | tokens/s | vs plain LM forward | vs plain body forward |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, sec in s.items():
        tps = tp["tokens"] / sec
        lines.append(f"| {name} | {sec:.2f} | {tps:,.0f} | {s['plain LM forward'] / sec:.2f}x | "
                     f"{s['plain body forward'] / sec:.2f}x |")
    per_batch = tp["summary_seconds_per_batch"]
    if len(per_batch) >= 20:
        first, last = statistics.mean(per_batch[:10]), statistics.mean(per_batch[-10:])
        # The loop with every batch's summaries at the cost of the last 10 (the top-k filled as far as this corpus goes).
        steady = tp["loop_seconds"] - sum(per_batch) + last * len(per_batch)
        lines += ["", f"Summaries (every hook) per batch of {args.batch_size} windows, last harvest: first 10 batches "
                  f"{first * 1e3:.1f} ms, last 10 {last * 1e3:.1f} ms, all {len(per_batch)} "
                  f"{sum(per_batch) / len(per_batch) * 1e3:.1f} ms (early batches insert many top-k candidates: a batch "
                  "brings about k x its tokens / tokens so far per unit). Projected loop with every batch at the last "
                  f"10's cost: **{s['plain body forward'] / steady:.2f}x** the plain body forward (a projection from "
                  "measured per-batch costs, not an end-to-end measurement)."]
    if mem is not None:
        ratio = mem[10]["peak_mib"] / mem[1]["peak_mib"]
        lines += ["", "| corpus | tokens | peak RSS (MiB) |", "|---|---:|---:|"]
        for repeat, m in mem.items():
            lines.append(f"| {repeat}x | {m['tokens']:,} | {m['peak_mib']:.0f} |")
        lines += ["", f"Peak memory 10x / 1x: **{ratio:.3f}** (target < 1.1)."]
    if scale is None:
        return "\n".join(lines) + "\n"
    one, two = scale[1]["tokens_per_second"], scale[2]["tokens_per_second"]
    lines += ["", f"Blocks of work: {tp['blocks']} (largest first, each to the rank with the least text so far).", "",
              "| processes x threads | tokens/s (loop) | loop s per rank | wall s (whole command) |",
              "|---|---:|---:|---:|"]
    for n, label in ((1, "1 x 1"), (2, "2 x 1 (torchrun, gloo)")):
        t = scale[n]
        per_rank = " / ".join(f"{x:.1f}" for x in t["loop_seconds_per_rank"])
        lines.append(f"| {label} | {t['tokens_per_second']:,.0f} | {per_rank} | {t['wall_seconds']:.1f} |")
    lines += ["", f"Scaling 2 processes / 1 (loop tokens/s): **{two / one:.2f}x** (target >= 1.6 on 2 idle cores)."]
    if tp["blocks"] < 16:
        lines.append(f"Only {tp['blocks']} blocks: the ranks cannot share the work evenly, so this ratio says little.")
    return "\n".join(lines) + "\n"


def _setting(args) -> str:
    """Corpus, settings, machine and command, for a report of the features-vs-neurons runs alone."""
    return (f"seq_len {args.seq_len}, batch {args.batch_size}, 1 thread, corpus: "
            f"{'documentation topics + ' if TOPICS else ''}docstrings of the first {args.max_files} stdlib files"
            f"{f', first {args.max_documents} documents' if args.max_documents else ''}, blocks of {args.block_chars} "
            f"characters. {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}. "
            f"Command: `python -m benchmarks.bench_harvest {' '.join(sys.argv[1:])}`. The machine was shared: absolute "
            "figures move with its other load; the paired ratio cancels most of it.\n")


def features_report(args, ft: dict) -> str:
    s, n_layers = ft["seconds"], ft["n_layers"]
    per_layer = ft["units"]["neurons"] // n_layers
    kinds = [kind for kind in ft["paired"]]
    if args.label == "tiny-english":
        what = f"every layer's shipped SAE features ({n_layers} x {per_layer} units, `blocks.L.hook_resid_post`)"
    else:
        what = (f"every layer's random SAE features of gpt2-small-res-jb's shape ({n_layers} x {args.d_sae:,} units, "
                f"`blocks.L.hook_resid_pre`; standard ReLU with `b_enc` calibrated for an L0 near {args.target_l0}"
                f"{f', and top-k with k={args.topk_k}' if 'features (top-k)' in kinds else ''})")
    lines = [
        f"## Features vs neurons: {args.label}",
        "",
        f"Loop tokens/s of a harvest of every layer's `mlp.hook_post` neurons ({n_layers} x {per_layer} units) and of "
        f"{what}, {ft['tokens']:,} tokens, {args.repeats} interleaved rounds (body forward, neurons, features), "
        f"medians; load average after the rounds {', '.join(f'{x:.1f}' for x in ft['load'])} (1, 5, 15 min).",
        "",
        "| run | units | median loop s | tokens/s | vs plain body forward | median end to end s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, sec in s.items():
        e2e = ft["end_to_end"].get(name)
        n_units = ft["units"].get(name)
        lines.append(f"| {name} | {'-' if n_units is None else f'{n_units:,}'} | {sec:.2f} | {ft['tokens'] / sec:,.0f} | "
                     f"{s['plain body forward'] / sec:.2f}x | {'-' if e2e is None else f'{e2e:.2f}'} |")
    lines.append("")
    for kind in kinds:
        ratio = statistics.median(ft["paired"][kind])
        target = " (target >= ~1.0x: not slower)" if args.label == "tiny-english" else ""
        lines.append(f"{kind.capitalize()} / neurons (loop tokens/s, median of the per-round ratios "
                     f"{', '.join(f'{x:.2f}' for x in ft['paired'][kind])}): **{ratio:.2f}x**{target}.")
    for kind in kinds:
        l0 = ft["l0"][kind]
        calibrated = ft["calibration"].get(kind)
        lines += ["", f"{kind.capitalize()}: L0 (active features per token, from the harvest's counts over all its "
                  f"tokens) per layer {', '.join(f'{x:.0f}' for x in l0)}; mean {statistics.mean(l0):.1f}"
                  + ("" if calibrated is None else f" (on the calibration sample, the first "
                     f"{args.calibrated_positions:,} positions of the windows: mean {statistics.mean(calibrated):.1f})")
                  + "."]
        last = ft["parts"][kind][-1]
        lines += ["", f"Time split of the last round's {kind} harvest (wall time inside each part, added over its "
                  "batches; the summaries' two parts are inside the summaries; forward and the rest = that harvest's "
                  "loop - encoder - summaries):", "", "| part | s | share of the loop |", "|---|---:|---:|"]
        loop_s = ft["loops"][kind][-1]
        rest = loop_s - last.get("encoder", 0.0) - last.get("summaries", 0.0)
        order = ["encoder", "summaries", "summaries: list the non-zeros", "summaries: statistics"]
        for part, sec in [("forward and the rest", rest), *((p, last[p]) for p in order if p in last)]:
            lines.append(f"| {part} | {sec:.2f} | {sec / loop_s:.0%} |")
    if ft.get("memory") is not None:
        lines += ["", f"Peak memory (max RSS of a fresh process that builds the {ft['memory']['kind']} SAEs and runs one "
                  f"features harvest: its own `resource.getrusage(RUSAGE_SELF).ru_maxrss`, SAE calibration included): "
                  f"**{ft['memory']['peak_mib']:,.0f} MiB**."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-english",
                   help="tiny-english, gpt2-small-random (GPT-2 small's compute), a hub id or a directory")
    p.add_argument("--max-files", type=int, default=150, help="stdlib files whose docstrings join the corpus")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--block-chars", type=int, default=16384,
                   help="characters per block of work (default 16384: the default corpus makes ~58 blocks, so that "
                        "2 processes split it evenly)")
    p.add_argument("--max-documents", type=int, help="only the first N documents (for GPT-2 small on CPU)")
    p.add_argument("--skip-memory", action="store_true", help="skip the 1x / 10x peak-memory runs (slow for GPT-2 small)")
    p.add_argument("--skip-scaling", action="store_true", help="skip the 1- vs 2-process runs (slow for GPT-2 small)")
    p.add_argument("--skip-features", action="store_true", help="skip the features-vs-neurons harvests")
    p.add_argument("--features-only", action="store_true",
                   help="only the features-vs-neurons harvests (tiny-english: its shipped SAEs; gpt2-small-random: "
                        "random SAEs of gpt2-small-res-jb's shape)")
    p.add_argument("--d-sae", type=int, default=24576,
                   help="gpt2-small-random: features per random SAE (default 24576, as gpt2-small-res-jb)")
    p.add_argument("--target-l0", type=float, default=50.0,
                   help="gpt2-small-random: the standard SAEs' b_enc is calibrated for this many active features per token")
    p.add_argument("--calibration-tokens", type=int, default=4096,
                   help="gpt2-small-random: positions of the first windows the bias is calibrated on")
    p.add_argument("--topk-k", type=int, default=32,
                   help="gpt2-small-random: also harvest top-k SAEs of the same size with this k (0: skip them)")
    p.add_argument("--features-memory", action="store_true",
                   help="gpt2-small-random: also measure the max RSS of one standard-SAE features harvest (a fresh process)")
    p.add_argument("--quick", action="store_true", help="tiny corpus, one repeat: checks that it runs")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    args.label = args.model
    if args.features_only and (args.skip_features or args.model not in ("tiny-english", "gpt2-small-random")):
        p.error("--features-only needs --model tiny-english (the model that ships SAEs) or gpt2-small-random (random "
                "SAEs) and no --skip-features")
    if args.model == "gpt2-small-random":  # GPT-2 small's shapes and compute, seeded random weights
        from benchmarks.common import GPT2_SMALL, model_dir

        args.model = str(model_dir(GPT2_SMALL))
    if args.quick:  # docstrings of a few files only, in small blocks so that both ranks get work
        global TOPICS
        TOPICS, args.max_files, args.repeats = False, 12, 1
        args.block_chars = 2048
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = _corpus(work / "corpus", args.max_files)
        known = args.label in ("tiny-english", "gpt2-small-random")
        ft = None if args.skip_features or not known else features(args, corpus, work)
        if ft is not None and args.features_memory:
            ft["memory"] = features_memory(args, corpus)
        if args.features_only:
            text = f"# Harvest benchmark: {args.label}, features vs neurons\n\n{_setting(args)}\n{features_report(args, ft)}"
        else:
            tp = throughput(args, corpus, work)
            mem = None if args.skip_memory else memory(args, work)
            scale = None if args.skip_scaling else scaling(args, corpus, work)
            text = report(args, tp, mem, scale) + ("" if ft is None else "\n" + features_report(args, ft))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
