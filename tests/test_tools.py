"""The asset builders in ``tools/`` refuse to run without ``--out``: the shipped models are never overwritten by default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.mark.parametrize("tool", ["build_toy_induction.py", "train_offline_model.py"])
def test_builder_requires_out(tool):
    done = subprocess.run([sys.executable, str(TOOLS / tool)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--out" in done.stderr.splitlines()[-1]


def test_train_tool_reuses_the_package_tokenizer():
    source = (TOOLS / "train_offline_model.py").read_text(encoding="utf-8")
    assert "from gpt2probe.tokenizer import gpt2_tokenizer" in source
    assert "GPT2TokenizerFast(" not in source
