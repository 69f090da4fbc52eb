"""probe.to_transformer_lens(): a TransformerLens bridge over the probe's own weights, both still working."""

from __future__ import annotations

import sys

import pytest
import torch

import gpt2probe
from gpt2probe.interop import MissingExtraError, twin

from reference import transformer_lens_bridge

PATTERN = "blocks.1.attn.hook_pattern"


@pytest.fixture(scope="module")
def pair(small_dir):
    """A probe of its own and its bridge."""
    transformer_lens_bridge()
    probe = gpt2probe.load(small_dir, device="cpu")
    ids = torch.tensor([[5, 17, 3, 99, 42, 8, 23]])
    logits, cache = probe.run_with_cache(ids, names=[PATTERN])
    bridge = probe.to_transformer_lens()
    return probe, bridge, ids, logits, cache[PATTERN]


def _storages(tensors) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors}


def test_bridge_shares_every_weight_with_the_probe(pair):
    probe, bridge, *_ = pair
    assert isinstance(bridge, transformer_lens_bridge())
    probe_params = {p.data_ptr() for p in probe.model.parameters()}
    bridge_params = {p.data_ptr() for p in bridge.parameters()}
    assert probe_params <= bridge_params  # the very tensors, not copies
    # The bridge's split q/k/v weights are views into the probe's c_attn: same storage.
    assert _storages(bridge.parameters()) == _storages(probe.model.parameters())


def test_bridge_gives_the_probes_logits_and_pattern(pair):
    probe, bridge, ids, logits, pattern = pair
    torch.testing.assert_close(bridge(ids), logits, atol=1e-4, rtol=1e-4)
    _, cache = bridge.run_with_cache(ids)
    torch.testing.assert_close(cache[PATTERN], pattern, atol=1e-5, rtol=1e-5)


def test_probe_keeps_working_after_the_bridge_is_made(pair):
    """TransformerBridge rewires the model it is given: it must not be the probe's module tree."""
    probe, bridge, ids, logits, pattern = pair
    assert type(probe.model.transformer.h[0].attn).__module__.startswith("transformers.")
    again, cache = probe.run_with_cache(ids, names=[PATTERN])
    torch.testing.assert_close(again, logits, atol=0, rtol=0)
    torch.testing.assert_close(cache[PATTERN], pattern, atol=0, rtol=0)


def test_an_in_place_weight_edit_is_seen_by_both(small_dir):
    transformer_lens_bridge()
    probe = gpt2probe.load(small_dir, device="cpu")
    bridge = probe.to_transformer_lens()
    ids = torch.tensor([[5, 17, 3, 99]])
    before = probe(ids)
    with torch.no_grad():
        probe.model.transformer.h[0].attn.c_attn.bias.add_(0.5)  # q, k and v biases at once
        probe.model.transformer.ln_f.bias.sub_(0.25)
    after = probe(ids)
    assert (after - before).abs().max() > 1e-2
    torch.testing.assert_close(bridge(ids), after, atol=1e-4, rtol=1e-4)


def test_twin_keeps_modules_and_config_apart(small_probe):
    copy = twin(small_probe.model)
    assert copy is not small_probe.model and copy.config is not small_probe.model.config
    assert copy.transformer.h[0].attn.config is copy.config
    assert copy.lm_head.weight is small_probe.model.transformer.wte.weight  # tied, and shared
    with small_probe.hooks({"blocks.0.hook_resid_pre": lambda x, hook: x}):
        hooked = small_probe.model.transformer.h[0]
        assert hooked._forward_pre_hooks or hooked._forward_hooks  # the probe's hook is there...
        twin_block = twin(small_probe.model).transformer.h[0]
        assert not twin_block._forward_pre_hooks and not twin_block._forward_hooks  # ...and not on the twin


def test_missing_extra_names_the_install_command(small_probe, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, "transformer_lens.model_bridge", raising=False)
    with pytest.raises(MissingExtraError, match=r"gpt2probe\[transformer-lens\]") as error:
        small_probe.to_transformer_lens()
    assert isinstance(error.value, ImportError) and isinstance(error.value, gpt2probe.GPT2ProbeError)
