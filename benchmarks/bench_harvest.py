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
4. Features vs neurons (tiny-english only; ``--features-only`` runs it alone): the harvest of
   every layer's SAE features (the shipped SAEs, one per ``blocks.L.hook_resid_post``, 512
   features each) vs the harvest of every layer's ``mlp.hook_post`` neurons (4 x 128 = 512 per
   layer: as many units), over the same packed windows, with the plain body forward as the
   floor. Interleaved repeats; the ratio is the median of each round's paired ratio, so load
   that hits one round hits both harvests alike. Target: features >= ~1.0x the neurons'
   tokens/s (docs/saes.md: "feature harvesting costs about what the neuron harvest costs").

    python -m benchmarks.bench_harvest --out benchmarks/results/cpu-harvest.md           # ~240k tokens
    python -m benchmarks.bench_harvest --quick          # small, to check it runs
    python -m benchmarks.bench_harvest --model gpt2-small-random --max-documents 36 --repeats 1 \
        --skip-memory --skip-scaling --out benchmarks/results/cpu-harvest-gpt2-small.md  # ~50k tokens, ~12 min
    python -m benchmarks.bench_harvest --features-only --max-files 20 --repeats 3 \
        --out benchmarks/results/cpu-harvest-features.md  # features vs neurons alone

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


def features(args, corpus: list[str], work: Path) -> dict:
    """Harvest every layer's SAE features vs every layer's MLP neurons (as many units), interleaved."""
    import torch

    import gpt2probe
    from gpt2probe.experiments.harvest import load_model
    from gpt2probe.harvest.corpus import blocks, pack

    torch.set_num_threads(1)
    probe = load_model(args.model, "cpu")
    saes = list(gpt2probe.load_saes(args.model).values())
    c = _corpus_object(corpus, args)
    batches, tokens = [], 0
    for block in blocks(c, args.block_chars):
        packed = pack(block, probe.tokenizer, seq_len=args.seq_len, eos=probe.tokenizer.eos_token_id)
        tokens += int(packed.valid.sum())
        batches += list(packed.tokens.split(args.batch_size))

    @torch.no_grad()
    def body() -> None:
        for b in batches:
            probe.model.transformer(input_ids=b, use_cache=False)

    kinds = {"neurons": {"hooks": HOOKS}, "features": {"saes": saes}}
    loop: dict[str, list[float]] = {"plain body forward": [], "neurons": [], "features": []}
    end_to_end: dict[str, list[float]] = {"neurons": [], "features": []}
    units: dict[str, int] = {}
    for r in range(args.repeats):
        start = time.perf_counter()
        body()
        loop["plain body forward"].append(time.perf_counter() - start)
        for kind, selection in kinds.items():
            start = time.perf_counter()
            h = gpt2probe.harvest(probe, c, out=work / f"feat-{kind}-{r}", seq_len=args.seq_len,
                                  batch_size=args.batch_size, block_chars=args.block_chars, progress=False, **selection)
            end_to_end[kind].append(time.perf_counter() - start)
            loop[kind].append(max(h.manifest["timing"]["loop_seconds_per_rank"]))
            assert h.manifest["totals"]["tokens"] == tokens
            units[kind] = sum(hook["n_units"] for hook in h.manifest["hooks"])
    if units["neurons"] != units["features"]:
        raise RuntimeError(f"unequal unit counts, the comparison would not be fair: {units}")
    # Each round's features tokens/s over its neurons tokens/s (= neurons seconds / features seconds).
    paired = [n / f for n, f in zip(loop["neurons"], loop["features"], strict=True)]
    return {"tokens": tokens, "units": units, "n_layers": len(saes),
            "seconds": {k: statistics.median(v) for k, v in loop.items()},
            "end_to_end": {k: statistics.median(v) for k, v in end_to_end.items()},
            "paired": paired, "load": os.getloadavg()}


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
    lines = [
        f"## Features vs neurons: {args.label}",
        "",
        f"Loop tokens/s of a harvest of every layer's `mlp.hook_post` neurons ({n_layers} x {per_layer} units) and of "
        f"every layer's shipped SAE features ({n_layers} x {per_layer} units, `blocks.L.hook_resid_post`), "
        f"{ft['tokens']:,} tokens, {args.repeats} interleaved rounds (body forward, neurons, features), medians; "
        f"load average after the rounds {', '.join(f'{x:.1f}' for x in ft['load'])} (1, 5, 15 min).",
        "",
        "| run | median loop s | tokens/s | vs plain body forward | median end to end s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, sec in s.items():
        e2e = ft["end_to_end"].get(name)
        lines.append(f"| {name} | {sec:.2f} | {ft['tokens'] / sec:,.0f} | {s['plain body forward'] / sec:.2f}x | "
                     f"{'-' if e2e is None else f'{e2e:.2f}'} |")
    ratio = statistics.median(ft["paired"])
    lines += ["", f"Features / neurons (loop tokens/s, median of the per-round ratios "
              f"{', '.join(f'{x:.2f}' for x in ft['paired'])}): **{ratio:.2f}x** (target >= ~1.0x: not slower)."]
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
                   help="only the features-vs-neurons harvests (tiny-english: its shipped SAEs)")
    p.add_argument("--quick", action="store_true", help="tiny corpus, one repeat: checks that it runs")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    args.label = args.model
    if args.features_only and (args.skip_features or args.model != "tiny-english"):
        p.error("--features-only needs --model tiny-english (the model that ships SAEs) and no --skip-features")
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
        ft = None if args.skip_features or args.label != "tiny-english" else features(args, corpus, work)
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
