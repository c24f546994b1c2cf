"""Late data on real DuckDB, both state backends and a real Dagster instance: digests
recorded with completions, `seeknal intervals verify` restating exactly the intervals whose
inputs changed (and their downstream), `verify: 7d` on `seeknal run`, the late-data sensor."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from spark_env import spark  # noqa: F401  (fixture)
from test_dagster_assets import execute
from test_runner import DAILY, make_project, open_all, rows

from seeknal_core import runner
from seeknal_core.runner.verify import verify
from seeknal_core.state import JsonStateStore, PostgresStateStore

SEEKNAL = str(Path(sys.executable).with_name("seeknal"))
NOW = "2024-01-06T00:00:00Z"

NODES = DAILY + """\
totals:
  schedule: "@daily"
  sql: |
    SELECT day, sum(n) AS n, sum(v) AS v FROM {{ ref('daily') }}
    WHERE day >= '{{ start }}' AND day < '{{ end }}' GROUP BY ALL
  time_column: day
"""

EXPECTED_DAILY = ("SELECT CAST(ts AS DATE) AS day, k, count(*) AS n, sum(v) AS v FROM raw "
                  "WHERE ts < TIMESTAMP '2024-01-06' GROUP BY ALL")
EXPECTED_TOTALS = ("SELECT CAST(ts AS DATE) AS day, count(*) AS n, sum(v) AS v FROM raw "
                   "WHERE ts < TIMESTAMP '2024-01-06' GROUP BY ALL")


def t(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def seeknal(root: Path, *args: str, now: str = NOW) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEEKNAL_NOW": now}
    return subprocess.run([SEEKNAL, *args, "--project-path", str(root)], capture_output=True, text=True,
                          env=env)


def days(pairs) -> list[str]:
    return [dt.datetime.fromtimestamp(a, dt.UTC).date().isoformat() for a, _ in pairs]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Five days of `raw`, `daily` and its reader `totals` computed by `seeknal run`."""
    root = make_project(tmp_path / "p", NODES, days=5)
    done = seeknal(root, "run")
    assert done.returncode == 0, done.stderr
    return root


def test_late_rows_restate_that_day_and_its_downstream_exactly(root: Path) -> None:
    project, store = open_all(root)
    assert set(store.digests("daily")) == {"raw"} and len(store.digests("daily")["raw"]) == 5
    assert store.digests("totals") == {}  # reads no source directly: covered through daily
    execute(root, "INSERT INTO raw VALUES (TIMESTAMP '2024-01-03 07:01:00', 1, 5), "
                  "(TIMESTAMP '2024-01-03 08:02:00', 2, 6), (TIMESTAMP '2024-01-03 23:59:59', 3, 7)")

    found = seeknal(root, "intervals", "verify")
    assert found.returncode == 0, found.stderr
    assert "late data: raw +3 rows in 2024-01-03" in found.stdout
    [direct, downstream] = store.pending_restatements()
    assert (direct.node, direct.reason) == ("daily", "late data: raw +3 rows in 2024-01-03")
    assert downstream.node == "totals" and "downstream of daily" in downstream.reason
    assert [i.start for i in direct.intervals] == [t(2024, 1, 3)]
    assert [i.start for i in downstream.intervals] == [t(2024, 1, 3)]

    project, store = open_all(root)
    result = runner.run(project, store, now=NOW)
    assert {n.node: days(n.done) for n in result.nodes} == {"daily": ["2024-01-03"], "totals": ["2024-01-03"]}
    assert rows(root, "SELECT * FROM daily") == rows(root, EXPECTED_DAILY)
    assert rows(root, "SELECT * FROM totals") == rows(root, EXPECTED_TOTALS)
    assert store.pending_restatements() == []
    again = verify(project, store, now=NOW)  # the new digests match the data
    assert again.restated == {} and again.checked == {"daily": 5}


def test_a_changed_value_with_the_same_row_count_is_found(root: Path) -> None:
    execute(root, "UPDATE raw SET v = v + 1 WHERE ts = TIMESTAMP '2024-01-02 10:00:00'")
    project, store = open_all(root)
    found = verify(project, store, ["daily"], now=NOW)
    assert {n: days(p) for n, p in found.restated.items()} == {"daily": ["2024-01-02"], "totals": ["2024-01-02"]}
    assert found.reasons == {"daily": "late data: raw rows changed in 2024-01-02"}
    result = runner.run(project, store, now=NOW)
    assert result.intervals == 2
    assert rows(root, "SELECT * FROM daily") == rows(root, EXPECTED_DAILY)
    assert rows(root, "SELECT * FROM totals") == rows(root, EXPECTED_TOTALS)


def test_dry_run_lists_and_records_nothing(root: Path) -> None:
    project, store = open_all(root)
    before = store.revision
    execute(root, "DELETE FROM raw WHERE ts = TIMESTAMP '2024-01-04 00:00:00'")
    shown = seeknal(root, "intervals", "verify", "--dry-run", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["dry_run"] is True
    assert [(n["node"], n["reason"], [i["start"] for i in n["intervals"]]) for n in report["nodes"]] == [
        ("daily", "late data: raw -1 row in 2024-01-04", ["2024-01-04T00:00:00+00:00"]),
        ("totals", None, ["2024-01-04T00:00:00+00:00"])]
    assert store.revision == before and store.pending_restatements() == []
    # a range that misses the day finds nothing
    quiet = seeknal(root, "intervals", "verify", "daily", "--start", "2024-01-01", "--end", "2024-01-02")
    assert quiet.returncode == 0 and "No late data: 2 intervals verified" in quiet.stdout
    assert store.revision == before


def test_intervals_completed_before_digests_are_unverifiable_never_restated(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", NODES, days=5)
    project, store = open_all(root)
    # completed without digests, as by a seeknal before them (or by hand)
    store.mark_complete("daily", [(t(2024, 1, 1), t(2024, 1, 3))], origin="manual")
    execute(root, "INSERT INTO raw VALUES (TIMESTAMP '2024-01-01 07:01:00', 1, 5)")
    shown = seeknal(root, "intervals", "verify", "daily")
    assert shown.returncode == 0, shown.stderr
    assert "daily: 2 intervals unverifiable: completed before digests were recorded" in shown.stdout
    assert store.pending_restatements() == []
    found = verify(project, store, ["daily"], now=NOW)
    assert days(found.unverifiable["daily"]) == ["2024-01-01", "2024-01-02"] and not found.restated


def test_verify_window_on_run_restates_late_data_inside_it_only(root: Path) -> None:
    spec = root / "seeknal" / "transforms" / "nodes.yml"
    spec.write_text(spec.read_text().replace("  time_column: day\ntotals:", "  time_column: day\n  verify: 2d\ntotals:"))
    # late rows two days back (inside the window) and four days back (outside it)
    execute(root, "INSERT INTO raw VALUES (TIMESTAMP '2024-01-04 03:00:00', 1, 1), "
                  "(TIMESTAMP '2024-01-02 03:00:00', 1, 1)")
    ran = seeknal(root, "run")
    assert ran.returncode == 0, ran.stderr
    assert "late data: restated 1 interval of daily, 1 interval of totals" in ran.stderr + ran.stdout
    project, store = open_all(root)
    [record] = [r for r in store.history("daily") if r.get("event") == "restate"]
    assert record["reason"] == "late data: raw +1 row in 2024-01-04"
    assert rows(root, "SELECT * FROM daily WHERE day = DATE '2024-01-04'") == rows(
        root, EXPECTED_DAILY.replace("GROUP BY", "AND CAST(ts AS DATE) = DATE '2024-01-04' GROUP BY"))
    # outside the window: still the old rows, found by a wider verify
    found = verify(project, store, ["daily"], now=NOW, dry_run=True)
    assert days([p for p, _ in found.changed["daily"]]) == ["2024-01-02"]


def test_bad_verify_window_is_one_line_exit_2(root: Path) -> None:
    spec = root / "seeknal" / "transforms" / "nodes.yml"
    spec.write_text(spec.read_text().replace("  time_column: day\ntotals:", "  time_column: day\n  verify: 1 month\ntotals:"))
    out = seeknal(root, "run")
    assert out.returncode == 2
    assert "verify" in out.stderr and "invalid duration '1 month'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_the_late_data_sensor_records_the_restatement(root: Path, monkeypatch) -> None:
    from seeknal_dagster import build_definitions
    from seeknal_dagster.sensors import LATE_DATA_SENSOR

    spec = root / "seeknal" / "transforms" / "nodes.yml"  # the data is from 2024: a window reaching it
    spec.write_text(spec.read_text().replace("  time_column: day\ntotals:",
                                             "  time_column: day\n  verify: 5000d\ntotals:"))
    defs = build_definitions(root)
    sensor = defs.resolve_sensor_def(LATE_DATA_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    instance = dg.DagsterInstance.ephemeral()
    try:
        quiet = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
        assert quiet.skip_message == "late data: none in 5 verified intervals"
        execute(root, "INSERT INTO raw VALUES (TIMESTAMP '2024-01-05 12:00:00', 4, 2)")
        data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs,
                                                            cursor=quiet.cursor))
    finally:
        instance.dispose()
    # a tick that did work logs it and gives no skip reason; its cursor counts what it restated
    assert json.loads(data.cursor)["restated"] == 2 and "late data" not in (data.skip_message or "")
    _, store = open_all(root)
    [direct, downstream] = store.pending_restatements()
    assert (direct.node, direct.reason, direct.actor) == (
        "daily", "late data: raw +1 row in 2024-01-05", "dagster:seeknal_late_data")
    assert [i.start for i in downstream.intervals] == [t(2024, 1, 5)]


@pytest.mark.parametrize("backend", ["json", "postgres"])
def test_both_state_backends_store_and_return_digests(backend: str, tmp_path: Path, request) -> None:
    if backend == "json":
        store = JsonStateStore(tmp_path / "run_state.json")
        other = JsonStateStore(tmp_path / "copy.json")
    else:
        dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
        store = PostgresStateStore(dsn, schema=schema).connect()
        other = PostgresStateStore(dsn, schema=schema + "_copy").connect()
    day = 86400
    d0 = int(t(2024, 1, 1).timestamp())
    store.mark_complete("n", [(t(2024, 1, 1), t(2024, 1, 3))],
                        digests={"raw": {d0: (3, 1704070000000000, "duckdb2.0:00ff"), d0 + day: (0, None, "")},
                                 "other": {d0: (1, 5, "duckdb2.0:0a")}})
    store.mark_complete("n", [(t(2024, 1, 2), t(2024, 1, 3))],  # a recompute replaces its digest
                        digests={"raw": {d0 + day: (2, 7, "duckdb2.0:0b")}})
    store.mark_complete("m", [(t(2024, 1, 1), t(2024, 1, 2))])
    want = {"raw": {d0: (3, 1704070000000000, "duckdb2.0:00ff"), d0 + day: (2, 7, "duckdb2.0:0b")},
            "other": {d0: (1, 5, "duckdb2.0:0a")}}
    assert store.digests("n") == want
    assert store.digests("m") == {} and store.digests("unknown") == {}
    other.import_(store.export())  # they travel with `seeknal state migrate`
    assert other.digests("n") == want
    with pytest.raises(ValueError, match="digest of 'raw'"):
        store.mark_complete("n", [(t(2024, 1, 1), t(2024, 1, 2))], digests={"raw": {d0: (1, 2)}})
    store.close()
    other.close()


def test_json_state_without_digests_is_unchanged(tmp_path: Path) -> None:
    store = JsonStateStore(tmp_path / "run_state.json")
    store.mark_complete("n", [(t(2024, 1, 1), t(2024, 1, 2))])
    assert "digests" not in (tmp_path / "run_state.json").read_text()
    assert "digests" not in json.dumps(store.export())


def test_one_digest_query_per_source_per_batch(tmp_path: Path) -> None:
    """One grouped query per source per batch: a backfill of 5 daily intervals in one batch
    records 5 digests from one call of the engine's digests."""
    text = textwrap.dedent(NODES)
    root = make_project(tmp_path / "p", text, days=5)
    project, store = open_all(root)
    from seeknal_core.engines.duckdb import DuckDBEngine

    engine = DuckDBEngine(project)
    calls: list[int] = []
    original = engine.digests

    def counted(source, column, timezone, intervals):
        calls.append(len(intervals))
        return original(source, column, timezone, intervals)

    engine.digests = counted  # the real method, counted
    result = runner.run(project, store, engine=engine, nodes=["daily"], now=NOW)
    engine.close()
    assert result.intervals == 5 and calls == [5]
    assert len(store.digests("daily")["raw"]) == 5


@pytest.mark.xdist_group("spark")
@pytest.mark.parametrize("engine_name", ["duckdb", "spark"])
def test_late_rows_in_parquet_files_on_each_engine(engine_name: str, tmp_path: Path, request) -> None:
    """Spark nodes the same, over their sources: late rows in a day's file restate the hour
    they fall in and its day downstream; the rerun equals the data."""
    from test_spark_contract import DIRECT, make, output, write_day

    if engine_name == "spark":
        request.getfixturevalue("spark")
    root = tmp_path / "c"
    project, store = make(root, engine_name)
    assert runner.run(project, store, now="2024-01-04").intervals == 75
    assert len(store.digests("hourly")["raw"]) == 72
    kinds = {v[2].partition(":")[0] for v in store.digests("hourly")["raw"].values()}
    assert kinds == {"spark" if engine_name == "spark" else f"duckdb{'.'.join(duckdb.__version__.split('.')[:2])}"}
    write_day(root, "2024-01-02", extra=3)  # three late rows at 05:30
    found = verify(project, store, now="2024-01-04")
    assert found.reasons == {"hourly": "late data: raw +3 rows in 2024-01-02 05:00"}
    assert {n: len(p) for n, p in found.restated.items()} == {"hourly": 1, "daily": 1}
    assert runner.run(project, store, now="2024-01-04").intervals == 2
    con = duckdb.connect()
    con.execute(f"CREATE VIEW raw AS SELECT * FROM read_parquet('{root}/data/raw/*.parquet')")
    for node in ("hourly", "daily"):
        want = sorted(tuple(str(v) for v in r) for r in con.execute(DIRECT[node]).fetchall())
        assert [tuple(r) for r in output(root, node)] == want
    assert verify(project, store, now="2024-01-04").restated == {}


def test_digests_follow_local_days_across_dst(tmp_path: Path) -> None:
    """A daily grid in America/New_York over a naive column: each digest counts exactly the
    rows of its local day, the 23-hour and 25-hour days included (one grouped query)."""
    from seeknal_core.engines.duckdb import DuckDBEngine
    from seeknal_core.project import SourceNode, load_project
    from seeknal_core.schedule import Schedule

    root = make_project(tmp_path / "p", NODES, days=1)
    execute(root, "CREATE OR REPLACE TABLE dst AS SELECT TIMESTAMP '2024-03-08' + INTERVAL (i * 7) MINUTE AS ts, "
                  "i AS v FROM range(4 * 24 * 60 // 7) t(i)")
    schedule = Schedule("@daily", "America/New_York")
    lo = int(dt.datetime(2024, 3, 8, 5, tzinfo=dt.UTC).timestamp())
    ticks = schedule.ticks(lo, lo + 4 * 86400)
    pairs = list(zip(ticks, ticks[1:]))
    assert [b - a for a, b in pairs] == [86400, 86400, 82800, 86400]  # 2024-03-10 has 23 hours
    engine = DuckDBEngine(load_project(root))
    try:
        found = engine.digests(SourceNode(name="dst", table="dst"), "ts", "America/New_York", pairs)
        want = dict(engine.con.execute(
            "SELECT CAST(ts AS DATE), count(*) FROM dst GROUP BY 1").fetchall())
    finally:
        engine.close()
    assert [found[p][0] for p in pairs] == [want[dt.date(2024, 3, d)] for d in (8, 9, 10, 11)]
