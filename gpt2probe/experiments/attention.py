"""The attention experiment: every head's pattern on one input, with head scores, in one interactive page.

Used by ``experiments/attention_patterns.py`` and by ``gpt2probe attention``. It runs the
model once, capturing every layer's attention pattern, scores each head
(previous-token, first-token and diagonal on the input; induction on repeated random
tokens), prints the top heads per score and writes the viewer of
:mod:`gpt2probe.report.attention_viewer`: all heads as thumbnails, one large, hover to
follow a token. GPT-2 small's 144 heads at 1,024 tokens fit in one file under 40 MB.
When the requested hub model cannot be loaded offline it says so and falls back to the
shipped ``tiny-english`` model, in the terminal and in the page.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PromptError
from . import options
from .common import (
    Parser,
    UsageError,
    add_common_arguments,
    fallback_note,
    finite_float,
    load_model,
    positive_int,
    run_command,
    uses_gpt2_vocab,
)

if TYPE_CHECKING:
    import torch

    from ..probe import GPT2Probe

DEFAULT_PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog."
DEFAULT_OUT = "reports/attention.html"
TOY_HALF_LEN = 8
MAX_BYTES = 40_000_000  # the page's default size budget: gpt2probe.report.attention_viewer.MAX_BYTES (checked in a test)


def build_parser() -> Parser:
    parser = Parser(
        prog="gpt2probe attention",
        description="Every attention head's pattern on one input, with head scores, as one interactive HTML page.",
    )
    add_common_arguments(parser, DEFAULT_OUT)
    source = parser.add_mutually_exclusive_group()
    options.add(source, "--prompt", "for models with GPT-2's vocabulary")
    options.add(source, "--prompt-from")
    options.add(source, "--tokens", "(for models with their own vocabulary)")
    options.add(parser, "--prepend-bos", "as TransformerLens does (default: off, as everywhere in gpt2probe)")
    options.add(parser, "--top", "heads listed per score in the terminal (default: 5)", default=5)
    options.add(parser, "--seed", "of the random tokens for induction scores (default: 0)", default=0)
    parser.add_argument("--n-seqs", type=positive_int, default=8,
                        help="repeated random sequences for induction scores (default: 8)")
    parser.add_argument("--max-mb", type=finite_float, default=MAX_BYTES / 1e6,
                        help=f"largest page in MB (default: {MAX_BYTES / 1e6:.0f}); small weights are dropped, announced, to fit")
    options.add_deprecated(parser, "attention")
    return parser


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise PromptError(f"--tokens must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise PromptError("--tokens is empty")
    return ids


def choose_input(
    probe: GPT2Probe, args: argparse.Namespace, prompt_text: str | None = None
) -> tuple[torch.Tensor, list[str], str, list[str]]:
    """(ids [pos], token strings, a description of the input, notes) from --tokens, --prompt(-from) or the default."""
    import torch

    from ..toy import repeated_random_tokens

    text_model = uses_gpt2_vocab(probe)
    prompt = prompt_text if prompt_text is not None else args.prompt
    if args.tokens is not None:
        ids = torch.tensor(parse_ids(args.tokens))
        notes: list[str] = []
    elif text_model:
        prompt = prompt if prompt is not None else DEFAULT_PROMPT
        ids = probe.to_tokens(prompt, prepend_bos=args.prepend_bos).ids[0]
        bos = "with <|endoftext|> prepended" if args.prepend_bos else "without a prepended <|endoftext|>"
        return ids, probe.to_str_tokens(ids), prompt, [f"The prompt was tokenized {bos} ({len(ids)} tokens)."]
    elif prompt is not None:
        raise PromptError(
            f"{probe.cfg.model_name!r} has its own {probe.cfg.d_vocab}-token vocabulary, so text cannot be tokenized "
            "for it: pass token ids with --tokens"
        )
    elif args.prepend_bos:  # it was ignored: a model with its own vocabulary has no <|endoftext|> to prepend
        raise PromptError(f"--prepend-bos is for a text prompt; {probe.cfg.model_name!r} has its own "
                          f"{probe.cfg.d_vocab}-token vocabulary: pass token ids with --tokens")
    else:
        ids = repeated_random_tokens(1, TOY_HALF_LEN, probe.cfg.d_vocab, seed=args.seed)[0]
        notes = [f"No --tokens given: the input is a random block of {TOY_HALF_LEN} tokens repeated twice after token 0."]
    labels = probe.to_str_tokens(ids) if text_model else [f"#{i}" for i in ids.tolist()]
    return ids, labels, "token ids: " + ",".join(str(i) for i in ids.tolist()), notes


def summary_table(scores: dict[str, torch.Tensor], top: int) -> str:
    """The ``top`` heads per score, one column per score."""
    from .. import head_scores as H

    ranked = {key: H.rank_heads(grid, top) for key, grid in scores.items()}
    width = max(16, *(len(H.SCORE_LABELS.get(key, key)) + 2 for key in scores))
    lines = [("rank  " + "".join(f"{H.SCORE_LABELS.get(key, key):<{width}}" for key in scores)).rstrip()]
    for rank in range(top):
        cells = []
        for key in scores:
            rows = ranked[key]
            cells.append(f"{H.head_label(*rows[rank][:2])} {rows[rank][2]:.3f}" if rank < len(rows) else "")
        lines.append((f"{rank + 1:<6}" + "".join(f"{cell:<{width}}" for cell in cells)).rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> Path:
    import torch

    from .. import head_scores as H
    from .. import names as N
    from ..report.attention_viewer import AttentionData, write_attention_viewer

    if not args.max_mb > 0:
        raise UsageError(f"--max-mb must be positive, got {args.max_mb:g}")
    if args.tokens is not None:
        parse_ids(args.tokens)  # a typo costs no loading
        if args.prepend_bos:  # it was ignored: the ids are used as given
            raise UsageError("--prepend-bos is for a text prompt; with --tokens, put <|endoftext|>'s id first "
                             "(50256 in GPT-2's vocabulary)")
    prompt_text = None
    if args.prompt_from is not None:
        try:
            prompt_text = args.prompt_from.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"--prompt-from {str(args.prompt_from)!r} cannot be read as UTF-8 text: {error}") from None
    probe, fell_back = load_model(args)
    note = fallback_note(probe, "Its heads are those of a model trained for minutes on Python's documentation "
                                "and sources (a previous-token head and induction heads among them): they say "
                                "nothing about GPT-2's.") if fell_back else None
    ids, labels, described, input_notes = choose_input(probe, args, prompt_text)
    _, cache = probe.run_with_cache(ids, names=H.PATTERN_NAMES, device="cpu", dtype=torch.float32)
    scores = {
        "previous_token": H.previous_token_scores(cache),
        "induction": H.induction_scores(probe, n_seqs=args.n_seqs, seed=args.seed),
        "first_token": H.first_token_scores(cache),
        "diagonal": H.diagonal_scores(cache),
    }
    data = AttentionData(labels, probe.cfg.n_layers, probe.cfg.n_heads)
    for layer in range(probe.cfg.n_layers):
        data.add_layer(cache[N.pattern(layer)][0])
    del cache
    data.set_scores(scores)
    notes = ([note] if note else []) + input_notes + [
        "previous-token, first-token and diagonal scores: mean attention of every query except the first "
        "to the position before it, to the first token, and to itself, on this input.",
        f"induction score: mean attention from the second copy of {args.n_seqs} repeated random token blocks "
        "to the token after the earlier occurrence of the current token.",
    ]
    try:
        path, threshold = write_attention_viewer(
            args.out, data, title=f"Attention patterns: {probe.cfg.model_name}", model_name=probe.cfg.model_name,
            prompt=described, notes=notes, max_bytes=int(args.max_mb * 1e6),
            metadata={"tokens": len(labels), "prepend_bos": args.prepend_bos, "induction seed": args.seed},
        )
    except ValueError as error:  # the page cannot fit the size budget
        raise UsageError(str(error)) from None
    print(f"model {probe.cfg.model_name} ({probe.cfg.n_layers} layers x {probe.cfg.n_heads} heads), {len(labels)} tokens")
    print(summary_table(scores, args.top))
    if note:
        print(f"\nNote: {note}")
    if threshold:
        print(f"\nNote: weights below {threshold}/255 are stored as 0 to keep the page under {args.max_mb:g} MB.")
    size = path.stat().st_size
    shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} KB"
    print(f"\nPage written to {path} ({shown})")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``gpt2probe attention``: every mistake is one ``error:`` line and exit status 2."""
    return run_command(build_parser(), run, argv)
