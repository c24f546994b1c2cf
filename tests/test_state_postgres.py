"""PostgresStateStore against a real server: concurrent writers, schema migrations, gap-free
revisions, lost connections, fork safety.  (The common operations run on both backends in
test_state.py.)"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import threading
import uuid

import psycopg
import pytest
from test_state_workers import start_and_join

from seeknal_core import Interval, IntervalSet
from seeknal_core.state import PostgresStateStore, StateError
from seeknal_core.state import postgres_store as ps
from seeknal_core.state.common import fmt_us

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
PROCS, MUTATIONS = 8, 120
SHARED_HOURS = 40  # every writer completes and restates hours 0..39 of "shared": they overlap


def hour(i: int) -> Interval:
    return Interval(T0 + dt.timedelta(hours=i), T0 + dt.timedelta(hours=i + 1))


def pg_writer(dsn: str, schema: str, proc: int, count: int, gate) -> None:
    """Mutations of writer ``proc``: disjoint and overlapping completions of one node,
    restatements of the overlapping hours, failures of its own node."""
    store = PostgresStateStore(dsn, schema=schema).connect()  # connected before the start
    gate.wait()
    for j in range(count):
        if j % 10 == 9:
            store.mark_failed(f"own_{proc}", [hour(j)], f"boom {proc}/{j}")
        elif j % 20 == 4:
            store.restate({"shared": [hour((proc + j) % SHARED_HOURS)]}, f"fix {proc}/{j}", actor=f"w{proc}")
        elif j % 2:
            store.mark_complete("shared", [hour((proc * 7 + j) % SHARED_HOURS)], origin="backfill",
                                run_id=f"{proc}-{j}")
        else:
            store.mark_complete("shared", [hour(1000 + 2 * (proc * count + j))], run_id=f"{proc}-{j}")
    store.close()


def _expected_run_ids() -> set[str]:
    return {f"{p}-{j}" for p in range(PROCS) for j in range(MUTATIONS) if j % 10 != 9 and j % 20 != 4}


def test_eight_processes_lose_nothing_and_keep_the_logs_consistent(pg_dsn, pg_schema):
    PostgresStateStore(pg_dsn, schema=pg_schema).connect().close()  # the schema, up front
    ctx = mp.get_context("forkserver")  # children fork from a clean, pre-imported server: fast starts
    ctx.set_forkserver_preload(["seeknal_core.state", "psycopg", "test_state_postgres"])
    gate = ctx.Barrier(PROCS)
    procs = [ctx.Process(target=pg_writer, args=(pg_dsn, pg_schema, p, MUTATIONS, gate))
             for p in range(PROCS)]
    start_and_join(procs)

    store = PostgresStateStore(pg_dsn, schema=pg_schema)
    total = PROCS * MUTATIONS
    assert store.revision == total, "one revision per mutation"
    records = store.export()["audit"]
    primary = [r for r in records if r["event"] in ("complete", "fail", "restate")]
    assert sorted(r["revision"] for r in primary) == list(range(1, total + 1)), "gap-free, each once"
    runs = [r["run_id"] for r in primary if r["event"] == "complete"]
    assert len(runs) == len(set(runs)) and set(runs) == _expected_run_ids(), "every completion once"
    changes = store.changes_since(0)
    assert [c.revision for c in changes] == sorted(c.revision for c in changes)
    assert {c.revision for c in changes} == set(range(1, total + 1))
    for p in range(PROCS):
        failed = store.node(f"own_{p}").failed
        assert len(failed) == MUTATIONS // 10 and all(f.attempts == 1 for f in failed)

    # Replaying the audit log in revision order rebuilds the state, restatements included.
    completed, pending, resolved_by = IntervalSet(), {}, {}
    for r in records:
        if r["node"] != "shared":
            continue
        ivs = IntervalSet([tuple(x) for x in r.get("intervals", [])])
        if r["event"] == "complete":
            completed = completed.union(ivs)
            now_done = [rid for rid, want in pending.items() if not want.difference(completed)]
            assert r.get("resolved_restatements", []) == now_done, r
            for rid in now_done:
                del pending[rid]
                resolved_by[rid] = r["revision"]
        elif r["event"] == "restate":
            assert IntervalSet([tuple(x) for x in r["removed"]]) == completed.intersection(ivs)
            completed = completed.difference(ivs)
            pending[r["restatement_id"]] = ivs
        elif r["event"] == "resolve":
            assert resolved_by.get(r["restatement_id"]) == r["revision"], "resolved once, by its run"
    state = store.node("shared")
    assert state.completed == completed
    assert {r.id for r in store.pending_restatements("shared")} == set(pending)
    assert {r.id for r in state.restatements if not r.pending} <= set(resolved_by)
    assert len([r for r in records if r["event"] == "resolve"]) == len(resolved_by)
    disjoint = [hour(1000 + 2 * (p * MUTATIONS + j)) for p in range(PROCS) for j in range(0, MUTATIONS, 2)
                if j % 10 != 9 and j % 20 != 4]
    assert not IntervalSet(disjoint).difference(state.completed), "no completion was lost"
    store.close()


def test_schema_is_created_once_even_by_concurrent_first_users(pg_dsn, pg_schema):
    errors = []

    def first_use():
        try:
            with PostgresStateStore(pg_dsn, schema=pg_schema) as store:
                assert store.revision == 0
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with psycopg.connect(pg_dsn) as conn:
        versions = conn.execute(f'SELECT version FROM "{pg_schema}".schema_version').fetchall()
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [pg_schema])}
        indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", [pg_schema])}
    assert versions == [(v,) for v in range(1, ps.SCHEMA_VERSION + 1)]  # each migration once
    assert tables == {"schema_version", "store", "nodes", "failed", "restatements", "audit",
                      "digests"}
    assert "audit_revision_idx" in indexes


def test_a_version_1_schema_is_upgraded_in_place(pg_dsn, pg_schema):
    store = PostgresStateStore(pg_dsn, schema=pg_schema)
    store.mark_complete("n", [hour(0)], fingerprint="h1")
    store.close()
    q = f'"{pg_schema}"'
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # back to what version 1 had
        conn.execute(f"DELETE FROM {q}.schema_version WHERE version > 1;"
                     f" ALTER TABLE {q}.nodes DROP COLUMN definition;"
                     f" DROP FUNCTION {q}.mark_complete_many(jsonb);"
                     f" DROP FUNCTION {q}.set_fingerprint(text, text, jsonb);"
                     f" CREATE FUNCTION {q}.set_fingerprint(p text, f text) RETURNS bigint"
                     " LANGUAGE sql AS 'SELECT 0::bigint'")
    store = PostgresStateStore(pg_dsn, schema=pg_schema)
    assert store.node("n").completed == IntervalSet([hour(0)]) and store.node("n").definition is None
    assert store.set_fingerprint("n", "h2", definition={"sql": "SELECT 2"}) == 2
    assert store.mark_complete_many({"n": [hour(1)], "m": [hour(2)]}) == 4
    assert store.node("n").definition == {"sql": "SELECT 2"}
    store.close()
    with psycopg.connect(pg_dsn) as conn:
        signatures = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE proname = 'set_fingerprint' AND pronamespace = %s::regnamespace",
            [pg_schema]).fetchone()[0]
    assert signatures == 1, "the replaced signature is dropped, not left as an overload"


def test_a_version_5_schema_loses_the_remove_partition_keys_function(pg_dsn, pg_schema):
    """Migration 6 drops the function of the method that left the store contract."""
    PostgresStateStore(pg_dsn, schema=pg_schema).connect().close()
    q = f'"{pg_schema}"'

    def functions(conn) -> int:
        return conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'remove_partition_keys'"
                            " AND pronamespace = %s::regnamespace", [pg_schema]).fetchone()[0]

    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # as version 5 left it
        conn.execute(f"DELETE FROM {q}.schema_version WHERE version > 5;"
                     f" CREATE FUNCTION {q}.remove_partition_keys(p_node text, p_keys text[]) RETURNS bigint"
                     " LANGUAGE sql AS 'SELECT 0::bigint'")
        assert functions(conn) == 1
    store = PostgresStateStore(pg_dsn, schema=pg_schema)
    assert store.mark_complete("n", [hour(0)]) == 1
    store.close()
    with psycopg.connect(pg_dsn) as conn:
        assert functions(conn) == 0
        assert conn.execute(f"SELECT max(version) FROM {q}.schema_version").fetchone()[0] == 6 == ps.SCHEMA_VERSION


def test_a_schema_from_a_newer_seeknal_is_refused(pg_dsn, pg_schema):
    PostgresStateStore(pg_dsn, schema=pg_schema).connect().close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{pg_schema}".schema_version (version) VALUES (99)')
    with pytest.raises(StateError, match="version 99, written by a newer seeknal") as info:
        PostgresStateStore(pg_dsn, schema=pg_schema).connect()
    assert "\n" not in str(info.value)


def test_a_failed_mutation_rolls_back_its_revision(pg_dsn, pg_schema, monkeypatch):
    store = PostgresStateStore(pg_dsn, schema=pg_schema)
    store.mark_complete("n", [hour(0)])
    fixed = uuid.UUID(int=7)
    monkeypatch.setattr(ps.uuid, "uuid4", lambda: fixed)
    store.restate({"n": [hour(0)]}, "first")
    with pytest.raises(psycopg.errors.UniqueViolation):  # the same restatement id again
        store.restate({"n": [hour(0)], "m": [hour(1)]}, "second")
    assert store.revision == 2, "the failed transaction gave its revision back"
    assert store.node("m").revision == 0 and store.completed("n") == IntervalSet()
    monkeypatch.undo()
    assert store.mark_complete("n", [hour(0)]) == 3
    assert [c.revision for c in store.changes_since(0)] == [1, 2, 3, 3]  # complete + resolve
    store.close()


def test_changes_since_resyncs_when_audit_rows_are_gone(pg_dsn, pg_schema):
    store = PostgresStateStore(pg_dsn, schema=pg_schema)
    for i in range(4):
        store.mark_complete("a", [hour(i)])
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DELETE FROM "{pg_schema}".audit WHERE revision = 2')
    assert [c.revision for c in store.changes_since(2)] == [3, 4]
    resync = store.changes_since(1)
    assert [(c.kind, c.node, c.revision) for c in resync] == [("resync", "a", 4)]
    assert resync[0].intervals == IntervalSet([Interval(hour(0).start, hour(3).end)])
    store.close()


def test_sql_time_text_matches_the_json_store(pg_dsn, pg_schema):
    store = PostgresStateStore(pg_dsn, schema=pg_schema).connect()
    values = [0, 1, -1, 999_999, 1_000_000, -1_000_001, 1_704_067_200_000_000, 1_704_067_200_000_250,
              253_402_300_799_999_999, -62_135_596_800_000_000]
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            f'SELECT x, "{pg_schema}".fmt("{pg_schema}".ts(x)), "{pg_schema}".us("{pg_schema}".ts(x))'
            " FROM unnest(%s::bigint[]) AS x", [values]).fetchall()
    assert [(x, fmt_us(x), x) for x in values] == rows
    store.close()


def test_a_lost_connection_is_retried_for_reads_and_reported_for_writes(pg_dsn, pg_schema):
    store = PostgresStateStore(pg_dsn, schema=pg_schema)
    store.mark_complete("n", [hour(0)])

    def kill_backend():
        pid = store._conn.info.backend_pid
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", [pid])

    kill_backend()
    assert store.completed("n") == IntervalSet([hour(0)]), "a read reconnects once"
    kill_backend()
    with pytest.raises(StateError, match="may or may not be recorded") as info:
        store.mark_complete("n", [hour(1)])
    assert "\n" not in str(info.value) and "127.0.0.1" in str(info.value)
    assert store.mark_complete("n", [hour(1)]) == 2, "the next call reconnects"
    store.close()


def _child_uses_store(store: PostgresStateStore, out) -> None:
    out.put(store.mark_complete("n", [hour(5)]))


def test_a_forked_child_opens_its_own_connection(pg_dsn, pg_schema):
    store = PostgresStateStore(pg_dsn, schema=pg_schema)
    store.mark_complete("n", [hour(0)])
    parent_pid = store._conn.info.backend_pid
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_uses_store, args=(store, out))
    child.start()
    child.join(30)
    assert child.exitcode == 0 and out.get(timeout=5) == 2
    assert store._conn.info.backend_pid == parent_pid
    assert store.mark_complete("n", [hour(6)]) == 3, "the parent's connection still works"
    assert store.completed("n") == IntervalSet([hour(0), hour(5), hour(6)])
    store.close()


def test_a_writer_waits_for_the_lock_at_most_lock_timeout(pg_dsn, pg_schema):
    store = PostgresStateStore(pg_dsn, schema=pg_schema, lock_timeout=0.2)
    store.mark_complete("n", [hour(0)])
    with psycopg.connect(pg_dsn) as other:  # another writer, mid-transaction
        other.execute(f'SELECT revision FROM "{pg_schema}".store FOR UPDATE')
        with pytest.raises(StateError, match=r"timed out after 0.2s waiting for the state lock") as info:
            store.mark_complete("n", [hour(1)])
        assert "\n" not in str(info.value)
        assert store.revision == 1 and store.completed("n") == IntervalSet([hour(0)]), "reads do not wait"
    assert store.mark_complete("n", [hour(1)]) == 2, "no revision was used up"
    store.close()
