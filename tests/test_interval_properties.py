"""Property-based laws of the interval algebra and of pending computation."""

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from seeknal_core import IntervalSet, create_interval_calculator

UTC = dt.UTC
BASE = dt.datetime(2024, 1, 1, tzinfo=UTC)


def _iv(a, b):
    return (BASE + dt.timedelta(minutes=a), BASE + dt.timedelta(minutes=b))


pairs = st.tuples(st.integers(0, 2000), st.integers(1, 300)).map(lambda p: _iv(p[0], p[0] + p[1]))
sets = st.lists(pairs, max_size=25).map(IntervalSet)
minutes = st.integers(0, 2400).map(lambda m: BASE + dt.timedelta(minutes=m))


def _covered(s: IntervalSet, t) -> bool:
    return any(i.start <= t < i.end for i in s)


@given(sets)
def test_members_sorted_disjoint_and_not_touching(s):
    members = list(s)
    assert all(a.end < b.start for a, b in zip(members, members[1:]))
    assert IntervalSet(members) == s  # merging is idempotent
    assert s.union(s) == s and s.intersection(s) == s and not s.difference(s)


@given(sets, sets, minutes)
def test_operations_agree_with_pointwise_membership(a, b, t):
    assert a.contains(t) == _covered(a, t)
    assert a.union(b).contains(t) == (a.contains(t) or b.contains(t))
    assert a.intersection(b).contains(t) == (a.contains(t) and b.contains(t))
    assert a.difference(b).contains(t) == (a.contains(t) and not b.contains(t))


@given(sets, sets, sets)
def test_algebraic_laws(a, b, c):
    assert a.union(b) == b.union(a)
    assert a.intersection(b) == b.intersection(a)
    assert a.union(b).union(c) == a.union(b.union(c))
    assert a.intersection(b.union(c)) == a.intersection(b).union(a.intersection(c))
    assert a.difference(b).union(a.intersection(b)) == a
    assert not a.difference(b).intersection(b)


@given(sets, pairs)
def test_add_equals_union(s, p):
    expected = s.union([p])
    s.add(p)
    assert s == expected


@settings(max_examples=60)
@given(st.sampled_from(["@hourly", "*/15 * * * *", "0 */6 * * *", "30 2 * * *"]),
       st.sampled_from(["UTC", "America/New_York", "Europe/Berlin"]),
       sets, st.integers(0, 60 * 24 * 3), st.integers(0, 60 * 24 * 3))
def test_pending_plus_completed_covers_the_grid_exactly(cron, tz, done, a, b):
    start, end = BASE + dt.timedelta(minutes=min(a, b)), BASE + dt.timedelta(minutes=max(a, b))
    calc = create_interval_calculator(cron, tz)
    grid = calc.get_intervals(start, end)
    pending = calc.get_pending_intervals(done, start, end)
    assert len(set(pending)) == len(pending)  # no interval twice
    assert set(pending) <= set(grid)
    for interval in grid:
        assert (interval in pending) != done.contains(interval)
    assert all(a.end == b.start for a, b in zip(grid, grid[1:]))  # the grid has no gap


_shapes = st.sampled_from(["as is", "other zone", "fold", "1us early", "1us late", "longer"])


@settings(max_examples=80)
@given(st.sampled_from(["@hourly", "*/15 * * * *", "0 */6 * * *", "0 0 * * *"]),
       st.sampled_from(["UTC", "America/New_York", "Australia/Lord_Howe"]),
       st.lists(st.tuples(st.integers(0, 400), _shapes), max_size=60), st.booleans(),
       st.integers(0, 60 * 24 * 40), st.integers(1, 60 * 24 * 20))
def test_datetime_tuples_give_what_the_exact_set_gives(cron, tz, picks, shuffle, a, span):
    """Completed (start, end) tuples are placed on the grid by comparing datetimes; the result
    must equal the one from the same members as an exact ``IntervalSet``, whatever their order,
    zone or fold, and for bounds a microsecond off a tick."""
    from random import Random
    from zoneinfo import ZoneInfo

    zone = UTC if tz == "UTC" else ZoneInfo(tz)
    start = dt.datetime(2024, 3, 1, tzinfo=UTC) + dt.timedelta(minutes=a)
    end = start + dt.timedelta(minutes=span)
    calc = create_interval_calculator(cron, tz)
    grid = calc.get_intervals(start, end)
    members = []
    for index, shape in picks:
        if not grid:
            break
        s, e = grid[index % len(grid)]
        if shape == "other zone":
            s, e = s.astimezone(zone), e.astimezone(zone)
        elif shape == "fold":
            s = s.astimezone(zone).replace(fold=1)
        elif shape == "1us early":
            s -= dt.timedelta(microseconds=1)
        elif shape == "1us late":
            s += dt.timedelta(microseconds=1)
        elif shape == "longer":
            e += dt.timedelta(hours=index % 30 + 1)
        members.append((s, e))
    if shuffle:
        Random(len(members)).shuffle(members)
    expected = calc.get_pending_intervals(IntervalSet(members), start, end)
    assert calc.get_pending_intervals(members, start, end) == expected
    assert calc.get_pending_intervals(iter(members), start, end) == expected
