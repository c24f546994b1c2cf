"""State stores: operations on both backends (JSON file and PostgreSQL), and the JSON file's
format, seed-format migration and corruption handling."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from seeknal_core import Interval, IntervalSet
from seeknal_core.state import (
    JsonStateStore,
    NodeState,
    PostgresStateStore,
    StateError,
    StateStore,
    open_store,
)
from seeknal_core.state.audit_log import LOG_TAIL_RECORDS
from seeknal_core.state.common import fmt_us, parse_us
from seeknal_core.state.records import KEEP_RESOLVED, export_header

UTC = dt.UTC
SEED = {
    "nodes": {
        "my_node": {
            "completed_intervals": [
                ["2024-01-01T00:00:00", "2024-01-01T23:59:59"],
                ["2024-01-02T00:00:00", "2024-01-02T23:59:59"],
            ]
        }
    }
}


def d(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2024, 1, day, hour, tzinfo=UTC)


def days(a: int, b: int) -> Interval:
    return Interval(d(a), d(b))


@pytest.fixture
def store(store_factory) -> StateStore:
    """A fresh, empty store: every test using it runs on both backends."""
    return store_factory()


@pytest.fixture
def json_store(tmp_path: Path) -> JsonStateStore:
    return JsonStateStore(tmp_path / "target" / "run_state.json", durable=False)


def log_records(store: JsonStateStore) -> list[dict]:
    return [json.loads(line) for line in store.log_path.read_text().splitlines()]


@pytest.fixture
def free_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def audit(store: StateStore) -> list[dict]:
    """Every audit record of the store, oldest first (any backend)."""
    return store.export()["audit"]


def write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# -- seed format ------------------------------------------------------------------------------


def test_seed_format_loads_merged_half_open_utc(tmp_path):
    path = write(tmp_path / "target" / "run_state.json", json.dumps(SEED))
    before = path.read_bytes()
    store = JsonStateStore(path)
    assert store.completed("my_node") == IntervalSet([days(1, 3)])
    assert list(store.load()["my_node"].completed) == [Interval(d(1), d(3))]
    assert store.revision == 0
    assert path.read_bytes() == before, "reading must not rewrite a legacy file"

    store.mark_complete("my_node", [days(3, 4)])
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 1 and doc["revision"] == 1
    assert doc["nodes"]["my_node"]["completed_intervals"] == [
        ["2024-01-01T00:00:00Z", "2024-01-04T00:00:00Z"]
    ]
    grep = [line for line in path.read_text().splitlines() if "completed_intervals" in line]
    assert len(grep) == 1 and grep[0].startswith('"my_node": ')


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        ("2024-01-01T23:59:59", d(2)),
        ("2024-01-01T23:59:59.999999", d(2)),
        ("2024-01-01T23:59:59.999", d(2)),
        ("2024-01-01T05:59:59", d(1, 6)),  # hourly
        ("2024-01-01T06:00:00", d(1, 6)),  # already half-open
        ("2024-01-01T06:00:00+02:00", d(1, 4)),  # offsets honoured
    ],
)
def test_seed_format_closed_ends_become_half_open(tmp_path, end, expected):
    doc = {"nodes": {"n": {"completed_intervals": [["2024-01-01T00:00:00", end]]}}}
    store = JsonStateStore(write(tmp_path / "s.json", json.dumps(doc)))
    assert list(store.completed("n")) == [Interval(d(1), expected)]


def test_seed_format_hourly_closed_intervals_merge_and_unknown_fields_survive(tmp_path):
    rows = [[f"2024-01-01T{h:02d}:00:00", f"2024-01-01T{h:02d}:59:59"] for h in range(24)]
    rows.append({"start": "2024-01-03T00:00:00", "end": "2024-01-03T23:59:59"})
    doc = {"version": "0.3", "nodes": {"n": {"completed_intervals": rows, "owner": "data"}}}
    path = write(tmp_path / "s.json", json.dumps(doc))
    store = JsonStateStore(path)
    assert list(store.completed("n")) == [days(1, 2), days(3, 4)]
    store.set_fingerprint("n", "abc")
    new = json.loads(path.read_text())
    assert new["version"] == "0.3"
    assert new["nodes"]["n"]["owner"] == "data"
    assert new["nodes"]["n"]["completed_intervals"] == [
        ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"],
        ["2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z"],
    ]


def test_hand_edited_unmerged_v1_rows_are_normalised(tmp_path):
    doc = {
        "schema_version": 1, "revision": 3,
        "nodes": {"n": {"completed_intervals": [
            ["2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"],
            ["2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00Z"],
        ]}},
    }
    path = write(tmp_path / "s.json", json.dumps(doc))
    store = JsonStateStore(path, durable=False)
    assert list(store.completed("n")) == [days(1, 3)]
    store.mark_complete("n", [days(5, 6)])
    rows = json.loads(path.read_text())["nodes"]["n"]["completed_intervals"]
    assert rows == [["2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z"],
                    ["2024-01-05T00:00:00Z", "2024-01-06T00:00:00Z"]]
    assert store.revision == 4


# -- corruption ------------------------------------------------------------------------------

def _good_file(tmp_path: Path) -> bytes:
    store = JsonStateStore(tmp_path / "good" / "run_state.json", durable=False)
    store.mark_complete("a", [days(1, 2)])
    store.mark_failed("b", [days(1, 2)], "boom")
    return store.path.read_bytes()


def _every_operation(store: JsonStateStore) -> list:
    return [
        lambda: store.load(),
        lambda: store.node("a"),
        lambda: store.completed("a"),
        lambda: store.revision,
        lambda: store.mark_complete("a", [days(3, 4)]),
        lambda: store.mark_failed("a", [days(3, 4)], "x"),
        lambda: store.restate({"a": [days(1, 2)]}, "why"),
        lambda: store.resolve_restatement("nope"),
        lambda: store.pending_restatements(),
        lambda: store.set_fingerprint("a", "f"),
        lambda: store.record_execution("a", [days(1, 2)], status="skipped"),
        lambda: store.changes_since(0),
        lambda: store.history("a"),
    ]


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "not_an_object", "bad_nodes"])
def test_corrupt_file_stops_every_operation_and_stays_byte_for_byte(tmp_path, kind):
    good = _good_file(tmp_path)
    content = {
        "truncated": good[: len(good) // 2],
        "garbage": bytes(random.Random(1).randrange(256) for _ in range(2000)),
        "empty": b"",
        "not_an_object": b"[1, 2, 3]\n",
        "bad_nodes": b'{"schema_version": 1, "revision": 2, "nodes": [1]}\n',
    }[kind]
    path = write(tmp_path / "target" / "run_state.json", content)
    store = JsonStateStore(path, durable=False)
    messages = set()
    for op in _every_operation(store):
        with pytest.raises(StateError) as info:
            op()
        messages.add(str(info.value))
        assert path.read_bytes() == content
    assert len(messages) == 1, messages
    message = messages.pop()
    assert "\n" not in message
    assert str(path) in message and "corrupt" in message
    backups = list(path.parent.glob("run_state.json.corrupt-*"))
    assert len(backups) == 1, "one copy, however many commands failed"
    assert str(backups[0]) in message
    assert backups[0].read_bytes() == content
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        ["run_state.json", backups[0].name] + (["run_state.json.lock"] if
                                               (path.parent / "run_state.json.lock").exists()
                                               else [])
    ), "no temp file, no rewritten state"
    if kind == "truncated":
        assert "truncated" in message


def test_corrupt_interval_inside_a_node_is_reported_with_the_node(tmp_path):
    doc = {"schema_version": 1, "revision": 1,
           "nodes": {"orders": {"completed_intervals": [["2024-13-01", "2024-12-02"]]}}}
    content = json.dumps(doc).encode()
    path = write(tmp_path / "run_state.json", content)
    store = JsonStateStore(path, durable=False)
    for op in (store.load, lambda: store.completed("orders"),
               lambda: store.mark_complete("orders", [days(1, 2)])):
        with pytest.raises(StateError, match=r"corrupt: node 'orders'.*copy is saved"):
            op()
    assert path.read_bytes() == content


def test_newer_schema_version_is_refused_without_touching_the_file(tmp_path):
    content = b'{"schema_version": 2, "revision": 1, "nodes": {}}'
    path = write(tmp_path / "run_state.json", content)
    store = JsonStateStore(path)
    with pytest.raises(StateError, match="newer seeknal"):
        store.mark_complete("a", [days(1, 2)])
    assert path.read_bytes() == content


def test_unreadable_state_path_gives_one_clear_line(tmp_path):
    (tmp_path / "run_state.json").mkdir()
    store = JsonStateStore(tmp_path / "run_state.json")
    with pytest.raises(StateError, match="run_state.json") as info:
        store.load()
    assert "\n" not in str(info.value)


# -- operations -----------------------------------------------------------------------------


def test_store_satisfies_protocol_and_starts_empty(store):
    assert isinstance(store, StateStore)
    assert store.revision == 0
    assert store.load() == {}
    assert store.node("x") == NodeState("x")
    assert store.completed("x") == IntervalSet()
    assert store.changes_since(0) == []
    assert store.history("x") == []
    assert store.pending_restatements() == []
    if isinstance(store, JsonStateStore):
        assert not store.path.exists(), "reads create nothing"


@pytest.mark.parametrize(
    "value",
    [
        [days(1, 2)],
        [(d(1), d(2))],
        ((d(1), d(1, 12)), (d(1, 12), d(2))),
        (days(1, 2),),
        IntervalSet([days(1, 2)]),
    ],
)
def test_interval_argument_forms(store, value):
    store.mark_complete("n", value)
    assert store.completed("n") == IntervalSet([days(1, 2)])


@pytest.mark.parametrize("value", [days(1, 2), (d(1), d(2)), ("2024-01-01", "2024-01-02"), [d(1)]])
def test_a_bare_pair_is_refused_not_guessed_at(store, value):
    """One interval is a list of one pair: a bare ``(start, end)`` is not read as two intervals."""
    for call in (lambda: store.mark_complete("n", value), lambda: store.mark_failed("n", value, "x"),
                 lambda: store.restate({"n": value}, "why")):
        with pytest.raises(TypeError, match="IntervalSet or a list of"):
            call()
    assert store.revision == 0 and store.load() == {}


def test_mark_complete_merges_and_records_everything(store):
    assert store.mark_complete("n", [days(1, 2)], origin="backfill", run_id="r1", rows=10,
                               duration=1.5, partition_keys=["2024-01-01"],
                               fingerprint="fp1") == 1
    assert store.mark_complete("n", [days(2, 3)], partition_keys=["2024-01-02"]) == 2
    state = store.node("n")
    assert list(state.completed) == [days(1, 3)]
    assert state.partition_keys == {"2024-01-01", "2024-01-02"}
    assert state.fingerprint == "fp1"
    assert state.last_run is not None and state.last_run.tzinfo is not None
    assert state.revision == 2
    first = store.history("n")[0]
    assert first["event"] == "complete" and first["mode"] == "backfill"
    assert first["status"] == "success" and first["rows"] == 10 and first["duration"] == 1.5
    assert first["run_id"] == "r1" and first["node"] == "n"
    assert first["intervals"] == [["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]]
    with pytest.raises(ValueError, match="unknown mode"):
        store.mark_complete("n", [days(1, 2)], origin="typo")
    with pytest.raises(ValueError):
        store.mark_complete("n", [])


def test_returned_sets_are_copies(store):
    store.mark_complete("n", [days(1, 2)])
    store.completed("n").add(days(5, 6))
    store.load()["n"].completed.add(days(7, 8))
    assert store.completed("n") == IntervalSet([days(1, 2)])


def test_failed_attempts_count_and_clear_when_completed(store):
    store.mark_failed("n", [days(1, 2), days(2, 3)], "boom 1")
    store.mark_failed("n", [days(1, 2)], "boom 2", run_id="r9")
    failed = store.node("n").failed
    assert [(f.start, f.end, f.attempts, f.error) for f in failed] == [
        (d(1), d(2), 2, "boom 2"),
        (d(2), d(3), 1, "boom 1"),
    ]
    assert store.node("n").failed_intervals == IntervalSet([days(1, 3)])
    # a wider failure takes over the overlapped ones and counts from the highest
    store.mark_failed("n", [days(1, 3)], "boom 3")
    assert [(f.start, f.end, f.attempts) for f in store.node("n").failed] == [(d(1), d(3), 3)]
    # completing part of it keeps the rest, with its count
    store.mark_complete("n", [Interval(d(1), d(2, 12))])
    assert [(f.start, f.end, f.attempts) for f in store.node("n").failed] == [
        (d(2, 12), d(3), 3)
    ]
    store.mark_complete("n", [days(2, 3)])
    assert store.node("n").failed == []
    fails = [r for r in store.history("n") if r["event"] == "fail"]
    assert [r["attempts"] for r in fails] == [1, 2, 3]
    assert fails[1]["status"] == "failed" and fails[1]["error"] == "boom 2"
    assert fails[1]["run_id"] == "r9"


def test_completed_stays_completed_when_a_rerun_fails(store):
    store.mark_complete("n", [days(1, 2)])
    store.mark_failed("n", [days(1, 2)], "rerun failed")
    assert store.completed("n") == IntervalSet([days(1, 2)])


def test_restatement_lifecycle(store, monkeypatch):
    monkeypatch.setenv("SEEKNAL_ACTOR", "ci-bot")
    store.mark_complete("up", [days(1, 10)])
    store.mark_complete("down", [days(1, 10)])
    with pytest.raises(StateError, match="reason"):
        store.restate({"up": [days(2, 3)]}, "  ")
    with pytest.raises(StateError, match="no intervals"):
        store.restate({"up": []}, "why")
    before = store.revision
    made = store.restate({"up": [days(2, 4)], "down": [days(2, 3), days(3, 4)]},
                         "fixed aggregation bug")
    assert store.revision == before + 1, "one request, one revision"
    assert [r.node for r in made] == ["up", "down"]
    assert all(r.pending and r.actor == "ci-bot" and r.reason == "fixed aggregation bug"
               for r in made)
    assert made[1].intervals == [days(2, 4)]
    assert list(store.completed("up")) == [days(1, 2), days(4, 10)]
    assert {r.id for r in store.pending_restatements()} == {r.id for r in made}
    assert [r.id for r in store.pending_restatements("up")] == [made[0].id]
    restates = [r for r in audit(store) if r["event"] == "restate"]
    assert [(r["node"], r["reason"], r["actor"]) for r in restates] == [
        ("up", "fixed aggregation bug", "ci-bot"), ("down", "fixed aggregation bug", "ci-bot")]

    # partly recomputed: still pending; fully recomputed: resolved by that run
    store.mark_complete("up", [days(2, 3)], origin="restate")
    assert store.pending_restatements("up")
    store.mark_complete("up", [days(3, 4)], origin="dagster", run_id="run-42")
    up = store.node("up").restatements[0]
    assert up.status == "resolved" and up.resolved_by == "dagster:run-42"
    assert up.resolved_at is not None
    complete = [r for r in store.history("up") if r["event"] == "complete"][-1]
    assert complete["resolved_restatements"] == [made[0].id]

    # manual resolution, idempotent; unknown ids are an error
    down = store.resolve_restatement(made[1].id, by="alice")
    assert down.status == "resolved" and down.resolved_by == "alice"
    rev = store.revision
    assert store.resolve_restatement(made[1].id).resolved_by == "alice"
    assert store.revision == rev
    assert store.pending_restatements() == []
    with pytest.raises(StateError, match="no restatement 'nope'"):
        store.resolve_restatement("nope")
    kinds = [c.kind for c in store.changes_since(0)]
    assert kinds.count("resolve") == 2


def test_resolved_restatements_are_pruned_but_pending_kept(store):
    store.mark_complete("n", [days(1, 2)])
    for _ in range(KEEP_RESOLVED + 5):
        store.restate({"n": [days(1, 2)]}, "again")
        store.mark_complete("n", [days(1, 2)])
    pending = store.restate({"n": [days(1, 2)]}, "last")[0]
    items = store.node("n").restatements
    assert len(items) == KEEP_RESOLVED + 1
    assert items[-1].id == pending.id and items[-1].pending


def test_a_partitions_removed_record_of_an_older_seeknal_stays_readable(store):
    """``remove_partition_keys`` left the contract (no caller); journals written before it did
    keep their ``partitions_removed`` records, and both backends still read them."""
    record = {"revision": 1, "at": "2024-01-01T00:00:00Z", "event": "partitions_removed", "node": "n",
              "partition_keys": ["a"]}
    store.import_({**export_header(), "revision": 1, "nodes": {"n": {"partition_keys": ["b"], "revision": 1}},
                   "audit": [record]})
    [change] = store.changes_since(0)
    assert (change.kind, change.node, change.details["partition_keys"]) == ("partitions_removed", "n", ["a"])
    assert store.history("n") == [record] and store.node("n").partition_keys == {"b"}
    assert not hasattr(store, "remove_partition_keys")


def test_partition_keys_and_fingerprint(store):
    store.mark_complete("n", (), partition_keys=["a", "c"])
    store.mark_complete("n", (), partition_keys=["c"])
    assert store.node("n").partition_keys == {"a", "c"}
    rev = store.set_fingerprint("n", "h1")
    assert store.set_fingerprint("n", "h1") == rev, "unchanged: no revision"
    assert store.set_fingerprint("n", "h2") == rev + 1
    assert store.node("n").fingerprint == "h2"
    last = store.history("n")[-1]
    assert last["event"] == "fingerprint" and last["previous"] == "h1"


def test_revision_is_monotonic_across_store_instances(store_factory):
    a, b = store_factory(), store_factory()
    seen = [a.revision]
    for i in range(30):
        writer = a if i % 3 else b
        seen.append(writer.mark_complete(f"n{i % 4}", [Interval(d(1, i % 24), d(1, i % 24) +
                                                               dt.timedelta(hours=1))]))
        assert a.revision == b.revision == seen[-1]
    assert seen == list(range(31))
    assert a.load().keys() == b.load().keys()
    assert a.completed("n1") == b.completed("n1")


def test_changes_since_returns_what_changed_in_order(store):
    store.mark_complete("a", [days(1, 2)], origin="backfill", run_id="r1")
    store.mark_failed("b", [days(1, 2)], "boom")
    store.record_execution("a", [days(1, 2)], status="skipped")
    store.restate({"a": [days(1, 2)]}, "bad data", actor="bob")
    changes = store.changes_since(0)
    assert [(c.revision, c.node, c.kind) for c in changes] == [
        (1, "a", "complete"), (2, "b", "fail"), (3, "a", "restate")]
    assert changes[0].origin == "backfill" and changes[0].run_id == "r1"
    assert changes[0].intervals == IntervalSet([days(1, 2)])
    assert changes[2].origin == "bob" and changes[2].details["reason"] == "bad data"
    assert changes[0].at is not None
    assert [c.revision for c in store.changes_since(2)] == [3]
    assert store.changes_since(3) == []


def test_changes_since_resyncs_when_the_cursor_is_ahead(store):
    store.mark_complete("a", [days(1, 2)])
    store.mark_complete("b", [days(2, 3)])
    resync = store.changes_since(store.revision + 5)
    assert {c.kind for c in resync} == {"resync"}
    assert {c.node: c.intervals for c in resync} == {
        "a": IntervalSet([days(1, 2)]), "b": IntervalSet([days(2, 3)])}
    assert all(c.revision == 2 for c in resync)


def test_changes_since_resyncs_when_the_journal_cannot_answer(json_store):
    store = json_store
    store.mark_complete("a", [days(1, 2)])
    store.mark_complete("b", [days(2, 3)])
    for i in range(LOG_TAIL_RECORDS + 2):
        store.mark_complete("a", [Interval(d(3, i), d(3, i + 1))])
    last = store.revision
    store.log_path.unlink()
    resync = store.changes_since(0)
    assert {c.kind for c in resync} == {"resync"}
    assert {c.node: c.intervals for c in resync} == {
        "a": IntervalSet([days(1, 2), Interval(d(3), d(3, LOG_TAIL_RECORDS + 2))]),
        "b": IntervalSet([days(2, 3)])}
    assert all(c.revision == last for c in resync)
    # the latest revisions are still known from the state file's log_tail
    assert [c.revision for c in store.changes_since(last - 3)] == [last - 2, last - 1, last]
    assert {c.kind for c in store.changes_since(last + 5)} == {"resync"}, "cursor ahead"


def test_a_lost_log_line_is_served_and_repaired(tmp_path):
    path = tmp_path / "run_state.json"
    store = JsonStateStore(path, durable=False)
    store.mark_complete("a", [days(1, 2)])
    store.mark_complete("a", [days(2, 3)])
    lines = store.log_path.read_bytes().splitlines(keepends=True)
    # a crash after the state write, in the middle of the log append
    store.log_path.write_bytes(lines[0] + lines[1][:25])
    other = JsonStateStore(path, durable=False)
    assert [c.revision for c in other.changes_since(0)] == [1, 2]
    assert [r["revision"] for r in other.history("a")] == [1, 2]
    other.mark_complete("b", [days(1, 2)])
    text = other.log_path.read_text().splitlines()
    assert text[1] == lines[1][:25].decode(), "the torn line is left as it was"
    revisions = [json.loads(line)["revision"] for line in text if line.endswith("}")]
    assert revisions == [1, 2, 3], "the missing record was re-appended, whole"
    assert [c.revision for c in other.changes_since(0)] == [1, 2, 3]


def test_log_tail_is_bounded_and_the_log_gets_every_record(json_store):
    store = json_store
    for i in range(LOG_TAIL_RECORDS * 3 + 5):
        store.mark_complete("n", [Interval(d(1) + dt.timedelta(hours=i),
                                           d(1) + dt.timedelta(hours=i + 1))])
        assert 1 <= len(json.loads(store.path.read_text())["log_tail"]) <= LOG_TAIL_RECORDS
    assert [r["revision"] for r in log_records(store)] == list(range(1, store.revision + 1))
    assert len(store.completed("n")) == 1


def test_history_is_per_node_oldest_first(store):
    store.mark_complete("a", [days(1, 2)], origin="run")
    store.mark_complete("b", [days(1, 2)])
    store.mark_complete("a", [days(2, 3)], origin="manual")
    store.record_execution("a", [days(3, 4)], mode="backfill", status="cancelled", error="stop")
    history = store.history("a")
    assert [(r["event"], r.get("mode")) for r in history] == [
        ("complete", "run"), ("complete", "manual"), ("execution", "backfill")]
    assert history[-1]["status"] == "cancelled" and history[-1]["revision"] == 3
    assert store.history("a", limit=1) == history[-1:]
    assert store.revision == 3, "audit-only records do not change the revision"


def test_writes_are_atomic_files_and_leave_no_temp_files(tmp_path):
    folder = tmp_path / "target"
    store = JsonStateStore(folder / "run_state.json")
    store.mark_complete("n", [days(1, 2)])
    stale = write(folder / ".run_state.json.123-abc-1.tmp", b"{")
    other = JsonStateStore(folder / "run_state.json")
    other.mark_complete("n", [days(2, 3)])
    assert not stale.exists(), "temp files of dead writers are swept under the lock"
    assert sorted(p.name for p in folder.iterdir()) == [
        "run_log.jsonl", "run_state.json", "run_state.json.lock"]
    assert json.loads((folder / "run_state.json").read_text())["revision"] == 2


def test_lock_timeout_is_a_clear_error(tmp_path):
    store = JsonStateStore(tmp_path / "run_state.json", lock_timeout=0.2)
    store.mark_complete("n", [days(1, 2)])
    fd = os.open(store.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(StateError, match="timed out .* waiting for the state lock"):
            store.mark_complete("n", [days(2, 3)])
        assert store.revision == 1, "readers do not need the lock"
    finally:
        os.close(fd)
    assert store.mark_complete("n", [days(2, 3)]) == 2


def test_random_updates_match_the_interval_algebra(store_factory):
    """Incremental updates must give exactly the merged set, in memory and on disk."""
    rng = random.Random(3)
    store = store_factory()
    expected = IntervalSet()
    base = d(1)
    for _ in range(300):
        a = rng.randrange(0, 400)
        iv = Interval(base + dt.timedelta(hours=a),
                      base + dt.timedelta(hours=a + rng.randrange(1, 6)))
        if rng.random() < 0.7:
            store.mark_complete("n", [iv])
            expected = expected.union([iv])
        else:
            store.restate({"n": [iv]}, "test")
            expected = expected.difference([iv])
        assert store.completed("n") == expected
    fresh = store_factory()
    assert fresh.completed("n") == expected
    assert store.load()["n"].completed == expected
    if store_factory.backend != "json":
        return
    rows = json.loads(store.path.read_text())["nodes"]["n"]["completed_intervals"]
    assert rows == [[fmt_us(parse_us(a)), fmt_us(parse_us(b))] for a, b in rows]
    assert IntervalSet([tuple(r) for r in rows]) == expected and len(rows) == len(expected)


def test_microsecond_bounds_round_trip(store_factory):
    iv = Interval(dt.datetime(2024, 1, 1, 0, 0, 0, 250, tzinfo=UTC),
                  dt.datetime(2024, 1, 1, 0, 0, 1, 999999, tzinfo=UTC))
    old = Interval(dt.datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
                   dt.datetime(1970, 1, 1, 0, 0, 0, 3, tzinfo=UTC))
    store = store_factory()
    store.mark_complete("n", [iv, old])
    store.mark_failed("n", [iv], "x")
    assert list(store_factory().completed("n")) == [old, iv]
    assert store.node("n").failed[0].interval == iv
    assert store.export()["nodes"]["n"]["completed_intervals"] == [
        ["1969-12-31T23:59:59.000001Z", "1970-01-01T00:00:00.000003Z"],
        ["2024-01-01T00:00:00.000250Z", "2024-01-01T00:00:01.999999Z"]]


def test_open_store_configuration(tmp_path):
    default = open_store(tmp_path)
    assert isinstance(default, JsonStateStore)
    assert default.path == (tmp_path / "target" / "run_state.json").resolve()
    assert default.log_path == default.path.with_name("run_log.jsonl")
    custom = open_store(tmp_path, {"backend": "json", "path": "state/s.json",
                                   "log_path": "logs/audit.jsonl", "durable": False})
    assert custom.path == (tmp_path / "state" / "s.json").resolve()
    custom.mark_complete("n", [days(1, 2)])
    assert (tmp_path / "logs" / "audit.jsonl").exists()
    with pytest.raises(StateError, match="unknown state backend 'redis'.*'postgres'"):
        open_store(tmp_path, {"backend": "redis"})
    with pytest.raises(StateError, match="unknown state option"):
        open_store(tmp_path, {"pth": "x"})


def test_open_store_selects_postgres_by_file_or_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("SEEKNAL_STATE_DSN", raising=False)
    pg = open_store(tmp_path, {"backend": "postgres", "dsn": "postgresql://u@db.example:5433/state",
                               "schema": "team_a"})
    assert isinstance(pg, PostgresStateStore)  # connects on first use, not here
    assert (pg.where, pg.schema) == ("db.example:5433/state", "team_a")
    with pytest.raises(StateError, match="unknown state option.*'postgres'.*use dsn, schema"):
        open_store(tmp_path, {"backend": "postgres", "path": "x.json"})
    with pytest.raises(StateError, match="invalid PostgreSQL state schema"):
        open_store(tmp_path, {"backend": "postgres", "schema": "a-b; drop"})
    with pytest.raises(StateError, match="invalid PostgreSQL DSN") as info:
        open_store(tmp_path, {"backend": "postgres", "dsn": "host=x password=hunter2 bogus"})
    assert "hunter2" not in str(info.value)

    monkeypatch.setenv("SEEKNAL_STATE_DSN", "postgresql://ci@pg.internal/seeknal")
    over = open_store(tmp_path, {"backend": "json", "path": "state/s.json"})
    assert isinstance(over, PostgresStateStore) and over.where == "pg.internal:5432/seeknal"
    assert over.schema == "seeknal"
    assert open_store(tmp_path, {"backend": "postgres", "dsn": "x", "schema": "s2"}).schema == "s2"
    assert isinstance(open_store(tmp_path), PostgresStateStore)


def test_connection_errors_name_the_server_and_the_fix_without_the_password(free_port):
    store = PostgresStateStore(f"postgresql://bob:s3cr3t@127.0.0.1:{free_port}/statedb",
                               connect_timeout=2)
    with pytest.raises(StateError) as info:
        store.mark_complete("n", [days(1, 2)])
    message = str(info.value)
    assert "\n" not in message and "s3cr3t" not in message
    assert "127.0.0.1" in message and "statedb" in message and "SEEKNAL_STATE_DSN" in message


def test_state_package_imports_neither_dagster_nor_duckdb():
    code = (
        "import sys, seeknal_core.state;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('dagster','duckdb','psycopg')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


DEFINITION = {"sql": "SELECT * FROM raw", "schedule": "@daily", "timezone": "UTC",
              "time_column": "ts", "materialization": "table", "engine": "duckdb"}


def test_definition_is_stored_with_the_fingerprint(store_factory):
    store = store_factory()
    assert store.node("n").definition is None
    rev = store.set_fingerprint("n", "h1", definition=DEFINITION)
    assert store.node("n").definition == DEFINITION
    assert store.set_fingerprint("n", "h1", definition=dict(DEFINITION)) == rev, "equal: no revision"
    assert store.set_fingerprint("n", "h1") == rev, "no definition given: the stored one stays"
    assert store.node("n").definition == DEFINITION
    changed = {**DEFINITION, "sql": "SELECT 1 FROM raw"}
    assert store.set_fingerprint("n", "h2", definition=changed) == rev + 1
    last = store.history("n")[-1]
    assert (last["fingerprint"], last["previous"], last["definition"]) == ("h2", "h1", changed)
    store.mark_complete("n", [days(1, 2)], fingerprint="h3", definition={"sql": "x"})
    store.mark_complete("n", [days(2, 3)])  # no definition: kept
    assert store_factory().load()["n"].definition == {"sql": "x"}, "as another store reads it"
    assert store.export()["nodes"]["n"]["definition"] == {"sql": "x"}


def test_a_definition_must_be_a_json_object(store):
    with pytest.raises(ValueError, match="JSON-serialisable"):
        store.set_fingerprint("n", "h", definition={"when": dt.date(2024, 1, 1)})
    with pytest.raises(ValueError, match="mapping"):
        store.mark_complete("n", [days(1, 2)], definition=["sql"])
    assert store.revision == 0


def test_definition_is_one_key_on_the_node_line(json_store):
    json_store.mark_complete("a", [days(1, 2)])
    json_store.set_fingerprint("b", "h", definition={"sql": "SELECT 1"})
    lines = json_store.path.read_text().splitlines()
    assert '"definition"' not in lines[1], "absent when None: older files stay byte-identical"
    assert lines[2].endswith('"definition": {"sql": "SELECT 1"}}')


def test_mark_complete_many_is_the_sequence_of_calls_in_one_write(store_factory):
    store = store_factory()
    store.mark_failed("a", [days(1, 3)], "boom")
    [item] = store.restate({"b": [days(1, 2)]}, "late", actor="ci")
    start = store.revision
    rev = store.mark_complete_many({"a": [days(1, 2)], "b": [days(1, 2), days(3, 4)], "c": [days(5, 6)]},
                                   origin="manual")
    assert rev == store.revision == start + 3, "one revision per node, as the calls one by one"
    changes = store.changes_since(start)
    assert [(c.revision, c.node, c.kind) for c in changes] == [
        (start + 1, "a", "complete"), (start + 2, "b", "complete"), (start + 2, "b", "resolve"),
        (start + 3, "c", "complete")]
    assert store.node("a").failed_intervals == IntervalSet([days(2, 3)])
    assert not store.pending_restatements() and store.node("b").restatements[0].id == item.id
    assert store.node("b").completed == IntervalSet([days(1, 2), days(3, 4)])
    assert [c.kind for c in store_factory().changes_since(start + 1)] == ["complete", "resolve", "complete"]
    with pytest.raises(ValueError, match="at least one node"):
        store.mark_complete_many({})
    with pytest.raises(ValueError, match="needs intervals"):
        store.mark_complete_many({"a": [days(1, 2)], "d": []})
    assert store.revision == rev, "a bad node changes nothing"


def test_mark_complete_many_writes_the_bytes_of_the_calls(tmp_path):
    from test_state_golden import normalise

    wanted = {f"n{i}": [days(1 + i % 3, 2 + i % 3)] for i in range(20)}
    one = JsonStateStore(tmp_path / "one" / "run_state.json", durable=False)
    many = JsonStateStore(tmp_path / "many" / "run_state.json", durable=False)
    for store in (one, many):
        store.mark_complete("n3", [days(4, 5)])
        store.restate({"n3": [days(4, 5)]}, "late", actor="ci")
    for name, intervals in wanted.items():
        one.mark_complete(name, intervals, origin="manual")
    many.mark_complete_many(wanted, origin="manual")
    many.mark_complete("n0", [days(6, 7)])  # the next write flushes the big log_tail
    one.mark_complete("n0", [days(6, 7)])

    def journal(store: JsonStateStore) -> tuple[bytes, list[bytes]]:
        """The state file up to its log_tail, and every audit line (logged, then carried):
        where the log's group commit falls differs, what it records does not."""
        head, _, _ = store.path.read_bytes().partition(b', "log_tail": ')
        tail = json.loads(store.path.read_bytes())["log_tail"]
        lines = store.log_path.read_bytes().splitlines()
        lines += [json.dumps(r).encode() for r in tail if r["revision"] > json.loads(lines[-1])["revision"]]
        return normalise(head), [normalise(line) for line in lines]

    assert journal(many) == journal(one)


# -- state files that share a folder ----------------------------------------------------------


def test_state_files_sharing_a_folder_keep_their_own_logs(tmp_path):
    shared = tmp_path / "shared"
    a = open_store(tmp_path / "a", {"path": "../shared/a_state.json", "durable": False})
    b = open_store(tmp_path / "b", {"path": "../shared/b_state.json", "durable": False})
    assert (a.log_path, b.log_path) == (shared / "a_state.log.jsonl", shared / "b_state.log.jsonl")
    for i in range(12):  # interleaved, past the log's group commit
        a.mark_complete("orders", [days(1 + i, 2 + i)])
        b.mark_complete("orders" if i % 2 else "users", [days(1 + i, 2 + i)], origin="backfill")
    b.mark_failed("users", [days(20, 21)], "boom")
    assert [r["mode"] for r in a.history("orders")] == ["run"] * 12
    assert {r["mode"] for r in b.history("orders")} == {"backfill"}
    assert a.history("users") == []
    assert [(c.revision, c.kind) for c in a.changes_since(0)] == [(i, "complete") for i in range(1, 13)]
    assert [c.kind for c in b.changes_since(0)] == ["complete"] * 12 + ["fail"]
    assert not (shared / "run_log.jsonl").exists()
    assert open_store(tmp_path / "c", {}).log_path.name == "run_log.jsonl", "the default keeps its name"


def test_an_older_seeknals_log_is_adopted_by_its_own_state_file(tmp_path):
    path = tmp_path / "state" / "a_state.json"
    old = JsonStateStore(path, path.with_name("run_log.jsonl"), durable=False)  # as seeknal wrote it
    for i in range(10):
        old.mark_complete("orders", [days(1 + i, 2 + i)])
    old.restate({"orders": [days(1, 2)]}, "late", actor="ci")
    old.close()
    store = JsonStateStore(path, durable=False)
    assert store.log_path.name == "a_state.log.jsonl" and store.log_path.exists()
    assert not path.with_name("run_log.jsonl").exists()
    assert len(store.history("orders")) == 11
    assert [c.revision for c in store.changes_since(0)] == list(range(1, 12)), "no resync"


def test_a_log_shared_by_two_state_files_is_left_alone(tmp_path):
    folder = tmp_path / "state"
    legacy = folder / "run_log.jsonl"
    a = JsonStateStore(folder / "a_state.json", legacy, durable=False)  # what older seeknal did
    b = JsonStateStore(folder / "b_state.json", legacy, durable=False)
    for i in range(12):
        a.mark_complete("orders", [days(1 + i, 2 + i)])
        b.mark_complete("orders", [days(1, 2 + i)], origin="backfill")
    a.close()
    b.close()
    before = legacy.read_bytes()
    new_a = JsonStateStore(folder / "a_state.json", durable=False)
    new_b = JsonStateStore(folder / "b_state.json", durable=False)
    assert legacy.read_bytes() == before, "interleaved revisions: neither state file adopts it"
    # what each state file still carries of its own records (log_tail) is all they show
    assert {r["mode"] for r in new_a.history("orders")} == {"run"}
    assert {r["mode"] for r in new_b.history("orders")} == {"backfill"}
    assert [c.kind for c in new_a.changes_since(0)] == ["resync"], "honest: the history is unknown"
    new_a.mark_complete("orders", [days(19, 20)])
    assert new_a.history("orders")[-1]["revision"] == 13
    assert {r["mode"] for r in new_a.history("orders")} == {"run"}
    assert legacy.read_bytes() == before


def test_a_run_log_beside_run_state_json_is_never_adopted(tmp_path):
    folder = tmp_path / "target"
    default = JsonStateStore(folder / "run_state.json", durable=False)
    default.mark_complete("orders", [days(1, 2)])
    other = JsonStateStore(folder / "other.json", durable=False)
    assert other.log_path.name == "other.log.jsonl"
    assert len(default.history("orders")) == 1 and other.history("orders") == []
