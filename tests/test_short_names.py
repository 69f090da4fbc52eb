"""TransformerLens habits: cache keys in its short forms, and ``names_filter``.

Every hook name of a model is written in every short form TransformerLens's
``get_act_name`` accepts (tuples, layer-type aliases, name aliases, compact strings like
``"k6"``); gpt2probe's :func:`names.act_name` must give TransformerLens's answer for each,
and the cache must return the same tensor for the short form as for the full name. The
expected names are written out here, so the checks run without TransformerLens; where it
is installed, one test also checks that it gives the same answers.
"""

from __future__ import annotations

import re

import pytest
import torch

from gpt2probe import names as N
from gpt2probe.errors import HookNameError

from reference import transformer_lens

FULL = re.compile(r"^(?:blocks\.(\d+)\.)?(?:(attn|mlp|ln1|ln2|ln_final)\.)?hook_(\w+)$")
SUBLAYER_ALIASES = {"attn": ["attn", "a", "attention"], "mlp": ["mlp", "m"], "ln1": ["ln1"], "ln2": ["ln2"],
                    None: ["b", "block", "blocks"]}
WORD_ALIASES = {"pattern": ["attn"], "attn_scores": ["attn_logits"], "k": ["key"], "q": ["query"], "v": ["value"],
                "pre": ["mlp_pre"], "post": ["mlp_post"]}


def short_forms(name: str) -> list[tuple | str]:
    """Every way TransformerLens lets a user write ``name`` briefly."""
    layer_text, sublayer, word = FULL.match(name).groups()
    layer = int(layer_text) if layer_text is not None else None
    words = [word, *WORD_ALIASES.get(word, [])]
    if layer is None:  # embeddings and the final norm
        return [(w,) for w in words] + list(words)
    forms: list[tuple | str] = []
    for w in words:
        if sublayer not in ("ln1", "ln2"):
            forms.append((w, layer))
        for alias in SUBLAYER_ALIASES[sublayer]:
            forms.append((w, layer, alias))
            if re.fullmatch(r"[a-z]+", w):
                forms.append(f"{w}{layer}{alias}")
        if re.fullmatch(r"[a-z]+", w) and sublayer not in ("ln1", "ln2"):
            forms.append(f"{w}{layer}")
    return forms


def call(form: tuple | str, fn):
    return fn(*form) if isinstance(form, tuple) else fn(form)


# Short forms of hooks that GPT-2 has not, with the name TransformerLens 4.3's get_act_name gives each.
NOT_IN_GPT2 = [
    (("result", 0), "blocks.0.attn.hook_result"),
    (("rot_k", 1), "blocks.1.attn.hook_rot_k"),
    (("mid", 2), "blocks.2.mlp.hook_mid"),
    (("pre_linear", 0), "blocks.0.mlp.hook_pre_linear"),
    ("hook_foo", "hook_foo"),
    ("blocks.0.foo", "blocks.0.foo"),
]


def test_every_short_form_names_its_hook():
    checked = 0
    for name in N.all_names(3):
        forms = short_forms(name)
        assert forms, name
        for form in forms:
            assert call(form, N.act_name) == name, form
            checked += 1
    assert checked > 200


@pytest.mark.parametrize("form,expected", NOT_IN_GPT2)
def test_forms_gpt2_lacks_map_like_transformer_lens(form, expected):
    assert call(form, N.act_name) == expected
    assert expected not in N.all_names(3)


def test_transformer_lens_gives_the_same_names():
    """The expectations above are TransformerLens's own answers (checked where it is installed)."""
    get_act_name = transformer_lens("transformer_lens.utilities").get_act_name
    for name in N.all_names(3):
        for form in short_forms(name):
            assert call(form, get_act_name) == name, form
    for form, expected in NOT_IN_GPT2:
        assert call(form, get_act_name) == expected, form


def test_a_full_name_passes_through():
    for name in N.all_names(2):
        assert N.act_name(name) == name


def test_negative_layers_count_from_the_end():
    assert N.act_name("pattern", -1, n_layers=12) == "blocks.11.attn.hook_pattern"
    assert N.act_name("scale", -12, "ln2", n_layers=12) == "blocks.0.ln2.hook_scale"
    with pytest.raises(HookNameError, match=r"blocks 0\.\.11"):
        N.act_name("pattern", -13, n_layers=12)


@pytest.mark.parametrize("bad", [("pattern", 1.0), ("pattern", True), ("pattern", "1"), (3,), ("q", 1, 2), ("a", 1, "b", 4)])
def test_malformed_keys_are_refused(bad):
    with pytest.raises(HookNameError):
        N.from_key(bad, n_layers=3)


@pytest.fixture(scope="module")
def full_cache(small_probe):
    from models import SMALL, random_ids

    return small_probe.run_with_cache(random_ids(SMALL, 2, 7, seed=4))[1]


def test_the_cache_answers_every_short_form(full_cache):
    n_layers = full_cache.n_layers
    for name in N.all_names(n_layers):
        for form in short_forms(name):
            assert full_cache[form] is full_cache[name], form
    for layer in range(1, n_layers + 1):
        assert full_cache["pattern", -layer] is full_cache[N.pattern(n_layers - layer)]
        assert full_cache["scale", -layer, "ln1"] is full_cache[N.ln_scale(n_layers - layer, 1)]
    assert ("pattern", 0) in full_cache and ("pattern", n_layers) not in full_cache


def test_short_forms_keep_the_helpful_errors(small_probe):
    from models import SMALL, random_ids

    _, cache = small_probe.run_with_cache(random_ids(SMALL, 1, 5, seed=1), names=["blocks.*.attn.hook_pattern"])
    assert cache["pattern", 1].shape == (1, SMALL.n_head, 5, 5)
    with pytest.raises(HookNameError, match=r"'blocks\.1\.attn\.hook_q' \(the short form \('q', 1\)\) was not captured.*names=\["):
        cache["q", 1]
    with pytest.raises(HookNameError, match=r"unknown hook name 'blocks\.7\.attn\.hook_pattern' \(this model has blocks 0\.\.2\)"):
        cache["pattern", 7]
    with pytest.raises(HookNameError, match=r"'blocks\.0\.attn\.hook_result'.*short form \('result', 0\)"):
        cache["result", 0]


def test_names_filter_is_an_alias_of_names(small_probe):
    from models import SMALL, random_ids

    ids = random_ids(SMALL, 1, 6, seed=2)
    logits_a, by_names = small_probe.run_with_cache(ids, names="blocks.*.hook_resid_post")
    logits_b, by_filter = small_probe.run_with_cache(ids, names_filter=lambda name: name.endswith("hook_resid_post"))
    assert list(by_names) == list(by_filter) == [N.resid_post(l) for l in range(SMALL.n_layer)]
    assert torch.equal(logits_a, logits_b)
    for name in by_names:
        assert torch.equal(by_names[name], by_filter[name])
    with pytest.raises(HookNameError, match="both names= and names_filter="):
        small_probe.run_with_cache(ids, names="hook_embed", names_filter="hook_embed")
