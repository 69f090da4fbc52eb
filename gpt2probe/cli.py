"""The ``gpt2probe`` command: ``gpt2probe COMMAND [options]``, one command per experiment.

To add a command, add one row to :data:`COMMANDS`: its name, the module whose
``main(argv=None) -> int`` runs it, and a one-line description for ``gpt2probe --help``.
Modules are imported only when their command runs, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

# name -> (module with main(argv) -> int, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "logit-lens": ("gpt2probe.experiments.logit_lens",
                   "what every layer would predict, read through the final norm and unembedding"),
    "tuned-lens": ("gpt2probe.experiments.tuned_lens",
                   "train a tuned lens (a learned translator per layer) for a model: tuned-lens train --help"),
    "attention": ("gpt2probe.experiments.attention",
                  "every attention head's pattern, with previous-token, induction and first-token scores"),
    "patching": ("gpt2probe.experiments.patching",
                 "activation patching of a clean/corrupted prompt pair, by layer, position and head (exact or "
                 "attribution patching)"),
    "circuit": ("gpt2probe.experiments.circuit",
                "edge attribution between components, and the top edges' circuit run exactly (faithfulness)"),
    "steering": ("gpt2probe.experiments.steering",
                 "continuations with and without a mean-difference steering vector"),
    "finetune": ("gpt2probe.experiments.finetune",
                 "fine-tune a checkpoint on a text file, writing a save_pretrained directory (for diff)"),
    "diff": ("gpt2probe.experiments.diff",
             "compare a base model and its fine-tune: which layers and components the fine-tune changed"),
    "harvest": ("gpt2probe.experiments.harvest",
                "per-unit statistics and max-activating examples over a whole corpus (torchrun for many devices)"),
    "sae": ("gpt2probe.experiments.sae",
            "train sparse autoencoders and transcoders on a corpus, evaluate them, browse their features "
            "(sae train / evaluate / report)"),
    "graph": ("gpt2probe.experiments.graph",
              "one prompt's attribution graph over transcoders (features, errors, logits) as an offline page"),
    "harvest-report": ("gpt2probe.experiments.harvest_report",
                       "an offline HTML dashboard of a harvest: contexts, histograms, logit effects per unit"),
}


def _version() -> str:
    from .versions import __version__  # the standard library only: --version imports no torch

    return __version__


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, built without torch (for the options table in docs/cli-options.md and its test)."""
    return {name: import_module(module).build_parser() for name, (module, _) in COMMANDS.items()}


def options_page() -> str:
    """The text of docs/cli-options.md: the shared vocabulary, every option and the old spellings, from the parsers."""
    from .experiments.options import SHARED, options_table, renamed_table

    shared = "\n".join(f"| `{flag}` | {option.help} |" for flag, option in SHARED.items())
    return OPTIONS_PAGE.format(shared=shared, table=options_table(parsers()), renamed=renamed_table())


OPTIONS_PAGE = """# Command-line options

<!-- Generated from the commands' parsers by gpt2probe.cli.options_page(); tests/test_cli_options.py
checks that this page matches them. To refresh it:
python -c "from gpt2probe.cli import options_page; open('docs/cli-options.md', 'w').write(options_page())" -->

A flag means the same thing in every `gpt2probe` command. The options more than one command
takes are defined once (`gpt2probe/experiments/options.py`), with one help text each:

| option | meaning |
|---|---|
{shared}

`--out` is where the result goes: a report file for the commands that write a report, a
directory for those that train or harvest (each command's `--help` says which).

## Every option

Beside each command, in brackets, what it says for itself after the shared meaning: which
sequences `--batch-size` counts there, what `--out` is.

{table}

## Old spellings

These still work in this release, with a `warning:` line on stderr naming the new spelling;
they will be removed in the next one.

{renamed}
"""


def usage() -> str:
    """The text of ``gpt2probe --help``: every command with its description."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: gpt2probe COMMAND [options]    (gpt2probe COMMAND --help for a command's options)",
        "       python -m gpt2probe COMMAND [options]",
        "",
        "Look inside GPT-2: each command writes a self-contained HTML report (default: reports/).",
        "",
        "commands:",
        *(f"  {name:<{width}}  {description}" for name, (_, description) in COMMANDS.items()),
        "",
        "options:",
        "  -h, --help     show this message and exit",
        "  --version      show gpt2probe's version and exit",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a command; 0 on success, 2 (with one ``error:`` line on stderr) on a mistake."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        print("error: no command given", file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] == "--version":
        print(f"gpt2probe {_version()}")
        return 0
    if args[0] not in COMMANDS:
        what = "option" if args[0].startswith("-") else "command"
        print(f"error: unknown {what} {args[0]!r}; commands: {', '.join(COMMANDS)} (see gpt2probe --help)",
              file=sys.stderr)
        return 2
    module_name = COMMANDS[args[0]][0]
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        print(f"error: the {args[0]!r} command is not available in this installation ({module_name} is missing)",
              file=sys.stderr)
        return 2
    return module.main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
