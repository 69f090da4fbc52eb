"""The transformers seam: only layers whose scores or pattern are hooked leave the model's attention."""

from __future__ import annotations

import pytest
import torch

from gpt2probe import names as N
from gpt2probe.hooks import count_torch_hooks

from models import SMALL, random_ids


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
