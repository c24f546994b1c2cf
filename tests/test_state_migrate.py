"""Moving state between backends: export/import on both, json -> postgres -> json with
nothing lost, and `seeknal state migrate` end to end (the runner then works on PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_cli import EVENTS_FLOW, invoke, make_project

from seeknal_core import Interval, IntervalSet
from seeknal_core.cli import cli
from seeknal_core.state import JsonStateStore, PostgresStateStore, StateError, open_store
from seeknal_core.state.migrate import copy_state, describe, open_destination, same_store, state_block
from seeknal_core.state.postgres_store import redact_dsn
from seeknal_core.state.records import KEEP_RESOLVED

UTC = dt.UTC


def d(day: int, hour: int = 0, us: int = 0) -> dt.datetime:
    return dt.datetime(2024, 1, day, hour, 0, 0, us, tzinfo=UTC)


def fill(store) -> None:
    """A store with every kind of record: the thing a migration must not lose."""
    store.mark_complete("orders", [Interval(d(1), d(3))], origin="backfill", run_id="r1", rows=10,
                        duration=1.25, partition_keys=["2024-01-01", "2024-01-02"], fingerprint="fp-a")
    store.mark_complete("orders", [Interval(d(3), d(3, 5, 250))], origin="manual")
    store.mark_failed("orders", [Interval(d(4), d(5)), Interval(d(5), d(6))], "boom", run_id="r2")
    store.mark_failed("orders", [Interval(d(4), d(4, 12))], "boom again", duration=0.5)
    store.mark_complete("orders", [Interval(d(5), d(6))], origin="run")
    store.record_execution("orders", [Interval(d(6), d(7))], mode="run", status="skipped")
    for _ in range(KEEP_RESOLVED + 2):  # more resolved restatements than a node keeps
        store.restate({"orders": [Interval(d(1), d(2))]}, "again", actor="ci")
        store.mark_complete("orders", [Interval(d(1), d(2))], origin="restate")
    store.restate({"orders": [Interval(d(2), d(3))], "daily": [Interval(d(1), d(2))]}, "bad upstream",
                  actor="alice")
    store.resolve_restatement(store.pending_restatements("daily")[0].id, by="bob")
    store.mark_complete("daily", (), partition_keys=["a", "b", "é"])
    store.set_fingerprint("daily", "fp-d")
    store.set_fingerprint("daily", "fp-d2")
    store.set_fingerprint("daily", "fp-d3", definition={"sql": "SELECT 1", "schedule": "@daily",
                                                        "engine": "duckdb", "time_column": None})
    store.mark_complete_many({"orders": [Interval(d(8), d(9))], "daily": [Interval(d(2), d(3))]},
                             origin="manual")
    store.set_inferred_start("daily", int(d(1).timestamp()))  # a node without `start:`


def snapshot(store) -> dict:
    """Everything observable through the protocol."""
    revision = store.revision
    return {
        "revision": revision,
        "load": store.load(),
        "pending": [(r.id, r.node) for r in store.pending_restatements()],
        "changes": [(c.revision, c.node, c.kind, c.intervals, c.origin, c.run_id, c.at)
                    for c in store.changes_since(0)],
        "changes_late": [(c.revision, c.kind) for c in store.changes_since(revision - 3)],
        "history": {n: store.history(n) for n in ("orders", "daily", "none")},
        "export": store.export(),
    }


def test_json_to_postgres_to_json_loses_nothing(tmp_path, pg_dsn, pg_schema):
    first = JsonStateStore(tmp_path / "a" / "run_state.json", durable=False)
    fill(first)
    assert len(first.node("orders").restatements) == KEEP_RESOLVED + 1  # pruned + one pending
    pg = PostgresStateStore(pg_dsn, schema=pg_schema)
    report = copy_state(first, pg)
    assert (report.nodes, report.revision) == (2, first.revision)
    assert report.audit_records == len(first.export()["audit"]) > 50
    back = JsonStateStore(tmp_path / "b" / "run_state.json", durable=False)
    copy_state(pg, back)

    expected = snapshot(first)
    assert expected["export"]["nodes"]["daily"]["inferred_start"] == "2024-01-01T00:00:00Z"
    assert "inferred_start" not in expected["export"]["nodes"]["orders"]
    assert snapshot(pg) == expected
    assert snapshot(back) == expected
    assert snapshot(JsonStateStore(back.path)) == expected, "as read from disk"
    for line in back.log_path.read_text().splitlines():
        assert line.startswith('{"revision": '), "the log stays scannable by its prefix"

    # the copies carry on from the same revision: a sensor cursor stays valid
    revision = expected["revision"]
    for store in (pg, back):
        assert store.mark_complete("orders", [Interval(d(9), d(10))], run_id="after") == revision + 1
        assert [(c.revision, c.run_id) for c in store.changes_since(revision)] == [(revision + 1, "after")]
    pg.close()


def test_import_needs_an_empty_destination_and_a_valid_document(store_factory, tmp_path):
    store = store_factory()
    store.mark_complete("n", [Interval(d(1), d(2))])
    data = store.export()
    with pytest.raises(StateError, match=r"already holds state \(revision 1\)") as info:
        store.import_(data)
    assert "\n" not in str(info.value)
    for bad, message in [
        ({**data, "format": "x"}, "'format' is not"),
        ({**data, "version": 9}, "version 9"),
        ({**data, "revision": 0}, "no revision between 0 and 0"),
        ({**data, "nodes": {"n": {"completed_intervals": [["2024-01-02", "2024-01-01"]]}}}, "node 'n'"),
    ]:
        with pytest.raises(StateError, match=message):
            JsonStateStore(tmp_path / "fresh" / "run_state.json").import_(bad)
    assert not (tmp_path / "fresh" / "run_state.json").exists(), "a rejected import writes nothing"


def test_an_empty_store_migrates_to_an_empty_store(tmp_path, pg_dsn, pg_schema):
    pg = PostgresStateStore(pg_dsn, schema=pg_schema)
    report = copy_state(JsonStateStore(tmp_path / "none" / "run_state.json"), pg)
    assert (report.nodes, report.audit_records, report.revision) == (0, 0, 0)
    assert pg.revision == 0 and pg.load() == {}
    assert not (tmp_path / "none").exists(), "exporting a missing store creates nothing"
    pg.close()


def test_redacted_dsn_and_state_block(tmp_path):
    assert redact_dsn("postgresql://bob:pw@db:5433/s?sslmode=require&password=pw") == \
        "postgresql://bob@db:5433/s?sslmode=require"
    assert "pw" not in redact_dsn("host=db user=bob password=pw dbname=s")
    block = state_block(PostgresStateStore("postgresql://bob:pw@db/s", schema="team"))
    assert block == "state:\n  backend: postgres\n  dsn: postgresql://bob@db/s\n  schema: team"
    block = state_block(JsonStateStore(tmp_path / "target" / "s.json"), tmp_path)
    assert block == "state:\n  backend: json\n  path: target/s.json"


def test_one_backend_registry_serves_open_store_migrate_and_the_cli(tmp_path, monkeypatch):
    """Every entry of BACKENDS is a ``--to`` choice, opens from its ``state:`` options, and
    its store's printed ``state:`` block opens the same store again."""
    import yaml

    from seeknal_core.cli.state import migrate_command
    from seeknal_core.state.backends import BACKENDS

    monkeypatch.delenv("SEEKNAL_STATE_DSN", raising=False)
    [to] = [p for p in migrate_command.params if p.name == "to"]
    assert list(to.type.choices) == list(BACKENDS) == ["json", "postgres"]
    options = {"json": {"path": "target/s.json"}, "postgres": {"dsn": "postgresql://bob@db/s", "schema": "team"}}
    for name, entry in BACKENDS.items():
        store = open_store(tmp_path, {"backend": name, **options[name]})
        assert isinstance(store, entry.store_class())
        again = open_store(tmp_path, yaml.safe_load(state_block(store, tmp_path))["state"])
        assert describe(again) == describe(store) and same_store(again, store)
        dest = open_destination(tmp_path, name, **options[name])
        assert describe(dest) == describe(store)
        for opened in (store, again, dest):
            opened.close()
    assert not same_store(open_store(tmp_path), open_store(tmp_path, {"backend": "postgres"}))


@pytest.mark.parametrize("to,flags,message", [
    ("json", {"dsn": "postgresql://db/s"}, "--dsn is for --to postgres; --to json takes --path"),
    ("json", {"dsn": "x", "schema": "y"}, "--dsn and --schema are for --to postgres; --to json takes --path"),
    ("postgres", {"path": "s.json", "dsn": "x"}, "--path is for --to json; --to postgres takes --dsn and --schema"),
    ("postgres", {}, "--to postgres needs --dsn"),
    ("mongo", {}, "unknown state backend 'mongo'"),
])
def test_a_destination_with_another_backends_options_is_refused(tmp_path, to, flags, message):
    with pytest.raises(StateError, match=re.escape(message)):
        open_destination(tmp_path, to, **flags)
    assert list(tmp_path.iterdir()) == [], "nothing was created"


def test_importing_the_state_package_imports_no_store_module():
    """The CLI's ``--to`` choices read the registry at start-up: naming the backends is cheap."""
    code = ("import sys, seeknal_core.state as s; bad = [m for m in sys.modules if m.startswith("
            "('seeknal_core.state.json', 'seeknal_core.state.postgres', 'psycopg'))]; print(bad);"
            "sys.exit(1 if bad else 0 if s.JsonStateStore.__name__ == 'JsonStateStore' else 2)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _cli(root: Path, *args: str, env: dict | None = None, now: str = "2024-01-04T06:00:00Z"):
    return CliRunner().invoke(cli, [*args, "--project-path", str(root)],
                              env={"SEEKNAL_NOW": now, "SEEKNAL_STATE_DSN": "", **(env or {})},
                              catch_exceptions=False)


def test_state_migrate_command_end_to_end(tmp_path, pg_dsn, pg_schema):
    root = make_project(tmp_path, EVENTS_FLOW)
    assert invoke(root, "run").exit_code == 0
    listed = _cli(root, "intervals", "list", "events_flow", "--json").stdout

    result = _cli(root, "state", "migrate", "--to", "postgres", "--dsn", pg_dsn, "--schema", pg_schema)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "verified" in out and "Nothing was switched" in out
    assert f"state:\n  backend: postgres\n  dsn: {redact_dsn(pg_dsn)}\n  schema: {pg_schema}\n" in out
    assert pg_dsn.split("@")[0].split(":")[-1] not in out, "the password is never printed"

    # again: the destination is not empty any more
    again = _cli(root, "state", "migrate", "--to", "postgres", "--dsn", pg_dsn, "--schema", pg_schema)
    assert again.exit_code == 2 and again.stderr.startswith("Error: ") and "already holds state" in again.stderr
    missing = _cli(root, "state", "migrate", "--to", "postgres")
    assert missing.exit_code == 2 and "--to postgres needs --dsn" in missing.stderr

    # the project on PostgreSQL (the file would say `state: backend: postgres`; the env var is
    # the override): same intervals, and the runner carries on there
    (root / "seeknal_project.yml").write_text(
        (root / "seeknal_project.yml").read_text() + f"state:\n  backend: postgres\n  schema: {pg_schema}\n")
    env = {"SEEKNAL_STATE_DSN": pg_dsn}
    assert _cli(root, "intervals", "list", "events_flow", "--json", env=env).stdout == listed
    run = _cli(root, "run", env=env, now="2024-01-06T06:00:00Z")
    assert run.exit_code == 0, run.output
    pg = PostgresStateStore(pg_dsn, schema=pg_schema)
    assert pg.completed("events_flow") == IntervalSet([Interval(d(1), d(6))])
    assert json.loads(_cli(root, "intervals", "list", "events_flow", "--json", env=env).stdout) != \
        json.loads(listed)

    # and back to a JSON file
    back = _cli(root, "state", "migrate", "--to", "json", "--path", "state/copy.json", env=env)
    assert back.exit_code == 0, back.output
    assert "path: state/copy.json" in back.stdout and "unset SEEKNAL_STATE_DSN" in back.stdout
    assert JsonStateStore(root / "state" / "copy.json").export() == pg.export()
    pg.close()
