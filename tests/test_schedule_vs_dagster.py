"""Our interval grid must equal Dagster's partition windows: Dagster is the oracle.

Every cron of CRONS is compared in every zone of ZONE_YEARS around each UTC-offset change
of the listed years (years where the zone's rules changed, plus recent ones).  Where
Dagster's own windows are no consistent grid there (they overlap or leave a gap, start
off the cron's wall-clock ticks, or are labelled with a wall time that does not exist),
our grid stays gap-free and the Dagster adapter must refuse the definition instead.
"""

import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from seeknal_core import create_interval_calculator
from seeknal_core.project import TransformNode
from seeknal_core.schedule import Schedule

dagster = pytest.importorskip("dagster")
from seeknal_dagster.partitions import PartitionsError, partition_format, partitions_def_for  # noqa: E402

CRONS = [
    "0 * * * *", "*/15 * * * *", "30 * * * *", "*/30 * * * *", "0 */6 * * *", "0 */2 * * *",
    "0 0 * * *", "30 2 * * *", "15 3 * * *", "0 1 * * *", "30 1 * * *", "5 0 * * *",
    "0 0,12 * * *", "0 1-3 * * *", "0 2 * * 0", "0 0 * * 1", "0 3 * * 6", "0 9 * * 1-5",
    "0 12 * * 1#1", "0 0 1 * *", "45 1 15 * *", "0 2 1,15 * *", "0 0 L * *", "0 0 1 1 *",
    "45 23 * * *", "0 23 * * *", "30 0 * * *", "45 23 * * 6",
]
ZONE_YEARS = {
    "UTC": [2024],
    "America/New_York": [2006, 2007, 2024],
    "Europe/London": [1971, 1972, 2024],
    "Europe/Berlin": [2024],
    "Europe/Dublin": [1971, 1972, 2024],  # negative DST: winter is the "daylight" time
    "Australia/Lord_Howe": [1985, 1986, 2024],  # a one-hour shift until 1985, 30 minutes since
    "Asia/Kolkata": [1942, 1945, 2024],
    "Asia/Kathmandu": [1986, 2024],  # +05:30 -> +05:45 at midnight
    "America/Santiago": [2016, 2019, 2022, 2024],  # changes at midnight
    "America/Asuncion": [2010, 2023, 2024],
    "America/Havana": [2012, 2024],
    "Asia/Beirut": [2010, 2023, 2024],
    "Africa/Cairo": [2010, 2014, 2023, 2024],  # 2014's Ramadan pause, 2023's return to DST
    "Africa/Casablanca": [2012, 2019, 2024],  # Ramadan
    "Pacific/Chatham": [2007, 2024],  # +12:45 / +13:45
    "Antarctica/Troll": [2005, 2024],  # a two-hour shift
    "Pacific/Apia": [2010, 2011, 2012],  # 2011-12-30 does not exist
}
CASES = [(c, z) for z in ZONE_YEARS for c in CRONS]


def zone_of(tz):
    return dt.UTC if tz == "UTC" else ZoneInfo(tz)


@cache
def offset_changes(tz, year):
    """Instants where the zone's UTC offset changes during a year (a daily scan, then bisection)."""
    zone = zone_of(tz)
    offset = lambda t: dt.datetime.fromtimestamp(t, zone).utcoffset()
    t = int(dt.datetime(year, 1, 1, tzinfo=dt.UTC).timestamp())
    end = int(dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC).timestamp())
    out, before = [], offset(t)
    while t < end:
        n = min(t + 86_400, end)
        if offset(n) != before:
            a, b = t, n
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if offset(mid) == before else (a, mid)
            out.append(b)
            before = offset(n)
        t = n
    return out or [int(dt.datetime(year, 6, 1, tzinfo=dt.UTC).timestamp())]


def dagster_windows(cron, tz, lo, hi):
    """Dagster's windows that start in [lo, hi), as (start datetime, end datetime)."""
    zone = zone_of(tz)
    start = dt.datetime.fromtimestamp(lo, zone).replace(tzinfo=None)
    pdef = dagster.TimeWindowPartitionsDefinition(
        start=start, fmt="%Y-%m-%d-%H:%M", cron_schedule=cron, timezone=tz
    )
    out = []
    # the public key API cannot tell apart the two 01:00 windows of a fall-back night
    for window in pdef._iterate_time_windows(lo):
        if window.start.timestamp() >= hi or len(out) > 20_000:
            break
        out.append((window.start, window.end))
    return out


def why_not_a_grid(cron, tz, windows, fmt):
    """Why Dagster's windows are no consistent grid of the cron, judged from them alone; None if they are."""
    zone = zone_of(tz)
    hourly = cron.split(" ")[1] == "*"
    for i, (start, end) in enumerate(windows):
        if end.timestamp() <= start.timestamp():
            return f"window {start} has no length"
        if i + 1 < len(windows) and windows[i + 1][0].timestamp() != end.timestamp():
            return f"window {start} overlaps or leaves a gap before the next"
        real = dt.datetime.fromtimestamp(start.timestamp(), zone)
        if start.strftime(fmt) != real.strftime(fmt):
            return f"window labelled {start.strftime(fmt)} starts at {real}"
        if croniter.match(cron, real.replace(tzinfo=None)):
            continue
        # off the cron's wall clock: fine only as the move of a skipped wall time (02:30 -> 03:00)
        t = int(start.timestamp())
        before, after = real - dt.timedelta(hours=3), real
        change = next((c for c in range(t - 3 * 3600, t + 1, 60)
                       if dt.datetime.fromtimestamp(c - 1, zone).utcoffset()
                       != dt.datetime.fromtimestamp(c, zone).utcoffset()), None)
        if hourly or change is None:
            return f"window {real} is not on the cron's wall-clock ticks"
        before = dt.datetime.fromtimestamp(change - 1, zone).replace(tzinfo=None)
        after = dt.datetime.fromtimestamp(change, zone).replace(tzinfo=None)
        skipped = [before + dt.timedelta(minutes=m) for m in range(1, int((after - before).total_seconds() // 60))]
        if not any(croniter.match(cron, w) for w in skipped):
            return f"window {real} is not on the cron's wall-clock ticks"
    return None


def ours(cron, tz, lo, hi):
    ticks = Schedule(cron, tz).ticks(lo, hi)
    return list(zip(ticks, ticks[1:]))


def span_around(schedule, t):
    s = schedule
    return (s.tick_before(s.tick_before(s.tick_at_or_before(t - 86_400))),
            s.tick_after(s.tick_after(s.tick_at_or_after(t + 86_400))))


def refusal(cron, tz, lo):
    node = TransformNode(name="n_dst", sql="select 1", schedule=cron, timezone=tz,
                         start=dt.datetime.fromtimestamp(lo, dt.UTC))
    try:
        partitions_def_for(node)
    except PartitionsError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("cron,tz", CASES)
def test_intervals_equal_dagster_windows_or_adapter_refuses(cron, tz):
    schedule = Schedule(cron, tz)
    fmt = partition_format(schedule)
    spans = {span_around(schedule, t) for y in ZONE_YEARS[tz] for t in offset_changes(tz, y)}
    for lo, hi in sorted(spans):
        mine = ours(cron, tz, lo, hi)
        assert all(a < b for a, b in mine), "our grid must be strictly increasing"
        assert all(x[1] == y[0] for x, y in zip(mine, mine[1:]))
        try:
            windows = dagster_windows(cron, tz, lo, hi)
            reason = why_not_a_grid(cron, tz, windows, fmt)
        except Exception as exc:  # Dagster's internal checks fail on some grids
            windows, reason = None, f"Dagster fails: {type(exc).__name__}"
        near = dt.datetime.fromtimestamp(lo, zone_of(tz))
        if reason is None:
            theirs = [(round(a.timestamp()), round(b.timestamp())) for a, b in windows]
            assert mine == theirs, f"{cron!r} in {tz} differs from Dagster after {near}"
            continue
        message = refusal(cron, tz, lo)
        assert message, f"{cron!r} in {tz} after {near}: {reason}, yet the adapter accepts it"
        assert "\n" not in message and "node 'n_dst'" in message and tz in message


# The 2024 ranges the suite has always compared, whole (not only around offset changes).
# Lord Howe shifts by 30 minutes; for crons that fire every hour Dagster reads minutes in
# local or UTC time by the zone's offset *today* (has_nonzero_minute_offset), and the
# adapter refuses them (test_refusals_are_the_ones_the_issue_names).
RANGES = [(dt.datetime(2024, 2, 20), dt.datetime(2024, 4, 15)),
          (dt.datetime(2024, 9, 25), dt.datetime(2024, 11, 15))]
LONG_RANGE = [(dt.datetime(2019, 12, 1), dt.datetime(2026, 1, 1))]
RANGE_CASES = [(c, z) for c in CRONS[:24]
               for z in ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu"]
               if not (z == "Australia/Lord_Howe" and c in ("0 * * * *", "30 * * * *"))]


@pytest.mark.parametrize("cron,tz", RANGE_CASES)
def test_intervals_equal_dagster_windows_over_2024(cron, tz):
    ranges = LONG_RANGE if cron in ("0 0 1 1 *", "0 0 1 * *", "45 1 15 * *") else RANGES
    zone = ZoneInfo(tz)
    for start, end in ranges:
        lo, hi = start.replace(tzinfo=zone).timestamp(), end.replace(tzinfo=zone).timestamp()
        theirs = [(a.timestamp(), b.timestamp()) for a, b in dagster_windows(cron, tz, lo, hi)]
        calc = create_interval_calculator(cron, tz)
        mine = [(i.start.timestamp(), i.end.timestamp()) for i in calc.get_intervals(start, end)]
        # ours also holds the interval that straddles `start`; Dagster's begin at a tick >= start
        mine = [w for w in mine if w[0] >= theirs[0][0]]
        assert mine == theirs, f"{cron!r} in {tz} differs from Dagster"


def test_refusals_are_the_ones_the_issue_names():
    """Casablanca 2024-04-14 '30 2' (Dagster labels 02:00, skipped), Lord Howe hourly, and a
    midnight gap's skipped 00:30 are refused; Santiago's 23:45 and daily midnight load."""
    at = lambda *a: dt.datetime(*a, tzinfo=dt.UTC).timestamp()
    assert "does not exist" in refusal("30 2 * * *", "Africa/Casablanca", at(2024, 4, 10))
    assert refusal("0 * * * *", "Australia/Lord_Howe", at(2024, 3, 1))
    assert "'2022-09-11-00:30'" in refusal("30 0 * * *", "America/Santiago", at(2022, 9, 1))
    assert refusal("0 * * * *", "Asia/Kathmandu", at(1985, 12, 1))  # the 15 minutes of 1986
    assert refusal("0 0 * * *", "Pacific/Apia", at(2011, 12, 1))  # a day that does not exist
    for cron, tz in [("45 23 * * *", "America/Santiago"), ("0 0 * * *", "America/Santiago"),
                     ("30 2 * * *", "Antarctica/Troll"), ("0 * * * *", "Asia/Kathmandu")]:
        assert refusal(cron, tz, at(2022, 1, 1)) is None, (cron, tz)


@pytest.mark.parametrize("cron,tz,day,end", [
    # zones that fall back at midnight repeat 23:xx; Dagster's daily schedules keep the first
    ("45 23 * * *", "America/Santiago", dt.date(2022, 4, 2), "2022-04-02T23:45:00-03:00"),
    ("45 23 * * *", "America/Santiago", dt.date(2024, 4, 6), "2024-04-06T23:45:00-03:00"),
    ("45 23 * * *", "America/Asuncion", dt.date(2024, 3, 23), "2024-03-23T23:45:00-03:00"),
    ("45 23 * * *", "Asia/Beirut", dt.date(2024, 10, 26), "2024-10-26T23:45:00+03:00"),
    ("45 23 * * *", "Africa/Cairo", dt.date(2023, 10, 26), "2023-10-26T23:45:00+03:00"),
    ("45 23 * * 6", "America/Santiago", dt.date(2022, 4, 2), "2022-04-02T23:45:00-03:00"),
    # its generic (croniter) path takes the later one, as in hours 1-3
    ("45 11,23 * * *", "America/Santiago", dt.date(2022, 4, 2), "2022-04-02T23:45:00-04:00"),
    ("30 1 * * *", "America/New_York", dt.date(2024, 11, 3), "2024-11-03T01:30:00-05:00"),
    # a skipped wall time outside hours 1-3 is read with the offset before the change
    ("30 0 * * *", "America/Santiago", dt.date(2022, 9, 11), "2022-09-11T01:30:00-03:00"),
    # in hours 1-3 it moves to the hour's start plus the zone's DST amount
    ("30 2 * * *", "America/New_York", dt.date(2024, 3, 10), "2024-03-10T03:00:00-04:00"),
    ("30 2 * * *", "Antarctica/Troll", dt.date(2024, 3, 31), "2024-03-31T04:00:00+02:00"),
    # ... and where that does not exist either (refused in Dagster), to the end of the gap
    ("30 2 * * *", "Africa/Casablanca", dt.date(2024, 4, 14), "2024-04-14T03:00:00+01:00"),
])
def test_dst_resolution_regressions(cron, tz, day, end):
    calc = create_interval_calculator(cron, tz)
    intervals = calc.get_intervals(day - dt.timedelta(days=1), day + dt.timedelta(days=1))
    ends = [i.end.astimezone(ZoneInfo(tz)).isoformat() for i in intervals]
    assert end in ends, ends


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
    zone = ZoneInfo(tz)
    lo = dt.datetime.combine(day, dt.time(), zone).timestamp()
    hi = dt.datetime.combine(nxt, dt.time(), zone).timestamp()
    assert len(dagster_windows("0 * * * *", tz, lo, hi)) == expected
