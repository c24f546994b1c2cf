"""The Dagster adapter's assets on real Dagster, real DuckDB and the real JSON state store:
single keys and key ranges, explicit re-materialisation, failures, DST, and loading."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from test_runner import open_all
from test_runner import rows as query

from seeknal_core.intervals import IntervalSet
from seeknal_core.project import load_project
from seeknal_core.templating import render_sql
from seeknal_dagster import SeeknalTranslator, build_definitions
from seeknal_dagster.partitions import partitions_def_for

UTC = dt.UTC
ROOT = Path(__file__).resolve().parent.parent

NODES = """
hourly:
  schedule: "@hourly"
  description: Events per hour.
  tags: [core]
  sql: |
    SELECT date_trunc('hour', ts) AS hour, count(*) AS n, sum(v) AS v FROM raw
    WHERE ts >= TIMESTAMP '{{ start }}' AND ts < TIMESTAMP '{{ end }}'
      AND CASE WHEN v = 999 THEN error('poisoned row') ELSE true END
    GROUP BY ALL
  time_column: hour
daily:
  schedule: "@daily"
  sql: |
    SELECT CAST(date_trunc('day', hour) AS TIMESTAMP) AS day, sum(n) AS n, sum(v) AS v
    FROM {{ ref('hourly') }} WHERE hour >= TIMESTAMP '{{ start }}' AND hour < TIMESTAMP '{{ end }}'
    GROUP BY ALL
  time_column: day
summary:
  sql: SELECT count(*) AS days, sum(n) AS n FROM {{ ref('daily') }}
"""


def make_project(root: Path, nodes: str = NODES, *, start: str = "2024-01-01", days: int = 4,
                 raw_type: str = "TIMESTAMP") -> Path:
    """A project over a DuckDB table ``raw``: one row per 10 minutes from ``start``."""
    (root / "seeknal" / "transforms").mkdir(parents=True, exist_ok=True)
    (root / "seeknal" / "sources").mkdir(parents=True, exist_ok=True)
    (root / "seeknal_project.yml").write_text(f"name: test project\nstart: {start}\n")
    (root / "seeknal" / "sources" / "raw.yml").write_text("raw:\n  table: raw\n  time_column: ts\n")
    (root / "seeknal" / "transforms" / "nodes.yml").write_text(textwrap.dedent(nodes))
    (root / "target").mkdir(exist_ok=True)
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"CREATE OR REPLACE TABLE raw AS SELECT CAST(TIMESTAMP '{start}' + INTERVAL (i * 10) MINUTE "
        f"AS {raw_type}) AS ts, (i * 37) % 101 AS v FROM range({days * 144}) t(i)")
    con.close()
    return root


def execute(root: Path, sql: str) -> None:
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    try:
        con.execute(sql)
    finally:
        con.close()


def one_shot(root: Path, node: str, start: dt.datetime, end: dt.datetime) -> list[tuple]:
    """The node's SQL run once over [start, end), straight from the node definition."""
    return query(root, render_sql(load_project(root).nodes[node], start, end))


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance, key: str, *,
                partition: str | None = None, first: str | None = None, last: str | None = None,
                tags: dict | None = None, ok: bool = True) -> dg.ExecuteInProcessResult:
    """Run one asset the way a Dagster run does: a key, or a range via the backfill tags."""
    tags = dict(tags or {})
    if first is not None:
        tags.update({ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last})
    result = dg.materialize(
        list(defs.assets), selection=[dg.AssetKey(key)], partition_key=partition, tags=tags,
        instance=instance, resources=defs.resources, raise_on_error=False,
    )
    assert result.success is ok, [e.message for e in result.all_events if e.is_failure]
    return result


def materializations(result: dg.ExecuteInProcessResult, key: str) -> list[dg.AssetMaterialization]:
    """The run's materialisations of one asset (every partition), in order."""
    return [e.event_specific_data.materialization for e in result.get_asset_materialization_events()
            if e.event_specific_data.materialization.asset_key == dg.AssetKey(key)]


def store_of(root: Path):
    return open_all(root)[1]


def completions(root: Path, node: str) -> list[dict]:
    return [r for r in store_of(root).history(node) if r["event"] == "complete"]


def t(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# -- fixtures shared with the other Dagster test modules (they import them by name) -------------
@pytest.fixture()
def instance():
    """A real in-memory instance (event log, runs, asset status): fast to create."""
    inst = dg.DagsterInstance.ephemeral()
    try:
        yield inst
    finally:
        inst.dispose()


@pytest.fixture()
def project_root(tmp_path: Path) -> Path:
    """A fresh project over ``NODES`` and four days of ``raw``."""
    return make_project(tmp_path / "proj")


def test_single_key_runs_exactly_its_interval(project_root: Path, instance) -> None:
    defs = build_definitions(project_root)
    result = materialize(defs, instance, "hourly", partition="2024-01-02-05:00")

    assert query(project_root, "SELECT * FROM hourly") == one_shot(project_root, "hourly", t(2024, 1, 2, 5),
                                                                      t(2024, 1, 2, 6))
    store = store_of(project_root)
    assert store.completed("hourly") == IntervalSet([(t(2024, 1, 2, 5), t(2024, 1, 2, 6))])
    [record] = completions(project_root, "hourly")
    assert (record["mode"], record["run_id"]) == ("dagster", result.run_id)
    assert instance.get_materialized_partitions(dg.AssetKey("hourly")) == {"2024-01-02-05:00"}
    [mat] = materializations(result, "hourly")
    assert mat.metadata["run/intervals"].value == 1 and mat.metadata["rows"].value == 1
    assert mat.metadata["interval_start"].value == "2024-01-02T05:00:00+00:00"
    # the step reports its in-sync check after the materialisation is stored
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == ("seeknal_in_sync", True), check.description
    assert check.metadata["in_sync_count"].value == 1


def test_key_range_is_one_run_and_equals_the_one_shot_result(project_root: Path, instance) -> None:
    defs = build_definitions(project_root)
    result = materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-02-23:00")
    assert query(project_root, "SELECT * FROM hourly") == one_shot(project_root, "hourly", t(2024, 1, 1),
                                                                      t(2024, 1, 3))
    assert store_of(project_root).completed("hourly") == IntervalSet([(t(2024, 1, 1), t(2024, 1, 3))])
    assert len(instance.get_materialized_partitions(dg.AssetKey("hourly"))) == 48
    assert {r["run_id"] for r in completions(project_root, "hourly")} == {result.run_id}

    # the daily asset over the hourly one: its two days, through the partition mapping
    materialize(defs, instance, "daily", first="2024-01-01", last="2024-01-02")
    assert query(project_root, "SELECT * FROM daily") == one_shot(project_root, "daily", t(2024, 1, 1),
                                                                     t(2024, 1, 3))
    # the unscheduled node: unpartitioned, a full refresh over what exists
    summary = materialize(defs, instance, "summary")
    assert query(project_root, "SELECT * FROM summary") == [(2, 288)]
    assert materializations(summary, "summary")[0].metadata["dagster/row_count"].value == 1


def test_rematerializing_a_completed_partition_reruns_it(project_root: Path, instance) -> None:
    """An explicit run of a completed partition re-computes it (new data replaces old rows),
    and only the window's intervals run, whatever else is pending in state."""
    defs = build_definitions(project_root)
    materialize(defs, instance, "hourly", first="2024-01-02-00:00", last="2024-01-02-02:00")
    execute(project_root, "INSERT INTO raw VALUES (TIMESTAMP '2024-01-02 01:30:00', 5000)")
    store = store_of(project_root)
    store.mark_failed("hourly", [(t(2024, 1, 3), t(2024, 1, 3, 1))], "elsewhere")  # outside the window

    rerun = materialize(defs, instance, "hourly", partition="2024-01-02-01:00")
    assert query(project_root, "SELECT * FROM hourly") == one_shot(project_root, "hourly", t(2024, 1, 2),
                                                                      t(2024, 1, 2, 3))
    assert query(project_root, "SELECT n FROM hourly WHERE hour = TIMESTAMP '2024-01-02 01:00'") == [(7,)]
    last = completions(project_root, "hourly")[-1]
    assert last["run_id"] == rerun.run_id and last["intervals"] == [
        ["2024-01-02T01:00:00Z", "2024-01-02T02:00:00Z"]]
    assert not store.completed("hourly").overlaps((t(2024, 1, 3), t(2024, 1, 3, 1)))


def test_failed_interval_fails_the_run_and_is_recorded(project_root: Path, instance) -> None:
    defs = build_definitions(project_root)
    execute(project_root, "INSERT INTO raw VALUES (TIMESTAMP '2024-01-01 02:15:00', 999)")
    result = materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-01-03:00", ok=False)

    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "1 interval(s) failed" in failure.event_specific_data.error.message
    store = store_of(project_root)
    assert store.completed("hourly") == IntervalSet([(t(2024, 1, 1), t(2024, 1, 1, 2)),
                                                      (t(2024, 1, 1, 3), t(2024, 1, 1, 4))])
    [failed] = store.node("hourly").failed
    assert (failed.start, failed.end) == (t(2024, 1, 1, 2), t(2024, 1, 1, 3))
    # the hours that did complete show as materialised, the bad one does not
    assert instance.get_materialized_partitions(dg.AssetKey("hourly")) == {
        "2024-01-01-00:00", "2024-01-01-01:00", "2024-01-01-03:00"}
    # the failed step still reports its in-sync check: both sides agree on those three hours
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["in_sync_count"].value == 3, check.description


def test_downstream_fails_when_upstream_intervals_are_missing(project_root: Path, instance) -> None:
    defs = build_definitions(project_root, upstream_retries=0)
    materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-01-22:00")
    result = materialize(defs, instance, "daily", partition="2024-01-01", ok=False)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "1 skipped" in failure.event_specific_data.error.message
    assert "waiting for upstream 'hourly'" in failure.event_specific_data.error.message
    assert not store_of(project_root).completed("daily")


NY_HOURLY = """
ny_hourly:
  schedule: "@hourly"
  timezone: America/New_York
  start: 2024-11-02
  sql: |
    SELECT date_trunc('hour', ts) AS hour, count(*) AS n FROM raw
    WHERE ts >= CAST('{{ start_ts }}' AS TIMESTAMPTZ) AND ts < CAST('{{ end_ts }}' AS TIMESTAMPTZ)
    GROUP BY ALL
  time_column: hour
"""


def test_new_york_fall_back_day_has_25_partitions_and_25_intervals(tmp_path: Path, instance) -> None:
    root = make_project(tmp_path / "ny", NY_HOURLY, start="2024-11-02", days=4, raw_type="TIMESTAMPTZ")
    defs = build_definitions(root)
    pdef = partitions_def_for(load_project(root).nodes["ny_hourly"])
    day = [k for k in pdef.get_partition_keys() if k.startswith("2024-11-03")]
    assert len(day) == 25 and "2024-11-03-01:00-0500" in day

    materialize(defs, instance, "ny_hourly", first=day[0], last=day[-1])
    ny = dt.timezone(dt.timedelta(hours=-4))
    start, end = dt.datetime(2024, 11, 3, tzinfo=ny), dt.datetime(2024, 11, 4, 5, tzinfo=UTC)
    done = store_of(root).completed("ny_hourly")
    assert done == IntervalSet([(start, end)]) and done.total_duration == dt.timedelta(hours=25)
    assert instance.get_materialized_partitions(dg.AssetKey("ny_hourly")) == set(day)
    assert query(root, "SELECT count(*), sum(n) FROM ny_hourly") == [(25, 150)]


def test_translator_customises_keys_groups_and_metadata(project_root: Path) -> None:
    class Custom(SeeknalTranslator):
        def get_group_name(self, node):
            return "warehouse"

    defs = build_definitions(project_root, translator=Custom(key_prefix="seeknal"))
    graph = defs.resolve_asset_graph()
    hourly, daily = dg.AssetKey(["seeknal", "hourly"]), dg.AssetKey(["seeknal", "daily"])
    assert graph.get(daily).parent_keys == {hourly}
    assert graph.get(hourly).parent_keys == {dg.AssetKey(["seeknal", "raw"])}
    assert graph.get(dg.AssetKey(["seeknal", "raw"])).is_external
    spec = graph.get(hourly)
    assert spec.group_name == "warehouse" and spec.tags.get("core") == ""
    assert spec.metadata["seeknal/schedule"] == "0 * * * *"
    assert spec.description.startswith("Events per hour.")
    assert isinstance(spec.backfill_policy, dg.BackfillPolicy)
    assert build_definitions(project_root).resolve_asset_graph().get(
        dg.AssetKey("hourly")).group_name == "test_project"


def test_node_meta_sets_dagster_key_and_group(tmp_path: Path) -> None:
    nodes = NODES.replace("summary:\n", "summary:\n  meta: {dagster: {asset_key: marts/summary, group: marts}}\n")
    graph = build_definitions(make_project(tmp_path / "m", nodes)).resolve_asset_graph()
    summary = graph.get(dg.AssetKey(["marts", "summary"]))
    assert summary.group_name == "marts" and summary.parent_keys == {dg.AssetKey("daily")}


def test_daily_depends_on_its_24_hours(project_root: Path) -> None:
    graph = build_definitions(project_root).resolve_asset_graph()
    hours = graph.get_parent_partition_keys_for_child(
        "2024-01-02", dg.AssetKey("hourly"), dg.AssetKey("daily")).partitions_subset.get_partition_keys()
    assert len(list(hours)) == 24


def test_batch_size_maps_to_multi_run_backfills(tmp_path: Path) -> None:
    root = make_project(tmp_path / "b", NODES.replace('  description: Events per hour.\n',
                                                      "  batch_size: 24\n"))
    graph = build_definitions(root).resolve_asset_graph()
    assert graph.get(dg.AssetKey("hourly")).backfill_policy == dg.BackfillPolicy.multi_run(24)
    assert graph.get(dg.AssetKey("daily")).backfill_policy == dg.BackfillPolicy.single_run()
    assert graph.get(dg.AssetKey("summary")).partitions_def is None


def test_workspace_validates_without_side_effects(tmp_path: Path) -> None:
    """`dagster definitions validate -w workspace.yaml` passes; loading opens no database and
    writes no state (the example data need not exist)."""
    before = {p for p in (ROOT / "example_project").rglob("*") if "__pycache__" not in p.parts}
    env = {"DAGSTER_HOME": str(tmp_path), "PATH": str(Path(sys.executable).parent)}
    (tmp_path / "dagster.yaml").write_text("")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "All code locations passed validation" in proc.stderr + proc.stdout
    after = {p for p in (ROOT / "example_project").rglob("*") if "__pycache__" not in p.parts}
    assert after == before
