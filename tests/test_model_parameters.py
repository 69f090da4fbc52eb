"""HF's parameter names, known in one place: ``gpt2probe.model.parameters``.

Fine-tuning selects components by name (``blocks.2.mlp``) and records them in
``finetune.json``; checkpoint checks compare a file's keys with the model's. Both used to
spell HF's parameter names themselves; the names now come from the model seam, and these
tests hold the mapping to the model's real parameters and to the diffing's component names.
"""

from __future__ import annotations

import re

from transformers import GPT2Config, GPT2LMHeadModel

from gpt2probe.diffing.components import component_names
from gpt2probe.model.parameters import TIED_UNEMBED, component_path, is_mask_buffer, model_keys

N_LAYER, N_HEAD = 3, 2


def tiny_model() -> GPT2LMHeadModel:
    config = GPT2Config(n_layer=N_LAYER, n_embd=6, n_head=N_HEAD, n_positions=7, vocab_size=11)
    assert (config.n_layer, config.n_head) == (N_LAYER, N_HEAD)
    return GPT2LMHeadModel(config)


def test_every_parameter_has_a_component_path_of_its_own():
    names = [name for name, _ in tiny_model().named_parameters(remove_duplicate=False)]
    paths = [component_path(name) for name in names]
    assert len(set(paths)) == len(names)  # no two parameters share a path
    component = re.compile(r"(embed|pos_embed|ln_final|unembed|blocks\.\d+\.(ln1|attn|ln2|mlp))\.")
    assert all(component.match(path) for path in paths), [p for p in paths if not component.match(p)]
    # the components are the diffing's (attention heads there are finer: blocks.{l}.attn.{h})
    components = set(component_names(N_LAYER, N_HEAD)) | {f"blocks.{layer}.attn" for layer in range(N_LAYER)}
    assert {component.match(path).group(1) for path in paths} - {"unembed"} == {
        c for c in components if not re.fullmatch(r"blocks\.\d+\.attn\.(\d+|b_O)", c)}


def test_known_names():
    assert component_path("transformer.h.2.mlp.c_fc.weight") == "blocks.2.mlp.c_fc.weight"
    assert component_path("transformer.h.10.ln_1.bias") == "blocks.10.ln1.bias"
    assert component_path("transformer.h.0.ln_2.weight") == "blocks.0.ln2.weight"
    assert component_path("transformer.h.1.attn.c_attn.weight") == "blocks.1.attn.c_attn.weight"
    assert component_path("transformer.wte.weight") == "embed.weight"
    assert component_path("transformer.wpe.weight") == "pos_embed.weight"
    assert component_path("transformer.ln_f.bias") == "ln_final.bias"
    assert component_path(TIED_UNEMBED) == "unembed.weight"
    assert component_path("something.else") == "something.else"


def test_checkpoint_keys_map_to_the_models():
    model = set(tiny_model().state_dict())
    assert TIED_UNEMBED in model
    openai_style = [key.removeprefix("transformer.") for key in model]  # OpenAI's files: h.0..., wte...
    assert set(model_keys(openai_style).values()) == model
    assert model_keys(model) == {key: key for key in model}
    assert is_mask_buffer("h.0.attn.bias") and is_mask_buffer("transformer.h.3.attn.masked_bias")
    assert not is_mask_buffer("transformer.h.0.attn.c_attn.bias")
