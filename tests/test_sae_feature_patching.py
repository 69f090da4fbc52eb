"""Exact and attribution patching over SAE features: checked against hand-made patches and finite differences."""

from __future__ import annotations

import pytest
import torch

import gpt2probe
from gpt2probe import SAE, SAEConfig
from gpt2probe.interventions.feature_patching import FeatureEffects, feature_attribution, feature_patch

from models import SMALL, random_ids

HOOK = "blocks.1.hook_resid_post"
D = SMALL.n_embd


def random_sae(seed: int = 0) -> SAE:
    sae = SAE(SAEConfig(d_in=D, d_sae=40, hook_name=HOOK))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * (0.1 if name.startswith("b_") else 0.3))
    return sae


@pytest.fixture
def prompts():
    clean = random_ids(SMALL, batch=2, pos=6, seed=1)
    corrupted = clean.clone()
    corrupted[:, 2] = random_ids(SMALL, batch=2, pos=1, seed=2)[:, 0]
    return clean, corrupted


def metric(logits):
    return (logits[:, -1, 3] - logits[:, -1, 7]).mean()


def by_hand(probe, sae, base, source, feature, scale=1.0):
    """The metric of ``base`` with ``feature``'s activation moved ``scale`` of the way to ``source``'s, through plain hooks."""
    name = f"{HOOK}.hook_sae_acts_post"
    _, src = probe.run_with_cache_with_saes(source, saes=[sae], names=[name], use_error_term=True)

    def move(acts, hook):
        out = acts.clone()
        out[..., feature] = acts[..., feature] + scale * (src[name][..., feature] - acts[..., feature])
        return out

    with probe.saes([sae], use_error_term=True):
        return float(metric(probe.run_with_hooks(base, {name: move})))


def test_exact_feature_patching_matches_hand_made_patches(small_probe, prompts):
    clean, corrupted = prompts
    sae = random_sae()
    effects = feature_patch(small_probe, sae, clean, corrupted, metric=metric, normalize=False, batch_size=3)
    assert isinstance(effects, FeatureEffects) and effects.method == "exact" and len(effects.features) > 3
    assert effects.corrupted_metric == pytest.approx(float(metric(small_probe(corrupted))), abs=1e-5)
    for i, feature in enumerate(effects.features[:5]):
        assert float(effects.values[i]) == pytest.approx(by_hand(small_probe, sae, corrupted, clean, feature), abs=1e-4)
    # a feature that does not differ between the runs is not patched by default
    normalized = feature_patch(small_probe, sae, clean, corrupted, metric=metric, features=effects.features[:4])
    expected = (effects.values[:4] - effects.corrupted_metric) / (effects.clean_metric - effects.corrupted_metric)
    assert torch.allclose(normalized.values, expected, atol=1e-4)
    top = effects.top(3)
    assert len(top) == 3 and abs(top[0][1] - effects.base) >= abs(top[-1][1] - effects.base)


def test_attribution_is_the_derivative_along_the_patch(small_probe, prompts):
    """AtP of a feature = d/dt metric(base + t (source - base)) at t = 0, checked by central differences."""
    clean, corrupted = prompts
    sae = random_sae()
    atp = feature_attribution(small_probe, sae, clean, corrupted, metric=metric, normalize=False)
    base = float(metric(small_probe(corrupted)))
    assert atp.method == "atp"
    checked = 0
    for i, feature in enumerate(atp.features[:4]):
        eps = 1e-2
        slope = (by_hand(small_probe, sae, corrupted, clean, feature, eps)
                 - by_hand(small_probe, sae, corrupted, clean, feature, -eps)) / (2 * eps)
        assert float(atp.values[i]) - base == pytest.approx(slope, rel=2e-2, abs=2e-3)
        checked += 1
    assert checked >= 2


def test_per_position_effects_have_a_position_axis(small_probe, prompts):
    clean, corrupted = prompts
    sae = random_sae()
    exact = feature_patch(small_probe, sae, clean, corrupted, metric=metric, features=[0, 5], per_position=True,
                          normalize=False)
    atp = feature_attribution(small_probe, sae, clean, corrupted, metric=metric, features=[0, 5], per_position=True,
                              normalize=False)
    assert exact.values.shape == atp.values.shape == (clean.shape[1], 2)
    # positions before the corruption see identical prompts: patching there changes nothing
    assert torch.allclose(exact.values[:2], torch.full((2, 2), exact.corrupted_metric), atol=1e-5)


def test_bad_arguments_are_refused(small_probe, prompts):
    clean, corrupted = prompts
    with pytest.raises(gpt2probe.InvalidArgumentError, match="outside"):
        feature_patch(small_probe, random_sae(), clean, corrupted, metric=metric, features=[40])
    with pytest.raises(gpt2probe.InvalidArgumentError, match="batch_size"):
        feature_patch(small_probe, random_sae(), clean, corrupted, metric=metric, batch_size=0)


def test_features_are_indices_in_range_never_wrapped(small_probe, prompts):
    """top(-1) used to drop the least important feature silently (a slice bound); a non-coder was a raw AttributeError."""
    clean, corrupted = prompts
    sae = random_sae()
    for patching in (feature_patch, feature_attribution):
        for bad in ([-1], [40], [0, 40]):
            with pytest.raises(gpt2probe.InvalidArgumentError, match=r"features\[\d\] -?\d+ is outside 0..39"):
                patching(small_probe, sae, clean, corrupted, metric=metric, features=bad)
        with pytest.raises(gpt2probe.InvalidTypeError, match="sae must be a gpt2probe SAE or Transcoder"):
            patching(small_probe, object(), clean, corrupted, metric=metric, features=[0])
    effects = feature_patch(small_probe, sae, clean, corrupted, metric=metric, features=[5, 3, 9])
    assert effects.features == (5, 3, 9)
    assert len(effects.top(3)) == 3 and effects.top(0) == []
    with pytest.raises(gpt2probe.InvalidArgumentError, match="k must be >= 0, got -1"):
        effects.top(-1)
