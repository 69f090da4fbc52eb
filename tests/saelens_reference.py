"""Run inside .venv-saelens (SAELens 6, no gpt2probe): write SAELens SAEs, or read gpt2probe's, and record outputs.

    python saelens_reference.py DIR

- writes: SAELens saves one SAE per kind into DIR/theirs/<kind>/ with its outputs;
- reads: SAELens loads every DIR/ours/<kind>/ (written by gpt2probe) and records its outputs.

Inputs come from DIR/inputs.safetensors ("x": [batch, pos, d_in]); each <kind>/outputs.safetensors
holds "acts" (encode) and "out" (forward, no error term), so the test can compare the two
libraries' numbers. One process does both (importing SAELens takes most of the time).
Used by tests/test_sae_saelens.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

D_IN, D_SAE = 12, 40


def kinds():
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig
    from sae_lens.saes.transcoder import (
        JumpReLUTranscoder,
        JumpReLUTranscoderConfig,
        SkipTranscoder,
        SkipTranscoderConfig,
        Transcoder,
        TranscoderConfig,
    )

    sae_md = {"hook_name": "blocks.1.hook_resid_post", "model_name": "tiny"}
    tc_md = {"hook_name": "blocks.1.ln2.hook_normalized", "hook_name_out": "blocks.1.hook_mlp_out"}
    common = {"d_in": D_IN, "d_sae": D_SAE}
    return {
        "standard": (StandardSAE, StandardSAEConfig(**common, metadata=SAEMetadata(**sae_md))),
        "standard_no_bdec": (StandardSAE, StandardSAEConfig(**common, apply_b_dec_to_input=False, metadata=SAEMetadata(**sae_md))),
        "topk": (TopKSAE, TopKSAEConfig(**common, k=5, metadata=SAEMetadata(**sae_md))),
        "topk_rescaled": (TopKSAE, TopKSAEConfig(**common, k=5, rescale_acts_by_decoder_norm=True, metadata=SAEMetadata(**sae_md))),
        "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig(**common, metadata=SAEMetadata(**sae_md))),
        "expected_average": (StandardSAE, StandardSAEConfig(**common, normalize_activations="expected_average_only_in",
                                                            metadata=SAEMetadata(**sae_md))),
        "transcoder": (Transcoder, TranscoderConfig(**common, d_out=D_IN, apply_b_dec_to_input=False, metadata=SAEMetadata(**tc_md))),
        "skip_transcoder": (SkipTranscoder, SkipTranscoderConfig(**common, d_out=D_IN, apply_b_dec_to_input=False,
                                                                 metadata=SAEMetadata(**tc_md))),
        "jumprelu_transcoder": (JumpReLUTranscoder, JumpReLUTranscoderConfig(**common, d_out=D_IN, apply_b_dec_to_input=False,
                                                                             metadata=SAEMetadata(**tc_md))),
    }


@torch.no_grad()
def record(sae, x: torch.Tensor, folder: Path) -> None:
    sae.eval()
    acts = sae.encode(x)
    save_file({"acts": acts.contiguous(), "out": sae(x).contiguous()}, folder / "outputs.safetensors")


@torch.no_grad()
def write(root: Path, x: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(7)
    for name, (cls, cfg) in kinds().items():
        sae = cls(cfg)
        for pname, param in sae.named_parameters():
            scale = 0.3 if pname in ("threshold", "b_dec", "b_enc") else 1.0
            param.copy_(torch.randn(param.shape, generator=gen) * scale)
        if name.startswith("jumprelu"):
            sae.threshold.abs_()
        folder = root / name
        sae.save_model(folder)
        record(sae, x, folder)


@torch.no_grad()
def read(root: Path, x: torch.Tensor) -> None:
    from sae_lens import SAE

    for folder in sorted(p for p in root.iterdir() if (p / "cfg.json").is_file()):
        record(SAE.load_from_disk(folder), x, folder)


if __name__ == "__main__":
    root = Path(sys.argv[1])
    inputs = load_file(root / "inputs.safetensors")["x"]
    write(root / "theirs", inputs)
    read(root / "ours", inputs)
