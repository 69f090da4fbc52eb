"""``gpt2probe.SAE`` and ``gpt2probe.Transcoder``: each architecture's math against an independent loop, and known answers."""

from __future__ import annotations

import pytest
import torch

import gpt2probe
from gpt2probe import SAE, SAEConfig, Transcoder

from models import assert_close

D_IN, D_SAE = 7, 13


def random_coder(cls, seed: int = 0, **settings):
    """An SAE (or transcoder) with every parameter drawn at random, biases and thresholds included."""
    settings.setdefault("hook_name", "blocks.1.hook_resid_post")
    coder = cls(SAEConfig(d_in=D_IN, d_sae=D_SAE, **settings))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in coder.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * (0.3 if name == "threshold" else 1.0))
    return coder


def reference_acts(coder, x: torch.Tensor) -> torch.Tensor:
    """Feature activations token by token, feature by feature, in float64 (no shared code with gpt2probe)."""
    c = coder.cfg
    W_enc, b_enc, W_dec, b_dec = (p.detach().double() for p in (coder.W_enc, coder.b_enc, coder.W_dec, coder.b_dec))
    rows = x.double().reshape(-1, c.d_in)
    out = torch.zeros(rows.shape[0], c.d_sae, dtype=torch.float64)
    for t, row in enumerate(rows):
        if c.apply_b_dec_to_input:
            row = row - b_dec
        pre = [float(sum(row[i] * W_enc[i, f] for i in range(c.d_in)) + b_enc[f]) for f in range(c.d_sae)]
        if c.rescale_acts_by_decoder_norm:
            pre = [p * float(W_dec[f].norm()) for f, p in enumerate(pre)]
        if c.architecture == "standard":
            acts = [max(p, 0.0) for p in pre]
        elif c.architecture == "topk":
            keep = sorted(range(c.d_sae), key=lambda f: -pre[f])[: c.k]
            acts = [max(pre[f], 0.0) if f in keep else 0.0 for f in range(c.d_sae)]
        else:
            th = coder.threshold.detach().double()
            acts = [p if p > th[f] and p > 0 else 0.0 for f, p in enumerate(pre)]
        out[t] = torch.tensor(acts)
    return out.reshape(*x.shape[:-1], c.d_sae)


@pytest.mark.parametrize(
    "settings",
    [
        {"architecture": "standard"},
        {"architecture": "standard", "apply_b_dec_to_input": False},
        {"architecture": "topk", "k": 4},
        {"architecture": "topk", "k": 4, "rescale_acts_by_decoder_norm": True},
        {"architecture": "jumprelu"},
        {"architecture": "batchtopk", "k": 3.5},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_encode_decode_match_a_reference_loop(settings):
    sae = random_coder(SAE, **settings)
    x = torch.randn(2, 3, D_IN, generator=torch.Generator().manual_seed(5))
    acts = sae.encode(x)
    assert acts.shape == (2, 3, D_SAE)
    assert_close(acts, reference_acts(sae, x).float(), 1e-5, "encode")
    assert (acts >= 0).all()
    if settings["architecture"] == "topk":
        assert ((acts > 0).sum(-1) <= 4).all()
    # decode: a sum of decoder rows weighted by the activations, plus b_dec
    scale = sae.W_dec.norm(dim=-1) if settings.get("rescale_acts_by_decoder_norm") else torch.ones(D_SAE)
    expected = torch.einsum("bps,sd->bpd", acts.double() / scale.double(), sae.W_dec.double()) + sae.b_dec.double()
    assert_close(sae.decode(acts), expected.float(), 1e-5, "decode")
    assert_close(sae(x), sae.decode(sae.encode(x)), 0.0, "forward")


def test_a_thresholded_feature_is_off_at_its_threshold_and_on_above():
    cfg = SAEConfig(d_in=2, d_sae=2, architecture="jumprelu", hook_name="blocks.0.hook_resid_pre", apply_b_dec_to_input=False)
    sae = SAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(2))
        sae.b_enc.zero_()
        sae.threshold.copy_(torch.tensor([0.5, -1.0]))
    acts = sae.encode(torch.tensor([[0.5, -0.5], [0.51, 0.25]]))
    # 0.5 is not above 0.5; a negative threshold still keeps the ReLU (as SAELens does)
    assert acts.tolist() == [[0.0, 0.0], [pytest.approx(0.51), 0.25]]


def test_identity_sae_reconstructs_a_non_negative_input_exactly():
    """Known answer: W_enc = W_dec = I, no biases, ReLU: decode(encode(x)) = x for x >= 0."""
    sae = SAE(SAEConfig(d_in=5, d_sae=5, hook_name="blocks.0.hook_resid_post"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(5))
        sae.W_dec.copy_(torch.eye(5))
    x = torch.rand(3, 5)
    assert torch.equal(sae(x), x)
    assert torch.equal(sae.encode(-x), torch.zeros_like(x))


def test_transcoder_adds_its_skip_term_after_decoding():
    tc = random_coder(Transcoder, hook_name="blocks.1.ln2.hook_normalized", hook_name_out="blocks.1.hook_mlp_out", skip=True)
    assert tc.cfg.layer == 1 and tc.cfg.apply_b_dec_to_input is False
    assert tc.W_skip.shape == (D_IN, D_IN) and tc.W_dec.shape == (D_SAE, D_IN) and tc.W_enc.shape == (D_IN, D_SAE)
    x = torch.randn(4, D_IN, generator=torch.Generator().manual_seed(1))
    expected = tc.decode(tc.encode(x)).double() + x.double() @ tc.W_skip.double()
    assert_close(tc(x), expected.float(), 1e-5, "transcoder forward")
    assert_close(tc.encode(x), reference_acts(tc, x).float(), 1e-5, "transcoder encode")
    no_skip = random_coder(Transcoder, hook_name="blocks.1.ln2.hook_normalized", hook_name_out="blocks.1.hook_mlp_out")
    assert no_skip.W_skip is None
    assert_close(no_skip(x), no_skip.decode(no_skip.encode(x)), 0.0)


def test_transcoder_config_for_a_layer_reads_the_mlp_input_and_writes_its_output():
    cfg = SAEConfig.for_transcoder(3, d_model=D_IN, d_sae=D_SAE, architecture="topk", k=2)
    assert (cfg.hook_name, cfg.hook_name_out, cfg.layer) == ("blocks.3.ln2.hook_normalized", "blocks.3.hook_mlp_out", 3)
    assert isinstance(Transcoder(cfg), Transcoder)
    with pytest.raises(gpt2probe.InvalidArgumentError, match="Transcoder"):
        SAE(cfg)
    with pytest.raises(gpt2probe.InvalidArgumentError, match="SAE"):
        Transcoder(SAEConfig(d_in=3, d_sae=4, hook_name="blocks.0.hook_resid_post"))


@pytest.mark.parametrize(
    "settings, error, match",
    [
        ({"architecture": "gated"}, gpt2probe.InvalidArgumentError, "architecture"),
        ({"architecture": "topk"}, gpt2probe.InvalidTypeError, "k"),
        ({"architecture": "topk", "k": 14}, gpt2probe.InvalidArgumentError, "exceed"),
        ({"architecture": "topk", "k": True}, gpt2probe.InvalidTypeError, "k"),
        ({"architecture": "standard", "k": 3}, gpt2probe.InvalidArgumentError, "k=None"),
        ({"normalize_activations": "layer_norm"}, gpt2probe.InvalidArgumentError, "layer_norm"),
        ({"hook_name": "blocks.1.hook_resid_pots"}, gpt2probe.HookNameError, "hook_resid_post"),
        ({"d_out": 9}, gpt2probe.InvalidArgumentError, "Transcoder"),
        ({"skip": True}, gpt2probe.InvalidArgumentError, "transcoder"),
        ({"d_sae": 0}, gpt2probe.InvalidArgumentError, "d_sae"),
        ({"hook_name_out": "blocks.1.hook_mlp_out", "apply_b_dec_to_input": True}, gpt2probe.InvalidArgumentError, "b_dec"),
        ({"rescale_acts_by_decoder_norm": True}, gpt2probe.InvalidArgumentError, "top-k"),
        # a device this machine lacks: was torch's AssertionError ("not compiled with CUDA") when the SAE was built
        ({"device": torch.device("cuda", 99)}, gpt2probe.InvalidArgumentError, "SAEConfig.device 'cuda:99' asks for CUDA"),
    ],
)
def test_bad_configs_are_refused_with_a_reason(settings, error, match):
    full = {"d_in": D_IN, "d_sae": D_SAE, "hook_name": "blocks.1.hook_resid_post", **settings}
    with pytest.raises(error, match=match):
        SAEConfig(**full)


def test_config_is_frozen():
    cfg = SAEConfig(d_in=3, d_sae=4, hook_name="blocks.0.hook_resid_post")
    with pytest.raises(AttributeError):
        cfg.k = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        SAEConfig(d_in=3, d_sae=4, hook_name="blocks.0.hook_resid_post", dsae=5)  # type: ignore[call-arg]


def test_inputs_are_checked_never_cast():
    sae = random_coder(SAE)
    with pytest.raises(gpt2probe.ShapeError, match="7 wide"):
        sae.encode(torch.randn(2, 6))
    with pytest.raises(gpt2probe.InvalidArgumentError, match="float64"):
        sae.encode(torch.randn(2, D_IN, dtype=torch.float64))
    with pytest.raises(gpt2probe.ShapeError, match="13 wide"):
        sae.decode(torch.randn(2, D_IN))


def test_moves_update_the_config_and_keep_the_numbers():
    sae = random_coder(SAE, architecture="topk", k=3)
    x = torch.randn(3, D_IN, generator=torch.Generator().manual_seed(2))
    before = sae.encode(x)
    moved = sae.to(torch.float64)
    assert moved is sae and sae.cfg.dtype == torch.float64 and sae.W_dec.dtype == torch.float64
    assert_close(sae.encode(x.double()), before.double(), 1e-5)
    sae.to(device="cpu", dtype=torch.float32)
    assert sae.cfg.dtype == torch.float32 and sae.cfg.device == torch.device("cpu")
    with pytest.raises(TypeError):  # torch's own refusal
        sae.to(torch.int64)


def test_reprs_are_short_and_escaped():
    sae = random_coder(SAE, architecture="topk", k=3, model_name="<b>tiny</b>")
    assert repr(sae) == "SAE(topk, k=3, blocks.1.hook_resid_post, d_in=7, d_sae=13, float32, cpu)"
    html = sae._repr_html_()
    assert "blocks.1.hook_resid_post" in html and "<b>tiny" not in html and "&lt;b&gt;tiny" in html
    tc = random_coder(Transcoder, hook_name="blocks.0.ln2.hook_normalized", hook_name_out="blocks.0.hook_mlp_out", skip=True)
    assert repr(tc) == ("Transcoder(standard, blocks.0.ln2.hook_normalized -> blocks.0.hook_mlp_out, d_in=7, d_sae=13, "
                        "skip, float32, cpu)")


def test_seeded_initialisation_is_reproducible_with_unit_decoder_rows():
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, hook_name="blocks.0.hook_resid_post")
    a, b = (SAE(cfg, generator=torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a.W_dec, b.W_dec) and torch.equal(a.W_enc, a.W_dec.T)
    assert_close(a.W_dec.norm(dim=-1), torch.ones(D_SAE), 1e-6)
