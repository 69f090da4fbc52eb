"""Data-parallel training under torchrun (gloo on CPU): 2 processes train the same SAE and transcoder as 1 process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import gpt2probe
from gpt2probe import SAE, Transcoder
from gpt2probe.sae.distributed import World

REPO = Path(__file__).resolve().parent.parent
TEXTS = [f"Document {i}: the quick brown fox jumps over the lazy dog {i} times, and then it rests." * 3
         for i in range(12)]
# 64 rows a step split 32 + 32; windows_per_pass=3 splits each pass 2 + 1 windows.
SETTINGS = {"d_sae": 20, "k": 4, "seed": 3, "seq_len": 16, "windows_per_pass": 3, "steps": 12, "train_batch_size_tokens": 64,
            "buffer_tokens": 256, "progress": False}
RUNS = {"sae": (SAE, {"hook": "blocks.1.hook_resid_post"}),
        "transcoder": (Transcoder, {"layer": 0, "skip": True}),
        "batchtopk": (SAE, {"hook": "blocks.1.hook_resid_post", "architecture": "batchtopk"}),
        "jumprelu": (SAE, {"hook": "blocks.0.hook_resid_post", "architecture": "jumprelu", "k": None})}

CHILD = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    import gpt2probe
    sys.path.insert(0, {tests!r})
    from test_sae_distributed import RUNS, SETTINGS, TEXTS
    probe = gpt2probe.load({model!r}, device="cpu")
    for name, (cls, extra) in RUNS.items():
        metrics = []
        coder = cls.train(probe, TEXTS, callback=lambda s, m: metrics.append(m), **{{**SETTINGS, **extra}})
        assert dist.get_world_size() == 2  # the run joined the group torchrun describes (kept for the next run)
        rank = int(os.environ["RANK"])
        torch.save({{"params": dict(coder.named_parameters()), "metrics": metrics}}, {out!r} + f"/{{name}}-{{rank}}.pt")
""")


def test_shares_cover_everything_in_order():
    for n in range(7):
        parts = [range(n)[World(r, 3).share(n)] for r in range(3)]
        assert [i for p in parts for i in p] == list(range(n)) and max(map(len, parts)) - min(map(len, parts)) <= 1


def test_two_processes_under_torchrun_equal_one(vocab_dir, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(REPO / "tests"), model=str(vocab_dir), out=str(tmp_path)))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = gpt2probe.load(vocab_dir, device="cpu")
    for name, (cls, extra) in RUNS.items():
        metrics = []
        one = cls.train(probe, TEXTS, callback=lambda s, m, into=metrics: into.append(m), **{**SETTINGS, **extra})
        ranks = [torch.load(tmp_path / f"{name}-{r}.pt") for r in range(2)]
        for param_name, param in one.named_parameters():
            assert torch.equal(ranks[0]["params"][param_name], ranks[1]["params"][param_name]), (name, param_name)
            torch.testing.assert_close(ranks[0]["params"][param_name], param.detach(), atol=2e-5, rtol=1e-4,
                                       msg=lambda m, n=name, p=param_name: f"{n} {p}: {m}")
        for a, b in zip(metrics, ranks[0]["metrics"]):
            assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5) for k in a), name
        assert len(ranks[0]["metrics"]) == len(metrics) == SETTINGS["steps"]
