"""A schedule's grid in integers: its intervals, what a set of them leaves uncovered, runs, batches.

The one home of these computations, for the planner (``runner/``), the CLI's rendering and
``IntervalCalculator`` (the datetime edge, ``intervals.py``).  Everything here is epoch
seconds (``Pair``) and pure: no datetimes, no I/O, so the cost follows runs and gaps, and a
run of grid intervals is listed one by one only where a caller iterates ``expand``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain

from .schedule import Schedule

#: the core's one integer interval: ``(start, end)`` epoch seconds, half-open.  Every
#: interval planned, executed, shown or handed to an engine or Dagster lies on a schedule
#: grid, whose ticks are whole seconds; datetimes are built only at the edges.
Pair = tuple[int, int]

US_PER_S = 1_000_000
#: seconds of grid listed at a time when a schedule has no fixed period (a year of hours)
_CHUNK = 366 * 86_400


def pairs(ticks: Sequence[int]) -> list[Pair]:
    """Consecutive ticks as the grid intervals between them."""
    return list(zip(ticks, ticks[1:]))


def _inner_ticks(schedule: Schedule, start: int, end: int) -> Iterable[int]:
    """The ticks strictly inside (start, end): arithmetic on a fixed period from a tick, else
    listed a year at a time (never all at once)."""
    period = schedule.period
    if period is not None and schedule.is_tick(start):
        return range(start + period, end, period)
    return chain.from_iterable(schedule.ticks(lo, min(lo + _CHUNK - 1, end - 1))
                               for lo in range(start + 1, end, _CHUNK))


def expand(schedule: Schedule, start: int, end: int) -> Iterator[Pair]:
    """The grid intervals making up the run [start, end), one by one (a run off the grid, from
    an older definition, is cut at the ticks inside it)."""
    if end <= start:
        return
    previous = start
    for t in _inner_ticks(schedule, start, end):
        yield previous, t
        previous = t
    yield previous, end


def count(schedule: Schedule, start: int, end: int) -> int:
    """``len(list(expand(schedule, start, end)))``, by arithmetic on a fixed period."""
    if end <= start:
        return 0
    inner = _inner_ticks(schedule, start, end)
    return 1 + (len(inner) if isinstance(inner, range) else sum(1 for _ in inner))


def covering(schedule: Schedule, lo: int, hi: int) -> Pair | None:
    """The ticks bounding every grid interval that overlaps [lo, hi), or None if hi <= lo."""
    if hi <= lo:
        return None
    return schedule.tick_at_or_before(lo), schedule.tick_at_or_after(hi)


def uncovered(schedule: Schedule, done: tuple[Sequence[int], Sequence[int]], lo: int, hi: int,
              ticks: Sequence[int] | None = None) -> list[Pair]:
    """Runs of the grid intervals between the ticks ``lo`` and ``hi`` that no member of
    ``done`` covers whole.  ``done`` is (starts, ends) in microseconds, sorted, disjoint and
    not touching (``IntervalSet.micros()``).  Such an interval overlaps a gap of ``done``, so
    each gap gives the run of grid intervals around it: the work follows the gaps, not the
    grid.  ``ticks``, the grid from ``lo`` to ``hi`` when the caller has listed it, places
    the gaps by bisection instead of asking the schedule."""
    if hi <= lo:
        return []
    if ticks is not None:
        floor = lambda t: ticks[bisect_right(ticks, t) - 1]
        ceil = lambda t: ticks[bisect_left(ticks, t)]
    else:
        floor, ceil = schedule.tick_at_or_before, schedule.tick_at_or_after
    starts, ends = done
    lo_us, hi_us = lo * US_PER_S, hi * US_PER_S
    first = bisect_right(ends, lo_us)  # members ending after lo
    last = bisect_left(starts, hi_us, first)  # members starting before hi
    cursor = lo_us
    out: list[Pair] = []
    # each gap [cursor, s): the intervals holding its first and last instants, fused with the
    # previous run when two gaps fall in one interval or in neighbours
    for s, e in chain(zip(starts[first:last], ends[first:last]), ((hi_us, hi_us),)):
        if s > cursor:
            a = max(lo, floor(cursor // US_PER_S))
            b = min(hi, ceil(-(-s // US_PER_S)))
            if out and out[-1][1] >= a:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
        cursor = e
    return out


def fuse(items: Iterable[Pair]) -> list[Pair]:
    """Sorted, with overlapping and touching pairs fused: the runs of a set of intervals."""
    out: list[Pair] = []
    for a, b in sorted(items):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def batches(items: Iterable[Pair], size: int | None = None) -> Iterator[list[Pair]]:
    """Sorted grid intervals in contiguous groups of at most ``size`` (a group never spans a gap)."""
    batch: list[Pair] = []
    for pair in items:
        if batch and (batch[-1][1] != pair[0] or (size is not None and len(batch) == size)):
            yield batch
            batch = []
        batch.append(pair)
    if batch:
        yield batch
