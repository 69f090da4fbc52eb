"""Harvest throughput, memory and multi-process scaling on Python's own documentation.

Three measurements, all with one intra-op thread per process:

1. Throughput: ``gpt2probe.harvest`` with summaries for every ``mlp.hook_post`` of the model
   vs a plain forward pass over the *same packed windows* (the full language model, and the
   transformer body without the unembedding). Interleaved repeats, medians. "Harvest (loop)"
   is the harvest's own loop time (forward + summaries + packing); "end to end" adds loading
   nothing but includes hashing the weights, the first pass over the corpus and writing results.
   Target: harvest >= 0.85x the plain forward's tokens/s.
2. Peak memory: the same harvest over the corpus and over 10 copies of it, each in a fresh
   process (``VmHWM`` of the whole process). Target: 10x the text, < 1.1x the peak.
3. Scaling: ``torchrun --nproc_per_node 2`` (gloo, 1 thread each) vs one process, tokens/s
   from the harvest's loop timing. Target on 2 idle cores: >= 1.6x.

    python -m benchmarks.bench_harvest --out benchmarks/results/cpu-harvest.md
    python -m benchmarks.bench_harvest --quick          # small, to check it runs
    python -m benchmarks.bench_harvest --model gpt2-small-random   # GPT-2 small's compute

On a shared machine every figure is noise: re-measure on an idle one.
"""

from __future__ import annotations

import argparse
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
    return ["harvest", "--model", model, "--corpus", *corpus, "--field", "text", "--hooks", HOOKS, "--out", str(out),
            "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--no-progress"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


def throughput(args, corpus: list[str], work: Path) -> dict:
    import torch

    import gpt2probe
    from gpt2probe.experiments.harvest import load_model
    from gpt2probe.harvest import Corpus
    from gpt2probe.harvest.corpus import blocks, pack

    torch.set_num_threads(1)
    probe = load_model(args.model, "cpu")
    c = Corpus(corpus, field="text")
    eos = probe.tokenizer.eos_token_id
    batches, tokens = [], 0
    for block in blocks(c):
        packed = pack(block, probe.tokenizer, seq_len=args.seq_len, eos=eos)
        tokens += int(packed.valid.sum())
        batches += list(packed.tokens.split(args.batch_size))

    @torch.no_grad()
    def plain(body: bool) -> None:
        run = probe.model.transformer if body else probe.model
        for b in batches:
            run(input_ids=b, use_cache=False)

    runs = {"plain LM forward": [], "plain body forward": [], "harvest end to end": [], "harvest loop": []}
    for r in range(args.repeats):
        for name in ("plain LM forward", "plain body forward"):
            start = time.perf_counter()
            plain(body=name == "plain body forward")
            runs[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        h = gpt2probe.harvest(probe, c, hooks=HOOKS, out=work / f"tp-{r}", seq_len=args.seq_len,
                              batch_size=args.batch_size, progress=False)
        runs["harvest end to end"].append(time.perf_counter() - start)
        runs["harvest loop"].append(max(h.manifest["timing"]["loop_seconds_per_rank"]))
        assert h.manifest["totals"]["tokens"] == tokens
    return {"tokens": tokens, "seconds": {k: statistics.median(v) for k, v in runs.items()}}


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
        argv = _harvest_args(args.model, corpus, work / f"mem-{repeat}", args)[1:]
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
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        timing = json.loads((dest / "harvest.json").read_text())["timing"]
        out[n] = timing
    return out


def report(args, tp: dict, mem: dict, scale: dict) -> str:
    s = tp["seconds"]
    lines = [
        "# Harvest benchmark",
        "",
        f"Model `{args.model}`, all `{HOOKS}`, seq_len {args.seq_len}, batch {args.batch_size}, 1 thread per process, "
        f"corpus: {'documentation topics + ' if TOPICS else ''}docstrings of the first {args.max_files} stdlib files "
        f"({tp['tokens']:,} tokens). {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')}.",
        "",
        "**Measured on a shared, busy machine: re-measure on an idle one before quoting.**",
        "",
        "| run | median s | tokens/s | vs plain LM forward | vs plain body forward |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, sec in s.items():
        tps = tp["tokens"] / sec
        lines.append(f"| {name} | {sec:.2f} | {tps:,.0f} | {s['plain LM forward'] / sec:.2f}x | "
                     f"{s['plain body forward'] / sec:.2f}x |")
    ratio = mem[10]["peak_mib"] / mem[1]["peak_mib"]
    lines += ["", "| corpus | tokens | peak RSS (MiB) |", "|---|---:|---:|"]
    for repeat, m in mem.items():
        lines.append(f"| {repeat}x | {m['tokens']:,} | {m['peak_mib']:.0f} |")
    lines += ["", f"Peak memory 10x / 1x: **{ratio:.3f}** (target < 1.1)."]
    one, two = scale[1]["tokens_per_second"], scale[2]["tokens_per_second"]
    lines += ["", "| processes x threads | tokens/s (loop) |", "|---|---:|",
              f"| 1 x 1 | {one:,.0f} |", f"| 2 x 1 (torchrun, gloo) | {two:,.0f} |", "",
              f"Scaling 2 processes / 1: **{two / one:.2f}x** (target >= 1.6 on 2 idle cores)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-english",
                   help="tiny-english, gpt2-small-random (GPT-2 small's compute), a hub id or a directory")
    p.add_argument("--max-files", type=int, default=150, help="stdlib files whose docstrings join the corpus")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny corpus, one repeat: checks that it runs")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.model == "gpt2-small-random":  # GPT-2 small's shapes and compute, seeded random weights
        from benchmarks.common import GPT2_SMALL, model_dir

        args.model = str(model_dir(GPT2_SMALL))
    if args.quick:  # docstrings of a few files only
        global TOPICS
        TOPICS, args.max_files, args.repeats = False, 12, 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = _corpus(work / "corpus", args.max_files)
        tp = throughput(args, corpus, work)
        mem = memory(args, work)
        scale = scaling(args, corpus, work)
    text = report(args, tp, mem, scale)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
