"""Write files so that an interrupted run never leaves a half-written one behind.

The data goes to a temporary file beside the target, is flushed to disk (``fsync``), and is
renamed over the target in one step. The result has the mode an ordinary ``open(path, "w")``
would give: an existing file keeps its mode (a 0600 report stays private), a new one gets
``0666 & ~umask``. Temporary names are short whatever the target's name (``NAME_MAX`` is 255
bytes) and recognisable: ``.gpt2probe-tmp.<hash of the target name>.<pid>.<random>.tmp``. SIGTERM
while writing (the CLI killed by a scheduler) removes the temporary file like Ctrl-C does; after
a SIGKILL, the next write to the same target removes what the dead process left. Writing to a
symbolic link writes to the file it names (the link is kept, and so is every other link to it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import FileWriteError

TEMP_PREFIX = ".gpt2probe-tmp."


def _temp_stem(target: Path) -> str:
    digest = hashlib.sha256(os.fsencode(target.name)).hexdigest()[:16]
    return f"{TEMP_PREFIX}{digest}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove temporary files of earlier writes to ``target`` whose process is gone; returns them."""
    removed = []
    stem = _temp_stem(target)
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            if not entry.name.startswith(stem):
                continue
            pid = entry.name[len(stem):].split(".", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
    return removed


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _final_mode(target: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While writing, SIGTERM unwinds like Ctrl-C (so ``finally`` blocks run) if nobody else handles it."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _fsync(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return  # not every platform can open a directory
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, rename it over ``path`` in one step.

    Errors name ``path`` (as :class:`~gpt2probe.errors.FileWriteError`, an ``OSError``), never
    the temporary file; on any failure or interruption the temporary file is removed.
    """
    target = Path(path)
    if target.is_symlink():  # write through to the file the link names, as editors do: the link stays a link
        target = Path(os.path.realpath(target))
    if target.is_dir():
        raise FileWriteError(f"cannot write {str(target)!r}: it is a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FileWriteError(f"cannot write {str(target)!r}: cannot create its folder ({error.strerror or error})") from None
    remove_stale_temps(target)
    mode = _final_mode(target)
    tmp = target.parent / f"{_temp_stem(target)}{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with _sigterm_raises():
        try:
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                yield tmp
                os.chmod(tmp, mode)
                _fsync(tmp)
                os.replace(tmp, target)
            except FileWriteError:
                raise
            except OSError as error:
                raise FileWriteError(f"cannot write {str(target)!r}: {error.strerror or error}") from None
            _fsync(target.parent, directory=True)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; when the block succeeds, rename it to ``path`` in one step.

    ``path`` must not exist or be an empty directory. A failure (a full disk, Ctrl-C) removes
    the temporary directory and leaves ``path`` as it was, so a re-run is not refused for a
    half-written result; after a SIGKILL the next write to the same target removes the
    dead process's directory. Errors are :class:`~gpt2probe.errors.FileWriteError` naming ``path``.
    """
    import shutil

    target = Path(path)
    if target.is_symlink() or target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileWriteError(f"cannot write {str(target)!r}: it exists and is not an empty directory")
    stem = _temp_stem(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for entry in target.parent.iterdir():  # what a killed earlier write left
            pid = entry.name[len(stem):].split(".", 1)[0] if entry.name.startswith(stem) else ""
            if pid.isdigit() and not _pid_alive(int(pid)) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
        tmp = target.parent / f"{stem}{os.getpid()}.{secrets.token_hex(4)}.dir"
        tmp.mkdir()
    except OSError as error:
        raise FileWriteError(f"cannot write {str(target)!r}: {error.strerror or error}") from None
    with _sigterm_raises():
        try:
            try:
                yield tmp
                os.chmod(tmp, 0o777 & ~_umask())
                os.replace(tmp, target)  # onto an empty directory too (POSIX rename)
            except FileWriteError:
                raise
            except OSError as error:
                raise FileWriteError(f"cannot write {str(target)!r}: {error.strerror or error}") from None
            _fsync(target.parent, directory=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
