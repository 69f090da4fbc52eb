"""Steer GPT-2 with a mean-difference vector: continuations with and without it: ``gpt2probe steering``.

The vector is the mean residual stream entering ``--layer`` at the last token of the
``--positive`` prompts minus that of the ``--negative`` prompts. It is scaled so that its
norm is ``--norm-ratio`` (default 0.5) times the mean norm of the stream it is added to
(at the ``--prompt`` texts' last tokens, at that layer), a size that matters but does not
drown the stream; ``--alpha`` gives the multiple of the raw vector instead. The scaled
vector is added at every position while the prompt runs and while tokens are generated;
the run prints the multiple and the ratio it used. Both runs
use the same seed, so they differ only through the vector. The report shows the two
continuations side by side, the top next tokens before and after, and the tokens whose
probability changed most.
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from . import options
from .common import (
    Parser,
    UsageError,
    add_common_arguments,
    add_plotly_argument,
    announce_model,
    doc_help,
    finite_float,
    load_model,
    positive_int,
    run_command,
)

PROMPT = "I think you are"
POSITIVE, NEGATIVE = ["Love"], ["Hate"]
# The shipped tiny-english model (85% Python source) has no sentiment to steer: with Love/Hate its
# continuations are newlines with or without the vector. What it does have is the difference between
# code and English prose, so its default steers a docstring-like sentence toward code. Measured at
# layer 2 (the middle), ratio 0.5, seed 0: "This module provides" goes on as prose without the
# vector and as imports and dotted names with it (tests/test_steering.py holds the effect).
OFFLINE_MODEL = "tiny-english"
OFFLINE_PROMPT = "This module provides"
OFFLINE_POSITIVE, OFFLINE_NEGATIVE = ["def", "import", "class"], ["The", "This", "It"]
DEFAULT_OUT = "reports/steering.html"
NORM_RATIO = 0.5  # |alpha v| / mean |resid| by default: half the stream's size
TOP_K = 50  # sampling draws from the 50 most likely tokens unless --top-k says otherwise


def build_parser() -> Parser:
    description, epilog = doc_help(__doc__)
    parser = Parser(prog="gpt2probe steering", description=description,
                    epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add(parser, "--prompt", f"continued with and without steering; repeat for several (default: {PROMPT!r}; "
                                    f"on {OFFLINE_MODEL}: {OFFLINE_PROMPT!r})", action="append")
    parser.add_argument("--positive", action="append", help=f"a prompt with the property (repeatable; default: {POSITIVE}; "
                                                            f"on {OFFLINE_MODEL}: {OFFLINE_POSITIVE}, code)")
    parser.add_argument("--negative", action="append", help=f"a prompt without it (repeatable; default: {NEGATIVE}; "
                                                            f"on {OFFLINE_MODEL}: {OFFLINE_NEGATIVE}, prose)")
    options.add(parser, "--layer", "whose stream is steered (default: the middle one)")
    parser.add_argument("--stream", choices=("resid_pre", "resid_mid", "resid_post"), default="resid_pre",
                        help="where in the layer the vector is read from and added to: entering it (resid_pre, "
                             "the default), between attention and MLP (resid_mid), or leaving it (resid_post)")
    parser.add_argument("--norm-ratio", type=finite_float,
                        help="size of the added vector as a multiple of the stream's mean norm at the prompts' last "
                             f"tokens (default: {NORM_RATIO}; not with --alpha)")
    parser.add_argument("--alpha", type=finite_float,
                        help="multiple of the raw mean-difference vector added, instead of --norm-ratio")
    parser.add_argument("--max-new-tokens", type=positive_int, default=30, help="tokens generated per run (default: 30)")
    parser.add_argument("--temperature", type=finite_float, default=1.0, help="sampling temperature (default: 1)")
    parser.add_argument("--top-k", type=positive_int, help=f"sample from the k most likely tokens (default: {TOP_K}; "
                                                          "not with --greedy)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    options.add(parser, "--seed", "of the sampling, the same for both runs (default: 0)", default=0)
    options.add(parser, "--top", "next tokens listed before and after (default: 10)", default=10)
    add_common_arguments(parser, DEFAULT_OUT)
    add_plotly_argument(parser)
    options.add_deprecated(parser, "steering")
    return parser


def side_by_side(prompt: str, plain: str, steered: str, width: int | None = None) -> str:
    """Two continuations in aligned, wrapped terminal columns under their prompt (``repr`` keeps whitespace visible)."""
    total = width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    column = max(24, (total - 5) // 2)
    left = textwrap.wrap(repr(plain), column) or [""]
    right = textwrap.wrap(repr(steered), column) or [""]
    rows = max(len(left), len(right))
    left += [""] * (rows - len(left))
    right += [""] * (rows - len(right))
    lines = [f"Prompt: {prompt!r}", f"  {'without steering':<{column}} | with steering", f"  {'-' * column}-+-{'-' * column}"]
    lines += [f"  {a:<{column}} | {b}".rstrip() for a, b in zip(left, right)]
    return "\n".join(lines)


def default_texts(model_name: str) -> tuple[list[str], list[str], list[str]]:
    """The default ``(prompts, positive, negative)`` for a model: code vs prose on tiny-english, Love/Hate elsewhere."""
    if model_name == OFFLINE_MODEL:
        return [OFFLINE_PROMPT], list(OFFLINE_POSITIVE), list(OFFLINE_NEGATIVE)
    return [PROMPT], list(POSITIVE), list(NEGATIVE)


def run(args: argparse.Namespace) -> Path:
    import torch

    with torch.no_grad():
        return _run(args)


def _run(args: argparse.Namespace) -> Path:
    from ..errors import InvalidArgumentError
    from ..generation import generate
    from ..interventions import alpha_for_ratio, mean_difference_vector, residual_norm, steer
    from ..interventions.steering import stream_name
    from ..report import change_bars, continuations_table, top_tokens_table, write_html
    from ..tokens import decode as decode_text

    if args.temperature <= 0 and not args.greedy:
        raise UsageError(f"--temperature must be > 0 (got {args.temperature:g}); use --greedy for greedy decoding")
    if args.greedy and (args.top_k is not None or args.temperature != 1.0):
        raise UsageError("--greedy takes the most likely token at every step: --top-k and --temperature would be "
                         "ignored, so give them only without --greedy")
    if args.alpha is not None and args.norm_ratio is not None:
        raise UsageError("--alpha and --norm-ratio both set the vector's size: give one of them")
    if args.norm_ratio is not None and args.norm_ratio <= 0:
        raise UsageError(f"--norm-ratio must be > 0 (got {args.norm_ratio:g}); flip --positive and --negative to "
                         "steer the other way")
    top_k = TOP_K if args.top_k is None else args.top_k
    probe, fell_back = load_model(args)
    cfg = probe.cfg
    if args.layer is not None and not -cfg.n_layers <= args.layer < cfg.n_layers:
        raise UsageError(f"--layer {args.layer} is outside the model: it has {cfg.n_layers} layers "
                         f"(valid: 0 to {cfg.n_layers - 1}, or -1 to {-cfg.n_layers})")
    notes = announce_model(probe, fell_back, "Steering a model this small says little about GPT-2: its default "
                                             "here steers prose toward the Python code it mostly learned.",
                           f"{cfg.n_layers} layers, d_model {cfg.d_model}")
    default_prompts, default_positive, default_negative = default_texts(cfg.model_name)
    prompts = args.prompt or default_prompts
    positive, negative = args.positive or default_positive, args.negative or default_negative
    if cfg.model_name == OFFLINE_MODEL and not (args.prompt and args.positive and args.negative):
        print(f"Defaults for {OFFLINE_MODEL}, a model of Python code with no sentiment to steer: steering prose "
              f"toward code (--positive {positive}, --negative {negative}, --prompt {prompts})")
    layer = cfg.n_layers // 2 if args.layer is None else args.layer % cfg.n_layers
    name = stream_name(probe, layer, args.stream)

    vector = mean_difference_vector(probe, positive, negative, layer, stream=args.stream)
    typical = residual_norm(probe, prompts, layer, args.stream)
    if args.alpha is None:
        ratio = NORM_RATIO if args.norm_ratio is None else args.norm_ratio
        try:
            alpha = alpha_for_ratio(vector, typical, ratio)
        except InvalidArgumentError as error:
            raise UsageError(f"{error} (--positive {positive}, --negative {negative})") from None
        how = f"--norm-ratio {ratio:g}"
    else:
        alpha, how = args.alpha, "--alpha"
    size = abs(alpha) * float(vector.norm())
    print(f"Steering {name} with alpha = {alpha:.4g} x (mean({positive}) - mean({negative})), set by {how}: "
          f"|alpha v| = {size:.2f} = {size / typical:.2f} x the mean |resid| at the prompts' last tokens ({typical:.2f})")

    continue_prompts = (partial(generate, greedy=True) if args.greedy else
                        partial(generate, temperature=args.temperature, top_k=top_k, seed=args.seed))
    plain = continue_prompts(probe, prompts, args.max_new_tokens)
    with steer(probe, layer, vector, alpha, stream=args.stream):
        steered = continue_prompts(probe, prompts, args.max_new_tokens)
        p_after = probe(prompts[0])[0, -1].float().softmax(-1)
    p_before = probe(prompts[0])[0, -1].float().softmax(-1)

    def decode(ids: list[int]) -> list[str]:
        return [decode_text(probe.tokenizer, [i]) for i in ids]

    k = min(args.top, cfg.d_vocab)
    top_before, top_after = p_before.topk(k).indices.tolist(), p_after.topk(k).indices.tolist()
    moved = (p_after - p_before).abs().topk(min(15, cfg.d_vocab)).indices.tolist()
    for prompt, a, b in zip(prompts, plain.continuations, steered.continuations):
        print("\n" + side_by_side(prompt, a, b))
    print(f"\nTop next tokens after {prompts[0]!r}:")
    width = max(len(repr(t)) for t in decode(top_before) + decode(top_after)) + 2
    print(f"  {'rank':>4}  {'before':<{width}}{'p':>7}   {'after':<{width}}{'p':>7}")
    for rank, (i, j) in enumerate(zip(top_before, top_after), 1):
        print(f"  {rank:>4}  {decode([i])[0]!r:<{width}}{float(p_before[i]):7.4f}   "
              f"{decode([j])[0]!r:<{width}}{float(p_after[j]):7.4f}")

    figures = {
        "Continuations with and without steering": continuations_table(prompts, plain.continuations, steered.continuations),
        "Top next tokens before and after": top_tokens_table(
            decode(top_before), p_before[top_before].tolist(), decode(top_after), p_after[top_after].tolist()),
        "Biggest probability changes": change_bars(decode(moved), p_before[moved].tolist(), p_after[moved].tolist()),
    }
    path = write_html(
        args.out, figures,
        plotlyjs=args.plotly, title="Steering with a mean-difference vector", model_name=cfg.model_name, prompts=prompts,
        notes=notes or None,
        metadata={
            "Hook": name,
            "Vector": f"mean over {positive!r} - mean over {negative!r} (last token)",
            "alpha": f"{alpha:.4g} (set by {how})",
            "|alpha v|": f"{size:.3f} = {size / typical:.2f} x the mean |resid| ({typical:.3f}) at the prompts' last tokens",
            "Decoding": "greedy" if args.greedy else f"sampled, temperature {args.temperature}, top-k {top_k}, seed {args.seed}",
        },
    )
    print(f"\nReport written to {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``gpt2probe steering``: 0 on success, 2 with one ``error:`` line on a mistake."""
    return run_command(build_parser(), run, argv)
