"""The command line driven as a person would, mistakes included.

Every mistake must end with one ``error: ...`` line on stderr and exit status 2, with no
traceback and no report written, and must be caught before the model is loaded. A few
runs go through a real subprocess (``python -m gpt2probe``); most call ``main([...])``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gpt2probe
from gpt2probe.cli import COMMANDS, main
from gpt2probe.experiments import common


def run(capsys, argv):
    """``main(argv)`` -> (exit status, stdout, stderr)."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error(code, err, out_path=None, contains=()):
    lines = [line for line in err.splitlines() if line.strip() and "Loading weights" not in line]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in contains:
        assert text in lines[0], lines[0]
    if out_path is not None:
        assert not Path(out_path).exists()
        assert not list(Path(out_path).parent.glob(f".{Path(out_path).name}.*"))


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a command tries to load a model (mistakes must be caught before)."""
    def refuse(args):
        raise AssertionError("the model was loaded before the arguments were checked")

    for name in ("logit_lens", "patching", "steering"):
        monkeypatch.setattr(f"gpt2probe.experiments.{name}.load_model", refuse)


def python_m(*args, env=None):
    return subprocess.run([sys.executable, "-m", "gpt2probe", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_help_lists_every_command_with_its_description():
    done = python_m("--help")
    assert done.returncode == 0 and done.stderr == ""
    for name, (_, description) in COMMANDS.items():
        assert any(line.split()[:1] == [name] and description in line for line in done.stdout.splitlines()), name
    assert {"logit-lens", "attention", "patching", "steering"} <= set(COMMANDS)


def test_version(capsys):
    code, out, _ = run(capsys, ["--version"])
    assert code == 0 and out.strip() == f"gpt2probe {gpt2probe.__version__}"


def test_a_mistake_through_a_real_process_is_one_line(tmp_path):
    out = tmp_path / "r.html"
    done = python_m("logit-lens", "--top", "0", "--out", str(out))
    assert_one_error(done.returncode, done.stderr, out, contains=("--top",))


@pytest.mark.parametrize("command", ["logit-lens", "patching", "steering"])
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"gpt2probe {command}" in capsys.readouterr().out


def test_unknown_command_and_no_command(capsys):
    code, _, err = run(capsys, ["logit-lenz"])
    assert_one_error(code, err, contains=("logit-lenz", "logit-lens"))
    code, _, err = run(capsys, [])
    assert code == 2 and err.splitlines()[-1] == "error: no command given"


@pytest.mark.parametrize("k", ["0", "-3", "two", "1.5"])
def test_bad_top(k, tmp_path, capsys, no_loading):
    out = tmp_path / "r.html"
    code, _, err = run(capsys, ["logit-lens", "--top", k, "--out", str(out)])
    assert_one_error(code, err, out, contains=("--top", k))


@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["--direction", "sideways"]])
def test_bad_patching_options(argv, tmp_path, capsys, no_loading):
    out = tmp_path / "r.html"
    code, _, err = run(capsys, ["patching", *argv, "--out", str(out)])
    assert_one_error(code, err, out)


@pytest.mark.parametrize("argv", [["--alpha", "nan"], ["--max-new-tokens", "0"], ["--temperature", "0"],
                                  ["--alpha", "2", "--norm-ratio", "0.5"], ["--norm-ratio", "0"], ["--norm-ratio", "inf"]])
def test_bad_steering_options(argv, tmp_path, capsys, no_loading):
    out = tmp_path / "r.html"
    code, _, err = run(capsys, ["steering", *argv, "--out", str(out)])
    assert_one_error(code, err, out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["logit-lens", "patching", "steering"])
def test_cuda_without_cuda(command, tmp_path, capsys, no_loading):
    out = tmp_path / "r.html"
    code, _, err = run(capsys, [command, "--device", "cuda", "--out", str(out)])
    assert_one_error(code, err, out, contains=("CUDA is not available",))


def test_unknown_device(tmp_path, capsys, no_loading):
    code, _, err = run(capsys, ["logit-lens", "--device", "gpu", "--out", str(tmp_path / "r.html")])
    assert_one_error(code, err, tmp_path / "r.html", contains=("'gpu'",))


def test_prompts_file_mistakes(tmp_path, capsys, no_loading):
    out = tmp_path / "r.html"
    code, _, err = run(capsys, ["logit-lens", "--prompts-file", str(tmp_path / "missing.txt"), "--out", str(out)])
    assert_one_error(code, err, out, contains=("does not exist",))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    code, _, err = run(capsys, ["logit-lens", "--prompts-file", str(latin1), "--out", str(out)])
    assert_one_error(code, err, out, contains=("not UTF-8",))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\r\n", encoding="utf-8")
    code, _, err = run(capsys, ["logit-lens", "--prompts-file", str(empty), "--out", str(out)])
    assert_one_error(code, err, out, contains=("no prompts",))
    code, _, err = run(capsys, ["logit-lens", "--prompts-file", str(tmp_path), "--out", str(out)])
    assert_one_error(code, err, out, contains=("directory",))


def test_out_mistakes(tmp_path, capsys, no_loading):
    code, _, err = run(capsys, ["logit-lens", "--out", str(tmp_path)])
    assert_one_error(code, err, contains=("is a directory",))
    blocker = tmp_path / "file.txt"
    blocker.write_text("x", encoding="utf-8")
    code, _, err = run(capsys, ["logit-lens", "--out", str(blocker / "r.html")])
    assert_one_error(code, err, contains=("is a file",))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_not_writable(tmp_path, capsys, no_loading):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run(capsys, ["logit-lens", "--out", str(locked / "r.html")])
    assert_one_error(code, err, locked / "r.html", contains=("permission denied",))


def test_read_prompts_file_keeps_unicode_separators(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufefffirst\u2028still first\r\nsecond\x85x\n\nthird".encode("utf-8"))
    assert common.read_prompts_file(path) == ["first\u2028still first", "second\x85x", "third"]


def test_explicit_model_never_falls_back(tmp_path, capsys, monkeypatch):
    """A typo in --model is an error, not a silent report from another model."""
    out = tmp_path / "r.html"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # tests run offline; do not wait for the network check
    code, stdout, err = run(capsys, ["logit-lens", "--model", "gpt-2", "--out", str(out)])
    assert_one_error(code, err, out, contains=("'gpt-2'",))
    assert "tiny-english" not in stdout


def test_bad_model_directory(tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gpt2", "n_layer": 2', encoding="utf-8")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    out = tmp_path / "r.html"
    code, _, err = run(capsys, ["logit-lens", "--model", str(broken), "--out", str(out)])
    assert_one_error(code, err, out, contains=(str(broken),))


def test_shipped_model_by_name(tmp_path, capsys):
    out = tmp_path / "r.html"
    code, stdout, err = run(capsys, ["logit-lens", "--model", "tiny-english", "--prompt", "The value of the",
                                     "--out", str(out)])
    assert code == 0, err
    assert out.is_file() and "Falling back" not in err and "Note:" not in stdout


def test_library_error_is_one_line(tmp_path, capsys):
    out = tmp_path / "r.html"
    code, _, err = run(capsys, ["logit-lens", "--model", "tiny-english", "--prompt", "a", "--target", " two words",
                                "--out", str(out)])
    assert_one_error(code, err, out, contains=("--target", "exactly one token"))


def test_default_model_falls_back_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "r.html"
    code, stdout, err = run(capsys, ["logit-lens", "--prompt", "The value of the", "--out", str(out)])
    assert code == 0
    assert "Falling back" in err and "'tiny-english'" in err
    assert "Note:" in stdout and "tiny-english" in out.read_text(encoding="utf-8")
    code, _, err = run(capsys, ["logit-lens", "--no-fallback", "--out", str(tmp_path / "s.html")])
    assert_one_error(code, err, tmp_path / "s.html")


@pytest.mark.parametrize("command", ["logit-lens", "patching", "circuit"])
def test_text_commands_do_not_offer_a_model_without_text(command, tmp_path, capsys, no_loading, monkeypatch):
    """toy-induction has a 64-id vocabulary: commands that read text prompts neither name it nor load it."""
    monkeypatch.setattr("gpt2probe.experiments.circuit.load_model", no_loading_refusal)
    assert "toy-induction" not in help_text(command, capsys)
    out = tmp_path / "r.html"
    code, _, err = run(capsys, [command, "--model", "toy-induction", "--out", str(out)])
    assert_one_error(code, err, out, contains=("'toy-induction' has its own vocabulary", "gpt2probe attention --tokens"))


def help_text(command, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def no_loading_refusal(args):
    raise AssertionError("the model was loaded before the arguments were checked")


def test_a_directory_holding_a_model_without_text_is_refused_once_loaded(tmp_path, capsys):
    from gpt2probe.shipped import shipped_model

    out = tmp_path / "r.html"
    code, _, err = run(capsys, ["logit-lens", "--model", str(shipped_model("toy-induction")), "--out", str(out)])
    assert_one_error(code, err, out, contains=("its own 64-token vocabulary", "reads text prompts only"))


def test_attention_still_offers_the_toy_model(capsys):
    assert "toy-induction" in help_text("attention", capsys)
