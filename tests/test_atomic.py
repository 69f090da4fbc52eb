"""Atomic writes: the target's mode, the umask, short temporary names, errors naming the target, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpt2probe import FileWriteError
from gpt2probe.atomic import TEMP_PREFIX, atomic_path, write_text_atomic

posix = pytest.mark.skipif(os.name != "posix", reason="POSIX modes and signals")


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


@posix
def test_an_existing_file_keeps_its_mode(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    target.chmod(0o600)
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and (target.stat().st_mode & 0o777) == 0o600
    target.chmod(0o640)
    write_text_atomic(target, "newer")
    assert (target.stat().st_mode & 0o777) == 0o640


@posix
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_a_new_file_honours_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert ((tmp_path / "new.txt").stat().st_mode & 0o777) == 0o666 & ~umask


def test_a_name_of_255_bytes_works_and_leaves_nothing(tmp_path):
    name = "é" * 120 + "x" * 10 + ".html"  # 255 bytes in UTF-8
    assert len(os.fsencode(name)) == 255
    write_text_atomic(tmp_path / name, "ok")
    assert (tmp_path / name).read_text() == "ok"
    assert _temps(tmp_path) == []


def test_errors_name_the_target_not_the_temporary_file(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileWriteError, match="folder.*is a directory") as info:
        write_text_atomic(tmp_path / "folder", "x")
    assert isinstance(info.value, OSError)
    target = tmp_path / "out.bin"
    with pytest.raises(FileWriteError) as info:
        with atomic_path(target) as tmp:
            raise OSError(28, "No space left on device", str(tmp))
    assert str(target) in str(info.value) and TEMP_PREFIX not in str(info.value)
    assert "No space left on device" in str(info.value)
    assert _temps(tmp_path) == [] and not target.exists()


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and _temps(tmp_path) == []


def test_the_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    import gpt2probe.atomic as atomic

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_text_atomic(tmp_path / "f.txt", "x")
    assert events[:2] == ["fsync", "replace"]


# Imports gpt2probe.atomic without the package's __init__ (torch, transformers): seconds saved per run.
WRITER = textwrap.dedent("""
    import signal, sys, time, types
    # A shell starts background jobs with SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: restore what an interactive Ctrl-C meets, whatever launched the tests.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    package = types.ModuleType("gpt2probe")
    package.__path__ = [sys.argv[2]]
    sys.modules["gpt2probe"] = package
    from gpt2probe.atomic import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_text("half written")
        print("writing", flush=True)
        time.sleep(60)
""")


def _start_writer(target: Path) -> subprocess.Popen:
    import gpt2probe

    package = str(Path(gpt2probe.__file__).parent)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), package], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


@posix
def test_sigterm_mid_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    proc = _start_writer(target)
    assert len(_temps(tmp_path)) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert _temps(tmp_path) == [] and target.read_text() == "old"


@posix
def test_sigint_mid_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "report.html"
    proc = _start_writer(target)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) != 0
    assert _temps(tmp_path) == [] and not target.exists()


@posix
def test_the_next_write_removes_what_a_killed_run_left(tmp_path):
    target = tmp_path / "report.html"
    proc = _start_writer(target)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.wait(timeout=30)
    assert len(_temps(tmp_path)) == 1
    other = tmp_path / "other.html"
    write_text_atomic(other, "x")
    assert len(_temps(tmp_path)) == 1, "a write to another target leaves it alone"
    write_text_atomic(target, "new")
    assert _temps(tmp_path) == [] and target.read_text() == "new"


@posix
def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    target = tmp_path / "report.html"
    proc = _start_writer(target)
    try:
        write_text_atomic(target, "mine")
        assert len(_temps(tmp_path)) == 1
    finally:
        proc.kill()
        proc.wait(timeout=30)
