"""``target/readiness_cache.json``: a source's watermark (``max(time_column)``) kept with
the stat of the files that hold it, so a command whose sources have not changed since
the last one asks no engine at all (no DuckDB import, no connection).

The watermark of a file source is a function of its files (the list a glob matches and
each one's mtime, size and inode); a table source in the project's DuckDB file, of that
file and its WAL.  An entry is used only when every stat still matches and every file was
older than the query that filled it by ``RACY_NS`` (git's racy-clean rule: a write within
the same timestamp tick would be invisible to stat).  ``sql`` and ``python`` readiness
may read anything, so they are never cached.  The file only accelerates: unreadable
content is ignored, writes are atomic, and a failed write never fails a command.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..durable import atomic_write
from ..project.cache import RACY_NS

CACHE_FILE = "readiness_cache.json"
VERSION = 1


class WatermarkCache:
    def __init__(self, target_dir: Path):
        self.path = target_dir / CACHE_FILE
        self.entries: dict[str, dict] = {}
        self.dirty = False
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(raw, dict) and raw.get("version") == VERSION:
                self.entries = dict(raw.get("entries") or {})
        except (OSError, ValueError, UnicodeDecodeError):
            pass

    @staticmethod
    def signature(files: list[str]) -> list | None:
        """[[path, mtime_ns, size, inode] | [path], ...] of the files (None: unknowable)."""
        out: list = []
        for name in files:
            try:
                info = os.stat(name)
            except FileNotFoundError:
                out.append([name])
                continue
            except OSError:
                return None
            out.append([name, info.st_mtime_ns, info.st_size, info.st_ino])
        return out

    def get(self, key: str, files: list[str]) -> tuple[bool, int | None]:
        """(found, watermark) for ``key`` when its files are unchanged since it was taken."""
        entry = self.entries.get(key)
        if not entry:
            return False, None
        sig = self.signature(files)
        if sig is None or sig != entry.get("files"):
            return False, None
        return True, entry.get("instant")

    def put(self, key: str, files: list[str], instant: int | None, taken_ns: int) -> None:
        """Remember a watermark queried at ``taken_ns`` (files stat'ed before the query)."""
        sig = self.signature(files)
        if sig is None or any(len(item) > 1 and item[1] >= taken_ns - RACY_NS for item in sig):
            self.entries.pop(key, None)  # too fresh to trust: asked again next time
            return
        self.entries[key] = {"files": sig, "instant": instant}
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = json.dumps({"version": VERSION, "entries": self.entries}, sort_keys=True).encode()
            atomic_write(self.path, data, durable=False)
        except OSError:
            pass
        self.dirty = False


def source_files(location: str | None, database: Path | None) -> list[str] | None:
    """The files a source's rows live in: its glob's matches, or the project's DuckDB file
    and WAL for a table (None: not a local file, never cached)."""
    if location is None:
        if database is None:
            return None
        return [str(database), str(database) + ".wal"]
    if "://" in location:
        return None
    import glob  # only file sources need it

    return sorted(glob.glob(location)) if glob.has_magic(location) else [location]


def now_ns() -> int:
    return time.time_ns()


__all__ = ["CACHE_FILE", "WatermarkCache", "now_ns", "source_files"]
