"""Interop with SAELens 6 itself, run in its own environment (.venv-saelens: ``scripts/setup.sh --saelens``).

SAELens needs TransformerLens < 4, which cannot live beside .venv's TransformerLens 4, so
tests/saelens_reference.py runs there in a subprocess: SAELens writes standard, top-k,
JumpReLU SAEs and transcoders, gpt2probe loads them and must encode and reconstruct the
same inputs to 1e-5; gpt2probe writes its own and SAELens must read them back to the same
numbers. Skipped, with the reason, where the environment is absent.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gpt2probe import SAE, SAEConfig, Transcoder

from models import assert_close

ROOT = Path(__file__).resolve().parent.parent
SAELENS_PYTHON = Path(os.environ.get("GPT2PROBE_SAELENS_PYTHON", ROOT / ".venv-saelens" / "bin" / "python"))
SCRIPT = Path(__file__).resolve().parent / "saelens_reference.py"
D_IN, D_SAE = 12, 40  # as in saelens_reference.py
TOL = 1e-5

pytestmark = pytest.mark.skipif(
    not SAELENS_PYTHON.is_file() and not os.environ.get("GPT2PROBE_REQUIRE_SAELENS"),  # CI requires it
    reason=f"no SAELens reference environment at {SAELENS_PYTHON} (build it with scripts/setup.sh --saelens)",
)

THEIRS = {  # folder SAELens writes -> the gpt2probe class that reads it, and the architecture it must see
    "standard": (SAE, "standard"),
    "standard_no_bdec": (SAE, "standard"),
    "topk": (SAE, "topk"),
    "topk_rescaled": (SAE, "topk"),
    "jumprelu": (SAE, "jumprelu"),
    "expected_average": (SAE, "standard"),
    "transcoder": (Transcoder, "standard"),
    "skip_transcoder": (Transcoder, "standard"),
    "jumprelu_transcoder": (Transcoder, "jumprelu"),
}


def _ours() -> dict[str, SAE | Transcoder]:
    """gpt2probe's SAEs of every kind, every parameter random (non-zero biases and thresholds)."""
    sae_hook = {"hook_name": "blocks.1.hook_resid_post", "model_name": "tiny"}
    tc_hook = {"hook_name": "blocks.1.ln2.hook_normalized", "hook_name_out": "blocks.1.hook_mlp_out"}
    settings = {
        "standard": (SAE, {"architecture": "standard", **sae_hook}),
        "topk": (SAE, {"architecture": "topk", "k": 6, **sae_hook}),
        "topk_rescaled": (SAE, {"architecture": "topk", "k": 6, "rescale_acts_by_decoder_norm": True, **sae_hook}),
        "jumprelu": (SAE, {"architecture": "jumprelu", **sae_hook}),
        "batchtopk": (SAE, {"architecture": "batchtopk", "k": 4.5, **sae_hook}),
        "skip_transcoder": (Transcoder, {"architecture": "standard", "skip": True, **tc_hook}),
        "jumprelu_transcoder": (Transcoder, {"architecture": "jumprelu", **tc_hook}),
    }
    gen = torch.Generator().manual_seed(3)
    out = {}
    for name, (cls, kw) in settings.items():
        coder = cls(SAEConfig(d_in=D_IN, d_sae=D_SAE, **kw))
        with torch.no_grad():
            for pname, param in coder.named_parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * (0.3 if pname.startswith(("b_", "thr")) else 1.0))
            if coder.threshold is not None:
                coder.threshold.abs_()
        out[name] = coder
    return out


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    """Run SAELens once: it writes its SAEs and reads ours; returns the folder, the inputs and our modules."""
    root = tmp_path_factory.mktemp("saelens")
    x = torch.randn(3, 5, D_IN, generator=torch.Generator().manual_seed(1))
    save_file({"x": x}, root / "inputs.safetensors")
    ours = _ours()
    for name, coder in ours.items():
        coder.save(root / "ours" / name)
    run = subprocess.run([str(SAELENS_PYTHON), str(SCRIPT), str(root)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert run.returncode == 0, f"the SAELens script failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return root, x, ours


@pytest.mark.parametrize("name", sorted(THEIRS))
def test_saelens_files_load_and_compute_the_same(exchange, name):
    root, x, _ = exchange
    cls, architecture = THEIRS[name]
    coder = cls.load(root / "theirs" / name)
    assert coder.cfg.architecture == architecture and coder.cfg.d_in == D_IN and coder.cfg.d_sae == D_SAE
    expected = load_file(root / "theirs" / name / "outputs.safetensors")
    acts = coder.encode(x)
    assert (expected["acts"] > 0).any(), "the reference fires no feature: the comparison would prove nothing"
    assert_close(acts, expected["acts"], TOL, f"{name}: encode")
    assert_close(coder(x), expected["out"], TOL, f"{name}: forward")


@pytest.mark.parametrize("name", ["standard", "topk", "topk_rescaled", "jumprelu", "batchtopk", "skip_transcoder",
                                  "jumprelu_transcoder"])
def test_files_gpt2probe_writes_read_back_in_saelens(exchange, name):
    root, x, ours = exchange
    coder = ours[name]
    theirs = load_file(root / "ours" / name / "outputs.safetensors")  # batch top-k: read by SAELens as JumpReLU
    assert_close(theirs["acts"], coder.encode(x), TOL, f"{name}: SAELens's encode of our file")
    assert_close(theirs["out"], coder(x), TOL, f"{name}: SAELens's forward of our file")
    reloaded = type(coder).load(root / "ours" / name)
    assert reloaded.cfg.architecture == coder.cfg.architecture
    assert_close(reloaded.encode(x), coder.encode(x), 0.0, f"{name}: our own round trip, encode")
    assert_close(reloaded(x), coder(x), 0.0, f"{name}: our own round trip, forward")
