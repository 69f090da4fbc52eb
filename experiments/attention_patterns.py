"""Attention patterns of every head on one prompt, and each head's summary scores, as an HTML report.

    python experiments/attention_patterns.py --prompt "The cat sat on the mat. The cat sat"
    python experiments/attention_patterns.py --model gpt2probe/assets/toy-induction --tokens 0,5,9,2,5,9,2

The report holds one heatmap per (layer, head), switched with a dropdown, and a layers x
heads grid per score (previous-token, first-token, diagonal on the prompt; induction on
repeated random tokens); the terminal gets the top heads per score. When the model's
weights are not available offline, the shipped ``tiny-english`` model (else the toy
induction model) is used instead, and both the terminal and the report say so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

import gpt2probe  # noqa: E402
from gpt2probe import head_scores as H  # noqa: E402
from gpt2probe.attention_figures import pattern_figure, score_grid_figure  # noqa: E402
from gpt2probe.errors import PromptError  # noqa: E402
from gpt2probe.report import write_html  # noqa: E402
from gpt2probe.shipped import load_with_fallback  # noqa: E402
from gpt2probe.toy import repeated_random_tokens  # noqa: E402

DEFAULT_PROMPT = "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog."
DEFAULT_OUT = Path("reports/attention_patterns.html")
TOY_HALF_LEN = 8
MAX_CELLS = 5_000_000  # heatmap cells in one report (~25 MB of HTML); more needs --layers or a shorter input


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt2", help="hub id or save_pretrained directory (default: gpt2)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prompt", help="text to run (models with GPT-2's vocabulary)")
    source.add_argument("--tokens", help="comma-separated token ids, e.g. 0,5,9,2,5,9 (for models with their own vocabulary)")
    parser.add_argument("--no-bos", action="store_true", help="do not prepend <|endoftext|> to --prompt")
    parser.add_argument("--layers", default="all", help="layers to draw: 'all', '0,3,5' or '0-3' (scores cover every layer)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report path (default: {DEFAULT_OUT})")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the first available)")
    parser.add_argument("--top", type=int, default=5, help="heads listed per score in the terminal (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random tokens for induction scores")
    parser.add_argument("--n-seqs", type=int, default=8, help="repeated random sequences for induction scores")
    return parser, parser.parse_args(argv)


def uses_gpt2_vocab(probe: gpt2probe.GPT2Probe) -> bool:
    """Whether the probe's tokenizer fits the model's vocabulary (text prompts make sense)."""
    return probe.cfg.d_vocab >= len(probe.tokenizer)


def parse_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise PromptError(f"--tokens must be comma-separated integers, got {text!r}") from None
    if not ids:
        raise PromptError("--tokens is empty")
    return ids


def parse_layers(text: str, n_layers: int) -> list[int]:
    """``"all"``, ``"0,3,5"`` or ``"0-3"`` (inclusive) to sorted layer indices, checked against the model."""
    if text.strip().lower() == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    try:
        for part in filter(None, text.replace(" ", "").split(",")):
            start, _, end = part.partition("-")
            layers.update(range(int(start), int(end or start) + 1))
    except ValueError:
        raise ValueError(f"--layers must be 'all', a list like '0,3,5' or a range like '0-3', got {text!r}") from None
    bad = sorted(layer for layer in layers if not 0 <= layer < n_layers)
    if not layers or bad:
        raise ValueError(f"--layers {text!r}: valid layers are 0..{n_layers - 1}" + (f" (got {bad})" if bad else ""))
    return sorted(layers)


def choose_input(probe: gpt2probe.GPT2Probe, args: argparse.Namespace) -> tuple[torch.Tensor, list[str], str, list[str]]:
    """(ids [pos], token labels, a description of the input, notes) from --tokens, --prompt or the default."""
    text_model = uses_gpt2_vocab(probe)
    if args.tokens is not None:
        ids = torch.tensor(parse_ids(args.tokens))
        notes = []
    elif text_model:
        prompt = args.prompt if args.prompt is not None else DEFAULT_PROMPT
        ids = probe.to_tokens(prompt, prepend_bos=not args.no_bos).ids[0]
        return ids, probe.to_str_tokens(ids), prompt, []
    elif args.prompt is not None:
        raise PromptError(
            f"{probe.cfg.model_name!r} has its own {probe.cfg.d_vocab}-token vocabulary, so text cannot be tokenized "
            "for it: pass token ids with --tokens"
        )
    else:
        ids = repeated_random_tokens(1, TOY_HALF_LEN, probe.cfg.d_vocab, seed=args.seed)[0]
        notes = [f"No --tokens given: the input is a random block of {TOY_HALF_LEN} tokens repeated twice after token 0."]
    labels = probe.to_str_tokens(ids) if text_model else [f"#{i}" for i in ids.tolist()]
    return ids, labels, "token ids: " + ",".join(str(i) for i in ids.tolist()), notes


def summary_table(scores: dict[str, torch.Tensor], top: int) -> str:
    """The ``top`` heads per score, one column per score."""
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


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the experiment and write the report; returns its path."""
    parser, args = parse_args(argv)
    if args.top < 1 or args.n_seqs < 1:
        parser.error("--top and --n-seqs must be at least 1")
    probe, note = load_with_fallback(args.model, device=args.device)
    notes = [note] if note else []
    try:
        layers = parse_layers(args.layers, probe.cfg.n_layers)
        ids, labels, described, input_notes = choose_input(probe, args)
        cells = len(layers) * probe.cfg.n_heads * len(labels) ** 2
        if cells > MAX_CELLS:
            raise ValueError(f"{len(layers)} layers x {probe.cfg.n_heads} heads of {len(labels)}x{len(labels)} tokens are "
                             f"{cells:,} heatmap cells, more than a report holds ({MAX_CELLS:,}): pass --layers or a shorter input")
        _, cache = probe.run_with_cache(ids, names=H.PATTERN_NAMES, device="cpu", dtype=torch.float32)
    except (ValueError, PromptError) as error:
        parser.error(str(error))
    scores = {
        "previous_token": H.previous_token_scores(cache),
        "first_token": H.first_token_scores(cache),
        "diagonal": H.diagonal_scores(cache),
        "induction": H.induction_scores(probe, n_seqs=args.n_seqs, seed=args.seed),
    }
    patterns = {layer: cache[gpt2probe.names.pattern(layer)][0] for layer in layers}
    figures = {
        "Attention patterns (select a head)": pattern_figure(patterns, labels, scores=scores),
        "Head scores": score_grid_figure(scores),
    }
    notes = notes + input_notes + [
        "previous-token, first-token and diagonal scores: mean attention of every query except the first "
        "to the position before it, to the first token, and to itself, on this input.",
        f"induction score: mean attention from the second copy of {args.n_seqs} repeated random token blocks "
        "to the token after the earlier occurrence of the current token.",
    ]
    path = write_html(
        args.out,
        figures,
        title=f"Attention patterns: {probe.cfg.model_name}",
        model_name=probe.cfg.model_name,
        prompts=[described],
        notes=notes,
        metadata={"layers shown": ",".join(map(str, layers)), "induction seed": str(args.seed)},
    )
    print(f"model {probe.cfg.model_name} ({probe.cfg.n_layers} layers x {probe.cfg.n_heads} heads), {len(labels)} tokens")
    print(summary_table(scores, args.top))
    print(f"wrote {path}")
    return Path(path)


if __name__ == "__main__":
    main()
