"""The asset builders in ``tools/``: they refuse to run without ``--out`` (the shipped models are never overwritten
by default), and the trainer's circuit check finds a circuit whose answer is known."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.mark.parametrize("tool", ["build_toy_induction.py", "train_offline_model.py"])
def test_builder_requires_out(tool):
    done = subprocess.run([sys.executable, str(TOOLS / tool)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--out" in done.stderr.splitlines()[-1]


def test_train_tool_reuses_the_package_tokenizer():
    source = (TOOLS / "train_offline_model.py").read_text(encoding="utf-8")
    assert "from gpt2probe.tokenizer import gpt2_tokenizer" in source
    assert "GPT2TokenizerFast(" not in source


def test_graph_induction_takes_repeat_length_and_the_old_block_with_a_warning(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(TOOLS))
    tool = importlib.import_module("graph_induction")
    out = ["--out", "g.html"]
    assert tool.parse_args(out).repeat_length == 12
    assert tool.parse_args([*out, "--repeat-length", "5"]).repeat_length == 5
    assert capsys.readouterr().err == ""
    assert tool.parse_args([*out, "--block", "5"]).repeat_length == 5  # the old spelling; a block is a transformer block
    assert "warning: --block is deprecated here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args([*out, "--block", "5", "--repeat-length", "5"])
    assert "--block is the old spelling of --repeat-length: give only the new one" in capsys.readouterr().err


@pytest.fixture
def trainer(monkeypatch):
    """``tools/train_offline_model.py`` as a module (it imports its sibling ``offline_corpus``)."""
    monkeypatch.syspath_prepend(str(TOOLS))
    return importlib.import_module("train_offline_model")


def test_circuit_signs_finds_the_toy_models_hand_built_circuit(trainer):
    """On toy-induction (built by hand: layer 0 head 0 attends to the previous token, layer 1 head 0 is the
    induction head; tests/test_toy_induction.py measures both), the trainer's check names those heads, and
    its numbers equal gpt2probe's head scores and losses computed here from the logits.
    """
    from transformers import GPT2LMHeadModel

    import gpt2probe
    from gpt2probe import head_scores
    from gpt2probe.shipped import shipped_model
    from gpt2probe.toy import repeated_random_tokens

    half = trainer.COPY_HALF_LEN
    directory = shipped_model("toy-induction")
    ids = repeated_random_tokens(6, half, 64, seed=4)  # [BOS, x, x], as the trainer's copy check
    model = GPT2LMHeadModel.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        signs = trainer.circuit_signs(model, ids)
        nll = -model(ids).logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0].double()
    assert signs["best_previous_token_head"] == (0, 0) and signs["best_induction_head"] == (1, 0)
    assert signs["best_previous_token"] >= 0.9 and signs["best_induction"] >= 0.9
    _, cache = gpt2probe.load(directory, device="cpu").run_with_cache(ids, names=head_scores.PATTERN_NAMES)
    previous = head_scores.previous_token_scores(cache)
    induction = head_scores.induction_scores_from_cache(cache, half)
    assert signs["best_previous_token"] == pytest.approx(float(previous.max()), abs=1e-5)
    assert signs["best_induction"] == pytest.approx(float(induction.max()), abs=1e-5)
    assert signs["copy_loss_first"] == pytest.approx(float(nll[:, 1:half].mean()), abs=1e-5)  # tokens 2..20
    assert signs["copy_loss_repeated"] == pytest.approx(float(nll[:, half:].mean()), abs=1e-5)  # the copy, 21..40
    assert signs["copy_loss_repeated"] < 0.25 * signs["copy_loss_first"]  # the circuit copies


def test_a_scripts_old_spelling_moves_to_the_new_option_with_a_warning(capsys):
    """tools/ and benchmarks/ rename a flag through options.add_old_spelling, as train_tiny_english_lens did --warmup."""
    lens = importlib.import_module("tools.train_tiny_english_lens")
    out = ["--out", "x"]
    assert lens.parse_args(out).warmup_fraction is None and "old_warmup" not in vars(lens.parse_args(out))
    assert capsys.readouterr().err == ""
    assert lens.parse_args([*out, "--warmup", "0.25"]).warmup_fraction == 0.25  # a fraction, under its new name
    assert "warning: --warmup is deprecated here: it is a fraction of the steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lens.parse_args([*out, "--warmup", "0.25", "--warmup-fraction", "0.25"])
    assert "--warmup is the old spelling of --warmup-fraction: give only the new one" in capsys.readouterr().err
