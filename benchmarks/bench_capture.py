"""Capture overhead: gpt2probe's ``run_with_cache`` against a plain forward and TransformerLens.

On a GPT-2-small-sized model (random weights, fixed seed, batch 1, float32), at each length:

- ``plain_sdpa`` / ``plain_eager``: ``model(ids)`` of the Hugging Face model, no hooks;
- ``ours_none``: ``probe.run_with_cache(ids, names=[])`` (captures nothing; should cost a plain forward);
- ``ours_resid``: the residual streams (``hook_resid_pre/mid/post`` of every block), sdpa attention;
- ``ours_resid_one_pattern``: the same plus ONE layer's ``attn.hook_pattern`` (the middle block's):
  only that layer runs the eager pattern math, every other layer keeps sdpa;
- ``ours_resid_pattern``: the same plus every ``attn.hook_pattern`` (every layer computes its pattern);
- ``tl_resid`` / ``tl_resid_pattern``: TransformerLens 4's ``TransformerBridge.run_with_cache`` with
  ``names_filter`` set to the same names, on the same weights (the bridge always runs eager attention).

Targets (issue 9, at 1,024 tokens): names=[] and resid streams <= 1.02x a plain sdpa forward;
resid + one layer's pattern <= 1.10x a plain sdpa forward; resid + every pattern <= 1.05x a plain
eager forward (the pattern costs eager's materialised ``[head, pos, pos]`` weights, whatever the
implementation). And less time and memory than TransformerLens for the same names.

Run: ``python -m benchmarks.bench_capture [--lengths 16,128,1024] [--repeats 5] [--out FILE]``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    Case,
    Context,
    MiB,
    apply_threads,
    check,
    child_main,
    emit,
    environment,
    fmt_mib,
    fmt_ms,
    fmt_ratio,
    fmt_total,
    markdown_table,
    measure_memory,
    median,
    memory_line,
    model_dir,
    paired_ratio,
    parse_settings,
    parser,
    select_cases,
    time_interleaved,
    timing_line,
    token_ids,
)

SCRIPT = "bench_capture"
NOTHING_TOLERANCE = 1.02  # names=[] and resid streams vs plain sdpa: they should cost a plain forward
ONE_PATTERN_TARGET = 1.10  # resid + one layer's pattern vs plain sdpa
ALL_PATTERNS_TARGET = 1.05  # resid + every layer's pattern vs plain eager


def resid_names(n_layers: int) -> list[str]:
    """Every residual stream: ``blocks.{l}.hook_resid_pre``, ``_mid`` and ``_post``."""
    from gpt2probe import names as N

    return [name for layer in range(n_layers) for name in (N.resid_pre(layer), N.resid_mid(layer), N.resid_post(layer))]


def pattern_names(n_layers: int) -> list[str]:
    from gpt2probe import names as N

    return [N.pattern(layer) for layer in range(n_layers)]


def _n_layers(ctx: Context) -> int:
    import json

    return json.loads((ctx.directory / "config.json").read_text())["n_layer"]


def _plain(attn: str):
    def setup(ctx: Context, ids: torch.Tensor):
        model = ctx.hf(attn)
        return lambda: model(ids)

    return setup


def _ours(patterns: str | None):
    """``patterns``: ``None`` (capture nothing), ``"none"``, ``"one"`` (the middle layer's) or ``"all"``, with the resid streams."""
    def setup(ctx: Context, ids: torch.Tensor):
        probe, n = ctx.probe(), _n_layers(ctx)
        extra = {"none": [], "one": pattern_names(n)[n // 2 : n // 2 + 1], "all": pattern_names(n)}
        names = [] if patterns is None else resid_names(n) + extra[patterns]
        return lambda: probe.run_with_cache(ids, names=names)

    return setup


def _tl(with_patterns: bool):
    def setup(ctx: Context, ids: torch.Tensor):
        bridge, n = ctx.bridge(), _n_layers(ctx)
        names = resid_names(n) + (pattern_names(n) if with_patterns else [])
        return lambda: bridge.run_with_cache(ids, names_filter=names)

    return setup


CASES = [
    Case("plain_sdpa", "plain HF forward, sdpa", _plain("sdpa")),
    Case("plain_eager", "plain HF forward, eager", _plain("eager")),
    Case("ours_none", "gpt2probe, names=[]", _ours(None)),
    Case("ours_resid", "gpt2probe, resid streams (sdpa)", _ours("none")),
    Case("ours_resid_one_pattern", "gpt2probe, resid + one layer's pattern", _ours("one")),
    Case("ours_resid_pattern", "gpt2probe, resid + every pattern", _ours("all")),
    Case("tl_resid", "TransformerLens bridge, resid streams", _tl(False)),
    Case("tl_resid_pattern", "TransformerLens bridge, resid + patterns", _tl(True)),
]

# Which plain forward each configuration is compared with, and which TransformerLens run.
BASELINE = {"ours_none": "plain_sdpa", "ours_resid": "plain_sdpa", "ours_resid_one_pattern": "plain_sdpa",
            "ours_resid_pattern": "plain_eager",
            "tl_resid": "plain_eager", "tl_resid_pattern": "plain_eager", "plain_eager": "plain_sdpa"}
TL_OF = {"ours_resid": "tl_resid", "ours_resid_pattern": "tl_resid_pattern"}


def agreement(ctx: Context, ids: torch.Tensor) -> str:
    """Check that gpt2probe and TransformerLens capture the same tensors, so the comparison is fair."""
    n = _n_layers(ctx)
    names = resid_names(n) + pattern_names(n)
    with torch.no_grad():
        _, ours = ctx.probe().run_with_cache(ids, names=names)
        _, theirs = ctx.bridge().run_with_cache(ids, names_filter=names)
    missing = [name for name in names if name not in ours or name not in theirs]
    if missing:
        return f"**names missing from a cache: {missing[:5]}**"
    worst = max((ours[name] - theirs[name].to(ours[name].device)).abs().max().item() for name in names)
    return (f"gpt2probe and TransformerLens captured the same {len(names)} tensors "
            f"({len(names) - n} residual streams, {n} patterns) at {ids.shape[1]} tokens; max |difference| {worst:.1e}")


def main(argv: Sequence[str] | None = None) -> str:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    if args.child:
        child_main(CASES, args)
        return ""
    settings = parse_settings(args, argv)
    apply_threads(settings.threads)
    cases = select_cases(CASES, settings.cases)
    directory = model_dir(settings.spec)
    ctx = Context(directory, settings.device)

    samples: dict[int, dict[str, list[float]]] = {}
    memory: dict[tuple[int, str], dict] = {}
    checks: list[str] = []
    for length in settings.lengths:
        ids = token_ids(length, settings.spec.vocab_size).to(settings.device)
        if {"ours_resid_pattern", "tl_resid_pattern"} <= {c.key for c in cases} and length == settings.lengths[0]:
            checks.append(agreement(ctx, ids))
        calls = {case.key: case.setup(ctx, ids) for case in cases}
        samples[length] = time_interleaved(calls, settings.repeats[length], settings.device)
        del calls
        if settings.memory:
            for case in cases:
                memory[length, case.key] = measure_memory(SCRIPT, case.key, length, settings)

    report = render(settings, cases, samples, memory, checks)
    emit(report, settings.out)
    return report


def render(settings, cases, samples, memory, checks) -> str:
    keys = {c.key for c in cases}

    def ratio(length: int, key: str | None, base: str | None) -> float | None:
        return paired_ratio(samples[length], key, base) if {key, base} <= keys else None

    def growth(length: int, key: str | None) -> int | None:
        mem = memory.get((length, key))
        return mem["growth"] if mem else None

    def mem_ratio(length: int, key: str, base: str | None) -> float | None:
        ours, theirs = growth(length, key), growth(length, base)
        return ours / theirs if ours is not None and theirs is not None and theirs >= MiB else None  # < 1 MiB: noise

    rows = []
    for length in settings.lengths:
        for case in cases:
            base, tl = BASELINE.get(case.key), TL_OF.get(case.key)
            vs_plain = ratio(length, case.key, base)
            mem = memory.get((length, case.key))
            rows.append([length, case.label, fmt_ms(median(samples[length][case.key])), fmt_ms(min(samples[length][case.key])),
                         fmt_ratio(vs_plain) + (f" ({base.replace('plain_', '')})" if vs_plain else ""),
                         fmt_ratio(ratio(length, case.key, tl)), fmt_mib(growth(length, case.key)),
                         fmt_total(mem), fmt_ratio(mem_ratio(length, case.key, tl))])
    table = markdown_table(["tokens", "configuration", "median ms", "min ms", "vs plain", "vs TL", "peak growth MiB",
                            "peak total MiB", "memory vs TL"], rows)

    summary = []
    for length in settings.lengths:
        def cell(r, limit):
            return "–" if r is None else f"{r:.2f}x {check(r <= limit)}"

        summary.append([
            length,
            cell(ratio(length, "ours_none", "plain_sdpa"), NOTHING_TOLERANCE),
            cell(ratio(length, "ours_resid", "plain_sdpa"), NOTHING_TOLERANCE),
            cell(ratio(length, "ours_resid_one_pattern", "plain_sdpa"), ONE_PATTERN_TARGET),
            cell(ratio(length, "ours_resid_pattern", "plain_eager"), ALL_PATTERNS_TARGET),
            cell(ratio(length, "ours_resid", "tl_resid"), 1.0) + " / " + cell(ratio(length, "ours_resid_pattern", "tl_resid_pattern"), 1.0),
            cell(mem_ratio(length, "ours_resid", "tl_resid"), 1.0)
            + " / "
            + cell(mem_ratio(length, "ours_resid_pattern", "tl_resid_pattern"), 1.0),
        ])
    targets = markdown_table(
        ["tokens", f"names=[] vs plain sdpa (<= {NOTHING_TOLERANCE})", f"resid vs plain sdpa (<= {NOTHING_TOLERANCE})",
         f"resid+one pattern vs plain sdpa (<= {ONE_PATTERN_TARGET})",
         f"resid+every pattern vs plain eager (<= {ALL_PATTERNS_TARGET})", "time vs TL, resid / +patterns (< 1)",
         "peak growth vs TL, resid / +patterns (< 1)"], summary)

    parts = [
        "# Capture overhead: gpt2probe `run_with_cache` vs a plain forward and TransformerLens",
        "",
        environment(settings, SCRIPT),
        timing_line(settings),
        memory_line(memory, settings),
        "- 'vs plain' compares with the plain forward named in brackets; the TransformerLens bridge always "
        "runs eager attention; resid streams = `blocks.*.hook_resid_pre/mid/post` (3 per layer); "
        "one layer's pattern = the middle block's `attn.hook_pattern` (only that layer leaves sdpa)",
        *(f"- check: {line}" for line in checks),
        "",
        table,
        "",
        "## Targets",
        "",
        targets,
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
