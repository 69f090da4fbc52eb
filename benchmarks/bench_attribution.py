"""Attribution patching against exact activation patching of the same cells, on the IOI prompt pair.

On a GPT-2-small-sized model (random weights, fixed seed, float32), with the clean prompt
"When Mary and John went to the store, John gave a drink to" and the corrupted one with
"Mary" in place of the second "John" (metric: logit(" Mary") - logit(" John")), 14 GPT-2
tokens. Random weights have no behaviour, so the metric's values mean nothing here: the pair
fixes the shapes (12 x 14 = 168 layer x position cells, 12 x 12 = 144 heads on GPT-2 small,
counted by :func:`cells` from the tokenizer), and the times depend on nothing else.

- ``exact_resid`` / ``atp_resid``: :func:`patch` and :func:`attribution_patch` over layer x position
  of ``hook_resid_pre`` (the same cells);
- ``exact_heads`` / ``atp_heads`` / ``atpstar_heads_k`` / ``ig_heads``: every head's output (layer x head),
  atp* on the heads' keys (QK fix + GradDrop), integrated gradients with 8 steps;
- ``edges_atp`` / ``edges_atpstar``: edge attribution over every edge of the graph;
- ``faithfulness``: one exact circuit run (the top 50 edges).

Targets (issue 12): ``atp`` over layer x position at least 20x faster than exact patching of the
same cells; heads in a few seconds on 2 CPU cores; peak memory reported.

Run: ``python -m benchmarks.bench_attribution [--repeats 3] [--threads 2] [--out FILE]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    Case,
    Context,
    apply_threads,
    check,
    child_main,
    emit,
    environment,
    fmt_ms,
    fmt_ratio,
    fmt_total,
    markdown_table,
    measure_memory,
    median,
    model_dir,
    paired_ratio,
    parse_settings,
    parser,
    select_cases,
    time_interleaved,
)

SCRIPT = "bench_attribution"
SPEEDUP_TARGET = 20.0
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
ANSWER, WRONG = " Mary", " John"


def _call(fn_name: str, **kwargs):
    def setup(ctx: Context, ids: torch.Tensor):
        from gpt2probe import interventions as I

        probe = ctx.probe()
        fn = getattr(I, fn_name)
        return lambda: fn(probe, CLEAN, CORRUPTED, answer=ANSWER, wrong=WRONG, **kwargs)

    return setup


def _faithfulness(ctx: Context, ids: torch.Tensor):
    from gpt2probe import interventions as I

    probe = ctx.probe()
    chosen = I.circuit(I.edge_attribution_patch(probe, CLEAN, CORRUPTED, answer=ANSWER, wrong=WRONG), top=50)
    return lambda: I.faithfulness(probe, chosen, CLEAN, CORRUPTED, answer=ANSWER, wrong=WRONG)


CASES = [
    Case("exact_resid", "exact patch, resid_pre layer x pos", _call("patch", kind="resid_pre")),
    Case("atp_resid", "atp, resid_pre layer x pos", _call("attribution_patch", kind="resid_pre")),
    Case("exact_heads", "exact patch, heads (layer x head)", _call("patch", kind="head")),
    Case("atp_heads", "atp, heads", _call("attribution_patch", kind="head")),
    Case("atpstar_heads_k", "atp* (QK fix + GradDrop), head keys", _call("attribution_patch", kind="head_k", method="atp*")),
    Case("ig_heads", "ig (8 steps per layer), heads", _call("attribution_patch", kind="head", method="ig", steps=8)),
    Case("edges_atp", "edge attribution, atp", _call("edge_attribution_patch")),
    Case("edges_atpstar", "edge attribution, atp*", _call("edge_attribution_patch", method="atp*")),
    Case("faithfulness", "faithfulness, top-50 circuit", _faithfulness),
]


def prompt_length() -> int:
    """The IOI prompts' length in GPT-2 tokens, counted by the tokenizer (clean and corrupted agree)."""
    from gpt2probe.tokenizer import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    lengths = {len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in (CLEAN, CORRUPTED)}
    if len(lengths) != 1:
        raise SystemExit(f"the clean and corrupted prompts tokenise to different lengths {sorted(lengths)}")
    return lengths.pop()


def cells(n_layers: int, n_heads: int, n_tokens: int) -> str:
    """What the exact sweeps patch, computed: layer x position and layer x head."""
    return (f"prompt: {n_tokens} GPT-2 tokens; cells: resid_pre layer x position {n_layers} x {n_tokens} = "
            f"{n_layers * n_tokens}, heads {n_layers} x {n_heads} = {n_layers * n_heads}")


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    if args.child:
        child_main(CASES, args)
        return
    n_tokens = prompt_length()
    if args.lengths is None:
        args.lengths = str(n_tokens)  # only labels the run: the cases tokenise the IOI prompts themselves
    settings = parse_settings(args, argv)
    apply_threads(settings.threads)
    cases = select_cases(CASES, settings.cases)
    ctx = Context(model_dir(settings.spec), settings.device)
    length = settings.lengths[0]
    calls = {case.key: case.setup(ctx, torch.zeros(1, length, dtype=torch.long)) for case in cases}
    for call in calls.values():  # warm-up
        call()
    times = time_interleaved(calls, settings.repeats[length], settings.device)
    memory = {case.key: measure_memory(SCRIPT, case.key, length, settings) if settings.memory else None for case in cases}
    rows = []
    for case in cases:
        rows.append([case.key, case.label, fmt_ms(median(times[case.key])), fmt_total(memory[case.key])])
    lines = [f"# Attribution patching vs exact patching ({settings.spec.name})", "", environment(settings, SCRIPT), "",
             f"- {cells(settings.spec.n_layer, settings.spec.n_head, n_tokens)}", "",
             markdown_table(["case", "what", "median ms", "peak total MiB"], rows), ""]
    for exact, estimate in (("exact_resid", "atp_resid"), ("exact_heads", "atp_heads")):
        if exact in times and estimate in times:
            ratio = paired_ratio(times, exact, estimate)
            target = (f"(target >= {SPEEDUP_TARGET:.0f}x) {check(ratio >= SPEEDUP_TARGET)}" if exact == "exact_resid"
                      else "(no target: the 20x is for layer x position)")
            lines.append(f"- {exact} / {estimate}: {fmt_ratio(ratio)} {target}")
    emit("\n".join(lines), settings.out)


if __name__ == "__main__":
    main()
