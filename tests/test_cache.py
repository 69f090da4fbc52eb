"""The ActivationCache's residual algebra, checked against TransformerLens and hand computations."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
import torch

from gpt2probe import ActivationCache, HookNameError
from gpt2probe import names as N

from models import SMALL, assert_close, random_ids

TOL = 1e-4
BATCH, POS = 2, 10
LAYERS = SMALL.n_layer


@pytest.fixture(scope="module")
def run(small_probe, small_bridge):
    """``(ids, logits, cache, tl_cache)`` on one batch of the small model."""
    ids = random_ids(SMALL, BATCH, POS, seed=31)
    logits, cache = small_probe.run_with_cache(ids)
    _, tl_cache = small_bridge.run_with_cache(ids)
    return ids, logits, cache, tl_cache


@pytest.fixture(scope="module")
def cache(run) -> ActivationCache:
    return run[2]


def ln_f_out(probe, cache):
    ln_f = probe.model.transformer.ln_f
    return cache[N.LN_FINAL_NORMALIZED] * ln_f.weight + ln_f.bias


# -- accumulated_resid -----------------------------------------------------------------
def test_accumulated_resid_shape_and_labels(cache):
    stack, labels = cache.accumulated_resid(return_labels=True)
    assert stack.shape == (LAYERS + 1, BATCH, POS, SMALL.n_embd)
    assert labels == [f"{l}_pre" for l in range(LAYERS)] + ["final_post"]
    for l in range(LAYERS):
        assert torch.equal(stack[l], cache[N.resid_pre(l)])
    assert torch.equal(stack[-1], cache[N.resid_post(LAYERS - 1)])
    assert torch.equal(cache.accumulated_resid(), stack)


@pytest.mark.parametrize("layer", [None, -1, 0, 1, 2, 3])
@pytest.mark.parametrize("incl_mid", [False, True])
def test_accumulated_resid_matches_transformer_lens(run, layer, incl_mid):
    _, _, cache, tl_cache = run
    stack, labels = cache.accumulated_resid(layer, incl_mid=incl_mid, return_labels=True)
    tl_stack, tl_labels = tl_cache.accumulated_resid(layer, incl_mid=incl_mid, return_labels=True)
    assert labels == tl_labels
    assert_close(stack, tl_stack, TOL)


# -- decompose_resid -------------------------------------------------------------------
DECOMPOSITIONS = [
    (layer, mode, incl_embeds)
    for layer in (None, 0, 1, 3)
    for mode in ("all", "attn", "mlp")
    for incl_embeds in (True, False)
    if layer != 0 or incl_embeds  # before block 0 without embeddings there is nothing
]


@pytest.mark.parametrize("layer,mode,incl_embeds", DECOMPOSITIONS)
def test_decompose_resid_matches_transformer_lens(run, layer, mode, incl_embeds):
    _, _, cache, tl_cache = run
    parts, labels = cache.decompose_resid(layer, mode=mode, incl_embeds=incl_embeds, return_labels=True)
    tl_parts, tl_labels = tl_cache.decompose_resid(layer, mode=mode, incl_embeds=incl_embeds, return_labels=True)
    assert labels == tl_labels
    assert_close(parts, tl_parts, TOL)


@pytest.mark.parametrize("layer", [None, 0, 1, 2, 3])
def test_decompose_resid_sums_to_the_residual(cache, layer):
    parts, labels = cache.decompose_resid(layer, return_labels=True)
    last = LAYERS if layer is None else layer
    assert len(labels) == 2 + 2 * last
    target = cache[N.resid_post(LAYERS - 1)] if last == LAYERS else cache[N.resid_pre(last)]
    assert_close(parts.sum(0), target, 1e-5)
    assert_close(parts.sum(0), cache.accumulated_resid(layer)[-1], 1e-5)


# -- heads -----------------------------------------------------------------------------
@pytest.mark.parametrize("layer", range(LAYERS))
def test_head_results_sum_with_b_o_to_attn_out(small_probe, cache, layer):
    results = cache.head_results(layer)
    assert results.shape == (BATCH, POS, SMALL.n_head, SMALL.n_embd)
    assert_close(results.sum(2) + small_probe.b_O[layer], cache[N.attn_out(layer)], 1e-5)
    z = cache[N.z(layer)]
    for head in (0, SMALL.n_head - 1):
        assert_close(results[:, :, head], z[:, :, head] @ small_probe.W_O[layer, head], 1e-6)


@pytest.mark.parametrize("layer", [None, 1, 3])
def test_stack_head_results_matches_transformer_lens(run, layer):
    _, _, cache, tl_cache = run
    stack, labels = cache.stack_head_results(layer, return_labels=True)
    tl_stack, tl_labels = tl_cache.stack_head_results(-1 if layer is None else layer, return_labels=True)
    n = (LAYERS if layer is None else layer) * SMALL.n_head
    assert stack.shape == (n, BATCH, POS, SMALL.n_embd)
    assert labels == tl_labels == [f"L{l}H{h}" for l in range(n // SMALL.n_head) for h in range(SMALL.n_head)]
    assert_close(stack, tl_stack, TOL)


# -- final layer norm ------------------------------------------------------------------
def test_apply_final_ln_of_the_last_entry_is_ln_f_output(small_probe, run):
    ids, logits, cache, _ = run
    stack = cache.accumulated_resid()
    normed = cache.apply_final_ln(stack)
    assert normed.shape == stack.shape
    assert_close(normed[-1], ln_f_out(small_probe, cache), 1e-5)
    hidden, _ = small_probe.run_with_cache(ids, names=[], unembed=False)
    assert_close(normed[-1], hidden, 1e-5)
    assert_close(normed[-1] @ small_probe.W_U + small_probe.b_U, logits, 1e-4)


def test_apply_final_ln_treats_each_entry_as_a_final_stream(small_probe, cache):
    """The logit lens: entry ``l`` is normalised with its own statistics."""
    stack = cache.accumulated_resid()
    ln_f = small_probe.model.transformer.ln_f
    normed = cache.apply_final_ln(stack)
    for entry in range(LAYERS + 1):
        x = stack[entry]
        centered = x - x.mean(-1, keepdim=True)
        by_hand = centered / (centered.pow(2).mean(-1, keepdim=True) + ln_f.eps).sqrt() * ln_f.weight + ln_f.bias
        assert_close(normed[entry], by_hand, 1e-5)


def test_frozen_final_ln_decomposition_sums_to_ln_f_minus_bias(small_probe, run):
    ids, logits, cache, tl_cache = run
    ln_f = small_probe.model.transformer.ln_f
    parts = cache.decompose_resid()
    frozen = cache.apply_final_ln(parts, frozen=True)
    assert frozen.shape == parts.shape
    assert_close(frozen.sum(0), ln_f_out(small_probe, cache) - ln_f.bias, 1e-5)
    # Direct logit attribution: the parts' logits plus the bias's are the model's logits.
    assert_close((frozen @ small_probe.W_U).sum(0) + ln_f.bias @ small_probe.W_U, logits, 1e-4)
    # TransformerLens divides by the same cached scale (its ln weights are not applied here).
    assert_close(frozen, tl_cache.apply_ln_to_stack(parts) * ln_f.weight, 1e-5)


def test_frozen_final_ln_refuses_a_stack_of_other_positions(cache):
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 10\)"):
        cache.apply_final_ln(cache.accumulated_resid()[:, :, :4], frozen=True)


# -- persistence -----------------------------------------------------------------------
def test_save_and_load_round_trip(vocab_probe, tmp_path):
    prompts = ["The cat sat", "Hello there gpt-2!"]
    _, cache = vocab_probe.run_with_cache(prompts, names="blocks.*")
    path = tmp_path / "cache.safetensors"
    cache.save(path, note="a test")
    loaded = ActivationCache.load(path, probe=vocab_probe)

    assert sorted(loaded) == sorted(cache)
    for name in cache:
        assert torch.equal(loaded[name], cache[name]), name
    assert torch.equal(loaded.tokens.ids, cache.tokens.ids)
    assert torch.equal(loaded.tokens.attention_mask, cache.tokens.attention_mask)
    assert loaded.tokens.prompts == tuple(prompts)
    assert loaded.model_name == vocab_probe.cfg.model_name == cache.model_name
    assert loaded.n_layers == vocab_probe.cfg.n_layers
    assert loaded.metadata["note"] == "a test"
    versions = json.loads(loaded.metadata["versions"])
    assert versions["torch"] == torch.__version__
    import transformers

    assert versions["transformers"] == transformers.__version__
    assert_close(loaded.head_results(1), cache.head_results(1), 0)


def test_save_when_entries_share_memory(small_probe, tmp_path):
    """``resid_post(l)`` and ``resid_pre(l+1)`` are one tensor in the forward pass; saving must still work."""
    ids = random_ids(SMALL, 1, 4, seed=8)
    _, cache = small_probe.run_with_cache(ids, names=[N.resid_post(0), N.resid_pre(1)])
    cache.save(tmp_path / "shared.safetensors")
    loaded = ActivationCache.load(tmp_path / "shared.safetensors")
    assert torch.equal(loaded[N.resid_post(0)], cache[N.resid_post(0)])
    assert torch.equal(loaded[N.resid_pre(1)], cache[N.resid_pre(1)])


def test_loaded_cache_without_probe_keeps_tensors_but_not_weight_methods(cache, tmp_path):
    path = tmp_path / "c.safetensors"
    cache.save(path)
    loaded = ActivationCache.load(path)
    assert torch.equal(loaded.accumulated_resid(), cache.accumulated_resid())
    assert loaded.tokens.prompts is None and torch.equal(loaded.tokens.ids, cache.tokens.ids)
    with pytest.raises(ValueError, match="probe"):
        loaded.head_results(0)


def test_load_refuses_other_safetensors_files(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a cache"):
        ActivationCache.load(path)


# -- read-only mapping -----------------------------------------------------------------
def test_cache_is_a_read_only_mapping(cache):
    assert isinstance(cache, Mapping)
    assert not hasattr(cache, "__setitem__") and not hasattr(cache, "__delitem__")
    with pytest.raises(TypeError):
        cache[N.EMBED] = torch.zeros(1)
    with pytest.raises(TypeError):
        del cache[N.EMBED]
    assert not hasattr(cache, "update") and not hasattr(cache, "pop")
    assert len(cache) == len(list(cache)) == 4 + 17 * LAYERS
    assert N.EMBED in cache and "nope" not in cache


def test_residual_views_name_what_is_missing(small_probe):
    ids = random_ids(SMALL, 1, 4, seed=3)
    _, partial = small_probe.run_with_cache(ids, names="blocks.*.hook_resid_pre")
    with pytest.raises(HookNameError, match="hook_resid_post.*was not captured"):
        partial.accumulated_resid()
    assert partial.accumulated_resid(2).shape == (3, 1, 4, SMALL.n_embd)
