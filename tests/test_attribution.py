"""Direct logit attribution: the parts sum to the model's logit and each equals a hand computation
from TransformerLens's cache on the same weights."""

from __future__ import annotations

import pytest
import torch
from einops import einsum

import gpt2probe
from gpt2probe import direct_logit_attribution
from gpt2probe.errors import PromptError

from reference import transformer_lens_bridge
from sharp_model import save_sharp_model

PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_sharp_model(tmp_path_factory.mktemp("dla_model"), seed=5)


@pytest.fixture(scope="module")
def probe(model_dir):
    return gpt2probe.load(model_dir)


@pytest.mark.parametrize("baseline", [None, " John"])
def test_parts_sum_to_the_models_logit(probe, baseline):
    attr = direct_logit_attribution(probe, PROMPT, " Mary", baseline=baseline)
    logits = probe(PROMPT)[0, -1].double()
    mary, john = probe.to_single_token(" Mary"), probe.to_single_token(" John")
    expected = logits[mary] - (logits[john] if baseline else 0)
    assert attr.total == pytest.approx(float(expected), abs=1e-4)
    assert float(attr.values.double().sum()) + attr.bias_term == pytest.approx(attr.total, abs=1e-4)
    assert attr.labels == ["embed", "pos_embed", "L0 attn", "L0 mlp", "L1 attn", "L1 mlp", "L2 attn", "L2 mlp"]
    attn = attr.values[2::2]
    torch.testing.assert_close(attn, attr.head_values.sum(-1) + attr.attn_bias, atol=1e-4, rtol=0)
    assert attr.values.abs().max() > 0.1  # the parts are not all negligible


def test_the_metric_label_writes_tokens_as_every_report(probe):
    from gpt2probe.report.attribution import attribution_bars

    attr = direct_logit_attribution(probe, PROMPT, "\n", baseline=" John")
    assert attr.metric_label == "logit(↵) - logit(␣John)"  # as the section heading and every axis write them
    title = attribution_bars(attr).layout.title.text
    assert "logit(↵) - logit(␣John)" in title and "\\n" not in title and "'" not in title


@torch.no_grad()
def test_heads_and_mlps_match_transformer_lens(probe, model_dir):
    TransformerBridge = transformer_lens_bridge()

    bridge = TransformerBridge.boot_transformers(str(model_dir), device="cpu")
    ids = probe.to_tokens(PROMPT).ids
    _, tl = bridge.run_with_cache(ids)
    position = 4
    attr = direct_logit_attribution(probe, PROMPT, " Mary", baseline=" the", position=position)
    direction = bridge.W_U[:, probe.to_single_token(" Mary")] - bridge.W_U[:, probe.to_single_token(" the")]
    ln_f = bridge.original_model.transformer.ln_f
    scale = tl["ln_final.hook_scale"][0, position]

    def by_hand(vectors):
        centered = vectors - vectors.mean(-1, keepdim=True)
        return (centered / scale * ln_f.weight) @ direction

    for layer in range(probe.cfg.n_layers):
        z = tl[f"blocks.{layer}.attn.hook_z"][0, position]  # [head, d_head]
        per_head = einsum(z, bridge.W_O[layer], "head d_head, head d_head d_model -> head d_model")
        torch.testing.assert_close(attr.head_values[layer], by_hand(per_head), atol=1e-4, rtol=1e-4)
        mlp = by_hand(tl[f"blocks.{layer}.hook_mlp_out"][0, position])
        assert float(attr.values[attr.labels.index(f"L{layer} mlp")]) == pytest.approx(float(mlp), abs=1e-4)
    embed = by_hand(tl["hook_embed"][0, position])
    assert float(attr.values[0]) == pytest.approx(float(embed), abs=1e-4)
    assert attr.bias_term == pytest.approx(float(ln_f.bias @ direction), abs=1e-5)
    assert attr.position == position and attr.position_token == probe.to_str_tokens(PROMPT)[position]


def test_bad_inputs(probe):
    with pytest.raises(PromptError, match="not one"):
        direct_logit_attribution(probe, PROMPT, " Mary Jane")
    with pytest.raises(PromptError, match="outside a prompt"):
        direct_logit_attribution(probe, PROMPT, " Mary", position=99)
    with pytest.raises(ValueError, match="one prompt"):
        direct_logit_attribution(probe, ["a b", "c d"], " Mary")
