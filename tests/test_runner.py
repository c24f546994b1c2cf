"""The runner on real DuckDB and the real JSON state store: seed scenarios, readiness
across granularities, failure isolation and retry, exactness under random sequences."""

from __future__ import annotations

import datetime as dt
import random
import textwrap
from pathlib import Path

import duckdb
import pytest

from seeknal_core import runner
from seeknal_core.project import load_project
from seeknal_core.state import open_store

UTC = dt.UTC


def make_project(root: Path, transforms: str, *, days: int = 10, start: str = "2024-01-01") -> Path:
    """A project over a DuckDB table `raw` of one row per 10 minutes, and a `fail_days`
    table whose dates make any node that checks it fail (failure injection)."""
    (root / "seeknal" / "transforms").mkdir(parents=True, exist_ok=True)
    (root / "seeknal" / "sources").mkdir(parents=True, exist_ok=True)
    (root / "seeknal_project.yml").write_text(f"name: t\nstart: {start}\n")
    (root / "seeknal" / "sources" / "raw.yml").write_text(
        "raw:\n  table: raw\n  time_column: ts\nfail_days:\n  table: fail_days\n")
    (root / "seeknal" / "transforms" / "nodes.yml").write_text(textwrap.dedent(transforms))
    (root / "target").mkdir(exist_ok=True)
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    con.execute(
        f"CREATE OR REPLACE TABLE raw AS SELECT TIMESTAMP '{start}' + INTERVAL (i * 10) MINUTE AS ts, "
        f"i % 7 AS k, (i * 37) % 101 AS v FROM range({days * 144}) t(i)")
    con.execute("CREATE OR REPLACE TABLE fail_days (d DATE)")
    con.close()
    return root


GUARD = "AND CASE WHEN CAST(ts AS DATE) IN (SELECT d FROM fail_days) THEN error('injected failure') ELSE true END"

DAILY = f"""
daily:
  schedule: "@daily"
  sql: |
    SELECT CAST(ts AS DATE) AS day, k, count(*) AS n, sum(v) AS v FROM raw
    WHERE ts >= '{{{{ start }}}}' AND ts < '{{{{ end }}}}' {GUARD} GROUP BY ALL
  time_column: day
"""

HOURLY_DAILY = f"""
hourly:
  schedule: "@hourly"
  sql: |
    SELECT date_trunc('hour', ts) AS hour, count(*) AS n, sum(v) AS v FROM raw
    WHERE ts >= '{{{{ start }}}}' AND ts < '{{{{ end }}}}' {GUARD} GROUP BY ALL
  time_column: hour
rollup:
  schedule: "@daily"
  sql: |
    SELECT CAST(date_trunc('day', hour) AS DATE) AS day, sum(n) AS n, sum(v) AS v
    FROM {{{{ ref('hourly') }}}} WHERE hour >= '{{{{ start }}}}' AND hour < '{{{{ end }}}}' GROUP BY ALL
  time_column: day
"""


def open_all(root: Path):
    project = load_project(root)
    return project, open_store(project.root, project.state_config)


def rows(root: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"), read_only=True)
    try:
        return sorted(con.execute(sql).fetchall())
    finally:
        con.close()


def days_of(store, node: str) -> list[str]:
    return [f"{iv.start:%Y-%m-%d}..{iv.end:%Y-%m-%d}" for iv in store.completed(node)]


# -- the seed documents' scenarios -------------------------------------------------------------
def test_first_run_then_only_the_new_interval(tmp_path):
    project, store = open_all(make_project(tmp_path, DAILY))
    first = runner.run(project, store, now="2024-01-04T06:00:00")
    assert len(first.nodes[0].done) == 3  # 01, 02, 03: only complete intervals
    second = runner.plan(project, store.load(), now="2024-01-05T00:00:00")
    assert second.nodes[0].intervals == [(1704326400, 1704412800)]  # 2024-01-04 only
    runner.execute(second, project, store)
    assert days_of(store, "daily") == ["2024-01-01..2024-01-05"]
    assert rows(tmp_path, "SELECT count(*), sum(n) FROM daily") == [(28, 576)]


def test_gap_is_filled_by_backfill_only(tmp_path):
    project, store = open_all(make_project(tmp_path, DAILY))
    store.mark_complete("daily", [("2024-01-01", "2024-01-03"), ("2024-01-05", "2024-01-07")],
                        origin="manual")
    normal = runner.plan(project, store.load(), now="2024-01-08")
    assert [p for p in normal.nodes[0].intervals] == [(1704585600, 1704672000)]  # only 01-07
    backfill = runner.plan(project, store.load(), mode="backfill", start="2024-01-01", end="2024-01-07",
                           now="2024-01-08")
    assert backfill.nodes[0].intervals == [(1704240000, 1704326400), (1704326400, 1704412800)]
    result = runner.execute(backfill, project, store)
    assert result.ok and days_of(store, "daily") == ["2024-01-01..2024-01-07"]
    assert [h["mode"] for h in store.history("daily") if h.get("status") == "success"][-1] == "backfill"


def test_restatement_with_reason_reruns_and_cascades(tmp_path):
    project, store = open_all(make_project(tmp_path, HOURLY_DAILY, days=3))
    runner.run(project, store, now="2024-01-04")
    assert days_of(store, "rollup") == ["2024-01-01..2024-01-04"]
    impact = runner.restate(project, store, ["hourly"], "2024-01-02T05:00", "2024-01-02T07:00",
                            "late events", actor="tester", now="2024-01-04")
    assert impact["hourly"] == [(1704171600, 1704175200), (1704175200, 1704178800)]
    assert impact["rollup"] == [(1704153600, 1704240000)]  # the whole day downstream
    pending = store.pending_restatements()
    assert {r.node for r in pending} == {"hourly", "rollup"}
    assert any("late events" in r.reason for r in pending)
    plan = runner.plan(project, store.load(), now="2024-01-04")
    assert set(plan.nodes[0].due.values()) == {"restate"} and len(plan.nodes[0].due) == 2
    runner.execute(plan, project, store)
    assert not store.pending_restatements()
    assert days_of(store, "rollup") == ["2024-01-01..2024-01-04"]
    assert rows(tmp_path, "SELECT sum(n) FROM rollup") == [(432,)]


def test_partition_tracking_and_partition_backfill(tmp_path):
    nodes = DAILY + "  partition_tracking: {column: event_date, format: '%Y-%m-%d'}\n"
    nodes = nodes.replace("AS day, k,", "AS day, strftime(CAST(ts AS DATE), '%Y-%m-%d') AS event_date, k,")
    project, store = open_all(make_project(tmp_path, nodes))
    runner.run(project, store, now="2024-01-04")
    assert store.node("daily").partition_keys == {"2024-01-01", "2024-01-02", "2024-01-03"}
    plan = runner.plan(project, store.load(), mode="backfill", partitions=["2024-01-02", "2024-01-05"],
                       now="2024-01-06")
    assert plan.nodes[0].intervals == [(1704153600, 1704240000), (1704412800, 1704499200)]
    assert runner.execute(plan, project, store).ok
    assert store.node("daily").partition_keys >= {"2024-01-02", "2024-01-05"}
    assert rows(tmp_path, "SELECT event_date, count(*) FROM daily GROUP BY 1") == [
        ("2024-01-01", 7), ("2024-01-02", 7), ("2024-01-03", 7), ("2024-01-05", 7)]
    with pytest.raises(runner.PlanError, match="does not match node 'daily' format"):
        runner.plan(project, store.load(), partitions=["Jan 2"], now="2024-01-06")


def test_hourly_backfill_of_the_last_24_hours(tmp_path):
    nodes = HOURLY_DAILY.split("rollup:")[0]
    project, store = open_all(make_project(tmp_path, nodes, days=5))
    now = dt.datetime(2024, 1, 4, 12, 30, tzinfo=UTC)
    plan = runner.plan(project, store.load(), mode="backfill", start=now - dt.timedelta(hours=24), end=now,
                       now=now)
    # the hour 2024-01-03 12:00 overlapping the range start is included whole; the open hour not
    assert len(plan.nodes[0].due) == 24
    runner.execute(plan, project, store)
    assert rows(tmp_path, "SELECT min(hour), max(hour), count(*) FROM hourly") == [
        (dt.datetime(2024, 1, 3, 12), dt.datetime(2024, 1, 4, 11), 24)]


# -- readiness across granularities ----------------------------------------------------------------
def test_daily_over_hourly_waits_for_all_24_hours(tmp_path):
    project, store = open_all(make_project(tmp_path, HOURLY_DAILY, days=3))
    result = runner.run(project, store, now="2024-01-02T20:00")
    hourly, rollup = result.nodes
    assert len(hourly.done) == 44 and len(rollup.done) == 1  # day 1 complete, day 2 not yet due
    store.restate({"hourly": [("2024-01-01T03:00", "2024-01-01T04:00")]}, "test")
    blocked = runner.run(project, store, mode="backfill", nodes=["rollup"], start="2024-01-01",
                         end="2024-01-02", now="2024-01-03")
    # restating an hour does not un-complete the day in `rollup`: nothing to backfill there
    assert blocked.nodes[0].done == []
    store.restate({"rollup": [("2024-01-01", "2024-01-02")]}, "test")
    waiting = runner.run(project, store, mode="backfill", nodes=["rollup"], start="2024-01-01",
                         end="2024-01-02", now="2024-01-03")
    assert waiting.nodes[0].skipped and "waiting for upstream 'hourly'" in waiting.nodes[0].skipped[0][1]


def test_weekly_new_york_node_over_hourly_utc(tmp_path):
    nodes = HOURLY_DAILY.split("rollup:")[0] + """
weekly_ny:
  schedule: "0 2 * * 0"
  timezone: America/New_York
  sql: |
    SELECT CAST('{{ start }}' AS TIMESTAMP) AS week_start, sum(n) AS n
    FROM {{ ref('hourly') }}
    WHERE hour >= CAST('{{ start_ts }}' AS TIMESTAMPTZ) AT TIME ZONE 'UTC'
      AND hour < CAST('{{ end_ts }}' AS TIMESTAMPTZ) AT TIME ZONE 'UTC'
  time_column: week_start
"""
    project, store = open_all(make_project(tmp_path, nodes, days=16))
    result = runner.run(project, store, now="2024-01-15T12:00")
    by_node = {n.node: n for n in result.nodes}
    # weeks start Sunday 02:00 New York (07:00 UTC): 2024-01-07 to 2024-01-14 is the first whole one
    assert [(dt.datetime.fromtimestamp(a, UTC), dt.datetime.fromtimestamp(b, UTC))
            for a, b in by_node["weekly_ny"].done] == [
        (dt.datetime(2024, 1, 7, 7, tzinfo=UTC), dt.datetime(2024, 1, 14, 7, tzinfo=UTC))]
    assert rows(tmp_path, "SELECT n FROM weekly_ny") == [(7 * 144,)]


# -- failures -------------------------------------------------------------------------------------
def set_fail_days(root: Path, days: list[str]) -> None:
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    con.execute("DELETE FROM fail_days")
    for d in days:
        con.execute("INSERT INTO fail_days VALUES (?)", [d])
    con.close()


def test_failed_interval_is_isolated_recorded_and_retried_first(tmp_path):
    project, store = open_all(make_project(tmp_path, HOURLY_DAILY.replace('"@hourly"', '"@daily"')
                                           .replace("date_trunc('hour', ts)", "date_trunc('day', ts)"),
                                           days=8))
    set_fail_days(tmp_path, ["2024-01-04"])
    result = runner.run(project, store, now="2024-01-09")
    hourly, rollup = result.nodes
    assert len(hourly.done) == 7 and len(hourly.failures) == 1
    assert "injected failure" in hourly.failures[0][1] and "2024-01-04" in hourly.failures[0][1]
    assert [r for _, r in rollup.skipped] == ["upstream 'hourly' failed for this interval"]
    assert len(rollup.done) == 7
    failed = store.node("hourly").failed
    assert len(failed) == 1 and failed[0].attempts == 1
    set_fail_days(tmp_path, [])
    retry = runner.plan(project, store.load(), now="2024-01-09")
    assert retry.nodes[0].batches()[0] == [(1704326400, 1704412800)]
    assert retry.nodes[0].due[(1704326400, 1704412800)] == "retry"
    assert runner.execute(retry, project, store).ok
    assert days_of(store, "hourly") == ["2024-01-01..2024-01-09"]
    assert days_of(store, "rollup") == ["2024-01-01..2024-01-09"]
    assert not store.node("hourly").failed_intervals


def test_sql_error_names_node_and_interval(tmp_path):
    project, store = open_all(make_project(tmp_path, DAILY.replace("sum(v)", "sum(no_such_column)")))
    result = runner.run(project, store, now="2024-01-03")
    assert not result.ok and result.failed == 2
    error = result.nodes[0].failures[0][1]
    # a binder error is the query's, not an interval's: the batch fails once, unsplit
    assert error.startswith("node 'daily' interval 2024-01-01T00:00:00+00:00 to 2024-01-03")
    assert "no_such_column" in error
    assert [h["status"] for h in store.history("daily")].count("failed") == 1


# -- exactness under random sequences ----------------------------------------------------------
def expected_rows(root: Path, project, store, name: str) -> list[tuple]:
    """The node's SQL computed in one shot over each completed member."""
    from seeknal_core.templating import render_sql

    node = project.nodes[name]
    queries = [render_sql(node, iv.start, iv.end) for iv in store.completed(name)]
    if not queries:
        return []
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    try:
        con.execute("DELETE FROM fail_days")
        return sorted(con.execute(" UNION ALL ".join(f"({q})" for q in queries)).fetchall())
    finally:
        con.close()


@pytest.mark.parametrize("seed", range(50))
def test_random_sequences_leave_exact_tables(tmp_path, seed):
    rnd = random.Random(seed)
    root = make_project(tmp_path, HOURLY_DAILY, days=4)
    project, store = open_all(root)
    base = dt.datetime(2024, 1, 1, tzinfo=UTC)
    clock = base
    for _ in range(rnd.randint(3, 7)):
        op = rnd.choice(["run", "run", "backfill", "restate", "fail", "heal"])
        clock = min(clock + dt.timedelta(hours=rnd.randint(1, 30)), base + dt.timedelta(days=4))
        a = base + dt.timedelta(hours=rnd.randint(0, 90))
        b = a + dt.timedelta(hours=rnd.randint(0, 30))
        if op == "run":
            runner.run(project, store, now=clock, batch_size=rnd.choice([None, 1, 5]))
        elif op == "backfill":
            runner.run(project, store, mode="backfill", start=a, end=b, now=clock)
        elif op == "restate":
            runner.restate(project, store, [rnd.choice(["hourly", "rollup"])], a, b, "random", now=clock)
        elif op == "fail":
            set_fail_days(root, [f"{a:%Y-%m-%d}"])
        else:
            set_fail_days(root, [])
    for name, column in (("hourly", "hour"), ("rollup", "day")):
        # inside the completed range the table is exactly the one-shot result: no duplicate,
        # no missing row (outside it, restated intervals may still hold their old rows)
        members = " OR ".join(
            f"({column} >= TIMESTAMP '{iv.start:%Y-%m-%d %H:%M:%S}' AND {column} < TIMESTAMP '{iv.end:%Y-%m-%d %H:%M:%S}')"
            for iv in store.completed(name)) or "false"
        assert table_rows(root, name, members) == expected_rows(root, project, store, name), (
            f"seed {seed}: {name} drifted")
    set_fail_days(root, [])
    runner.run(project, store, mode="backfill", now=clock)
    for name in ("hourly", "rollup"):
        assert table_rows(root, name, "true") == expected_rows(root, project, store, name)


def table_rows(root: Path, name: str, where: str) -> list[tuple]:
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"), read_only=True)
    try:
        if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0]:
            return []
        return sorted(con.execute(f"SELECT * FROM {name} WHERE {where}").fetchall())
    finally:
        con.close()


def test_lookback_reruns_the_last_intervals_for_late_data(tmp_path):
    project, store = open_all(make_project(tmp_path, DAILY + "  lookback: 2\n"))
    runner.run(project, store, now="2024-01-04")
    con = duckdb.connect(str(tmp_path / "target" / "warehouse.duckdb"))
    con.execute("INSERT INTO raw VALUES (TIMESTAMP '2024-01-02 12:00:00', 0, 1000)")  # a late event
    con.close()
    plan = runner.plan(project, store.load(), now="2024-01-05")
    assert plan.nodes[0].due == {(1704153600, 1704240000): "lookback",   # 01-02
                                 (1704240000, 1704326400): "lookback",   # 01-03
                                 (1704326400, 1704412800): "new"}        # 01-04
    assert runner.execute(plan, project, store).ok
    assert rows(tmp_path, "SELECT sum(n) FROM daily WHERE day = DATE '2024-01-02'") == [(145,)]
    assert rows(tmp_path, "SELECT count(*) FROM daily") == [(28,)]  # replaced, not duplicated


def test_an_end_bound_is_never_due(tmp_path):
    """A node's `end:` (exclusive) caps run, backfill and the project-level default alike."""
    bounded = DAILY.replace("  time_column: day\n", "  time_column: day\n  end: 2024-01-04 12:00:00\n")
    project, store = open_all(make_project(tmp_path, bounded))
    assert project.node("daily").end == dt.datetime(2024, 1, 4, 12, tzinfo=UTC)
    result = runner.run(project, store, now="2024-01-09")
    assert result.ok and days_of(store, "daily") == ["2024-01-01..2024-01-04"]  # 01-04 would pass 12:00
    assert runner.plan(project, store.load(), now="2024-01-09").nodes[0].intervals == []
    assert runner.plan(project, store.load(), mode="backfill", start="2024-01-01", end="2024-01-08",
                       now="2024-01-09").nodes[0].intervals == []
    named = runner.plan(project, store.load(), mode="backfill", partitions=["2024-01-03", "2024-01-05"],
                        now="2024-01-09").nodes[0]
    assert named.intervals == [(1704240000, 1704326400)] and "end after the node's end" in named.notes[-1]
    (tmp_path / "seeknal_project.yml").write_text("name: t\nstart: 2024-01-01\nend: 2024-01-06\n")
    project, store = open_all(tmp_path)
    assert [p for p in runner.plan(project, store.load(), now="2024-01-09").nodes[0].intervals] == []
    (tmp_path / "seeknal" / "transforms" / "nodes.yml").write_text(textwrap.dedent(DAILY))
    project, store = open_all(tmp_path)  # the node's own bound gone: the project's applies
    assert runner.plan(project, store.load(), now="2024-01-09").nodes[0].intervals == [
        (1704326400, 1704412800), (1704412800, 1704499200)]  # 01-04 and 01-05, not 01-06 onwards
