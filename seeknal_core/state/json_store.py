"""The default state backend: ``target/run_state.json`` plus the ``target/run_log.jsonl`` audit log.

The log is named after its state file (``a_state.json`` -> ``a_state.log.jsonl``; the
default keeps ``run_log.jsonl``), so projects whose state files share a folder keep
separate histories.  Older seeknal wrote every state file's log to ``run_log.jsonl``: a
store whose own log does not exist yet adopts (renames) that file only when its records
are this state file's alone (``legacy_log_matches``) and no ``run_state.json`` beside it
claims it; otherwise it is left untouched and the store starts its own log.

File layout (one node per line, so ``grep completed_intervals`` and ``git diff`` are
useful and a mutation re-serialises only the node it touched)::

    {"schema_version": 1, "revision": 7, "updated_at": "2024-05-01T10:00:00.1Z", "nodes": {
    "orders": {"completed_intervals": [["2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z"]], ...},
    "users": {...}
    }, "log_tail": [<audit records not yet fsynced in run_log.jsonl>]}

Completed intervals are stored merged, half-open, in UTC.  Files without
``schema_version`` (the seed documents' format: every interval listed, naive times,
closed ``23:59:59`` ends) are normalised on load and rewritten on the next mutation.

Safety:

* every mutation is one read-modify-write under an inter-process flock on
  ``run_state.json.lock`` (``flock``), so concurrent writers never lose
  an update;
* the new state goes to a unique temp file in the same folder, is fsynced, renamed
  over the old one with ``os.replace`` and the folder is fsynced: a crash leaves the
  old or the new file, never a torn one;
* audit records are appended to the log after the state file, under the same lock.
  The log is fsynced once every ``LOG_TAIL_RECORDS`` mutations; until then the state
  file carries the records (``log_tail``), so its own fsync makes them durable and the
  next operation re-appends whatever a crash kept out of the log;
* a file that does not parse stops every operation with a one-line ``StateError``; it
  is never rewritten, and a byte-for-byte copy is saved beside it.

Speed: the parsed document is cached per process and reused while the file's
``(device, inode, size, mtime_ns)`` is unchanged (the store keeps that inode open, so
the number cannot be recycled by another file); intervals are parsed lazily per node;
unchanged nodes keep their serialised line.  Readers take no lock: ``os.replace``
makes every read see a complete file.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..durable import FileMutex, atomic_write, sweep_temp_files
from ..intervals import IntervalSet
from . import audit_log
from .audit_log import (
    DEFAULT_STATE_NAME,
    LEGACY_LOG_NAME,
    AuditLog,
    LogTail,
    default_log_path,
    log,
)
from .base import Change, Restatement, StateError
from .common import (
    Completion,
    StoreBase,
    encode_digest,
    fmt_us,
    format_rows,
    now_us,
    pending_item,
    resync_changes,
)
from .json_file import SCHEMA_VERSION, JsonStateFile
from .records import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    add_failure,
    audit_entry,
    canonical_record,
    check_export,
    export_header,
    failed_pairs,
    failed_row,
    parse_change,
    parse_restatement,
    prune_resolved,
    resolve_covered,
    resolve_record,
    stamped,
    subtract_failed,
)

__all__ = ["EXPORT_FORMAT", "EXPORT_VERSION", "SCHEMA_VERSION", "JsonStateStore", "check_export",
           "default_log_path"]


def _refuse_dangling_link(path: Path) -> None:
    """A state path that is (or lies under) a link to nothing is refused: following it
    would create the missing target's folders wherever the link points."""
    for part in (path, *path.parents):
        if os.path.islink(part) and not os.path.exists(part):
            where = f"state file {path}" + ("" if part == path else f": its folder {part}")
            raise StateError(
                f"{where} is a link to {os.readlink(part)}, which does not "
                "exist — restore what it points to, or remove the link to start an empty state")


class JsonStateStore(JsonStateFile, LogTail, StoreBase):
    """State in one JSON file, audit in a JSON-lines file beside it (see the module doc).

    ``durable=False`` skips the fsyncs: writes stay atomic, but a power loss may lose
    the latest ones.  Meant for tests and scratch projects.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        log_path: str | os.PathLike[str] | None = None,
        *,
        durable: bool = True,
        lock_timeout: float = 60.0,
    ) -> None:
        _refuse_dangling_link(Path(os.path.abspath(os.fspath(path))))
        self.path = Path(os.path.realpath(os.fspath(path)))
        self.log_path = (
            Path(os.path.abspath(os.fspath(log_path)))
            if log_path is not None
            else default_log_path(self.path)
        )
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.durable = durable
        self.lock_timeout = lock_timeout
        self._lock = FileMutex(self.lock_path, lock_timeout)
        self._mutex = threading.RLock()
        self._swept = False
        self._folder_ready = False
        self._log = AuditLog(self.log_path)
        self._held_fd: int | None = None
        self._invalidate()
        if log_path is None and self.log_path.name != LEGACY_LOG_NAME:
            self._adopt_legacy_log()

    def __repr__(self) -> str:
        return f"JsonStateStore({str(self.path)!r})"

    def _adopt_legacy_log(self) -> None:
        """Rename an older seeknal's ``run_log.jsonl`` to this store's log when it is this
        state file's own (see ``legacy_log_matches``); otherwise it stays where it is."""
        legacy = self.path.with_name(LEGACY_LOG_NAME)
        if (self.log_path.exists() or not legacy.exists() or not self.path.exists()
                or self.path.with_name(DEFAULT_STATE_NAME).exists()):
            return  # nothing to adopt, or it is the default state file's log
        try:
            with self._mutex:
                self._acquire()  # not _locked(): its log repair would create our log first
                try:
                    if self.log_path.exists() or not legacy.exists():
                        return  # another process adopted it meanwhile
                    if audit_log.legacy_log_matches(legacy, self._read(locked=True)):
                        os.rename(legacy, self.log_path)
                        log.info("audit log %s adopted as %s", legacy, self.log_path)
                    else:
                        log.warning("audit log %s does not match state file %s (shared by several "
                                    "state files?): left in place; %s starts a new log",
                                    legacy, self.path, self.log_path)
                finally:
                    self._release()
        except (StateError, OSError) as exc:
            log.warning("could not adopt audit log %s: %s", legacy, exc)

    def close(self) -> None:
        """Release the descriptors this store keeps open (the store stays usable)."""
        with self._mutex:
            self._lock.close()
            self._log.close()
            for attr in ("_held_fd",):
                fd = getattr(self, attr, None)
                setattr(self, attr, None)
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._sig = None

    # -- writing -----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Hold the inter-process lock around one read-modify-write; yields the fresh document."""
        with self._mutex:
            try:
                if not self._folder_ready:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._folder_ready = True
                self._acquire()
            except OSError as exc:
                self._folder_ready = False
                raise StateError(
                    f"cannot lock state file {self.path}: {exc.strerror or exc}; "
                    "check the folder exists and is writable (nothing was changed)"
                ) from None
            try:
                doc = self._read(locked=True)
                if not self._swept:
                    self._sweep_temp_files()
                self._repair_log(doc)
                try:
                    yield doc
                except BaseException:
                    self._invalidate()  # the cached document may be half-modified
                    raise
            finally:
                self._release()

    def _acquire(self) -> None:
        """Take the exclusive flock on ``run_state.json.lock``."""
        try:
            self._lock.acquire()
        except TimeoutError:
            raise self._lock_timeout() from None

    def _release(self) -> None:
        self._lock.release()

    def _lock_timeout(self) -> StateError:
        return StateError(
            f"timed out after {self.lock_timeout:g}s waiting for the state lock "
            f"{self.lock_path}: another seeknal process is writing; retry when it ends"
        )

    def _mutate(
        self, apply: Callable[[dict[str, Any], str, int], tuple[list[dict[str, Any]], Any]]
    ) -> tuple[int, Any]:
        """Run ``apply(doc, now, new_revision)`` under the lock; write if it produced records.

        Records are stamped ``new_revision`` unless ``apply`` numbered them (one revision
        per node of a ``mark_complete_many``); the store takes the last record's revision.
        """
        with self._locked() as doc:
            now = fmt_us(now_us())
            new_revision = doc["revision"] + 1
            records, result = apply(doc, now, new_revision)
            if not records:
                return doc["revision"], result
            for record in records:
                if record["revision"] is None:
                    record["revision"] = new_revision
            new_revision = records[-1]["revision"]  # several when apply numbered them itself
            encoded = [json.dumps(r, ensure_ascii=False).encode() for r in records]
            tail, tail_enc = self._next_tail(doc, encoded)
            doc["revision"] = new_revision
            doc["updated_at"] = now
            doc["log_tail"] = tail + records
            self._tail_enc = tail_enc + encoded
            self._write_state(self._render(doc))
            self._legacy = False
            self._append_log(encoded, new_revision)
            return new_revision, result

    def _sweep_temp_files(self) -> None:
        """Delete temp files of writers that died mid-write (safe: we hold the lock)."""
        self._swept = sweep_temp_files(self.path)

    # -- mutations (argument checks and audit records: ``StoreBase``) --------------------------

    def _where(self) -> str:
        return str(self.path)

    def _apply_complete(self, items: list[Completion]) -> int:
        def apply(doc: dict[str, Any], now: str, revision: int) -> tuple[list, None]:
            records: list[dict[str, Any]] = []
            for at, item in enumerate(items, start=revision):
                raw = self._node_for_write(doc, item.node, at)
                self._update_completed(item.node, raw, item.done, add=True)
                raw["failed_intervals"] = subtract_failed(raw["failed_intervals"], item.done)
                starts, ends = self._completed_arrays(item.node, raw)
                resolved = resolve_covered(raw, starts, ends, now, item.by)
                if item.keys:
                    raw["partition_keys"] = sorted(set(raw["partition_keys"]).union(item.keys))
                if item.fingerprint is not None:
                    raw["fingerprint"] = item.fingerprint
                raw["last_run"] = now
                if item.definition is not None:
                    raw["definition"] = item.definition
                if item.digests:
                    stored = raw.setdefault("digests", {})
                    for source, per_start in item.digests.items():
                        stored.setdefault(source, {}).update(
                            (str(k), encode_digest(v)) for k, v in per_start.items())
                entry = stamped(item.record, now)
                if resolved:
                    entry["resolved_restatements"] = [r["id"] for r in resolved]
                group = [entry] + [resolve_record(item.node, r, now) for r in resolved]
                for record in group:
                    record["revision"] = at
                records += group
            return records, None

        return self._mutate(apply)[0]

    def _apply_failed(
        self, node: str, pairs: list[tuple[int, int]], message: str, record: dict[str, Any]
    ) -> int:
        def apply(doc: dict[str, Any], now: str, revision: int) -> tuple[list, None]:
            raw = self._node_for_write(doc, node, revision)
            failed = failed_pairs(raw["failed_intervals"])
            attempts = 0
            for s, e in pairs:
                failed, count = add_failure(failed, s, e, message, now)
                attempts = max(attempts, count)
            raw["failed_intervals"] = [failed_row(s, e, rec) for s, e, rec in failed]
            raw["last_run"] = now
            return [{**stamped(record, now), "attempts": attempts}], None

        return self._mutate(apply)[0]

    def _apply_restate(
        self, wanted: dict[str, IntervalSet], reason: str, actor: str
    ) -> list[Restatement]:
        def apply(doc: dict[str, Any], now: str, revision: int) -> tuple[list, list]:
            return self._restate_in(doc, wanted, reason, actor, now, revision)

        return self._mutate(apply)[1]

    def _restate_in(self, doc: dict[str, Any], wanted: dict[str, IntervalSet], reason: str, actor: str,
                    now: str, revision: int) -> tuple[list[dict[str, Any]], list[Restatement]]:
        """One restatement request applied to ``doc`` at ``revision``: (records, restatements)."""
        records, created = [], []
        for name, change in wanted.items():
            raw = self._node_for_write(doc, name, revision)
            starts, ends = self._completed_arrays(name, raw)
            removed = IntervalSet.from_micros(starts, ends, merged=True).intersection(change)
            self._update_completed(name, raw, change, add=False)
            rows = format_rows(*change.micros())
            item = pending_item(uuid.uuid4().hex[:12], rows, reason, actor, now)
            raw["restatements"].append(item)
            records.append(audit_entry(
                "restate", name, now, intervals=rows, reason=reason, actor=actor,
                restatement_id=item["id"],
                removed=format_rows(*removed.micros()),
            ))
            created.append(parse_restatement(name, item))
        return records, created

    def _apply_plan(
        self, groups: list[tuple[dict[str, IntervalSet], str]], actor: str,
        definitions: list[tuple[str, str, dict[str, Any] | None]],
    ) -> int:
        def apply(doc: dict[str, Any], now: str, revision: int) -> tuple[list, None]:
            records: list[dict[str, Any]] = []
            steps = [self._restate_in(doc, wanted, reason, actor, now, revision + i)[0]
                     for i, (wanted, reason) in enumerate(groups)]
            for node, fingerprint, definition in definitions:
                record = self._fingerprint_in(doc, node, fingerprint, definition, now, revision + len(steps))
                if record is not None:
                    steps.append([record])
            for at, step in enumerate(steps, start=revision):
                for record in step:
                    record["revision"] = at
                records += step
            return records, None

        return self._mutate(apply)[0]

    def _apply_resolve(self, restatement_id: str, by: str) -> Restatement | None:
        def apply(doc: dict[str, Any], now: str, revision: int) -> tuple[list, Restatement | None]:
            for name, raw in doc["nodes"].items():
                for item in raw.get("restatements", []):
                    if item.get("id") != restatement_id:
                        continue
                    if item.get("status") != "pending":
                        return [], parse_restatement(name, item)
                    node = self._node_for_write(doc, name, revision)
                    item.update(status="resolved", resolved_at=now, resolved_by=by)
                    prune_resolved(node)
                    return [resolve_record(name, item, now)], parse_restatement(name, item)
            return [], None

        return self._mutate(apply)[1]

    def _apply_fingerprint(self, node: str, fingerprint: str, definition: dict[str, Any] | None) -> int:
        def apply(doc: dict[str, Any], now: str, revision: int) -> tuple[list, None]:
            record = self._fingerprint_in(doc, node, fingerprint, definition, now, revision)
            return ([] if record is None else [record]), None

        return self._mutate(apply)[0]

    def _fingerprint_in(self, doc: dict[str, Any], node: str, fingerprint: str,
                        definition: dict[str, Any] | None, now: str, revision: int) -> dict[str, Any] | None:
        """The node's new fingerprint applied to ``doc`` at ``revision``: its record (None: no change)."""
        raw = doc["nodes"].get(node, {})
        old = raw.get("fingerprint")
        if old == fingerprint and (definition is None or definition == raw.get("definition")):
            return None
        raw = self._node_for_write(doc, node, revision)
        raw["fingerprint"] = fingerprint
        record = audit_entry("fingerprint", node, now, fingerprint=fingerprint, previous=old)
        if definition is not None:
            raw["definition"] = record["definition"] = definition
        return record

    def _apply_execution(self, node: str, record: dict[str, Any]) -> None:
        with self._locked() as doc:
            entry = stamped(record, fmt_us(now_us()))
            entry["revision"] = doc["revision"]
            self._append_log([json.dumps(entry, ensure_ascii=False).encode()], doc["revision"])

    # -- journal -------------------------------------------------------------------------------

    def changes_since(self, revision: int) -> list[Change]:
        """Changes with a revision above ``revision``, oldest first.

        The journal is the audit log itself (every change record carries its revision),
        read backwards from the end and stopped at ``revision``: a sensor polling every
        30 s reads only what was appended since, and the state file stays small instead
        of carrying a journal that every mutation would rewrite.  The latest revision is
        also served from the state file's ``log_tail`` when a crash kept them out of
        the log.  When the log no longer reaches back to ``revision`` (deleted, rotated,
        migrated store) or ``revision`` is ahead of the store (it was replaced), every
        node is returned as one ``resync`` change holding its whole completed set.
        """
        revision = max(int(revision), 0)
        with self._mutex:
            doc = self._read()
            current = doc["revision"]
            tail = list(doc.get("log_tail") or [])
        if revision == current:
            return []
        if revision > current:
            return self._resync()
        logged, last, count = audit_log.scan(self.log_path, after=revision)
        records = [
            r for r in logged + audit_log.unlogged(tail, last, count)
            if revision < r.get("revision", 0) <= current and r.get("event") != "execution"
        ]
        if len({r["revision"] for r in records}) != current - revision:
            return self._resync()
        return [parse_change(r) for r in records]

    def _resync(self) -> list[Change]:
        return resync_changes(self.revision, self.load())

    def history(self, node: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit records of one node, oldest first (the last ``limit`` when given)."""
        out = audit_log.node_records(self.log_path, node)
        with self._mutex:  # after the log: a record logged meanwhile is not doubled
            tail = list(self._read().get("log_tail") or [])
        if tail:
            _, last, count = audit_log.scan(self.log_path, after=tail[-1]["revision"], block=4096)
            out += [r for r in audit_log.unlogged(tail, last, count) if r.get("node") == node]
        return out if limit is None else out[-limit:] if limit > 0 else []

    # -- export / import ---------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Everything the store holds (nodes and the whole audit log), backend-neutral.

        Taken under the lock, so no writer changes the state or the log meanwhile.
        """
        with self._mutex:
            if not self.path.exists() and not self.log_path.exists():
                return {**export_header(), "revision": 0, "nodes": {}, "audit": []}
            with self._locked() as doc:
                nodes = {name: self._export_node(name, raw) for name, raw in doc["nodes"].items()}
                audit = audit_log.read_records(self.log_path)
                _, last, count = audit_log.scan(self.log_path, after=doc["revision"], block=4096)
                audit += audit_log.unlogged(list(doc.get("log_tail") or []), last, count)
                return {**export_header(), "revision": doc["revision"], "nodes": nodes, "audit": audit}

    def import_(self, data: Mapping[str, Any]) -> int:
        """Load an ``export()`` into this store, which must be empty; returns its revision.

        Revisions, audit records and restatement ids are kept as they are (a sensor's
        cursor stays valid).  The audit log is written first, then the state file, each
        atomically.
        """
        data = check_export(data)
        with self._locked() as doc:
            if doc["revision"] or doc["nodes"] or audit_log.last_revision(self.log_path) is not None:
                raise StateError(
                    f"state file {self.path} already holds state (revision {doc['revision']}): "
                    "import only into an empty store — choose another path"
                )
            nodes = {}
            for name, raw in data["nodes"].items():
                node = {key: json.loads(json.dumps(raw.get(key, default))) for key, default in (
                    ("completed_intervals", []), ("failed_intervals", []), ("restatements", []),
                    ("partition_keys", []), ("fingerprint", None), ("last_run", None), ("revision", 0),
                )}
                node["partition_keys"] = sorted(set(node["partition_keys"]))
                if raw.get("definition") is not None:  # absent when None: a node line as written
                    node["definition"] = json.loads(json.dumps(raw["definition"]))
                if raw.get("inferred_start") is not None:
                    node["inferred_start"] = raw["inferred_start"]
                if raw.get("digests"):
                    node["digests"] = json.loads(json.dumps(raw["digests"]))
                nodes[name] = node
            self._replace_log(data["audit"])
            new = {"schema_version": SCHEMA_VERSION, "revision": data["revision"],
                   "updated_at": fmt_us(now_us()), "nodes": nodes, "log_tail": []}
            self._invalidate()
            self._doc = new
            self._write_state(self._render(new))
            self._log_ok = new["revision"]
            return new["revision"]

    def _replace_log(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write the audit log whole (``durable.atomic_write``)."""
        data = b"".join(
            json.dumps(canonical_record(r), ensure_ascii=False).encode() + b"\n" for r in records
        )
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.log_path, data, durable=self.durable)
        except OSError as exc:
            raise StateError(
                f"cannot write audit log {self.log_path}: {exc.strerror or exc}; nothing was imported"
            ) from None
