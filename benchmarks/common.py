"""Shared machinery for the benchmarks: the model, the command line, timing, memory, tables.

Timing runs every configuration of one length in a single process, *interleaved* (round
``r`` runs each configuration once, in turn), so that load from other processes on a
shared machine hits every configuration alike; the median of the repeats is reported.

Peak memory is measured in a fresh subprocess per configuration, because a process's
allocator keeps what earlier configurations freed and the resident high-water mark cannot
go down. The child loads what the configuration needs, reads every weight once (checkpoints
are memory-mapped, so weights only become resident when touched), resets the kernel's
high-water mark (``/proc/self/clear_refs``) and reads ``VmHWM`` around the *first* call: the
peak of that call, whole process, torch's allocations included (which ``tracemalloc`` would
miss), and whatever the call keeps. Without ``clear_refs`` it falls back to
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` before and after, which can only under-report.
On CUDA it uses ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent

# Never reach for the network: the model is built here and the tokenizer ships with gpt2probe.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

MiB = 2**20
DEFAULT_LENGTHS = (16, 128, 1024)
QUICK_LENGTHS = (8, 16)


@dataclass(frozen=True)
class ModelSpec:
    """A GPT-2 configuration to benchmark, built with random weights from a fixed seed."""

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    vocab_size: int
    seed: int = 0

    def config(self) -> GPT2Config:
        sizes = dict(n_layer=self.n_layer, n_embd=self.n_embd, n_head=self.n_head,
                     n_positions=self.n_positions, vocab_size=self.vocab_size)
        config = GPT2Config(**sizes)
        for key, value in sizes.items():  # GPT2Config silently ignores misspelt fields
            assert getattr(config, key) == value, (key, getattr(config, key), value)
        return config

    def describe(self) -> str:
        return (f"{self.name}: {self.n_layer} layers, d_model {self.n_embd}, {self.n_head} heads, "
                f"vocab {self.vocab_size}, n_ctx {self.n_positions}, random weights (seed {self.seed})")


# GPT2Config() defaults: GPT-2 small's shapes, hence its compute.
GPT2_SMALL = ModelSpec("gpt2-small-random", n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)
# For smoke tests: every code path, a fraction of a second per call. GPT-2's vocabulary, so
# the shipped tokenizer fits (TransformerLens boots it from the model directory).
TINY = ModelSpec("tiny-random", n_layer=2, n_embd=48, n_head=3, n_positions=32, vocab_size=50257)


def model_dir(spec: ModelSpec, root: Path | None = None) -> Path:
    """A ``save_pretrained`` directory (weights + GPT-2 tokenizer) for ``spec``, built once and reused.

    The same directory feeds gpt2probe, the plain Hugging Face model and TransformerLens,
    so every contender runs exactly the same weights.
    """
    root = Path(root or os.environ.get("GPT2PROBE_BENCH_CACHE", Path(tempfile.gettempdir()) / "gpt2probe-bench"))
    path = root / f"{spec.name}-L{spec.n_layer}-d{spec.n_embd}-h{spec.n_head}-v{spec.vocab_size}-c{spec.n_positions}-s{spec.seed}"
    if (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file():
        return path
    from gpt2probe.tokenizer import gpt2_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
    torch.manual_seed(spec.seed)
    model = GPT2LMHeadModel(spec.config()).eval()
    model.save_pretrained(staging)
    gpt2_tokenizer().save_pretrained(staging)
    try:
        staging.rename(path)
    except OSError:  # another process built it first
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return path


def token_ids(length: int, vocab_size: int, seed: int = 1) -> torch.Tensor:
    """``[1, length]`` random token ids, the same for every contender."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (1, length), generator=generator)


# -- command line ---------------------------------------------------------------------

def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--lengths", default=None,
                   help=f"comma-separated prompt lengths in tokens (default {','.join(map(str, DEFAULT_LENGTHS))}; "
                        f"--quick: {','.join(map(str, QUICK_LENGTHS))})")
    p.add_argument("--repeats", default="5",
                   help="timed calls per configuration after one warm-up: one number, or one per length (e.g. 10,10,3)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own default); 1 is steadier on a shared machine")
    p.add_argument("--quick", action="store_true", help="a tiny model, for smoke tests (numbers are meaningless)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--memory-runs", type=int, default=3,
                   help="fresh subprocesses per configuration and length; the median peak is reported, and the "
                        "largest when it is much larger (glibc's heap can keep freed memory, so peaks vary run to run)")
    p.add_argument("--cases", default=None, help="comma-separated configuration keys to run (default: all)")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown report to this file")
    p.add_argument("--note", default=None, help="a line added to the report (e.g. what else loaded the machine)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one memory measurement
    p.add_argument("--length", type=int, default=None, help=argparse.SUPPRESS)
    return p


@dataclass
class Settings:
    """Parsed command-line options, with the defaults resolved."""

    spec: ModelSpec
    lengths: list[int]
    repeats: dict[int, int]
    device: torch.device
    threads: int | None
    memory: bool
    memory_runs: int
    cases: list[str] | None
    out: Path | None
    note: str | None
    argv: list[str] = field(default_factory=list)
    load_at_start: str = field(default_factory=lambda: _load_average())


def parse_settings(args: argparse.Namespace, argv: Sequence[str] | None) -> Settings:
    spec = TINY if args.quick else GPT2_SMALL
    lengths = _ints(args.lengths, "--lengths") if args.lengths else list(QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS)
    too_long = [n for n in lengths if not 1 <= n <= spec.n_positions]
    if too_long:
        raise SystemExit(f"--lengths {too_long} outside 1..{spec.n_positions} (the model's n_ctx)")
    repeats = _ints(args.repeats, "--repeats")
    if len(repeats) == 1:
        repeats = repeats * len(lengths)
    if len(repeats) != len(lengths) or min(repeats) < 1:
        raise SystemExit(f"--repeats needs one positive number or one per length ({len(lengths)}), got {args.repeats!r}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
    if args.memory_runs < 1:
        raise SystemExit(f"--memory-runs must be at least 1, got {args.memory_runs}")
    return Settings(spec, lengths, dict(zip(lengths, repeats)), device, args.threads, not args.no_memory,
                    args.memory_runs, cases, args.out, args.note, list(argv) if argv is not None else sys.argv[1:])


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"{option} takes comma-separated integers, got {text!r}") from None


def apply_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


# -- configurations -------------------------------------------------------------------

Setup = Callable[["Context", torch.Tensor], Callable[[], Any]]


@dataclass(frozen=True)
class Case:
    """One configuration: ``setup(ctx, ids)`` does the untimed preparation and returns the timed call."""

    key: str
    label: str
    setup: Setup


class Context:
    """Loads each contender once, lazily, so a memory subprocess loads only what its case needs."""

    def __init__(self, directory: Path, device: torch.device) -> None:
        self.directory, self.device = directory, device
        self._cache: dict[str, Any] = {}

    def _once(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def hf(self, attn_implementation: str) -> GPT2LMHeadModel:
        """The plain Hugging Face model with ``sdpa`` or ``eager`` attention."""
        return self._once(f"hf-{attn_implementation}", lambda: GPT2LMHeadModel.from_pretrained(
            self.directory, attn_implementation=attn_implementation, dtype=torch.float32).to(self.device).eval())

    def probe(self):
        """gpt2probe loaded from the same directory, as a user would (default ``sdpa``)."""
        import gpt2probe

        return self._once("probe", lambda: gpt2probe.load(self.directory, device=self.device, dtype=torch.float32))

    def bridge(self):
        """TransformerLens 4's ``TransformerBridge`` on the same weights (it forces eager attention)."""
        def build():
            from transformer_lens.model_bridge import TransformerBridge

            bridge = TransformerBridge.boot_transformers(str(self.directory), device=str(self.device))
            bridge.eval()
            return bridge

        return self._once("bridge", build)


    def make_resident(self) -> None:
        """Read every loaded weight once: memory-mapped checkpoints only become resident when touched."""
        modules = []
        for key, value in self._cache.items():
            module = value.model if key == "probe" else value
            if isinstance(module, torch.nn.Module):
                modules.append(module)
        with torch.no_grad():
            for module in modules:
                for tensor in [*module.parameters(), *module.buffers()]:
                    tensor.sum()


def select_cases(cases: Sequence[Case], wanted: list[str] | None) -> list[Case]:
    if wanted is None:
        return list(cases)
    known = {c.key: c for c in cases}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise SystemExit(f"unknown --cases {unknown}; valid: {', '.join(known)}")
    return [known[w] for w in wanted]


# -- timing ---------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(calls: dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call: one untimed warm-up each, then ``repeats`` rounds of every call in turn.

    Odd rounds run the calls in reverse order, so no configuration always follows the same one.
    """
    times: dict[str, list[float]] = {key: [] for key in calls}
    with torch.no_grad():
        for fn in calls.values():
            fn()
        synchronize(device)
        for round_ in range(repeats):
            order = list(calls.items())
            for key, fn in order[::-1] if round_ % 2 else order:
                gc.collect()
                synchronize(device)
                start = time.perf_counter()
                result = fn()
                synchronize(device)
                times[key].append(time.perf_counter() - start)
                del result
    return times


def paired_ratio(times: dict[str, list[float]], key: str, base: str) -> float:
    """Median over rounds of ``time[key] / time[base]`` within the same round.

    Calls of one round run seconds apart, so a ratio taken inside a round cancels most of
    the slow drift in what else the machine is doing; the median then drops the rounds
    where a burst of load hit one call and not the other.
    """
    return statistics.median(a / b for a, b in zip(times[key], times[base]))


def timing_line(settings: Settings) -> str:
    """How the times were taken, for the report."""
    (first, n), *rest = settings.repeats.items()
    rounds = ", ".join([f"{n} rounds at {first} tokens"] + [f"{m} at {length}" for length, m in rest])
    return (f"- timing: {rounds}, after one warm-up call each; a round runs every configuration once (odd rounds "
            "in reverse order); 'median ms' and 'min ms' are over rounds; every ratio is the median over rounds of "
            "the ratio within a round (paired), which cancels most of the drift in the machine's other load")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


# -- memory ---------------------------------------------------------------------------

def _status_kib(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _release_free_memory() -> None:
    """Hand memory freed by the warm-up back to the OS (glibc keeps it), so it is not counted as 'before'."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure_peak(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Peak memory of the first call of ``fn``: the state before it, and the peak during it.

    No warm-up: whatever a call allocates and keeps (a cache, state retained by the library,
    one-time buffers) counts, as it does for a user's first call. The caller makes the
    weights resident first (they may be memory-mapped), so they count as 'before'.
    """
    gc.collect()
    _release_free_memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            result = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del result
        return {"method": "torch.cuda.max_memory_allocated", "before": before, "peak": peak}
    if _reset_peak_rss() and _status_kib("VmHWM") is not None:
        before = _status_kib("VmRSS") * 1024
        with torch.no_grad():
            result = fn()
        peak = _status_kib("VmHWM") * 1024
        del result
        return {"method": "VmHWM (peak RSS) after resetting it with /proc/self/clear_refs", "before": before, "peak": peak}
    before = _maxrss_bytes()
    with torch.no_grad():
        result = fn()
    peak = _maxrss_bytes()
    del result
    return {"method": "ru_maxrss before and after (can under-report)", "before": before, "peak": max(peak, before)}


def run_child(script: str, case: str, length: int, settings: Settings) -> dict[str, Any]:
    """Measure one configuration's peak memory in a fresh interpreter."""
    command = [sys.executable, "-m", f"benchmarks.{script}", "--child", case, "--length", str(length),
               "--device", str(settings.device)]
    if settings.spec is TINY:
        command.append("--quick")
    if settings.threads is not None:
        command += ["--threads", str(settings.threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout)[-2000:]
        raise RuntimeError(f"memory subprocess for {case!r} at {length} tokens failed ({done.returncode}):\n{tail}")
    return json.loads(lines[-1])


def measure_memory(script: str, case: str, length: int, settings: Settings) -> dict[str, Any]:
    """``settings.memory_runs`` fresh subprocesses: the run with the median peak, plus the largest peak seen."""
    runs = sorted((run_child(script, case, length, settings) for _ in range(settings.memory_runs)),
                  key=lambda run: run["peak"])
    chosen = dict(runs[(len(runs) - 1) // 2])
    chosen["growth"] = chosen["peak"] - chosen["before"]
    chosen["peak_max"] = runs[-1]["peak"]
    chosen["runs"] = len(runs)
    return chosen


def fmt_total(mem: dict[str, Any] | None) -> str:
    """The median peak total, and the largest one when it was more than 10% larger."""
    if not mem:
        return "–"
    text = fmt_mib(mem["peak"])
    if mem.get("peak_max", 0) > 1.1 * mem["peak"]:
        text += f" (max {fmt_mib(mem['peak_max'])})"
    return text


def memory_line(memory: dict, settings: Settings) -> str:
    if not memory:
        return "- memory: not measured (--no-memory)"
    method = next(iter(memory.values()))["method"]
    return (f"- memory: {settings.memory_runs} fresh subprocess(es) per configuration and length, each measuring its "
            f"first call (weights made resident before); {method}; the run with the median peak is shown. "
            "'peak growth' is the peak during the call minus the resident memory before it (what the call "
            "allocates and keeps); 'peak total' is the whole process at that peak (interpreter, libraries, weights), "
            "with the largest of the runs in brackets when it was more than 10% above the median")


def child_main(cases: Sequence[Case], args: argparse.Namespace) -> None:
    """In the subprocess: load what one case needs, warm up, and print its peak memory as JSON."""
    spec = TINY if args.quick else GPT2_SMALL
    apply_threads(args.threads)
    device = torch.device(args.device)
    case = select_cases(cases, [args.child])[0]
    ids = token_ids(args.length, spec.vocab_size).to(device)
    ctx = Context(model_dir(spec), device)
    fn = case.setup(ctx, ids)
    ctx.make_resident()
    print(json.dumps({"case": case.key, "length": args.length, **measure_peak(fn, device)}), flush=True)


# -- report ---------------------------------------------------------------------------

def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    ms = seconds * 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def fmt_mib(n_bytes: float | None) -> str:
    return "–" if n_bytes is None else f"{n_bytes / MiB:,.0f}"


def check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def environment(settings: Settings, script: str) -> str:
    """Date, machine, versions and settings: what a reader needs to compare two reports."""
    import transformers

    try:
        import transformer_lens

        tl_version = getattr(transformer_lens, "__version__", None) or _dist_version("transformer-lens")
    except ImportError:
        tl_version = "not installed"
    import gpt2probe

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = str(settings.device)
    if settings.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(settings.device)})"
    lines = [
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {platform.node() or 'unknown'}, {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        f"- device: {device}; torch threads: {torch.get_num_threads()}; dtype float32; batch 1",
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"transformer-lens {tl_version}, gpt2probe {gpt2probe.__version__}",
        f"- model: {settings.spec.describe()}",
        f"- load average (1, 5, 15 min) at the start: {settings.load_at_start}; at the end: {_load_average()}",
        f"- command: `python -m benchmarks.{script} {' '.join(settings.argv)}`",
    ]
    if settings.note:
        lines.append(f"- note: {settings.note}")
    return "\n".join(lines)


def _load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def emit(report: str, out: Path | None) -> None:
    print(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report + "\n", encoding="utf-8")
