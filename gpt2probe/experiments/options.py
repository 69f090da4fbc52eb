"""The command line's vocabulary: every option that more than one command takes, defined once.

A flag means one thing in every command: ``--prompt`` is one prompt, ``--prompts-file`` a
file of prompts one per line, ``--top`` how many of the highest-ranked items are listed or
kept, ``--examples`` how many max-activating examples per unit, ``--corpus`` the text a
command trains or harvests on, ``--tuned-lens`` a tuned lens directory and ``--finetuned`` a
fine-tuned model, ``--batch-size`` how many sequences go through the model in one pass
(forward, or forward and backward: each command's help names the sequences) and
``--checkpoint-every`` how many optimiser steps pass between checkpoints. Commands add these with :func:`add` (one help text each, e.g. for
``--device``), and their own options with ``parser.add_argument`` as usual.

Old spellings keep working for one release through :func:`add_deprecated`: the value goes
where the new option's would, and one ``warning:`` line on stderr names the new spelling.
:data:`RENAMED` lists them (docs/cli-options.md shows the table, checked by a test).

This module imports nothing heavy: ``gpt2probe COMMAND --help`` builds parsers without torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configs.base import finite_float as finite_float  # the argument types, defined once (re-exported)
from ..configs.base import non_negative_int as non_negative_int
from ..configs.base import positive_int as positive_int


@dataclass(frozen=True)
class Option:
    """One shared option: its flag, what it means (the help text, the same in every command) and argparse settings."""

    flag: str
    help: str
    settings: dict[str, Any] = field(default_factory=dict)


DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: the best available; cuda:LOCAL_RANK under torchrun)"

SHARED: dict[str, Option] = {o.flag: o for o in (
    Option("--device", DEVICE_HELP),
    Option("--prompt", "a prompt to run"),
    Option("--prompts-file", "a UTF-8 text file with one prompt per line", {"type": Path, "metavar": "FILE"}),
    Option("--prompt-from", "a UTF-8 text file read whole as one prompt", {"type": Path, "metavar": "FILE"}),
    Option("--top", "how many of the highest-ranked items are listed or kept", {"type": positive_int, "metavar": "N"}),
    Option("--examples", "max-activating examples per unit", {"type": positive_int, "metavar": "N"}),
    Option("--corpus", "the text to train or harvest on", {"nargs": "+", "metavar": "FILE"}),
    Option("--field", "JSONL field holding the text"),
    Option("--column", "Parquet / datasets column holding the text"),
    Option("--max-documents", "only the first N documents", {"type": positive_int, "metavar": "N"}),
    Option("--tuned-lens", "a tuned lens directory (from gpt2probe tuned-lens train)", {"type": Path, "metavar": "DIR"}),
    Option("--finetuned", "the fine-tuned model: hub id, directory, or shipped name"),
    Option("--model", "hub id, save_pretrained directory, or shipped model name"),
    Option("--out", "where the result goes", {"type": Path}),
    Option("--batch-size", "sequences per pass through the model", {"type": positive_int, "metavar": "N"}),
    Option("--checkpoint-every", "optimiser steps between checkpoints", {"type": positive_int, "metavar": "STEPS"}),
    Option("--seed", "random seed", {"type": int}),
    Option("--no-progress", "no progress bar", {"action": "store_true"}),
    Option("--steps", "optimiser steps", {"type": positive_int}),
    Option("--seq-len", "tokens per window", {"type": positive_int}),
    Option("--resume", "continue the interrupted run in --out", {"action": "store_true"}),
    Option("--hooks", "hook names", {"nargs": "+", "metavar": "HOOK"}),
    Option("--sae", "SAE or transcoder directories (SAELens's format)", {"type": Path, "metavar": "DIR"}),
    Option("--layer", "a block's index", {"type": int}),
    Option("--include-mid", "also the streams between attention and MLP (resid_mid)", {"action": "store_true"}),
    Option("--tokens", "comma-separated token ids, e.g. 0,5,9,2,5,9"),
    Option("--prepend-bos", "start a text prompt with <|endoftext|>", {"action": "store_true"}),
    Option("--method", "how the scores are computed"),
    Option("--json", "also write this JSON file", {"type": Path, "metavar": "FILE"}),
    Option("--no-logits", "skip the effects on the logits (no model needed)", {"action": "store_true"}),
)}
"""Flag -> its one definition. A command may say more about its use in ``detail`` (see :func:`add`)."""


@dataclass(frozen=True)
class Renamed:
    """An old spelling kept for one release: in ``command``, ``old`` is now ``new``."""

    command: str
    old: str
    new: str
    why: str


RENAMED: tuple[Renamed, ...] = (
    Renamed("logit-lens", "--k", "--top", '"how many" is --top in every command'),
    Renamed("steering", "--k", "--top", '"how many" is --top in every command'),
    Renamed("harvest", "--top-k", "--examples", "--top-k is sampling in steering; examples are --examples"),
    Renamed("logit-lens", "--tuned", "--tuned-lens", "--tuned was a lens here but a model in diff"),
    Renamed("logit-lens", "--no-tuned", "--no-tuned-lens", "follows --tuned-lens"),
    Renamed("diff", "--tuned", "--finetuned", "--tuned was a model here but a lens in logit-lens"),
    Renamed("finetune", "--text", "--corpus", "training text is --corpus in every command"),
    Renamed("attention", "--prompt-file", "--prompt-from", "--prompt-file sat beside --prompts-file (one per line)"),
    Renamed("patching", "--steps", "--ig-steps", "--steps is optimiser steps in finetune, sae and tuned-lens"),
    Renamed("circuit", "--steps", "--ig-steps", "--steps is optimiser steps in finetune, sae and tuned-lens"),
    Renamed("sae train", "--batch-size", "--train-batch-size-tokens",
            "--batch-size counts sequences per pass through the model; tokens per step are SAELens's train_batch_size_tokens"),
    Renamed("harvest", "--checkpoint-every", "--checkpoint-windows",
            "--checkpoint-every counts optimiser steps in sae and tuned-lens; a harvest counts windows"),
)
"""Every deprecated spelling; each parser adds its own with :func:`add_deprecated`."""


def add(parser: argparse.ArgumentParser | argparse._ActionsContainer, flag: str, detail: str | None = None,
        **settings: Any) -> argparse.Action:
    """Add the shared option ``flag`` to ``parser``; ``detail`` follows its help text, ``settings`` override argparse's.

    ``detail`` says what the option does in this command (e.g. ``--top``'s "heads listed per
    score") or its default; the shared meaning stays first, so it reads the same everywhere.
    """
    option = SHARED[flag]
    if detail is not None and detail.startswith(option.help):  # a config field that states the shared meaning itself
        detail = detail[len(option.help):].strip(" :") or None
    if detail is None:
        text = option.help
    else:
        text = f"{option.help} {detail}" if detail.startswith("(") else f"{option.help}: {detail}"
    return parser.add_argument(flag, help=text, **{**option.settings, **settings})


def add_deprecated(parser: argparse.ArgumentParser | argparse._ActionsContainer, command: str) -> None:
    """Add every old spelling that :data:`RENAMED` lists for ``command``, hidden from ``--help``.

    ``command`` is a command or a command and its action (``"sae train"``), as :data:`RENAMED` names it.

    Call it after the new options are added: an old spelling takes the new option's type,
    number of values and destination, and warns on stderr when used.
    """
    actions = {flag: action for action in parser._actions for flag in action.option_strings}
    for renamed in (r for r in RENAMED if r.command == command):
        new = actions[renamed.new]
        if new.required:  # argparse would not count the old spelling as giving it: checked after parsing instead
            new.required = False
            parser.set_defaults(**{REQUIRED_DEST: (*(parser.get_default(REQUIRED_DEST) or ()), new.dest)})
        parser.add_argument(renamed.old, action=_Deprecated, dest=new.dest, new_action=new, renamed=renamed,
                            nargs=new.nargs, type=new.type, metavar=new.metavar, help=argparse.SUPPRESS)  # pyright: ignore[reportArgumentType]


def add_old_spelling(parser: argparse.ArgumentParser, old: str, new: str, why: str, **settings: Any) -> None:
    """A script's (``tools/``, ``benchmarks/``) old spelling ``old`` of its option ``new``, hidden from ``--help``.

    ``new`` must default to ``None`` (so that giving both can be seen); after parsing,
    :func:`take_old_spellings` moves the old spelling's value there with one ``warning:`` line
    on stderr saying ``why``. ``settings`` are ``add_argument``'s (``type=int``).
    """
    dest = "old_" + old.lstrip("-").replace("-", "_")
    parser.add_argument(old, dest=dest, help=argparse.SUPPRESS, **settings)
    spellings = getattr(parser, "_old_spellings", [])
    parser._old_spellings = [*spellings, (dest, old, new, why)]  # pyright: ignore[reportAttributeAccessIssue]


def take_old_spellings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with each old spelling's value (:func:`add_old_spelling`) under its new option; both given is an error."""
    for dest, old, new, why in getattr(parser, "_old_spellings", []):
        value = getattr(args, dest)
        delattr(args, dest)
        if value is None:
            continue
        new_dest = new.lstrip("-").replace("-", "_")
        if getattr(args, new_dest) is not None:
            parser.error(f"{old} is the old spelling of {new}: give only the new one")
        print(f"warning: {old} is deprecated here: {why}", file=sys.stderr)
        setattr(args, new_dest, value)
    return args


REQUIRED_DEST = "_required_under_two_spellings"
"""Where a parser lists the destinations of required options that also have an old spelling."""


def check_required(parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> None:
    """The required check argparse cannot make for an option given under either of two spellings."""
    for dest in getattr(namespace, REQUIRED_DEST, None) or ():
        if getattr(namespace, dest, None) is None:
            flags = [a.option_strings[0] for a in parser._actions if a.dest == dest and a.help is not argparse.SUPPRESS]
            parser.error(f"the following arguments are required: {', '.join(flags)}")
    if hasattr(namespace, REQUIRED_DEST):
        delattr(namespace, REQUIRED_DEST)


class _Deprecated(argparse.Action):
    """Stores like the option that replaced it (``new_action``) after one ``warning:`` line on stderr."""

    def __init__(self, option_strings: list[str], dest: str, *, new_action: argparse.Action, renamed: Renamed,
                 **kwargs: Any) -> None:
        self.new_action, self.renamed = new_action, renamed
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        r = self.renamed
        print(f"warning: gpt2probe {r.command} {r.old} is deprecated and will be removed in the next release; "
              f"use {r.new} ({r.why})", file=sys.stderr)
        self.new_action(parser, namespace, values, r.new)


def options_table(parsers: dict[str, argparse.ArgumentParser]) -> str:
    """The Markdown table of options: one row per flag, its help text(s) and the commands that take it.

    Sub-command parsers (``tuned-lens train``) count as their command. Hidden options (old
    spellings) are left out; they have their own table, :func:`renamed_table`.
    """
    rows = meanings(parsers)
    lines = ["| option | meaning | commands |", "|---|---|---|"]
    for flag in sorted(rows):
        for meaning, uses in rows[flag].items():
            shared = " (shared)" if flag in SHARED else ""
            commands = ", ".join(f"{command} ({detail})" if detail else command for command, detail in sorted(set(uses)))
            lines.append(f"| `{flag}`{shared} | {_cell(meaning)} | {_cell(commands)} |")
    return "\n".join(lines)


def meanings(parsers: dict[str, argparse.ArgumentParser]) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """Flag -> its meaning(s) -> the commands that take it with that meaning, each with what it adds for itself.

    A shared option's meaning is its one help text, and what a command says after it (which
    sequences ``--batch-size`` counts there) is that command's detail; another option's meaning
    is its help's first sentence. A flag with two meanings is a flag that means two things.
    """
    rows: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for command, parser in parsers.items():
        for action in _visible_actions(parser):
            for flag in action.option_strings:
                if not flag.startswith("--") or flag == "--help":
                    continue
                text = action.help or ""
                if flag in SHARED and text.startswith(SHARED[flag].help):
                    meaning = SHARED[flag].help
                    detail = _first_sentence(text[len(meaning):].strip(" :"))
                    if detail.startswith("(default"):
                        detail = ""
                    elif detail.startswith("(") and detail.endswith(")") and detail.count("(") == 1:
                        detail = detail[1:-1]  # "--tokens (for models with their own vocabulary)"
                else:
                    meaning, detail = _first_sentence(text), ""
                rows.setdefault(flag, {}).setdefault(meaning, []).append((command, detail))
    return rows


def renamed_table() -> str:
    """The Markdown table of old spellings and what replaced them."""
    lines = ["| command | old spelling | use instead | why |", "|---|---|---|---|"]
    lines += [f"| {r.command} | `{r.old}` | `{r.new}` | {_cell(r.why)} |" for r in RENAMED]
    return "\n".join(lines)


def _visible_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _visible_actions(sub)
        elif action.help is not argparse.SUPPRESS:
            found.append(action)
    return found


def _first_sentence(text: str) -> str:
    return text.split(" (default")[0].split("; default")[0].strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


ParserFactory = Callable[[], argparse.ArgumentParser]
