"""``gpt2probe.load_saes`` / ``load_transcoders``: the coders that ship with a model, from a model directory."""

from __future__ import annotations

import shutil

import pytest
import torch

import gpt2probe
from gpt2probe import SAE, SAEConfig, Transcoder
from gpt2probe.errors import GPT2ProbeError, WeightsUnavailableError
from gpt2probe.sae import shipped


def _randomized(coder, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in coder.parameters():
            param.copy_(torch.randn(param.shape, generator=gen))
    return coder


@pytest.fixture
def model_dir(tmp_path):
    """A model directory with SAEs on two layers' residual stream (written out of order) and two transcoders."""
    root = tmp_path / "model"
    (root / "tuned-lens").mkdir(parents=True)
    coders = {}
    for seed, layer in enumerate((3, 0)):
        sae = _randomized(SAE(SAEConfig(d_in=6, d_sae=10, architecture="topk", k=2,
                                        hook_name=f"blocks.{layer}.hook_resid_post")), seed)
        sae.save(root / "saes" / sae.cfg.hook_name)
        coders[sae.cfg.hook_name] = sae
        # SAELens stores no top-k transcoder: the shipped ones are batch top-k (saved as JumpReLU with thresholds).
        tc = _randomized(Transcoder(SAEConfig.for_transcoder(layer, d_model=6, d_sae=10, architecture="batchtopk", k=2,
                                                            skip=True)), seed + 10)
        tc.save(root / "transcoders" / tc.cfg.hook_name_out)
        coders[layer] = tc
    return root, coders


def test_every_shipped_coder_loads_in_order(model_dir):
    root, coders = model_dir
    saes = gpt2probe.load_saes(root)
    assert list(saes) == ["blocks.0.hook_resid_post", "blocks.3.hook_resid_post"]
    assert gpt2probe.load_transcoders(root, dtype="float64")[3].dtype == torch.float64
    transcoders = gpt2probe.load_transcoders(root)
    assert list(transcoders) == [0, 3] and transcoders[3].cfg.skip
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    for name, sae in saes.items():
        assert isinstance(sae, SAE) and torch.equal(sae(x), coders[name](x))
    for layer, tc in transcoders.items():
        assert isinstance(tc, Transcoder) and tc.cfg.hook_name_out == f"blocks.{layer}.hook_mlp_out"
        assert torch.equal(tc(x), coders[layer](x))


def test_a_shipped_name_reads_the_package_assets(model_dir, monkeypatch):
    root, _ = model_dir
    monkeypatch.setattr(shipped, "shipped_model", lambda name: root)
    assert list(gpt2probe.load_saes("tiny-english")) == ["blocks.0.hook_resid_post", "blocks.3.hook_resid_post"]
    assert list(gpt2probe.load_transcoders("tiny-english")) == [0, 3]


def test_a_model_that_ships_none_says_what_it_ships(model_dir, monkeypatch):
    root, _ = model_dir
    shutil.rmtree(root / "saes")
    with pytest.raises(WeightsUnavailableError, match=r"ships no saes .* it ships: transcoders, tuned-lens\. .*"
                                                      r"train_tiny_english_saes\.py"):
        gpt2probe.load_saes(root)
    monkeypatch.setattr(shipped, "shipped_model", lambda name: root)
    with pytest.raises(WeightsUnavailableError, match="tiny-english ships no saes"):
        gpt2probe.load_saes("tiny-english")
    with pytest.raises(WeightsUnavailableError, match="neither a shipped model"):
        gpt2probe.load_transcoders(root / "nowhere")


def test_an_sae_among_the_transcoders_is_refused(model_dir):
    root, coders = model_dir
    coders["blocks.0.hook_resid_post"].save(root / "transcoders" / "stray")
    with pytest.raises(GPT2ProbeError, match="(?i)transcoder"):
        gpt2probe.load_transcoders(root)



def test_two_saes_for_one_hook_are_refused_not_one_dropped(model_dir):
    """load_saes is keyed by hook: a second folder for blocks.0 used to replace the first in the dict, silently."""
    root, coders = model_dir
    _randomized(SAE(coders["blocks.0.hook_resid_post"].cfg), 5).save(root / "saes" / "blocks.0.hook_resid_post-v2")
    with pytest.raises(GPT2ProbeError, match=r"two SAEs that read 'blocks.0.hook_resid_post' "
                                             r"\(blocks.0.hook_resid_post/ and blocks.0.hook_resid_post-v2/\)"):
        gpt2probe.load_saes(root)

def test_tiny_english_ships_an_sae_per_layer_and_a_transcoder_per_mlp_as_measured():
    """The real shipped coders: one per layer, fitting the model, and the metrics file is what they measure."""
    import json
    import pydoc_data.topics

    from gpt2probe.shipped import shipped_model

    probe = gpt2probe.load("tiny-english")
    n_layers = probe.cfg.n_layers
    saes = gpt2probe.load_saes("tiny-english")
    transcoders = gpt2probe.load_transcoders("tiny-english")
    assert list(saes) == [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]
    assert list(transcoders) == list(range(n_layers))
    for coder in [*saes.values(), *transcoders.values()]:
        assert coder.cfg.d_in == probe.cfg.d_model and coder.cfg.d_out == probe.cfg.d_model
        assert "gpt2probe_training" in coder.cfg.metadata  # the settings it was trained with
    directory = shipped_model("tiny-english")
    held_out = json.loads((directory / "training.json").read_text(encoding="utf-8"))["val_topics"]
    texts = [pydoc_data.topics.topics[name] for name in sorted(held_out)]
    recorded = json.loads((directory / "saes" / "metrics.json").read_text(encoding="utf-8"))["coders"]
    result = saes["blocks.2.hook_resid_post"].evaluate(probe, texts)
    for key in ("explained_variance", "ce_loss_clean", "ce_loss_spliced", "dead_fraction", "l0"):
        assert getattr(result, key) == pytest.approx(recorded["blocks.2.hook_resid_post"][key], abs=2e-3), key
