"""Steering: the hook adds exactly ``alpha * v``, and mean-difference vectors match prompt-by-prompt runs."""

from __future__ import annotations

import pytest
import torch

from gpt2probe import names as N
from gpt2probe.errors import LayerIndexError, PromptError
from gpt2probe.hooks import count_torch_hooks
from gpt2probe.interventions import mean_difference_vector, steer, steering_hook

from models import assert_close

POSITIVE = ["I love this", "What a wonderful, happy day", "Great!"]
NEGATIVE = ["I hate it", "Awful."]


def vector(probe, seed=0):
    return torch.randn(probe.cfg.d_model, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("stream, name", [("resid_pre", N.resid_pre), ("resid_mid", N.resid_mid),
                                          ("resid_post", N.resid_post)])
def test_steer_adds_exactly_alpha_v(vocab_probe, stream, name):
    """The stream captured after the steering hook is the unsteered one plus alpha * v, at every position."""
    probe, v, alpha = vocab_probe, vector(vocab_probe), 2.5
    prompts = ["The cat sat on the mat", "Hi"]
    _, plain = probe.run_with_cache(prompts, names=[name(1)])
    with steer(probe, 1, v, alpha, stream=stream):
        _, steered = probe.run_with_cache(prompts, names=[name(1)])
    assert_close(steered[name(1)], plain[name(1)] + alpha * v, 1e-5, "steered stream")
    assert count_torch_hooks(probe.model) == 0


def test_steering_selected_positions_only(vocab_probe):
    probe, v, alpha = vocab_probe, vector(vocab_probe, 1), -1.5
    prompt = "The cat sat on the mat"
    _, plain = probe.run_with_cache(prompt, names=[N.resid_pre(0)])
    with probe.hooks([(N.resid_pre(0), steering_hook(v, alpha, positions=[0, -1]))]):
        _, steered = probe.run_with_cache(prompt, names=[N.resid_pre(0)])
    expected = plain[N.resid_pre(0)].clone()
    expected[:, [0, -1]] += alpha * v
    assert_close(steered[N.resid_pre(0)], expected, 1e-5, "steered stream")
    with probe.hooks([(N.resid_pre(0), steering_hook(v, alpha, positions=40))]):
        with pytest.raises(PromptError, match="outside a run of 6 positions"):
            probe(prompt)


@pytest.mark.parametrize("positions", [None, [0, -1]])
def test_steering_effect_downstream_equals_a_hand_written_hook(vocab_probe, positions):
    """The logits under ``steer`` equal those of a plain PyTorch pre-hook adding alpha * v to block 1's input.

    This checks what steering does to everything after the edit (block 1, 2, ln_f, the unembedding),
    not the value the hook wrote; earlier streams stay exactly as they were.
    """
    probe, v, alpha = vocab_probe, vector(vocab_probe, 2), 3.0
    prompt = "The cat sat on the mat"
    plain_logits, plain = probe.run_with_cache(prompt, names=[N.resid_pre(0)])

    def add_vector(module, args, kwargs):
        hidden = (args[0] if args else kwargs["hidden_states"]).clone()
        index = slice(None) if positions is None else positions
        hidden[:, index] += alpha * v
        return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

    handle = probe.model.transformer.h[1].register_forward_pre_hook(add_vector, with_kwargs=True)
    try:
        ids = probe.to_tokens(prompt).ids
        with torch.no_grad():
            expected = probe.model(ids).logits
    finally:
        handle.remove()
    with steer(probe, 1, v, alpha, positions=positions):
        logits, steered = probe.run_with_cache(prompt, names=[N.resid_pre(0)])
    assert_close(logits, expected, 1e-4, "steered logits")
    assert not torch.allclose(logits, plain_logits, atol=1e-3)
    assert torch.equal(steered[N.resid_pre(0)], plain[N.resid_pre(0)])


def hand_vector(probe, a, b, layer, position):
    """Run every prompt alone (no padding), read resid_pre at ``position``, average each set, subtract."""
    def mean(prompts):
        rows = []
        for prompt in prompts:
            _, cache = probe.run_with_cache(prompt, names=[N.resid_pre(layer)])
            acts = cache[N.resid_pre(layer)][0]
            rows.append(acts.mean(0) if position is None else acts[position])
        return torch.stack(rows).mean(0)
    return mean(a) - mean(b)


@pytest.mark.parametrize("position", [-1, 0, -2, None])
def test_mean_difference_vector_matches_prompt_by_prompt_runs(vocab_probe, position):
    """The batches are left-padded (prompts of 2 to 6 tokens); each prompt is read at its own tokens."""
    probe = vocab_probe
    lengths = [len(probe.to_str_tokens(p)) for p in POSITIVE + NEGATIVE]
    assert len(set(lengths)) > 2
    got = mean_difference_vector(probe, POSITIVE, NEGATIVE, layer=1, position=position)
    assert got.shape == (probe.cfg.d_model,)
    assert_close(got, hand_vector(probe, POSITIVE, NEGATIVE, 1, position), 1e-5, "mean difference")


def test_mean_difference_vector_on_token_ids(small_probe):
    probe = small_probe
    a = torch.randint(0, probe.cfg.d_vocab, (3, 5), generator=torch.Generator().manual_seed(0))
    b = torch.randint(0, probe.cfg.d_vocab, (2, 5), generator=torch.Generator().manual_seed(1))
    _, ca = probe.run_with_cache(a, names=[N.resid_post(2)])
    _, cb = probe.run_with_cache(b, names=[N.resid_post(2)])
    expected = ca[N.resid_post(2)][:, -1].mean(0) - cb[N.resid_post(2)][:, -1].mean(0)
    assert_close(mean_difference_vector(probe, a, b, 2, stream="resid_post"), expected, 1e-5, "mean difference")


def test_errors(vocab_probe):
    probe, v = vocab_probe, vector(vocab_probe)
    with pytest.raises(ValueError, match=rf"\[{probe.cfg.d_model}\]"):
        with steer(probe, 0, torch.zeros(5), 1.0):
            pass
    with pytest.raises(LayerIndexError, match=r"layers 0\.\.1"):
        with steer(probe, 2, v, 1.0):
            pass
    with pytest.raises(ValueError, match="'resid_pre', 'resid_mid', 'resid_post'"):
        with steer(probe, 0, v, 1.0, stream="resid"):
            pass
    with pytest.raises(PromptError, match="position 3 is outside prompt 1, which has 1 tokens"):
        mean_difference_vector(probe, ["The cat sat on", "Great"], ["x"], 0, position=3)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(probe, 0, v, 1.0):
            raise RuntimeError("boom")
    assert count_torch_hooks(probe.model) == 0


# -- the vector's size relative to the stream it is added to ---------------------------------------
def hand_reference_norm(probe, prompts, layer):
    """Mean norm of resid_pre at each prompt's last token, one prompt at a time (no padding)."""
    norms = []
    for prompt in prompts:
        _, cache = probe.run_with_cache(prompt, names=[N.resid_pre(layer)])
        norms.append(float(cache[N.resid_pre(layer)][0, -1].norm()))
    return sum(norms) / len(norms)


def test_alpha_for_ratio_scales_the_vector_to_the_stream(vocab_probe):
    from gpt2probe.interventions import alpha_for_ratio, residual_norm

    probe, prompts = vocab_probe, ["The cat sat on", "Great", "I think you are"]
    reference = residual_norm(probe, prompts, 1)
    assert reference == pytest.approx(hand_reference_norm(probe, prompts, 1), rel=1e-5)
    v = mean_difference_vector(probe, POSITIVE, NEGATIVE, layer=1)
    for ratio in (0.25, 0.5, 2.0):
        alpha = alpha_for_ratio(v, reference, ratio)
        _, plain = probe.run_with_cache(prompts[0], names=[N.resid_pre(1)])
        with steer(probe, 1, v, alpha):
            _, steered = probe.run_with_cache(prompts[0], names=[N.resid_pre(1)])
        added = (steered[N.resid_pre(1)] - plain[N.resid_pre(1)])[0, -1]  # what the model actually received
        assert float(added.norm()) / reference == pytest.approx(ratio, rel=1e-4)


def test_alpha_for_ratio_refuses_what_it_cannot_scale(vocab_probe):
    from gpt2probe.errors import InvalidArgumentError
    from gpt2probe.interventions import alpha_for_ratio

    v = vector(vocab_probe)
    with pytest.raises(InvalidArgumentError, match="vector is zero"):
        alpha_for_ratio(torch.zeros(5), 3.0, 0.5)
    for ratio, norm in ((0.0, 3.0), (-1.0, 3.0), (0.5, 0.0)):
        with pytest.raises(InvalidArgumentError, match="must be > 0"):
            alpha_for_ratio(v, norm, ratio)
    with pytest.raises(InvalidArgumentError, match="finite"):
        alpha_for_ratio(v, 3.0, float("nan"))


@pytest.mark.parametrize("extra, ratio", [([], 0.5), (["--norm-ratio", "0.2"], 0.2)])
def test_steering_command_scales_its_default_vector_to_the_stream(vocab_dir, vocab_probe, tmp_path, capsys, extra, ratio):
    """The command's |alpha v| is the printed ratio of the stream's mean norm, checked against a hand computation."""
    import re

    from gpt2probe.cli import main

    prompt, layer = "I think you are", vocab_probe.cfg.n_layers // 2
    assert main(["steering", "--model", str(vocab_dir), "--device", "cpu", "--greedy", "--max-new-tokens", "2",
                 "--prompt", prompt, "--out", str(tmp_path / "s.html"), *extra]) == 0
    out = capsys.readouterr().out
    found = re.search(r"alpha = ([-\d.e+]+) .*set by --norm-ratio ([\d.]+).*\|alpha v\| = ([\d.]+) = ([\d.]+) x the mean "
                      r"\|resid\| at the prompts' last tokens \(([\d.]+)\)", out)
    assert found, out
    alpha, printed_ratio = float(found.group(1)), float(found.group(4))
    v = mean_difference_vector(vocab_probe, ["Love"], ["Hate"], layer=layer)  # the command's default prompts
    reference = hand_reference_norm(vocab_probe, [prompt], layer)
    assert alpha * float(v.norm()) / reference == pytest.approx(ratio, rel=2e-3)  # alpha printed to 4 digits
    assert printed_ratio == pytest.approx(ratio, abs=0.005)
    assert f"= {ratio:.2f} x the mean |resid|" in (tmp_path / "s.html").read_text(encoding="utf-8")  # in the report too


def test_steering_default_on_tiny_english_has_a_real_effect(tmp_path, capsys):
    """Offline, the default vector (code minus prose) visibly pushes tiny-english's prose toward code.

    The command's own alpha and layer are read from its output; the effect is measured independently
    over the unsteered greedy continuation of the default prompt (23 positions). Measured at the
    commit that set the default: mean KL(steered || plain) 2.16 nats, p(code-like tokens) 0.069 -> 0.197
    (2.9x), and the negated vector lowers it (0.043). Love/Hate, the GPT-2 default, gave newlines either way.
    """
    import re

    import gpt2probe
    from gpt2probe.cli import main
    from gpt2probe.experiments.steering import OFFLINE_NEGATIVE, OFFLINE_POSITIVE, OFFLINE_PROMPT, default_texts
    from gpt2probe.generation import generate
    from gpt2probe.shipped import shipped_model

    assert default_texts("tiny-english") == ([OFFLINE_PROMPT], OFFLINE_POSITIVE, OFFLINE_NEGATIVE)
    assert default_texts("gpt2") == (["I think you are"], ["Love"], ["Hate"])  # real GPT-2 keeps its default
    assert main(["steering", "--model", "tiny-english", "--device", "cpu", "--greedy", "--max-new-tokens", "2",
                 "--out", str(tmp_path / "s.html")]) == 0
    out = capsys.readouterr().out
    found = re.search(r"Steering blocks\.(\d+)\.hook_resid_pre with alpha = ([-\d.e+]+) x \(mean\((.*?)\) - mean\((.*?)\)\)",
                      out)
    assert found, out
    layer, alpha = int(found.group(1)), float(found.group(2))
    assert (found.group(3), found.group(4)) == (str(OFFLINE_POSITIVE), str(OFFLINE_NEGATIVE))

    probe = gpt2probe.load(shipped_model("tiny-english"), device="cpu")
    tokenizer = probe.tokenizer
    code = [i for i in range(probe.cfg.d_vocab) if any(c in tokenizer.decode([i]) for c in "_()=[]{}")]
    vector = mean_difference_vector(probe, OFFLINE_POSITIVE, OFFLINE_NEGATIVE, layer=layer)
    with torch.no_grad():
        text = OFFLINE_PROMPT + generate(probe, [OFFLINE_PROMPT], 20, greedy=True).continuations[0]
        before = probe(text)[0].double().softmax(-1)
        with steer(probe, layer, vector, alpha):
            after = probe(text)[0].double().softmax(-1)
        with steer(probe, layer, vector, -alpha):
            reversed_ = probe(text)[0].double().softmax(-1)
    kl = (after * (after.log() - before.log())).sum(-1).mean()
    p_before, p_after, p_reversed = (p[:, code].sum(-1).mean() for p in (before, after, reversed_))
    assert torch.isfinite(kl) and kl > 1.0, kl  # measured 2.16
    assert p_after > 2.0 * p_before, (p_before, p_after)  # measured 2.9x
    assert p_reversed < p_before, (p_before, p_reversed)  # measured 0.043 < 0.069
