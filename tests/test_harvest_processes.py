"""Harvesting across processes: torchrun with 2 processes equals 1 process; SIGKILL then --resume equals no kill.

Both run the real command line in subprocesses on the shipped tiny-english model and one of
its SAEs over Python's documentation topics (gloo on CPU).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harvest_helpers import assert_same_harvest, topic_texts, write_text_corpus

from gpt2probe.cli import main
from gpt2probe.harvest import Harvest
from gpt2probe.shipped import shipped_model

REPO = Path(__file__).resolve().parent.parent
HOOKS = ["blocks.*.mlp.hook_post", "blocks.1.attn.hook_pattern"]
# A shipped top-k SAE: its features are summarised from their non-zero values (gpt2probe.harvest.sparse).
SAE = shipped_model("tiny-english") / "saes" / "blocks.1.hook_resid_post"


def _args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["harvest", "--model", "tiny-english", "--corpus", str(corpus / "*.txt"), "--hooks", *HOOKS,
            "--sae", str(SAE), "--out", str(out), "--seq-len", "32", "--examples", "6", "--window", "3",
            "--batch-size", "4", "--block-chars", "3000", "--no-progress", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_text_corpus(tmp_path_factory.mktemp("topics"), topic_texts(12, 1500))


@pytest.fixture(scope="module")
def single(corpus, tmp_path_factory) -> Harvest:
    out = tmp_path_factory.mktemp("single") / "h"
    assert main(_args(corpus, out)) == 0
    return Harvest.load(out)


def test_two_processes_under_torchrun_equal_one(corpus, single, tmp_path):
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "gpt2probe", *_args(corpus, out)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = Harvest.load(out)
    assert two.manifest["world_size"] == 2 and two.manifest["totals"] == single.manifest["totals"]
    assert single.kind("blocks.1.hook_resid_post.hook_sae_acts_post") == "feature"
    assert_same_harvest(single, two, exact=False, atol=1e-5)


CHILD = """
import sys, time
from gpt2probe.harvest import runner
save = runner._checkpoint
def slow(*args, **kwargs):
    save(*args, **kwargs)
    print("checkpoint", flush=True)
    time.sleep(0.5)  # room for the parent's SIGKILL to land in the middle of the run
runner._checkpoint = slow
from gpt2probe.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_then_resume_equals_an_uninterrupted_run(corpus, single, tmp_path):
    out = tmp_path / "killed"
    args = _args(corpus, out, "--checkpoint-windows", "4")
    child = subprocess.Popen([sys.executable, "-c", CHILD, *args], env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        seen = 0
        for line in child.stdout:
            seen += line.strip() == "checkpoint"
            if seen == 3:
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert not (out / "harvest.json").exists() and (out / "checkpoint").is_dir()
    assert main(args) == 2  # without --resume the unfinished run is refused, untouched
    assert main([*args, "--resume"]) == 0
    assert_same_harvest(single, Harvest.load(out), exact=True)
