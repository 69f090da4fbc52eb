"""Weights in TransformerLens's orientation: equal to the bridge's, and doing what their names say."""

from __future__ import annotations

import pytest
import torch
from einops import einsum

from gpt2probe import LayerIndexError
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


# -- every LayerNorm and each layer's scaling (the model seam) ----------------------------------
@pytest.mark.parametrize("attn", ["sdpa"])
def test_block_weights_are_the_modules_parameters(probe, spec):
    """``weights.block(l)`` and ``weights.ln_final`` read the model's own LayerNorms, scaling, ``b_O`` and MLP."""
    blocks = probe.model.transformer.h
    for layer, block in enumerate(blocks):
        got = probe.weights.block(layer)
        for ours, module in ((got.ln1, block.ln_1), (got.ln2, block.ln_2)):
            assert torch.equal(ours.weight, module.weight) and torch.equal(ours.bias, module.bias)
            assert ours.eps == module.eps and ours.weight.data_ptr() == module.weight.data_ptr()
        assert got.attention_scaling == pytest.approx((spec.n_embd // spec.n_head) ** -0.5)
        assert torch.equal(got.b_O, probe.b_O[layer]) and torch.equal(got.W_in, probe.W_in[layer])
        assert torch.equal(got.b_in, probe.b_in[layer]) and torch.equal(got.W_out, probe.W_out[layer])
        assert torch.equal(got.b_out, probe.b_out[layer])
    ln_f = probe.model.transformer.ln_f
    assert torch.equal(probe.weights.ln_final.weight, ln_f.weight) and probe.weights.ln_final.eps == ln_f.eps
    assert not probe.weights.ln_final.weight.requires_grad  # detached views
    with pytest.raises(LayerIndexError):
        probe.weights.block(spec.n_layer)


def test_attention_scaling_follows_the_config():
    from gpt2probe import load

    from models import SMALL, build_gpt2

    probe = load(build_gpt2(SMALL, scale_attn_by_inverse_layer_idx=True), device="cpu")
    d_head = SMALL.n_embd // SMALL.n_head
    for layer in range(SMALL.n_layer):
        assert probe.weights.block(layer).attention_scaling == pytest.approx(d_head**-0.5 / (layer + 1))


def test_layer_norm_matches_torch_and_the_hand_formulas():
    from gpt2probe.model.layernorm import LayerNorm

    gen = torch.Generator().manual_seed(5)
    module = torch.nn.LayerNorm(11, eps=1e-3, dtype=torch.float64)
    with torch.no_grad():
        module.weight.add_(0.3 * torch.randn(11, generator=gen, dtype=torch.float64))
        module.bias.add_(0.3 * torch.randn(11, generator=gen, dtype=torch.float64))
    ln = LayerNorm.of(module)
    x = 40 * torch.randn(3, 5, 11, generator=gen, dtype=torch.float64) + 7
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    scale = (var + 1e-3).sqrt()
    assert_close(ln(x), module(x), 1e-12)
    assert_close(ln.center_and_scale(x)[1], scale, 1e-12)
    assert_close(ln.normalize(x), (x - mean) / scale, 1e-12)
    assert_close(ln.affine(ln.normalize(x)), module(x), 1e-12)
    other = x + torch.randn(3, 5, 11, generator=gen, dtype=torch.float64)
    assert_close(ln.frozen(other, scale), (other - other.mean(-1, keepdim=True)) / scale * module.weight, 1e-12)
    # the frozen map is linear: the pieces of a stream sum to LN(stream) - bias
    pieces = torch.stack([x - other, other])
    assert_close(ln.frozen(pieces, scale).sum(0), module(x) - module.bias, 1e-10)
    # the backward is autograd's vector-Jacobian product
    grad = torch.randn(3, 5, 11, generator=gen, dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(module(leaf), leaf, grad)
    assert_close(ln.backward(grad, x), expected, 1e-10)
    assert ln.detach().weight.requires_grad is False and ln.to(dtype=torch.float32).bias.dtype == torch.float32


def test_frozen_layernorm_transposes_are_the_adjoints_autograd_finds():
    """``frozen_transpose`` and ``frozen_normalize_transpose`` equal the vector-Jacobian products of their maps."""
    from gpt2probe.model.layernorm import LayerNorm, frozen_normalize_transpose

    gen = torch.Generator().manual_seed(0)
    ln = LayerNorm(1 + 0.3 * torch.randn(16, generator=gen, dtype=torch.float64),
                   0.2 * torch.randn(16, generator=gen, dtype=torch.float64), 1e-5)
    x = torch.randn(3, 5, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    scale = 0.5 + torch.rand(3, 5, 1, generator=gen, dtype=torch.float64)
    grad = torch.randn(3, 5, 16, generator=gen, dtype=torch.float64)
    (expected,) = torch.autograd.grad(ln.frozen(x, scale), x, grad)
    assert_close(ln.frozen_transpose(grad, scale), expected, tol=1e-12)
    (expected,) = torch.autograd.grad((x - x.mean(-1, keepdim=True)) / scale, x, grad)
    assert_close(frozen_normalize_transpose(grad, scale), expected, tol=1e-12)
