"""Plan what is due, then execute it: incremental runs, backfills, restatements.

``plan`` is pure bookkeeping over the project, the state store and the clock; it never
touches data.  ``execute`` writes each batch in one DuckDB transaction and only then
marks its intervals complete, so a crash between the two causes an idempotent re-run,
never a false "complete".  Progress is reported through a ``Progress`` object the CLI
(or Dagster) renders.
"""

from __future__ import annotations

import datetime as dt
import time
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import SeeknalError
from .intervals import IntervalSet, pending_index_runs, pending_pairs
from .project import Project, TransformNode
from .schedule import Schedule
from .templating import compile_sql, render_sql
from .timeutil import EPOCH, UTC, TimeLike, from_epoch, get_zone, to_epoch

if TYPE_CHECKING:
    from .engine.duckdb import DuckDBEngine
    from .state import StateStore

Pair = tuple[int, int]  # an interval as (start, end) epoch seconds

#: precedence when one interval is due for several reasons (higher wins)
_REASON_RANK = {"new": 0, "lookback": 1, "backfill": 2, "partition": 3, "restate": 4, "retry": 5}
#: the audit-log mode recorded for a completed interval, by why it ran
_ORIGIN = {"restate": "restate", "backfill": "backfill", "partition": "backfill"}


#: how a skipped interval's reason starts when it only waits for upstream data (callers
#: such as the Dagster adapter retry those instead of failing)
WAITING_FOR_UPSTREAM = "waiting for upstream"


class PlanError(SeeknalError):
    """The request cannot be planned (bad range, unknown partition key, ...)."""


# -- plan -----------------------------------------------------------------------------------
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
        if state and state.fingerprint and state.fingerprint != node.fingerprint:
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


# -- restatement ------------------------------------------------------------------------------
def restatement_impact(
    project: Project,
    nodes: Iterable[str] | None,
    start: TimeLike,
    end: TimeLike,
    *,
    now: TimeLike | None = None,
    store: StateStore | None = None,
) -> dict[str, list[Pair]]:
    """Intervals to restate per node: the selected nodes' intervals overlapping
    ``[start, end)`` (naive bounds in each node's timezone), then, downstream, every interval
    overlapping a restated upstream one.  Only finished intervals (``end <= now``) count and,
    given a ``store``, only completed ones: there is nothing to redo in the others."""
    _range(start, end, "UTC")
    now_s = to_epoch(now) if now is not None else int(time.time())
    selected = project.topological_order(nodes) if nodes else [
        n for n in project.topological_order() if project.nodes[n].is_incremental]
    states = store.load() if store is not None else {}

    def done(name: str, pairs: list[Pair]) -> list[Pair]:
        if store is None:
            return pairs
        completed = states[name].completed if name in states else IntervalSet()
        return [p for p in pairs if completed.overlaps((from_epoch(p[0]), from_epoch(p[1])))]

    impact: dict[str, list[Pair]] = {}
    for name in selected:
        node = project.nodes[name]
        if not node.is_incremental:
            raise PlanError(f"node '{name}' has no schedule: it is rebuilt whole on every run "
                            "and has no intervals to restate")
        lo, hi = _range(start, end, node.timezone)
        _, limit = node_bounds(node, now_s)
        impact[name] = done(name, [p for p in _pairs_overlapping(node.schedule, lo, hi) if p[1] <= limit])
    for name in project.topological_order():
        node = project.nodes[name]
        upstream = [u for u in project.upstream(name) if impact.get(u)]
        if name in impact or not node.is_incremental or not upstream:
            continue
        _, limit = node_bounds(node, now_s)
        span = IntervalSet.from_epoch_pairs(p for u in upstream for p in impact[u])
        impact[name] = done(name, _grid_pairs(node.schedule, span, limit))
    return {n: pairs for n, pairs in impact.items() if pairs}


def restate(
    project: Project,
    store: StateStore,
    nodes: Iterable[str] | None,
    start: TimeLike,
    end: TimeLike,
    reason: str,
    *,
    actor: str | None = None,
    now: TimeLike | None = None,
) -> dict[str, list[Pair]]:
    """Mark intervals (and their downstream intervals) for re-processing, with a reason."""
    if not reason or not reason.strip():
        raise PlanError("a restatement needs a reason: pass --reason \"why the data is wrong\"")
    selected = [project.node(n).name for n in nodes] if nodes else None
    impact = restatement_impact(project, selected, start, end, now=now, store=store)
    direct = {n: v for n, v in impact.items() if selected is None or n in selected}
    cascade = {n: v for n, v in impact.items() if n not in direct}
    if direct:
        store.restate({n: IntervalSet.from_epoch_pairs(v) for n, v in direct.items()}, reason, actor)
    if cascade:
        store.restate(
            {n: IntervalSet.from_epoch_pairs(v) for n, v in cascade.items()},
            f"{reason} (downstream of {', '.join(sorted(direct))})", actor,
        )
    return impact


# -- execute ----------------------------------------------------------------------------------
class Progress:
    """Callbacks during execution; the default does nothing."""

    def node_started(self, node: str, plan: NodePlan, batches: int) -> None: ...

    def batch_finished(self, node: str, batch: list[Pair], rows: int, seconds: float,
                       error: str | None = None) -> None: ...

    def node_finished(self, result: NodeResult) -> None: ...


@dataclass
class NodeResult:
    node: str
    done: list[Pair] = field(default_factory=list)
    batches: int = 0
    rows: int = 0
    seconds: float = 0.0
    failures: list[tuple[Pair, str]] = field(default_factory=list)
    skipped: list[tuple[Pair, str]] = field(default_factory=list)
    full_refresh: bool = False

    def to_dict(self) -> dict:
        def iso(p: Pair) -> dict:
            return {"start": from_epoch(p[0]).isoformat(), "end": from_epoch(p[1]).isoformat()}
        return {
            "node": self.node, "intervals": len(self.done), "batches": self.batches,
            "rows": self.rows, "seconds": round(self.seconds, 4), "full_refresh": self.full_refresh,
            "failures": [{**iso(p), "error": e} for p, e in self.failures],
            "skipped": [{**iso(p), "reason": r} for p, r in self.skipped],
        }


@dataclass
class RunResult:
    nodes: list[NodeResult]
    seconds: float

    @property
    def failed(self) -> int:
        return sum(len(n.failures) for n in self.nodes)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def intervals(self) -> int:
        return sum(len(n.done) for n in self.nodes)

    @property
    def rows(self) -> int:
        return sum(n.rows for n in self.nodes)


def execute(
    the_plan: Plan,
    project: Project,
    store: StateStore,
    *,
    engine: DuckDBEngine | None = None,
    progress: Progress | None = None,
    origin: str | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Run the plan: per node, per batch, write then mark complete; isolate failures."""
    from .engine.duckdb import DuckDBEngine

    progress = progress or Progress()
    own = engine is None
    engine = engine or DuckDBEngine(project, in_memory=not _needs_database(project, the_plan))
    t0 = time.perf_counter()
    results: list[NodeResult] = []
    failed_nodes: dict[str, IntervalSet | None] = {}  # None: the whole node failed
    for np in the_plan.nodes:
        if np.due or np.full_refresh:  # template errors stop the run before any write
            compile_sql(project.nodes[np.node])
    try:
        for np in the_plan.nodes:
            node = project.nodes[np.node]
            result = NodeResult(node=np.node, full_refresh=np.full_refresh)
            results.append(result)
            if np.full_refresh:
                progress.node_started(np.node, np, 1)
                _refresh(engine, store, node, result, progress, origin or the_plan.mode, run_id,
                         failed_nodes)
            elif np.due:
                batches = np.batches()
                progress.node_started(np.node, np, len(batches))
                runner = _NodeRunner(engine, store, project, node, np, result, progress,
                                     origin, the_plan.mode, run_id, failed_nodes)
                try:
                    for batch in batches:
                        runner.run(batch)
                finally:
                    runner.flush()
                if result.failures:
                    failed_nodes[np.node] = IntervalSet.from_epoch_pairs(p for p, _ in result.failures)
            else:
                continue
            progress.node_finished(result)
    finally:
        if own:
            engine.close()
    return RunResult(nodes=results, seconds=time.perf_counter() - t0)


def needs_database(project: Project, node: TransformNode) -> bool:
    """Whether running the node reads or writes the project's DuckDB file.  ``parquet``
    nodes over file sources and other ``parquet`` nodes do not, so parallel workers never
    contend for its single-writer lock."""
    if node.materialization != "parquet":
        return True
    for dep in node.depends_on:
        if dep in project.sources and not project.sources[dep].location:
            return True
        if dep in project.nodes and project.nodes[dep].materialization != "parquet":
            return True
    return False


def _needs_database(project: Project, the_plan: Plan) -> bool:
    return any(needs_database(project, project.nodes[np.node])
               for np in the_plan.nodes if np.due or np.full_refresh)


def _error_text(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _refresh(engine, store, node, result, progress, mode, run_id, failed_nodes) -> None:
    import duckdb

    from .engine.duckdb import ExecutionError

    t = time.perf_counter()
    try:
        rows = engine.replace_table(node, render_sql(node, None, None))
    except (duckdb.Error, ExecutionError) as exc:  # the SQL's fault: recorded, the run goes on
        error = f"node '{node.name}': {_error_text(exc)}"
        result.failures.append(((0, 0), error))
        failed_nodes[node.name] = None  # the whole table failed
        store.record_execution(node.name, (), mode=_mode(mode), status="failed", error=error,
                               run_id=run_id, duration=time.perf_counter() - t)
        progress.batch_finished(node.name, [], 0, time.perf_counter() - t, error)
        return
    seconds = time.perf_counter() - t
    result.rows, result.batches, result.seconds = rows, 1, seconds
    store.record_execution(node.name, (), mode=_mode(mode), status="success", rows=rows,
                           duration=seconds, run_id=run_id)
    progress.batch_finished(node.name, [], rows, seconds)


def _mode(mode: str) -> str:
    return mode if mode in ("run", "backfill", "restate", "manual", "dagster") else "run"


class _NodeRunner:
    """Runs one node's batches: readiness against upstream state, write, record,
    and binary splitting of a failed batch to isolate the bad intervals."""

    def __init__(self, engine, store, project, node, np, result, progress, origin, mode, run_id,
                 failed_nodes):
        self.engine, self.store, self.node, self.np = engine, store, node, np
        self.result, self.progress, self.origin, self.mode = result, progress, origin, mode
        self.run_id, self.failed_nodes = run_id, failed_nodes
        self.upstream = project.upstream(node.name)
        # upstream nodes finished before this one started: their state is read once
        self.upstream_done = {u: store.completed(u) for u in self.upstream
                              if project.nodes[u].is_incremental}
        self._unrecorded: dict[str, list] = {}  # origin -> [(group, rows, seconds, keys)]
        self._last_flush = time.perf_counter()

    def _readiness(self, batch: list[Pair]) -> tuple[list[Pair], list[tuple[Pair, str]]]:
        if not self.upstream:
            return batch, []
        completed = self.upstream_done
        ready, blocked = [], []
        for pair in batch:
            a_us, b_us = pair[0] * 1_000_000, pair[1] * 1_000_000
            reason = None
            for u in self.upstream:
                if u in self.failed_nodes and (
                    self.failed_nodes[u] is None
                    or self.failed_nodes[u].overlaps((from_epoch(pair[0]), from_epoch(pair[1])))
                ):
                    reason = f"upstream '{u}' failed for this interval"
                    break
                if u in completed and not completed[u].covers_us(a_us, b_us):
                    reason = f"{WAITING_FOR_UPSTREAM} '{u}' to complete this interval"
                    break
            if reason:
                blocked.append((pair, reason))
            else:
                ready.append(pair)
        return ready, blocked

    def flush(self) -> None:
        """Record the committed batches' completions: one state mutation per origin."""
        for origin, entries in self._unrecorded.items():
            self.store.mark_complete(
                self.node.name, IntervalSet.from_epoch_pairs(p for g, *_ in entries for p in g),
                origin=origin, run_id=self.run_id, rows=sum(e[1] for e in entries),
                duration=sum(e[2] for e in entries),
                partition_keys=[k for e in entries for k in e[3]], fingerprint=self.node.fingerprint)
        self._unrecorded.clear()
        self._last_flush = time.perf_counter()

    def run(self, batch: list[Pair]) -> None:
        ready, blocked = self._readiness(batch)
        self.result.skipped.extend(blocked)
        # recorded like failures, so the next run retries them first and `intervals show`
        # tells why they are missing
        by_reason: dict[str, list[Pair]] = {}
        for pair, reason in blocked:
            by_reason.setdefault(reason, []).append(pair)
        for reason, pairs in by_reason.items():
            self.store.mark_failed(self.node.name, IntervalSet.from_epoch_pairs(pairs),
                                   f"skipped: {reason}", origin=self._origin(pairs), run_id=self.run_id)
        for group in coalesce(ready, None):
            self._write(group)

    def _origin(self, group: list[Pair]) -> str:
        if self.origin:
            return self.origin
        reasons = {self.np.due.get(p, "new") for p in group}
        for reason in ("restate", "backfill", "partition"):
            if reason in reasons:
                return _ORIGIN[reason]
        return _mode(self.mode)

    def _write(self, group: list[Pair]) -> None:
        import duckdb

        from .engine.duckdb import ExecutionError

        node = self.node
        start, end = from_epoch(group[0][0]), from_epoch(group[-1][1])
        keys = [self.np.partition_keys[p] for p in group if p in self.np.partition_keys]
        t = time.perf_counter()
        try:
            sql = render_sql(node, start, end)
            if node.materialization == "parquet":
                rows = self.engine.write_parquet_intervals(
                    node, sql, [(from_epoch(a), from_epoch(b)) for a, b in group])
            else:
                rows = self.engine.write_batch(node, sql, start, end, keys or None)
        except (duckdb.Error, ExecutionError) as exc:  # the SQL's fault: these intervals fail
            whole_query = isinstance(exc, (duckdb.ParserException, duckdb.BinderException,
                                           duckdb.CatalogException))
            if len(group) > 1 and not whole_query:  # split to isolate the bad intervals
                mid = len(group) // 2
                self._write(group[:mid])
                self._write(group[mid:])
                return
            seconds = time.perf_counter() - t
            error = (f"node '{node.name}' interval {start.isoformat()} to {end.isoformat()}: "
                     f"{_error_text(exc)}")
            self.store.mark_failed(node.name, [(start, end)], error, origin=self._origin(group),
                                   run_id=self.run_id, duration=seconds)
            self.result.failures.extend((pair, error) for pair in group)
            self.progress.batch_finished(node.name, group, 0, seconds, error)
            return
        seconds = time.perf_counter() - t
        self._unrecorded.setdefault(self._origin(group), []).append((group, rows, seconds, keys))
        if time.perf_counter() - self._last_flush >= FLUSH_SECONDS:
            self.flush()
        self.result.done.extend(group)
        self.result.batches += 1
        self.result.rows += rows
        self.result.seconds += seconds
        self.progress.batch_finished(node.name, group, rows, seconds)


#: Completions of committed batches are written to the state store at most this often
#: (group commit). Data always commits first, so a crash in between only re-runs those
#: intervals idempotently; it never marks an interval complete without its rows.
FLUSH_SECONDS = 0.5


def run(
    project: Project,
    store: StateStore,
    *,
    engine: DuckDBEngine | None = None,
    progress: Progress | None = None,
    origin: str | None = None,
    run_id: str | None = None,
    **plan_options,
) -> RunResult:
    """Plan and execute in one call."""
    return execute(plan(project, store, **plan_options), project, store, engine=engine,
                   progress=progress, origin=origin, run_id=run_id)


__all__ = [
    "WAITING_FOR_UPSTREAM", "NodePlan", "NodeResult", "Plan", "PlanError", "Progress", "RunResult",
    "coalesce", "execute", "needs_database", "partition_interval", "plan", "restate",
    "restatement_impact", "run",
]
