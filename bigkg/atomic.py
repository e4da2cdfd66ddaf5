"""Crash-safe writes: build under a temporary name, fsync, rename into place.

Every output of bigkg (datasets, checkpoints, exports, summaries) goes through
these helpers, so a process killed at any moment leaves either the previous
complete output or nothing, never a half-written file that looks whole.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from bigkg.errors import BigKGError

TMP_MARKER = ".tmp-"


class OutputError(BigKGError):
    """An output that cannot be created where asked: a missing or read-only directory, a directory in the way."""


def write_problem(exc: OSError) -> str:
    """Why a file or directory could not be created, in words."""
    if isinstance(exc, FileExistsError) and exc.filename:  # mkdir met a file where a directory is needed
        return f"{exc.filename} is not a directory"
    return exc.strerror or str(exc)


def _cannot_write(final: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {final}: {write_problem(exc)}")


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def _disk_full_names(final: Path) -> Iterator[None]:
    """A full disk or quota while writing ``final`` (h5py gives no errno, only the text) becomes an
    OutputError naming it; the caller's cleanup still removes what was half written."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _DISK_FULL or "No space left on device" in str(exc):
            raise OutputError(f"cannot write {final}: the disk is full (nothing was written; free space "
                              f"and run again)") from exc
        raise


def temporary_sibling(path: Path) -> Path:
    """A unique name next to ``path`` that no reader treats as complete."""
    return path.with_name(f"{path.name}{TMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}")


@functools.cache  # fixed for the process's lifetime; read once, not per checkpoint
def current_boot_id() -> str | None:
    """This boot of the machine (Linux's random boot id), or None where it cannot be read.

    Data written before a process was killed is whole in the page cache as long as
    the boot id is unchanged; a crash or a restart may lose what was not fsynced.
    """
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def other_process_alive(pid: object) -> bool:
    """Whether ``pid`` is another process, still running on this machine."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Persist a file's data, or a directory's entries (a rename or a new file), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (inclusive)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_path(os.path.join(dirpath, name))
        fsync_path(dirpath)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path; on success it is fsynced and renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    ``durable=False`` skips the fsyncs, for files inside an ``atomic_directory``
    whose completion fsyncs the whole tree once.
    """
    final = Path(path)
    if final.is_dir():
        raise OutputError(f"cannot write {final}: it is a directory")
    tmp = temporary_sibling(final)
    try:
        # Created here so that an unwritable place fails now, naming the output, not deep inside a writer.
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.touch(exist_ok=False)
    except OSError as exc:
        raise _cannot_write(final, exc) from exc
    try:
        with _disk_full_names(final):
            yield tmp
            if durable:
                fsync_path(tmp)
        os.replace(tmp, final)
        if durable:
            fsync_path(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` once the block succeeds.

    An existing ``path`` is refused unless ``force``; with ``force`` the old
    directory is replaced only after the new one is complete.
    """
    final = Path(path)
    if final.exists() and not force:
        raise FileExistsError(f"output directory {final} already exists (use --force to replace it)")
    tmp = temporary_sibling(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise _cannot_write(final, exc) from exc
    try:
        with _disk_full_names(final):
            yield tmp
            fsync_tree(tmp)
        if final.exists():
            trash = temporary_sibling(final)
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_path(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
