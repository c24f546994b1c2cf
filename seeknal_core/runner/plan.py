"""Plan what is due: pure bookkeeping over the project, the state store and the clock.

``plan`` never touches data; per node, in dependency order, it decides which intervals
are due and why (new, lookback, backfill, partition, restate, retry).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .. import grid
from ..intervals import IntervalSet
from ..project import Project, TransformNode
from ..project.sql import analyse
from ..reasons import PLAN_MODES
from ..schedule import Schedule
from ..timeutil import EPOCH, UTC, TimeLike, from_epoch, get_zone, to_epoch
from .common import MAX_INTERVALS, Mode, Pair, PlanError, Reason
from .due import Due, Run

if TYPE_CHECKING:
    from ..state import NodeState


class NodePlan:  # a plain class: a dataclass costs every process ~0.1 ms to create
    """What one node will do: the intervals due (as runs, with why), or a full refresh."""

    def __init__(self, node: str, batch_size: int | None = None) -> None:
        self.node = node
        self.due = Due()
        self.batch_size = batch_size
        self.full_refresh = False
        self.notes: list[str] = []
        self.definition_changed = False
        #: intervals due by the clock but held back until a source's data is in
        #: (``readiness.Waiting``, per source), set by the runner's door
        self.waiting: list = []

    @property
    def intervals(self) -> list[Pair]:
        """Every due interval, in order (listed: for execution and per-interval display)."""
        return list(self.due)

    def batches(self) -> list[list[Pair]]:
        """Retries first, each alone; then contiguous runs up to ``batch_size``."""
        return list(self.due.batches(self.batch_size))

    def batch_count(self) -> int:
        """How many batches execution makes (one for a full refresh), without listing them."""
        return 1 if self.full_refresh else self.due.batch_count(self.batch_size)

    def runs(self) -> list[Run]:
        """Contiguous due intervals with the same reason: (start, end, reason, count)."""
        return list(self.due.runs)

    def to_dict(self, tz: str = "UTC", *, each: bool = False) -> dict:
        """JSON of the plan: one object per run of due intervals, or per interval (``each``)."""
        zone = get_zone(tz)

        def bounds(a: int, b: int) -> dict:
            return {"start": from_epoch(a).isoformat(), "end": from_epoch(b).isoformat(),
                    "local_start": from_epoch(a).astimezone(zone).isoformat()}

        due = ({"intervals": [{**bounds(a, b), "reason": reason} for (a, b), reason in self.due.items()]}
               if each else
               {"runs": [{**bounds(a, b), "count": n, "reason": r} for a, b, r, n in self.due.runs]})
        return {
            "node": self.node,
            "full_refresh": self.full_refresh,
            **due,
            "batches": self.batch_count(),
            "notes": list(self.notes),
            "waiting": [w.to_dict(tz) for w in self.waiting],
        }


class Plan:  # a plain class: a dataclass costs every process ~0.1 ms to create
    """What a run does (``mode``, at ``now``): one ``NodePlan`` per node, in run order."""

    def __init__(self, mode: Mode, now: dt.datetime, nodes: list[NodePlan]) -> None:
        self.mode, self.now, self.nodes = mode, now, nodes

    @property
    def total_intervals(self) -> int:
        return sum(len(n.due) for n in self.nodes)

    def to_dict(self, project: Project, *, each: bool = False) -> dict:
        return {
            "mode": self.mode,
            "now": self.now.isoformat(),
            "nodes": [n.to_dict(project.nodes[n.node].timezone, each=each) for n in self.nodes],
        }


def check_size(schedule: Schedule, lo: int, hi: int) -> None:
    """Refuse, before listing anything, a range of more than ``MAX_INTERVALS`` intervals."""
    count = schedule.estimate_ticks(lo, hi) - 1
    if count > MAX_INTERVALS:
        raise PlanError(
            f"{count:,} intervals of {schedule.expression!r} from {from_epoch(lo).date()} to "
            f"{from_epoch(hi).date()} is more than one command handles ({MAX_INTERVALS:,}): narrow "
            "the range with --start/--end (or a later start:, or check the clock and $SEEKNAL_NOW)")


def _sized(schedule: Schedule, lo: int, hi: int) -> Pair | None:
    """The run of grid intervals between the ticks ``lo`` and ``hi``, once its size is checked."""
    if hi <= lo:
        return None
    check_size(schedule, lo, hi)
    return lo, hi


def overlapping_run(schedule: Schedule, lo: int, hi: int) -> Pair | None:
    """The run of every grid interval that overlaps [lo, hi), whole (None if hi <= lo)."""
    run = grid.covering(schedule, lo, hi)
    return None if run is None else _sized(schedule, *run)


def overlapping_pairs(schedule: Schedule, lo: int, hi: int) -> list[Pair]:
    """Every interval of the grid that overlaps [lo, hi), whole."""
    run = overlapping_run(schedule, lo, hi)
    return [] if run is None else list(grid.expand(schedule, *run))


def grid_runs(schedule: Schedule, intervals: IntervalSet, limit: int) -> list[Pair]:
    """Runs of the grid intervals overlapping any member of ``intervals``, ending by ``limit``."""
    last = schedule.tick_at_or_before(limit)
    runs = (overlapping_run(schedule, a, min(b, limit)) for a, b in intervals.pairs())
    return grid.fuse((a, min(b, last)) for a, b in filter(None, runs) if min(b, last) > a)


def grid_pairs(schedule: Schedule, intervals: IntervalSet, limit: int) -> list[Pair]:
    """Grid intervals overlapping any member of ``intervals``, ending by ``limit``."""
    return [pair for a, b in grid_runs(schedule, intervals, limit) for pair in grid.expand(schedule, a, b)]


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
    transforms): where a node without ``start:`` infers it from.  A table the SQL reads
    without declaring it as a source counts too, with the column of the node's own time
    filter (``FROM raw_events WHERE event_time >= '{{ start }}'``: raw_events.event_time)."""
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
        for table, column in undeclared_time_tables(project, node):
            out.setdefault(table, column)
    return sorted(out.items())


def undeclared_time_tables(project: Project, node: TransformNode) -> list[tuple[str, str]]:
    """(table, column) of each table the node's SQL reads that is neither a source nor a
    node, with the column its own ``>= '{{ start }}'`` filter compares (none without one):
    the scan loading did, kept by the load cache (no scanner runs in a run's process)."""
    _refs, tables, column = analyse(node.sql)
    if column is None:
        return []
    known = project.relation_names
    return [(t, column) for t in dict.fromkeys(tables) if t.lower() not in known]


def key_format(node: TransformNode) -> str:
    """The strftime format of a scheduled node's partition keys: its tracking format, else
    a date for daily-or-coarser grids and a date and hour-minute below."""
    assert node.schedule is not None
    return node.partition_format or ("%Y-%m-%d" if node.schedule.midnight_aligned else "%Y-%m-%d-%H:%M")


def check_partition_keys(project: Project, names: Iterable[str], keys: Sequence[str]) -> None:
    """Every key must name an interval of every selected scheduled node; a key that fits
    only some of them is one line naming which nodes it fits (and the formats of the others),
    so a project with hourly and daily nodes tells the user to select nodes."""
    nodes = [project.nodes[n] for n in names if project.nodes[n].is_incremental]
    for key in keys:
        fits, misses = [], []
        for node in nodes:
            try:
                dt.datetime.strptime(key.strip(), key_format(node))
                fits.append(node.name)
            except ValueError:
                misses.append(node)
        if misses and fits:
            formats = ", ".join(f"{n.name} ({key_format(n)})" for n in misses[:5])
            more = f" and {len(misses) - 5} more" if len(misses) > 5 else ""
            raise PlanError(
                f"partition key {key!r} fits the format of {', '.join(fits[:5])}"
                f"{' and more' if len(fits) > 5 else ''} but not of {formats}{more}: select the "
                f"nodes it fits (--node {','.join(fits[:5])}), and give the others keys in their "
                "own format in a second command")


def partition_interval(node: TransformNode, key: str) -> Pair:
    """The interval a partition key names (in ``key_format(node)``)."""
    schedule = node.schedule
    assert schedule is not None
    fmt = key_format(node)
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
    states: Mapping[str, NodeState],
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
    """Decide, per node in dependency order, which intervals are due, from ``states``
    (``StateStore.load()``'s mapping): no I/O here, so a door can plan what it loaded.

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
    Policies (``on_change``, start inference) are the caller's: ``runner.prepare``.
    """
    if mode not in PLAN_MODES:
        raise PlanError(f"unknown run mode {mode!r}: use run, backfill or restate")
    mode = Mode(mode)
    now_dt = dt.datetime.now(UTC) if now is None else _utc(now)
    now_s = int((now_dt - EPOCH).total_seconds())
    if batch_size is not None and batch_size < 1:
        raise PlanError(f"batch size must be at least 1, got {batch_size}")
    names = project.topological_order(nodes)
    keys = [k for k in (partitions or ()) if k.strip()]
    check_partition_keys(project, names, keys)
    explicit = [(to_epoch(a), to_epoch(b)) for a, b in (intervals or ())]
    has_range = start is not None or end is not None
    range_bounds(start, end, "UTC")  # an inverted range is an error even for an empty node list
    out: list[NodePlan] = []
    for name in names:
        node = project.nodes[name]
        node_plan = NodePlan(node=name, batch_size=batch_size or node.batch_size)
        if node.materialization == "parquet" and not node.time_column:
            node_plan.batch_size = 1  # without a time column a query's rows cannot be split by interval
        out.append(node_plan)
        state = states.get(name)
        if state and not node.fingerprint_matches(state.fingerprint, state.definition):
            node_plan.definition_changed = True  # execution keeps the recorded one: `seeknal plan`
            node_plan.notes.append(CHANGED_NOTE)
        if not node.is_incremental:
            node_plan.full_refresh = True
            continue
        inferred = (inferred_starts or {}).get(name)
        if inferred is None and state is not None and state.inferred_start is not None:
            inferred = int((state.inferred_start - EPOCH).total_seconds())
        lo, hi = node_bounds(node, now_s, include_open, inferred)
        if keys or explicit:
            node_plan.due = _named(node, node_plan, keys, explicit)
            continue
        wanted = (_in_range(node, node_plan, state, lo, hi, start, end)
                  if mode in (Mode.BACKFILL, Mode.RESTATE) or has_range
                  else _after_last(node, node_plan, state, lo, hi))
        if wanted is None:  # no start: noted
            continue
        if state:  # a range bounds retries and restatements too; `run --restate` runs all it restated
            within = range_bounds(start, end, node.timezone) if has_range and mode != Mode.RESTATE else (
                None, None)
            wanted += _redo(node.schedule, state, hi, within)
        node_plan.due = Due.merged(node.schedule, wanted)
    return Plan(mode=mode, now=now_dt, nodes=out)


#: the one warning of a changed definition (``on_change: warn``, and any dry run)
CHANGED_NOTE = "definition changed since its intervals were computed: `seeknal plan` shows what to restate"

#: a run of grid intervals and why it is due, before runs are merged (``Due.merged``)
Wanted = list[tuple[int, int, Reason]]


def _named(node: TransformNode, node_plan: NodePlan, keys: list[str], explicit: list[Pair]) -> Due:
    """Exactly the intervals partition keys or (start, end) instants name, none past the node's end."""
    schedule = node.schedule
    wanted: Wanted = [(*partition_interval(node, key), Reason.PARTITION) for key in keys]
    for a, b in explicit:
        run = overlapping_run(schedule, a, b)
        if run is not None:
            wanted.append((*run, Reason.PARTITION))
    due = Due.merged(schedule, wanted)
    if node.end is None:
        return due
    kept = due.ending_by(schedule.tick_at_or_before(to_epoch(node.end)))
    if len(kept) < len(due):
        node_plan.notes.append(f"{len(due) - len(kept)} interval(s) end after the node's end "
                               f"{node.end.isoformat()}: not run")
    return kept


def _in_range(node: TransformNode, node_plan: NodePlan, state: NodeState | None, lo: int | None, hi: int,
              start: TimeLike | None, end: TimeLike | None) -> Wanted | None:
    """Backfill: every interval of the range (within the node's own bounds) not completed."""
    range_lo, range_hi = range_bounds(start, end, node.timezone)
    # like SQLMesh, a range never reaches before the node's own start
    a = lo if range_lo is None else (range_lo if lo is None else max(range_lo, lo))
    if a is None:
        node_plan.notes.append("no start: set `start:` on the node or in seeknal_project.yml, "
                               "or pass --start")
        return None
    b = hi if range_hi is None else min(range_hi, hi)
    if b <= a:
        return []
    schedule = node.schedule
    run = _sized(schedule, schedule.tick_at_or_before(a), min(schedule.tick_at_or_after(b), hi))
    return [] if run is None else _missing(schedule, state, *run, Reason.BACKFILL)


def _after_last(node: TransformNode, node_plan: NodePlan, state: NodeState | None, lo: int | None,
                hi: int) -> Wanted | None:
    """A run: the intervals after the last completed one (or from the start), and the lookback."""
    done = state.completed if state else IntervalSet()
    if lo is None and not done:
        node_plan.notes.append("no start: set `start:` on the node or in seeknal_project.yml")
        return None
    schedule = node.schedule
    last_end = done.last_end()
    first = max(lo, last_end) if (lo is not None and last_end is not None) else (
        last_end if last_end is not None else lo)
    wanted: Wanted = []
    if first < hi:  # from the interval holding ``first``: a completed range may end off the grid
        run = _sized(schedule, schedule.tick_at_or_before(first), hi)
        if run is not None:
            wanted += _missing(schedule, state, *run, Reason.NEW)
    if node.lookback and last_end is not None:
        top = schedule.tick_at_or_before(last_end)
        floor = schedule.tick_at_or_after(lo) if lo is not None else done.pairs()[0][0]
        back = _back(schedule, top, node.lookback, floor)
        if back < top:
            wanted.append((back, top, Reason.LOOKBACK))
    return wanted


def _redo(schedule: Schedule, state: NodeState, hi: int,
          within: tuple[int | None, int | None] = (None, None)) -> Wanted:
    """Failed intervals (retried) and pending restatements not recomputed since, up to ``hi``;
    with a user's range (``within``: epoch bounds, None open), only the grid intervals
    overlapping it: a range means its range, a plain run retries everything due."""
    lo, end = within
    if end is not None:
        hi = min(hi, schedule.tick_at_or_after(end))
    first = None if lo is None else schedule.tick_at_or_before(lo)

    def clipped(runs: list[Pair]) -> list[Pair]:
        return [(max(a, first), b) for a, b in runs if b > first] if first is not None else runs

    wanted: Wanted = [(a, b, Reason.RETRY)
                      for a, b in clipped(grid_runs(schedule, state.failed_intervals, hi))]
    for restatement in state.pending_restatements:
        for a, b in clipped(grid_runs(schedule, IntervalSet(restatement.intervals), hi)):
            wanted += _missing(schedule, state, a, b, Reason.RESTATE)
    return wanted


def _missing(schedule: Schedule, state: NodeState | None, lo: int, hi: int, reason: Reason) -> Wanted:
    """The runs between the ticks ``lo`` and ``hi`` not completed, due for ``reason``."""
    done = state.completed if state else IntervalSet()
    return [(a, b, reason) for a, b in grid.uncovered(schedule, done.micros(), lo, hi)]


def range_bounds(start: TimeLike | None, end: TimeLike | None,
                 timezone: str) -> tuple[int | None, int | None]:
    """Epoch bounds of a user range; naive values are wall clock in ``timezone``."""
    lo = None if start is None else to_epoch(start, timezone)
    hi = None if end is None else to_epoch(end, timezone)
    if lo is not None and hi is not None and lo > hi:
        raise PlanError(f"start {start} is after end {end}: swap them")
    return lo, hi


def _utc(value: TimeLike) -> dt.datetime:
    return from_epoch(to_epoch(value))


def _back(schedule: Schedule, t: int, n: int, floor: int) -> int:
    """The tick ``n`` intervals before the tick ``t``, but not before ``floor`` (the node's
    first interval) nor more than ``MAX_INTERVALS`` back: a lookback longer than the
    node's history re-runs its history, never intervals before its start."""
    n = min(n, MAX_INTERVALS)
    if n <= 0 or t <= floor:
        return t
    if schedule.period is not None:
        return max(floor, t - n * schedule.period)
    span = 2 * 86_400
    while True:  # windows of ticks, doubling: the listed ticks stay near what is asked
        lo = max(floor, t - span)
        found = schedule.ticks(lo, t - 1)
        if len(found) >= n:
            return found[-n]
        if lo == floor:
            return floor
        n -= len(found)
        t = found[0] if found else t
        span *= 2


def partition_key(node: TransformNode, pair: Pair) -> str:
    """The partition key of an interval of a node with a ``partition_column``."""
    return from_epoch(pair[0]).astimezone(get_zone(node.timezone)).strftime(node.partition_format)
