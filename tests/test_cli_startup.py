"""The command line answers at once: help, version and mistakes are handled before torch is imported.

``gpt2probe --help`` used to take 5-28 s because importing the package loaded torch and
transformers first. Arguments are now parsed and checked on a package that loads only its
version and error classes; the heavy modules come with the first real use. Each case runs
in a fresh interpreter and asserts that neither torch nor transformers was imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2probe.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "plotly")

PROBE = """
import sys
from gpt2probe.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as done:  # argparse's --help exits
    code = done.code
heavy = [name for name in {heavy!r} if name in sys.modules]
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def parse_only(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO)


def heavy_modules(done: subprocess.CompletedProcess) -> str:
    line = [line for line in done.stderr.splitlines() if line.startswith("HEAVY=")]
    assert line, done.stderr
    return line[-1].removeprefix("HEAVY=")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["--bogus"], ["logit-lenz"]])
def test_top_level_answers_without_torch(argv):
    done = parse_only(*argv)
    assert done.returncode == (2 if argv[0] in ("--bogus", "logit-lenz") else 0), done.stderr
    assert heavy_modules(done) == ""


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_and_a_bad_flag_without_torch(command):
    done = parse_only(command, "--help")
    assert done.returncode == 0, done.stderr
    assert heavy_modules(done) == "", command
    done = parse_only(command, "--no-such-flag")
    assert done.returncode == 2 and "error:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert heavy_modules(done) == "", command


@pytest.mark.parametrize("command", ["sae train", "tuned-lens train"])
def test_a_subcommand_help_lists_its_config_without_torch(command):
    """The training settings' flags come from torch-free configs (gpt2probe.configs), so their --help is instant."""
    done = parse_only(*command.split(), "--help")
    assert done.returncode == 0, done.stderr
    batch = {"sae train": "--train-batch-size-tokens", "tuned-lens train": "--batch-size"}[command]
    assert "--seed" in done.stdout and batch in done.stdout
    assert heavy_modules(done) == "", command


def test_a_bad_value_fails_without_torch(tmp_path):
    done = parse_only("logit-lens", "--top", "0", "--out", str(tmp_path / "r.html"))
    assert done.returncode == 2 and "--top" in done.stderr
    assert heavy_modules(done) == ""


def test_importing_the_package_loads_no_torch():
    code = "import sys, gpt2probe; gpt2probe.GPT2ProbeError; print(sorted(m for m in {!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code.format(HEAVY)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_every_export_is_reachable_lazily():
    code = ("import gpt2probe\n"
            "missing = [n for n in gpt2probe.__all__ if getattr(gpt2probe, n, None) is None]\n"
            "from gpt2probe import TunedLens, harvest, load\n"
            "assert gpt2probe.harvest is harvest and callable(harvest) and gpt2probe.load is load\n"
            "assert set(gpt2probe.__all__) <= set(dir(gpt2probe))\n"
            "print(missing)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_unknown_attribute_is_an_attribute_error():
    import gpt2probe

    with pytest.raises(AttributeError, match="no attribute 'not_a_thing'"):
        gpt2probe.not_a_thing  # noqa: B018


@pytest.mark.parametrize("command", ["patching", "circuit"])
def test_prompts_of_different_lengths_fail_before_loading(command, tmp_path, capsys, monkeypatch):
    from importlib import import_module

    from gpt2probe.cli import main

    module = import_module(f"gpt2probe.experiments.{command}")

    def refuse(args):
        raise AssertionError("the model was loaded before the prompts were checked")

    monkeypatch.setattr(module, "load_model", refuse)
    out = tmp_path / "r.html"
    code = main([command, "--clean", "When Mary and John went", "--corrupted", "When Mary and Johnathan went",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --clean has 5 tokens but --corrupted has 6"), err
    assert not out.exists()


def test_constants_named_for_the_parsers_match_their_modules():
    from gpt2probe.experiments import attention, logit_lens
    from gpt2probe.lens.tuned import METADATA_FILE
    from gpt2probe.report.attention_viewer import MAX_BYTES

    assert attention.MAX_BYTES == MAX_BYTES
    assert logit_lens.METADATA_FILE == METADATA_FILE
