"""``gpt2probe tuned-lens train``: one process, two processes under torchrun (gloo), and its errors."""

from __future__ import annotations

import os
import pydoc_data.topics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt2probe import TunedLens
from gpt2probe.cli import main as cli_main
from gpt2probe.experiments.tuned_lens import main

REPO = Path(__file__).resolve().parents[1]
TOPICS = ("if", "while", "for", "pass", "del")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("corpus")
    files = []
    for name in TOPICS:
        path = folder / f"{name}.txt"
        path.write_text(pydoc_data.topics.topics[name], encoding="utf-8")
        files.append(path)
    return files


def single_process_lens(probe) -> TunedLens:
    texts = [pydoc_data.topics.topics[name] for name in TOPICS]
    return TunedLens.train(probe, texts, steps=2, batch_size=4, seq_len=16, seed=3)


def test_train_command_writes_a_lens_equal_to_the_library_call(vocab_dir, vocab_probe, corpus, tmp_path, capsys):
    out = tmp_path / "lens"
    assert cli_main(["tuned-lens", *argv_for(vocab_dir, corpus, out)]) == 0  # through the command table
    assert "written to" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["tuned_lens.json", "tuned_lens.safetensors"]
    lens = TunedLens.load(out, vocab_probe)
    assert torch.equal(lens.translators.weight, single_process_lens(vocab_probe).translators.weight)
    assert "5 files: if.txt" in lens.training["corpus"]["description"]
    # a second run into the same directory is refused rather than silently overwriting it
    assert main(argv_for(vocab_dir, corpus[:1], out)) == 2
    assert capsys.readouterr().err.startswith("error: --out")


def argv_for(model: Path, files: list[Path], out: Path, /, **changes: list[str]) -> list[str]:
    options = {"--model": [str(model)], "--corpus": [str(p) for p in files], "--out": [str(out)], "--steps": ["2"],
               "--batch-size": ["4"], "--seq-len": ["16"], "--seed": ["3"]}
    options.update({"--" + key.replace("_", "-"): value for key, value in changes.items()})
    return ["train", *[x for key, value in options.items() for x in (key, *value)], "--no-progress"]


@pytest.mark.parametrize("change, message", [
    ({"steps": ["0"]}, "--steps: expected a whole number >= 1"),
    ({"corpus": ["missing.txt"]}, "is not a file"),
    ({"steps": ["500"]}, "at most"),
    ({"optimizer": ["lbfgs"]}, "invalid choice"),
    ({"batch_size": ["x"]}, "--batch-size: expected a whole number >= 1"),
    ({"lr": ["nan"]}, "--lr: expected a finite number"),
    ({"device": ["cuda:7"]}, "--device"),
    ({"model": ["/nonexistent/model"]}, ""),
])
def test_train_command_mistakes_give_one_error_line(vocab_dir, corpus, tmp_path, capsys, change, message):
    assert main(argv_for(vocab_dir, corpus, tmp_path / "o", **change)) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (above it, at most transformers' "Loading weights" bar)
    assert err.count("error") == 1 and last.startswith("error: ") and message in last, err
    assert not (tmp_path / "o" / "tuned_lens.json").exists()


def test_two_processes_under_torchrun_equal_one(vocab_dir, vocab_probe, corpus, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "gpt2probe.experiments.tuned_lens", "train", "--model", str(vocab_dir),
               "--corpus", *map(str, corpus), "--out", str(out), "--device", "cpu", "--steps", "2", "--batch-size", "4",
               "--seq-len", "16", "--seed", "3", "--no-progress"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = TunedLens.load(out, vocab_probe)
    assert ddp.training["world_size"] == 2
    single = single_process_lens(vocab_probe)
    assert single.translators.weight.abs().max() > 1e-4  # it did train
    torch.testing.assert_close(ddp.translators.weight, single.translators.weight, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ddp.translators.bias, single.translators.bias, atol=1e-6, rtol=1e-5)


def test_logit_lens_command_reads_through_a_tuned_lens(vocab_dir, vocab_probe, tmp_path, capsys):
    lens_dir = tmp_path / "lens"
    lens = TunedLens.identity(vocab_probe)
    with torch.no_grad():
        lens.translators.bias.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    lens.save(lens_dir)
    out = tmp_path / "report.html"
    assert cli_main(["logit-lens", "--model", str(vocab_dir), "--tuned-lens", str(lens_dir), "--prompt", "Hello there",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Logit lens:" in printed and "Tuned lens:" in printed
    page = out.read_text(encoding="utf-8")
    assert "Tuned lens: top-1 prediction" in page and "logit lens and tuned lens" in page


@pytest.mark.parametrize("extra, message", [
    (["--tuned-lens", "nowhere"], "not a tuned lens directory"),
    (["--tuned-lens", "LENS", "--no-tuned-lens"], "contradict"),
    (["--tuned-lens", "LENS", "--model", "tiny-english"], "n_layers"),  # a lens for another model
])
def test_logit_lens_command_tuned_mistakes(vocab_dir, vocab_probe, tmp_path, capsys, extra, message):
    TunedLens.identity(vocab_probe).save(tmp_path / "lens")
    extra = [str(tmp_path / "lens") if x == "LENS" else x for x in extra]
    model = [] if "--model" in extra else ["--model", str(vocab_dir)]
    out = tmp_path / "report.html"
    assert cli_main(["logit-lens", *model, *extra, "--prompt", "Hi", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and message in err, err
    assert not out.exists()
