"""A project's load cache, ``target/project_cache.json``: what loading learned from files
that have not changed since, so each file is parsed once, not once per command.

Every entry is keyed by a hash of the exact text it was computed from (a YAML file's
bytes, a query's SQL), so an entry can never be stale: an edited file simply misses.
It holds the parsed YAML of each node file, what the SQL scanner found in each query,
the token digest behind fingerprints, and the normalised SQL that runs record (keyed
with the sqlglot version that printed it).  The file is only an accelerator: unreadable or foreign content is
ignored, it is replaced atomically (temp file, rename), and a failure to write it
never fails a command.  Entries not used by the last load are dropped when it is
written, so the file tracks the project's size.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

from . import sql as _sql

CACHE_FILE = "project_cache.json"
VERSION = 2
#: a file whose mtime is this close to the load that read it may change again within
#: the same timestamp tick, unseen by stat: it is read again next time (git's "racy" rule)
RACY_NS = 2_000_000_000
_OPEN: dict[Path, LoadCache] = {}


class LoadCache:
    """One project's cache: ``yaml`` (file text key -> data) and the SQL memo tables."""

    def __init__(self, target_dir: Path):
        self.path = target_dir / CACHE_FILE
        self.yaml: dict[str, Any] = {}
        self.files: dict[str, list] = {}  # path -> [mtime_ns, size, inode, content key]
        self.used: set[str] = set()
        self.used_files: set[str] = set()
        self._stats: dict[str, list[int]] = {}
        self._start_ns = time.time_ns()
        self.dirty = False
        self._seen = {name: len(table) for name, table in _sql.MEMO.items()}
        self._loaded: dict[str, list[str]] = {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"), object_hook=_decode)
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            return
        if not _well_formed(raw):  # foreign content (another version, another program)
            return
        self.yaml = raw.get("yaml") or {}
        self.files = raw.get("files") or {}
        self._loaded = {name: list(raw.get(name) or ()) for name in _sql.MEMO}
        for name, table in _sql.MEMO.items():
            for key, value in (raw.get(name) or {}).items():
                table.setdefault(key, value)
        self._seen = {name: len(table) for name, table in _sql.MEMO.items()}

    def known_key(self, path: Path) -> str | None:
        """The content key of ``path`` when its stat matches a trusted entry (no read)."""
        try:
            info = os.stat(path)
        except OSError:
            return None
        name = str(path)
        sig = self._stats[name] = [info.st_mtime_ns, info.st_size, info.st_ino]
        entry = self.files.get(name)
        return entry[3] if entry and entry[:3] == sig else None

    def remember_file(self, path: Path, key: str) -> None:
        """Record ``path``'s stat (taken before it was read) with its content key."""
        name = str(path)
        self.used_files.add(name)
        sig = self._stats.get(name)
        if sig and sig[0] < self._start_ns - RACY_NS and self.files.get(name) != [*sig, key]:
            self.files[name] = [*sig, key]
            self.dirty = True

    def parsed(self, key: str) -> tuple[bool, Any]:
        """(hit, data) for a file whose text has ``key``."""
        self.used.add(key)
        if key in self.yaml:
            return True, self.yaml[key]
        return False, None

    def remember(self, key: str, data: Any) -> None:
        if _encodable(data):
            self.yaml[key] = data
            self.dirty = True

    def save(self) -> None:
        """Write the cache if anything was learned since it was read (atomically)."""
        grown = any(len(t) != self._seen.get(n) for n, t in _sql.MEMO.items())
        if not (self.dirty or grown) or not self.path.parent.is_dir():
            return
        doc = {"version": VERSION, "yaml": {k: v for k, v in self.yaml.items() if k in self.used},
               "files": {k: v for k, v in self.files.items() if k in self.used_files}}
        for name, table in _sql.MEMO.items():
            # fingerprints asked for by another command of this project stay (plan, run),
            # and a table this process never read stays whole: `seeknal run` after an edit
            # keeps the column lineage Dagster's load computed (else its next load is cold)
            used = _sql.USED[name]
            keep = (used | set(self._loaded.get(name, ()))) if name == "normalized" or not used else used
            doc[name] = {k: v for k, v in table.items() if k in keep}
        import tempfile  # with random and shutil, ~20 ms: only when writing

        try:
            fd, tmp = tempfile.mkstemp(prefix=".project_cache.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                # dumps, not dump: dump streams through json's pure-Python encoder (3x slower)
                out.write(json.dumps(doc, default=_encode, separators=(",", ":")))
            os.replace(tmp, self.path)
        except (OSError, TypeError, ValueError):
            try:
                os.unlink(tmp)
            except (OSError, UnboundLocalError):
                pass
            return
        self.dirty = False
        self._seen = {name: len(table) for name, table in _sql.MEMO.items()}


def _well_formed(raw: Any) -> bool:
    """Whether ``raw`` (decoded JSON: its keys are strings) has this version's shape, down
    to every entry (types and lengths).  Checked by ``type``, in bulk where it can be: a
    3,000-node project's cache has ~9,000 entries, read by every command."""
    if not isinstance(raw, dict) or raw.get("version") != VERSION:
        return False
    tables = {"files": _file_entry, "scan": _scan_entry, "normalized": _text_entry, "tokens": _text_entry}
    for name in ("yaml", "files", *_sql.MEMO):
        table = raw.get(name) or {}
        if type(table) is not dict:
            return False
        valid = tables.get(name)
        if valid is not None and not all(map(valid, table.values())):
            return False
    return True


def _file_entry(v: Any) -> bool:
    """``[mtime_ns, size, inode, content key]`` (ints, not booleans)."""
    return (type(v) is list and len(v) == 4 and type(v[3]) is str
            and {type(v[0]), type(v[1]), type(v[2])} == {int})


def _scan_entry(v: Any) -> bool:
    """``[refs, tables, time column or None]``."""
    return (type(v) is list and len(v) == 3 and (v[2] is None or type(v[2]) is str)
            and type(v[0]) is list and type(v[1]) is list and set(map(type, v[0] + v[1])) <= {str})


def _text_entry(v: Any) -> bool:
    return type(v) is str


def open_cache(target_dir: Path) -> LoadCache:
    """The cache for a project's ``target/`` (read once per process, saved at exit too,
    for fingerprints computed after loading)."""
    cache = _OPEN.get(target_dir)
    if cache is None:
        if not _OPEN:
            atexit.register(_save_all)
        cache = _OPEN[target_dir] = LoadCache(target_dir)
    return cache


def save_learned(root: Path) -> None:
    """Write what this process learned about the project at ``root`` now, not only at
    exit: a Dagster code server computes every node's column lineage and fingerprint while
    loading, then runs until it is killed (it outlives SIGTERM), so its exit never comes."""
    cache = _OPEN.get(root / "target")
    if cache is not None:
        cache.save()


def _save_all() -> None:
    for cache in _OPEN.values():
        cache.save()


def discard_unsaved() -> None:
    """Leave every cache file as it is at exit: a command that failed on bad input (exit
    2) may have read only part of the project, and would drop the other entries."""
    _OPEN.clear()


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    raise TypeError(f"cannot cache {type(value).__name__}")


def _decode(obj: dict) -> Any:
    if len(obj) == 1:
        if "$datetime" in obj:
            return dt.datetime.fromisoformat(obj["$datetime"])
        if "$date" in obj:
            return dt.date.fromisoformat(obj["$date"])
    return obj


def _encodable(value: Any) -> bool:
    """Only what JSON round-trips exactly (plus dates): anything else is parsed each time."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and not k.startswith("$") for k in value) and all(
            _encodable(v) for v in value.values())
    if isinstance(value, list):
        return all(_encodable(v) for v in value)
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return value is None or isinstance(value, str | int | bool | dt.date)
