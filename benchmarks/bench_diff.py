"""What a base-versus-fine-tuned comparison costs, in plain forward passes of one model.

``gpt2probe.compare`` runs each model once on the prompts (KL, residual change and lens
view from those two runs: about two forward passes plus two logit-lens read-outs), then
optionally the head scores (one pattern-capturing run per model plus the induction runs)
and the patching sweep (one tuned run per patched unit: ``2 * n_layers`` for layer outputs,
``n_layers * n_heads`` more for heads). Configurations, timed interleaved in one process:

- ``plain``: one plain Hugging Face forward of one model (sdpa), the unit;
- ``forwards``: ``compare(..., head_scores=False, patching=False, lens=False)``: the two runs alone;
- ``core``: ``compare(..., head_scores=False, patching=False)``, with the lens view (one projection
  onto the vocabulary per stream and model, about two logit lenses);
- ``heads``: core + head scores;
- ``layers``: core + patching of each layer's attention and MLP output;
- ``full``: everything, heads patched one by one.

The "tuned" model is the same random GPT-2-small-sized checkpoint with layer 5's MLP perturbed.

    .venv/bin/python -m benchmarks.bench_diff --threads 1 --lengths 128 --repeats 3 --out benchmarks/results/cpu-diff.md
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence

import torch

from .common import (
    Case,
    Context,
    apply_threads,
    emit,
    environment,
    fmt_ms,
    fmt_ratio,
    markdown_table,
    median,
    model_dir,
    paired_ratio,
    parse_settings,
    parser,
    select_cases,
    time_interleaved,
    timing_line,
    token_ids,
)


def _pair(ctx: Context):
    def build():
        import gpt2probe

        base = ctx.probe()
        model = copy.deepcopy(base.model)
        with torch.no_grad():
            mlp = model.transformer.h[min(5, len(model.transformer.h) - 1)].mlp.c_fc
            mlp.weight.add_(0.01 * torch.randn(mlp.weight.shape, generator=torch.Generator().manual_seed(0)))
        return base, gpt2probe.load(model, device=ctx.device)

    return ctx._once("pair", build)


def _compare(**options):
    def setup(ctx: Context, ids: torch.Tensor):
        from gpt2probe import compare

        base, tuned = _pair(ctx)
        return lambda: compare(base, tuned, ids, **options)

    return setup


def _plain(ctx: Context, ids: torch.Tensor):
    model = ctx.hf("sdpa")
    ids = ids.to(ctx.device)
    return lambda: model(ids, use_cache=False).logits


CASES = [
    Case("plain", "plain HF forward of one model (sdpa)", _plain),
    Case("forwards", "compare without the lens view: KL, residual change", _compare(head_scores=False, patching=False,
                                                                                     lens=False)),
    Case("core", "compare: KL, residual change, lens view", _compare(head_scores=False, patching=False)),
    Case("heads", "core + head scores", _compare(head_scores=True, patching=False)),
    Case("layers", "core + patching each layer's attn/MLP output", _compare(head_scores=False, patch_heads=False)),
    Case("full", "everything, heads patched one by one", _compare()),
]


def main(argv: Sequence[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    settings = parse_settings(args, argv)
    apply_threads(settings.threads)
    cases = select_cases(CASES, settings.cases)
    ctx = Context(model_dir(settings.spec), settings.device)
    rows = []
    for length in settings.lengths:
        ids = token_ids(length, settings.spec.vocab_size)
        times = time_interleaved({c.key: c.setup(ctx, ids) for c in cases}, settings.repeats[length], settings.device)
        for case in cases:
            ratio = paired_ratio(times, case.key, "plain") if "plain" in times else None
            rows.append((length, case.key, case.label, fmt_ms(median(times[case.key])), fmt_ratio(ratio)))
    report = "\n".join([
        "# gpt2probe.compare: cost in plain forward passes",
        "",
        environment(settings, "benchmarks.bench_diff"),
        timing_line(settings),
        "",
        markdown_table(["tokens", "key", "configuration", "median ms", "x plain forward"], rows),
        "",
    ])
    emit(report, settings.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
