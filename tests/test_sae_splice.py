"""Splicing SAEs and transcoders into the forward pass (SAELens's HookedSAETransformer), on tiny perturbed models."""

from __future__ import annotations

import pytest
import torch

import gpt2probe
from gpt2probe import SAE, SAEConfig, Transcoder
from gpt2probe.hooks import count_torch_hooks

from models import SMALL, assert_close, random_ids

HOOK = "blocks.1.hook_resid_post"
D = SMALL.n_embd


@pytest.fixture
def ids():
    return random_ids(SMALL, batch=2, pos=7, seed=5)


def random_sae(hook: str = HOOK, d_sae: int = 90, seed: int = 0, **settings) -> SAE:
    sae = SAE(SAEConfig(d_in=D, d_sae=d_sae, hook_name=hook, **settings))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * (0.1 if name.startswith("b_") else 0.3))
    return sae


def random_transcoder(layer: int = 1, seed: int = 1, **settings) -> Transcoder:
    tc = Transcoder(SAEConfig.for_transcoder(layer, d_model=D, d_sae=70, **settings))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in tc.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * (0.1 if name.startswith("b_") else 0.3))
    return tc


def test_an_sae_that_reconstructs_exactly_leaves_the_logits_unchanged(small_probe, ids):
    """Known answer: W_enc = [I, -I], W_dec = [I; -I], ReLU: relu(x) - relu(-x) = x, so splicing changes nothing."""
    sae = SAE(SAEConfig(d_in=D, d_sae=2 * D, hook_name=HOOK))
    eye = torch.eye(D)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    clean = small_probe(ids)
    assert_close(small_probe.run_with_saes(ids, saes=[sae]), clean, 1e-5, "identity SAE")


def test_splicing_replaces_the_activation_by_the_reconstruction(small_probe, ids):
    sae = random_sae()
    _, cache = small_probe.run_with_cache(ids, names=[HOOK])
    recon = sae(cache[HOOK])
    expected = small_probe.run_with_hooks(ids, {HOOK: lambda x, hook: recon})
    spliced = small_probe.run_with_saes(ids, saes=[sae])
    assert_close(spliced, expected, 1e-5, "spliced logits")
    assert (spliced - small_probe(ids)).abs().max() > 1e-2, "the SAE should change the logits"


def test_error_term_leaves_the_output_exactly_as_it_was(small_probe, ids):
    sae = random_sae()
    tc = random_transcoder(layer=0, skip=True)
    clean = small_probe(ids)
    assert torch.equal(small_probe.run_with_saes(ids, saes=[sae, tc], use_error_term=True), clean)
    # reading every stage changes nothing either (compared with a plain run_with_cache: capturing attention
    # patterns runs the hooked eager attention, whose last bits may differ from sdpa's)
    logits, _ = small_probe.run_with_cache_with_saes(ids, saes=[sae, tc], use_error_term=True)
    assert torch.equal(logits, small_probe.run_with_cache(ids)[0])


def test_the_cache_holds_each_stage(small_probe, ids):
    sae = random_sae()
    _, clean_cache = small_probe.run_with_cache(ids)  # every name, as below (the same eager attention path)
    x = clean_cache[HOOK]
    logits, cache = small_probe.run_with_cache_with_saes(ids, saes=[sae], use_error_term=True)
    stages = [f"{HOOK}.{s}" for s in ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
                                      "hook_sae_error")]
    names = list(cache)
    assert names[names.index(HOOK) + 1: names.index(HOOK) + 6] == stages  # forward order, right after the hook
    assert_close(cache[f"{HOOK}.hook_sae_input"], x, 0.0)
    assert_close(cache[f"{HOOK}.hook_sae_acts_post"], sae.encode(x), 1e-5)
    assert_close(cache[f"{HOOK}.hook_sae_acts_pre"], sae.encode_pre(x), 1e-5)
    assert_close(cache[f"{HOOK}.hook_sae_recons"], sae(x), 1e-5)
    assert_close(cache[f"{HOOK}.hook_sae_error"], x - sae(x), 1e-5)
    assert_close(cache[HOOK], x, 0.0)  # with the error term the stream is unchanged
    _, no_error = small_probe.run_with_cache_with_saes(ids, saes=[sae], names=f"{HOOK}.*")
    assert f"{HOOK}.hook_sae_error" not in no_error and f"{HOOK}.hook_sae_acts_post" in no_error


def test_hooks_reach_features_ablation_with_and_without_error_term(small_probe, ids):
    sae = random_sae()
    _, clean_cache = small_probe.run_with_cache(ids, names=[HOOK])
    x = clean_cache[HOOK]
    acts = sae.encode(x)
    feature = int(acts.gt(0).sum((0, 1)).argmax())  # a feature that fires
    assert acts[..., feature].abs().max() > 0

    def ablate(a, hook):
        a = a.clone()
        a[..., feature] = 0
        return a

    ablated = acts.clone()
    ablated[..., feature] = 0
    name = f"{HOOK}.hook_sae_acts_post"
    # without the error term: the stream is the reconstruction from the ablated features
    with small_probe.saes([sae]):
        got = small_probe.run_with_hooks(ids, {name: ablate})
    assert_close(got, small_probe.run_with_hooks(ids, {HOOK: lambda t, hook: sae.decode(ablated)}), 1e-5, "ablation")
    # with it: the stream loses exactly that feature's write, acts_f * W_dec[f]
    with small_probe.saes([sae], use_error_term=True):
        got = small_probe.run_with_hooks(ids, {name: ablate})
    edited = x - acts[..., feature, None] * sae.W_dec[feature]
    assert_close(got, small_probe.run_with_hooks(ids, {HOOK: lambda t, hook: edited}), 1e-5, "ablation + error term")


def test_transcoder_replaces_the_mlp_output(small_probe, ids):
    tc = random_transcoder(layer=1)
    read, write = tc.cfg.hook_name, tc.cfg.hook_name_out
    _, cache = small_probe.run_with_cache(ids, names=[read])
    prediction = tc(cache[read])
    expected = small_probe.run_with_hooks(ids, {write: lambda t, hook: prediction})
    got, spliced = small_probe.run_with_cache_with_saes(ids, saes=[tc], names=[write, f"{read}.hook_sae_acts_post"])
    assert_close(got, expected, 1e-5, "transcoder splice")
    assert_close(spliced[write], prediction, 1e-6)
    assert_close(spliced[f"{read}.hook_sae_acts_post"], tc.encode(cache[read]), 1e-6)


def test_nothing_leaks_even_when_the_body_raises(small_probe, ids):
    before_hooks, before_names = count_torch_hooks(small_probe.model), small_probe.hook_names
    sae, tc = random_sae(), random_transcoder(layer=2)
    with pytest.raises(RuntimeError, match="boom"), small_probe.saes([sae, tc]):
        assert f"{HOOK}.hook_sae_acts_post" in small_probe.hook_names
        assert count_torch_hooks(small_probe.model) > before_hooks
        raise RuntimeError("boom")
    assert count_torch_hooks(small_probe.model) == before_hooks and small_probe.hook_names == before_names
    # after the block the stage names are gone, and the error says where they exist
    with pytest.raises(gpt2probe.HookNameError, match=rf"exists only inside 'with probe.saes\(\[sae\]\)' for an SAE "
                                                      rf"reading '{HOOK}'; attach hooks on it inside that block"):
        small_probe.run_with_hooks(ids, {f"{HOOK}.hook_sae_acts_post": lambda t, hook: None})
    with small_probe.saes([sae]), pytest.raises(gpt2probe.HookNameError, match=r"probe.saes\(\[sae\], use_error_term=True\)"):
        small_probe.run_with_hooks(ids, {f"{HOOK}.hook_sae_error": lambda t, hook: None})
    # a failing hook inside a spliced run leaks nothing either
    with pytest.raises(ZeroDivisionError), small_probe.saes([sae]):
        small_probe.run_with_hooks(ids, {f"{HOOK}.hook_sae_acts_pre": lambda t, hook: 1 / 0})
    assert count_torch_hooks(small_probe.model) == before_hooks and small_probe.hook_names == before_names


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: random_sae(hook="blocks.5.hook_resid_post"), gpt2probe.SAEMismatchError, "3 layers"),
        (lambda: SAE(SAEConfig(d_in=D + 1, d_sae=8, hook_name=HOOK)), gpt2probe.SAEMismatchError, "width 60"),
        (lambda: SAE(SAEConfig(d_in=D, d_sae=8, hook_name="blocks.0.mlp.hook_post")), gpt2probe.SAEMismatchError, "width 240"),
        (lambda: SAE(SAEConfig(d_in=D, d_sae=8, hook_name="blocks.0.attn.hook_z")), gpt2probe.SAEMismatchError, "stream"),
        (lambda: random_sae().to(torch.float64), gpt2probe.SAEMismatchError, "float64"),
        (lambda: "not an sae", gpt2probe.InvalidTypeError, "SAE or Transcoder"),
    ],
)
def test_saes_that_do_not_fit_are_refused_before_anything_is_attached(small_probe, ids, make, error, match):
    before = count_torch_hooks(small_probe.model)
    with pytest.raises(error, match=match):
        small_probe.run_with_saes(ids, saes=[make()])
    assert count_torch_hooks(small_probe.model) == before


def test_two_modules_on_one_hook_are_refused(small_probe, ids):
    with pytest.raises(gpt2probe.InvalidArgumentError, match="two spliced modules"):
        small_probe.run_with_saes(ids, saes=[random_sae(), random_sae(seed=2)])


def test_a_transcoder_that_writes_before_it_reads_is_refused(small_probe, ids):
    cfg = SAEConfig(d_in=D, d_sae=8, hook_name="blocks.1.hook_resid_post", hook_name_out="blocks.1.hook_mlp_out")
    with pytest.raises(gpt2probe.SAEMismatchError, match="after"):
        small_probe.run_with_saes(ids, saes=[Transcoder(cfg)])


def test_gradients_reach_the_features(small_probe, ids):
    sae = random_sae()
    grads = {}

    def keep(acts, hook):
        acts.retain_grad()
        grads["acts"] = acts

    with small_probe.saes([sae], use_error_term=True), small_probe.hooks({f"{HOOK}.hook_sae_acts_post": keep}):
        logits = small_probe(ids, grad=True)
    logits[0, -1, 3].backward()
    assert grads["acts"].grad is not None and grads["acts"].grad.abs().sum() > 0


def test_a_dict_of_saes_is_refused_naming_its_values(small_probe):
    """load_saes/load_transcoders return {name: coder}; probe.saes(that) said only 'got dict'.

    This run's type-checking import hook refuses a dict at the call; ``__wrapped__`` is the check
    as a user without that hook reaches it.
    """
    from gpt2probe.sae.splice import _check

    check = getattr(_check, "__wrapped__", _check)
    with pytest.raises(gpt2probe.InvalidTypeError, match=r"got a dict: pass list\(saes.values\(\)\)"):
        check({HOOK: random_sae()}, small_probe.cfg)
    assert len(check(random_sae(), small_probe.cfg)) == 1  # one coder is taken, as SAELens takes it
