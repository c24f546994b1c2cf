"""Readiness in Dagster (issue 19), on a real instance, real DuckDB and the JSON state
store: the watermark observed on the source, the automation condition that does not
request a partition whose data is not in, and a manual launch of one that waits."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
from test_dagster_assets import instance as instance  # fixture
from test_dagster_assets import make_project, materialize

from seeknal_dagster import build_definitions
from seeknal_dagster.readiness import WATERMARK_KEY, WATERMARKS_SENSOR

DAILY = """
daily:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT CAST(date_trunc('day', ts) AS TIMESTAMP) AS day, count(*) AS n FROM raw
    WHERE ts >= TIMESTAMP '{{ start }}' AND ts < TIMESTAMP '{{ end }}'
    GROUP BY ALL
"""


def _observe(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    """One tick of the watermarks sensor, its observations recorded as the daemon does."""
    sensor = defs.get_sensor_def(WATERMARKS_SENSOR)
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def test_watermark_is_observed_on_the_source_asset(tmp_path: Path, instance: dg.DagsterInstance):
    root = make_project(tmp_path / "p", DAILY, days=4)  # rows every 10 minutes, up to 2024-01-04 23:50
    defs = build_definitions(root)
    first = _observe(defs, instance)
    [event] = first.asset_events
    assert event.asset_key == dg.AssetKey("raw")
    assert event.metadata[WATERMARK_KEY].value == "2024-01-04T23:50:00+00:00"
    record = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw")), limit=1).records[0]
    assert record.asset_observation.metadata[WATERMARK_KEY].value == "2024-01-04T23:50:00+00:00"
    assert _observe(defs, instance, first.cursor).asset_events == []  # unchanged watermark: nothing recorded again


def test_the_watermark_is_read_from_the_database_the_assets_write(tmp_path: Path,
                                                                    instance: dg.DagsterInstance):
    """``database_path=`` moves the sensor's reads too, not only the assets' writes."""
    import duckdb

    root = make_project(tmp_path / "p", DAILY, days=4)
    other = tmp_path / "elsewhere.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE raw AS SELECT TIMESTAMP '2024-01-02 07:00' AS ts, 1 AS v")
    con.close()
    [event] = _observe(build_definitions(root, database_path=other), instance).asset_events
    assert event.metadata[WATERMARK_KEY].value == "2024-01-02T07:00:00+00:00"


def test_the_watermarks_sensor_comes_with_automation_even_without_the_other_sensors(tmp_path: Path):
    """The conditions treat a never-observed source as not ready: without the sensor they
    would never request anything."""
    root = make_project(tmp_path / "p", DAILY, days=4)
    names = {s.name for s in build_definitions(root, sensors=False).sensors}
    assert WATERMARKS_SENSOR in names
    names = {s.name for s in build_definitions(root, sensors=False, automation="none").sensors}
    assert WATERMARKS_SENSOR not in names


def test_automation_does_not_request_a_partition_whose_data_is_not_in(tmp_path: Path,
                                                                        instance: dg.DagsterInstance):
    root = make_project(tmp_path / "p", DAILY, days=4)
    defs = build_definitions(root)
    _observe(defs, instance)
    key = dg.AssetKey("daily")

    def requested(day: int) -> set[str]:
        """Evaluations before and after midnight of ``day`` (the cron tick passes between)."""
        before = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, evaluation_time=dt.datetime(2024, 1, day - 1, 23, 55, tzinfo=dt.UTC))
        after = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=before.cursor,
            evaluation_time=dt.datetime(2024, 1, day, 0, 5, tzinfo=dt.UTC))
        return {k for k in after.get_requested_partitions(key)} if after.total_requested else set()

    # just after midnight of Jan 4: the Jan 3 partition is the latest, its data is in
    assert requested(4) == {"2024-01-03"}
    # just after midnight of Jan 6: the Jan 5 partition is due by the clock, but the data
    # ends on Jan 4: not requested
    assert requested(6) == set()
    # the same evaluation with `ready: always` (the clock alone) requests it
    (root / "seeknal" / "sources" / "raw.yml").write_text("raw:\n  table: raw\n  time_column: ts\n  ready: always\n")
    defs = build_definitions(root)
    assert requested(6) == {"2024-01-05"}


def test_a_manual_launch_of_a_waiting_partition_logs_and_does_not_fail(tmp_path: Path,
                                                                       instance: dg.DagsterInstance):
    root = make_project(tmp_path / "p", DAILY, days=4)
    defs = build_definitions(root)
    result = materialize(defs, instance, "daily", partition="2024-01-06", ok=True)
    assert not result.get_asset_materialization_events()
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("daily: 1 interval waiting for raw (data up to 2024-01-04 23:50): not run until its data is in"
               in (m or "") for m in logs), logs
    status = instance.get_status_by_partition(dg.AssetKey("daily"), ["2024-01-06"],
                                              defs.get_assets_def("daily").partitions_def)
    assert status.get("2024-01-06") != dg.AssetPartitionStatus.FAILED
    # a ready partition still materialises
    ready = materialize(defs, instance, "daily", partition="2024-01-03")
    assert len(ready.get_asset_materialization_events()) == 1
