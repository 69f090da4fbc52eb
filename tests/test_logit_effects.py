"""Logit effects of a direction: through ln_f's weight and W_U, as TransformerLens's folded W_U (Neuronpedia) gives them."""

from __future__ import annotations

import pytest
import torch

from gpt2probe.errors import NonFiniteError, ShapeError
from gpt2probe.lens import logit_effects, top_logit_effects

from reference import transformer_lens_bridge


def _directions(d_model: int, n: int = 9) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    # A non-zero mean per direction: the centring over d_model must matter too.
    return torch.randn(n, d_model, generator=gen) + torch.linspace(-1.0, 1.0, n)[:, None]


def _folded_w_u(model) -> torch.Tensor:
    """TransformerLens's fold_layer_norm + center_unembed, written out on the module's own weights."""
    gamma = model.transformer.ln_f.weight.detach().float()
    w_u = model.lm_head.weight.detach().float().T  # [d_model, d_vocab]
    folded = gamma[:, None] * w_u
    folded = folded - folded.mean(0, keepdim=True)  # each token's column centred over d_model
    return folded - folded.mean(1, keepdim=True)  # each d_model row centred over the vocabulary


def test_the_fixture_has_a_non_uniform_ln_f_that_changes_the_ranking(small_probe):
    gamma = small_probe.model.transformer.ln_f.weight.detach()
    assert float(gamma.std()) > 0.1  # perturbed, not HF's all-ones
    dirs = _directions(small_probe.cfg.d_model)
    plain = (dirs @ small_probe.model.lm_head.weight.detach().T).topk(5).indices
    folded = (dirs @ _folded_w_u(small_probe.model)).topk(5).indices
    gamma_only = (dirs @ (gamma[:, None] * small_probe.model.lm_head.weight.detach().T)).topk(5).indices
    # Most directions rank their top tokens differently with and without ln_f's weight.
    assert int((plain != gamma_only).any(dim=-1).sum()) >= 6
    assert int((plain != folded).any(dim=-1).sum()) >= 6


def test_logit_effects_match_the_folded_unembedding(small_probe):
    dirs = _directions(small_probe.cfg.d_model)
    expected = dirs @ _folded_w_u(small_probe.model)
    torch.testing.assert_close(logit_effects(dirs, small_probe), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logit_effects(dirs[3], small_probe), expected[3], atol=1e-5, rtol=1e-5)


def test_logit_effects_match_transformer_lens_compatibility_mode(small_dir, small_probe):
    # TransformerLens 4's HookedTransformer numerics (fold_ln, center_writing_weights, center_unembed),
    # the model SAEDashboard / sae_vis read W_U from.
    bridge = transformer_lens_bridge().boot_transformers(str(small_dir), device="cpu")
    bridge.enable_compatibility_mode()
    dirs = _directions(small_probe.cfg.d_model)
    with torch.no_grad():
        expected = dirs @ bridge.W_U.float()
    torch.testing.assert_close(logit_effects(dirs, small_probe), expected, atol=1e-5, rtol=1e-5)


def test_top_logit_effects_in_chunks_are_the_full_rows_top_k(small_probe):
    dirs = _directions(small_probe.cfg.d_model, n=11)
    full = logit_effects(dirs, small_probe)
    up_v, up_i, down_v, down_i = top_logit_effects(dirs, small_probe, k=4, chunk=3)
    assert up_i.tolist() == full.topk(4).indices.tolist()
    assert down_i.tolist() == full.topk(4, largest=False).indices.tolist()
    torch.testing.assert_close(up_v, full.topk(4).values)
    torch.testing.assert_close(down_v, full.topk(4, largest=False).values)


def test_top_logit_effects_read_w_u_once_per_call_not_per_chunk(small_probe):
    # W_U.float() copies [d_model, d_vocab] on a float16 or bfloat16 model: one copy per call, whatever the chunks.
    class Counting:
        def __init__(self, probe):
            self.probe, self.reads = probe, 0

        @property
        def W_U(self):  # noqa: N802 (the probe's name)
            self.reads += 1
            return self.probe.W_U

        @property
        def weights(self):
            return self.probe.weights

    counting = Counting(small_probe)
    dirs = _directions(small_probe.cfg.d_model, n=11)
    up_v, up_i, down_v, down_i = top_logit_effects(dirs, counting, k=4, chunk=3)  # four chunks
    assert counting.reads == 1
    # The same numbers, bit for bit, as logit_effects on each chunk (what each chunk computed before).
    per_chunk = torch.cat([logit_effects(dirs[start:start + 3], small_probe) for start in range(0, 11, 3)])
    assert torch.equal(up_v, per_chunk.topk(4).values) and torch.equal(up_i, per_chunk.topk(4).indices)
    assert torch.equal(down_v, per_chunk.topk(4, largest=False).values)
    assert torch.equal(down_i, per_chunk.topk(4, largest=False).indices)


def test_bad_directions_are_refused(small_probe):
    d_model = small_probe.cfg.d_model
    with pytest.raises(ShapeError, match=f"d_model={d_model}"):
        logit_effects(torch.zeros(2, d_model + 1), small_probe)
    with pytest.raises(ShapeError, match=r"\[unit, d_model\]"):
        logit_effects(torch.zeros(2, 3, d_model), small_probe)
    bad = torch.zeros(2, d_model)
    bad[1, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="logit effects"):
        logit_effects(bad, small_probe)
