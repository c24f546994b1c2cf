"""Hardening of `seeknal plan --apply` and of ranges (issue 21, correctness 1-4 and 7).

Real DuckDB, the real stores (JSON file and PostgreSQL), the CLI as a subprocess.  A chain
hourly -> daily, daily_users -> weekly over 9 days of hourly rows; SEEKNAL_NOW 2024-01-10.
(`seeknal plan --apply` killed at every store write: tests/test_runner_crash.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import make_project, seeknal, state_bytes
from test_plan import HOURLY, READERS, edit_hourly

from seeknal_core.project import load_project
from seeknal_core.runner import changes, policy
from seeknal_core.state import open_store

NOW = "2024-01-10T00:00:00Z"
HOURS = [("2024-01-08T10:00:00Z", "2024-01-08T11:00:00Z"), ("2024-01-07T05:00:00Z", "2024-01-07T06:00:00Z")]


def chain(root: Path) -> Path:
    make_project(root, HOURLY, READERS, days=9)
    done = cli(root, "run", "--backfill")
    assert done.returncode == 0, done.stderr
    return root


def cli(root: Path, *args: str):
    return seeknal(*args, "-p", str(root), now=NOW)


def ok(root: Path, *args: str) -> str:
    done = cli(root, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def tables(root: Path) -> dict[str, list[tuple]]:
    import duckdb

    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"), read_only=True)
    try:
        return {n: con.execute(f'SELECT * FROM "{n}" ORDER BY ALL').fetchall()
                for n in ("hourly", "daily", "daily_users", "weekly")}
    finally:
        con.close()


@pytest.fixture(scope="module")
def filtered(tmp_path_factory) -> dict[str, list[tuple]]:
    """The tables of the chain with hourly's filter `v > 50`, computed from nothing."""
    root = tmp_path_factory.mktemp("fresh") / "p"
    make_project(root, HOURLY.replace("AND v > 0", "AND v > 50"), READERS, days=9)
    ok(root, "run", "--backfill")
    return tables(root)


# -- 1. one store mutation -------------------------------------------------------------------------
def _shape(records: list[dict], since: int, names: dict[str, str]) -> list[tuple]:
    """Audit records after ``since`` with revisions counted from it and nodes renamed."""
    drop = ("at", "restatement_id", "revision", "node")
    return [(r["revision"] - since, names.get(r["node"], r["node"]), r["event"],
             json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True))
            for r in records if r["revision"] > since]


def test_record_plan_is_one_call_with_the_revisions_and_audit_of_the_separate_calls(store_factory):
    store = store_factory()
    day1, day2 = ("2024-01-01", "2024-01-02"), ("2024-01-02", "2024-01-03")
    for node in ("a1", "b1", "a2", "b2"):
        store.mark_complete(node, [day1, day2])
        store.set_fingerprint(node, "old", definition={"sql": "SELECT 1"})
    store.set_fingerprint("b1", "same")
    store.set_fingerprint("b2", "same")
    before = store.revision
    store.restate({"a1": [day1]}, "definition changed", actor="ann")
    store.restate({"b1": [day1, day2]}, "definition changed (downstream of a1)", actor="ann")
    store.set_fingerprint("a1", "new", definition={"sql": "SELECT 2"})
    store.set_fingerprint("b1", "same")  # unchanged: no revision
    separate = store.revision
    assert separate == before + 3
    revision = store.record_plan(
        [({"a2": [day1]}, "definition changed"), ({"b2": [day1, day2]}, "definition changed (downstream of a1)")],
        {"a2": ("new", {"sql": "SELECT 2"}), "b2": ("same", None)}, actor="ann")
    assert revision == store.revision == separate + 3
    audit = store.export()["audit"]
    first = _shape([r for r in audit if r["revision"] <= separate], before, {})
    second = _shape(audit, separate, {"a2": "a1", "b2": "b1"})
    assert first == second and len(first) == 3
    assert [c.kind for c in store.changes_since(separate)] == ["restate", "restate", "fingerprint"]
    assert store.node("a2").fingerprint == "new" and store.node("a2").definition == {"sql": "SELECT 2"}
    assert [len(r.intervals) for r in store.pending_restatements("b2")] == [1]
    assert not store.node("b2").completed
    assert store.record_plan([], {"a2": ("new", None)}) == store.revision  # nothing to record


def test_a_changed_nodes_pending_restatements_restate_its_readers(tmp_path, filtered):
    """An apply of an older version killed after its first write left hourly restated and its
    readers complete: the next plan still restates the readers."""
    root = chain(tmp_path / "p")
    edit_hourly(root, "AND v > 0", "AND v > 50")
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    store.restate({"hourly": store.completed("hourly")}, "definition changed: hourly filter")
    store.close()
    data = json.loads(ok(root, "plan", "--json"))
    restated = {n["node"]: n["restate_intervals"] for n in data["nodes"] if n["restate_intervals"]}
    assert restated == {"daily": 9, "daily_users": 9, "weekly": 1}
    assert data["pending_intervals"] == 9 * 24
    ok(root, "plan", "--apply")
    assert tables(root) == filtered


# -- 2. a range means its range ----------------------------------------------------------------------
def _restated_and_failed(root: Path) -> None:
    """hourly 2024-01-08 10:00 restated, 2024-01-07 05:00 restated and then failed."""
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    store.restate({"hourly": [HOURS[0]]}, "bad data")
    store.restate({"hourly": [HOURS[1]]}, "bad data")
    store.mark_failed("hourly", [HOURS[1]], "boom")
    store.close()


def _pending(root: Path, *args: str) -> list[tuple[str, str]]:
    data = json.loads(ok(root, "intervals", "pending", "hourly", "--json", *args))
    return [(iv["start"], iv["reason"]) for iv in data["nodes"][0]["intervals"]]


def _dry(root: Path, *args: str) -> list[tuple[str, str]]:
    """hourly's due (start, reason): per interval for `run`, per run for `intervals backfill`."""
    each = ("--each",) if args[0] == "run" else ()
    data = json.loads(ok(root, *args, "--dry-run", "--json", *each))
    hourly = next(n for n in data["nodes"] if n["node"] == "hourly")
    return [(iv["start"], iv["reason"]) for iv in hourly["intervals" if each else "runs"]]


def test_a_range_never_picks_up_restatements_or_failures_outside_it(tmp_path):
    root = make_project(tmp_path / "p", HOURLY, READERS, days=9)
    ok(root, "run", "--backfill")
    _restated_and_failed(root)
    outside = ("--start", "2024-01-02", "--end", "2024-01-02")
    assert _pending(root, *outside) == []
    assert _dry(root, "intervals", "backfill", "hourly", *outside) == []
    assert _dry(root, "run", "--start-date", "2024-01-02", "--end-date", "2024-01-02") == []
    text = ok(root, "intervals", "backfill", "hourly", *outside)
    assert "restated" not in text and "retry" not in text
    assert _pending(root, "--start", "2024-01-08", "--end", "2024-01-08") == [
        ("2024-01-08T10:00:00+00:00", "restate")]
    assert _pending(root, "--start", "2024-01-07T05:30:00", "--end", "2024-01-07T06:00:00") == [
        ("2024-01-07T05:00:00+00:00", "retry")]
    # a plain run, and a range covering both, still take everything due
    assert sorted(_dry(root, "run")) == [("2024-01-07T05:00:00+00:00", "retry"),
                                         ("2024-01-08T10:00:00+00:00", "restate")]
    assert sorted(_pending(root)) == sorted(_dry(root, "run"))


# -- 3. render before recording ----------------------------------------------------------------------
def test_a_template_error_stops_plan_and_apply_before_anything_is_recorded(tmp_path):
    root = chain(tmp_path / "p")
    edit_hourly(root, "event_time < '{{ end }}'", "event_time < '{{ end }'")
    before = state_bytes(root)
    for args in (("plan",), ("plan", "--apply"), ("plan", "--json")):
        done = cli(root, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: node 'hourly'") and "template" in lines[0], lines
        assert state_bytes(root) == before, args
    assert "hourly" in tables(root) and state_bytes(root) == before


def test_sql_that_does_not_parse_stops_plan_and_apply_before_anything_is_recorded(tmp_path):
    """Rendering is not enough: SQL the engine cannot parse is refused while planning too."""
    root = chain(tmp_path / "p")
    edit_hourly(root, "AND v > 0", "AND v > 0 AND (v")
    before = state_bytes(root)
    for args in (("plan",), ("plan", "--apply"), ("plan", "--json")):
        done = cli(root, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("Error: node 'hourly'") and "does not parse" in lines[0], lines
        assert "nothing was recorded" in lines[0]
        assert state_bytes(root) == before, args


def test_syntax_checks_parse_only():
    """The DuckDB parser check binds nothing: unknown tables pass, broken SQL and two
    statements do not."""
    from seeknal_core.engines.duckdb import syntax_error

    assert syntax_error("SELECT x FROM no_such_table WHERE y > 1") is None
    why = syntax_error("SELECT sum(x FROM t")
    assert why is not None and "syntax error" in why and "line 1" in why
    assert "2 statements" in syntax_error("SELECT 1; SELECT 2")


# -- 4. a crash after recording -------------------------------------------------------------------------
def test_plan_apply_after_a_crash_in_its_run_says_what_is_pending_and_runs_it(tmp_path, filtered):
    root = chain(tmp_path / "p")
    edit_hourly(root, "AND v > 0", "AND v > 50")
    ok(root, "plan", "--apply", "--no-run")  # what a crash right after recording leaves
    shown = ok(root, "plan")
    assert "No definition changed" in shown
    assert ("Pending: 235 restated intervals of hourly, daily, daily_users, weekly not recomputed yet: "
            "`seeknal plan --apply` or `seeknal run` recomputes them.") in shown
    assert json.loads(ok(root, "plan", "daily", "--json"))["pending_intervals"] == 9 + 1  # and weekly
    applied = ok(root, "plan", "--apply")
    assert "Pending: 235 restated intervals of hourly, daily, daily_users, weekly not recomputed yet." in applied
    assert "hourly: Processing 216 restated intervals" in applied
    assert tables(root) == filtered
    assert json.loads(ok(root, "plan", "--json"))["pending_intervals"] == 0


def test_apply_changes_runs_what_is_pending(tmp_path, filtered):
    """The Python entry point (the Dagster job's) runs pending restatements too."""
    root = chain(tmp_path / "p")
    edit_hourly(root, "AND v > 0", "AND v > 50")
    ok(root, "plan", "--apply", "--no-run")
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    plan = changes.change_plan(project, store, now=NOW)
    assert not plan.changed and sum(map(len, plan.pending.values())) == 235
    result = policy.apply_changes(project, store, plan, options={"now": NOW})
    store.close()
    assert result.run is not None and result.run.ok and result.run.intervals == 235
    assert tables(root) == filtered


# -- 7. a completed range ending off the grid ---------------------------------------------------------------
def test_a_completed_range_ending_off_the_grid_is_due_in_run_and_pending_alike(tmp_path):
    root = make_project(tmp_path / "p", HOURLY, days=9)
    (root / "target").mkdir()
    (root / "target" / "run_state.json").write_text(json.dumps(
        {"nodes": {"hourly": {"completed_intervals": [["2024-01-01T00:00:00", "2024-01-05T10:30:59"]]}}}))
    run = _dry(root, "run")
    assert run[0] == ("2024-01-05T10:00:00+00:00", "new")
    assert [start for start, _ in run] == [start for start, _ in _pending(root)]
    ok(root, "run", "--node", "hourly")
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    assert len(store.completed("hourly")) == 1
    store.close()
    assert _pending(root) == [] and _dry(root, "run") == []


DAILY_NY = """\
daily_ny:
  schedule: "@daily"
  timezone: America/New_York
  time_column: day_start
  sql: |
    SELECT CAST('{{ start }}' AS TIMESTAMP) AS day_start, sum(amount) AS revenue FROM {{ ref('hourly') }}
    WHERE hour >= CAST('{{ start_ts }}' AS TIMESTAMPTZ) AT TIME ZONE 'UTC'
      AND hour < CAST('{{ end_ts }}' AS TIMESTAMPTZ) AT TIME ZONE 'UTC'
"""


def test_run_restate_of_a_range_reruns_every_interval_it_restated_in_other_timezones(tmp_path):
    """The range bounds what a range run retries, not what `run --restate` just restated: a
    New York day overlapping the restated UTC hours but not the range read in New York runs."""
    root = make_project(tmp_path / "p", HOURLY, DAILY_NY, days=9)
    ok(root, "run", "--backfill")
    out = ok(root, "run", "--restate", "--start", "2024-01-05", "--end", "2024-01-05", "--node", "hourly")
    # hourly's 2024-01-05 (UTC) reaches the New York days 2024-01-04 and 2024-01-05
    assert "daily_ny: Processing 2 restated intervals (2024-01-04 to 2024-01-06)" in out, out
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    assert store.pending_restatements() == []
    store.close()
