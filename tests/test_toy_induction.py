"""Checks on the hand-built ground-truth model ``gpt2probe/assets/toy-induction``.

The checkpoint is loaded with plain transformers (eager attention, so the
attention weights can be read) and its circuit is measured on ``[BOS, x, x]``
sequences: layer 0 head 0 is a previous-token head, layer 1 head 0 an
induction head, and nothing else contributes.  Toolkit tests rely on these
facts as ground truth, so they are computed here, not assumed.
"""

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel

from gpt2probe.toy import repeated_random_tokens

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "gpt2probe" / "assets" / "toy-induction"
BUILDER = REPO / "tools" / "build_toy_induction.py"
CASES = [(8, 0), (13, 1), (20, 2), (31, 3)]  # (half_len, seed): the circuit must not depend on the period


@pytest.fixture(scope="module")
def model():
    return GPT2LMHeadModel.from_pretrained(MODEL_DIR, attn_implementation="eager", dtype=torch.float32).eval()


def zero_head(model, layer, head):
    """Copy of ``model`` with the head's rows of ``attn.c_proj.weight`` zeroed."""
    model = copy.deepcopy(model)
    d_head = model.config.n_embd // model.config.n_head
    with torch.no_grad():
        model.transformer.h[layer].attn.c_proj.weight[head * d_head : (head + 1) * d_head] = 0.0
    return model


@torch.no_grad()
def run(model, tokens):
    """(layer-0 head-0 attention, layer-1 head-0 attention, per-position next-token nll, logits)."""
    out = model(tokens, output_attentions=True)
    nll = -out.logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return out.attentions[0][:, 0], out.attentions[1][:, 0], nll, out.logits


def halves_loss(nll, half):
    """Mean nll predicting tokens 2..L of the first copy and tokens 2..L of the second copy."""
    return nll[:, 1:half].mean().item(), nll[:, half + 1 : 2 * half].mean().item()


def test_config_tied_and_small(model):
    cfg = model.config
    assert (cfg.model_type, cfg.n_layer, cfg.n_head, cfg.vocab_size) == ("gpt2", 2, 4, 64)
    assert cfg.n_positions >= 2 * 31 + 1
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    size = sum(f.stat().st_size for f in MODEL_DIR.rglob("*") if f.is_file())
    assert size < 4 * 2**20
    assert "constructed by hand" in (MODEL_DIR / "README.md").read_text(encoding="utf-8")


def test_checkpoint_matches_builder(model, tmp_path):
    """The shipped weights are exactly what ``tools/build_toy_induction.py --out DIR`` writes."""
    done = subprocess.run([sys.executable, str(BUILDER), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    built = GPT2LMHeadModel.from_pretrained(tmp_path, dtype=torch.float32).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, built[name]), name
    assert "constructed by hand" in (tmp_path / "README.md").read_text(encoding="utf-8")



@pytest.mark.parametrize("half,seed", CASES)
def test_previous_token_head(model, half, seed):
    attn0, _, _, _ = run(model, repeated_random_tokens(8, half, 64, seed))
    pos = torch.arange(1, 2 * half + 1)
    assert attn0[:, pos, pos - 1].mean() >= 0.9


@pytest.mark.parametrize("half,seed", CASES)
def test_induction_head(model, half, seed):
    """Second-copy position p (token of p - L) attends to p - L + 1, the token after the earlier copy."""
    _, attn1, _, _ = run(model, repeated_random_tokens(8, half, 64, seed))
    rep = torch.arange(half + 1, 2 * half + 1)
    assert attn1[:, rep, rep - half + 1].mean() >= 0.9


@pytest.mark.parametrize("half,seed", CASES)
def test_second_copy_predicted(model, half, seed):
    tokens = repeated_random_tokens(8, half, 64, seed)
    _, _, nll, logits = run(model, tokens)
    first, second = halves_loss(nll, half)
    assert abs(first - math.log(64)) < 0.3  # first copy: chance
    assert second < 0.5
    acc = (logits[:, half + 1 : 2 * half].argmax(-1) == tokens[:, half + 2 :]).float().mean()
    assert acc >= 0.99


@pytest.mark.parametrize("layer", [1, 0])
def test_ablating_circuit_head_removes_induction(model, layer):
    """Zeroing either circuit head's output puts the second-copy loss back at the first-copy level."""
    half = 20
    tokens = repeated_random_tokens(8, half, 64, seed=7)
    first, second = halves_loss(run(model, tokens)[2], half)
    _, ablated = halves_loss(run(zero_head(model, layer, 0), tokens)[2], half)
    assert second < 0.5
    assert ablated > first - 0.3


def test_other_heads_and_mlps_contribute_nothing(model):
    tokens = repeated_random_tokens(4, 13, 64, seed=11)
    reference = run(model, tokens)[3]
    pruned = model
    for layer in (0, 1):
        for head in (1, 2, 3):
            pruned = zero_head(pruned, layer, head)
        with torch.no_grad():
            pruned.transformer.h[layer].mlp.c_proj.weight.zero_()
            pruned.transformer.h[layer].mlp.c_proj.bias.zero_()
    assert torch.allclose(run(pruned, tokens)[3], reference, atol=1e-5)


def test_repeated_random_tokens():
    tokens = repeated_random_tokens(5, 13, 64, seed=3)
    assert tokens.dtype == torch.long and tokens.shape == (5, 27)
    assert (tokens[:, 0] == 0).all()
    assert torch.equal(tokens[:, 1:14], tokens[:, 14:])
    assert all(len(set(row[1:14].tolist())) == 13 for row in tokens)
    assert tokens[:, 1:].min() >= 1 and tokens.max() < 64
    assert torch.equal(tokens, repeated_random_tokens(5, 13, 64, seed=3))
    assert not torch.equal(tokens, repeated_random_tokens(5, 13, 64, seed=4))
    no_bos = repeated_random_tokens(2, 4, 10, seed=0, bos=None)
    assert no_bos.shape == (2, 8) and torch.equal(no_bos[:, :4], no_bos[:, 4:])
    with pytest.raises(ValueError):
        repeated_random_tokens(1, 64, 64, seed=0)
