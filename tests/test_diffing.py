"""Base-versus-fine-tuned diffing against ground truth: a model against itself, and copies with one known change.

The expected values come from the HF models themselves (their own logits and hidden
states) and from norms of their parameters, not from gpt2probe's code paths.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import gpt2probe
from gpt2probe import names as N
from gpt2probe.diffing import compare, component_names, weight_changes
from gpt2probe.diffing.components import component_tensors
from gpt2probe.errors import GPT2ProbeError, ModelMismatchError

from models import SMALL, VOCAB, build_gpt2, random_ids


def _probe(model) -> gpt2probe.GPT2Probe:
    return gpt2probe.load(model, device="cpu")


def _changed_copy(probe, edit) -> gpt2probe.GPT2Probe:
    model = copy.deepcopy(probe.model)
    with torch.no_grad():
        edit(model)
    return _probe(model)


@pytest.fixture(scope="module")
def base():
    return _probe(build_gpt2(SMALL))


@pytest.fixture(scope="module")
def ids():
    return random_ids(SMALL, batch=3, pos=11, seed=5)


@pytest.fixture(scope="module")
def mlp1_changed(base):
    """A copy whose only change is layer 1's MLP (SMALL has 3 layers)."""
    gen = torch.Generator().manual_seed(3)

    def edit(model):
        fc = model.transformer.h[1].mlp.c_fc
        fc.weight.add_(0.3 * torch.randn(fc.weight.shape, generator=gen))

    return _changed_copy(base, edit)


def test_a_model_compared_with_itself_is_exactly_zero_everywhere(base, ids):
    twin = _probe(copy.deepcopy(base.model))
    diff = compare(base, twin, ids)
    assert set(diff.weight_changes.values()) == {0.0}
    assert all(torch.equal(k, torch.zeros_like(k)) for k in diff.kl)
    assert torch.equal(diff.resid_change, torch.zeros_like(diff.resid_change))
    assert torch.equal(diff.lens_kl, torch.zeros_like(diff.lens_kl))
    assert torch.equal(diff.lens_agreement, torch.ones_like(diff.lens_agreement))
    assert diff.first_departure is None and diff.mean_kl == 0.0
    assert all(torch.equal(d, torch.zeros_like(d)) for d in diff.head_score_deltas.values())
    assert diff.localisation.total_kl == 0.0 and diff.localisation.layers.isnan().all()


def test_one_changed_mlp_shows_only_there_and_patching_it_restores_the_base_exactly(base, mlp1_changed, ids):
    diff = compare(base, mlp1_changed, ids)
    assert diff.changed_components() == ["blocks.1.mlp"]
    # resid_change per stream (embed, L0, L1, L2): exactly zero before the changed layer, non-zero from it.
    assert diff.resid_change[:2].tolist() == [0.0, 0.0]
    assert (diff.resid_change[2:] > 0).all()
    assert diff.lens_kl[:2].tolist() == [0.0, 0.0] and (diff.lens_kl[2:] > 0).all()
    # Patching the base's layer-1 MLP output into the tuned run gives the base logits bit for bit.
    _, cache = base.run_with_cache(ids, names=[N.mlp_out(1)])
    patched = mlp1_changed.run_with_hooks(ids, {N.mlp_out(1): lambda t, hook: cache[N.mlp_out(1)]})
    assert torch.equal(patched, base(ids))
    loc = diff.localisation
    assert loc.layers[1, 1].item() == 1.0
    assert loc.layers[0].tolist() == [0.0, 0.0] and loc.layers[1, 0].item() == 0.0
    assert loc.total_kl > 0


def test_relative_weight_change_equals_a_hand_computation(base, mlp1_changed):
    mlp_b, mlp_t = base.model.transformer.h[1].mlp, mlp1_changed.model.transformer.h[1].mlp
    params_b = [mlp_b.c_fc.weight, mlp_b.c_fc.bias, mlp_b.c_proj.weight, mlp_b.c_proj.bias]
    params_t = [mlp_t.c_fc.weight, mlp_t.c_fc.bias, mlp_t.c_proj.weight, mlp_t.c_proj.bias]
    diff_sq = sum((t.detach().double() - b.detach().double()).pow(2).sum() for b, t in zip(params_b, params_t))
    base_sq = sum(b.detach().double().pow(2).sum() for b in params_b)
    expected = float((diff_sq / base_sq).sqrt())
    assert weight_changes(base, mlp1_changed)["blocks.1.mlp"] == pytest.approx(expected, rel=1e-12)


def test_components_cover_every_parameter_once(base):
    model = base.model
    names = [name for name, _ in component_tensors(model)]
    assert names == component_names(SMALL.n_layer, SMALL.n_head)
    by_components = sum(sum(t.double().pow(2).sum() for t in parts) for _, parts in component_tensors(model))
    by_parameters = sum(p.detach().double().pow(2).sum() for name, p in model.named_parameters() if name != "lm_head.weight")
    assert float(by_components) == pytest.approx(float(by_parameters), rel=1e-12)


def test_one_changed_head_is_that_head_alone(base):
    d_head = SMALL.n_embd // SMALL.n_head

    def edit(model):  # head 3 of layer 2's key weights: columns [d_model + 3 * d_head, ...) of c_attn
        start = SMALL.n_embd + 3 * d_head
        model.transformer.h[2].attn.c_attn.weight[:, start : start + d_head] += 0.1

    diff = compare(base, _changed_copy(base, edit), random_ids(SMALL, 2, 7, seed=1), head_scores=False, patching=False)
    assert diff.changed_components() == ["blocks.2.attn.3"]


def test_kl_and_lens_divergence_equal_the_models_own_outputs(base, mlp1_changed, ids):
    diff = compare(base, mlp1_changed, ids, head_scores=False, patching=False)
    with torch.no_grad():
        out_b = base.model(ids, output_hidden_states=True)
        out_t = mlp1_changed.model(ids, output_hidden_states=True)
    expected = F.kl_div(F.log_softmax(out_t.logits, -1), F.log_softmax(out_b.logits, -1), log_target=True,
                        reduction="none").sum(-1)
    for row in range(ids.shape[0]):
        torch.testing.assert_close(diff.kl[row], expected[row].double(), atol=1e-5, rtol=1e-4)
    # Stream 2 = the output of block 1: HF's hidden_states[2] (not yet through ln_f; only the last one is).
    def lens(model, hidden):
        return F.log_softmax(model.transformer.ln_f(hidden) @ model.lm_head.weight.T, -1)

    lens_b, lens_t = lens(base.model, out_b.hidden_states[2]), lens(mlp1_changed.model, out_t.hidden_states[2])
    expected_lens = (lens_b.exp() * (lens_b - lens_t)).sum(-1).mean()
    assert diff.lens_kl[2].item() == pytest.approx(expected_lens.item(), rel=1e-4, abs=1e-7)
    top = diff.disagreements[0]
    assert top.kl == pytest.approx(float(expected.max()), rel=1e-4)


def test_models_of_different_shapes_or_tokenizers_are_refused(base, vocab_probe):
    with pytest.raises(ModelMismatchError, match="n_layer"):
        compare(base, vocab_probe, "hello")
    assert issubclass(ModelMismatchError, ValueError) and issubclass(ModelMismatchError, GPT2ProbeError)


def test_repr_is_one_line(base, mlp1_changed, ids):
    diff = compare(base, mlp1_changed, ids, head_scores=False, patch_heads=False)
    assert "\n" not in repr(diff) and "blocks" not in repr(diff) and "1 of" in repr(diff)


# -- fine-tuning ------------------------------------------------------------------------------
TEXTS = ["The function returns the value of the expression. " * 6, "A list is a sequence of items. " * 8]


@pytest.fixture(scope="module")
def vocab_base():
    return _probe(build_gpt2(VOCAB))


def test_finetune_with_everything_frozen_but_one_layer_changes_only_that_layer(vocab_base):
    from gpt2probe.finetune import finetune

    before = [(p.detach().clone(), p.requires_grad) for p in vocab_base.model.parameters()]
    result = finetune(vocab_base, TEXTS, steps=3, batch_size=2, seq_len=16, lr=1e-2, train=["blocks.1"], seed=0)
    changed = weight_changes(vocab_base, result.probe)
    assert {name for name, v in changed.items() if v > 0} == {
        name for name in changed if name.startswith("blocks.1.")
    }
    assert all(v > 0 for name, v in changed.items() if name.startswith("blocks.1.") and not name.endswith("ln1"))
    again = finetune(vocab_base, TEXTS, steps=3, batch_size=2, seq_len=16, lr=1e-2, train=["blocks.1"], seed=0)
    assert again.losses == result.losses
    assert all(torch.equal(a, b) for a, b in zip(again.probe.model.parameters(), result.probe.model.parameters()))
    # The base model is untouched: same values, same requires_grad flags, still in eval mode.
    after = list(vocab_base.model.parameters())
    assert all(torch.equal(v, p) and g == p.requires_grad for (v, g), p in zip(before, after))
    assert not vocab_base.model.training


def test_finetune_refuses_what_it_cannot_do(vocab_base):
    from gpt2probe.finetune import finetune

    with pytest.raises(GPT2ProbeError, match="selects no parameter"):
        finetune(vocab_base, TEXTS, steps=1, train=["blocks.9"])
    with pytest.raises(GPT2ProbeError, match="fewer than one window"):
        finetune(vocab_base, ["tiny"], steps=1, seq_len=16)
    with pytest.raises(GPT2ProbeError, match="steps"):
        finetune(vocab_base, TEXTS, steps=0)
    with pytest.raises(GPT2ProbeError, match="no parameter to train"):
        finetune(vocab_base, TEXTS, steps=1, train=["blocks.0"], freeze=["blocks.0"])


def test_finetune_and_diff_commands_end_to_end(vocab_dir, tmp_path, capsys):
    from gpt2probe.cli import main

    text = tmp_path / "doc.txt"
    text.write_text(" ".join(TEXTS), encoding="utf-8")
    out = tmp_path / "tuned"
    assert main(["finetune", "--model", str(vocab_dir), "--corpus", str(text), "--steps", "2", "--batch-size", "2",
                 "--seq-len", "16", "--train", "blocks.0.mlp", "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "finetune.json").is_file()
    modes = {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == modes["finetune.json"]  # not 0600 for one
    report = tmp_path / "diff.html"
    assert main(["diff", "--base", str(vocab_dir), "--finetuned", str(out), "--prompt", "The value of the",
                 "--out", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "changed components: blocks.0.mlp" in printed
    html = report.read_text(encoding="utf-8")
    for heading in ("Weight changes", "Divergence through depth", "Head scores", "Localisation by patching"):
        assert heading in html


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--model", "m", "--corpus", "/nonexistent.txt", "--steps", "1", "--out", "o"], "does not exist"),
    (["diff", "--base", "a", "--finetuned", "b", "--prompts-file", "/nonexistent"], "does not exist"),
])
def test_command_mistakes_end_with_one_error_line(argv, message, capsys):
    from gpt2probe.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_diff_refuses_an_out_that_is_a_directory(vocab_dir, tmp_path, capsys):
    from gpt2probe.cli import main

    assert main(["diff", "--base", str(vocab_dir), "--finetuned", str(vocab_dir), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_without_the_lens_view_the_rest_is_unchanged(base, mlp1_changed, ids):
    full = compare(base, mlp1_changed, ids, head_scores=False, patching=False)
    light = compare(base, mlp1_changed, ids, head_scores=False, patching=False, lens=False)
    assert light.lens_kl is None and light.lens_agreement is None and light.first_departure is None
    assert torch.equal(light.resid_change, full.resid_change)
    assert all(torch.equal(a, b) for a, b in zip(light.kl, full.kl))
    assert "skipped" in repr(light)
    # The last stream's lens is the models' own logits: its KL is the mean next-token KL.
    assert full.lens_kl[-1].item() == pytest.approx(full.mean_kl, rel=1e-6)


# -- exact small KLs and per-head localisation (issue 25) ------------------------------------------

def _kl_float64(p_logits, q_logits):
    """Plain float64 KL of the same logits: the reference the package's KL is held to."""
    log_p, log_q = F.log_softmax(p_logits.double(), -1), F.log_softmax(q_logits.double(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


@pytest.mark.parametrize("nudge", [0.5, 1e-2, 1e-3])
def test_small_kls_equal_float64_and_are_never_negative(base, ids, nudge):
    """One weight nudged: KL down to ~1e-9 nats, float32 would be off by ~1e-6 and go negative."""
    def edit(model):
        model.transformer.h[2].mlp.c_fc.weight[5, 17] += nudge

    tuned = _changed_copy(base, edit)
    diff = compare(base, tuned, ids, head_scores=False, patching=False, lens=False)
    expected = _kl_float64(base(ids), tuned(ids))
    for row in range(ids.shape[0]):
        assert (diff.kl[row] >= 0).all()
        torch.testing.assert_close(diff.kl[row], expected[row], rtol=1e-6, atol=1e-13)  # float64 rounding
    assert diff.mean_kl == pytest.approx(float(expected.mean()), rel=1e-6, abs=1e-13)


def test_kl_is_exact_near_one_micro_nat_and_never_negative():
    """KL ~1e-6 from float32 logits: relative error below 1e-3 against a float64 reference; float32 fails this."""
    from gpt2probe.divergence import kl_from_logits

    gen = torch.Generator().manual_seed(0)
    p = 4.0 * torch.randn(64, 5000, generator=gen)
    q = p + 2e-3 * torch.randn(64, 5000, generator=gen)  # float32 logits, KL ~2e-6 per row
    expected = _kl_float64(p, q)
    assert 1e-7 < float(expected.min()) and float(expected.max()) < 1e-5
    got = kl_from_logits(p, q)
    assert got.dtype == torch.float64 and (got >= 0).all()
    assert float(((got - expected).abs() / expected).max()) < 1e-3
    assert float(kl_from_logits(p, p).abs().max()) == 0.0
    # the float32 formula the package used before, for contrast: far off, and negative somewhere
    log_p, log_q = F.log_softmax(p, -1), F.log_softmax(q, -1)
    float32 = (log_p.exp() * (log_p - log_q)).sum(-1).double()
    assert float(((float32 - expected).abs() / expected).max()) > 1e-2


def _head_edit(layer: int, head: int, which: str, scale: float = 0.3):
    """An edit of one head's ``W_Q``, ``W_K``, ``W_V`` (columns of ``c_attn``) or ``W_O`` (rows of ``c_proj``)."""
    d_model, d_head = SMALL.n_embd, SMALL.n_embd // SMALL.n_head
    gen = torch.Generator().manual_seed(7)

    def edit(model):
        attn = model.transformer.h[layer].attn
        if which == "W_O":
            rows = attn.c_proj.weight[head * d_head : (head + 1) * d_head]
            rows.add_(scale * torch.randn(rows.shape, generator=gen))
            return
        start = "W_Q W_K W_V".split().index(which) * d_model + head * d_head
        cols = attn.c_attn.weight[:, start : start + d_head]
        cols.add_(scale * torch.randn(cols.shape, generator=gen))

    return edit


@pytest.mark.parametrize("which", ["W_Q", "W_K", "W_V", "W_O"])
def test_localisation_finds_a_head_whatever_weight_of_it_changed(base, ids, which):
    """Patching L1H2's output restores the base exactly for an edit to any of its four matrices.

    Heads before it and beside it (same input in both runs, same weights) restore nothing; heads
    after it read a changed stream, so patching them may move the KL either way.
    """
    layer, head = 1, 2
    tuned = _changed_copy(base, _head_edit(layer, head, which))
    diff = compare(base, tuned, ids, head_scores=False, lens=False)
    assert diff.changed_components() == [f"blocks.{layer}.attn.{head}"]
    heads = diff.localisation.heads
    assert diff.localisation.total_kl > 1e-4
    assert heads[layer, head].item() == pytest.approx(1.0, abs=1e-4)
    upstream = torch.cat([heads[:layer].flatten(), heads[layer, :head], heads[layer, head + 1 :]])
    assert upstream.abs().max().item() < 1e-5
    assert diff.localisation.layers[layer, 0].item() == pytest.approx(1.0, abs=1e-4)  # attn_out of that layer
