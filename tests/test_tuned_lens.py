"""The tuned lens: identity = logit lens, translated read-outs against a hand-written reference,
save/load, refusing other models, and training (frozen model, determinism, resuming, errors)."""

from __future__ import annotations

import json
import pydoc_data.topics

import pytest
import torch

import gpt2probe
from gpt2probe import TunedLens, logit_lens
from gpt2probe.errors import CorpusError, GPT2ProbeError, LensMismatchError
from gpt2probe.lens.tuned_training import CHECKPOINT_FILE, pack_windows

from models import VOCAB, build_gpt2

PROMPTS = ["The cat sat on the mat because it was", "Hello there gpt-2!"]
TEXTS = [pydoc_data.topics.topics[name] for name in ("if", "while", "for", "pass", "del")]
FAST = dict(batch_size=4, seq_len=16, max_chunk_bytes=2**20)  # small blocks: several per step


def randomized(lens: TunedLens, seed: int, scale: float = 0.3) -> TunedLens:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in lens.translators.parameters():
            param.copy_(scale * torch.randn(param.shape, generator=gen))
    return lens


@pytest.mark.parametrize("include_mid", [False, True])
def test_identity_lens_is_the_logit_lens(vocab_probe, include_mid):
    lens = TunedLens.identity(vocab_probe, include_mid=include_mid)
    plain = logit_lens(vocab_probe, PROMPTS, k=4, targets="next", include_mid=include_mid)
    tuned = logit_lens(vocab_probe, PROMPTS, k=4, targets="next", include_mid=include_mid, lens=lens)
    for a, b in zip(plain, tuned):
        assert torch.equal(a.top_ids, b.top_ids)
        assert (a.top_probs - b.top_probs).abs().max() <= 1e-6
        assert (a.target_prob - b.target_prob).nan_to_num().abs().max() <= 1e-6
        assert (a.kl_to_final - b.kl_to_final).abs().max() <= 1e-6
        # and in fact bit for bit, as the docs say: a zero translator maps h to exactly h
        for name in ("top_probs", "entropy", "kl_to_final"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert tuned.metadata["lens"] == "tuned lens"


def test_translated_read_out_matches_a_hand_written_reference(vocab_probe):
    lens = randomized(TunedLens.identity(vocab_probe, include_mid=True), seed=3)
    result = logit_lens(vocab_probe, PROMPTS[0], k=3, include_mid=True, lens=lens)[0]
    _, cache = vocab_probe.run_with_cache(PROMPTS[0])
    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post",
             "blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"]
    assert lens.stream_names == names[:-1]
    ln_f = vocab_probe.model.transformer.ln_f
    W_U = vocab_probe.model.lm_head.weight.double()
    logps = []
    for s, name in enumerate(names):
        h = cache[name][0].double()
        if s < len(names) - 1:  # by hand: h + A h + b
            h = h + h @ lens.translators.weight[s].double().T + lens.translators.bias[s].double()
        normalized = torch.nn.functional.layer_norm(h, (h.shape[-1],), ln_f.weight.double(), ln_f.bias.double(), ln_f.eps)
        logps.append(torch.log_softmax(normalized @ W_U.T, -1))
    logp = torch.stack(logps)
    probs = logp.exp()
    kl = (probs[-1] * (logp[-1] - logp)).sum(-1)
    torch.testing.assert_close(result.top_probs.double(), probs.topk(3, -1).values, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.kl_to_final.double(), kl, atol=1e-4, rtol=1e-4)
    assert result.kl_to_final[:-1].min() > 1e-3  # the translators really changed the read-out


def test_lens_without_mid_translators_refuses_mid_streams(vocab_probe):
    with pytest.raises(LensMismatchError, match="include_mid=True"):
        logit_lens(vocab_probe, PROMPTS[0], include_mid=True, lens=TunedLens.identity(vocab_probe))


def test_save_load_round_trip_is_exact(vocab_probe, tmp_path):
    lens = randomized(TunedLens.identity(vocab_probe, include_mid=True), seed=5)
    lens.training = {"steps": 7, "seed": 1}
    lens.save(tmp_path / "lens")
    loaded = TunedLens.load(tmp_path / "lens", vocab_probe)
    assert torch.equal(loaded.translators.weight, lens.translators.weight)
    assert torch.equal(loaded.translators.bias, lens.translators.bias)
    assert loaded.stream_names == lens.stream_names and loaded.training == lens.training
    meta = json.loads((tmp_path / "lens" / "tuned_lens.json").read_text())
    assert meta["model"]["d_model"] == VOCAB.n_embd and len(meta["model"]["fingerprint"]) == 64
    assert {"torch", "transformers", "gpt2probe"} <= set(meta["versions"])
    a = logit_lens(vocab_probe, PROMPTS, include_mid=True, lens=lens)
    b = logit_lens(vocab_probe, PROMPTS, include_mid=True, lens=loaded)
    for x, y in zip(a, b):
        assert torch.equal(x.top_probs, y.top_probs) and torch.equal(x.kl_to_final, y.kl_to_final)


def test_loading_onto_another_model_is_refused(vocab_probe, small_probe, tmp_path):
    TunedLens.identity(vocab_probe).save(tmp_path / "lens")
    other = build_gpt2(VOCAB)
    with torch.no_grad():
        other.transformer.h[1].mlp.c_fc.bias[0] += 0.5  # same sizes, one weight differs
    other_probe = gpt2probe.load(other, device="cpu")
    with pytest.raises(LensMismatchError, match="other weights"):
        TunedLens.load(tmp_path / "lens", other_probe)
    assert TunedLens.load(tmp_path / "lens", other_probe, allow_different_weights=True) is not None
    with pytest.raises(LensMismatchError, match="n_layers"):
        TunedLens.load(tmp_path / "lens", small_probe)
    with pytest.raises(LensMismatchError, match="n_layers"):
        logit_lens(small_probe, torch.tensor([[1, 2, 3]]), lens=TunedLens.identity(vocab_probe))
    with pytest.raises(LensMismatchError, match="not a tuned lens directory"):
        TunedLens.load(tmp_path, vocab_probe)
    assert issubclass(LensMismatchError, GPT2ProbeError) and issubclass(LensMismatchError, ValueError)


def test_packed_windows_put_an_eos_after_each_document(vocab_probe):
    windows, n_tokens = pack_windows(vocab_probe, ["a b", "c"], seq_len=2)
    eos = vocab_probe.tokenizer.eos_token_id
    ids = vocab_probe.tokenizer("a b")["input_ids"] + [eos] + vocab_probe.tokenizer("c")["input_ids"] + [eos]
    assert n_tokens == len(ids)
    assert windows.flatten().tolist() == ids[: len(ids) // 2 * 2]


# -- training ------------------------------------------------------------------------------

def test_training_moves_only_the_translators_and_lowers_the_kl(vocab_probe):
    before = {name: p.detach().clone() for name, p in vocab_probe.model.named_parameters()}
    losses = []
    lens = TunedLens.train(vocab_probe, TEXTS, steps=6, optimizer="adam", lr=3e-2,
                           progress=lambda s, loss: losses.append(loss), **FAST)
    for name, param in vocab_probe.model.named_parameters():
        assert param.grad is None, name
        assert torch.equal(param, before[name]), name
    assert not any(p.requires_grad for p in lens.translators.parameters())
    assert lens.translators.weight.abs().max() > 0 and lens.translators.bias.abs().max() > 0
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert lens.training["steps"] == 6 and lens.training["corpus"]["n_texts"] == len(TEXTS)


def test_gradients_reach_only_the_translators(vocab_probe):
    from gpt2probe.lens.tuned_training import _accumulate

    lens = TunedLens.identity(vocab_probe)
    lens.translators.requires_grad_(True)
    windows, _ = pack_windows(vocab_probe, TEXTS, 16)
    vocab_probe.model.requires_grad_(True)  # even a trainable model gets no gradient
    try:
        loss = _accumulate(vocab_probe, lens, lens.translators, windows[:2], None, 2**20)
        assert all(p.grad is None for p in vocab_probe.model.parameters())
    finally:
        vocab_probe.model.requires_grad_(False)
    assert loss > 0
    assert lens.translators.weight.grad.abs().max() > 0 and lens.translators.bias.grad.abs().max() > 0


def test_kl_gradient_matches_autograd_through_full_logits(vocab_probe):
    """The loss's custom logsumexp backward against autograd on explicit log-softmaxes."""
    from gpt2probe.lens.tuned_training import _accumulate

    windows, _ = pack_windows(vocab_probe, TEXTS, 8)
    lens = randomized(TunedLens.identity(vocab_probe), seed=2, scale=0.1)
    lens.translators.requires_grad_(True)
    loss = _accumulate(vocab_probe, lens, lens.translators, windows[:2], None, 2**16)
    grad = lens.translators.weight.grad.clone()
    lens.translators.zero_grad()
    _, cache = vocab_probe.run_with_cache(windows[:2])
    ln_f, W_U = vocab_probe.model.transformer.ln_f, vocab_probe.model.lm_head.weight.detach()
    read = lambda h: torch.log_softmax(ln_f(h) @ W_U.T, -1)  # noqa: E731
    final = read(cache["blocks.1.hook_resid_post"]).detach()
    total = 0
    for s, name in enumerate(lens.stream_names):
        logq = read(lens.translators(cache[name], s))
        total = total + (final.exp() * (final - logq)).sum(-1).mean()
    total.backward()
    assert abs(loss - float(total.detach()) / len(lens.stream_names)) < 1e-4
    torch.testing.assert_close(grad, lens.translators.weight.grad, atol=1e-5, rtol=1e-4)


def test_training_is_deterministic_for_a_seed(vocab_probe):
    a = TunedLens.train(vocab_probe, TEXTS, steps=2, seed=4, **FAST)
    b = TunedLens.train(vocab_probe, TEXTS, steps=2, seed=4, **FAST)
    c = TunedLens.train(vocab_probe, TEXTS, steps=2, seed=5, **FAST)
    assert torch.equal(a.translators.weight, b.translators.weight)
    assert not torch.equal(a.translators.weight, c.translators.weight)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resumed_training_equals_uninterrupted(vocab_probe, tmp_path, optimizer):
    settings = dict(steps=4, optimizer=optimizer, checkpoint_every=1, **FAST)
    whole = TunedLens.train(vocab_probe, TEXTS, **settings)

    class Interrupt(Exception):
        pass

    def stop_at_2(step, loss):
        if step == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        TunedLens.train(vocab_probe, TEXTS, checkpoint_dir=tmp_path, progress=stop_at_2, **settings)
    steps_run = []
    resumed = TunedLens.train(vocab_probe, TEXTS, checkpoint_dir=tmp_path,
                              progress=lambda s, loss: steps_run.append(s), **settings)
    assert steps_run == [3, 4] and resumed.training["resumed_at_step"] == 2
    assert torch.equal(resumed.translators.weight, whole.translators.weight)
    assert torch.equal(resumed.translators.bias, whole.translators.bias)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary files left behind
    with pytest.raises(LensMismatchError, match="seed"):
        TunedLens.train(vocab_probe, TEXTS, checkpoint_dir=tmp_path, seed=9, **settings)


def test_a_corpus_too_small_for_the_steps_is_an_error(vocab_probe):
    windows, _ = pack_windows(vocab_probe, TEXTS, 16)
    most = len(windows) // 4
    with pytest.raises(CorpusError, match=f"at most {most} steps"):
        TunedLens.train(vocab_probe, TEXTS, steps=most + 1, **FAST)
    with pytest.raises(CorpusError, match="list of strings"):
        TunedLens.train(vocab_probe, TEXTS[0], steps=1, **FAST)
    with pytest.raises(CorpusError, match="seq_len"):
        TunedLens.train(vocab_probe, TEXTS, steps=1, batch_size=2, seq_len=VOCAB.n_positions + 1)
    with pytest.raises(CorpusError, match="optimizer"):
        TunedLens.train(vocab_probe, TEXTS, steps=1, optimizer="lbfgs", **FAST)


# A bool is an int to Python: steps=True trained one step. (lr=True, at 1.0, is refused too, but the
# tests' runtime type checker stops a bool for a float before the code sees it.)
@pytest.mark.parametrize("setting", [{"steps": True}, {"batch_size": True}, {"checkpoint_every": True}])
def test_tuned_lens_training_refuses_a_bool_for_a_number(vocab_probe, setting):
    name = next(iter(setting))
    with pytest.raises(CorpusError, match=f"{name} "):
        TunedLens.train(vocab_probe, TEXTS, **{**dict(steps=1, **FAST), **setting})


def test_shipped_lens_beats_the_logit_lens_on_held_out_documentation():
    from gpt2probe.shipped import shipped_model

    model_dir = shipped_model("tiny-english")
    probe = gpt2probe.load(model_dir, device="cpu")
    lens = TunedLens.load(model_dir / "tuned-lens", probe)
    trained = json.loads((model_dir / "training.json").read_text())
    assert lens.training["corpus"]["n_tokens"] == trained["train_tokens_by_source"]["docs"]  # the model's documentation split
    held_out = [pydoc_data.topics.topics[name] for name in ("try", "yield")]
    assert set(("try", "yield")) <= set(trained["val_topics"])
    windows, _ = pack_windows(probe, held_out, 128)
    plain = torch.stack([item.kl_to_final for item in logit_lens(probe, windows[:4], k=1)]).mean((0, 2))
    tuned = torch.stack([item.kl_to_final for item in logit_lens(probe, windows[:4], k=1, lens=lens)]).mean((0, 2))
    assert (tuned[:-1] < plain[:-1]).all(), (plain, tuned)


# -- the reference's optimisers (AlignmentResearch/tuned-lens scripts/ingredients.py) ----------------

def test_optimisers_are_the_references():
    from gpt2probe.lens.tuned_training import default_warmup_steps, make_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = make_optimizer(params, "sgd", 1.0, 1e-3)
    group = sgd.param_groups[0]
    assert isinstance(sgd, torch.optim.SGD) and group["lr"] == pytest.approx(0.1)  # lr_scale * (1 - momentum)
    assert group["momentum"] == 0.9 and group["nesterov"] and group["weight_decay"] == 1e-3
    adam = make_optimizer(params, "adam", 1e-3, 1e-3)
    group = adam.param_groups[0]
    assert isinstance(adam, torch.optim.AdamW) and group["amsgrad"] and group["betas"] == (0.9, 0.999)
    assert group["lr"] == 1e-3 and group["weight_decay"] == 1e-3  # decoupled: AdamW
    assert default_warmup_steps("sgd", 250) == 0
    assert default_warmup_steps("adam", 40) == 8 and default_warmup_steps("adam", 100_000) == 1000


@pytest.mark.parametrize("clip", [1e-6, None])
def test_first_sgd_step_is_the_clipped_gradient_times_lr_scale_times_one_minus_momentum(vocab_probe, clip):
    """One Nesterov step from zero: change = lr * (1 - 0.9) * (1 + 0.9) * clipped gradient (no warm-up for SGD)."""
    from gpt2probe.lens.tuned_training import _accumulate

    lens = TunedLens.train(vocab_probe, TEXTS, steps=1, optimizer="sgd", lr=1.0, clip_grad_norm=clip, **FAST)
    step = torch.cat([lens.translators.weight.flatten(), lens.translators.bias.flatten()])
    fresh = TunedLens.identity(vocab_probe)
    fresh.translators.requires_grad_(True)
    windows, _ = pack_windows(vocab_probe, TEXTS, FAST["seq_len"])
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(0))
    _accumulate(vocab_probe, fresh, fresh.translators, windows[order[:FAST["batch_size"]]], None,
                FAST["max_chunk_bytes"])
    grad = torch.cat([fresh.translators.weight.grad.flatten(), fresh.translators.bias.grad.flatten()])
    if clip is not None:
        assert grad.norm() > 10 * clip
        grad = grad * (clip / grad.norm())
    torch.testing.assert_close(step, -0.1 * 1.9 * grad, rtol=1e-4, atol=1e-12)
    assert lens.training["clip_grad_norm"] == clip and lens.training["warmup_steps"] == 0
