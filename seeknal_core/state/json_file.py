"""The state file itself: its format, the per-process cache, seed-format normalisation.

``JsonStateFile`` reads ``run_state.json`` (one node per line, see ``json_store``),
keeps the parsed document while the file's ``(device, inode, size, mtime_ns)`` is
unchanged (holding that inode open, so the number cannot be recycled by another
file), parses intervals lazily per node, re-serialises only the nodes a mutation
touched, and turns a file it cannot read into one ``StateError`` line after saving a
byte-for-byte copy.  ``JsonStateStore`` adds the lock, the audit log and the mutations.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..durable import atomic_write, write_all
from ..intervals import IntervalSet, gc_paused
from ..timeutil import UTC
from . import audit_log
from .base import FailedInterval, NodeState, Restatement, StateError
from .common import (
    decode_digest,
    dt_of_us,
    fmt_dt,
    fmt_us,
    format_rows,
    parse_dt_or_none,
    parse_us,
)
from .records import (
    ParseMemo,
    audit_entry,
    failed_pairs,
    parse_restatement,
    parse_rows,
)

SCHEMA_VERSION = 1


_TOP_KEYS = ("schema_version", "revision", "updated_at", "nodes", "log_tail")


_NODE_KEYS = (
    "completed_intervals",
    "failed_intervals",
    "restatements",
    "partition_keys",
    "fingerprint",
    "last_run",
    "revision",
)


def _set_of(starts: list[int], ends: list[int]) -> IntervalSet:
    """An IntervalSet over copies of merged arrays (callers may mutate what they get)."""
    return IntervalSet.from_micros(starts, ends, merged=True)


class _Corrupt(Exception):
    """Internal: the file parsed as bytes but its content is wrong."""


def _describe_json_error(data: bytes, exc: BaseException) -> str:
    if not data.strip():
        return "the file is empty"
    if isinstance(exc, RecursionError):
        return "the file is not valid JSON (nested too deeply)"
    if isinstance(exc, UnicodeDecodeError):
        return f"the file is not UTF-8 text (byte {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        where = f"{exc.msg}, line {exc.lineno} column {exc.colno}"
        text = data.rstrip()
        if (
            exc.pos >= len(text) - 1
            or exc.msg.startswith("Unterminated")
            or (text.startswith(b"{") and not text.endswith(b"}"))
        ):
            return f"the file is truncated ({where})"
        return f"the file is not valid JSON ({where})"
    return f"the file is not valid JSON ({exc})"


class JsonStateFile:
    """The cached document of one state file and the edits of its node records; the
    subclass sets ``path``, ``log_path``, ``durable``, ``_mutex`` and ``_held_fd``."""

    path: Path
    log_path: Path
    durable: bool

    def _invalidate(self) -> None:
        """Forget everything cached; the next access re-reads the file."""
        self._doc: dict[str, Any] | None = None
        # (device, inode, size, mtime_ns) of the file the cache came from.  The store keeps
        # that file open (``_held_fd``), so its inode cannot be reused by a later file:
        # an equal signature really is the same, unmodified file.
        self._sig: tuple[int, int, int, int] | None = None
        self._mode = 0o644
        self._lines: dict[str, bytes] = {}  # serialised node lines still valid
        self._sets: dict[str, tuple[list[int], list[int]]] = {}  # parsed completed intervals
        self._memo: dict[str, int] = ParseMemo()
        self._checked: set[str] = set()  # nodes whose records were validated for writing
        self._legacy = False
        self._log_ok: int | None = None  # a revision whose audit records are known logged
        self._tail_enc: list[bytes] | None = None  # serialised doc["log_tail"]

    def _read(self, *, locked: bool = False) -> dict[str, Any]:
        """The current document, from cache when the file is the one last seen."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._doc is None or self._sig is not None or locked:
                self._invalidate()
                self._doc = self._fresh_doc()
            return self._doc  # type: ignore[return-value]
        except OSError as exc:
            raise self._unreadable(exc) from None
        if (
            self._doc is not None
            and self._held_fd is not None
            and (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == self._sig
        ):
            return self._doc
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return self._read(locked=locked)  # replaced between stat and open: look again
        except OSError as exc:
            raise self._unreadable(exc) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StateError(
                    f"state file {self.path} is not a regular file; move it aside "
                    "(nothing was changed)"
                )
            chunks = []
            while True:
                chunk = os.read(fd, max(st.st_size, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
            data = b"".join(chunks)
            self._load_bytes(data, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns),
                             stat.S_IMODE(st.st_mode))
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError):
                raise self._unreadable(exc) from None
            raise
        self._hold(fd)
        return self._doc  # type: ignore[return-value]

    def _hold(self, fd: int) -> None:
        """Keep the cached file's inode open (see ``_sig``), releasing the previous one."""
        old, self._held_fd = self._held_fd, fd
        if old is not None:
            os.close(old)

    def _unreadable(self, exc: OSError) -> StateError:
        return StateError(
            f"cannot read state file {self.path}: {exc.strerror or exc}; "
            "fix its permissions or path (nothing was changed)"
        )

    def _fresh_doc(self) -> dict[str, Any]:
        # Continue the revision sequence of an existing audit log, so a sensor's cursor
        # never points past a recreated store.
        base = audit_log.last_revision(self.log_path) or 0
        return {
            "schema_version": SCHEMA_VERSION,
            "revision": base,
            "updated_at": None,
            "nodes": {},
            "log_tail": [],
        }

    def _load_bytes(self, data: bytes, sig: tuple[int, int, int, int], mode: int) -> None:
        self._invalidate()
        try:
            with gc_paused():
                doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise self._corrupt(_describe_json_error(data, exc), data) from None
        try:
            doc = self._check_shape(doc)
        except _Corrupt as exc:
            raise self._corrupt(str(exc), data) from None
        self._doc = doc
        self._sig = sig
        self._mode = mode
        if self._legacy:
            try:
                for name, node in doc["nodes"].items():
                    starts, ends, _ = parse_rows(
                        node.get("completed_intervals", []), self._memo, legacy=True
                    )
                    node["completed_intervals"] = format_rows(starts, ends)
                    self._sets[name] = (starts, ends)
            except (ValueError, TypeError) as exc:
                self._invalidate()
                raise self._corrupt(f"node {name!r}: completed_intervals: {exc}", data) from None
        else:
            self._index_lines(data, doc)

    def _check_shape(self, doc: object) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise _Corrupt(f"top level is a {type(doc).__name__}, expected an object")
        version = doc.get("schema_version")
        if version is None:
            self._legacy = True
            nodes = doc.get("nodes", {})
            rev = doc.get("revision", 0)
            if not isinstance(rev, int) or isinstance(rev, bool) or rev < 0:
                rev = 0
            rev = max(rev, audit_log.last_revision(self.log_path) or 0)
            extra = {k: v for k, v in doc.items() if k not in ("nodes", "revision")}
            doc = {"schema_version": SCHEMA_VERSION, "revision": rev, "updated_at": None,
                   "nodes": nodes, "log_tail": [], **extra}
        elif not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise _Corrupt(f"schema_version is {version!r}, expected {SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            raise StateError(
                f"state file {self.path} has schema_version {version}, written by a newer "
                f"seeknal (this one reads {SCHEMA_VERSION}); upgrade seeknal (nothing was changed)"
            )
        else:
            rev = doc.get("revision")
            if not isinstance(rev, int) or isinstance(rev, bool) or rev < 0:
                raise _Corrupt(f"revision is {rev!r}, expected a non-negative integer")
            doc.setdefault("updated_at", None)
            tail = doc.setdefault("log_tail", [])
            if not isinstance(tail, list) or not all(
                isinstance(r, dict) and isinstance(r.get("revision"), int) for r in tail
            ):
                raise _Corrupt("log_tail is not a list of audit records")
        nodes = doc.get("nodes")
        if not isinstance(nodes, dict):
            raise _Corrupt("'nodes' is missing or not an object")
        for name, node in nodes.items():
            if not isinstance(node, dict):
                raise _Corrupt(f"node {name!r} is a {type(node).__name__}, expected an object")
        return doc

    def _index_lines(self, data: bytes, doc: dict[str, Any]) -> None:
        """Keep each node's line of the file as its serialised form (our layout only)."""
        nodes = doc["nodes"]
        lines = data.split(b"\n")
        if len(lines) != len(nodes) + 3 or not lines[0].endswith(b'"nodes": {'):
            return
        for name, line in zip(nodes, lines[1:-2]):
            if line.endswith(b","):
                line = line[:-1]
            if not line.startswith(json.dumps(name, ensure_ascii=False).encode() + b": {"):
                self._lines.clear()
                return
            self._lines[name] = line

    def _corrupt(self, problem: str, data: bytes) -> StateError:
        """The one-line error for a bad file, after saving a byte-for-byte copy beside it."""
        try:
            backup = self._backup(data)
        except OSError as exc:
            where = (
                f"no copy could be saved ({exc.strerror or exc}): copy it aside first, then"
            )
        else:
            where = f"a copy is saved as {backup}; to recover,"
        return StateError(
            f"state file {self.path} is corrupt: {problem}. It was not changed and "
            f"every command stops until it is fixed; {where} restore a good copy "
            "(or delete it to start empty: every interval becomes pending again)"
        )

    def _backup(self, data: bytes) -> Path:
        folder, prefix = self.path.parent, self.path.name + ".corrupt-"
        for entry in os.scandir(folder):
            if entry.name.startswith(prefix) and entry.is_file():
                try:
                    if entry.stat().st_size == len(data) and Path(entry.path).read_bytes() == data:
                        return Path(entry.path)  # this content was saved already
                except OSError:
                    continue
        stamp = dt.datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        for n in range(1000):
            target = folder / f"{prefix}{stamp}{'' if n == 0 else f'-{n}'}"
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
            return target
        raise OSError("too many backups with the same timestamp")

    def _completed_arrays(self, name: str, node: dict[str, Any]) -> tuple[list[int], list[int]]:
        """The node's merged completed intervals; parsed on first use and cached."""
        arrays = self._sets.get(name)
        if arrays is None:
            rows = node.get("completed_intervals", [])
            try:
                starts, ends, aligned = parse_rows(rows, self._memo)
            except (ValueError, TypeError) as exc:
                raise self._corrupt_on_disk(f"node {name!r}: completed_intervals: {exc}") from None
            if not aligned:  # hand-edited or unmerged: keep rows 1:1 with the arrays
                node["completed_intervals"] = format_rows(starts, ends)
                self._lines.pop(name, None)
            arrays = self._sets[name] = (starts, ends)
        return arrays

    def _corrupt_on_disk(self, problem: str) -> StateError:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            return self._unreadable(exc)
        return self._corrupt(problem, data)

    def _node_state(self, name: str, node: dict[str, Any]) -> NodeState:
        starts, ends = self._completed_arrays(name, node)
        try:
            failed = [
                FailedInterval(
                    start=dt_of_us(parse_us(f["start"])),
                    end=dt_of_us(parse_us(f["end"])),
                    error=str(f.get("error", "")),
                    attempts=int(f.get("attempts", 1)),
                    last_attempt=dt_of_us(parse_us(f["last_attempt"])),
                )
                for f in node.get("failed_intervals", [])
            ]
            restatements = [parse_restatement(name, r) for r in node.get("restatements", [])]
            keys = node.get("partition_keys", [])
            if not isinstance(keys, list):
                raise TypeError("partition_keys is not a list")
            fingerprint = node.get("fingerprint")
            definition = node.get("definition")
            if definition is not None and not isinstance(definition, dict):
                raise TypeError("definition is not an object")
            return NodeState(
                name=name,
                completed=_set_of(starts, ends),
                failed=failed,
                restatements=restatements,
                partition_keys=set(keys),
                fingerprint=None if fingerprint is None else str(fingerprint),
                last_run=parse_dt_or_none(node.get("last_run")),
                revision=int(node.get("revision", 0)),
                definition=definition,
                inferred_start=parse_dt_or_none(node.get("inferred_start")),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise self._corrupt_on_disk(f"node {name!r}: {type(exc).__name__}: {exc}") from None

    @property
    def revision(self) -> int:
        """The store revision: +1 on every mutation, never reused."""
        with self._mutex:
            return self._read()["revision"]

    def load(self) -> dict[str, NodeState]:
        """A snapshot of every node (parses all intervals; prefer ``node()`` for one)."""
        with self._mutex:
            doc = self._read()
            with gc_paused():
                return {name: self._node_state(name, node) for name, node in doc["nodes"].items()}

    def fingerprints(self) -> dict[str, str | None]:
        """Each recorded node's fingerprint, read off the document (no intervals parsed)."""
        with self._mutex:
            nodes = self._read()["nodes"]
            return {name: None if raw.get("fingerprint") is None else str(raw["fingerprint"])
                    for name, raw in nodes.items()}

    def node(self, name: str) -> NodeState:
        """One node's state; an unknown node is simply empty (the project owns the node list)."""
        with self._mutex:
            raw = self._read()["nodes"].get(name)
            return NodeState(name) if raw is None else self._node_state(name, raw)

    def completed(self, name: str) -> IntervalSet:
        """The node's completed intervals, merged (a copy)."""
        with self._mutex:
            raw = self._read()["nodes"].get(name)
            if raw is None:
                return IntervalSet()
            return _set_of(*self._completed_arrays(name, raw))

    def digests(self, node: str) -> dict[str, dict[int, tuple[int, int | None, str]]]:
        """The node's input digests (``"digests"`` on its line, written only once it has
        some: source -> "interval start in epoch seconds" -> "rows newest-us checksum")."""
        with self._mutex:
            raw = self._read()["nodes"].get(node) or {}
            try:
                return {source: {int(k): decode_digest(v) for k, v in per_start.items()}
                        for source, per_start in (raw.get("digests") or {}).items()}
            except (ValueError, TypeError, IndexError, AttributeError) as exc:
                raise self._corrupt_on_disk(f"node {node!r}: digests: {exc}") from None

    def pending_restatements(self, node: str | None = None) -> list[Restatement]:
        """Restatements not yet resolved, oldest first, for one node or all."""
        with self._mutex:
            nodes = self._read()["nodes"]
            names = [node] if node is not None else list(nodes)
            out = []
            for name in names:
                for raw in nodes.get(name, {}).get("restatements", []):
                    if raw.get("status") == "pending":
                        out.append(self._parse_restatement(name, raw))
        return sorted(out, key=lambda r: r.requested_at)

    def _parse_restatement(self, node: str, raw: Mapping[str, Any]) -> Restatement:
        try:
            return parse_restatement(node, raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise self._corrupt_on_disk(f"node {node!r}: restatement: {exc}") from None

    def _apply_inferred_start(self, node: str, epoch_seconds: int) -> int:
        """``set_inferred_start``: an ``inferred_start`` key on the node's line, written only
        once inferred, so older lines stay as they are (``_mutate`` is the store's)."""
        def apply(doc: dict[str, Any], now: str, revision: int) -> tuple[list, None]:
            value = fmt_us(epoch_seconds * 1_000_000)
            self._node_for_write(doc, node, revision)["inferred_start"] = value
            return [audit_entry("inferred_start", node, now, inferred_start=value)], None

        return self._mutate(apply)[0]  # type: ignore[attr-defined]

    def _node_for_write(self, doc: dict[str, Any], name: str, revision: int) -> dict[str, Any]:
        """The node's dict, created when new, with its serialised line invalidated."""
        nodes = doc["nodes"]
        node = nodes.get(name)
        if node is None:
            node = nodes[name] = {}
        for key, default in (
            ("completed_intervals", []),
            ("failed_intervals", []),
            ("restatements", []),
            ("partition_keys", []),
            ("fingerprint", None),
            ("last_run", None),
        ):
            node.setdefault(key, default)
        if name not in self._checked:
            self._check_records(name, node)
        node["revision"] = revision
        if list(node)[: len(_NODE_KEYS)] != list(_NODE_KEYS):  # canonical key order
            ordered = {k: node[k] for k in _NODE_KEYS}
            ordered.update((k, v) for k, v in node.items() if k not in ordered)
            node.clear()
            node.update(ordered)
        self._lines.pop(name, None)
        return node

    def _check_records(self, name: str, node: dict[str, Any]) -> None:
        """Validate the small records a mutation edits, so a bad file fails as ``corrupt``."""
        try:
            failed_pairs(node["failed_intervals"])
            for item in node["restatements"]:
                parse_restatement(name, item)
            if not isinstance(node["partition_keys"], list):
                raise TypeError("partition_keys is not a list")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise self._corrupt_on_disk(f"node {name!r}: {type(exc).__name__}: {exc}") from None
        self._checked.add(name)

    def _update_completed(
        self, name: str, node: dict[str, Any], change: IntervalSet, *, add: bool
    ) -> None:
        """Add or remove intervals, re-formatting only the rows between the changed bounds."""
        if not change:
            return
        starts, ends = self._completed_arrays(name, node)
        c_starts, c_ends = change.micros()
        lo, hi = c_starts[0], c_ends[-1]
        prefix = bisect_left(ends, lo)  # members ending before lo are untouched
        cut = bisect_right(starts, hi)  # members starting after hi are untouched
        suffix = len(starts) - cut
        current = IntervalSet.from_micros(starts, ends, merged=True)
        updated = current.union(change) if add else current.difference(change)
        starts, ends = self._sets[name] = updated.micros()
        rows = node["completed_intervals"]
        stop = len(starts) - suffix
        middle = format_rows(starts[prefix:stop], ends[prefix:stop])
        node["completed_intervals"] = rows[:prefix] + middle + rows[len(rows) - suffix :]

    def _render(self, doc: dict[str, Any]) -> bytes:
        lines = self._lines
        parts = []
        for name, node in doc["nodes"].items():
            line = lines.get(name)
            if line is None:
                line = lines[name] = (
                    json.dumps(name, ensure_ascii=False) + ": " + json.dumps(node, ensure_ascii=False)
                ).encode()
            parts.append(line)
        head = (
            f'{{"schema_version": {SCHEMA_VERSION}, "revision": {doc["revision"]}, '
            f'"updated_at": {json.dumps(doc["updated_at"])}, "nodes": {{\n'
        ).encode()
        tail = b"[" + b", ".join(self._tail_encoded(doc)) + b"]"
        extras = {k: v for k, v in doc.items() if k not in _TOP_KEYS}
        more = b", " + json.dumps(extras, ensure_ascii=False)[1:-1].encode() if extras else b""
        return b"".join((head, b",\n".join(parts), b'\n}, "log_tail": ', tail, more, b"}\n"))

    def _write_state(self, data: bytes) -> None:
        """Atomic replace (``durable.atomic_write``); the store then holds the new inode."""
        try:
            fd = atomic_write(self.path, data, mode=self._mode, durable=self.durable, keep_open=True)
        except OSError as exc:
            raise StateError(
                f"cannot write state file {self.path}: {exc.strerror or exc}; "
                "the previous state is unchanged"
            ) from None
        st = os.fstat(fd)
        self._hold(fd)
        self._sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _export_node(self, name: str, raw: dict[str, Any]) -> dict[str, Any]:
        state = self._node_state(name, raw)  # validates: a bad record fails as "corrupt"
        inferred = {} if state.inferred_start is None else {"inferred_start": fmt_dt(state.inferred_start)}
        return {
            "completed_intervals": format_rows(*state.completed.micros()),
            "failed_intervals": [
                {"start": fmt_dt(f.start), "end": fmt_dt(f.end), "error": f.error,
                 "attempts": f.attempts, "last_attempt": fmt_dt(f.last_attempt)}
                for f in sorted(state.failed, key=lambda f: f.start)
            ],
            "restatements": json.loads(json.dumps(raw.get("restatements", []))),  # a deep copy
            "partition_keys": sorted(state.partition_keys),
            "fingerprint": state.fingerprint,
            "last_run": None if state.last_run is None else fmt_dt(state.last_run),
            "revision": state.revision,
            "definition": state.definition,
            **inferred,  # only when inferred, as on the node's line
            **({"digests": json.loads(json.dumps(raw["digests"]))} if raw.get("digests") else {}),
        }
