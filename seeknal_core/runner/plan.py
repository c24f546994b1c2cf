"""Plan what is due: pure bookkeeping over the project, the state store and the clock.

``plan`` never touches data; per node, in dependency order, it decides which intervals
are due and why (new, lookback, backfill, partition, restate, retry).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..intervals import IntervalSet, coalesce, pending_index_runs
from ..project import Project, TransformNode
from ..schedule import Schedule
from ..timeutil import EPOCH, UTC, TimeLike, from_epoch, get_zone, to_epoch
from .common import MAX_INTERVALS, Mode, Pair, PlanError, Reason

if TYPE_CHECKING:
    from ..state import StateStore


@dataclass
class NodePlan:
    """What one node will do: intervals due (with why), or a full refresh."""

    node: str
    due: dict[Pair, Reason] = field(default_factory=dict)
    batch_size: int | None = None
    full_refresh: bool = False
    partition_keys: dict[Pair, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    definition_changed: bool = False

    @property
    def intervals(self) -> list[Pair]:
        return sorted(self.due)

    def batches(self) -> list[list[Pair]]:
        """Retries first, each alone; then contiguous runs up to ``batch_size``."""
        retries = [[p] for p in self.intervals if self.due[p] == Reason.RETRY]
        rest = [p for p in self.intervals if self.due[p] != Reason.RETRY]
        return retries + coalesce(rest, self.batch_size)

    def runs(self) -> list[tuple[int, int, Reason, int]]:
        """Contiguous due intervals with the same reason: (start, end, reason, count)."""
        out: list[tuple[int, int, Reason, int]] = []
        for (a, b), reason in sorted(self.due.items()):
            if out and out[-1][1] == a and out[-1][2] == reason:
                out[-1] = (out[-1][0], b, reason, out[-1][3] + 1)
            else:
                out.append((a, b, reason, 1))
        return out

    def to_dict(self, tz: str = "UTC", *, each: bool = False) -> dict:
        """JSON of the plan: one object per run of due intervals, or per interval (``each``)."""
        zone = get_zone(tz)

        def bounds(a: int, b: int) -> dict:
            return {"start": from_epoch(a).isoformat(), "end": from_epoch(b).isoformat(),
                    "local_start": from_epoch(a).astimezone(zone).isoformat()}

        due = ({"intervals": [{**bounds(a, b), "reason": self.due[(a, b)]} for a, b in self.intervals]}
               if each else
               {"runs": [{**bounds(a, b), "count": n, "reason": r} for a, b, r, n in self.runs()]})
        return {
            "node": self.node,
            "full_refresh": self.full_refresh,
            **due,
            "batches": len(self.batches()) if not self.full_refresh else 1,
            "notes": list(self.notes),
        }


@dataclass
class Plan:
    mode: Mode
    now: dt.datetime
    nodes: list[NodePlan]

    @property
    def total_intervals(self) -> int:
        return sum(len(n.due) for n in self.nodes)

    def to_dict(self, project: Project, *, each: bool = False) -> dict:
        return {
            "mode": self.mode,
            "now": self.now.isoformat(),
            "nodes": [n.to_dict(project.nodes[n.node].timezone, each=each) for n in self.nodes],
        }


def _ticks_within(schedule: Schedule, lo: int, hi: int) -> list[int]:
    """Ticks t with lo <= t <= hi (bounding the intervals inside [lo, hi]), after checking
    that their number is one a command can handle."""
    if hi <= lo:
        return []
    check_size(schedule, lo, hi)
    return schedule.ticks(lo, hi)


def check_size(schedule: Schedule, lo: int, hi: int) -> None:
    """Refuse, before listing anything, a range of more than ``MAX_INTERVALS`` intervals."""
    count = schedule.estimate_ticks(lo, hi) - 1
    if count > MAX_INTERVALS:
        raise PlanError(
            f"{count:,} intervals of {schedule.expression!r} from {from_epoch(lo).date()} to "
            f"{from_epoch(hi).date()} is more than one command handles ({MAX_INTERVALS:,}): narrow "
            "the range with --start/--end (or a later start:, or check the clock and $SEEKNAL_NOW)")


def _pending(ticks: list[int], done: IntervalSet) -> list[Pair]:
    """The grid's intervals not covered by ``done``, expanded from its pending runs."""
    return [(ticks[k], ticks[k + 1]) for i, j in pending_index_runs(ticks, done) for k in range(i, j)]


def _pairs_overlapping(schedule: Schedule, lo: int, hi: int) -> list[Pair]:
    """Every interval of the grid that overlaps [lo, hi), whole."""
    if hi <= lo:
        return []
    lo, hi = schedule.tick_at_or_before(lo), schedule.tick_at_or_after(hi)
    ticks = _ticks_within(schedule, lo, hi)
    return list(zip(ticks, ticks[1:]))


def node_bounds(node: TransformNode, now_s: int, include_open: bool = False,
                inferred_start: int | None = None) -> tuple[int | None, int]:
    """(first tick at or after the node's start, last tick at or before now and its `end:`).

    Without ``start:``, ``inferred_start`` (its sources' earliest time) starts the grid at
    the interval holding it, so the earliest rows are processed too.

    ``end`` (the node's or the project's, exclusive) caps the grid, so no interval ending
    after it is ever due, whatever the clock says.
    """
    schedule = node.schedule
    assert schedule is not None
    hi = schedule.tick_after(now_s) if include_open else schedule.tick_at_or_before(now_s)
    if node.end is not None:
        hi = min(hi, schedule.tick_at_or_before(to_epoch(node.end)))
    if node.start is not None:
        return schedule.tick_at_or_after(to_epoch(node.start)), hi
    return (None if inferred_start is None else schedule.tick_at_or_before(inferred_start)), hi


def time_sources(project: Project, name: str) -> list[tuple[str, str]]:
    """(source, time column) of every source upstream of a transform (through its upstream
    transforms): where a node without ``start:`` infers it from."""
    out: dict[str, str] = {}
    seen: set[str] = set()
    stack = [name]
    while stack:
        node = project.nodes[stack.pop()]
        for dep in node.depends_on:
            source = project.sources.get(dep)
            if source is not None and (source.time_column or node.time_column):
                out.setdefault(dep, source.time_column or node.time_column)
            elif dep in project.nodes and dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return sorted(out.items())


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
    inferred_starts: Mapping[str, int] | None = None,
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
    A node without ``start:`` starts at ``inferred_starts[node]`` (epoch seconds, just
    inferred by the caller) or else at the inferred start its state records.
    """
    if mode not in tuple(Mode):
        raise PlanError(f"unknown run mode {mode!r}: use run, backfill or restate")
    mode = Mode(mode)
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
        node_plan = NodePlan(node=name, batch_size=batch_size or node.batch_size)
        if node.materialization == "parquet" and not node.time_column:
            node_plan.batch_size = 1  # without a time column a query's rows cannot be split by interval
        out.append(node_plan)
        if not node.is_incremental:
            node_plan.full_refresh = True
            continue
        state = states.get(name)
        done = state.completed if state else IntervalSet()
        if state and not node.fingerprint_matches(state.fingerprint, state.definition):
            node_plan.definition_changed = True  # execution keeps the recorded one: `seeknal plan`
            node_plan.notes.append("definition changed since its intervals were computed: "
                            "`seeknal plan` shows what to restate")
        schedule = node.schedule
        inferred = (inferred_starts or {}).get(name)
        if inferred is None and state is not None and state.inferred_start is not None:
            inferred = int((state.inferred_start - EPOCH).total_seconds())
        lo, hi = node_bounds(node, now_s, include_open, inferred)
        if keys or explicit:
            for key in keys:
                node_plan.due[partition_interval(node, key)] = Reason.PARTITION
            for a, b in explicit:
                for pair in _pairs_overlapping(schedule, a, b):
                    node_plan.due[pair] = Reason.PARTITION
            if node.end is not None:  # named partitions too: nothing past the node's end
                past = [p for p in node_plan.due if p[1] > schedule.tick_at_or_before(to_epoch(node.end))]
                for pair in past:
                    del node_plan.due[pair]
                if past:
                    node_plan.notes.append(f"{len(past)} interval(s) end after the node's end "
                                           f"{node.end.isoformat()}: not run")
            if node.partition_column:
                node_plan.partition_keys.update({p: _key(node, p) for p in node_plan.due})
            continue
        if mode in (Mode.BACKFILL, Mode.RESTATE) or has_range:
            range_lo, range_hi = _range(start, end, node.timezone)
            # like SQLMesh, a range never reaches before the node's own start
            a = lo if range_lo is None else (range_lo if lo is None else max(range_lo, lo))
            if a is None:
                node_plan.notes.append("no start: set `start:` on the node or in seeknal_project.yml, "
                                "or pass --start")
                continue
            b = hi if range_hi is None else min(range_hi, hi)
            for pair in _missing_overlapping(schedule, done, a, b, hi):
                node_plan.due[pair] = Reason.BACKFILL
        else:
            if lo is None and not done:
                node_plan.notes.append("no start: set `start:` on the node or in seeknal_project.yml")
                continue
            last_end = done.last_end()
            first = max(lo, last_end) if (lo is not None and last_end is not None) else (
                last_end if last_end is not None else lo)
            if first < hi:  # an up-to-date node (done up to the last tick) lists no grid
                for pair in _pending(_ticks_within(schedule, schedule.tick_at_or_after(first), hi), done):
                    node_plan.due[pair] = Reason.NEW
            if node.lookback and last_end is not None:
                ticks = schedule.ticks(_back(schedule, last_end, node.lookback), last_end)
                for pair in zip(ticks, ticks[1:]):
                    _add(node_plan.due, pair, Reason.LOOKBACK)
        if state:
            for pair in _grid_pairs(schedule, state.failed_intervals, hi):
                _add(node_plan.due, pair, Reason.RETRY)
            for restatement in state.pending_restatements:
                for pair in _grid_pairs(schedule, IntervalSet(restatement.intervals), hi):
                    if not done.covers(*pair):
                        _add(node_plan.due, pair, Reason.RESTATE)
        if node.partition_column:
            node_plan.partition_keys.update({p: _key(node, p) for p in node_plan.due})
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


def _add(due: dict[Pair, Reason], pair: Pair, reason: Reason) -> None:
    if pair not in due or reason.outranks(due[pair]):
        due[pair] = reason


def _back(schedule: Schedule, t: int, n: int) -> int:
    for _ in range(n):
        t = schedule.tick_before(t)
    return t


def _key(node: TransformNode, pair: Pair) -> str:
    return from_epoch(pair[0]).astimezone(get_zone(node.timezone)).strftime(node.partition_format)


def _missing_overlapping(schedule: Schedule, done: IntervalSet, lo: int, hi: int, limit: int) -> list[Pair]:
    """Intervals overlapping [lo, hi) (whole, ending by ``limit``) not covered by ``done``."""
    if hi <= lo:
        return []
    first, last = schedule.tick_at_or_before(lo), schedule.tick_at_or_after(hi)
    return _pending(_ticks_within(schedule, first, min(last, limit)), done)


def _grid_pairs(schedule: Schedule, intervals: IntervalSet, limit: int) -> list[Pair]:
    """Grid intervals overlapping any member of ``intervals``, ending by ``limit``."""
    pairs: set[Pair] = set()
    for a, b in intervals.pairs():
        pairs.update(p for p in _pairs_overlapping(schedule, a, min(b, limit)) if p[1] <= limit)
    return sorted(pairs)
