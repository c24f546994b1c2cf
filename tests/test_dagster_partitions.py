"""seeknal_dagster.partitions against real Dagster objects.

The factory turns a node's schedule into a TimeWindowPartitionsDefinition, refuses one
whose windows differ from our intervals, and translates keys <-> intervals through
Dagster's own key handling.
"""

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest

from seeknal_core import Interval, IntervalSet, Schedule, create_interval_calculator
from seeknal_core.errors import SeeknalError
from seeknal_core.project import TransformNode

dagster = pytest.importorskip("dagster")

from seeknal_dagster.partitions import (  # noqa: E402
    PartitionsError,
    check_partitions_def,
    interval_for_key,
    interval_for_time_window,
    keys_for_intervals,
    partitions_def_for,
)

UTC = dt.UTC
NY = ZoneInfo("America/New_York")
D = lambda *a: dt.datetime(*a, tzinfo=UTC)  # noqa: E731


def node(name="orders", schedule="@daily", timezone="UTC", start=dt.datetime(2024, 1, 1)):
    return TransformNode(name=name, sql="select 1", schedule=schedule, timezone=timezone, start=start)


def window(pdef, lo, hi):
    return list(pdef.get_partition_keys_in_time_window(dagster.TimeWindow(lo, hi)))


# -- the factory -------------------------------------------------------------------------------
@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
@pytest.mark.parametrize(
    "schedule,fmt",
    [("@daily", "%Y-%m-%d"), ("@weekly", "%Y-%m-%d"), ("@monthly", "%Y-%m-%d"), ("@yearly", "%Y-%m-%d"),
     ("@hourly", "%Y-%m-%d-%H:%M"), ("*/15 * * * *", "%Y-%m-%d-%H:%M"), ("30 2 * * *", "%Y-%m-%d-%H:%M"),
     ("0 0,12 * * *", "%Y-%m-%d-%H:%M")],
)
def test_definition_mirrors_the_schedule_and_picks_the_key_format(schedule, tz, fmt):
    pdef = partitions_def_for(node(schedule=schedule, timezone=tz))
    assert isinstance(pdef, dagster.TimeWindowPartitionsDefinition)
    assert (pdef.cron_schedule, pdef.timezone, pdef.fmt, pdef.end_offset) == (
        Schedule(schedule).cron, tz, fmt, 0
    )


def test_start_is_the_first_tick_at_or_after_the_node_start():
    pdef = partitions_def_for(node(schedule="@daily", timezone="America/New_York",
                                   start=dt.datetime(2024, 1, 1, 10, 17)))
    assert pdef.start == dt.datetime(2024, 1, 2, tzinfo=NY)
    assert pdef.get_first_partition_key() == "2024-01-02"
    monthly = partitions_def_for(node(schedule="@monthly", start=dt.date(2024, 1, 15)))
    assert monthly.get_first_partition_key() == "2024-02-01"


def test_start_on_the_second_instance_of_a_repeated_hour_is_exact():
    # 06:00 UTC is 01:00 EST, the second 01:00 of the fall-back night in New York
    pdef = partitions_def_for(node(schedule="@hourly", timezone="America/New_York",
                                   start=D(2024, 11, 3, 6)))
    assert pdef.start.timestamp() == D(2024, 11, 3, 6).timestamp()
    assert pdef.get_first_partition_key() == "2024-11-03-01:00-0500"


def test_one_definition_object_per_cron_timezone_and_first_tick():
    a = partitions_def_for(node(name="a"))
    assert partitions_def_for(node(name="b")) is a
    assert partitions_def_for(node(name="c", start=dt.datetime(2023, 12, 31, 12))) is a  # same first tick
    assert partitions_def_for(Schedule("0 0 * * *"), start=dt.date(2024, 1, 1)) is a
    assert partitions_def_for(node(name="d", start=dt.datetime(2024, 1, 2))) is not a
    assert partitions_def_for(node(name="e", timezone="America/New_York")) is not a


def test_a_node_without_start_or_schedule_is_refused_with_the_fix():
    with pytest.raises(PartitionsError, match=r"node 'orders' has no start.*set `start:` in the node or"):
        partitions_def_for(node(start=None))
    with pytest.raises(PartitionsError, match=r"node 'lookup' has no schedule.*set `schedule:`"):
        partitions_def_for(TransformNode(name="lookup", sql="select 1"))
    with pytest.raises(PartitionsError, match=r"schedule '@daily' in UTC has no start: pass start="):
        partitions_def_for(Schedule("@daily"))
    assert issubclass(PartitionsError, ValueError) and issubclass(PartitionsError, SeeknalError)
    # an explicit start stands in for a missing one
    assert partitions_def_for(node(start=None), start="2024-01-01").get_first_partition_key() == "2024-01-01"


# -- validation against our grid -----------------------------------------------------------------
def test_lord_howe_hourly_is_refused_naming_node_schedule_timezone_and_fix():
    """Dagster's hourly windows there drift 30 minutes from the wall clock across the DST
    shift (see tests/test_schedule_vs_dagster.py), so its partitions cannot be ours."""
    with pytest.raises(PartitionsError) as info:
        partitions_def_for(node(name="ticks", schedule="@hourly", timezone="Australia/Lord_Howe"))
    message = str(info.value)
    for part in ("node 'ticks'", "schedule '@hourly'", "Australia/Lord_Howe",
                 "differ from seeknal's intervals", "`timezone:`", "*/30 * * * *"):
        assert part in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    "schedule,tz",
    [("*/30 * * * *", "Australia/Lord_Howe"), ("@daily", "Australia/Lord_Howe"),
     ("0 * * * *", "Asia/Kathmandu"), ("*/30 * * * *", "Asia/Kathmandu")],
)
def test_half_hour_zones_are_accepted_where_dagster_agrees(schedule, tz):
    assert partitions_def_for(node(schedule=schedule, timezone=tz)).timezone == tz


def test_a_key_format_that_merges_windows_is_refused():
    coarse = dagster.TimeWindowPartitionsDefinition(
        cron_schedule="0 * * * *", timezone="UTC", start=dt.datetime(2024, 1, 1), fmt="%Y-%m-%d"
    )
    with pytest.raises(PartitionsError, match="two partitions share the key '2024-01-01'"):
        check_partitions_def(coarse)
    with pytest.raises(PartitionsError):
        interval_for_key(coarse, "2024-01-01")


def test_a_definition_built_elsewhere_is_checked_and_translated():
    pdef = dagster.TimeWindowPartitionsDefinition(
        cron_schedule="0 * * * *", timezone="Europe/Berlin", start=dt.datetime(2024, 10, 26),
        fmt="%Y-%m-%d-%H:%M",
    )
    assert interval_for_key(pdef, "2024-10-27-02:00+0100") == Interval(D(2024, 10, 27, 1), D(2024, 10, 27, 2))


# -- translation --------------------------------------------------------------------------------
ROUND_TRIP_RANGES = {
    "@hourly": (dt.datetime(2024, 11, 1), dt.datetime(2024, 11, 5)),
    "@daily": (dt.datetime(2024, 2, 20), dt.datetime(2024, 4, 15)),
    "@weekly": (dt.datetime(2024, 1, 1), dt.datetime(2024, 12, 31)),
    "@monthly": (dt.datetime(2024, 1, 1), dt.datetime(2025, 1, 1)),
}


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
@pytest.mark.parametrize("schedule", list(ROUND_TRIP_RANGES))
def test_keys_to_intervals_to_keys_round_trip(schedule, tz):
    lo, hi = ROUND_TRIP_RANGES[schedule]
    pdef = partitions_def_for(node(schedule=schedule, timezone=tz, start=lo))
    intervals = create_interval_calculator(schedule, tz).get_intervals(lo, hi)
    intervals = [iv for iv in intervals if iv.start >= pdef.start]
    keys = keys_for_intervals(pdef, intervals)
    assert keys == window(pdef, intervals[0].start, intervals[-1].end)
    assert len(keys) == len(set(keys)) == len(intervals)
    assert [interval_for_key(pdef, k) for k in keys] == intervals


def test_new_york_fall_back_day_has_25_distinct_hourly_keys():
    """'%Y-%m-%d-%H:%M' is enough: for crons whose hour field is '*' Dagster appends the UTC
    offset to the key of the second instance of a repeated wall time (and only to it)."""
    pdef = partitions_def_for(node(schedule="@hourly", timezone="America/New_York"))
    assert pdef.fmt == "%Y-%m-%d-%H:%M"
    day = create_interval_calculator("@hourly", "America/New_York").get_intervals(
        dt.date(2024, 11, 3), dt.date(2024, 11, 4)
    )
    keys = window(pdef, day[0].start, day[-1].end)
    assert len(day) == len(keys) == len(set(keys)) == 25
    assert keys[:4] == ["2024-11-03-00:00", "2024-11-03-01:00", "2024-11-03-01:00-0500", "2024-11-03-02:00"]
    assert [interval_for_key(pdef, k) for k in keys] == day
    assert interval_for_key(pdef, "2024-11-03-01:00") == Interval(D(2024, 11, 3, 5), D(2024, 11, 3, 6))
    assert interval_for_key(pdef, "2024-11-03-01:00-0500") == Interval(D(2024, 11, 3, 6), D(2024, 11, 3, 7))
    assert keys_for_intervals(pdef, day) == keys


def test_new_york_spring_forward_day_has_23_keys_and_no_0200():
    pdef = partitions_def_for(node(schedule="@hourly", timezone="America/New_York"))
    day = create_interval_calculator("@hourly", "America/New_York").get_intervals(
        dt.date(2024, 3, 10), dt.date(2024, 3, 11)
    )
    keys = keys_for_intervals(pdef, day)
    assert len(day) == len(keys) == 23 and "2024-03-10-02:00" not in keys
    # Dagster's has_partition_key accepts the skipped wall time; we do not
    assert pdef.has_partition_key("2024-03-10-02:00")
    with pytest.raises(PartitionsError, match="'2024-03-10-02:00' does not exist.*nearest valid key is "
                                              "'2024-03-10-03:00'"):
        interval_for_key(pdef, "2024-03-10-02:00")


@pytest.mark.parametrize(
    "key,expected",
    [("garbage", "keys look like '2024-01-01-00:00'"),
     ("2024-01-01-00:30", "nearest valid key is '2024-01-01-00:00'"),  # Dagster's has_partition_key: True
     ("2023-06-01-00:00", "nearest valid key is '2024-01-01-00:00'"),
     ("2999-01-01-00:00", "nearest valid key is '{last}'")],
)
def test_an_invalid_key_is_named_with_the_nearest_valid_one(key, expected):
    pdef = partitions_def_for(node(schedule="@hourly"))
    expected = expected.format(last=pdef.get_last_partition_key())
    with pytest.raises(PartitionsError, match=f"partition key '{key}' does not exist") as info:
        interval_for_key(pdef, key)
    assert expected in str(info.value)


def test_interval_for_time_window_is_utc_and_half_open():
    tw = dagster.TimeWindow(dt.datetime(2024, 11, 3, 1, tzinfo=NY), dt.datetime(2024, 11, 3, 2, tzinfo=NY))
    assert interval_for_time_window(tw) == Interval(D(2024, 11, 3, 5), D(2024, 11, 3, 7))  # 2 real hours
    assert interval_for_time_window(tw).start.tzinfo is UTC


def test_keys_for_intervals_reports_only_fully_covered_existing_windows():
    pdef = partitions_def_for(node(schedule="@hourly"))
    assert keys_for_intervals(pdef, [(D(2024, 1, 1, 0, 30), D(2024, 1, 1, 3))]) == [
        "2024-01-01-01:00", "2024-01-01-02:00"
    ]
    assert keys_for_intervals(pdef, [(D(2024, 1, 1, 0, 30), D(2024, 1, 1, 1, 30))]) == []
    assert keys_for_intervals(pdef, []) == []
    # before the start and after the last complete window: not partitions
    assert keys_for_intervals(pdef, [(D(2023, 12, 31, 22), D(2024, 1, 1, 1))]) == ["2024-01-01-00:00"]
    last = pdef.get_last_partition_window()
    far = last.end + dt.timedelta(days=30)
    assert keys_for_intervals(pdef, [(last.start, far)]) == [pdef.get_last_partition_key()]
    # touching intervals merge; overlaps count once
    assert keys_for_intervals(pdef, [(D(2024, 1, 1, 1), D(2024, 1, 1, 2)), (D(2024, 1, 1, 2), D(2024, 1, 1, 3)),
                                     (D(2024, 1, 1, 1), D(2024, 1, 1, 2))]) == [
        "2024-01-01-01:00", "2024-01-01-02:00"
    ]


def test_keys_for_intervals_years_apart_on_a_fine_grid():
    pdef = partitions_def_for(node(schedule="*/5 * * * *", start=dt.datetime(2021, 1, 1)))
    assert keys_for_intervals(pdef, [(D(2021, 1, 1), D(2021, 1, 1, 0, 10)), (D(2026, 1, 1), D(2026, 1, 1, 0, 7))]) == [
        "2021-01-01-00:00", "2021-01-01-00:05", "2026-01-01-00:00"
    ]


def test_keys_for_10000_hourly_intervals_is_linear():
    pdef = partitions_def_for(node(schedule="@hourly", timezone="America/New_York"))
    start = pdef.start.astimezone(UTC)
    intervals = create_interval_calculator("@hourly", "America/New_York").get_intervals(
        start, start + dt.timedelta(hours=10_000)
    )
    assert len(intervals) == 10_000  # two DST changes inside
    began = time.perf_counter()
    keys = keys_for_intervals(pdef, intervals)
    contiguous = time.perf_counter() - began
    assert len(keys) == len(set(keys)) == 10_000
    assert keys[0] == "2024-01-01-00:00" and "2024-11-03-01:00-0500" in keys
    assert keys_for_intervals(pdef, IntervalSet(intervals)) == keys
    began = time.perf_counter()
    assert keys_for_intervals(pdef, intervals[::2]) == keys[::2]  # 5,000 separate runs
    print(f"10,000 contiguous: {contiguous:.2f}s; 5,000 runs: {time.perf_counter() - began:.2f}s")


def test_an_end_bound_caps_the_partitions_at_its_last_tick():
    # end 2024-01-04 10:00 (exclusive): the last whole day is 01-03; 01-04 would reach past it
    bounded = TransformNode(name="old", sql="select 1", schedule="@daily", start=dt.datetime(2024, 1, 1),
                            end=dt.datetime(2024, 1, 4, 10))
    pdef = partitions_def_for(bounded)
    assert pdef.get_partition_keys() == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert pdef.get_last_partition_window().end == D(2024, 1, 4)
    assert pdef is not partitions_def_for(node())  # the bound is part of the grid's identity
    assert partitions_def_for(Schedule("@daily"), start=dt.date(2024, 1, 1), end=D(2024, 1, 4)) is pdef
    assert keys_for_intervals(pdef, [(D(2024, 1, 2), D(2024, 2, 1))]) == ["2024-01-02", "2024-01-03"]
    with pytest.raises(PartitionsError, match="does not exist"):
        interval_for_key(pdef, "2024-01-04")
    ny = partitions_def_for(TransformNode(name="ny", sql="select 1", schedule="@hourly",
                                          timezone="America/New_York", start=dt.datetime(2024, 3, 9, 22),
                                          end=dt.datetime(2024, 3, 10, 4)))  # across spring-forward
    assert ny.get_partition_keys() == ["2024-03-09-22:00", "2024-03-09-23:00", "2024-03-10-00:00",
                                       "2024-03-10-01:00", "2024-03-10-03:00"]
