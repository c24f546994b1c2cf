"""A node's schedule as a Dagster ``TimeWindowPartitionsDefinition``, and keys <-> intervals.

Dagster and seeknal must agree on every window, or a partition Dagster reports as
materialized would not be the interval seeknal completed.  Both follow the same cron
rules, so the factory builds the definition from the node's schedule and then checks it
against seeknal's grid on a sample (the first windows, the last ones before now, and
those around each kind of UTC-offset change from the start to 400 days after now),
reading windows through partition keys, which is the path Dagster's runs take.  A definition
whose windows disagree, or whose keys label a wall time that does not exist (Dagster leaves
a skipped 00:30 as is), is refused with a message naming the node and the fix.

Key format: ``%Y-%m-%d`` when every tick is at local midnight, ``%Y-%m-%d-%H:%M``
otherwise.  On a fall-back night Dagster itself appends the UTC offset to the second
instance of a repeated wall time for crons whose hour field is ``*`` (America/New_York
hourly: ``2024-11-03-01:00`` then ``2024-11-03-01:00-0500``), so keys stay unique; if
a format ever did collide, the factory retries with ``%z`` appended.

Translation goes through Dagster's own key parsing and formatting, never by hand.
"""

from __future__ import annotations

import datetime as dt
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from functools import lru_cache

from dagster import TimeWindow, TimeWindowPartitionsDefinition

from seeknal_core import grid
from seeknal_core.errors import SeeknalError
from seeknal_core.intervals import Interval, IntervalSet
from seeknal_core.project import TransformNode
from seeknal_core.schedule import Schedule
from seeknal_core.timeutil import EPOCH, UTC, TimeLike, format_local, get_zone, to_utc

__all__ = [
    "PartitionsError",
    "check_partitions_def",
    "interval_for_key",
    "interval_for_time_window",
    "keys_for_intervals",
    "partition_format",
    "partitioned",
    "partitions_def_for",
]

DATE_FMT = "%Y-%m-%d"
MINUTE_FMT = "%Y-%m-%d-%H:%M"
_HORIZON_S = 400 * 86_400  # how far around the start and "now" offset changes are sampled
_US = dt.timedelta(microseconds=1)
_SECOND = dt.timedelta(seconds=1)


class PartitionsError(SeeknalError, ValueError):
    """A schedule that cannot be expressed as Dagster partitions, or a key/interval that is no partition."""


_lock = threading.Lock()
_defs: dict[tuple[str, str, int], TimeWindowPartitionsDefinition] = {}
_checked: dict[TimeWindowPartitionsDefinition, Schedule] = {}


# --------------------------------------------------------------------------------------
# The factory
# --------------------------------------------------------------------------------------
def partition_format(schedule: Schedule) -> str:
    """The key format: dates alone when every tick is at local midnight (daily or coarser)."""
    return DATE_FMT if schedule.midnight_aligned else MINUTE_FMT


def partitioned(node: TransformNode) -> bool:
    """Whether the node's asset has time partitions: scheduled, incremental and with a
    start.  A scheduled node without ``start:`` has no first window to draw: its asset is
    unpartitioned, and materialising it runs what is due, as ``seeknal run NODE`` does
    (inferring and recording its start on the first run)."""
    return node.is_incremental and node.start is not None


def partitions_def_for(
    node_or_schedule: TransformNode | Schedule, start: TimeLike | None = None, end: TimeLike | None = None
) -> TimeWindowPartitionsDefinition:
    """The validated partitions definition of a node (or of a schedule, ``start`` and ``end``).

    ``start``/``end`` override the node's (its own or the project's `start:`/`end:`); naive
    values are read in the schedule's timezone.  The first partition begins at the first
    tick at or after ``start``; the last one ends at the last tick at or before ``end``
    (exclusive, as the planner's bound), so no partition reaches past it.  One object is
    shared per (cron, timezone, first tick, last tick), so Dagster sees one definition, and
    later one schedule, per distinct grid.
    """
    if isinstance(node_or_schedule, Schedule):
        schedule, label = node_or_schedule, ""
        if start is None:
            raise PartitionsError(
                f"schedule '{schedule.expression}' in {schedule.timezone} has no start: pass start=... "
                "(the first partition begins at the first tick at or after it)"
            )
    else:
        name = getattr(node_or_schedule, "name", None) or repr(node_or_schedule)  # repr only if no name
        label = f"node '{name}'"
        schedule = getattr(node_or_schedule, "schedule", None)
        if schedule is None:
            raise PartitionsError(
                f"{label} has no schedule, so it has no time partitions: set `schedule:` in the node "
                "(e.g. '@daily') or leave its asset unpartitioned"
            )
        start = start if start is not None else getattr(node_or_schedule, "start", None)
        end = end if end is not None else getattr(node_or_schedule, "end", None)
        if start is None:
            raise PartitionsError(
                f"{label} has no start, so its partitions have no first window: set `start:` in the "
                "node or in seeknal_project.yml (e.g. start: 2024-01-01)"
            )
    zone = get_zone(schedule.timezone)
    first = schedule.tick_at_or_after(_ceil_seconds(to_utc(start, zone)))
    last = None if end is None else schedule.tick_at_or_before((to_utc(end, zone) - EPOCH) // _SECOND)
    key = (schedule.cron, schedule.timezone, first, last)
    with _lock:
        cached = _defs.get(key)
        if cached is not None:
            return cached
        pdef = _build(schedule, first, last, label)
        _defs[key] = pdef
        _checked[pdef] = schedule
        return pdef


def _build(schedule: Schedule, first: int, last: int | None, label: str) -> TimeWindowPartitionsDefinition:
    """Build and check (Dagster suffixes a repeated wall time's key with its offset itself,
    so keys of one format never collide; the check says so if a version stops doing it)."""
    # a naive wall time keeps fold=1 (the later of two equal wall times) and Dagster's
    # start.replace(tzinfo=...) preserves it, so a start on a fall-back night is exact
    wall = lambda t: dt.datetime.fromtimestamp(t, get_zone(schedule.timezone)).replace(tzinfo=None)
    pdef = TimeWindowPartitionsDefinition(
        cron_schedule=schedule.cron, timezone=schedule.timezone, start=wall(first),
        end=None if last is None else wall(last), fmt=partition_format(schedule), end_offset=0,
    )
    check_partitions_def(pdef, schedule, label=label)
    return pdef


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------
def check_partitions_def(
    pdef: TimeWindowPartitionsDefinition,
    schedule: Schedule | None = None,
    *,
    label: str | None = None,
    now: TimeLike | None = None,
) -> None:
    """Raise ``PartitionsError`` unless Dagster's windows equal seeknal's intervals on a sample.

    Windows are read as Dagster reads them: the keys Dagster lists in a span, each key's
    window for a key set (a backfill) and, for the windows nearest an offset change, for a
    single key (a run), since those paths can disagree.  Keys must be distinct and every
    window must be the schedule's interval.  Fine crons make Dagster slow per single key,
    so those lookups are limited to a few per span.
    """
    schedule = schedule or Schedule(pdef.cron_schedule, pdef.timezone)
    what = f"schedule '{schedule.expression}' in {schedule.timezone}"
    what = f"{label} ({what})" if label else what
    if pdef.exclusions:
        raise PartitionsError(f"{what}: partitions with exclusions have no seeknal equivalent; drop them")
    now_s = int(to_utc(now if now is not None else dt.datetime.now(UTC)).timestamp())
    limit = None if pdef.end_timestamp is None else schedule.tick_at_or_before(int(pdef.end_timestamp))
    if limit is not None:
        now_s = min(now_s, limit)  # an `end:` bound: no window past it is compared
    for lo, hi, focus in _sample_spans(schedule, round(pdef.start_timestamp), now_s):
        hi = hi if limit is None else min(hi, limit)
        if lo < hi:
            _check_span(pdef, schedule, lo, hi, focus, what)


def _sample_spans(schedule: Schedule, first: int, now: int) -> list[tuple[int, int, int]]:
    """Tick-aligned spans (lo, hi, instant of interest) worth comparing: the first windows,
    the last ones before now, and every UTC-offset change (two windows either side) from
    the first window to 400 days after now.  Changes that look alike to Dagster (same
    offsets, DST amounts, time of day and ticks around them) are compared once, so a long
    range costs a few Dagster queries per distinct kind of change, not one per change."""
    s = schedule
    spans = [(first, s.tick_after(s.tick_after(s.tick_after(first))), first)]
    last = s.tick_at_or_before(now)
    if last > first:
        spans.append((max(first, s.tick_before(s.tick_before(s.tick_before(last)))), last, last))
    zone = get_zone(schedule.timezone)
    if zone is UTC:
        return spans
    seen = set()
    for t, shape in _offset_changes(schedule.timezone, first, max(now, first) + _HORIZON_S):
        shift = abs(shape[1] - shape[0])
        # one expansion of the days around serves fine crons; coarse ones walk tick by tick
        around = s.ticks(t - shift - 3 * 86_400, t + shift + 3 * 86_400)
        i, j = bisect_right(around, t - shift) - 1, bisect_left(around, t + shift)
        if i >= 2 and j + 2 < len(around):
            lo, hi = around[i - 2], around[j + 2]
        else:
            lo = s.tick_before(s.tick_before(s.tick_at_or_before(t - shift)))
            hi = s.tick_after(s.tick_after(s.tick_at_or_after(t + shift)))
            around = s.ticks(lo, hi)
        if hi <= first:
            continue
        lo = max(lo, first)
        key = (shape, tuple(x - t for x in around if lo <= x <= hi))
        if key not in seen:
            seen.add(key)
            spans.append((lo, hi, t))
    return spans


def _offset_changes(timezone: str, lo: int, hi: int) -> list[tuple[int, tuple]]:
    """(instant, shape) of each UTC-offset change in (lo, hi]; the shape is what Dagster's
    wall-clock rules see: offsets and DST amounts either side and the instant's UTC time of day."""
    years = range(dt.datetime.fromtimestamp(lo, UTC).year, dt.datetime.fromtimestamp(hi, UTC).year + 1)
    return [c for y in years for c in _changes_in_year(timezone, y) if lo < c[0] <= hi]


@lru_cache(maxsize=1024)
def _changes_in_year(timezone: str, year: int) -> tuple[tuple[int, tuple], ...]:
    """The offset changes of one UTC year: a daily scan, then bisection."""
    zone = get_zone(timezone)
    local = lambda t: dt.datetime.fromtimestamp(t, zone)
    offset = lambda t: local(t).utcoffset()
    t = int(dt.datetime(year, 1, 1, tzinfo=UTC).timestamp())
    hi = int(dt.datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    out = []
    before = offset(t)
    while t < hi:
        n = min(t + 86_400, hi)
        after = offset(n)
        if after != before:
            a, b = t, n
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if offset(mid) == before else (a, mid)
            seconds = lambda d: int(d.total_seconds()) if d is not None else 0
            shape = (seconds(offset(a)), seconds(offset(b)), seconds(local(a).dst()), seconds(local(b).dst()),
                     b % 86_400)
            out.append((b, shape))
        t, before = n, after
    return tuple(out)


def _check_span(
    pdef: TimeWindowPartitionsDefinition, schedule: Schedule, lo: int, hi: int, focus: int, what: str
) -> None:
    zone = get_zone(schedule.timezone)
    ticks = schedule.ticks(lo, hi)
    ours = grid.pairs(ticks)
    pair = lambda w: (round(w.start.timestamp()), round(w.end.timestamp()))
    try:
        keys = list(pdef.get_partition_keys_in_time_window(TimeWindow(_aware(lo), _aware(hi))))
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise PartitionsError(
                f"{what}: two partitions share the key {dup!r} (format {pdef.fmt!r}), so Dagster "
                f"cannot tell them apart; {_fix(schedule)}"
            )
        windows = pdef.time_windows_for_partition_keys(frozenset(keys), validate=False)
        batch, starts = [pair(w) for w in windows], [w.start for w in windows]
        near = min(range(len(ours)), key=lambda i: abs(ours[i][0] - focus)) if ours else 0
        spots = sorted({0, len(keys) - 1, *range(near - 2, near + 3)} & set(range(len(keys))))
        single = {i: pair(pdef.time_window_for_partition_key(keys[i])) for i in spots}
    except PartitionsError:
        raise
    except Exception as exc:  # Dagster raises internal check errors on some grids
        raise PartitionsError(
            f"{what}: Dagster fails to compute its partitions near {format_local(_aware(focus), zone)} "
            f"({type(exc).__name__}: {exc or 'no message'}); {_fix(schedule)}"
        ) from None
    for key, start in zip(keys, starts):
        real = dt.datetime.fromtimestamp(start.timestamp(), zone)
        if start.strftime(pdef.fmt) != real.strftime(pdef.fmt):
            raise PartitionsError(
                f"{what}: Dagster labels the partition {key!r} with a wall time that does not exist in "
                f"{schedule.timezone} (its window starts at {format_local(real, zone)}); {_fix(schedule)}"
            )
    theirs = [single.get(i, w) for i, w in enumerate(batch)]
    if theirs != ours:
        i = next((i for i, (x, y) in enumerate(zip(theirs, ours)) if x != y), min(len(theirs), len(ours)))
        show = lambda w: (
            f"[{format_local(_aware(w[0]), zone)}, {format_local(_aware(w[1]), zone)})" if w else "nothing"
        )
        key = f" for key {keys[i]!r}" if i < len(keys) else ""
        raise PartitionsError(
            f"{what}: Dagster's partitions differ from seeknal's intervals: Dagster has "
            f"{show(theirs[i] if i < len(theirs) else None)}{key} where seeknal has "
            f"{show(ours[i] if i < len(ours) else None)}; {_fix(schedule)}"
        )


def _fix(schedule: Schedule) -> str:
    """What to change, naming the known cause when the zone shifts by a non-whole hour."""
    zone = get_zone(schedule.timezone)
    now = int(dt.datetime.now(UTC).timestamp())
    minutes = {
        dt.datetime.fromtimestamp(now + d * 86_400, zone).utcoffset() % dt.timedelta(hours=1)
        for d in range(0, 366, 15)
    }
    if len(minutes) > 1 and schedule.cron.split(" ")[1] == "*":
        return (
            f"Dagster's windows for crons that fire every hour do not follow {schedule.timezone}'s "
            "wall clock across its half-hour offset change (it reads minutes in UTC or local time "
            "depending on today's offset); set the node's `timezone:` to a zone with whole-hour "
            "changes (e.g. UTC or Australia/Sydney), or use a schedule whose minutes repeat every "
            "30 minutes ('*/30 * * * *') or that does not fire every hour ('@daily')"
        )
    if zone is UTC:
        return "choose another `schedule:` for the node"
    return "choose another `schedule:` for the node, or another `timezone:` (e.g. UTC)"


# --------------------------------------------------------------------------------------
# Translation
# --------------------------------------------------------------------------------------
def interval_for_time_window(window: TimeWindow) -> Interval:
    """A Dagster window (``context.partition_time_window``, a key or a range) as a UTC interval."""
    return Interval(window.start, window.end)


def interval_for_key(pdef: TimeWindowPartitionsDefinition, key: str) -> Interval:
    """The interval of one existing partition key; ``PartitionsError`` naming the nearest valid key."""
    _schedule_of(pdef)
    _require_key(pdef, key)
    return interval_for_time_window(pdef.time_window_for_partition_key(key))


def keys_for_intervals(pdef: TimeWindowPartitionsDefinition, intervals: Iterable[object]) -> list[str]:
    """Keys of every partition whose window the intervals cover entirely, ascending.

    These are the partitions to report as materialized.  The intervals are merged first,
    so the cost follows the number of contiguous runs (one Dagster query each), not the
    number of intervals; windows outside the definition's partitions are left out.
    """
    schedule = _schedule_of(pdef)
    done = intervals if isinstance(intervals, IntervalSet) else IntervalSet(intervals)
    first_w, last_w = pdef.get_first_partition_window(), pdef.get_last_partition_window()
    if not done or first_w is None or last_w is None:
        return []
    done = done & IntervalSet([(first_w.start, last_w.end)])
    if not done:
        return []
    # each member is snapped inwards to ticks (keeping Dagster's iteration on its grid),
    # by bisection in one grid over all members unless that grid would be far larger
    bounds = [(_ceil_seconds(m.start), (m.end - EPOCH) // dt.timedelta(seconds=1)) for m in done]
    lo, hi = bounds[0][0], bounds[-1][1]
    per_day = len(schedule.ticks(lo, lo + 86_400)) + 1
    if (hi - lo) / 86_400 * per_day <= 100_000 + 64 * len(bounds):
        grid = schedule.ticks(lo, hi)
        snapped = [(bisect_left(grid, s), bisect_right(grid, e) - 1) for s, e in bounds]
        spans = [(grid[i], grid[j]) for i, j in snapped if i < j]
    else:
        spans = [(schedule.tick_at_or_after(s), schedule.tick_at_or_before(e)) for s, e in bounds]
    keys: list[str] = []
    for a, b in spans:
        if a < b:
            keys.extend(pdef.get_partition_keys_in_time_window(TimeWindow(_aware(a), _aware(b))))
    return keys


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def _schedule_of(pdef: TimeWindowPartitionsDefinition) -> Schedule:
    """The checked schedule behind a definition; a definition built elsewhere is checked once."""
    schedule = _checked.get(pdef)
    if schedule is None:
        if not isinstance(pdef, TimeWindowPartitionsDefinition):
            raise TypeError(f"expected a TimeWindowPartitionsDefinition, got {type(pdef).__name__}")
        schedule = Schedule(pdef.cron_schedule, pdef.timezone)
        check_partitions_def(pdef, schedule)
        with _lock:
            _checked[pdef] = schedule
    return schedule


def _require_key(pdef: TimeWindowPartitionsDefinition, key: str) -> None:
    """Raise unless ``key`` is the key of an existing partition.

    ``has_partition_key`` alone is not enough: for plain hourly crons Dagster accepts any
    parseable time (``2024-01-01-00:30``, ``2024-03-10-02:00`` that a spring-forward
    night skips), so the key must also be the one Dagster gives the window it maps to.
    """
    if pdef.has_partition_key(key):
        start = pdef.time_window_for_partition_key(key).start.timestamp()
        if pdef.get_partition_key_for_timestamp(start) == key:
            return
    first, last = pdef.get_first_partition_key(), pdef.get_last_partition_key()
    if first is None or last is None:
        raise PartitionsError(
            f"partition key {key!r} does not exist: {_describe(pdef)} has no complete window yet"
        )
    try:
        t = pdef.start_time_for_partition_key(key).timestamp()
    except ValueError:
        raise PartitionsError(
            f"partition key {key!r} does not exist in {_describe(pdef)}: keys look like {first!r} "
            f"(format {pdef.fmt!r}), from {first!r} to {last!r}"
        ) from None
    lo = pdef.start_time_for_partition_key(first).timestamp()
    hi = pdef.start_time_for_partition_key(last).timestamp()
    nearest = pdef.get_partition_key_for_timestamp(min(max(t, lo), hi))
    raise PartitionsError(
        f"partition key {key!r} does not exist in {_describe(pdef)}: the nearest valid key is "
        f"{nearest!r} (keys run from {first!r} to {last!r})"
    )


def _describe(pdef: TimeWindowPartitionsDefinition) -> str:
    return f"partitions '{pdef.cron_schedule}' in {pdef.timezone}"


def _aware(t: int) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=t)


def _ceil_seconds(value: dt.datetime) -> int:
    return -(-((value - EPOCH) // _US) // 1_000_000)
