"""The JSON state file and audit log are byte-identical to golden files written before the
state package was restructured: a fixed sequence of operations, then a byte comparison.

Only volatile values are normalised (the wall-clock times the store stamps and the random
restatement ids); layout, key order, spacing and every other byte are compared as written.
Regenerate (only when the file format is meant to change) with
``SEEKNAL_WRITE_GOLDEN=1 .venv/bin/python -m pytest tests/test_state_golden.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pytest

from seeknal_core import Interval
from seeknal_core.state import JsonStateStore

GOLDEN = Path(__file__).parent / "golden"
UTC = dt.UTC
_TIME_FIELDS = re.compile(
    rb'"(at|updated_at|last_run|requested_at|resolved_at|last_attempt)": "[^"]*"'
)
_ID = re.compile(rb'"[0-9a-f]{12}"')


def d(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2024, 1, day, hour, tzinfo=UTC)


def normalise(data: bytes) -> bytes:
    """Pin the store's clock stamps and number restatement ids in order of appearance."""
    data = _TIME_FIELDS.sub(lambda m: b'"' + m.group(1) + b'": "<now>"', data)
    ids: dict[bytes, bytes] = {}
    return _ID.sub(lambda m: ids.setdefault(m.group(0), b'"<id%d>"' % (len(ids) + 1)), data)


def operations(store: JsonStateStore) -> None:
    """Every kind of mutation, enough of them to flush the log's group commit twice."""
    store.mark_complete("orders", [(d(1), d(2)), (d(2), d(3))], run_id="r1", rows=10,
                        duration=1.5, partition_keys=["2024-01-01", "2024-01-02"], fingerprint="fp-a")
    store.mark_complete("users", [Interval(d(1), d(5))], origin="backfill", rows=40, duration=2.0)
    store.mark_failed("orders", [(d(3), d(4)), (d(5), d(6))], "boom", run_id="r2", duration=0.25)
    store.mark_failed("orders", [(d(3, 12), d(5, 12))], "again", origin="dagster", run_id="r3")
    store.mark_complete("orders", [(d(3), d(4))], run_id="r4", rows=5, duration=0.5)
    store.restate({"orders": [(d(1), d(3))], "users": [Interval(d(2), d(4))]}, "late data", actor="ana")
    store.mark_complete("users", [(d(2), d(3))], origin="restate", rows=7)
    store.mark_complete("users", [(d(3), d(4))], origin="restate", rows=8)  # resolves users'
    [pending] = store.pending_restatements("orders")
    store.resolve_restatement(pending.id, by="bob")
    store.resolve_restatement(pending.id, by="bob")  # idempotent: no change
    store.set_fingerprint("orders", "fp-b")
    store.set_fingerprint("orders", "fp-b")  # unchanged: no change
    store.set_fingerprint("events", "fp-e")
    store.record_execution("orders", [(d(6), d(7))], mode="run", status="skipped", run_id="r5")
    store.mark_complete("events", [(d(1, h), d(1, h + 1)) for h in range(0, 24, 2)], rows=1)
    store.mark_complete("events", [(d(1, h), d(1, h + 1)) for h in range(1, 23, 2)], rows=1)
    store.mark_failed("events", [(d(2), d(3))], "disk", origin="backfill")
    store.restate({"events": [(d(1, 6), d(1, 8))]}, "fix", actor="ana")
    store.record_execution("users", mode="manual", status="cancelled", error="stopped")


SEED = {"nodes": {"my_node": {"completed_intervals": [
    ["2024-01-01T00:00:00", "2024-01-01T23:59:59"],
    ["2024-01-02T00:00:00", "2024-01-02T23:59:59"],
    ["2024-01-04T00:00:00", "2024-01-04T23:59:59"],
]}}}


def seed_operations(store: JsonStateStore) -> None:
    """A seed-format file (no schema_version, closed ends) normalised by the first mutation."""
    store.mark_complete("my_node", [(d(3), d(4))], origin="manual")
    store.mark_complete("other", [(d(1), d(2))])


def run(tmp_path: Path, name: str, scenario, seed: dict | None = None) -> dict[str, bytes]:
    path = tmp_path / name / "run_state.json"
    if seed is not None:
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(seed))
    store = JsonStateStore(path, durable=False)
    try:
        scenario(store)
    finally:
        store.close()
    return {f"{name}.run_state.json": path.read_bytes(),
            f"{name}.run_log.jsonl": path.with_name("run_log.jsonl").read_bytes()}


@pytest.mark.parametrize("name,scenario,seed", [
    ("ops", operations, None),
    ("seed", seed_operations, SEED),
])
def test_state_and_log_bytes_match_golden(tmp_path, name, scenario, seed):
    files = run(tmp_path, name, scenario, seed)
    if os.environ.get("SEEKNAL_WRITE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        for fname, data in files.items():
            (GOLDEN / fname).write_bytes(normalise(data))
    for fname, data in files.items():
        assert normalise(data) == (GOLDEN / fname).read_bytes(), fname


def test_normalise_keeps_every_other_byte():
    raw = b'{"at": "2026-01-01T00:00:00.5Z", "id": "0123456789ab", "x": "2024-01-01T00:00:00Z"}'
    assert normalise(raw) == b'{"at": "<now>", "id": "<id1>", "x": "2024-01-01T00:00:00Z"}'
