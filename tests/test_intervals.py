"""Interval, IntervalSet, Schedule and IntervalCalculator: the documented behaviour."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from seeknal_core import (
    Interval,
    IntervalCalculator,
    IntervalSet,
    Schedule,
    create_interval_calculator,
)

UTC = dt.UTC
D = lambda *a: dt.datetime(*a, tzinfo=UTC)  # noqa: E731


# -- the seed documents' examples --------------------------------------------------------
def test_tutorial_missing_intervals_example():
    missing = IntervalCalculator().get_missing_intervals(
        completed_intervals=[(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 3)),
                             (dt.datetime(2024, 1, 5), dt.datetime(2024, 1, 7))],
        start_date=dt.datetime(2024, 1, 1), end_date=dt.datetime(2024, 1, 7), schedule="@daily",
    )
    assert missing == [Interval(D(2024, 1, 3), D(2024, 1, 4)), Interval(D(2024, 1, 4), D(2024, 1, 5))]


def test_guide_pending_example_includes_interval_starting_at_start():
    pending = create_interval_calculator("@daily").get_pending_intervals(
        completed_intervals=[], start=dt.datetime(2024, 1, 1), end=dt.datetime(2024, 1, 31)
    )
    assert len(pending) == 30
    assert pending[0].start == D(2024, 1, 1)
    assert pending[-1].end == D(2024, 1, 31)


# -- Interval ----------------------------------------------------------------------------------
def test_interval_is_an_immutable_utc_pair():
    iv = Interval("2024-01-01T00:00:00+02:00", dt.datetime(2024, 1, 2))
    start, end = iv
    assert start == D(2023, 12, 31, 22) and end == D(2024, 1, 2)
    assert start.tzinfo == UTC
    assert iv == (D(2023, 12, 31, 22), D(2024, 1, 2))
    with pytest.raises(AttributeError):
        iv.start = D(2020, 1, 1)
    assert iv.contains(D(2024, 1, 1)) and not iv.contains(D(2024, 1, 2))  # half-open


@pytest.mark.parametrize("start,end", [(D(2024, 1, 2), D(2024, 1, 1)), (D(2024, 1, 1), D(2024, 1, 1))])
def test_interval_rejects_empty_or_reversed(start, end):
    with pytest.raises(ValueError, match="must be before"):
        Interval(start, end)


# -- IntervalSet -------------------------------------------------------------------------------
def test_set_merges_touching_and_overlapping_and_sorts():
    s = IntervalSet([("2024-01-03", "2024-01-04"), Interval(D(2024, 1, 1), D(2024, 1, 2)),
                     (D(2024, 1, 2), D(2024, 1, 3)), ("2024-01-10", "2024-01-12"),
                     ("2024-01-11", "2024-01-11T12:00")])
    assert list(s) == [Interval(D(2024, 1, 1), D(2024, 1, 4)), Interval(D(2024, 1, 10), D(2024, 1, 12))]
    assert len(s) == 2


def test_set_algebra_and_queries():
    a = IntervalSet([("2024-01-01", "2024-01-05")])
    b = IntervalSet([("2024-01-02", "2024-01-03"), ("2024-01-04", "2024-01-08")])
    assert a.union(b) == [("2024-01-01", "2024-01-08")]
    assert a.difference(b) == [("2024-01-01", "2024-01-02"), ("2024-01-03", "2024-01-04")]
    assert a.intersection(b) == [("2024-01-02", "2024-01-03"), ("2024-01-04", "2024-01-05")]
    assert a.contains(D(2024, 1, 4, 23)) and not a.contains(D(2024, 1, 5))
    assert a.contains(("2024-01-02", "2024-01-05")) and not a.contains(("2024-01-04", "2024-01-06"))
    assert b.gaps(("2024-01-01", "2024-01-10")) == [
        ("2024-01-01", "2024-01-02"), ("2024-01-03", "2024-01-04"), ("2024-01-08", "2024-01-10")]
    c = IntervalSet()
    c.add(("2024-01-05", "2024-01-06")).add(("2024-01-01", "2024-01-02")).add(("2024-01-02", "2024-01-05"))
    assert c == [("2024-01-01", "2024-01-06")]


def test_set_reads_naive_values_in_its_timezone():
    s = IntervalSet([(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2))], timezone="Asia/Kathmandu")
    assert list(s)[0].start == D(2023, 12, 31, 18, 15)


# -- Schedule -----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset,cron", [("@hourly", "0 * * * *"), ("daily", "0 0 * * *"),
                                         ("@WEEKLY", "0 0 * * 0"), ("Monthly", "0 0 1 * *"),
                                         ("@yearly", "0 0 1 1 *"), ("annually", "0 0 1 1 *")])
def test_presets_in_any_spelling(preset, cron):
    assert Schedule(preset).cron == cron


@pytest.mark.parametrize("expr,tz,message", [
    ("0 25 * * *", "UTC", "invalid cron '0 25 \\* \\* \\*'"),
    ("* * * *", "UTC", "expected 5 fields"),
    ("0 0 30 2 *", "UTC", "never fires"),
    ("@fortnightly", "UTC", "unknown schedule preset '@fortnightly'"),
    ("@daily", "Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
])
def test_schedule_errors_name_the_input(expr, tz, message):
    with pytest.raises(ValueError, match=message):
        Schedule(expr, tz)


# -- IntervalCalculator ---------------------------------------------------------------------------
def test_range_selects_whole_overlapping_intervals():
    calc = create_interval_calculator("@daily")
    got = calc.get_intervals(D(2024, 1, 1, 12), D(2024, 1, 3, 1))
    assert got == [Interval(D(2024, 1, d), D(2024, 1, d + 1)) for d in (1, 2, 3)]


def test_start_after_end_raises_and_equal_yields_nothing():
    calc = create_interval_calculator("@daily")
    with pytest.raises(ValueError, match="after end"):
        calc.get_pending_intervals([], "2024-01-05", "2024-01-01")
    assert calc.get_pending_intervals([], "2024-01-05", "2024-01-05") == []


def test_pending_is_one_entry_per_period_and_partial_cover_is_pending():
    calc = create_interval_calculator("@hourly")
    done = [(D(2024, 1, 1, 0), D(2024, 1, 1, 2)), (D(2024, 1, 1, 3), D(2024, 1, 1, 3, 30))]
    pending = calc.get_pending_intervals(done, D(2024, 1, 1), D(2024, 1, 1, 6))
    assert [p.start.hour for p in pending] == [2, 3, 4, 5]


def test_inputs_may_be_dates_strings_and_naive_datetimes_in_schedule_zone():
    calc = create_interval_calculator("@daily", "America/New_York")
    a = calc.get_intervals(dt.date(2024, 1, 1), "2024-01-03")
    b = calc.get_intervals(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 3))
    assert a == b and len(a) == 2
    assert a[0].start == D(2024, 1, 1, 5)


def test_navigation_helpers():
    calc = create_interval_calculator("0 */6 * * *")
    assert calc.interval_containing(D(2024, 1, 1, 7)) == Interval(D(2024, 1, 1, 6), D(2024, 1, 1, 12))
    assert calc.interval_containing(D(2024, 1, 1, 6)) == Interval(D(2024, 1, 1, 6), D(2024, 1, 1, 12))
    assert calc.next_interval(D(2024, 1, 1, 7)) == Interval(D(2024, 1, 1, 12), D(2024, 1, 1, 18))
    assert calc.previous_interval(D(2024, 1, 1, 7)) == Interval(D(2024, 1, 1, 0), D(2024, 1, 1, 6))
    assert calc.last_complete_interval(D(2024, 1, 1, 12)) == Interval(D(2024, 1, 1, 6), D(2024, 1, 1, 12))


def test_weekly_and_monthly_in_a_zone_with_dst():
    ny = ZoneInfo("America/New_York")
    weekly = create_interval_calculator("0 2 * * 0", "America/New_York")
    weeks = weekly.get_intervals(dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 31))
    # the spring-forward Sunday has no 02:00: Dagster (and we) fire at 03:00
    assert [w.start.astimezone(ny).strftime("%m-%d %H:%M") for w in weeks] == [
        "02-25 02:00", "03-03 02:00", "03-10 03:00", "03-17 02:00", "03-24 02:00"]
    monthly = create_interval_calculator("@monthly", "Europe/Berlin")
    months = monthly.get_intervals("2024-01-01", "2025-01-01")
    assert len(months) == 12 and all(a.end == b.start for a, b in zip(months, months[1:]))


def test_calendar_schedule_over_a_long_range_is_exact():
    calc = create_interval_calculator("@daily", "Europe/Berlin")
    days = calc.get_intervals(dt.date(2000, 1, 1), dt.date(2030, 1, 1))
    assert len(days) == (dt.date(2030, 1, 1) - dt.date(2000, 1, 1)).days
    berlin = ZoneInfo("Europe/Berlin")
    assert all(d.start.astimezone(berlin).hour == 0 for d in days)
