"""Next-token tables, the sampling rule, and KV-cached generation with hooks at every step.

Generation is checked against an independent decoder that re-runs the whole sequence
without a KV cache at each step (``probe.forward`` / ``probe.run_with_hooks``), and the
sampling rule against a reference written from the definitions in float64.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gpt2probe
from gpt2probe import names as N
from gpt2probe.errors import HookNameError, PromptError
from gpt2probe.generation import filter_logits, generate, next_token, sample_tokens, sampling_probs
from gpt2probe.hooks import count_torch_hooks
from gpt2probe.tokens import Tokens, pad_left
from gpt2probe.toy import repeated_random_tokens

from models import GPT2_VOCAB, Spec, assert_close, save_gpt2

TOY_DIR = Path(__file__).resolve().parents[1] / "gpt2probe" / "assets" / "toy-induction"
TEXT = Spec(n_layer=2, n_embd=42, n_head=3, n_positions=64, vocab_size=GPT2_VOCAB, seed=5)
IDS = Spec(n_layer=3, n_embd=30, n_head=5, n_positions=40, vocab_size=37, seed=7)
PROMPTS = ["The cat sat on the", "Hello", "A much longer prompt, with a comma and more words"]
EOS = GPT2_VOCAB - 1


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> Path:
    return save_gpt2(TEXT, tmp_path_factory.mktemp("gen_text"))


@pytest.fixture(scope="module")
def text_probe(text_dir):
    return gpt2probe.load(text_dir, device="cpu")


@pytest.fixture(scope="module")
def text_probe_eager(text_dir):
    return gpt2probe.load(text_dir, device="cpu", attn_implementation="eager")


@pytest.fixture(scope="module")
def ids_probe(tmp_path_factory):
    return gpt2probe.load(save_gpt2(IDS, tmp_path_factory.mktemp("gen_ids")), device="cpu")


@pytest.fixture(scope="module")
def toy_probe():
    return gpt2probe.load(TOY_DIR, device="cpu")


# -- independent references --------------------------------------------------------------
def decode_without_cache(probe, ids: list[int], n: int, fwd_hooks=()) -> list[int]:
    """Greedy decoding that re-runs the full sequence at every step (no KV cache)."""
    ids = list(ids)
    for _ in range(n):
        logits = probe.run_with_hooks(torch.tensor([ids]), fwd_hooks=fwd_hooks)
        ids.append(int(logits[0, -1].argmax()))
    return ids[-n:] if n else []


def reference_probs(logits: list[float], temperature: float, top_k=None, top_p=None) -> torch.Tensor:
    """The definitions, in float64 Python: softmax(l / T), keep the top-k, renormalise, keep the nucleus."""
    scaled = [x / temperature for x in logits]
    order = sorted(range(len(logits)), key=lambda i: -scaled[i])
    kept = order[: top_k or len(order)]
    if top_p is not None:
        z = sum(math.exp(scaled[i]) for i in kept)
        nucleus, mass = [], 0.0
        for i in kept:
            nucleus.append(i)
            mass += math.exp(scaled[i]) / z
            if mass >= top_p:
                break
        kept = nucleus
    z = sum(math.exp(scaled[i]) for i in kept)
    return torch.tensor([math.exp(scaled[i]) / z if i in kept else 0.0 for i in range(len(logits))], dtype=torch.float64)


def force_hook(probe, targets_per_call, scale=30.0):
    """A ``ln_final.hook_normalized`` hook whose ``c``-th call makes ``targets_per_call[c]`` the top logit.

    It replaces the final normalized stream so that ``ln_f``'s output is ``scale * W_E[target]``;
    the logits are then ``scale * W_E @ W_E[target]``. Returns ``(hook_fn, calls)``.
    """
    ln_f = probe.model.transformer.ln_f
    calls = []

    def hook(normalized, point):
        target = targets_per_call[len(calls)]
        calls.append(normalized.shape[1])
        wanted = (scale * probe.W_E[target] - ln_f.bias) / ln_f.weight
        out = normalized.clone()
        out[:] = wanted
        return out

    return hook, calls


def self_argmax_tokens(probe, candidates):
    """Candidates ``t`` for which ``W_E @ W_E[t]`` peaks at ``t`` (so :func:`force_hook` can force them)."""
    good = [t for t in candidates if int((probe.W_E @ probe.W_E[t]).argmax()) == t]
    assert good, "no forceable token among the candidates"
    return good


# -- the sampling rule on a fixed logits vector ------------------------------------------
LOGITS = [2.0, 1.5, 0.3, -0.5, 1.0, -2.0, 0.0, 0.7]
SETTINGS = [
    dict(temperature=1.0),
    dict(temperature=0.5),
    dict(temperature=2.5),
    dict(temperature=1.0, top_k=3),
    dict(temperature=1.0, top_p=0.8),
    dict(temperature=0.7, top_k=5, top_p=0.9),
    dict(temperature=1.3, top_p=0.3),  # the nucleus is the top token alone
]


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_sampling_probs_follow_the_definitions(setting):
    expected = reference_probs(LOGITS, **setting)
    got = sampling_probs(torch.tensor(LOGITS), **setting)
    assert got.dtype == torch.float32
    assert_close(got, expected.float(), 1e-6, str(setting))
    filtered = filter_logits(torch.tensor(LOGITS), **setting)
    assert torch.equal(torch.isinf(filtered), expected == 0), "exactly the filtered tokens are -inf"
    kept = expected > 0
    assert_close(filtered[kept], torch.tensor(LOGITS)[kept] / setting["temperature"], 1e-6, "kept logits are l / T")


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_sample_frequencies_match_the_distribution(setting):
    n = 20_000
    expected = reference_probs(LOGITS, **setting)
    gen = torch.Generator().manual_seed(1234)
    draws = sample_tokens(torch.tensor(LOGITS).expand(n, -1), generator=gen, **setting)
    freq = torch.bincount(draws, minlength=len(LOGITS)).double() / n
    assert (freq[expected == 0] == 0).all(), "a filtered token was drawn"
    assert (freq - expected).abs().max() < 0.02, (freq, expected)


def test_temperature_zero_is_argmax_and_draws_nothing():
    logits = torch.tensor([[0.1, 3.0, -1.0, 3.0], [5.0, 0.0, 1.0, 2.0]])
    assert torch.equal(sampling_probs(logits, temperature=0), torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0]]))
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert sample_tokens(logits, temperature=0, generator=gen).tolist() == [1, 0]
    assert torch.equal(gen.get_state(), state)


def test_filters_keep_ties_and_do_nothing_at_their_limits():
    logits = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.5])
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [False, True, True, True, False]
    assert torch.isfinite(filter_logits(logits, top_k=5)).all()
    assert torch.isfinite(filter_logits(logits, top_k=50)).all()
    assert torch.isfinite(filter_logits(logits, top_p=1.0)).all()
    # The nucleus ends inside the tie between tokens 2 and 3: both are kept.
    p_top = float(logits.softmax(-1)[1])
    assert torch.isfinite(filter_logits(logits, top_p=p_top + 0.01)).tolist() == [False, True, True, True, False]
    original = logits.clone()
    filter_logits(logits, temperature=0.5, top_k=2, top_p=0.5)
    assert torch.equal(logits, original), "the input must not be modified"


@settings(max_examples=60, deadline=None)
@given(
    logits=st.lists(st.floats(-8, 8, allow_nan=False), min_size=1, max_size=12),
    k=st.integers(1, 14),
    p=st.floats(0.01, 1.0),
)
def test_filter_properties(logits, k, p):
    """top-k keeps the k highest (and ties); top-p keeps a smallest high-probability set with mass >= p."""
    x = torch.tensor(logits, dtype=torch.float64)
    kept_k = torch.isfinite(filter_logits(x, top_k=k))
    assert kept_k.sum() >= min(k, len(logits)) and kept_k[x.argmax()]
    if (~kept_k).any():
        assert x[kept_k].min() > x[~kept_k].max()
        assert kept_k.sum() == (x >= x[kept_k].min()).sum()
    kept_p = torch.isfinite(filter_logits(x, top_p=p))
    probs = x.softmax(-1)
    assert kept_p.any() and kept_p[x.argmax()]
    assert probs[kept_p].sum() >= p - 1e-9
    least = probs[kept_p].min()
    assert (probs[~kept_p] <= least).all(), "kept tokens are the most probable ones"
    without_least = kept_p & (probs > least)
    assert probs[without_least].sum() < p + 1e-9, "dropping the least probable kept tokens must go below p"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_sampling_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        filter_logits(torch.zeros(4), **kwargs)


@pytest.mark.parametrize("kwargs", [dict(top_k=2.5), dict(top_k=True), dict(temperature="1"), dict(top_p=[0.5])])
def test_sampling_settings_of_the_wrong_type_are_refused(kwargs):
    with pytest.raises(TypeError):
        filter_logits(torch.zeros(4), **kwargs)


# -- next_token ----------------------------------------------------------------------------
def test_next_token_is_the_top_k_of_the_last_logits(text_probe):
    result = next_token(text_probe, PROMPTS[0], k=7)
    logits = text_probe.forward(PROMPTS[0])[0, -1]
    top = logits.topk(7)
    assert torch.equal(result.ids[0], top.indices)
    assert_close(result.logits[0], top.values, 1e-6, "logits")
    assert_close(result.probs[0], logits.softmax(-1)[top.indices], 1e-6, "probs")
    assert result.tokens[0] == [text_probe.tokenizer.decode([i]) for i in top.indices.tolist()]
    assert result.top1() == (result.tokens[0][0], pytest.approx(float(logits.softmax(-1).max())))
    table = str(result)
    assert repr(PROMPTS[0]) in table and all(repr(t) in table for t in result.tokens[0])


def test_next_token_of_a_batch_reads_each_prompts_last_token(text_probe):
    batch = next_token(text_probe, PROMPTS, k=5)
    assert batch.ids.shape == (3, 5) and batch.prompts == PROMPTS
    for i, prompt in enumerate(PROMPTS):
        alone = next_token(text_probe, prompt, k=5)
        assert torch.equal(batch.ids[i], alone.ids[0])
        assert_close(batch.probs[i], alone.probs[0], 1e-5, prompt)


def test_next_token_takes_token_ids_and_checks_k(toy_probe):
    seq = repeated_random_tokens(1, 6, 64, seed=3)[0]
    result = next_token(toy_probe, seq[:9], k=3)  # BOS x x[:2]: the induction head predicts x[2]
    assert int(result.ids[0, 0]) == int(seq[9])
    for bad in (0, 65):
        with pytest.raises(ValueError, match="k must be"):
            next_token(toy_probe, seq, k=bad)
    with pytest.raises(TypeError):
        next_token(toy_probe, seq, k=2.0)


# -- generation ------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_greedy_equals_decoding_without_cache(text_probe, text_probe_eager, attn):
    probe = text_probe if attn == "sdpa" else text_probe_eager
    n = 9
    gen = generate(probe, PROMPTS, n, greedy=True, stop_at_eos=False)
    assert gen.new_ids.shape == (3, n) and gen.new_mask.all() and gen.seeds is None
    for i, prompt in enumerate(PROMPTS):
        ids = probe.to_tokens(prompt).ids[0].tolist()
        assert gen.new_ids[i].tolist() == decode_without_cache(probe, ids, n), prompt
        assert gen.texts[i] == prompt + gen.continuations[i]
        assert gen.continuations[i] == probe.tokenizer.decode(gen.new_ids[i].tolist())
        assert gen.sequence(i).tolist() == ids + gen.new_ids[i].tolist()


def test_temperature_zero_is_greedy(text_probe):
    greedy = generate(text_probe, PROMPTS[:2], 4, greedy=True, stop_at_eos=False)
    cold = generate(text_probe, PROMPTS[:2], 4, temperature=0, top_p=0.5, stop_at_eos=False)
    assert torch.equal(greedy.new_ids, cold.new_ids)


def test_left_padded_token_ids_equal_single_runs(ids_probe):
    seqs = [[3, 1, 4, 1, 5, 9, 2], [6], [5, 3, 5, 8]]
    tokens = pad_left(seqs, pad_id=0)
    gen = generate(ids_probe, tokens, 8, greedy=True, stop_at_eos=False)
    for i, seq in enumerate(seqs):
        assert gen.new_ids[i].tolist() == decode_without_cache(ids_probe, seq, 8)


def test_a_seed_reproduces_and_seeds_differ(text_probe):
    run = lambda seed: generate(text_probe, PROMPTS[0], 8, temperature=1.0, top_k=1000, seed=seed).texts  # noqa: E731
    assert run(1) == run(1)
    assert run(1) != run(2)
    fresh = generate(text_probe, PROMPTS[0], 8)
    assert len(fresh.seeds) == 1
    assert generate(text_probe, PROMPTS[0], 8, seed=list(fresh.seeds)).texts == fresh.texts


def test_global_rng_is_untouched(text_probe):
    state = torch.get_rng_state()
    generate(text_probe, PROMPTS[1], 3, seed=5)
    generate(text_probe, PROMPTS[1], 3)
    assert torch.equal(torch.get_rng_state(), state)


def test_batched_sampling_matches_single_runs_draw_for_draw(text_probe):
    """Row i of a batch draws from its own generator seeded ``seed + i``, as a single run with that seed."""
    batch = generate(text_probe, PROMPTS, 7, temperature=0.9, top_p=0.95, seed=40, stop_at_eos=False)
    assert batch.seeds == (40, 41, 42)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(text_probe, prompt, 7, temperature=0.9, top_p=0.95, seed=40 + i, stop_at_eos=False)
        assert torch.equal(batch.new_ids[i], alone.new_ids[0]), prompt
    # Identical prompts in one batch still give independent samples.
    same = generate(text_probe, [PROMPTS[0]] * 3, 7, seed=40, stop_at_eos=False)
    assert len(set(same.continuations)) == 3


def test_generated_tokens_follow_the_sampling_distribution(ids_probe):
    """End to end: the first token over 4000 seeded rows matches ``sampling_probs`` of the model's logits."""
    prompt = torch.tensor([3, 9, 1, 30])
    setting = dict(temperature=0.8, top_k=12, top_p=0.9)
    expected = sampling_probs(ids_probe.forward(prompt)[0, -1], **setting).double()
    assert expected.max() < 0.6 and (expected > 0.01).sum() >= 4, "the test needs a spread-out distribution"
    n = 4000
    gen = generate(ids_probe, prompt.expand(n, -1), 1, seed=0, stop_at_eos=False, **setting)
    freq = torch.bincount(gen.new_ids[:, 0], minlength=IDS.vocab_size).double() / n
    assert (freq[expected == 0] == 0).all()
    assert (freq - expected).abs().max() < 0.03


def test_hooks_act_at_every_step_and_are_removed(text_probe):
    n = 6
    targets = self_argmax_tokens(text_probe, range(1000, 1100))[:n]
    assert len(targets) == n
    hook, calls = force_hook(text_probe, targets)
    gen = generate(text_probe, PROMPTS, n, greedy=True, hooks={N.LN_FINAL_NORMALIZED: hook})
    assert gen.new_ids.tolist() == [targets] * 3, "every generated token was forced by the hook"
    n_prompt = text_probe.to_tokens(PROMPTS).ids.shape[1]
    assert calls == [n_prompt] + [1] * (n - 1), "one call for the prompt pass, then one per step with pos=1"
    assert count_torch_hooks(text_probe.model) == 0


def test_hooks_are_removed_when_a_hook_raises(text_probe):
    calls = []

    def fail_on_third_call(resid, point):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")

    implementation = text_probe.model.config._attn_implementation
    with pytest.raises(RuntimeError, match="boom"):
        generate(text_probe, PROMPTS[0], 5, hooks=[(N.resid_pre(1), fail_on_third_call)], capture=N.pattern(0))
    assert count_torch_hooks(text_probe.model) == 0
    assert text_probe.model.config._attn_implementation == implementation


def test_a_steering_hook_under_the_cache_equals_decoding_without_cache(text_probe):
    """A position-independent hook gives the same tokens with the KV cache as re-running everything."""
    vector = 3.0 * torch.randn(TEXT.n_embd, generator=torch.Generator().manual_seed(0))
    steer = [(N.resid_pre(1), lambda resid, point: resid + vector)]
    gen = generate(text_probe, PROMPTS[:2], 6, greedy=True, hooks=steer, stop_at_eos=False)
    plain = generate(text_probe, PROMPTS[:2], 6, greedy=True, stop_at_eos=False)
    assert not torch.equal(gen.new_ids, plain.new_ids), "the steering vector must change the output"
    for i, prompt in enumerate(PROMPTS[:2]):
        ids = text_probe.to_tokens(prompt).ids[0].tolist()
        assert gen.new_ids[i].tolist() == decode_without_cache(text_probe, ids, 6, steer)


def test_captures_equal_a_full_run_and_give_the_lens_of_each_new_token(text_probe):
    names = [N.resid_post(0), N.resid_post(1), N.pattern(1), N.attn_scores(0), N.LN_FINAL_SCALE, N.q(0)]
    n = 5
    gen = generate(text_probe, PROMPTS, n, greedy=True, stop_at_eos=False, capture=names)
    assert count_torch_hooks(text_probe.model) == 0
    cache = gen.captures
    fed = cache.tokens
    n_prompt = gen.prompt_tokens.ids.shape[1]
    assert fed.ids.shape == (3, n_prompt + n - 1)
    assert torch.equal(fed.ids[:, n_prompt:], gen.new_ids[:, :-1])
    _, full = text_probe.run_with_cache(fed, names=list(cache))
    assert list(cache) == list(full) and len(cache) == TEXT.n_layer + 4
    real = fed.attention_mask.bool()  # pad positions hold garbage that differs between the two runs
    for name in cache:
        mine, theirs = cache[name], full[name]
        if name.endswith(("hook_pattern", "hook_attn_scores")):  # real queries, every key
            mine, theirs = mine.transpose(1, 2), theirs.transpose(1, 2)
        assert_close(mine[real], theirs[real], 1e-4, name)
    # The logit lens of the last stream at each step's position is the model's own choice.
    final = gen.step_activations(N.resid_post(TEXT.n_layer - 1))
    assert final.shape == (3, n, TEXT.n_embd)
    lens_logits = cache.apply_final_ln(final) @ text_probe.W_U
    assert torch.equal(lens_logits.argmax(-1), gen.new_ids)
    assert gen.step_activations(N.pattern(1)).shape == (3, TEXT.n_head, n, n_prompt + n - 1)


def test_stop_at_eos_masks_the_row_and_stops_when_all_rows_have(text_probe):
    assert self_argmax_tokens(text_probe, [EOS]) == [EOS]
    plain = generate(text_probe, PROMPTS[:2], 5, greedy=True, stop_at_eos=False)
    assert EOS not in plain.new_ids.flatten().tolist(), "precondition: without the hook no row stops"
    calls = []

    def eos_in_row0_at_step1(normalized, point):
        """On the second pass (the first cached step), force EOS in row 0 only."""
        calls.append(1)
        if len(calls) != 2:
            return None
        out = normalized.clone()
        ln_f = text_probe.model.transformer.ln_f
        out[0] = (30.0 * text_probe.W_E[EOS] - ln_f.bias) / ln_f.weight
        return out

    gen = generate(text_probe, PROMPTS[:2], 5, greedy=True, hooks={N.LN_FINAL_NORMALIZED: eos_in_row0_at_step1})
    assert gen.new_mask[0].tolist() == [True, True, False, False, False]
    assert gen.new_tokens(0).tolist() == [plain.new_ids[0, 0].item(), EOS]
    assert (gen.new_ids[0, 2:] == EOS).all(), "a stopped row repeats its EOS"
    assert gen.finished.tolist() == [True, False]
    assert gen.continuations[0].endswith("<|endoftext|>")
    assert torch.equal(gen.new_ids[1], plain.new_ids[1]) and gen.new_mask[1].all()
    # When every row has stopped, generation ends early.
    all_eos, calls_all = force_hook(text_probe, [EOS] * 5)
    early = generate(text_probe, PROMPTS[:2], 5, greedy=True, hooks={N.LN_FINAL_NORMALIZED: all_eos})
    assert early.n_new == 1 and len(calls_all) == 1 and early.finished.all()
    # Without stop_at_eos every step runs and every token is kept.
    all_eos, calls_all = force_hook(text_probe, [EOS] * 5)
    cont = generate(text_probe, PROMPTS[:2], 5, greedy=True, stop_at_eos=False, hooks={N.LN_FINAL_NORMALIZED: all_eos})
    assert cont.n_new == 5 and cont.new_mask.all() and (cont.new_ids == EOS).all()


def test_toy_induction_model_completes_the_repeated_sequence(toy_probe):
    half = 10
    seqs = repeated_random_tokens(3, half, 64, seed=7)
    x = seqs[:, 1 : half + 1]
    prefixes = [seqs[row, : 1 + half + m].tolist() for row, m in enumerate((2, 4, 7))]
    n = 14  # past the end of the second copy: the head keeps copying x cyclically
    expected = [[x[row, (m + j) % half].item() for j in range(n)] for row, m in enumerate((2, 4, 7))]
    single = generate(toy_probe, torch.tensor(prefixes[0]), n, greedy=True)
    assert single.new_ids[0].tolist() == expected[0]
    batch = generate(toy_probe, pad_left(prefixes, pad_id=0), n, greedy=True)
    assert batch.new_ids.tolist() == expected and batch.new_mask.all()


def test_zero_new_tokens_runs_nothing(text_probe):
    calls = []
    gen = generate(text_probe, PROMPTS, 0, hooks={N.EMBED: lambda x, p: calls.append(1)}, capture=N.EMBED)
    assert gen.n_new == 0 and gen.texts == PROMPTS and gen.continuations == ["", "", ""] and calls == []
    assert gen.new_ids.shape == (3, 0)


def test_one_new_token_is_the_next_token_and_captures_only_the_prompt(text_probe):
    gen = generate(text_probe, PROMPTS, 1, greedy=True, capture=N.EMBED)
    assert gen.new_ids[:, 0].tolist() == next_token(text_probe, PROMPTS, k=1).ids[:, 0].tolist()
    n_prompt = gen.prompt_tokens.ids.shape[1]
    assert gen.captures[N.EMBED].shape == (3, n_prompt, TEXT.n_embd)
    assert gen.step_activations(N.EMBED).shape == (3, 1, TEXT.n_embd)


def test_eos_token_id_overrides_the_default(toy_probe):
    """The toy model's config says EOS = 0 (its BOS); another id can be named, and must be in the vocabulary."""
    seq = repeated_random_tokens(1, 8, 64, seed=2)[0]
    prompt = seq[:11]  # BOS x x[:2]: the continuation is x[2:], x[0], ...
    stop_at = int(seq[13])  # x[4]
    gen = generate(toy_probe, prompt, 8, greedy=True, eos_token_id=stop_at)
    assert gen.new_tokens(0).tolist() == seq[11:14].tolist() and gen.n_new == 3 and gen.finished.all()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(toy_probe, prompt, 2, eos_token_id=50256)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(max_new_tokens=-1), ValueError, ["max_new_tokens", ">= 0"]),
        (dict(max_new_tokens=2.0), TypeError, []),
        (dict(max_new_tokens=60), PromptError, ["6 tokens", "max_new_tokens=60", "n_ctx=64", "58"]),
        (dict(temperature=-1.0), ValueError, ["temperature"]),
        (dict(top_k=0), ValueError, ["top_k"]),
        (dict(top_p=0.0), ValueError, ["top_p"]),
        (dict(top_p=1.01), ValueError, ["top_p"]),
        (dict(seed=[1, 2]), ValueError, ["2 seeds", "1 prompts"]),
        (dict(seed=-3), ValueError, ["seeds"]),
        (dict(capture="blocks.9.hook_resid_post"), HookNameError, ["unknown hook name"]),
        (dict(hooks={"blocks.0.hook_resid_prex": lambda x, p: None}), HookNameError, ["nearest valid"]),
    ],
)
def test_generate_validates_its_inputs(text_probe, kwargs, error, words):
    kwargs = {"max_new_tokens": 3, **kwargs}
    prompt = "one two three four five six"
    assert text_probe.to_tokens(prompt).ids.shape[1] == 6
    with pytest.raises(error) as info:
        generate(text_probe, prompt, **kwargs)
    for word in words:
        assert word in str(info.value)
    assert count_torch_hooks(text_probe.model) == 0


def test_sample_tokens_with_one_generator_per_row():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    rows = sample_tokens(logits, generator=[torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    for i, s in enumerate((7, 8, 9)):
        assert rows[i] == sample_tokens(logits[i : i + 1], generator=torch.Generator().manual_seed(s))[0]
    with pytest.raises(ValueError, match="2 generators for 3 rows"):
        sample_tokens(logits, generator=[torch.Generator(), torch.Generator()])


def test_generation_is_readable(text_probe):
    gen = generate(text_probe, PROMPTS[:2], 3, seed=9)
    text = str(gen)
    assert "seeds [9, 10]" in text and repr(PROMPTS[0]) in text and repr(gen.continuations[1]) in text
    assert isinstance(gen.prompt_tokens, Tokens)


# -- the methods (issue 19: a TransformerLens user's first call is model.generate) --------
def test_probe_generate_and_next_token_are_the_module_functions(text_probe):
    import inspect

    from gpt2probe.generation import ProbeLike

    assert isinstance(text_probe, ProbeLike)
    method, function = inspect.signature(text_probe.generate), inspect.signature(generate)
    assert list(method.parameters) == list(function.parameters)[1:], "probe.generate must offer every option"
    assert [p.default for p in method.parameters.values()] == [p.default for p in list(function.parameters.values())[1:]]
    sampled = dict(seed=11, temperature=0.8, top_k=20, capture="blocks.1.hook_resid_post")
    for kwargs in ({"greedy": True}, sampled):
        a, b = text_probe.generate(PROMPTS, 4, **kwargs), generate(text_probe, PROMPTS, 4, **kwargs)
        assert torch.equal(a.new_ids, b.new_ids) and torch.equal(a.new_mask, b.new_mask)
        assert a.texts == b.texts and a.seeds == b.seeds
    assert torch.equal(a.captures["blocks.1.hook_resid_post"], b.captures["blocks.1.hook_resid_post"])
    x, y = text_probe.next_token(PROMPTS, k=5), next_token(text_probe, PROMPTS, k=5)
    assert torch.equal(x.ids, y.ids) and torch.equal(x.probs, y.probs) and x.tokens == y.tokens
    with pytest.raises(TypeError):
        text_probe.generate(PROMPTS, 2, temprature=0.5)  # a typo is not swallowed by **kwargs
