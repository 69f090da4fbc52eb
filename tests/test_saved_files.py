"""Saved caches and lens results are checked on load: metadata against tensors, and reserved keys stay ours."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import gpt2probe
from gpt2probe import ActivationCache, FileFormatError, InvalidArgumentError, LensResult, MissingFileError
from gpt2probe import names as N

from models import SMALL, random_ids

IDS = random_ids(SMALL, 2, 5, seed=4)


def _rewrite(path, edit):
    """Apply ``edit(metadata, tensors)`` to a saved file, in place."""
    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = dict(f.metadata()), {key: f.get_tensor(key) for key in f.keys()}
    edit(metadata, tensors)
    save_file(tensors, str(path), metadata=metadata)


@pytest.fixture
def cache_file(small_probe, tmp_path):
    tokens = gpt2probe.Tokens(IDS, torch.ones_like(IDS), ("first", "second"))
    _, cache = small_probe.run_with_cache(tokens, names=[N.resid_pre(0), N.resid_post(2), N.pattern(1)])
    path = tmp_path / "cache.safetensors"
    cache.save(path, note="mine")
    return path


def test_a_good_cache_loads(cache_file):
    cache = ActivationCache.load(cache_file)
    assert cache.n_layers == SMALL.n_layer and cache.tokens.prompts == ("first", "second")
    assert cache.metadata["note"] == "mine"


def _drop_resid(metadata, tensors):
    del tensors[N.resid_pre(0)]


CACHE_DAMAGE = {
    "fewer layers than the names": (lambda m, t: m.update(n_layers="2"), "not hooks of a 2-layer model"),
    "n_layers not a number": (lambda m, t: m.update(n_layers="three"), "'n_layers' is not valid JSON"),
    "n_layers zero": (lambda m, t: m.update(n_layers="0"), "n_layers is 0"),
    "n_layers missing": (lambda m, t: m.pop("n_layers"), "lacks the metadata entry 'n_layers'"),
    "prompt count": (lambda m, t: m.update(prompts=json.dumps(["one"])), "names 1 prompts but holds token ids for 2"),
    "prompts not a list": (lambda m, t: m.update(prompts='"one"'), "'prompts' should be list or null"),
    "mask shape": (lambda m, t: t.update({"__tokens__.attention_mask": torch.ones(2, 4, dtype=torch.long)}),
                   r"attention mask \(2, 4\) differ"),
    "mask values": (lambda m, t: t.update({"__tokens__.attention_mask": torch.full((2, 5), 2)}), "other than 0 and 1"),
    "all-zero mask row": (lambda m, t: t["__tokens__.attention_mask"][1].zero_(), "all zeros"),
    "mask without ids": (lambda m, t: t.pop("__tokens__.ids"), "only one of"),
    "float token ids": (lambda m, t: t.update({"__tokens__.ids": t["__tokens__.ids"].float()}), "2-D integer tensor"),
    "wrong batch": (lambda m, t: t.update({N.resid_pre(0): t[N.resid_pre(0)][:1].clone()}), "does not fit 2 prompts"),
    "wrong positions": (lambda m, t: t.update({N.pattern(1): t[N.pattern(1)][:, :, :4, :4].clone()}), "of 5 positions"),
    "integer activation": (lambda m, t: t.update({N.resid_pre(0): t[N.resid_pre(0)].long()}), "floating point"),
    "d_model disagrees": (lambda m, t: t.update({N.resid_pre(0): t[N.resid_pre(0)][..., :7].clone()}), "disagree on d_model"),
    "unknown tensor": (lambda m, t: t.update({"blocks.0.hook_nonsense": torch.zeros(2, 5, 3)}), "'blocks.0.hook_nonsense'"),
    "other format": (lambda m, t: m.update(format="gpt2probe.LensResult"), "not a cache written by ActivationCache.save"),
}


@pytest.mark.parametrize("damage", CACHE_DAMAGE, ids=list(CACHE_DAMAGE))
def test_a_cache_that_disagrees_with_itself_is_refused(cache_file, damage):
    edit, message = CACHE_DAMAGE[damage]
    _rewrite(cache_file, edit)
    with pytest.raises(FileFormatError, match=message) as info:
        ActivationCache.load(cache_file)
    assert str(cache_file) in str(info.value) and isinstance(info.value, ValueError)


def test_a_truncated_or_missing_cache_file(cache_file, tmp_path):
    data = cache_file.read_bytes()
    cache_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="truncated or damaged"):
        ActivationCache.load(cache_file)
    with pytest.raises(MissingFileError, match="no such file") as info:
        ActivationCache.load(tmp_path / "nothing.safetensors")
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("key", ["format", "n_layers", "model_name", "prompts", "versions"])
def test_user_metadata_cannot_replace_reserved_keys(small_probe, tmp_path, key):
    _, cache = small_probe.run_with_cache(IDS, names=[N.resid_pre(0)])
    with pytest.raises(InvalidArgumentError, match=f"'{key}'.*reserved"):
        cache.save(tmp_path / "c.safetensors", **{key: "x"})
    assert not (tmp_path / "c.safetensors").exists()


def test_user_metadata_must_be_strings(small_probe, tmp_path):
    _, cache = small_probe.run_with_cache(IDS, names=[N.resid_pre(0)])
    with pytest.raises(TypeError, match="seed"):  # under pytest jaxtyping's checker may answer first
        cache.save(tmp_path / "c.safetensors", seed=3)


# -- lens results ----------------------------------------------------------------------
@pytest.fixture
def lens_file(vocab_probe, tmp_path):
    result = gpt2probe.logit_lens(vocab_probe, ["The cat sat", "on a mat and"], k=3)
    path = tmp_path / "lens.safetensors"
    result.save(path)
    return path


def test_a_good_lens_result_loads(lens_file):
    result = LensResult.load(lens_file)
    assert len(result) == 2 and result.k == 3


LENS_DAMAGE = {
    "k disagrees": (lambda m, t: m.update(k="4"), r"top_ids has shape \(\d+, \d+, 3\), expected \[stream, pos, k=4\]"),
    "one prompt dropped": (lambda m, t: m.update(items=json.dumps(json.loads(m["items"])[:1])), "belong to no prompt"),
    "tensor missing": (lambda m, t: t.pop("1.entropy"), r"prompt 1 lacks the tensors \['entropy'\]"),
    "float ids": (lambda m, t: t.update({"0.top_ids": t["0.top_ids"].float()}), "expected an integer dtype"),
    "int probs": (lambda m, t: t.update({"0.top_probs": t["0.top_probs"].long()}), "expected a floating-point dtype"),
    "position outside": (lambda m, t: t["0.positions"].add_(100), "outside its"),
    "entropy shape": (lambda m, t: t.update({"0.entropy": t["0.entropy"][:, :1].clone()}), "prompt 0 does not hold together"),
    "token strings": (lambda m, t: m.update(items=json.dumps([{**json.loads(m["items"])[0], "str_tokens": ["x"]},
                                                               json.loads(m["items"])[1]])), "token strings"),
    "items not a list": (lambda m, t: m.update(items="{}"), "'items' should be list"),
    "include_mid": (lambda m, t: m.update(include_mid='"yes"'), "'include_mid' should be bool"),
    "some targets only": (lambda m, t: t.update({"0.target_ids": torch.zeros_like(t["0.positions"])}), "only some of the target"),
}


@pytest.mark.parametrize("damage", LENS_DAMAGE, ids=list(LENS_DAMAGE))
def test_a_lens_result_that_disagrees_with_itself_is_refused(lens_file, damage):
    edit, message = LENS_DAMAGE[damage]
    _rewrite(lens_file, edit)
    with pytest.raises(FileFormatError, match=message) as info:
        LensResult.load(lens_file)
    assert str(lens_file) in str(info.value)
