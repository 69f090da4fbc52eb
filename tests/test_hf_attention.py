"""The transformers seam: only layers whose scores or pattern are hooked leave the model's attention."""

from __future__ import annotations

import pytest
import torch

from gpt2probe import names as N
from gpt2probe.hooks import count_torch_hooks

from models import SMALL, random_ids, save_gpt2


def weights_returned(probe, ids, hooks) -> list[bool]:
    """For each layer: did its attention module return weights (eager math) or None (sdpa)?"""
    returned = {}
    handles = [
        block.attn.register_forward_hook(lambda m, a, out, l=l: returned.__setitem__(l, out[1] is not None))
        for l, block in enumerate(probe.model.transformer.h)
    ]
    try:
        probe.run_with_hooks(ids, hooks)
    finally:
        for handle in handles:
            handle.remove()
    return [returned[l] for l in range(len(handles))]


@pytest.mark.parametrize("hooked", [N.pattern(1), N.attn_scores(2)])
def test_only_the_hooked_layer_runs_the_eager_pattern_math(small_probe, hooked):
    ids = random_ids(SMALL, 2, 6, seed=1)
    layer = N.layer_of(hooked)
    assert weights_returned(small_probe, ids, {hooked: lambda x, hook: None}) == [l == layer for l in range(SMALL.n_layer)]
    assert small_probe.model.config._attn_implementation == "sdpa"
    assert weights_returned(small_probe, ids, {}) == [False] * SMALL.n_layer  # and back to sdpa everywhere


def test_a_hooked_layer_with_padding_gives_the_eager_models_pattern(small_probe, small_probe_eager):
    """sdpa's boolean (or absent) mask becomes eager's additive mask, exactly where eager would put it."""
    ids = random_ids(SMALL, 3, 7, seed=2)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[1, :1] = 0
    from gpt2probe.tokens import Tokens

    tokens = Tokens(ids, mask)
    names = [N.pattern(0), N.attn_scores(0), N.resid_post(2)]
    _, ours = small_probe.run_with_cache(tokens, names=names)
    _, eager = small_probe_eager.run_with_cache(tokens, names=names)
    for name in names[:2]:  # the hooked layer: every row, pad queries included, as eager computes them
        torch.testing.assert_close(ours[name], eager[name], rtol=1e-5, atol=1e-5)
    real = mask.bool()  # later layers run sdpa, which differs from eager only at pad positions (never read)
    torch.testing.assert_close(ours[names[2]][real], eager[names[2]][real], rtol=1e-5, atol=1e-5)
    assert count_torch_hooks(small_probe.model) == 0


def test_a_model_with_another_attention_implementation_is_refused_clearly(small_dir):
    import gpt2probe
    from gpt2probe.errors import UnsupportedError

    probe = gpt2probe.load(small_dir, device="cpu")
    probe.model.config._attn_implementation = "flex_attention"  # as if loaded with it
    with pytest.raises(UnsupportedError, match="flex_attention"):
        probe.run_with_cache(torch.tensor([[1, 2, 3]]), names=[N.pattern(0)])
    assert count_torch_hooks(probe.model) == 0


@pytest.mark.parametrize("flags,factor", [
    ({"scale_attn_by_inverse_layer_idx": True}, lambda layer, d_head: d_head**-0.5 / (layer + 1)),  # Mistral's GPT-2s
    ({"scale_attn_weights": False}, lambda layer, d_head: 1.0),
])
def test_configs_that_scale_scores_otherwise_keep_the_models_patterns(tmp_path, flags, factor):
    """Hooked patterns equal Hugging Face's own eager weights, and those are softmax(q . k * attention_scaling + mask)."""
    import gpt2probe
    from gpt2probe.errors import UnsupportedError
    from gpt2probe.model.attention import attention_scaling

    directory = save_gpt2(SMALL, tmp_path / "model", **flags)
    ids = random_ids(SMALL, 2, 6, seed=3)
    eager = gpt2probe.load(directory, device="cpu", attn_implementation="eager")
    with torch.no_grad():
        hf = eager.model(ids, output_attentions=True)
    names = [name for l in range(SMALL.n_layer) for name in (N.q(l), N.k(l), N.pattern(l))]
    logits, cache = eager.run_with_cache(ids, names=names)
    torch.testing.assert_close(logits, hf.logits, rtol=1e-5, atol=1e-5)  # hooking changes nothing
    d_head = SMALL.n_embd // SMALL.n_head
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    for l in range(SMALL.n_layer):
        scaling = attention_scaling(eager.model.transformer.h[l].attn)
        assert scaling == pytest.approx(factor(l, d_head), rel=1e-12)
        torch.testing.assert_close(cache[N.pattern(l)], hf.attentions[l], rtol=1e-5, atol=1e-6)
        scores = torch.einsum("bqhd,bkhd->bhqk", cache[N.q(l)], cache[N.k(l)]) * scaling
        by_hand = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        torch.testing.assert_close(by_hand, hf.attentions[l], rtol=1e-5, atol=1e-6)
    sdpa = gpt2probe.load(directory, device="cpu")
    if hasattr(sdpa.model.transformer.h[0].attn, "scaling"):  # transformers passes the scaling to sdpa too
        _, hooked = sdpa.run_with_cache(ids, names=[N.pattern(1)])
        torch.testing.assert_close(hooked[N.pattern(1)], hf.attentions[1], rtol=1e-5, atol=1e-6)
    else:  # transformers 5.0: its sdpa ignores the flags, so no hooked pattern can match the model
        with pytest.raises(UnsupportedError, match="attn_implementation='eager'"):
            sdpa.run_with_cache(ids, names=[N.pattern(1)])
        assert count_torch_hooks(sdpa.model) == 0


def test_scaling_by_layer_index_without_a_layer_index_is_an_error_not_a_type_error():
    """transformers 5.0's path (no ``scaling`` attribute): a bare attention module without ``layer_idx`` cannot be scaled."""
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

    from gpt2probe.errors import UnsupportedError
    from gpt2probe.model.attention import attention_scaling

    module = GPT2Attention(GPT2Config(n_embd=12, n_head=3), layer_idx=None)
    if hasattr(module, "scaling"):
        del module.scaling  # as in transformers 5.0, which computes the factor from the flags
    assert attention_scaling(module) == pytest.approx(4**-0.5, rel=1e-12)
    module.scale_attn_by_inverse_layer_idx = True
    with pytest.raises(UnsupportedError, match="layer_idx"):
        attention_scaling(module)
    module.layer_idx = 2
    assert attention_scaling(module) == pytest.approx(4**-0.5 / 3, rel=1e-12)
