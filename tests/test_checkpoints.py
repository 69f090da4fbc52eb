"""Checkpoints whose files do not match their config.json are refused, naming the file and the keys.

Hugging Face would load them with randomly initialised tensors and a report on stderr.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import gpt2probe
from gpt2probe import CheckpointError, GPT2ProbeError, WeightsUnavailableError

from models import SMALL, assert_close, build_gpt2, random_ids, save_gpt2

IDS = random_ids(SMALL, 1, 5, seed=3)


@pytest.fixture
def ckpt(small_dir, tmp_path):
    """A private copy of the session's small checkpoint, to damage."""
    target = tmp_path / "ckpt"
    shutil.copytree(small_dir, target)
    return target


def _edit_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _edit_tensors(directory, edit):
    path = directory / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_a_good_checkpoint_still_loads(ckpt, small_probe):
    assert_close(gpt2probe.load(ckpt, device="cpu")(IDS), small_probe(IDS), 0)


def test_config_with_more_layers_than_the_weights(ckpt):
    _edit_config(ckpt, n_layer=SMALL.n_layer + 1)
    with pytest.raises(CheckpointError, match=r"missing.*transformer\.h\.3\.attn\.c_attn\.bias") as info:
        gpt2probe.load(ckpt, device="cpu")
    assert str(ckpt) in str(info.value) and isinstance(info.value, ValueError)


def test_config_with_fewer_layers_than_the_weights(ckpt):
    _edit_config(ckpt, n_layer=SMALL.n_layer - 1)
    with pytest.raises(CheckpointError, match=r"GPT-2 does not have.*transformer\.h\.2\."):
        gpt2probe.load(ckpt, device="cpu")


def test_missing_tensor(ckpt):
    _edit_tensors(ckpt, lambda t: t.pop("transformer.h.1.ln_2.bias"))
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) the config implies are missing: 'transformer\.h\.1\.ln_2\.bias'"):
        gpt2probe.load(ckpt, device="cpu")


def test_unexpected_tensor(ckpt):
    _edit_tensors(ckpt, lambda t: t.update({"transformer.h.0.mlp.extra": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"'transformer\.h\.0\.mlp\.extra'"):
        gpt2probe.load(ckpt, device="cpu")


def test_mis_shaped_tensor(ckpt):
    _edit_config(ckpt, n_positions=SMALL.n_positions + 4)
    with pytest.raises(CheckpointError, match=rf"transformer\.wpe\.weight \({SMALL.n_positions}, {SMALL.n_embd}\) "
                                              rf"\(config implies \({SMALL.n_positions + 4}, {SMALL.n_embd}\)\)"):
        gpt2probe.load(ckpt, device="cpu")


def test_gpt2_buffers_and_prefixless_names_are_accepted(ckpt, small_probe):
    """OpenAI's hub checkpoint names tensors ``h.0...`` (no ``transformer.``) and stores ``attn.bias``."""
    def openai_layout(tensors):
        renamed = {k.removeprefix("transformer."): v for k, v in tensors.items()}
        renamed["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, SMALL.n_positions, SMALL.n_positions))
        tensors.clear()
        tensors.update(renamed)

    _edit_tensors(ckpt, openai_layout)
    assert_close(gpt2probe.load(ckpt, device="cpu")(IDS), small_probe(IDS), 0)


def test_llama_weights_labelled_gpt2(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    SMALL.config().save_pretrained(tmp_path)  # config.json now says gpt2
    with pytest.raises(CheckpointError, match=r"missing.*transformer\.h\.0.*GPT-2 does not have.*model\.layers\.0"):
        gpt2probe.load(tmp_path, device="cpu")


@pytest.mark.parametrize("keep", [0.999, 0.5, 0.0001])
def test_truncated_safetensors(ckpt, keep):
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="not a complete safetensors file") as info:
        gpt2probe.load(ckpt, device="cpu")
    assert str(weights) in str(info.value)


@pytest.mark.parametrize("text", ["[1, 2]", "\"gpt2\"", "{\"model_type\": \"gpt2\",", "", "null"])
def test_config_that_is_not_a_json_object(ckpt, text):
    (ckpt / "config.json").write_text(text)
    with pytest.raises(CheckpointError) as info:
        gpt2probe.load(ckpt, device="cpu")
    assert str(ckpt / "config.json") in str(info.value)


def test_config_that_is_not_utf8(ckpt):
    (ckpt / "config.json").write_bytes(b'{"model_type": "gpt2\xff"}')
    with pytest.raises(CheckpointError, match="not UTF-8"):
        gpt2probe.load(ckpt, device="cpu")


def test_config_with_impossible_sizes(ckpt):
    _edit_config(ckpt, n_head=7)  # 60 is not a multiple of 7
    with pytest.raises(CheckpointError, match="divisible"):
        gpt2probe.load(ckpt, device="cpu")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_unreadable_files(ckpt, name):
    (ckpt / name).chmod(0)
    with pytest.raises(GPT2ProbeError) as info:
        gpt2probe.load(ckpt, device="cpu")
    assert str(ckpt / name) in str(info.value)
    assert isinstance(info.value, (WeightsUnavailableError, CheckpointError))


def test_shipped_models_by_name():
    english = gpt2probe.load("tiny-english", device="cpu")
    assert english.cfg.model_name == "tiny-english" and english.cfg.n_layers == 4
    toy = gpt2probe.load("toy-induction", device="cpu")
    assert toy.cfg.model_name == "toy-induction" and toy.cfg.d_vocab == 64


def test_dtype_applies_to_a_model_object_and_to_a_directory(small_dir):
    model = build_gpt2(SMALL)
    reference = model(IDS).logits.double()
    from_object = gpt2probe.load(model, device="cpu", dtype="float64")
    from_directory = gpt2probe.load(small_dir, device="cpu", dtype=torch.float64)
    for probe in (from_object, from_directory):
        assert {p.dtype for p in probe.model.parameters()} == {torch.float64}
        assert_close(probe.model(IDS).logits, reference, what="float64 logits")
    assert gpt2probe.load(build_gpt2(SMALL), device="cpu").model.dtype == torch.float32  # no dtype: kept


def test_a_local_directory_wins_over_a_shipped_name(tmp_path, monkeypatch, small_probe):
    save_gpt2(SMALL, tmp_path / "tiny-english")
    monkeypatch.chdir(tmp_path)
    probe = gpt2probe.load("tiny-english", device="cpu")
    assert probe.cfg.n_layers == SMALL.n_layer


def test_loading_prints_no_progress_bar_and_restores_the_setting(small_dir, capfd):
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()
    gpt2probe.load(small_dir, device="cpu")
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        gpt2probe.load(small_dir, device="cpu")
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()


def test_unreadable_config_names_the_file(ckpt, monkeypatch):
    """The same as above for a root user: reading config.json fails with a permission error."""
    from pathlib import Path

    real = Path.read_bytes

    def refuse(self, *args, **kwargs):
        if self.name == "config.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(WeightsUnavailableError, match="cannot read .*config.json.*Permission denied"):
        gpt2probe.load(ckpt, device="cpu")


def test_pickle_checkpoint_that_does_not_match_its_config(tmp_path):
    """Pickle checkpoints (and hub downloads) are checked by what transformers reports after loading."""
    from models import save_pickle_only

    save_pickle_only(SMALL, tmp_path)
    _edit_config(tmp_path, n_layer=SMALL.n_layer + 1)
    with pytest.raises(CheckpointError, match=r"are missing: .*.transformer\.h\.3\."):
        gpt2probe.load(tmp_path, device="cpu", allow_pickle=True)
