"""Due work as runs: contiguous ranges of a node's grid intervals, each with why it is due.

The planner works on runs only, so planning a century of hourly intervals costs memory in
proportion to the runs, not the intervals; single intervals are listed only where they are
executed (``Due.batches``) or shown one by one (``Due.items``).  Every run starts and ends
on a tick of the node's schedule.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import ItemsView, Iterable, Iterator, Mapping, ValuesView
from typing import NamedTuple

from .. import grid
from ..schedule import Schedule
from .common import Pair, Reason


class Run(NamedTuple):
    """``count`` grid intervals from ``start`` to ``end`` (epoch seconds), all due for ``reason``."""

    start: int
    end: int
    reason: Reason
    count: int


# -- merging ----------------------------------------------------------------------------------
def merge(schedule: Schedule, runs: Iterable[tuple[int, int, Reason]]) -> list[Run]:
    """Disjoint, sorted runs from overlapping ones: where several cover an interval the
    strongest reason wins (``Reason`` is declared weakest first); touching runs of one reason
    fuse.  This is the only place reasons are weighed against each other."""
    wanted = sorted((a, b, reason) for a, b, reason in runs if a < b)
    disjoint = all(before[1] <= after[0] for before, after in zip(wanted, wanted[1:]))
    pieces: list[tuple[int, int, Reason]] = []
    for a, b, reason in (wanted if disjoint else _strongest(wanted)):
        if pieces and pieces[-1][1] == a and pieces[-1][2] == reason:
            pieces[-1] = (pieces[-1][0], b, reason)
        else:
            pieces.append((a, b, reason))
    return [Run(a, b, reason, grid.count(schedule, a, b)) for a, b, reason in pieces]


def _strongest(runs: list[tuple[int, int, Reason]]) -> Iterator[tuple[int, int, Reason]]:
    """Between consecutive edges of overlapping runs, the strongest reason covering there."""
    reasons = list(Reason)
    edges: dict[int, list[tuple[int, int]]] = {}  # tick -> (reason's rank, +1 a run starts / -1 ends)
    for a, b, reason in runs:
        rank = reasons.index(reason)
        edges.setdefault(a, []).append((rank, 1))
        edges.setdefault(b, []).append((rank, -1))
    active = [0] * len(reasons)  # runs covering the current piece, per rank
    ticks = sorted(edges)
    for tick, following in zip(ticks, ticks[1:]):
        for rank, step in edges[tick]:
            active[rank] += step
        strongest = next((rank for rank in reversed(range(len(reasons))) if active[rank]), None)
        if strongest is not None:
            yield tick, following, reasons[strongest]


# -- a node's due intervals -------------------------------------------------------------------
class Due(Mapping[Pair, Reason]):
    """A node's due intervals as runs; read like ``{(start, end): reason}`` per interval.

    ``len`` and the reasons come from the runs; iterating lists the intervals one by one
    (for what is shown or executed per interval)."""

    def __init__(self, schedule: Schedule | None = None, runs: Iterable[Run] = ()):
        self.schedule = schedule
        self.runs: list[Run] = list(runs)
        self._starts = [run.start for run in self.runs]

    @classmethod
    def merged(cls, schedule: Schedule, runs: Iterable[tuple[int, int, Reason]]) -> Due:
        return cls(schedule, merge(schedule, runs))

    @classmethod
    def from_mapping(cls, schedule: Schedule, due: Mapping[Pair, str]) -> Due:
        """From ``{(start, end): reason}``, one entry per grid interval."""
        return cls.merged(schedule, ((a, b, Reason(reason)) for (a, b), reason in due.items()))

    def ending_by(self, limit: int) -> Due:
        """These runs without the intervals ending after the tick ``limit``."""
        kept = [(a, min(b, limit), reason) for a, b, reason, _ in self.runs if a < limit]
        return Due.merged(self.schedule, kept) if kept else Due(self.schedule)

    def spans(self) -> list[Pair]:
        """The runs with touching ones fused whatever their reason: what a batch may span."""
        return grid.fuse((run.start, run.end) for run in self.runs)

    def reason_counts(self) -> dict[Reason, int]:
        counts: dict[Reason, int] = {}
        for run in self.runs:
            counts[run.reason] = counts.get(run.reason, 0) + run.count
        return counts

    def reasons_within(self, start: int, end: int) -> set[Reason]:
        """The reasons of the runs overlapping [start, end)."""
        i = max(bisect_right(self._starts, start) - 1, 0)
        out: set[Reason] = set()
        for k in range(i, len(self.runs)):  # no slice: called once per batch written
            run = self.runs[k]
            if run.start >= end:
                break
            if run.end > start:
                out.add(run.reason)
        return out

    # -- batches: where intervals are executed ------------------------------------------------
    def batches(self, batch_size: int | None) -> Iterator[list[Pair]]:
        """Retries first, each alone; then the rest in contiguous batches of at most
        ``batch_size`` intervals (any reason; a batch never spans a gap)."""
        for run in self.runs:
            if run.reason == Reason.RETRY:
                for pair in self._expand(run.start, run.end):
                    yield [pair]
        for a, b in Due(self.schedule, self._without_retries()).spans():
            yield from grid.batches(self._expand(a, b), batch_size)

    def batch_count(self, batch_size: int | None) -> int:
        """``len(list(self.batches(batch_size)))``, from the runs alone."""
        retries = sum(run.count for run in self.runs if run.reason == Reason.RETRY)
        rest = Due(self.schedule, self._without_retries())
        if batch_size is None:
            return retries + len(rest.spans())
        return retries + sum(-(-grid.count(rest.schedule, a, b) // batch_size) for a, b in rest.spans())

    def _without_retries(self) -> list[Run]:
        return [run for run in self.runs if run.reason != Reason.RETRY]

    def _expand(self, start: int, end: int) -> Iterator[Pair]:
        assert self.schedule is not None
        return grid.expand(self.schedule, start, end)

    # -- the mapping: one entry per interval --------------------------------------------------
    def __len__(self) -> int:
        return sum(run.count for run in self.runs)

    def __bool__(self) -> bool:
        return bool(self.runs)

    def __iter__(self) -> Iterator[Pair]:
        for run in self.runs:
            yield from self._expand(run.start, run.end)

    def __getitem__(self, pair: Pair) -> Reason:
        i = bisect_right(self._starts, pair[0]) - 1
        if i >= 0 and self.schedule is not None:
            run = self.runs[i]
            if pair[1] <= run.end and self.schedule.is_tick(pair[0]) \
                    and self.schedule.tick_after(pair[0]) == pair[1]:
                return run.reason
        raise KeyError(pair)

    def items(self) -> ItemsView[Pair, Reason]:
        return _Items(self)

    def values(self) -> ValuesView[Reason]:
        return _Values(self)

    def _items(self) -> Iterator[tuple[Pair, Reason]]:
        for run in self.runs:
            for pair in self._expand(run.start, run.end):
                yield pair, run.reason

    def __repr__(self) -> str:
        return f"Due({self.runs!r})"


class _Items(ItemsView):
    """Items straight from the runs (no lookup per interval)."""

    def __iter__(self):
        return self._mapping._items()


class _Values(ValuesView):
    def __iter__(self):
        return (reason for _, reason in self._mapping._items())
