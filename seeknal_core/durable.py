"""Files that survive a crash: one ``atomic_write`` and the inter-process lock.

``atomic_write`` is the one way seeknal replaces a file it cares about (the state file,
the audit log on import, flow YAML, parquet interval files): write a unique temp file
in the same folder, fsync it, rename it over the target, fsync the folder.  A crash
leaves the old file or the new one, never a torn one, and a temp file of a writer that
died is recognisable by its name (``sweep_temp_files``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileMutex", "atomic_write", "sweep_temp_files", "write_all"]

_COUNTER = itertools.count(1)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _temp_path(path: Path) -> Path:
    """A name no other writer uses at the same time: process id and a per-process counter."""
    return path.with_name(f".{path.name}.{os.getpid()}-{next(_COUNTER)}.tmp")


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path,
    data: bytes | Callable[[Path], object],
    *,
    mode: int = 0o644,
    durable: bool = True,
    keep_open: bool = False,
) -> int | None:
    """Replace ``path`` whole with ``data``: unique temp file, fsync, rename, folder fsync.

    ``data`` is the bytes, or a function that writes the temp file it is given (DuckDB's
    ``COPY ... TO``).  ``mode`` is applied to bytes written here whatever the umask (a
    shared file keeps its mode).  ``durable=False`` skips both fsyncs (still atomic, not crash-durable).
    ``keep_open`` returns a descriptor on the new file (the JSON store holds the inode it
    caches), else None.  Raises ``OSError``; the temp file never outlives a failure.
    """
    tmp = _temp_path(path)
    fd: int | None = None
    try:
        if callable(data):
            data(tmp)  # the writer creates the file (its mode is the writer's)
            fd = os.open(tmp, os.O_RDONLY)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            os.fchmod(fd, mode)  # the umask must not narrow a shared file's mode
            write_all(fd, data)
        if durable:
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not keep_open:
        os.close(fd)
        fd = None
    if durable:
        fsync_folder(path.parent)
    return fd


def sweep_temp_files(path: Path) -> bool:
    """Delete temp files that writers of ``path`` left when they died (call under the lock).
    Returns False when the folder could not be listed."""
    prefix = f".{path.name}."
    try:
        with os.scandir(path.parent) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        pass
    except OSError:
        return False
    return True



def close_quietly(fd: int | None) -> None:
    """Close ``fd`` when there is one; an error closing must not hide why we are closing."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _try_flock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False when another process holds it."""
    if fcntl is None:  # pragma: no cover - no POSIX flock here (Windows): filelock's native lock
        return _filelock_descriptors()[0](fd, blocking=False)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unflock(fd: int) -> None:
    if fcntl is None:  # pragma: no cover
        _filelock_descriptors()[1](fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)


@cache
def _filelock_descriptors() -> tuple[Any, Any]:  # pragma: no cover - Windows
    import filelock

    return filelock.lock_descriptor, filelock.unlock_descriptor


class FileMutex:
    """An exclusive inter-process lock on ``lock_path``: ``flock`` on a descriptor kept open.

    The lock is the one filelock's ``FileLock`` takes on POSIX (``flock``), called
    directly: importing filelock costs ~12 ms, 6% of a one-interval run; platforms
    without ``fcntl`` use filelock's native descriptor lock.  One ``open`` per process,
    not per mutation; a lock file deleted or replaced meanwhile is noticed and reopened,
    since a lock on a deleted file guards nothing.
    """

    def __init__(self, lock_path: Path, timeout: float) -> None:
        self.lock_path = lock_path
        self.timeout = timeout
        self._fd: int | None = None
        self._pid = 0

    def acquire(self) -> None:
        """Take the lock; ``TimeoutError`` after ``timeout`` seconds, ``OSError`` when the
        lock file cannot be opened."""
        deadline = time.monotonic() + self.timeout
        delay = 0.0002
        while True:
            if self._fd is None or self._pid != os.getpid():
                # a forked child must not share its parent's lock description
                self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                self._pid = os.getpid()
            fd = self._fd
            if _try_flock(fd):
                held = os.fstat(fd)
                try:
                    current = os.stat(self.lock_path)
                except FileNotFoundError:
                    current = None
                if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                    return
                _unflock(fd)  # the lock file was deleted or replaced: reopen
                os.close(fd)
                self._fd = None
                continue
            if time.monotonic() >= deadline:
                raise TimeoutError(str(self.lock_path))
            time.sleep(delay)
            delay = min(delay * 1.5, 0.005)

    def release(self) -> None:
        if self._fd is not None:
            _unflock(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        close_quietly(fd)
