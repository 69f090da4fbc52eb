"""Writing files (issue 24): our own safetensors writer, symbolic links, full disks, SIGKILL leftovers."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from gpt2probe import savefile
from gpt2probe.errors import FileWriteError

ALL_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
              torch.int8, torch.uint8, torch.bool]


def test_the_writer_round_trips_every_dtype_and_shape_through_safetensors_own_reader(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for i, dtype in enumerate(ALL_DTYPES):
        for shape in [(), (0,), (3,), (2, 5, 7)]:
            x = torch.randn(shape, generator=gen) * 50
            tensors[f"t{i}.{len(shape)}.{sum(shape)}"] = x.to(dtype) if dtype != torch.bool else x > 0
    tensors["strided"] = torch.arange(12.0).reshape(3, 4).T  # not contiguous
    tensors["shared"] = tensors["t1.1.3"]  # same storage twice: safetensors' save_file refuses, we write it twice
    path = savefile.write_safetensors(tmp_path / "x.safetensors", tensors, {"format": "test", "é": "ü"})
    loaded = load_file(str(path))
    assert set(loaded) == set(tensors)
    for name, t in tensors.items():
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t), name
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "test", "é": "ü"}
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def test_no_save_goes_through_safetensors_save_file(monkeypatch, tmp_path, vocab_probe):
    """``save_file`` writes via its own ``.tmpXXXX`` file, which a SIGKILL leaves behind at full size."""
    import safetensors.torch

    from gpt2probe import TunedLens

    def refuse(*args, **kwargs):
        raise AssertionError("safetensors.torch.save_file was called")

    monkeypatch.setattr(safetensors.torch, "save_file", refuse)
    _, cache = vocab_probe.run_with_cache("Hello there", names=["blocks.0.hook_resid_post"])
    cache.save(tmp_path / "c.st")
    TunedLens.identity(vocab_probe).save(tmp_path / "lens")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []


def test_saving_through_a_symlink_writes_the_target_and_keeps_the_link(tmp_path, vocab_probe):
    from gpt2probe import ActivationCache

    _, cache = vocab_probe.run_with_cache("Hello there", names=["blocks.0.hook_resid_post"])
    target = tmp_path / "real" / "c.st"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "link.st"
    link.symlink_to(target)
    cache.save(link)
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert torch.equal(ActivationCache.load(target)["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_post"])
    dangling = tmp_path / "dangling.st"
    dangling.symlink_to(tmp_path / "real" / "new.st")
    cache.save(dangling)
    assert dangling.is_symlink() and (tmp_path / "real" / "new.st").is_file()


def test_a_full_disk_is_a_file_write_error_naming_the_target(monkeypatch, tmp_path, vocab_probe):
    import builtins

    _, cache = vocab_probe.run_with_cache("Hello there", names=["blocks.0.hook_resid_post"])
    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(savefile, "open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    with pytest.raises(FileWriteError, match=r"cannot write '.*c\.st': No space left on device"):
        cache.save(tmp_path / "c.st")
    assert list(tmp_path.iterdir()) == []  # no temporary file left


# -- loading checkpoints ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_a_checkpoint_with_non_float_weights_is_refused(tmp_path, dtype):
    import gpt2probe
    from gpt2probe.errors import CheckpointError

    from models import SMALL, save_gpt2

    directory = save_gpt2(SMALL, tmp_path / "m")
    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith("wte.weight"))
    tensors[key] = (tensors[key] * 100).to(dtype)
    savefile.write_safetensors(path, tensors, {"format": "pt"})
    with pytest.raises(CheckpointError, match=f"{key!r} is stored as .*floating point"):
        gpt2probe.load(directory, device="cpu")


def test_every_from_pretrained_call_refuses_remote_code():
    """docs/reliability.md says every from_pretrained call passes trust_remote_code=False: read each call."""
    import ast
    from pathlib import Path

    import gpt2probe

    calls = []
    for path in Path(gpt2probe.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assigned = [(node.targets[0], node.value) for node in ast.walk(tree)  # name = ... (or name: type = ...)
                    if isinstance(node, ast.Assign) and len(node.targets) == 1]
        assigned += [(node.target, node.value) for node in ast.walk(tree) if isinstance(node, ast.AnnAssign)]
        kwargs_dicts = {  # name = dict(..., trust_remote_code=False)
            target.id for target, value in assigned
            if isinstance(target, ast.Name) and isinstance(value, ast.Call) and any(
                k.arg == "trust_remote_code" and isinstance(k.value, ast.Constant) and k.value.value is False
                for k in value.keywords)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
                ok = any((k.arg == "trust_remote_code" and isinstance(k.value, ast.Constant) and k.value.value is False)
                         or (k.arg is None and isinstance(k.value, ast.Name) and k.value.id in kwargs_dicts)
                         for k in node.keywords)
                calls.append((f"{path.name}:{node.lineno}", ok))
    assert len(calls) >= 5 and all(ok for _, ok in calls), calls


# -- commands that write directories ---------------------------------------------------------
FINETUNE = ["--steps", "1", "--batch-size", "2", "--seq-len", "8", "--train", "blocks.0.mlp"]


def _doc(tmp_path):
    text = tmp_path / "doc.txt"
    text.write_text("The value of the variable is returned by the function. " * 20, encoding="utf-8")
    return text


def test_finetune_on_a_full_disk_leaves_nothing_and_a_rerun_works(vocab_dir, tmp_path, monkeypatch, capsys):
    import transformers

    from gpt2probe.cli import main

    out = tmp_path / "tuned"
    real = transformers.PreTrainedModel.save_pretrained

    def full(self, directory, *args, **kwargs):
        (Path(directory) / "config.json").write_text("{}")  # what HF writes first
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", full)
    assert main(["finetune", "--model", str(vocab_dir), "--corpus", str(_doc(tmp_path)), *FINETUNE, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot write") and "No space left" in err[-1] and str(out) in err[-1]
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["doc.txt"]  # no half model, no temp dir
    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", real)
    assert main(["finetune", "--model", str(vocab_dir), "--corpus", str(_doc(tmp_path)), *FINETUNE, "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file() and (out / "finetune.json").is_file()


def test_an_unwritable_out_is_refused_before_any_work(vocab_dir, tmp_path, monkeypatch, capsys):
    import os

    from gpt2probe.cli import main
    from gpt2probe.experiments import common

    blocked = tmp_path / "ro"
    blocked.mkdir()
    real_access = os.access
    # root ignores permission bits: pretend the folder is read-only the way os.access would report it
    monkeypatch.setattr(common.os, "access", lambda p, mode: False if Path(p) == blocked else real_access(p, mode))
    started = []
    from gpt2probe.experiments import finetune as finetune_command
    from gpt2probe.experiments import tuned_lens as lens_command

    for module in (finetune_command, lens_command):
        monkeypatch.setattr(module, "load_model", lambda *a, **k: started.append(1))
    for argv in (["finetune", "--model", str(vocab_dir), "--corpus", str(_doc(tmp_path)), *FINETUNE],
                 ["tuned-lens", "train", "--model", str(vocab_dir), "--corpus", str(_doc(tmp_path)), "--steps", "1"]):
        assert main([*argv, "--out", str(blocked / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot write in" in err[0] and "read-only" in err[0], err
    assert not started


def test_a_directory_killed_while_written_is_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    from gpt2probe.atomic import _temp_stem, atomic_directory

    target = tmp_path / "model"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{_temp_stem(target)}{int(dead.stdout)}.abcd.dir"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    with atomic_directory(target) as tmp:
        (tmp / "x").write_text("done")
    assert (target / "x").read_text() == "done" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
