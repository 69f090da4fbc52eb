"""One hook-kind taxonomy (names.py): every hook has one kind, and the kind says its shape."""

from __future__ import annotations

import torch

from gpt2probe import names as N

KINDS = {
    "residual stream": N.is_residual_stream,
    "attention map": N.is_attention_map,
    "per head": N.is_per_head,
    "mlp": N.is_mlp,
    "normalized": lambda name: name.endswith(N.NORMALIZED),
    "scale": lambda name: name.endswith("hook_scale"),
}


def test_every_hook_has_exactly_one_kind():
    for name in N.all_names(3):
        kinds = [kind for kind, is_kind in KINDS.items() if is_kind(name)]
        assert len(kinds) == 1, (name, kinds)
    assert N.is_residual_width(N.LN_FINAL_NORMALIZED) and N.is_residual_width(N.resid_mid(1))
    assert not N.is_residual_stream(N.LN_FINAL_NORMALIZED) and not N.is_residual_width(N.z(0))


def test_each_kind_has_its_shape(small_probe_eager):
    """Checked on a real run, so that a name put in the wrong kind fails."""
    probe = small_probe_eager
    cfg = probe.cfg
    batch, n_pos = 2, 7
    ids = torch.randint(0, cfg.d_vocab, (batch, n_pos), generator=torch.Generator().manual_seed(0))
    _, cache = probe.run_with_cache(ids, names=N.all_names(cfg.n_layers))
    assert set(cache.keys()) == set(N.all_names(cfg.n_layers))
    for name, t in cache.items():
        shape = tuple(t.shape)
        if N.is_residual_width(name):
            assert shape == (batch, n_pos, cfg.d_model), name
        elif N.is_attention_map(name):
            assert shape == (batch, cfg.n_heads, n_pos, n_pos), name
        elif N.is_per_head(name):
            assert shape == (batch, n_pos, cfg.n_heads, cfg.d_head), name
        elif N.is_mlp(name):
            assert shape == (batch, n_pos, cfg.d_mlp), name
        else:
            assert name.endswith("hook_scale") and shape == (batch, n_pos, 1), (name, shape)
