"""tools/train_tiny_english_saes.py: its learning rate is a stated multiple of gpt2probe's own default."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gpt2probe.configs.sae import SAETrainConfig
from gpt2probe.sae.config import SAEConfig
from gpt2probe.sae.training import resolve

TOOL = Path(__file__).resolve().parents[1] / "tools" / "train_tiny_english_saes.py"


def _tool():
    spec = importlib.util.spec_from_file_location("train_tiny_english_saes", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("d_sae", [512, 2048])
def test_lr_factor_multiplies_the_library_default(d_sae):
    tool = _tool()
    cfg = SAEConfig(d_in=16, d_sae=d_sae, architecture="topk", k=4, hook_name="blocks.0.hook_resid_post")
    library = resolve(SAETrainConfig(), cfg, n_tokens=100_000).lr
    assert tool.default_lr(d_sae) == pytest.approx(library, rel=1e-12)
    args = tool.parse_args(["--out", "unused", "--d-sae", str(d_sae)])
    assert (args.steps, args.lr_factor, args.lr) == (tool.STEPS, tool.LR_FACTOR, None)


def test_the_shipped_coders_record_the_tools_settings():
    """The shipped coders were trained with the tool's defaults (so its documented command reproduces them)."""
    import json

    tool = _tool()
    directory = Path(__file__).resolve().parents[1] / "gpt2probe" / "assets" / "tiny-english"
    for kind in ("saes", "transcoders"):
        settings = json.loads((directory / kind / "metrics.json").read_text(encoding="utf-8"))["settings"]
        assert settings["steps"] == tool.STEPS
        assert settings["lr"] == pytest.approx(tool.LR_FACTOR * tool.default_lr(settings["d_sae"]), rel=1e-12)
