"""Weights in TransformerLens's orientation: equal to the bridge's, and doing what their names say."""

from __future__ import annotations

import pytest
import torch
from einops import einsum

from gpt2probe import names as N

from models import assert_close, random_ids

NAMES = ["W_E", "W_pos", "W_U", "b_U", "W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O",
         "W_in", "b_in", "W_out", "b_out"]


def expected_shapes(spec) -> dict[str, tuple[int, ...]]:
    L, H, M, V = spec.n_layer, spec.n_head, spec.n_embd, spec.vocab_size
    D, F = M // H, 4 * M
    return {
        "W_E": (V, M), "W_pos": (spec.n_positions, M), "W_U": (M, V), "b_U": (V,),
        "W_Q": (L, H, M, D), "W_K": (L, H, M, D), "W_V": (L, H, M, D), "W_O": (L, H, D, M),
        "b_Q": (L, H, D), "b_K": (L, H, D), "b_V": (L, H, D), "b_O": (L, M),
        "W_in": (L, M, F), "b_in": (L, F), "W_out": (L, F, M), "b_out": (L, M),
    }


@pytest.mark.parametrize("attn", ["sdpa"])
@pytest.mark.parametrize("name", NAMES)
def test_weights_equal_transformer_lens(probe, bridge, spec, name):
    ours, theirs = getattr(probe, name), getattr(bridge, name)
    assert ours.shape == expected_shapes(spec)[name]
    assert torch.equal(ours, theirs.detach().to(ours.dtype)), name


@pytest.mark.parametrize("attn", ["sdpa"])
def test_unembedding_is_the_tied_embedding(probe):
    assert torch.equal(probe.W_U, probe.W_E.T)
    assert probe.W_U.data_ptr() == probe.W_E.data_ptr(), "W_U must be a view of W_E (tied), not a copy"
    assert probe.W_E.data_ptr() == probe.model.transformer.wte.weight.data_ptr()
    assert torch.equal(probe.b_U, torch.zeros(probe.cfg.d_vocab))
    assert not probe.W_Q.requires_grad and not probe.W_E.requires_grad


@pytest.mark.parametrize("attn", ["sdpa"])
def test_config_sizes(probe, spec):
    cfg = probe.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab, cfg.n_ctx) == (
        spec.n_layer, spec.n_embd, spec.n_head, spec.n_embd // spec.n_head, 4 * spec.n_embd,
        spec.vocab_size, spec.n_positions,
    )
    assert cfg.act_fn == "gelu_new" and cfg.dtype == torch.float32 and cfg.device == torch.device("cpu")


@pytest.mark.parametrize("attn", ["sdpa"])
def test_weights_map_the_captured_activations(probe, spec):
    """Each matrix, applied to a captured input, gives the captured output: orientation is right."""
    ids = random_ids(spec, 2, 7, seed=17)
    _, cache = probe.run_with_cache(ids)
    assert_close(cache[N.EMBED], probe.W_E[ids], 0)
    assert_close(cache[N.POS_EMBED], probe.W_pos[:7].expand(2, 7, -1), 0)
    for layer in range(spec.n_layer):
        blocks = probe.model.transformer.h[layer]
        ln1 = cache[N.ln_normalized(layer, 1)] * blocks.ln_1.weight + blocks.ln_1.bias
        for hook, W, b in ((N.q, probe.W_Q, probe.b_Q), (N.k, probe.W_K, probe.b_K), (N.v, probe.W_V, probe.b_V)):
            computed = einsum(ln1, W[layer], "b p m, h m d -> b p h d") + b[layer]
            assert_close(cache[hook(layer)], computed, 1e-5, hook(layer))
        attn_out = einsum(cache[N.z(layer)], probe.W_O[layer], "b p h d, h d m -> b p m") + probe.b_O[layer]
        assert_close(cache[N.attn_out(layer)], attn_out, 1e-5, "attn_out")
        ln2 = cache[N.ln_normalized(layer, 2)] * blocks.ln_2.weight + blocks.ln_2.bias
        assert_close(cache[N.mlp_pre(layer)], ln2 @ probe.W_in[layer] + probe.b_in[layer], 1e-5, "mlp_pre")
        mlp_out = cache[N.mlp_post(layer)] @ probe.W_out[layer] + probe.b_out[layer]
        assert_close(cache[N.mlp_out(layer)], mlp_out, 1e-5, "mlp_out")


@pytest.mark.parametrize("attn", ["sdpa"])
def test_w_o_layer_equals_the_stacked_w_o(probe, spec):
    for layer in range(spec.n_layer):
        assert torch.equal(probe.weights.W_O_layer(layer), probe.W_O[layer])


def _fresh_probe():
    import gpt2probe

    from models import SMALL, build_gpt2

    return gpt2probe.load(build_gpt2(SMALL), device="cpu")


def test_stacked_weights_are_reused_until_a_parameter_changes():
    probe = _fresh_probe()
    assert probe.W_Q is probe.W_Q and probe.b_O is probe.b_O and probe.W_in is probe.W_in  # not re-stacked
    before = probe.W_in.clone()
    with torch.no_grad():
        probe.model.transformer.h[1].mlp.c_fc.weight.mul_(2)  # an in-place edit
    assert torch.equal(probe.W_in[1], 2 * before[1]) and torch.equal(probe.W_in[0], before[0])
    with torch.no_grad():
        probe.model.transformer.h[0].attn.c_attn.bias.add_(1)
    assert torch.equal(probe.b_K[0], probe.model.transformer.h[0].attn.c_attn.bias.detach()[60:120].reshape(5, 12))
    probe.model.to(torch.float64)  # new storage
    assert probe.W_O.dtype == torch.float64 and probe.b_out.dtype == torch.float64


def test_cfg_follows_the_model_after_to():
    probe = _fresh_probe()
    assert probe.cfg.dtype == torch.float32 and probe.cfg.device.type == "cpu"
    probe.model.to(torch.float64)
    assert probe.cfg.dtype == torch.float64
    probe.model.to("meta")
    assert probe.cfg.device.type == "meta"
