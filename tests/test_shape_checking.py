"""GPT2PROBE_CHECK_SHAPES=1 turns on run-time checks of the shape annotations for users (the suite always has them)."""

from __future__ import annotations

import os
import subprocess
import sys

CALL = (
    "import torch, gpt2probe\n"
    "from gpt2probe.tokens import position_ids\n"
    "try:\n"
    "    position_ids(torch.ones(3, dtype=torch.long))  # annotated [batch, pos]: a 1-d mask is wrong\n"
    "except Exception as error:\n"
    "    print(type(error).__name__)\n"
    "else:\n"
    "    print('unchecked')\n"
)


def _run(value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GPT2PROBE_CHECK_SHAPES"}
    if value is not None:
        env["GPT2PROBE_CHECK_SHAPES"] = value
    done = subprocess.run([sys.executable, "-c", CALL], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_shapes_are_checked_only_when_asked():
    assert _run("1") == "TypeCheckError"
    assert _run(None) == "unchecked"
    assert _run("0") == "unchecked"
