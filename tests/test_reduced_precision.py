"""float16 and bfloat16 models give the float32 answers, to the precision of their dtype.

The fixture has GPT-2 small's trap built in: one residual dimension with entries near
3,000 at the first position, whose square overflows float16.
Every result is compared with the same weights in float32; tolerances are relative to the
reference's magnitude and sized to each dtype's precision (float16: 10 mantissa bits,
bfloat16: 7).
"""

from __future__ import annotations

import pytest
import torch

import gpt2probe
from gpt2probe import names as N
from gpt2probe.generation import generate
from gpt2probe.interventions import patch
from gpt2probe.lens import direct_logit_attribution, logit_lens

from models import SMALL, build_gpt2, random_ids

DTYPES = [torch.float16, torch.bfloat16]
TOLERANCE = {torch.float16: 2e-2, torch.bfloat16: 8e-2}  # of the reference's largest magnitude
IDS = random_ids(SMALL, batch=2, pos=9, seed=8)


def outlier_model() -> torch.nn.Module:
    model = build_gpt2(SMALL)
    with torch.no_grad():
        model.transformer.wpe.weight[0, 7] += 3000.0  # like GPT-2 small's first position
    return model


@pytest.fixture(scope="module")
def probes() -> dict[torch.dtype, gpt2probe.GPT2Probe]:
    out = {}
    for dtype in [torch.float32, *DTYPES]:
        out[dtype] = gpt2probe.load(outlier_model().to(dtype), device="cpu")
    return out


def assert_near(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    got, want = got.double(), want.double()
    assert got.shape == want.shape, what
    assert torch.isfinite(got).all(), f"{what}: non-finite values in {dtype}"
    scale = max(want.abs().max().item(), 1.0)
    error = (got - want).abs().max().item() / scale
    assert error <= TOLERANCE[dtype], f"{what} in {dtype}: relative error {error:.3g} > {TOLERANCE[dtype]}"


def test_the_fixture_overflows_naive_float16_statistics(probes):
    """Guard: without float32 statistics this fixture would give inf (the test below would be vacuous)."""
    _, cache = probes[torch.float32].run_with_cache(IDS, names=[N.resid_pre(1)])
    x = cache[N.resid_pre(1)].half()
    assert torch.isinf((x - x.mean(-1, keepdim=True)).pow(2)).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_capture_matches_float32(probes, dtype):
    _, want = probes[torch.float32].run_with_cache(IDS)
    logits, got = probes[dtype].run_with_cache(IDS)
    assert logits.dtype == dtype
    for name in want:
        assert got[name].dtype == dtype, name
        if name.endswith("attn_scores"):  # masked entries are each dtype's own minimum
            keep = torch.ones(IDS.shape[1], IDS.shape[1], dtype=torch.bool).tril()
            assert_near(got[name][..., keep], want[name][..., keep], dtype, name)
        else:
            assert_near(got[name], want[name], dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_hooks_edit_in_float32(probes, dtype):
    """Replacing ``hook_normalized`` by itself changes nothing (no overflow on the way back)."""
    probe = probes[dtype]
    plain = probe(IDS)
    same = probe.run_with_hooks(IDS, {N.ln_normalized(1, 1): lambda x, hook: x.clone(), N.LN_FINAL_SCALE: lambda x, hook: x.clone()})
    assert torch.isfinite(same).all()
    assert_near(same, plain, dtype, "logits after identity LayerNorm edits")


@pytest.mark.parametrize("dtype", DTYPES)
def test_logit_lens_matches_float32(probes, dtype):
    want = logit_lens(probes[torch.float32], IDS, targets=5, k=3).items[0]
    got = logit_lens(probes[dtype], IDS, targets=5, k=3).items[0]
    for field in ("top_probs", "target_logprob", "kl_to_final", "entropy"):
        assert_near(getattr(got, field), getattr(want, field), dtype, f"lens {field}")
    assert (got.top_ids[:, :, 0] == want.top_ids[:, :, 0]).float().mean() >= 0.9


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("position", [0, -1])
def test_direct_logit_attribution_matches_float32(probes, dtype, position):
    want = direct_logit_attribution(probes[torch.float32], IDS[:1], 5, baseline=9, position=position)
    got = direct_logit_attribution(probes[dtype], IDS[:1], 5, baseline=9, position=position)
    assert abs(want.values.sum().item() + want.bias_term - want.total) < 1e-3  # exact in float32
    assert_near(got.values, want.values, dtype, "DLA parts")
    assert_near(got.head_values, want.head_values, dtype, "DLA heads")
    parts = got.values.sum().item() + got.bias_term
    assert abs(parts - got.total) <= TOLERANCE[dtype] * max(abs(want.total), want.values.abs().max().item(), 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_patching_matches_float32(probes, dtype):
    clean, corrupted = IDS[:1], IDS[1:]
    want = patch(probes[torch.float32], clean, corrupted, kind="resid_pre", answer=5, wrong=9, normalize=False)
    got = patch(probes[dtype], clean, corrupted, kind="resid_pre", answer=5, wrong=9, normalize=False)
    assert_near(got.values, want.values, dtype, "patching")


@pytest.mark.parametrize("dtype", DTYPES)
def test_generation_with_a_kv_cache_matches_full_forward_passes(probes, dtype):
    """Greedy tokens chosen step by step (KV cache, sdpa) are the argmax of full forward passes in the same dtype,
    and the recorded final streams match float32's on the same tokens."""
    probe = probes[dtype]
    gen = generate(probe, IDS, 4, greedy=True, stop_at_eos=False, capture=[N.LN_FINAL_NORMALIZED])
    full = torch.cat([IDS, gen.new_ids], dim=1)
    logits = probe(full)
    n = IDS.shape[1]
    chosen = logits[:, n - 1 : -1].float()
    picked = chosen.gather(-1, gen.new_ids[..., None])[..., 0]
    assert (picked >= chosen.max(-1).values - TOLERANCE[dtype] * chosen.abs().max()).all()  # argmax up to rounding
    _, want = probes[torch.float32].run_with_cache(full, names=[N.LN_FINAL_NORMALIZED])
    stepped = gen.step_activations(N.LN_FINAL_NORMALIZED)
    assert_near(stepped, want[N.LN_FINAL_NORMALIZED][:, n - 1 : -1], dtype, "generation's final stream")
