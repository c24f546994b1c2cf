"""One schedule per partitions definition; a tick targets the interval that just closed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from test_dagster_assets import instance as instance  # fixture
from test_dagster_assets import make_project, store_of, t

from seeknal_core.intervals import IntervalSet
from seeknal_dagster import build_definitions

NODES = """
hourly:
  schedule: "@hourly"
  sql: SELECT date_trunc('hour', ts) AS hour, count(*) AS n FROM raw WHERE ts >= '{{ start }}' AND ts < '{{ end }}' GROUP BY ALL
  time_column: hour
hourly_sum:
  schedule: "@hourly"
  sql: SELECT hour, n FROM {{ ref('hourly') }} WHERE hour >= '{{ start }}' AND hour < '{{ end }}'
  time_column: hour
weekly:
  schedule: "0 2 * * 0"
  start: 2024-01-07 02:00
  sql: SELECT time_bucket(INTERVAL 7 DAY, ts, TIMESTAMP '{{ start }}') AS week, count(*) AS n FROM raw WHERE ts >= '{{ start }}' AND ts < '{{ end }}' GROUP BY ALL
  time_column: week
daily_ny:
  schedule: "@daily"
  timezone: America/New_York
  sql: SELECT CAST('{{ start }}' AS TIMESTAMP) AS day, count(*) AS n FROM raw WHERE ts >= '{{ start }}' AND ts < '{{ end }}'
  time_column: day
snapshot:
  sql: SELECT count(*) AS n FROM raw
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("sched") / "proj", NODES, days=15)


def tick(defs: dg.Definitions, instance, name: str, at: dt.datetime) -> list[dg.RunRequest]:
    schedule = defs.resolve_schedule_def(name)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
    return list(schedule.evaluate_tick(context).run_requests or [])


def test_one_schedule_per_partitions_definition(root: Path) -> None:
    defs = build_definitions(root, automation="schedules")
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) == {"seeknal_hourly_utc", "seeknal_weekly_sun_0200_utc",
                              "seeknal_daily_america_new_york"}
    hourly_job = defs.resolve_job_def("seeknal_hourly_utc")
    assert hourly_job.asset_layer.executable_asset_keys == {dg.AssetKey("hourly"), dg.AssetKey("hourly_sum")}
    ny = defs.resolve_schedule_def("seeknal_daily_america_new_york")
    assert (ny.cron_schedule, ny.execution_timezone) == ("0 0 * * *", "America/New_York")
    assert ny.default_status == dg.DefaultScheduleStatus.STOPPED


@pytest.mark.parametrize(("schedule", "at", "key"), [
    ("seeknal_hourly_utc", dt.datetime(2024, 1, 3, 5, tzinfo=dt.UTC), "2024-01-03-04:00"),
    ("seeknal_weekly_sun_0200_utc", dt.datetime(2024, 1, 14, 2, tzinfo=dt.UTC), "2024-01-07-02:00"),
    # 2024-03-10 is New York's 23-hour day; its interval closes at local midnight
    ("seeknal_daily_america_new_york",
     dt.datetime(2024, 3, 11, tzinfo=ZoneInfo("America/New_York")), "2024-03-10"),
])
def test_tick_targets_the_interval_that_just_closed(root: Path, instance, schedule, at, key) -> None:
    [request] = tick(build_definitions(root, automation="schedules"), instance, schedule, at)
    assert request.partition_key == key


def test_scheduled_run_completes_that_interval(root: Path, instance) -> None:
    """Both hourly nodes run in the tick's run, upstream first, and state records the hour."""
    defs = build_definitions(root, automation="schedules")
    [request] = tick(defs, instance, "seeknal_hourly_utc", dt.datetime(2024, 1, 2, 8, tzinfo=dt.UTC))
    job = defs.resolve_job_def(request.job_name or "seeknal_hourly_utc")
    assert job.execute_in_process(instance=instance, partition_key=request.partition_key,
                                  tags=request.tags, resources=defs.resources).success
    store = store_of(root)
    hour = IntervalSet([(t(2024, 1, 2, 7), t(2024, 1, 2, 8))])
    assert store.completed("hourly") == hour and store.completed("hourly_sum") == hour
