"""Our interval grid must equal Dagster's partition windows: Dagster is the oracle.

Compared over 24 cron expressions x 5 timezones, on ranges that hold the March/April
and October/November 2024 daylight-saving transitions of every zone here.
"""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from seeknal_core import create_interval_calculator

dagster = pytest.importorskip("dagster")

CRONS = [
    "0 * * * *", "*/15 * * * *", "30 * * * *", "*/30 * * * *", "0 */6 * * *", "0 */2 * * *",
    "0 0 * * *", "30 2 * * *", "15 3 * * *", "0 1 * * *", "30 1 * * *", "5 0 * * *",
    "0 0,12 * * *", "0 1-3 * * *", "0 2 * * 0", "0 0 * * 1", "0 3 * * 6", "0 9 * * 1-5",
    "0 12 * * 1#1", "0 0 1 * *", "45 1 15 * *", "0 2 1,15 * *", "0 0 L * *", "0 0 1 1 *",
]
TIMEZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu"]
# Lord Howe shifts by 30 minutes. For crons that fire every hour, Dagster decides whether
# to read minutes in local or UTC time from the zone's offset *today*
# (dagster._utils.schedules.has_nonzero_minute_offset uses datetime.now()), so its
# windows there depend on the day the code runs. We follow the wall clock, as cron does;
# test_lord_howe_hourly_follows_wall_clock documents the case.
DAGSTER_DEPENDS_ON_TODAY = {
    (c, "Australia/Lord_Howe") for c in ("0 * * * *", "30 * * * *")
}
RANGES = [(dt.datetime(2024, 2, 20), dt.datetime(2024, 4, 15)),
          (dt.datetime(2024, 9, 25), dt.datetime(2024, 11, 15))]
LONG_RANGE = [(dt.datetime(2019, 12, 1), dt.datetime(2026, 1, 1))]


def dagster_windows(cron, tz, start, end):
    pdef = dagster.TimeWindowPartitionsDefinition(
        start=start, fmt="%Y-%m-%d-%H:%M", cron_schedule=cron, timezone=tz
    )
    zone = ZoneInfo(tz)
    end_ts = end.replace(tzinfo=zone).timestamp()
    out = []
    # the public key API cannot tell apart the two 01:00 windows of a fall-back night
    for window in pdef._iterate_time_windows(start.replace(tzinfo=zone).timestamp()):
        if window.start.timestamp() >= end_ts:
            break
        out.append((window.start.timestamp(), window.end.timestamp()))
    return out


def ours(cron, tz, start, end):
    calc = create_interval_calculator(cron, tz)
    return [(i.start.timestamp(), i.end.timestamp()) for i in calc.get_intervals(start, end)]


@pytest.mark.parametrize("cron,tz", [(c, z) for c in CRONS for z in TIMEZONES
                                     if (c, z) not in DAGSTER_DEPENDS_ON_TODAY])
def test_intervals_equal_dagster_windows(cron, tz):
    ranges = LONG_RANGE if cron in ("0 0 1 1 *", "0 0 1 * *", "45 1 15 * *") else RANGES
    for start, end in ranges:
        theirs = dagster_windows(cron, tz, start, end)
        mine = ours(cron, tz, start, end)
        # ours also holds the interval that straddles `start`; Dagster's begin at a tick >= start
        mine = [w for w in mine if w[0] >= theirs[0][0]]
        assert mine == theirs, f"{cron!r} in {tz} differs from Dagster"


def test_lord_howe_hourly_follows_wall_clock():
    """Documented divergence: every tick of '0 * * * *' is at minute 0 of Lord Howe's wall
    clock, across the 30-minute shifts (a 90-minute interval on the fall-back night, a
    30-minute-late hour on the spring-forward night), and the grid has no gap or overlap."""
    tz = ZoneInfo("Australia/Lord_Howe")
    calc = create_interval_calculator("0 * * * *", "Australia/Lord_Howe")
    intervals = calc.get_intervals(dt.datetime(2024, 4, 6), dt.datetime(2024, 4, 8))
    assert all(i.start.astimezone(tz).minute == 0 for i in intervals)
    assert all(a.end == b.start for a, b in zip(intervals, intervals[1:]))
    lengths = [int((i.end - i.start).total_seconds() // 60) for i in intervals]
    assert lengths.count(90) == 1 and set(lengths) == {60, 90}
    spring = calc.get_intervals(dt.datetime(2024, 10, 5), dt.datetime(2024, 10, 7))
    assert all(i.start.astimezone(tz).minute == 0 for i in spring)
    assert all(a.end == b.start for a, b in zip(spring, spring[1:]))


@pytest.mark.parametrize(
    "tz,day,expected", [("America/New_York", dt.date(2024, 11, 3), 25),
                        ("America/New_York", dt.date(2024, 3, 10), 23),
                        ("Europe/Berlin", dt.date(2024, 10, 27), 25),
                        ("Europe/Berlin", dt.date(2024, 3, 31), 23)],
)
def test_hourly_partition_count_on_dst_days(tz, day, expected):
    calc = create_interval_calculator("@hourly", tz)
    nxt = day + dt.timedelta(days=1)
    assert len(calc.get_intervals(day, nxt)) == expected
    assert len(dagster_windows("0 * * * *", tz, dt.datetime.combine(day, dt.time()),
                               dt.datetime.combine(nxt, dt.time()))) == expected
