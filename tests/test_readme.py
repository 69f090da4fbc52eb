"""The README's Python blocks run as printed, offline, on a machine whose Hugging Face cache is empty.

A newcomer pastes the Quick start before reading anything else: it must work without
network and say which model it used. The blocks run in a fresh interpreter with
``HF_HUB_OFFLINE=1`` and an empty ``HF_HOME``, from a directory outside the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def python_blocks(markdown: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```$", markdown, re.M | re.S)]


def test_readme_python_runs_offline(tmp_path):
    blocks = python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python block"
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, encoding="utf-8",
                          cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, f"the README's code failed:\n{done.stderr[-3000:]}"
    out = done.stdout
    assert "GPT-2 is not available" in out and "GPT2Probe('tiny-english'" in out, out  # the fallback, announced
    assert "Tokenized answer: [' Paris']" in out, out
