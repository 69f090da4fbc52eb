"""Hooks never leak, and every intervention does exactly what a hand computation says.

These tests use probes of their own (not the session ones), and after every test a guard
checks that no PyTorch hook is left on the model, that its attention implementation is
what it was, and that its logits are bit-identical to those before the first test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import einsum

import gpt2probe
from gpt2probe import HookNameError
from gpt2probe import names as N
from gpt2probe.hooks import count_torch_hooks

from models import SMALL, assert_close, max_diff, random_ids

POS = 9
IDS = random_ids(SMALL, 2, POS, seed=101)
OTHER = random_ids(SMALL, 2, POS, seed=202)
LAST = SMALL.n_layer - 1
# Attention-independent interventions run on the sdpa probe only; the rest run on both.
SDPA_ONLY = pytest.mark.parametrize("fresh", ["sdpa"], indirect=True)


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def fresh(request, small_dir):
    """A probe of its own, with its logits before any test, for the guard."""
    probe = gpt2probe.load(small_dir, device="cpu", attn_implementation=request.param)
    assert count_torch_hooks(probe.model) == 0
    return probe, request.param, probe(IDS).clone()


@pytest.fixture
def probe(fresh):
    probe, attn, baseline = fresh
    yield probe
    assert count_torch_hooks(probe.model) == 0, "hooks left attached"
    assert probe.model.config._attn_implementation == attn
    assert torch.equal(probe(IDS), baseline), "the model's logits changed"


def boom(tensor, hook):
    raise RuntimeError(f"boom in {hook.name}")


def nothing(tensor, hook):
    return None


def n_hooks(probe) -> int:
    return count_torch_hooks(probe.model)


# -- clean-up ------------------------------------------------------------------------
def test_count_is_zero_before_positive_inside_zero_after(probe):
    assert n_hooks(probe) == 0
    with probe.hooks({N.resid_pre(1): nothing, N.pattern(0): nothing}):
        assert n_hooks(probe) > 0
        probe(IDS)
    assert n_hooks(probe) == 0
    probe.run_with_cache(IDS)
    assert n_hooks(probe) == 0


def test_body_that_raises_leaves_nothing(probe):
    with pytest.raises(KeyboardInterrupt):
        with probe.hooks({N.resid_post(0): nothing, N.attn_scores(2): nothing, N.LN_FINAL_SCALE: nothing}):
            assert n_hooks(probe) > 0
            raise KeyboardInterrupt


@pytest.mark.parametrize("name", [N.EMBED, N.q(1), N.pattern(2), N.z(0), N.resid_mid(1), N.ln_scale(2, 2), N.mlp_post(0)])
def test_hook_fn_raising_in_run_with_hooks_leaves_nothing(probe, name):
    with pytest.raises(RuntimeError, match=f"boom in {name}"):
        probe.run_with_hooks(IDS, [(N.resid_pre(0), nothing), (name, boom)])


def test_hook_fn_raising_in_run_with_cache_leaves_nothing(probe):
    with probe.hooks({N.resid_pre(0): nothing}):
        outer = n_hooks(probe)
        with probe.hooks({N.mlp_out(1): boom}):
            with pytest.raises(RuntimeError, match="boom"):
                probe.run_with_cache(IDS)  # every capture hook is attached when the error comes
        assert n_hooks(probe) == outer
    with pytest.raises(RuntimeError, match="boom"):
        with probe.hooks([(N.pattern(1), boom)]):
            probe.run_with_cache(IDS, names="blocks.*.attn.hook_pattern")


@pytest.mark.parametrize("bad", ["blocks.0.hook_nope", "blocks.3.hook_resid_pre", "hook_embeds"])
def test_unknown_name_raises_before_anything_is_registered(probe, bad, monkeypatch):
    registered = []
    for method in ("register_forward_hook", "register_forward_pre_hook"):
        original = getattr(torch.nn.Module, method)

        def spy(self, *args, _original=original, **kwargs):
            registered.append(type(self).__name__)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.nn.Module, method, spy)
    called = []

    def record(tensor, hook):
        called.append(hook.name)

    # The valid names come first: a registry that attached as it went would leak them.
    valid = [(N.resid_pre(0), record), (N.pattern(1), record), (N.q(2), record)]
    with pytest.raises(HookNameError, match="nearest valid names"):
        with probe.hooks([*valid, (bad, record)]):
            pass
    with pytest.raises(HookNameError):
        probe.run_with_hooks(IDS, [*valid, (bad, record)])
    with pytest.raises(HookNameError):
        probe.run_with_cache(IDS, names=[N.resid_pre(0), N.pattern(1), bad])
    assert registered == []
    assert n_hooks(probe) == 0
    probe(IDS)
    assert called == []


def test_nested_contexts_count_up_then_down(probe):
    assert n_hooks(probe) == 0
    with probe.hooks({N.resid_pre(0): nothing}):
        one = n_hooks(probe)
        assert one > 0
        with probe.hooks({N.mlp_out(1): nothing}):
            two = n_hooks(probe)
            assert two > one
            with probe.hooks({N.resid_pre(0): nothing}):  # a second fn on a site already hooked
                assert n_hooks(probe) == two
            assert n_hooks(probe) == two
        assert n_hooks(probe) == one
    assert n_hooks(probe) == 0


@SDPA_ONLY
def test_inner_exit_keeps_outer_function_on_the_same_name(probe):
    seen = []
    with probe.hooks({N.resid_pre(1): lambda t, hook: seen.append("outer")}):
        with probe.hooks({N.resid_pre(1): lambda t, hook: seen.append("inner")}):
            probe(IDS)
        assert seen == ["outer", "inner"]
        probe(IDS)
        assert seen == ["outer", "inner", "outer"]


def test_nested_pattern_hooks_restore_attention_only_at_the_end(probe, fresh):
    attn = fresh[1]
    seen = []
    with probe.hooks({N.pattern(0): lambda t, hook: seen.append(hook.name)}):
        with probe.hooks({N.pattern(2): lambda t, hook: seen.append(hook.name)}):
            probe(IDS)
        probe(IDS)
    assert probe.model.config._attn_implementation == attn
    assert seen == [N.pattern(0), N.pattern(2), N.pattern(0)]


@SDPA_ONLY
def test_several_functions_on_one_name_compose_in_order(probe):
    seen = []

    def add_one(t, hook):
        return t + 1

    def record(t, hook):
        seen.append(t.clone())

    _, clean = probe.run_with_cache(IDS, names=[N.resid_pre(1)])
    probe.run_with_hooks(IDS, [(N.resid_pre(1), add_one), (N.resid_pre(1), record)])
    assert_close(seen[0], clean[N.resid_pre(1)] + 1, 1e-6)


@SDPA_ONLY
def test_hook_point_tells_name_and_layer(probe):
    points = []
    probe.run_with_hooks(IDS, [(n, lambda t, hook: points.append(hook)) for n in (N.EMBED, N.k(2), N.LN_FINAL_SCALE)])
    assert [(p.name, p.layer) for p in points] == [(N.EMBED, None), (N.k(2), 2), (N.LN_FINAL_SCALE, None)]


@pytest.mark.parametrize("name", [N.resid_pre(1), N.q(0), N.z(2), N.pattern(1), N.ln_scale(0, 1), N.resid_mid(2)])
def test_wrong_shape_raises_naming_hook_and_shapes(probe, name):
    shapes = {}

    def shrink(t, hook):
        shapes["activation"] = tuple(t.shape)
        return t[..., :-1]

    with pytest.raises(ValueError) as info:
        probe.run_with_hooks(IDS, {name: shrink})
    message = str(info.value)
    activation = shapes["activation"]
    assert name in message
    assert str(activation) in message
    assert str((*activation[:-1], activation[-1] - 1)) in message


@SDPA_ONLY
def test_non_tensor_return_is_refused(probe):
    with pytest.raises(ValueError, match="hook_resid_post"):
        probe.run_with_hooks(IDS, {N.resid_post(0): lambda t, hook: t.tolist()})


# -- interventions ---------------------------------------------------------------------
@SDPA_ONLY
@pytest.mark.parametrize("layer,head", [(0, 0), (1, 3), (2, 4)])
def test_zero_ablating_a_head_subtracts_its_result(probe, layer, head):
    _, clean = probe.run_with_cache(IDS, names=[N.z(layer), N.attn_out(layer)])
    captured = {}

    def zero_head(z, hook):
        assert hook.layer == layer
        z = z.clone()
        z[:, :, head] = 0
        return z

    def keep(t, hook):
        captured[hook.name] = t.clone()

    logits = probe.run_with_hooks(IDS, [(N.z(layer), zero_head), (N.attn_out(layer), keep)])
    head_result = clean[N.z(layer)][:, :, head] @ probe.W_O[layer, head]
    assert_close(captured[N.attn_out(layer)], clean[N.attn_out(layer)] - head_result, 1e-5)
    assert max_diff(logits, probe(IDS)) > 1e-3


@SDPA_ONLY
@pytest.mark.parametrize("layer", range(SMALL.n_layer))
def test_patching_resid_pre_reproduces_the_other_run(probe, layer):
    other_logits, other = probe.run_with_cache(OTHER, names=[N.resid_pre(layer), N.mlp_out(LAST)])
    assert max_diff(other_logits, probe(IDS)) > 1e-2
    with probe.hooks({N.resid_pre(layer): lambda t, hook: other[N.resid_pre(layer)]}):
        logits, patched = probe.run_with_cache(IDS, names=[N.mlp_out(LAST)])
    assert_close(logits, other_logits, 1e-5)
    assert_close(patched[N.mlp_out(LAST)], other[N.mlp_out(LAST)], 1e-5)


@SDPA_ONLY
def test_patching_resid_mid_reproduces_the_other_run(probe):
    layer = 1
    other_logits, other = probe.run_with_cache(OTHER, names=[N.resid_mid(layer), N.mlp_out(layer)])
    with probe.hooks({N.resid_mid(layer): lambda t, hook: other[N.resid_mid(layer)]}):
        logits, patched = probe.run_with_cache(IDS, names=[N.resid_mid(layer), N.mlp_out(layer)])
    assert_close(patched[N.resid_mid(layer)], other[N.resid_mid(layer)], 0)
    assert_close(patched[N.mlp_out(layer)], other[N.mlp_out(layer)], 1e-5)
    assert_close(logits, other_logits, 1e-5)


@SDPA_ONLY
def test_editing_resid_mid_feeds_the_mlp(probe):
    layer = 0
    delta = torch.randn(SMALL.n_embd, generator=torch.Generator().manual_seed(1))
    _, clean = probe.run_with_cache(IDS, names=[N.resid_mid(layer)])
    with probe.hooks({N.resid_mid(layer): lambda t, hook: t + delta}):
        _, edited = probe.run_with_cache(IDS, names=[N.resid_mid(layer), N.resid_post(layer)])
    x = clean[N.resid_mid(layer)] + delta
    block = probe.model.transformer.h[layer]
    with torch.no_grad():
        expected_post = x + block.mlp(block.ln_2(x))
    assert_close(edited[N.resid_mid(layer)], x, 1e-6)
    assert_close(edited[N.resid_post(layer)], expected_post, 1e-5)


def test_uniform_pattern_averages_the_values(probe):
    layer = 1

    def uniform(pattern, hook):
        q, k = pattern.shape[-2:]
        causal = torch.tril(torch.ones(q, k))
        return (causal / causal.sum(-1, keepdim=True)).expand_as(pattern)

    with probe.hooks({N.pattern(layer): uniform}):
        _, cache = probe.run_with_cache(IDS, names=[N.v(layer), N.pattern(layer), N.z(layer)])
    v = cache[N.v(layer)]
    running_mean = v.cumsum(1) / torch.arange(1, POS + 1)[None, :, None, None]
    assert_close(cache[N.z(layer)], running_mean, 1e-5)
    assert_close(cache[N.pattern(layer)][0, 0, 2], torch.tensor([1 / 3] * 3 + [0.0] * (POS - 3)), 1e-6)


def test_patched_pattern_mixes_this_runs_values(probe):
    layer = 2
    _, other = probe.run_with_cache(OTHER, names=[N.pattern(layer)])
    _, clean = probe.run_with_cache(IDS, names=[N.z(layer)])
    with probe.hooks({N.pattern(layer): lambda t, hook: other[N.pattern(layer)]}):
        _, cache = probe.run_with_cache(IDS, names=[N.v(layer), N.z(layer)])
    expected = einsum(other[N.pattern(layer)], cache[N.v(layer)], "b h q k, b k h d -> b q h d")
    assert_close(cache[N.z(layer)], expected, 1e-5)
    assert max_diff(cache[N.z(layer)], clean[N.z(layer)]) > 1e-2


def test_attn_scores_edit_is_softmaxed(probe):
    layer = 0
    bias = torch.zeros(POS)
    bias[0] = 50.0  # every query attends (almost) only to the first key

    with probe.hooks({N.attn_scores(layer): lambda t, hook: t + bias}):
        _, cache = probe.run_with_cache(IDS, names=[N.v(layer), N.pattern(layer), N.z(layer)])
    pattern = cache[N.pattern(layer)]
    assert (pattern[..., 0] > 0.999).all()
    expected = cache[N.v(layer)][:, :1].expand_as(cache[N.z(layer)])
    assert_close(cache[N.z(layer)], expected, 1e-3)


def manual_ln(x: torch.Tensor, ln: torch.nn.LayerNorm, scale_factor: float = 1.0) -> torch.Tensor:
    centered = x - x.mean(-1, keepdim=True)
    scale = (centered.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt()
    return centered / (scale * scale_factor) * ln.weight + ln.bias


@SDPA_ONLY
def test_ln1_scale_edit_reaches_the_queries(probe):
    layer = 1
    with probe.hooks({N.ln_scale(layer, 1): lambda s, hook: s * 2}):
        _, cache = probe.run_with_cache(IDS, names=[N.resid_pre(layer), N.q(layer)])
    ln_out = manual_ln(cache[N.resid_pre(layer)], probe.model.transformer.h[layer].ln_1, 2.0)
    expected = einsum(ln_out, probe.W_Q[layer], "b p m, h m d -> b p h d") + probe.b_Q[layer]
    assert_close(cache[N.q(layer)], expected, 1e-5)


@SDPA_ONLY
def test_ln_final_scale_edit_reaches_the_logits(probe):
    with probe.hooks({N.LN_FINAL_SCALE: lambda s, hook: torch.ones_like(s)}):
        logits, cache = probe.run_with_cache(IDS, names=[N.resid_post(LAST)])
    ln_f = probe.model.transformer.ln_f
    x = cache[N.resid_post(LAST)]
    expected = ((x - x.mean(-1, keepdim=True)) * ln_f.weight + ln_f.bias) @ probe.W_U
    assert_close(logits, expected, 1e-4)


@SDPA_ONLY
def test_ln2_normalized_edit_reaches_the_mlp(probe):
    layer = 2
    with probe.hooks({N.ln_normalized(layer, 2): lambda t, hook: torch.zeros_like(t)}):
        _, cache = probe.run_with_cache(IDS, names=[N.mlp_out(layer)])
    block = probe.model.transformer.h[layer]
    with torch.no_grad():
        expected = block.mlp(block.ln_2.bias.expand(2, POS, -1))
    assert_close(cache[N.mlp_out(layer)], expected, 1e-5)


def test_zero_query_makes_a_head_attend_uniformly(probe):
    layer, head = 1, 2
    _, clean = probe.run_with_cache(IDS, names=[N.pattern(layer)])

    def zero_query(q, hook):
        q = q.clone()
        q[:, :, head] = 0
        return q

    with probe.hooks({N.q(layer): zero_query}):
        _, cache = probe.run_with_cache(IDS, names=[N.pattern(layer)])
    causal = torch.tril(torch.ones(POS, POS))
    uniform = (causal / causal.sum(-1, keepdim=True)).expand(2, POS, POS)
    pattern = cache[N.pattern(layer)]
    assert_close(pattern[:, head], uniform, 1e-6)
    others = [h for h in range(SMALL.n_head) if h != head]
    assert_close(pattern[:, others], clean[N.pattern(layer)][:, others], 1e-6)


@SDPA_ONLY
def test_scaling_values_scales_z(probe):
    layer = 0
    _, clean = probe.run_with_cache(IDS, names=[N.z(layer)])
    with probe.hooks({N.v(layer): lambda v, hook: 3 * v}):
        _, cache = probe.run_with_cache(IDS, names=[N.z(layer)])
    assert_close(cache[N.z(layer)], 3 * clean[N.z(layer)], 1e-5)


@SDPA_ONLY
def test_mlp_post_edit_is_projected_by_w_out(probe):
    layer = 1
    neuron = 17
    _, clean = probe.run_with_cache(IDS, names=[N.mlp_out(layer), N.mlp_post(layer)])

    def kill(post, hook):
        post = post.clone()
        post[..., neuron] = 0
        return post

    with probe.hooks({N.mlp_post(layer): kill}):
        _, cache = probe.run_with_cache(IDS, names=[N.mlp_out(layer)])
    removed = clean[N.mlp_post(layer)][..., neuron, None] * probe.W_out[layer, neuron]
    assert_close(cache[N.mlp_out(layer)], clean[N.mlp_out(layer)] - removed, 1e-5)


@SDPA_ONLY
def test_embed_edit_changes_the_stream(probe):
    _, clean = probe.run_with_cache(IDS, names=[N.resid_pre(0)])
    with probe.hooks({N.POS_EMBED: lambda t, hook: torch.zeros_like(t)}):
        _, cache = probe.run_with_cache(IDS, names=[N.resid_pre(0), N.EMBED])
    assert_close(cache[N.resid_pre(0)], cache[N.EMBED], 1e-6)
    assert_close(cache[N.EMBED], probe.W_E[IDS], 0)
    assert max_diff(clean[N.resid_pre(0)], cache[N.resid_pre(0)]) > 1e-2


@SDPA_ONLY
def test_gelu_new_is_what_mlp_post_holds(probe):
    """Sanity check of the MLP hooks' semantics: post = gelu_new(pre)."""
    _, cache = probe.run_with_cache(IDS, names=[N.mlp_pre(0), N.mlp_post(0)])
    assert_close(cache[N.mlp_post(0)], F.gelu(cache[N.mlp_pre(0)], approximate="tanh"), 1e-5)


@pytest.mark.parametrize(
    "bad, expected_words",
    [
        (lambda x: x.double(), ["torch.float64", "torch.float32"]),
        (lambda x: x.to("meta"), ["meta", "cpu"]),
        (lambda x: x[..., :-1], ["shape"]),
        (lambda x: x.tolist(), ["list"]),
    ],
)
@pytest.mark.parametrize("name", ["hook_embed", "blocks.0.hook_resid_mid", "blocks.1.attn.hook_q",
                                  "blocks.0.attn.hook_pattern", "ln_final.hook_scale", "blocks.2.hook_resid_post"])
def test_a_replacement_of_the_wrong_dtype_device_or_shape_is_refused_by_name(small_probe, name, bad, expected_words):
    from gpt2probe.errors import GPT2ProbeError, HookReturnError

    ids = torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(HookReturnError) as caught:
        small_probe.run_with_hooks(ids, {name: lambda x, hook: bad(x)})
    assert isinstance(caught.value, (GPT2ProbeError, ValueError, TypeError))
    message = str(caught.value)
    assert name in message and all(word in message for word in expected_words), message
    assert count_torch_hooks(small_probe.model) == 0
