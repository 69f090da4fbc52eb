"""The logit lens against independent computations: the model's logits, TransformerLens's
cache on the same weights, and a naive full-vocabulary reference."""

from __future__ import annotations

import importlib
import math
from types import SimpleNamespace

import pytest
import torch

import gpt2probe
from gpt2probe import NEXT_TOKEN, LensResult, logit_lens
from gpt2probe.errors import PromptError

from reference import transformer_lens_bridge
from sharp_model import save_sharp_model

PROMPTS = ["The cat sat on the mat because it was", "Hello there gpt-2!", "One"]


@pytest.fixture(scope="module")
def lens_model_dir(tmp_path_factory):
    return save_sharp_model(tmp_path_factory.mktemp("lens_model"))


@pytest.fixture(scope="module")
def probe(lens_model_dir):
    return gpt2probe.load(lens_model_dir)


@pytest.fixture(scope="module")
def bridge(lens_model_dir):
    TransformerBridge = transformer_lens_bridge()

    return TransformerBridge.boot_transformers(str(lens_model_dir), device="cpu")


def naive_lens(resid, ln_w, ln_b, eps, W_U, k, target_ids=None):
    """Full-vocabulary reference: [stream, pos, d_model] -> statistics, written out by hand."""
    mean = resid.mean(-1, keepdim=True)
    var = ((resid - mean) ** 2).mean(-1, keepdim=True)
    normalized = (resid - mean) / torch.sqrt(var + eps) * ln_w + ln_b
    logits = normalized.double() @ W_U.double()
    probs = torch.softmax(logits, -1)
    logp = torch.log(probs)
    out = {
        "top_probs": probs.topk(k, -1).values,
        "top_ids": probs.topk(k, -1).indices,
        "entropy": -(probs * logp).sum(-1),
        "kl": (probs[-1:] * (logp[-1:] - logp)).sum(-1),
    }
    if target_ids is not None:
        valid = target_ids >= 0
        ids = target_ids.clamp(min=0)
        t_logit = logits[:, torch.arange(len(ids)), ids]
        out["target_logprob"] = torch.where(valid, logp[:, torch.arange(len(ids)), ids], torch.nan)
        out["target_rank"] = torch.where(valid, (logits > t_logit[..., None]).sum(-1), -1)
    return out, logits


def test_last_stream_is_the_models_own_prediction(probe):
    result = logit_lens(probe, PROMPTS[0], k=7)
    item = result[0]
    logits = probe(PROMPTS[0])[0]
    top = torch.softmax(logits.double(), -1).topk(7, -1)
    assert torch.equal(item.top_ids[-1], top.indices)
    torch.testing.assert_close(item.top_probs[-1].double(), top.values, atol=1e-5, rtol=0)
    assert item.kl_to_final[-1].abs().max() < 1e-6
    assert item.stream_labels == ["embed", "L0", "L1", "L2"]


def test_every_stream_matches_transformer_lens_reference(probe, bridge):
    ids = probe.to_tokens(PROMPTS[0]).ids
    _, tl_cache = bridge.run_with_cache(ids)
    resid = torch.stack(
        [tl_cache[f"blocks.{l}.hook_resid_pre"][0] for l in range(probe.cfg.n_layers)]
        + [tl_cache[f"blocks.{probe.cfg.n_layers - 1}.hook_resid_post"][0]]
    )
    ln_f = bridge.original_model.transformer.ln_f
    target_ids = torch.cat([ids[0, 1:], torch.tensor([-1])])
    ref, _ = naive_lens(resid, ln_f.weight, ln_f.bias, ln_f.eps, bridge.W_U, 5, target_ids)

    item = logit_lens(probe, PROMPTS[0], k=5, targets=NEXT_TOKEN)[0]
    assert torch.equal(item.top_ids, ref["top_ids"])
    torch.testing.assert_close(item.top_probs.double(), ref["top_probs"], atol=1e-5, rtol=0)
    torch.testing.assert_close(item.entropy.double(), ref["entropy"], atol=1e-4, rtol=0)
    torch.testing.assert_close(item.kl_to_final.double(), ref["kl"], atol=1e-4, rtol=0)
    torch.testing.assert_close(item.target_logprob.double(), ref["target_logprob"], atol=1e-4, rtol=0, equal_nan=True)
    assert torch.equal(item.target_rank, ref["target_rank"])
    # the layers really disagree, so the comparison above is not vacuous
    assert item.kl_to_final[0].min() > 0.1
    assert not torch.equal(item.top_ids[0, :, 0], item.top_ids[-1, :, 0])


def test_targets_single_token_and_per_prompt(probe):
    target = " the"
    target_id = probe.to_single_token(target)
    item = logit_lens(probe, PROMPTS[0], targets=target)[0]
    assert item.target_tokens == [target] * len(item.positions)
    logits = probe(PROMPTS[0])[0].double()
    logp = logits.log_softmax(-1)[:, target_id]
    torch.testing.assert_close(item.target_logprob[-1].double(), logp, atol=1e-4, rtol=0)
    torch.testing.assert_close(item.target_prob[-1].double(), logp.exp(), atol=1e-5, rtol=0)
    ranks = (logits > logits[:, target_id : target_id + 1]).sum(-1)
    assert torch.equal(item.target_rank[-1], ranks)

    both = logit_lens(probe, PROMPTS[:2], targets=[" the", 13])
    assert both[0].target_tokens[0] == " the" and int(both[1].target_ids[0]) == 13
    with pytest.raises(ValueError, match="2 targets for 3 prompts"):
        logit_lens(probe, PROMPTS, targets=[" the", " a"])
    with pytest.raises(PromptError, match="not one"):
        logit_lens(probe, PROMPTS[0], targets=" the cat")


def test_next_token_target_is_missing_at_the_last_position(probe):
    item = logit_lens(probe, PROMPTS[1], targets=NEXT_TOKEN)[0]
    assert item.target_tokens[:-1] == item.str_tokens[1:]
    assert item.target_tokens[-1] == ""
    assert torch.isnan(item.target_prob[:, -1]).all() and (item.target_rank[:, -1] == -1).all()
    assert not torch.isnan(item.target_prob[:, :-1]).any()


def test_batch_of_different_lengths_equals_single_runs(probe):
    batched = logit_lens(probe, PROMPTS, k=4, targets=NEXT_TOKEN)
    for prompt, item in zip(PROMPTS, batched):
        alone = logit_lens(probe, prompt, k=4, targets=NEXT_TOKEN)[0]
        assert item.str_tokens == alone.str_tokens == probe.to_str_tokens(prompt)
        assert torch.equal(item.top_ids, alone.top_ids)
        for name in ("top_probs", "entropy", "kl_to_final", "target_logprob"):
            torch.testing.assert_close(getattr(item, name), getattr(alone, name), atol=1e-4, rtol=0, equal_nan=True)


def test_small_batches_and_chunks_give_the_same_result(probe):
    whole = logit_lens(probe, PROMPTS, k=3)
    pieces = logit_lens(probe, PROMPTS, k=3, batch_size=1, max_chunk_bytes=1)
    for a, b in zip(whole, pieces):
        assert torch.equal(a.top_ids, b.top_ids)
        torch.testing.assert_close(a.kl_to_final, b.kl_to_final, atol=1e-4, rtol=0)  # float32 sums in other blocks


def test_chunks_bound_the_projection(probe, monkeypatch):
    """No read-out block may hold more than the chunk budget's rows of vocabulary logits."""
    module = importlib.import_module("gpt2probe.model.layernorm")  # the lens normalises through the model seam's LayerNorm
    seen = []

    def layer_norm(x, *args, **kwargs):
        seen.append(x.shape[:-1].numel())
        return torch.nn.functional.layer_norm(x, *args, **kwargs)

    monkeypatch.setattr(module, "F", SimpleNamespace(layer_norm=layer_norm))
    budget = 4 * probe.cfg.d_vocab * 8  # eight rows of logits
    logit_lens(probe, PROMPTS[0], max_chunk_bytes=budget)
    n_streams = probe.cfg.n_layers + 1
    assert seen and max(seen) <= max(8, n_streams)
    assert sum(seen) == n_streams * len(probe.to_str_tokens(PROMPTS[0]))


def test_positions_selection(probe):
    n = len(probe.to_str_tokens(PROMPTS[0]))
    full = logit_lens(probe, PROMPTS[0])[0]
    last = logit_lens(probe, PROMPTS[0], positions="last")[0]
    picked = logit_lens(probe, PROMPTS[0], positions=[0, -2])[0]
    assert last.positions.tolist() == [n - 1] and torch.equal(last.top_ids[:, 0], full.top_ids[:, -1])
    assert picked.positions.tolist() == [0, n - 2]
    assert picked.position_labels == [full.str_tokens[0], full.str_tokens[n - 2]]
    assert torch.equal(picked.top_ids[:, 1], full.top_ids[:, n - 2])
    with pytest.raises(PromptError, match="outside a prompt"):
        logit_lens(probe, PROMPTS[0], positions=[n])


def test_include_mid_adds_the_stream_between_attention_and_mlp(probe):
    item = logit_lens(probe, PROMPTS[1], include_mid=True)[0]
    assert item.stream_labels == ["embed", "L0.mid", "L0", "L1.mid", "L1", "L2.mid", "L2"]
    _, cache = probe.run_with_cache(PROMPTS[1], names=["blocks.1.hook_resid_mid"])
    ln_f = probe.model.transformer.ln_f
    logits = ln_f(cache["blocks.1.hook_resid_mid"][0]) @ probe.W_U
    assert torch.equal(item.top_ids[3], logits.topk(5, -1).indices)


def test_target_statistics_come_together(probe):
    import dataclasses

    from gpt2probe.errors import ShapeError

    item = logit_lens(probe, PROMPTS[1], targets=NEXT_TOKEN)[0]
    for name in ("target_ids", "target_prob", "target_logprob", "target_rank"):
        with pytest.raises(ShapeError, match="come together"):
            dataclasses.replace(item, **{name: None})
    plain = logit_lens(probe, PROMPTS[1])[0]
    assert plain.target_ids is None and plain.target_tokens is None
    with pytest.raises(ShapeError, match="target_tokens were given without"):
        dataclasses.replace(plain, target_tokens=item.target_tokens)
    assert dataclasses.replace(item, target_tokens=None).target_tokens is None  # strings are optional


def test_bad_arguments(probe):
    with pytest.raises(ValueError, match="k must be between 1"):
        logit_lens(probe, PROMPTS[0], k=0)
    with pytest.raises(PromptError, match="empty"):
        logit_lens(probe, "")


def test_save_and_load_round_trip(probe, tmp_path):
    result = logit_lens(probe, PROMPTS[:2], targets=NEXT_TOKEN, k=3)
    path = tmp_path / "lens.safetensors"
    result.save(path)
    loaded = LensResult.load(path)
    assert loaded.model_name == result.model_name and loaded.k == 3 and len(loaded) == 2
    for a, b in zip(result, loaded):
        assert a.prompt == b.prompt and a.str_tokens == b.str_tokens and a.top_tokens == b.top_tokens
        assert a.target_tokens == b.target_tokens and a.stream_labels == b.stream_labels
        for name in ("top_ids", "top_probs", "entropy", "kl_to_final", "target_rank"):
            assert torch.equal(getattr(a, name), getattr(b, name))
        torch.testing.assert_close(a.target_prob, b.target_prob, equal_nan=True)
    assert "torch" in loaded.metadata["versions"]


def test_probabilities_are_distributions(probe):
    item = logit_lens(probe, PROMPTS[0], k=probe.cfg.d_vocab)[0]
    torch.testing.assert_close(item.top_probs.double().sum(-1), torch.ones(item.entropy.shape, dtype=torch.float64), atol=1e-4, rtol=0)
    assert (item.entropy >= 0).all() and (item.entropy <= math.log(probe.cfg.d_vocab) + 1e-4).all()


def test_lens_shows_the_copy_emerging_only_after_the_induction_layer(toy):
    """Ground truth from the hand-built toy model: only layer 1 (the induction head) predicts the copy."""
    from gpt2probe.toy import repeated_random_tokens

    half = 12
    ids = repeated_random_tokens(3, half, toy.cfg.d_vocab, seed=4)  # [BOS, x, x]
    result = logit_lens(toy, ids, targets=NEXT_TOKEN)
    second_half = slice(half + 1, 2 * half)  # positions whose next token is a copy of an earlier one
    first_half = slice(1, half)
    for item in result:
        assert item.stream_labels == ["embed", "L0", "L1"]
        embed, after_l0, after_l1 = item.target_prob[:, second_half]
        assert after_l1.min() > 0.9  # the copy is predicted after the induction layer
        assert embed.max() < 0.1 and after_l0.max() < 0.1  # and not before it
        assert item.target_prob[2, first_half].max() < 0.1  # nothing to copy in the first half


def test_statistics_are_accurate_on_the_trained_offline_model():
    """A trained model's peaked distributions expose float32 rounding in the read-out (a BLAS dot
    over 50k terms was off by 2e-3 nats); every position must match a float64 reference."""
    from gpt2probe.shipped import shipped_model

    probe = gpt2probe.load(shipped_model("tiny-english"), device="cpu")
    prompt = "The function returns a list of the values in the dictionary"
    item = logit_lens(probe, prompt, k=5)[0]
    _, cache = probe.run_with_cache(prompt, names=["blocks.*.hook_resid_pre", "blocks.3.hook_resid_post"])
    resid = cache.accumulated_resid()[:, 0].double()
    ln_f = probe.model.transformer.ln_f
    ref, _ = naive_lens(resid, ln_f.weight.double(), ln_f.bias.double(), ln_f.eps, probe.W_U, 5)
    torch.testing.assert_close(item.entropy.double(), ref["entropy"], atol=2e-5, rtol=0)
    torch.testing.assert_close(item.kl_to_final.double(), ref["kl"], atol=2e-5, rtol=0)
    torch.testing.assert_close(item.top_probs.double(), ref["top_probs"], atol=1e-5, rtol=0)


# -- small KLs are exact (issue 25) -----------------------------------------------------------------

def _float64_kl_to_final(streams, ln, W_U):
    """Everything in float64: layer norm, projection, softmaxes."""
    d = streams.shape[-1]
    logp = torch.log_softmax(torch.nn.functional.layer_norm(
        streams.double(), (d,), ln.weight.detach().double(), ln.bias.detach().double(), ln.eps) @ W_U.double(), -1)
    return (logp[-1].exp() * (logp[-1] - logp[:-1])).sum(-1)


def _near_final_streams(seed: int, n_pos: int, scale: float | torch.Tensor):
    """A perturbed LayerNorm, an unembedding, and three streams: two ``scale`` steps from the final one, then it.

    ``scale`` is one number, or ``[n_pos, 1]``: a step per position. Returns ``(streams, ln, W_U)``.
    """
    gen = torch.Generator().manual_seed(seed)
    d_model, d_vocab = 24, 3001
    ln = torch.nn.LayerNorm(d_model)
    with torch.no_grad():
        ln.weight.add_(0.2 * torch.randn(d_model, generator=gen))
        ln.bias.add_(0.2 * torch.randn(d_model, generator=gen))
    W_U = torch.randn(d_model, d_vocab, generator=gen)
    final = 3 * torch.randn(n_pos, d_model, generator=gen)
    streams = torch.stack([final + scale * torch.randn(n_pos, d_model, generator=gen),
                           final + 0.5 * scale * torch.randn(n_pos, d_model, generator=gen), final])
    return streams, ln, W_U


@pytest.mark.parametrize("scale", [1e-1, 1e-2, 1e-3, 1e-4])
def test_kl_to_final_is_exact_where_small_and_never_negative(scale):
    """Streams a small step from the final one: KL from 1e-2 down to 1e-8 nats, all within 1e-3 relative."""
    from gpt2probe.lens.logit_lens import read_out

    streams, ln, W_U = _near_final_streams(seed=1, n_pos=9, scale=scale)
    got = read_out(streams, ln, W_U, k=1, max_chunk_bytes=2**16).kl_to_final.double()
    expected = _float64_kl_to_final(streams, ln, W_U)
    assert (got >= 0).all() and got[-1].abs().max() == 0
    assert float(((got[:-1] - expected) / expected).abs().max()) < 1e-3, (scale, float(expected.min()))


def test_exact_small_kls_land_in_their_own_chunks():
    """One position per chunk, small and large KLs alternating: each chunk's exact KLs go back to that chunk.

    The exact path runs after the chunk loop (one host sync per read-out, not one per chunk), so a
    chunk paired with the wrong mask or the wrong positions would show here.
    """
    from gpt2probe.lens.logit_lens import EXACT_KL_BELOW, read_out

    n_pos = 11
    scales = torch.tensor([1e-3 if pos % 3 == 0 else 1.0 for pos in range(n_pos)])[:, None]
    streams, ln, W_U = _near_final_streams(seed=3, n_pos=n_pos, scale=scales)
    d_vocab = W_U.shape[1]
    expected = _float64_kl_to_final(streams, ln, W_U)
    small = expected < EXACT_KL_BELOW
    assert small[:, ::3].all() and not small[:, 1::3].any()  # both kinds, in separate chunks
    for chunk_bytes in (4 * d_vocab * 3, 4 * d_vocab * 6, 64 * 2**20):  # one, two, or all positions per chunk
        got = read_out(streams, ln, W_U, k=1, max_chunk_bytes=chunk_bytes).kl_to_final.double()
        assert got[-1].abs().max() == 0
        assert float(((got[:-1][small] - expected[small]) / expected[small]).abs().max()) < 1e-3, chunk_bytes
        torch.testing.assert_close(got[:-1][~small], expected[~small], atol=1e-5, rtol=0)


def test_kl_to_final_through_logit_lens_on_a_nearly_inert_last_block():
    """A model whose last block barely writes: the lens's KL of the second-to-last stream equals float64."""
    from models import SMALL, build_gpt2

    model = build_gpt2(SMALL)
    with torch.no_grad():
        last = model.transformer.h[-1]
        for module in (last.attn.c_proj, last.mlp.c_proj):
            module.weight.mul_(1e-4)
            module.bias.mul_(1e-4)
    probe = gpt2probe.load(model, device="cpu")
    ids = torch.arange(3, 15)[None]
    item = logit_lens(probe, ids)[0]
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    # HF's last hidden state has been through ln_f: the final stream is the last block's output before it
    _, cache = probe.run_with_cache(ids, names=[f"blocks.{SMALL.n_layer - 1}.hook_resid_post"])
    streams = torch.stack([*hidden[:-1], cache[f"blocks.{SMALL.n_layer - 1}.hook_resid_post"]])[:, 0]
    expected = _float64_kl_to_final(streams, model.transformer.ln_f, model.lm_head.weight.detach().T)
    got = item.kl_to_final.double()
    assert float(expected[-1].max()) < 1e-5  # the stream before the last block: a tiny KL
    assert (got >= 0).all()
    assert float(((got[:-1] - expected) / expected).abs().max()) < 1e-3
