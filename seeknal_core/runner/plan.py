"""Plan what is due: pure bookkeeping over the project, the state store and the clock.

``plan`` never touches data; per node, in dependency order, it decides which intervals
are due and why (new, lookback, backfill, partition, restate, retry).
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..intervals import IntervalSet, pending_index_runs, pending_pairs
from ..project import Project, TransformNode
from ..schedule import Schedule
from ..timeutil import EPOCH, UTC, TimeLike, from_epoch, get_zone, to_epoch
from .common import Pair, PlanError

if TYPE_CHECKING:
    from ..state import StateStore

#: precedence when one interval is due for several reasons (higher wins)
_REASON_RANK = {"new": 0, "lookback": 1, "backfill": 2, "partition": 3, "restate": 4, "retry": 5}

@dataclass
class NodePlan:
    """What one node will do: intervals due (with why), or a full refresh."""

    node: str
    due: dict[Pair, str] = field(default_factory=dict)
    batch_size: int | None = None
    full_refresh: bool = False
    partition_keys: dict[Pair, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def intervals(self) -> list[Pair]:
        return sorted(self.due)

    def batches(self) -> list[list[Pair]]:
        """Retries first, each alone; then contiguous runs up to ``batch_size``."""
        retries = [[p] for p in self.intervals if self.due[p] == "retry"]
        rest = [p for p in self.intervals if self.due[p] != "retry"]
        return retries + coalesce(rest, self.batch_size)

    def to_dict(self, tz: str = "UTC") -> dict:
        zone = get_zone(tz)
        return {
            "node": self.node,
            "full_refresh": self.full_refresh,
            "intervals": [
                {"start": from_epoch(a).isoformat(), "end": from_epoch(b).isoformat(),
                 "local_start": from_epoch(a).astimezone(zone).isoformat(),
                 "reason": self.due[(a, b)]}
                for a, b in self.intervals
            ],
            "batches": len(self.batches()) if not self.full_refresh else 1,
            "notes": list(self.notes),
        }


@dataclass
class Plan:
    mode: str
    now: dt.datetime
    nodes: list[NodePlan]

    @property
    def total_intervals(self) -> int:
        return sum(len(n.due) for n in self.nodes)

    def to_dict(self, project: Project) -> dict:
        return {
            "mode": self.mode,
            "now": self.now.isoformat(),
            "nodes": [n.to_dict(project.nodes[n.node].timezone) for n in self.nodes],
        }


def coalesce(pairs: Sequence[Pair], batch_size: int | None) -> list[list[Pair]]:
    """Group sorted intervals into contiguous runs of at most ``batch_size``."""
    batches: list[list[Pair]] = []
    for pair in pairs:
        last = batches[-1] if batches else None
        if last and last[-1][1] == pair[0] and (batch_size is None or len(last) < batch_size):
            last.append(pair)
        else:
            batches.append([pair])
    return batches


def _grid(schedule: Schedule, lo: int, hi: int) -> list[int]:
    """Ticks t with lo <= t <= hi (intervals lying inside [lo, hi])."""
    if hi <= lo:
        return []
    return schedule.ticks(lo, hi)


def _pending(ticks: list[int], done: IntervalSet, schedule: Schedule) -> list[Pair]:
    return pending_pairs(ticks, pending_index_runs(ticks, done, schedule.period))


def _pairs_overlapping(schedule: Schedule, lo: int, hi: int) -> list[Pair]:
    """Every interval of the grid that overlaps [lo, hi), whole."""
    ticks = schedule.covering_ticks(lo, hi)
    return list(zip(ticks, ticks[1:]))


def node_bounds(node: TransformNode, now_s: int, include_open: bool = False) -> tuple[int | None, int]:
    """(first tick at or after the node's start, last tick at or before now)."""
    schedule = node.schedule
    assert schedule is not None
    hi = schedule.tick_after(now_s) if include_open else schedule.tick_at_or_before(now_s)
    lo = schedule.tick_at_or_after(to_epoch(node.start)) if node.start is not None else None
    return lo, hi


def partition_interval(node: TransformNode, key: str) -> Pair:
    """The interval a partition key names (the node's tracking format, else its key format)."""
    schedule = node.schedule
    assert schedule is not None
    fmt = node.partition_format or ("%Y-%m-%d" if schedule.midnight_aligned else "%Y-%m-%d-%H:%M")
    try:
        local = dt.datetime.strptime(key.strip(), fmt)
    except ValueError:
        raise PlanError(
            f"partition key {key!r} does not match node '{node.name}' format {fmt!r}"
        ) from None
    instant = to_epoch(local, node.timezone)
    a = schedule.tick_at_or_before(instant)
    return a, schedule.tick_after(a)


def plan(
    project: Project,
    store: StateStore,
    *,
    mode: str = "run",
    nodes: Iterable[str] | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    partitions: Iterable[str] | None = None,
    intervals: Iterable[tuple[TimeLike, TimeLike]] | None = None,
    batch_size: int | None = None,
    now: TimeLike | None = None,
    include_open: bool = False,
) -> Plan:
    """Decide, per node in dependency order, which intervals are due.

    * ``run``: intervals after the last completed one up to the last complete interval
      (first run: from the node's start), plus failed intervals (retried first), pending
      restatements and the node's ``lookback``.
    * ``backfill``: every missing (never completed, failed or restated) interval in
      ``[start, end)``, default the node's start to now.
    * ``partitions``: exactly the intervals those keys name, completed or not;
      ``intervals``: exactly the schedule intervals overlapping these (start, end) instants
      (what a Dagster partition window asks for), completed or not.
    Only intervals with ``end <= now`` are due unless ``include_open``.
    """
    if mode not in ("run", "backfill", "restate"):
        raise PlanError(f"unknown run mode {mode!r}: use run, backfill or restate")
    now_dt = dt.datetime.now(UTC) if now is None else _utc(now)
    now_s = int((now_dt - EPOCH).total_seconds())
    if batch_size is not None and batch_size < 1:
        raise PlanError(f"batch size must be at least 1, got {batch_size}")
    names = project.topological_order(nodes)
    keys = [k for k in (partitions or ()) if k.strip()]
    explicit = [(to_epoch(a), to_epoch(b)) for a, b in (intervals or ())]
    has_range = start is not None or end is not None
    _range(start, end, "UTC")  # an inverted range is an error even for an empty node list
    states = store.load()
    out: list[NodePlan] = []
    for name in names:
        node = project.nodes[name]
        np = NodePlan(node=name, batch_size=batch_size or node.batch_size)
        if node.materialization == "parquet" and not node.time_column:
            np.batch_size = 1  # without a time column a query's rows cannot be split by interval
        out.append(np)
        if not node.is_incremental:
            np.full_refresh = True
            continue
        state = states.get(name)
        done = state.completed if state else IntervalSet()
        if state and not node.fingerprint_matches(state.fingerprint):
            np.notes.append("definition changed since the last run: restate old intervals "
                            "to recompute them with the new SQL")
        schedule = node.schedule
        lo, hi = node_bounds(node, now_s, include_open)
        if keys or explicit:
            for key in keys:
                np.due[partition_interval(node, key)] = "partition"
            for a, b in explicit:
                for pair in _pairs_overlapping(schedule, a, b):
                    np.due[pair] = "partition"
            if node.partition_column:
                np.partition_keys.update({p: _key(node, p) for p in np.due})
            continue
        if mode in ("backfill", "restate") or has_range:
            range_lo, range_hi = _range(start, end, node.timezone)
            # like SQLMesh, a range never reaches before the node's own start
            a = lo if range_lo is None else (range_lo if lo is None else max(range_lo, lo))
            if a is None:
                np.notes.append("no start: set `start:` on the node or in seeknal_project.yml, "
                                "or pass --start")
                continue
            b = hi if range_hi is None else min(range_hi, hi)
            for pair in _missing_overlapping(schedule, done, a, b, hi):
                np.due[pair] = "backfill"
        else:
            if lo is None and not done:
                np.notes.append("no start: set `start:` on the node or in seeknal_project.yml")
                continue
            last_end = done.epoch_pairs()[-1][1] if done else None
            first = max(lo, last_end) if (lo is not None and last_end is not None) else (
                last_end if last_end is not None else lo)
            for pair in _pending(_grid(schedule, schedule.tick_at_or_after(first), hi), done, schedule):
                np.due[pair] = "new"
            if node.lookback and last_end is not None:
                ticks = schedule.ticks(_back(schedule, last_end, node.lookback), last_end)
                for pair in zip(ticks, ticks[1:]):
                    _add(np.due, pair, "lookback")
        if state:
            for pair in _grid_pairs(schedule, state.failed_intervals, hi):
                _add(np.due, pair, "retry")
            for restatement in state.pending_restatements:
                for pair in _grid_pairs(schedule, IntervalSet(restatement.intervals), hi):
                    if not done.covers_us(pair[0] * 1_000_000, pair[1] * 1_000_000):
                        _add(np.due, pair, "restate")
        if node.partition_column:
            np.partition_keys.update({p: _key(node, p) for p in np.due})
    return Plan(mode=mode, now=now_dt, nodes=out)


def _range(start: TimeLike | None, end: TimeLike | None, timezone: str) -> tuple[int | None, int | None]:
    """Epoch bounds of a user range; naive values are wall clock in ``timezone``."""
    lo = None if start is None else to_epoch(start, timezone)
    hi = None if end is None else to_epoch(end, timezone)
    if lo is not None and hi is not None and lo > hi:
        raise PlanError(f"start {start} is after end {end}: swap them")
    return lo, hi


def _utc(value: TimeLike) -> dt.datetime:
    return from_epoch(to_epoch(value))


def _add(due: dict[Pair, str], pair: Pair, reason: str) -> None:
    if _REASON_RANK[reason] >= _REASON_RANK.get(due.get(pair, "new"), 0) or pair not in due:
        due[pair] = reason


def _back(schedule: Schedule, t: int, n: int) -> int:
    for _ in range(n):
        t = schedule.tick_before(t)
    return t


def _key(node: TransformNode, pair: Pair) -> str:
    return from_epoch(pair[0]).astimezone(get_zone(node.timezone)).strftime(node.partition_format)


def _missing_overlapping(schedule: Schedule, done: IntervalSet, lo: int, hi: int, limit: int) -> list[Pair]:
    """Intervals overlapping [lo, hi) (whole, ending by ``limit``) not covered by ``done``."""
    ticks = schedule.covering_ticks(lo, hi)
    return _pending(ticks[:bisect_right(ticks, limit)], done, schedule)


def _grid_pairs(schedule: Schedule, intervals: IntervalSet, limit: int) -> list[Pair]:
    """Grid intervals overlapping any member of ``intervals``, ending by ``limit``."""
    pairs: set[Pair] = set()
    for a, b in intervals.epoch_pairs():
        pairs.update(p for p in _pairs_overlapping(schedule, a, b) if p[1] <= limit)
    return sorted(pairs)
