"""Steer GPT-2 with a mean-difference vector: continuations with and without it, and its effect on the next token.

    python experiments/steering.py
    python experiments/steering.py --prompt "I think you are" --positive "Love" --negative "Hate" --layer 6 --alpha 4

The vector is the mean residual stream entering ``--layer`` at the last token of the
``--positive`` prompts minus that of the ``--negative`` prompts. ``--alpha`` times it is
added at every position while the prompt runs and while tokens are generated. Both runs
use the same seed, so they differ only through the vector. The report shows the two
continuations side by side, the top next tokens before and after, and the tokens whose
probability changed most. When GPT-2's weights are unavailable the shipped offline model
is used and both the terminal and the report say so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import torch

from gpt2probe.errors import GPT2ProbeError
from gpt2probe.generation import generate
from gpt2probe.interventions import mean_difference_vector, steer
from gpt2probe.interventions.steering import stream_at, stream_name
from gpt2probe.report import display_token, escape_text, write_html
from gpt2probe.shipped import load_with_fallback

PROMPT = "I think you are"
POSITIVE, NEGATIVE = ["Love"], ["Hate"]
DEFAULT_OUT = Path("reports/steering.html")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt2", help="hub id or save_pretrained directory (default: gpt2)")
    parser.add_argument("--prompt", action="append", help=f"a prompt to continue (repeat for several; default: {PROMPT!r})")
    parser.add_argument("--positive", action="append", help=f"a prompt with the property (repeatable; default: {POSITIVE})")
    parser.add_argument("--negative", action="append", help=f"a prompt without it (repeatable; default: {NEGATIVE})")
    parser.add_argument("--layer", type=int, help="the layer whose resid_pre is steered (default: the middle one)")
    parser.add_argument("--stream", choices=("resid_pre", "resid_mid", "resid_post"), default="resid_pre")
    parser.add_argument("--alpha", type=float, default=4.0, help="multiple of the vector added (default: 4)")
    parser.add_argument("--max-new-tokens", type=int, default=30, help="tokens generated per run (default: 30)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1)")
    parser.add_argument("--top-k", type=int, default=50, help="sample from the k most likely tokens (default: 50)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, the same for both runs (default: 0)")
    parser.add_argument("--k", type=int, default=10, help="top next tokens listed (default: 10)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report path (default: {DEFAULT_OUT})")
    parser.add_argument("--no-fallback", action="store_true", help="fail instead of using the shipped offline model")
    return parser


def continuations_table(prompts: Sequence[str], plain: Sequence[str], steered: Sequence[str]) -> go.Figure:
    """The prompt, then the unsteered and steered continuations, side by side."""
    fig = go.Figure(go.Table(
        columnwidth=[1, 2, 2],
        header=dict(values=["prompt", "without steering", "with steering"], align="left", font=dict(size=13)),
        cells=dict(values=[[escape_text(p) for p in prompts], [escape_text(c) for c in plain],
                           [escape_text(c) for c in steered]], align="left", height=60),
    ))
    fig.update_layout(title=dict(text="Continuations (same seed)"), height=160 + 90 * len(prompts), width=1100)
    return fig


def top_tokens_table(tokens_before: list[str], p_before: list[float], tokens_after: list[str], p_after: list[float]) -> go.Figure:
    """Top next tokens before and after steering, with their probabilities."""
    fig = go.Figure(go.Table(
        header=dict(values=["rank", "before", "p", "after", "p"], align="left"),
        cells=dict(values=[list(range(1, len(tokens_before) + 1)),
                           [display_token(t) for t in tokens_before], [f"{p:.4f}" for p in p_before],
                           [display_token(t) for t in tokens_after], [f"{p:.4f}" for p in p_after]], align="left", height=24),
    ))
    fig.update_layout(title=dict(text="Top next tokens (first prompt)"), height=220 + 26 * len(tokens_before), width=700)
    return fig


def change_bars(tokens: list[str], before: list[float], after: list[float]) -> go.Figure:
    """Horizontal bars of ``p_after - p_before`` for the tokens that moved most."""
    delta = [a - b for a, b in zip(after, before)]
    labels = [display_token(t) for t in tokens]
    fig = go.Figure(go.Bar(
        x=delta, y=list(range(len(tokens))), orientation="h",
        marker_color=["#b2182b" if d >= 0 else "#2166ac" for d in delta],
        hovertext=[f"<b>{label}</b><br>p before {b:.4f}<br>p after {a:.4f}<br>change {d:+.4f}"
                   for label, b, a, d in zip(labels, before, after, delta)],
        hovertemplate="%{hovertext}<extra></extra>",
    ))
    fig.update_layout(
        title=dict(text="Biggest changes in next-token probability (first prompt)"),
        xaxis=dict(title=dict(text="p(with steering) - p(without)")),
        yaxis=dict(tickmode="array", tickvals=list(range(len(tokens))), ticktext=labels, autorange="reversed"),
        height=140 + 24 * len(tokens), width=760, margin=dict(l=140),
    )
    return fig


def run(args: argparse.Namespace) -> Path:
    probe, fallback_note = load_with_fallback(args.model, device=args.device, allow_fallback=not args.no_fallback)
    cfg = probe.cfg
    notes = []
    if fallback_note is not None:
        notes.append(
            f"GPT-2's weights ({args.model!r}) were not available, so this report uses gpt2probe's small offline model "
            f"{cfg.model_name!r} ({cfg.n_layers} layers, d_model {cfg.d_model}). Steering a model this small means "
            "little: its continuations are barely fluent with or without the vector."
        )
    print(f"Model: {cfg.model_name} ({cfg.n_layers} layers, d_model {cfg.d_model})")
    for note in notes:
        print(f"NOTE: {note}")
    prompts = args.prompt or [PROMPT]
    positive, negative = args.positive or POSITIVE, args.negative or NEGATIVE
    layer = cfg.n_layers // 2 if args.layer is None else args.layer
    name = stream_name(probe, layer, args.stream)

    vector = mean_difference_vector(probe, positive, negative, layer, stream=args.stream)
    typical = float(stream_at(probe, prompts, layer, args.stream).norm(dim=-1).mean())
    print(f"Steering {name} with alpha = {args.alpha:g} x mean({positive}) - mean({negative}): "
          f"|alpha v| = {args.alpha * float(vector.norm()):.2f} (mean |resid| at the prompts' last token: {typical:.2f})")

    sampling = dict(temperature=args.temperature, top_k=args.top_k, greedy=args.greedy, seed=args.seed)
    plain = generate(probe, prompts, args.max_new_tokens, **sampling)
    with steer(probe, layer, vector, args.alpha, stream=args.stream):
        steered = generate(probe, prompts, args.max_new_tokens, **sampling)
        p_after = probe(prompts[0])[0, -1].float().softmax(-1)
    p_before = probe(prompts[0])[0, -1].float().softmax(-1)

    decode = lambda ids: [probe.tokenizer.decode([i]) for i in ids]  # noqa: E731
    top_before, top_after = p_before.topk(args.k).indices.tolist(), p_after.topk(args.k).indices.tolist()
    moved = (p_after - p_before).abs().topk(min(15, cfg.d_vocab)).indices.tolist()
    for prompt, a, b in zip(prompts, plain.continuations, steered.continuations):
        print(f"\nPrompt: {prompt!r}\n  without steering: {a!r}\n  with steering:    {b!r}")
    print(f"\nTop next tokens after {prompts[0]!r}:\n  {'before':<24}{'after':<24}")
    for i, j in zip(top_before, top_after):
        print(f"  {decode([i])[0]!r:<16}{float(p_before[i]):.4f}  {decode([j])[0]!r:<16}{float(p_after[j]):.4f}")

    figures = {
        "Continuations with and without steering": continuations_table(prompts, plain.continuations, steered.continuations),
        "Top next tokens before and after": top_tokens_table(
            decode(top_before), p_before[top_before].tolist(), decode(top_after), p_after[top_after].tolist()),
        "Biggest probability changes": change_bars(decode(moved), p_before[moved].tolist(), p_after[moved].tolist()),
    }
    path = write_html(
        args.out, figures, title="Steering with a mean-difference vector", model_name=cfg.model_name, prompts=prompts,
        notes=notes or None,
        metadata={
            "Hook": name,
            "Vector": f"mean over {positive!r} - mean over {negative!r} (last token)",
            "alpha": args.alpha,
            "|alpha v|": f"{args.alpha * float(vector.norm()):.3f}",
            "Decoding": "greedy" if args.greedy else f"sampled, temperature {args.temperature}, top-k {args.top_k}, seed {args.seed}",
        },
    )
    print(f"\nReport written to {path}")
    return path


@torch.no_grad()
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (GPT2ProbeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
