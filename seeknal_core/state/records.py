"""Records both state backends share: interval rows, restatements, failures, audit
records and the backend-neutral export document.

The JSON store keeps these as dicts in its file; the PostgreSQL store sends and reads
the same shapes (its audit rows are the JSON log's lines), so each rule is written once
here: how rows parse, how a failure splits older ones, which restatements a completion
resolves, how an audit record's keys are ordered, what a valid export looks like.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain, islice
from operator import lt
from typing import Any

from ..intervals import IntervalSet
from .base import Change, Restatement, StateError
from .common import (
    check_digests,
    check_node_name,
    decode_digest,
    dt_of_us,
    event_record,
    fmt_us,
    merge_pairs,
    parse_dt_or_none,
    parse_us,
)

#: Resolved restatements kept in the state file per node (older ones live in the audit log).
KEEP_RESOLVED = 20


#: ``export()`` / ``import_()`` documents: backend-neutral, so state moves between backends.
EXPORT_FORMAT = "seeknal-state-export"


EXPORT_VERSION = 1


def parse_rows(
    rows: object, memo: dict[str, int], *, legacy: bool = False
) -> tuple[list[int], list[int], bool]:
    """Parse ``[[start, end], ...]`` into merged arrays; ``aligned`` means rows map 1:1.

    ``memo`` caches text -> microseconds: nodes share the schedule grid, so most
    boundaries repeat and are parsed once per file.
    """
    if not isinstance(rows, list):
        raise TypeError(f"expected a list of [start, end] pairs, got {type(rows).__name__}")
    if not legacy:
        fast = _parse_rows_fast(rows, memo)
        if fast is not None:
            return fast
    end_memo: dict[str, int] = {} if legacy else memo
    starts: list[int] = []
    ends: list[int] = []
    aligned = True
    prev = None
    for row in rows:
        if isinstance(row, dict):  # tolerated in legacy files: {"start": ..., "end": ...}
            row = (row.get("start"), row.get("end"))
        if not isinstance(row, (list, tuple)) or len(row) != 2:
            raise ValueError(f"expected a [start, end] pair, got {row!r}")
        a, b = row
        s = memo.get(a) if type(a) is str else None
        if s is None:
            s = memo[a] = parse_us(a)
        e = end_memo.get(b) if type(b) is str else None
        if e is None:
            e = end_memo[b] = parse_us(b, closed_end=legacy)
        if s >= e:
            raise ValueError(f"interval [{a}, {b}) does not end after it starts")
        if prev is not None and s <= prev:
            aligned = False
        prev = e
        starts.append(s)
        ends.append(e)
    if not aligned:
        merged = merge_pairs(list(zip(starts, ends)), touching=True)
        starts = [s for s, _ in merged]
        ends = [e for _, e in merged]
    return starts, ends, aligned


class ParseMemo(dict):
    """ISO text -> microseconds; a lookup miss parses (``dict.__getitem__`` stays in C), so
    ``parse_rows`` of a whole file parses each shared grid boundary once."""

    def __missing__(self, text: str) -> int:
        value = self[text] = parse_us(text)
        return value


def _parse_rows_fast(
    rows: list, memo: dict[str, int]
) -> tuple[list[int], list[int], bool] | None:
    """The common case at C speed: well-formed ``[start, end]`` string pairs.

    Returns None when anything is unusual, and the checking loop takes over.
    """
    if not rows:
        return [], [], True
    try:
        # rows come from JSON: lists, and memo keys are only ever strings, so a wrong
        # shape or type fails the lookup or the parse below
        if set(map(len, rows)) != {2}:
            return None
        flat = list(chain.from_iterable(rows))
        if isinstance(memo, ParseMemo):  # misses are parsed by __missing__, inline
            values = list(map(memo.__getitem__, flat))
        else:
            values = [memo[t] if t in memo else memo.setdefault(t, parse_us(t)) for t in flat]
    except (TypeError, ValueError):
        return None
    starts, ends = values[0::2], values[1::2]
    if not all(map(lt, starts, ends)):
        return None  # an empty or reversed interval: let the loop name it
    aligned = all(map(lt, ends, islice(starts, 1, None)))
    if not aligned:
        merged = merge_pairs(list(zip(starts, ends)), touching=True)
        starts = [s for s, _ in merged]
        ends = [e for _, e in merged]
    return starts, ends, aligned


def audit_entry(event: str, node: str, at: str, **fields: Any) -> dict[str, Any]:
    """An audit record; ``revision`` comes first so readers can skip lines cheaply."""
    return stamped(event_record(event, node, **fields), at)


def stamped(record: dict[str, Any], at: str) -> dict[str, Any]:
    """``record`` with ``revision`` (set on commit) and ``at`` in front."""
    return {"revision": None, "at": at, **record}


#: Field order of each audit event after the common head (``revision, at, event, node``).
_FIELD_ORDER = {
    "complete": ("intervals", "mode", "status", "rows", "duration", "error", "run_id",
                 "partition_keys", "fingerprint", "resolved_restatements"),
    "fail": ("intervals", "mode", "status", "rows", "duration", "error", "run_id", "attempts"),
    "execution": ("intervals", "mode", "status", "rows", "duration", "error", "run_id"),
    "restate": ("intervals", "reason", "actor", "restatement_id", "removed"),
    "resolve": ("intervals", "restatement_id", "resolved_by", "reason"),
    "fingerprint": ("fingerprint", "previous", "definition"),
    "partitions_removed": ("partition_keys",),
}


def canonical_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """An audit record with its keys in the order this module writes them: ``revision``
    first (the log is scanned by that prefix), then ``at, event, node`` and the event's
    fields; unknown keys keep their order at the end."""
    head = ("revision", "at", "event", "node", *_FIELD_ORDER.get(record.get("event", ""), ()))
    out = {k: record[k] for k in head if k in record}
    out.update((k, v) for k, v in record.items() if k not in out)
    return out


def parse_change(record: Mapping[str, Any]) -> Change:
    """An audit record as the journal entry ``changes_since`` returns (both stores' journals)."""
    rows = record.get("intervals") or []
    starts, ends, _ = parse_rows(rows, {})
    at = record.get("at")
    return Change(
        revision=record["revision"],
        node=record.get("node", ""),
        kind=record.get("event", ""),
        intervals=IntervalSet.from_micros(starts, ends, merged=True),
        origin=record.get("mode") or record.get("resolved_by") or record.get("actor"),
        run_id=record.get("run_id"),
        at=parse_dt_or_none(at),
        details=dict(record),
    )


def parse_restatement(node: str, raw: Mapping[str, Any]) -> Restatement:
    """A stored restatement item (a JSON node's list, a PostgreSQL ``item`` column) as a ``Restatement``."""
    starts, ends, _ = parse_rows(raw["intervals"], {})
    return Restatement(
        id=str(raw["id"]),
        node=node,
        intervals=list(IntervalSet.from_micros(starts, ends, merged=True)),
        reason=str(raw.get("reason", "")),
        actor=str(raw.get("actor", "")),
        requested_at=dt_of_us(parse_us(raw["requested_at"])),
        status=str(raw.get("status", "pending")),
        resolved_at=parse_dt_or_none(raw.get("resolved_at")),
        resolved_by=raw.get("resolved_by"),
    )


def resolve_record(node: str, item: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The ``resolve`` audit record of a restatement item just resolved."""
    return audit_entry(
        "resolve", node, now, intervals=item["intervals"], restatement_id=item["id"],
        resolved_by=item["resolved_by"], reason=item.get("reason"),
    )


def resolve_covered(
    raw: dict[str, Any], starts: list[int], ends: list[int], now: str, by: str
) -> list[dict[str, Any]]:
    """Resolve pending restatements whose intervals are now all completed."""
    done = IntervalSet.from_micros(starts, ends, merged=True)
    resolved = []
    for item in raw["restatements"]:
        if item.get("status") != "pending":
            continue
        r_starts, r_ends, _ = parse_rows(item["intervals"], {})
        if all(done.covers_us(s, e) for s, e in zip(r_starts, r_ends)):
            item.update(status="resolved", resolved_at=now, resolved_by=by)
            resolved.append(item)
    if resolved:
        prune_resolved(raw)
    return resolved


def prune_resolved(raw: dict[str, Any]) -> None:
    """Keep pending restatements and the latest resolved ones; the log keeps the rest."""
    items = raw["restatements"]
    resolved = [i for i in items if i.get("status") != "pending"]
    if len(resolved) > KEEP_RESOLVED:
        drop = {id(i) for i in resolved[: len(resolved) - KEEP_RESOLVED]}
        raw["restatements"] = [i for i in items if id(i) not in drop]


def failed_pairs(rows: list[dict[str, Any]]) -> list[tuple[int, int, dict[str, Any]]]:
    """Stored failure rows as ``(start_us, end_us, record)``, the form ``add_failure`` edits."""
    return [
        (
            parse_us(r["start"]),
            parse_us(r["end"]),
            {"error": r.get("error", ""), "attempts": int(r.get("attempts", 1)),
             "last_attempt": r.get("last_attempt")},
        )
        for r in rows
    ]


def failed_row(s: int, e: int, rec: Mapping[str, Any]) -> dict[str, Any]:
    """``failed_pairs``' inverse: one failure as the row the JSON file stores."""
    return {"start": fmt_us(s), "end": fmt_us(e), "error": rec["error"],
            "attempts": rec["attempts"], "last_attempt": rec["last_attempt"]}


def subtract_failed(rows: list[dict[str, Any]], done: IntervalSet) -> list[dict[str, Any]]:
    """Failed records minus completed intervals; a partly completed failure keeps its rest."""
    if not rows:
        return rows
    out = []
    for s, e, rec in failed_pairs(rows):
        left = IntervalSet.from_micros([s], [e], merged=True).difference(done)
        out += [failed_row(a, b, rec) for a, b in zip(*left.micros())]
    return out


def export_header() -> dict[str, Any]:
    """The ``format`` and ``version`` every ``export()`` document starts with."""
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION}


def check_export(data: object) -> dict[str, Any]:
    """Validate an ``export()`` document before a store imports it; returns it as a dict."""

    def bad(problem: str) -> StateError:
        return StateError(
            f"not a valid seeknal state export: {problem}; create it with a state store's "
            "export() (`seeknal state migrate` does)"
        )

    if not isinstance(data, Mapping) or data.get("format") != EXPORT_FORMAT:
        raise bad(f"'format' is not {EXPORT_FORMAT!r}")
    if data.get("version") != EXPORT_VERSION:
        raise bad(f"version {data.get('version')!r}, this seeknal reads {EXPORT_VERSION}")
    revision = data.get("revision")
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise bad(f"revision {revision!r} is not a non-negative integer")
    nodes, audit = data.get("nodes"), data.get("audit")
    if not isinstance(nodes, Mapping) or not isinstance(audit, list):
        raise bad("'nodes' must be an object and 'audit' a list")
    for record in audit:
        rev = record.get("revision") if isinstance(record, Mapping) else None
        if not isinstance(rev, int) or not 0 <= rev <= revision:
            raise bad(f"audit record {record!r:.80} has no revision between 0 and {revision}")
    for name, raw in nodes.items():
        try:
            check_node_name(name)
            if not isinstance(raw, Mapping):
                raise TypeError("not an object")
            parse_rows(raw.get("completed_intervals") or [], {})
            failed_pairs(list(raw.get("failed_intervals") or []))
            for f in raw.get("failed_intervals") or []:
                parse_us(f["last_attempt"])
            for item in raw.get("restatements") or []:
                parse_restatement(name, item)
                parse_us(item["requested_at"])
            keys = raw.get("partition_keys") or []
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise TypeError("partition_keys is not a list of strings")
            if raw.get("last_run") is not None:
                parse_us(raw["last_run"])
            if raw.get("inferred_start") is not None:
                parse_us(raw["inferred_start"])
            if raw.get("definition") is not None and not isinstance(raw["definition"], Mapping):
                raise TypeError("definition is not an object")
            if raw.get("digests"):  # source -> "start seconds" -> "rows newest-us checksum"
                check_digests({source: {int(k): decode_digest(v) for k, v in per.items()}
                               for source, per in raw["digests"].items()})
            node_rev = raw.get("revision", 0)
            if not isinstance(node_rev, int) or not 0 <= node_rev <= revision:
                raise ValueError(f"revision {node_rev!r} is not between 0 and {revision}")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise bad(f"node {name!r}: {type(exc).__name__}: {exc}") from None
    return dict(data)


def add_failure(
    failed: list[tuple[int, int, dict[str, Any]]], s: int, e: int, message: str, now: str
) -> tuple[list[tuple[int, int, dict[str, Any]]], int]:
    """Record a failed attempt of ``[s, e)``: it replaces the overlapped parts of older
    failures (whose rest keeps its count) and counts one more than the highest it hit.

    Returns the new failures, sorted by start, and the attempt count.
    """
    hit = [f for f in failed if f[0] < e and s < f[1]]
    count = max((f[2]["attempts"] for f in hit), default=0) + 1
    kept = [f for f in failed if not (f[0] < e and s < f[1])]
    for fs, fe, rec in hit:  # parts of older failures outside this one stay
        if fs < s:
            kept.append((fs, s, rec))
        if fe > e:
            kept.append((e, fe, rec))
    kept.append((s, e, {"error": message, "attempts": count, "last_attempt": now}))
    return sorted(kept, key=lambda f: f[0]), count
