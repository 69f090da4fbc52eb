"""One flag vocabulary across the commands, old spellings kept for one release, and the docs' table true.

Issue 23: ``--prompt-file`` (one prompt) sat beside ``--prompts-file`` (one per line),
``--tuned`` was a lens in one command and a model in another, "how many" had four
spellings, training text two, and ``--device`` five help texts. Shared options are now
defined once (:mod:`gpt2probe.experiments.options`); these tests hold every parser to it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gpt2probe.cli import COMMANDS, main, options_page, parsers
from gpt2probe.experiments.options import RENAMED, SHARED, meanings, renamed_table

DOCS = Path(__file__).resolve().parents[1] / "docs"


def visible_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    found: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.update(visible_options(sub))
        elif action.help is not argparse.SUPPRESS:
            found.update({flag: action for flag in action.option_strings if flag.startswith("--")})
    return found


@pytest.fixture(scope="module")
def all_parsers() -> dict[str, argparse.ArgumentParser]:
    return parsers()


def test_every_command_has_a_parser(all_parsers):
    assert set(all_parsers) == set(COMMANDS)


def test_shared_options_have_one_help_text_everywhere(all_parsers):
    for command, parser in all_parsers.items():
        for flag, action in visible_options(parser).items():
            if flag in SHARED:
                assert action.help.startswith(SHARED[flag].help), (command, flag, action.help)


def test_a_flag_means_one_thing(all_parsers):
    seen = {command: visible_options(parser) for command, parser in all_parsers.items()}
    takers = lambda flag: sorted(c for c, flags in seen.items() if flag in flags)  # noqa: E731
    for old in ("--prompt-file", "--tuned", "--no-tuned", "--text"):
        assert takers(old) == [], old  # only as hidden old spellings
    assert takers("--top-k") == ["steering"]  # sampling; examples are --examples
    assert takers("--k") == ["sae"]  # a top-k SAE's active features per token
    assert set(takers("--top")) >= {"logit-lens", "steering", "attention", "circuit"}
    assert set(takers("--examples")) >= {"harvest", "harvest-report"}
    assert set(takers("--corpus")) >= {"finetune", "tuned-lens", "harvest", "sae"}
    assert len(takers("--device")) == len(COMMANDS)
    assert takers("--tuned-lens") == ["logit-lens"] and takers("--finetuned") == ["diff"]
    assert takers("--checkpoint-every") == ["sae", "tuned-lens"]  # optimiser steps; a harvest counts windows
    assert takers("--checkpoint-windows") == ["harvest"]
    assert takers("--train-batch-size-tokens") == ["sae"]  # tokens per SAE step; --batch-size counts sequences
    assert set(takers("--batch-size")) == {"finetune", "graph", "harvest", "patching", "sae", "tuned-lens"}


def test_every_flag_name_has_exactly_one_meaning(all_parsers):
    """Issue 23: --batch-size was windows, tokens, patched runs or targets; --checkpoint-every steps or windows.

    A flag that more than one command (or action) takes is defined once in options.SHARED,
    with one help text; what a command adds after it (which sequences --batch-size counts
    there) is detail, not a second meaning. Any other flag has one help text (up to its
    default) wherever it appears.
    """
    two = {flag: sorted(by_meaning) for flag, by_meaning in meanings(all_parsers).items() if len(by_meaning) > 1}
    assert two == {}, f"flags with more than one meaning (define them once in options.SHARED): {two}"


@pytest.mark.parametrize("renamed", RENAMED, ids=lambda r: f"{r.command} {r.old}")
def test_old_spellings_still_work_and_warn(renamed, all_parsers, capsys):
    command, *action = renamed.command.split()  # "sae train": the sae command's train action
    parser = all_parsers[command]
    new = visible_options(parser)[renamed.new]
    value = [] if new.nargs == 0 else ["7"]
    required = action + {"diff": ["--base", "b"], "finetune": ["--model", "m", "--steps", "1", "--out", "o"],
                         "harvest": ["--model", "m", "--hooks", "h", "--out", "o", "--corpus", "c"],
                         "sae train": ["--model", "m", "--corpus", "c", "--out", "o", "--d-sae", "8", "--hook", "h"],
                         }.get(renamed.command, [])
    new_args = parser.parse_args([*required, renamed.new, *value])
    assert capsys.readouterr().err == ""
    old_args = parser.parse_args([*required, renamed.old, *value])
    assert vars(old_args) == vars(new_args)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and renamed.old in err[0] and renamed.new in err[0], err


def test_an_old_spelling_satisfies_a_required_option(all_parsers, capsys):
    parser = all_parsers["finetune"]
    args = parser.parse_args(["--model", "m", "--text", "a.txt", "b.txt", "--steps", "1", "--out", "o"])
    assert [str(p) for p in args.corpus] == ["a.txt", "b.txt"]
    assert "--corpus" in capsys.readouterr().err
    code = main(["finetune", "--model", "m", "--steps", "1", "--out", "o"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "required" in err[0] and "--corpus" in err[0], err


def test_an_old_spelling_through_main_warns_once_then_runs(tmp_path, capsys):
    """``logit-lens --k 0`` is still checked as --top is: the warning never hides the error."""
    code = main(["logit-lens", "--k", "0", "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "--k" in err[-1]


def test_the_docs_table_matches_the_parsers():
    page = (DOCS / "cli-options.md").read_text(encoding="utf-8")
    assert page == options_page(), ("docs/cli-options.md is out of date; regenerate it with: python -c \"from "
                                    "gpt2probe.cli import options_page; open('docs/cli-options.md', 'w')"
                                    ".write(options_page())\"")
    assert renamed_table() in page
    for flag in SHARED:
        assert f"`{flag}`" in page
