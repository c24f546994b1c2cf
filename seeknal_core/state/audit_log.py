"""The JSON backend's audit log: one JSON record per line, appended, read backwards.

Every record starts with ``{"revision": N,`` so a reader finds the revisions it wants
from the end of the file without parsing what it skips (``scan``).  Appends are not
fsynced one by one: the state file carries the records (``log_tail``) until the log's
next fdatasync makes them durable there (group commit, see ``JsonStateStore``), and
``unlogged`` tells which of them a crash kept out of the log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..durable import close_quietly, write_all


class _Log:
    """The JSON store's logger, ``logging`` imported on the first message (it costs
    ~3.5 ms, and most processes never log)."""

    def __getattr__(self, level: str) -> Any:
        import logging

        return getattr(logging.getLogger("seeknal_core.state.json_store"), level)


log = _Log()

#: Audit records carried in the state file until the log is next fsynced (group commit).
LOG_TAIL_RECORDS = 8
LOG_TAIL_BYTES = 64 * 1024

__all__ = ["DEFAULT_STATE_NAME", "LEGACY_LOG_NAME", "AuditLog", "default_log_path", "last_revision",
           "legacy_log_matches", "LogTail", "read_records", "scan", "unlogged"]

_REV_PREFIX = b'{"revision": '


def _line_revision(line: bytes) -> int | None:
    """The revision of an audit line, read from its prefix without parsing the JSON."""
    if line.startswith(_REV_PREFIX):
        end = line.find(b",", len(_REV_PREFIX))
        try:
            return int(line[len(_REV_PREFIX) : end])
        except ValueError:
            return None
    return None


def _reverse_lines(path: Path, block: int = 1 << 16) -> Iterator[bytes]:
    """Complete lines of a file, last first; a torn final line (no newline) is skipped."""
    try:
        with open(path, "rb") as f:
            yield from _reverse_lines_of(f, block)
    except FileNotFoundError:
        return


def _reverse_lines_of(f: Any, block: int) -> Iterator[bytes]:
    pos = f.seek(0, os.SEEK_END)
    buf = b""
    skip_tail = True
    while pos > 0:
        n = min(block, pos)
        pos -= n
        f.seek(pos)
        buf = f.read(n) + buf
        parts = buf.split(b"\n")
        buf = parts[0]
        rest = parts[1:]
        if skip_tail and rest:
            rest.pop()  # empty, or the torn tail of an interrupted append
            skip_tail = False
        yield from reversed(rest)
    if buf and not skip_tail:
        yield buf


DEFAULT_STATE_NAME = "run_state.json"


LEGACY_LOG_NAME = "run_log.jsonl"


def default_log_path(state_path: Path) -> Path:
    """The audit log beside a state file, named after it: ``a_state.json`` ->
    ``a_state.log.jsonl``, so state files that share a folder never share a log;
    the default ``run_state.json`` keeps ``run_log.jsonl``."""
    if state_path.name == DEFAULT_STATE_NAME:
        return state_path.with_name(LEGACY_LOG_NAME)
    stem = state_path.name[: -len(".json")] if state_path.name.endswith(".json") else state_path.name
    return state_path.with_name(stem + ".log.jsonl")


def legacy_log_matches(log_file: Path, doc: Mapping[str, Any]) -> bool:
    """Whether an old ``run_log.jsonl`` (every state file of a folder used to write there)
    belongs to the state document ``doc`` alone.

    One store's log numbers its changes 1, 2, 3... without a gap, and the records of one
    change share their ``at``; two stores appending to one log repeat revisions with
    other times.  So it matches when change revisions never go down, never skip, each
    has one ``at``, none is above the state's revision, every record names a node of the
    state, and each node's latest revision (when the log reaches it) has a record of that
    node.  Anything else may hold another state file's history: it is not adopted.
    """
    nodes = doc["nodes"]
    seen: set[tuple[str, int]] = set()
    last, last_at = 0, None
    try:
        with open(log_file, "rb") as f:
            for record in _parsed_lines(f):
                rev = record.get("revision") if isinstance(record, dict) else None
                if not isinstance(rev, int) or rev < last or record.get("node") not in nodes:
                    return False
                if record.get("event") != "execution":
                    if rev == last and record.get("at") != last_at or rev > last + 1:
                        return False
                    last, last_at = rev, record.get("at")
                seen.add((record["node"], rev))
    except OSError:
        return False
    if last > doc["revision"]:
        return False
    return all((name, raw.get("revision", 0)) in seen for name, raw in nodes.items()
               if 0 < raw.get("revision", 0) <= last)


def scan(path: Path, after: int, block: int = 1 << 16) -> tuple[list[dict], int | None, int]:
    """Read the log backwards: its records with revision > ``after`` (oldest first),
    its last revision, and how many change records that last revision has there.

    Stops at ``after`` or where revisions go up again going backwards (records of an
    older store before a reset), so the cost is proportional to what is returned.
    """
    records: list[dict] = []
    last: int | None = None
    last_count = 0
    trailing = True
    newer: int | None = None
    for line in _reverse_lines(path, block):
        rev = _line_revision(line)
        if rev is None:
            continue
        wanted = rev > after and (newer is None or rev <= newer)
        if not wanted and not (last is None or (trailing and rev == last)):
            break
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn line left by a crash
        if not isinstance(record, dict):
            continue
        if last is None:
            last = rev
        if trailing and rev != last:
            trailing = False
        if trailing and record.get("event") != "execution":
            last_count += 1
        if wanted:
            newer = rev
            records.append(record)
    records.reverse()
    return records, last, last_count


def last_revision(path: Path) -> int | None:
    """The revision of the log's last whole record (None for no log or no record)."""
    for line in _reverse_lines(path, block=4096):
        revision = _line_revision(line)
        if revision is not None:
            return revision
    return None


def unlogged(tail: list[dict], last: int | None, last_count: int) -> list[dict]:
    """Records of the state's ``log_tail`` that the log does not hold (crash repair)."""
    if last is None:
        return list(tail)
    same = [r for r in tail if r.get("revision") == last]
    return same[last_count:] + [r for r in tail if r.get("revision", 0) > last]


def _parsed_lines(f: Iterable[bytes]) -> Iterator[Any]:
    """The JSON value of each whole line (a torn final line and unparsable ones are skipped)."""
    for line in f:
        if not line.endswith(b"\n"):
            continue  # a torn final line
        try:
            yield json.loads(line)
        except ValueError:
            continue


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every whole record of the audit log, in file order."""
    out = []
    try:
        with open(path, "rb") as f:
            out = [r for r in _parsed_lines(f) if isinstance(r, dict) and isinstance(r.get("revision"), int)]
    except FileNotFoundError:
        pass
    return out


def node_records(path: Path, node: str) -> list[dict[str, Any]]:
    """Every whole record of one node, in file order (a byte test skips other lines)."""
    needle = b'"node": ' + json.dumps(node, ensure_ascii=False).encode() + b","
    out = []
    try:
        with open(path, "rb") as f:
            for line in f:
                if needle not in line or not line.endswith(b"\n"):
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and record.get("node") == node:
                    out.append(record)
    except FileNotFoundError:
        pass
    return out


class AuditLog:
    """An O_APPEND descriptor on the log, reopened when the file was moved or deleted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._id: tuple[int, int] | None = None

    def handle(self) -> int:
        try:
            st = os.stat(self.path)
            ident = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            ident = None
        if self._fd is not None and ident == self._id:
            return self._fd
        self.close()
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags, 0o644)
        st = os.fstat(fd)
        self._fd, self._id = fd, (st.st_dev, st.st_ino)
        return fd

    def append(self, encoded: list[bytes]) -> None:
        """Append the records in one write, after a newline if a crash tore the last line."""
        data = b"".join(line + b"\n" for line in encoded)
        fd = self.handle()
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a torn line from a crash: keep ours whole
        write_all(fd, data)

    def sync(self) -> None:
        os.fdatasync(self.handle())

    def close(self) -> None:
        fd, self._fd = self._fd, None
        close_quietly(fd)


class LogTail:
    """Group commit of the JSON store's audit log: records ride in the state file's
    ``log_tail`` until one fdatasync of the log makes them durable there, and whatever a
    crash kept out of the log is appended by the next writer (mixed into the store)."""

    log_path: Path
    durable: bool
    _log: AuditLog
    _log_ok: int | None
    _tail_enc: list[bytes] | None

    def _next_tail(
        self, doc: dict[str, Any], encoded: list[bytes]
    ) -> tuple[list[dict[str, Any]], list[bytes]]:
        """The audit records the next state file must still carry (group commit of the log).

        Records stay in ``log_tail`` until one fdatasync of the log makes them durable
        there; that happens every ``LOG_TAIL_RECORDS`` mutations instead of every one,
        and the state file's own fsync covers the records in between.
        """
        tail = doc.get("log_tail") or []
        tail_enc = self._tail_encoded(doc)
        size = sum(map(len, tail_enc)) + sum(map(len, encoded))
        if len(tail) + len(encoded) <= LOG_TAIL_RECORDS and size <= LOG_TAIL_BYTES:
            return list(tail), tail_enc
        if self._log_ok != doc["revision"]:  # the log lacks records: keep them (bounded)
            keep = max(0, 1000 - len(encoded))
            return list(tail[-keep:]) if keep else [], tail_enc[-keep:] if keep else []
        if self.durable:
            try:
                self._log.sync()
            except OSError as exc:
                log.warning("could not fsync audit log %s: %s", self.log_path, exc)
                return list(tail), tail_enc
        return [], []

    def _tail_encoded(self, doc: dict[str, Any]) -> list[bytes]:
        if self._tail_enc is None:
            self._tail_enc = [
                json.dumps(r, ensure_ascii=False).encode() for r in doc.get("log_tail") or []
            ]
        return self._tail_enc

    def _append_log(self, encoded: list[bytes], revision: int) -> None:
        """Append audit records in one write; a failure is logged, not raised.

        The state change is already committed and its ``log_tail`` lets the next
        operation write the missing lines, so raising would only invite a double retry.
        Not fsynced here: see ``_next_tail``.
        """
        try:
            self._log.append(encoded)
        except OSError as exc:
            self._log_ok = None
            log.warning("could not append to audit log %s: %s (will retry)", self.log_path, exc)
            return
        self._log_ok = revision

    def _repair_log(self, doc: dict[str, Any]) -> None:
        """Under the lock: append what a crash kept out of the log, once per file version."""
        if self._log_ok == doc["revision"]:
            return
        tail = doc.get("log_tail") or []
        if tail:
            _, last, count = scan(self.log_path, after=doc["revision"], block=4096)
            missing = unlogged(tail, last, count)
            if missing:
                self._append_log(
                    [json.dumps(r, ensure_ascii=False).encode() for r in missing],
                    doc["revision"],
                )
                return
        self._log_ok = doc["revision"]
