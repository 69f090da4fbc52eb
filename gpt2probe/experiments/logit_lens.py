"""Read every layer of GPT-2 through the final layer norm and the unembedding: ``gpt2probe logit-lens``.

Prints each prompt's top-1 prediction per layer at the last position (and the target's
probability and rank), and writes a self-contained HTML report: the lens heatmap with a
metric switch, the target across layers, KL to the final prediction, direct logit
attribution for every prompt, and with several prompts an aggregate across them. With
``--tuned-lens DIR`` (a lens from ``gpt2probe tuned-lens train``) the prompts are also read
through the tuned lens: the report shows the two lenses' heatmaps one above the other, and
KL per layer, the target across layers and the several-prompts summary with one line per
lens (one colour each); the shipped model tiny-english uses its shipped tuned lens unless ``--no-tuned-lens``. Only
the default model falls back to the small model shipped with gpt2probe when GPT-2's
weights cannot be had, and says so in the terminal and in the report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..display.escape import token_text
from ..errors import InvalidArgumentError
from ..shipped import NOTES, shipped_model
from . import options
from .common import (
    Parser,
    UsageError,
    add_common_arguments,
    add_plotly_argument,
    check_single_token,
    check_text_model,
    doc_help,
    load_model,
    read_prompts_file,
    run_command,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from tqdm import tqdm

    from ..lens import LensResult, PromptLens, TunedLens

METADATA_FILE = "tuned_lens.json"  # gpt2probe.lens.tuned.METADATA_FILE, named here so that parsing imports no torch

DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"
OFFLINE_DEFAULT_PROMPT = "If the object is not a string, the function will return"
DEFAULT_OUT = "reports/logit_lens.html"


def build_parser() -> Parser:
    description, epilog = doc_help(__doc__)
    parser = Parser(prog="gpt2probe logit-lens", description=description,
                    epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add(parser, "--prompt", "repeat for several", action="append")
    options.add(parser, "--prompts-file")
    parser.add_argument("--target", help="a token to follow through the layers, e.g. ' Paris' "
                                         "(default: each prompt's final top-1)")
    options.add(parser, "--top", "predictions kept per cell (default: 5)", default=5)
    options.add(parser, "--include-mid", "read as well")
    options.add(parser, "--tuned-lens", "also read the prompts through it; the report shows both lenses, "
                "one line per lens in its plots")
    parser.add_argument("--no-tuned-lens", action="store_true",
                        help="on the shipped tiny-english, do not read through its shipped tuned lens")
    add_common_arguments(parser, DEFAULT_OUT, text_only=True)
    add_plotly_argument(parser)
    options.add_deprecated(parser, "logit-lens")
    return parser


def summary_table(result: LensResult) -> str:
    """Top-1 prediction of every stream at each prompt's last position, with the target's probability and rank."""
    blocks = []
    for item in result:
        width = max(len("stream"), *(len(label) for label in item.stream_labels))
        target = _target_columns(item)
        lines = [f"Prompt: {item.prompt!r}"]
        if target is not None:
            lines.append(f"Target: {target[0]!r}")
        header = f"  {'stream':<{width}}  top-1 next token      prob"
        lines.append(header + ("   p(target)  rank" if target is not None else ""))
        for s, label in enumerate(item.stream_labels):
            token, prob = item.top1(stream=s, position=-1)
            line = f"  {label:<{width}}  {token!r:<20}  {prob:6.3f}"
            if target is not None:
                line += target[1][s]
            lines.append(line)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _target_columns(item: PromptLens) -> tuple[str, list[str]] | None:
    """The target token at the last position and, per stream there, its probability and rank (1 = top) as printed."""
    prob, rank, tokens = item.target_prob, item.target_rank, item.target_tokens
    if prob is None or rank is None or tokens is None:
        return None
    return tokens[-1], [f"   {float(prob[s, -1]):9.3g}  {int(rank[s, -1]) + 1:>4}" for s in range(item.n_streams)]


def shipped_tuned_lens(model_name: str) -> Path | None:
    """The tuned lens shipped with a shipped model (tiny-english), if there is one."""
    if model_name not in NOTES:
        return None
    path = shipped_model(model_name) / "tuned-lens"
    return path if (path / METADATA_FILE).is_file() else None


def choose_tuned_lens(args: argparse.Namespace, probe) -> tuple[TunedLens | None, str | None]:
    """The tuned lens to read through (``--tuned-lens``, or the shipped one), and a note saying which."""
    from ..lens import TunedLens

    if args.tuned_lens is not None:
        return TunedLens.load(args.tuned_lens, probe), None
    shipped = None if args.no_tuned_lens else shipped_tuned_lens(probe.cfg.model_name)
    if shipped is None:
        return None, None
    if args.include_mid:
        return None, (f"The tuned lens shipped for {probe.cfg.model_name!r} has no mid-block translators: "
                      "with --include-mid the logit lens is read alone.")
    note = (f"Also read through the tuned lens shipped for {probe.cfg.model_name!r} ({shipped}, trained on the "
            "model's own training text); --no-tuned-lens reads the logit lens alone.")
    return TunedLens.load(shipped, probe), note


def run(args: argparse.Namespace) -> Path:
    from_file = read_prompts_file(args.prompts_file) if args.prompts_file is not None else []
    if args.tuned_lens is not None and not (args.tuned_lens / METADATA_FILE).is_file():
        raise UsageError(f"--tuned-lens {str(args.tuned_lens)!r} is not a tuned lens directory (no {METADATA_FILE}); "
                         "make one with gpt2probe tuned-lens train")
    if args.tuned_lens is not None and args.no_tuned_lens:
        raise UsageError("--tuned-lens and --no-tuned-lens contradict each other; give one")
    from ..lens import direct_logit_attribution, logit_lens
    from ..report import (
        attribution_bars,
        kl_per_layer,
        kl_per_layer_compare,
        lens_aggregate,
        lens_heatmap,
        target_trajectory,
        write_html,
    )

    check_text_model(args, "logit-lens")
    probe, fell_back = load_model(args)
    check_text_model(args, "logit-lens", probe)
    tuned_lens, tuned_note = choose_tuned_lens(args, probe)
    if tuned_lens is not None and args.include_mid and not tuned_lens.include_mid:
        raise UsageError("--include-mid: the tuned lens has no translators for the mid-block streams "
                         "(train one with gpt2probe tuned-lens train --include-mid)")
    target_id = check_single_token(probe, args.target, "--target") if args.target is not None else None
    prompts = list(args.prompt or []) + from_file
    if not prompts:
        prompts = [OFFLINE_DEFAULT_PROMPT if probe.cfg.model_name in NOTES else DEFAULT_PROMPT]
    if target_id is not None:
        targets: int | list[int] = target_id
    else:  # follow each prompt's final answer back through the layers
        final = probe(prompts)[:, -1].argmax(-1)
        targets = [int(t) for t in final]
    progress = _progress_bar(len(prompts))
    result = logit_lens(probe, prompts, k=args.top, targets=targets, include_mid=args.include_mid,
                        progress=_update_to(progress) if progress else None)
    if progress:
        progress.close()
    tuned = None
    if tuned_lens is not None:
        tuned = logit_lens(probe, prompts, k=args.top, targets=targets, include_mid=args.include_mid, lens=tuned_lens)
    figures: dict[str, go.Figure] = {}
    if len(result) > 1:
        figures[f"All {len(result)} prompts: KL to the final prediction and target rank per layer"] = lens_aggregate(
            result if tuned is None else {"logit lens": result, "tuned lens": tuned})
    for i, item in enumerate(result):
        tag = f" (prompt {i + 1})" if len(result) > 1 else ""
        target_ids, target_tokens = item.target_ids, item.target_tokens
        if target_ids is None or target_tokens is None:  # logit_lens was given targets for every prompt
            raise InvalidArgumentError(f"prompt {i + 1}'s lens has no target; every prompt should have one")
        target = token_text(target_tokens[-1])
        figures[f"Top-1 prediction by layer and position{tag}"] = lens_heatmap(item, "prob")
        if tuned is not None:
            figures[f"Tuned lens: top-1 prediction by layer and position{tag}"] = lens_heatmap(
                tuned[i], "prob", lens_name="Tuned lens")
            figures[f"KL divergence to the final prediction, logit lens and tuned lens{tag}"] = kl_per_layer_compare(
                {"logit lens": item, "tuned lens": tuned[i]})
        else:
            figures[f"KL divergence to the final prediction{tag}"] = kl_per_layer(item)
        figures[f"Target {target} across layers{tag}"] = target_trajectory(
            item if tuned is None else {"logit lens": item, "tuned lens": tuned[i]})
        attr = direct_logit_attribution(probe, prompts[i], int(target_ids[-1]))
        figures[f"Direct logit attribution of {target}{tag}"] = attribution_bars(attr)
    note = NOTES[probe.cfg.model_name] if fell_back else None
    notes = [text for text in (note, tuned_note) if text]
    metadata = {"top": args.top, "include_mid": args.include_mid}
    if tuned_lens is not None:
        metadata["tuned lens"] = str(args.tuned_lens or shipped_tuned_lens(probe.cfg.model_name))
    path = write_html(args.out, figures,
        plotlyjs=args.plotly, title="Logit lens" + (" and tuned lens" if tuned else ""),
                      model_name=probe.cfg.model_name, prompts=prompts, notes=notes or None, metadata=metadata)
    print(("Logit lens:\n" if tuned else "") + summary_table(result))
    if tuned is not None:
        print("\nTuned lens:\n" + summary_table(tuned))
    if note:
        print(f"\nNote: {note}")
    if tuned_note:
        print(f"\n{tuned_note}")
    print(f"\nReport written to {path}")
    return path


def _progress_bar(total: int) -> tqdm | None:
    if total < 2:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="prompt", desc="logit lens", file=sys.stderr)


def _update_to(bar: tqdm) -> Callable[[int], None]:
    """``logit_lens``'s ``progress``: it reports prompts done so far, ``tqdm.update`` takes the increment."""

    def update_to(done: int) -> None:
        bar.update(done - bar.n)

    return update_to


def main(argv: Sequence[str] | None = None) -> int:
    """``gpt2probe logit-lens``: 0 on success, 2 with one ``error:`` line on a mistake."""
    return run_command(build_parser(), run, argv)
