"""Execute a plan: per node, per batch, write the data, then mark its intervals complete.

Each batch is written by the engine in one transaction and only then recorded, so a
crash between the two causes an idempotent re-run, never a false "complete".  Progress
is reported through a ``Progress`` object the CLI (or Dagster) renders.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .. import grid
from ..engines import BatchError, Engine, EnginePool, QueryError, ResourceError, uses_database
from ..engines.base import Outcome
from ..errors import SeeknalError, StateNotRecordedError
from ..intervals import IntervalSet
from ..project import Project, TransformNode
from ..project.audits import Audit, AuditResult
from ..reasons import Mode, recorded_mode
from ..templating import compile_sql, render_sql
from ..timeutil import from_epoch
from .common import WAITING_FOR_UPSTREAM, Pair
from .digests import read_digests
from .plan import NodePlan, Plan, partition_key

if TYPE_CHECKING:
    from ..state import StateStore


class Progress:
    """Callbacks during execution; the default does nothing."""

    def node_started(self, node: str, plan: NodePlan, batches: int) -> None: ...

    def batch_finished(self, node: str, batch: list[Pair], rows: int, seconds: float,
                       error: str | None = None) -> None: ...

    def node_finished(self, result: NodeResult) -> None: ...


class NodeResult:  # a plain class: a dataclass costs every process ~0.1 ms to create
    """What one node's run did: the intervals done, failed and skipped, rows and time."""

    def __init__(self, node: str, full_refresh: bool = False) -> None:
        self.node = node
        self.done: list[Pair] = []
        self.batches = 0
        self.rows = 0
        self.seconds = 0.0
        self.failures: list[tuple[Pair, str]] = []
        #: each completed interval with the rows written for it, in the order they ran
        self.interval_rows: list[tuple[Pair, int]] = []
        self.skipped: list[tuple[Pair, str]] = []
        self.full_refresh = full_refresh
        #: one per audit per batch that ended checked: each committed batch (passed or warned,
        #: over the batch's range) and each isolated failed interval (the blocking failure)
        self.audit_results: list[AuditResult] = []
        #: (name, type) of the written output's columns, when its engine says (``output_columns``)
        self.columns: list[tuple[str, str]] = []

    @property
    def warnings(self) -> list[AuditResult]:
        """Non-blocking audits that failed on completed intervals (not on failed ones)."""
        failed = {p for p, _ in self.failures}
        return [r for r in self.audit_results if not r.passed and not r.blocking and r.interval not in failed]

    def to_dict(self) -> dict:
        def iso(p: Pair) -> dict:
            if p == WHOLE_TABLE:  # a table node: no interval
                return {"start": None, "end": None}
            return {"start": from_epoch(p[0]).isoformat(), "end": from_epoch(p[1]).isoformat()}
        return {
            "node": self.node, "intervals": len(self.done), "batches": self.batches,
            "rows": self.rows, "seconds": round(self.seconds, 4), "full_refresh": self.full_refresh,
            "failures": [{**iso(p), "error": e} for p, e in self.failures],
            "skipped": [{**iso(p), "reason": r} for p, r in self.skipped],
            "audits": [{"audit": r.audit, **iso(r.interval), "blocking": r.blocking, "passed": r.passed,
                        "rows": r.rows, "samples": [{k: _plain(v) for k, v in s.items()} for s in r.samples]}
                       for r in self.audit_results],
        }


def _plain(value):
    """A sample value as JSON can hold it (dates and decimals as text)."""
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


class RunResult:  # a plain class: a dataclass costs every process ~0.1 ms to create
    """What a run did: one ``NodeResult`` per node that ran."""

    def __init__(self, nodes: list[NodeResult], seconds: float, stopped: str | None = None) -> None:
        self.nodes, self.seconds = nodes, seconds
        #: why the run stopped early (disk full, database locked): the later nodes did not run
        self.stopped = stopped
        #: what ran (``policy.run`` sets it) and the run-level notes of its policies
        self.plan: Plan | None = None
        self.notes: list[str] = []

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
    engine: Engine | Mapping[str, Engine] | EnginePool | None = None,
    progress: Progress | None = None,
    origin: str | None = None,
    run_id: str | None = None,
    describe: bool = True,
) -> RunResult:
    """Run the plan: per node, per batch, write then mark complete; isolate failures.

    ``engine`` hands in the caller's engine(s) (one, a mapping by name, or the caller's
    ``EnginePool``, which it then closes itself); the engines a node needs beyond those
    are opened on first use and closed before returning.  ``describe``: read each written
    output's columns (``NodeResult.columns``, Dagster's table schema; the CLI shows none)."""
    progress = progress or Progress()
    owned = not isinstance(engine, EnginePool)
    engines = EnginePool(project, engine, database=plan_uses_database(project, the_plan)) if owned else engine
    t0 = time.perf_counter()
    results: list[NodeResult] = []
    stopped: str | None = None
    failed_nodes: dict[str, IntervalSet | None] = {}  # None: the whole node failed
    for node_plan in the_plan.nodes:
        if node_plan.due or node_plan.full_refresh:  # template errors stop the run before any write
            compile_sql(project.nodes[node_plan.node])
    try:
        for node_plan in the_plan.nodes:
            node = project.nodes[node_plan.node]
            result = NodeResult(node=node_plan.node, full_refresh=node_plan.full_refresh)
            results.append(result)
            if node_plan.full_refresh:
                progress.node_started(node_plan.node, node_plan, 1)
                _refresh(engines.for_node(node), store, node, result, progress,
                         origin or the_plan.mode, run_id, failed_nodes)
            elif node_plan.due:
                progress.node_started(node_plan.node, node_plan, node_plan.batch_count())
                runner = _NodeRunner(engines.for_node(node), store, project, node, node_plan, result,
                                     progress, origin, the_plan.mode, run_id, failed_nodes)
                try:
                    for batch in node_plan.due.batches(node_plan.batch_size):  # listed one at a time
                        runner.run(batch)
                finally:
                    runner.flush()
                if result.failures:
                    failed_nodes[node_plan.node] = IntervalSet.from_pairs(p for p, _ in result.failures)
            else:
                continue
            if describe and (result.done or (node_plan.full_refresh and not result.failures)):
                result.columns = _output_columns(engines.for_node(node), node)
            progress.node_finished(result)
    except _Stop as stop:  # recorded once where it happened; nothing later could succeed
        stopped = str(stop)
        progress.node_finished(results[-1])
    finally:
        if owned:
            engines.close()
    return RunResult(nodes=results, seconds=time.perf_counter() - t0, stopped=stopped)


def _output_columns(engine: Engine, node) -> list[tuple[str, str]]:
    describe = getattr(engine, "output_columns", None)
    return list(describe(node)) if describe is not None else []


class _Stop(Exception):
    """A batch hit a ``ResourceError`` (recorded as its failure): the run ends here."""


def plan_uses_database(project: Project, the_plan: Plan) -> bool:
    """Whether any node the plan writes uses the project's DuckDB file (else engines that
    read through it open in memory: no lock to share)."""
    return any(uses_database(project, project.nodes[node_plan.node])
               for node_plan in the_plan.nodes if node_plan.due or node_plan.full_refresh)


def renderer(engine: Engine):
    """What renders a node's SQL for ``engine``: its own ``render_sql`` when its dialect is
    not DuckDB's (Spark: transpiled once per node, variables rendered per batch), else the
    project's template rendering."""
    return getattr(engine, "render_sql", render_sql)


def _error_text(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


#: the range of a table node's failures and audit results: the whole table (no intervals)
WHOLE_TABLE: Pair = (0, 0)


def _refresh(engine, store, node, result, progress, mode, run_id, failed_nodes) -> None:
    """Full refresh of a table node: stage -> audit (over the whole new table) -> commit; a
    blocking failure keeps the old table and fails the node, a warning completes it."""
    t = time.perf_counter()
    checked: list[tuple[Audit, Outcome]] = []
    try:
        sql = renderer(engine)(node, None, None)
        if node.audits:
            stage = getattr(engine, "stage_replace", None)
            if stage is None:
                raise QueryError(f"engine '{engine.name}' cannot audit a table node yet: remove `audits:` "
                                 f"from node '{node.name}', give it a schedule, or run it on duckdb")
            staged = stage(node, sql)
            checked = audited(staged, node.audits)
            rows = staged.rows[0]
        else:
            rows = engine.replace_table(node, sql)
    except (QueryError, BatchError, ResourceError, AuditFailed) as exc:  # recorded; the run goes on
        error = f"node '{node.name}': {_error_text(exc)}"
        result.failures.append((WHOLE_TABLE, error))
        if isinstance(exc, AuditFailed):
            result.audit_results.extend(AuditResult(a.name, WHOLE_TABLE, a.blocking, n, samples)
                                        for a, (n, samples) in exc.checked)
        failed_nodes[node.name] = None  # the whole table failed
        store.record_execution(node.name, (), mode=Mode.of_plan(mode), status="failed", error=error,
                               run_id=run_id, duration=time.perf_counter() - t)
        progress.batch_finished(node.name, [], 0, time.perf_counter() - t, error)
        if isinstance(exc, ResourceError):
            raise _Stop(error) from exc
        return
    seconds = time.perf_counter() - t
    result.rows, result.batches, result.seconds = rows, 1, seconds
    store.record_execution(node.name, (), mode=Mode.of_plan(mode), status="success", rows=rows,
                           duration=seconds, run_id=run_id)
    for audit, (n, samples) in checked:
        result.audit_results.append(AuditResult(audit.name, WHOLE_TABLE, audit.blocking, n, samples))
        if n:  # a failed warning, after the success it qualifies
            store.record_execution(node.name, (), mode=Mode.of_plan(mode), status="warning",
                                   error=describe_failure(audit, n, samples), run_id=run_id)
    progress.batch_finished(node.name, [], rows, seconds)


def audited(staged, audits: tuple[Audit, ...]) -> list[tuple[Audit, Outcome]]:
    """Run ``audits`` on ``staged`` and commit it unless a blocking one failed (then roll
    back and raise ``AuditFailed``); any error rolls back.  (audit, outcome) pairs."""
    try:
        checked = list(zip(audits, staged.check(audits)))
        failed = [(a, o) for a, o in checked if a.blocking and o[0]]
        if failed:
            staged.rollback()
            raise AuditFailed(failed, checked)
        staged.commit()
    except AuditFailed:
        raise
    except BaseException:
        staged.rollback()
        raise
    return checked


class _NodeRunner:
    """Runs one node's batches: readiness against upstream state, write, record,
    and binary splitting of a failed batch to isolate the bad intervals."""

    def __init__(self, engine, store, project, node, node_plan, result, progress, origin, mode, run_id,
                 failed_nodes):
        self.engine, self.store, self.node, self.node_plan = engine, store, node, node_plan
        self.project = project
        self.result, self.progress, self.origin, self.mode = result, progress, origin, mode
        self.run_id, self.failed_nodes = run_id, failed_nodes
        self.render = renderer(engine)
        self.upstream = project.upstream(node.name)
        # upstream nodes finished before this one started: their state is read once
        self.upstream_done = {u: store.completed(u) for u in self.upstream
                              if project.nodes[u].is_incremental}
        self._unrecorded: dict[str, list] = {}  # origin -> [([(pair, rows)], seconds, keys)]
        # input digests of intervals about to run, taken before their write (verify.py): one
        # grouped query per source for the next DIGEST_AHEAD due intervals (with small
        # batches) or per batch, read in the order batches come
        self._digests: dict[Pair, dict] = {}
        size = node_plan.batch_size
        self._ahead = node_plan.due.batches(None if size is None else max(size, DIGEST_AHEAD))
        self._warnings: list[tuple[Pair, str, str]] = []  # (interval, origin, message), after completion
        self._last_flush = time.perf_counter()

    def _readiness(self, batch: list[Pair]) -> tuple[list[Pair], list[tuple[Pair, str]]]:
        if not self.upstream:
            return batch, []
        completed = self.upstream_done
        ready, blocked = [], []
        for pair in batch:
            reason = None
            for u in self.upstream:
                if u in self.failed_nodes and (
                    self.failed_nodes[u] is None
                    or self.failed_nodes[u].overlaps((from_epoch(pair[0]), from_epoch(pair[1])))
                ):
                    reason = f"upstream '{u}' failed for this interval"
                    break
                if u in completed and not completed[u].covers(*pair):
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
            per_interval = [item for e in entries for item in e[0]]
            digests: dict[str, dict[int, tuple]] = {}
            for pair, _ in per_interval:
                for source, digest in self._digests.pop(pair, {}).items():
                    digests.setdefault(source, {})[pair[0]] = digest
            try:
                self.store.mark_complete(
                    self.node.name, IntervalSet.from_pairs(p for p, _ in per_interval),
                    origin=origin, run_id=self.run_id, rows=sum(n for _, n in per_interval),
                    duration=sum(e[1] for e in entries), partition_keys=[k for e in entries for k in e[2]],
                    fingerprint=None if self.node_plan.definition_changed else self.node.fingerprint,
                    definition=None if self.node_plan.definition_changed else self.node.definition,
                    interval_rows=per_interval, digests=digests or None)
            except (SeeknalError, OSError) as exc:
                first, last = from_epoch(per_interval[0][0][0]), from_epoch(per_interval[-1][0][1])
                raise StateNotRecordedError(
                    f"node '{self.node.name}': data written, state not recorded for "
                    f"{len(per_interval)} interval(s) {first.isoformat()} to {last.isoformat()}: "
                    f"{_error_text(exc)} — re-run `seeknal run`; re-running is safe") from None
        self._unrecorded.clear()
        for pair, origin, message in self._warnings:  # after the completion they qualify
            self.store.record_execution(self.node.name, [(from_epoch(pair[0]), from_epoch(pair[1]))],
                                        mode=origin, status="warning", error=message, run_id=self.run_id)
        self._warnings.clear()
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
            self.store.mark_failed(self.node.name, IntervalSet.from_pairs(pairs),
                                   f"skipped: {reason}", origin=self._origin(pairs), run_id=self.run_id)
        self._read_digests(ready)
        for group in grid.batches(ready):
            self._write(group)

    def _read_digests(self, ready: list[Pair]) -> None:
        """Digests of ``ready`` (unless read ahead already), reading the due intervals ahead
        in chunks; a source that cannot be read gives none (its intervals are unverifiable)."""
        missing = [p for p in ready if p not in self._digests]
        while missing and self._ahead is not None:
            chunk = next(self._ahead, None)
            if chunk is None:
                self._ahead = None
                break
            self._digests.update(read_digests(self.engine, self.project, self.node.name, chunk)[0])
            missing = [p for p in missing if p not in self._digests]
        if missing:
            self._digests.update(read_digests(self.engine, self.project, self.node.name, missing)[0])

    def _origin(self, group: list[Pair]) -> str:
        if self.origin:
            return self.origin
        return recorded_mode(self.node_plan.due.reasons_within(group[0][0], group[-1][1]), self.mode)

    def _write(self, group: list[Pair]) -> None:
        node = self.node
        start, end = from_epoch(group[0][0]), from_epoch(group[-1][1])
        keys = [partition_key(node, p) for p in group] if node.partition_column else []
        t = time.perf_counter()
        checked: list[tuple[Audit, Outcome]] = []
        try:
            if node.audits:
                counts, checked = self._stage_and_audit(node, self.render(node, start, end), group, keys)
            else:
                counts = self.engine.write_intervals(node, self.render(node, start, end), group, keys)
        except (QueryError, BatchError, ResourceError, AuditFailed) as exc:
            if isinstance(exc, BatchError | AuditFailed) and len(group) > 1:  # split: isolate bad intervals
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
            if isinstance(exc, AuditFailed):
                span = (group[0][0], group[-1][1])
                self.result.audit_results.extend(AuditResult(a.name, span, a.blocking, n, samples)
                                                 for a, (n, samples) in exc.checked)
            self.progress.batch_finished(node.name, group, 0, seconds, error)
            if isinstance(exc, ResourceError):  # the machine's fault: later batches fail alike
                raise _Stop(error) from exc
            return
        seconds = time.perf_counter() - t
        rows = sum(counts)
        per_interval = list(zip(group, counts))
        self._unrecorded.setdefault(self._origin(group), []).append((per_interval, seconds, keys))
        if checked:
            self._record_audits(group, checked)
        if time.perf_counter() - self._last_flush >= FLUSH_SECONDS:
            self.flush()
        self.result.done.extend(group)
        self.result.interval_rows.extend(per_interval)
        self.result.batches += 1
        self.result.rows += rows
        self.result.seconds += seconds
        self.progress.batch_finished(node.name, group, rows, seconds)

    def _stage_and_audit(self, node: TransformNode, sql: str, group: list[Pair], keys: list[str]
                         ) -> tuple[list[int], list[tuple[Audit, Outcome]]]:
        """Stage the batch, run its audits on the staged rows, commit unless a blocking one
        failed (then roll back and raise ``AuditFailed``); (rows per interval, outcomes)."""
        stage = getattr(self.engine, "stage", None)
        if stage is None:
            raise QueryError(f"engine '{self.engine.name}' cannot run audits yet: remove `audits:` "
                             f"from node '{node.name}' or run it on duckdb")
        staged = stage(node, sql, group, keys)
        return staged.rows, audited(staged, node.audits)

    def _record_audits(self, group: list[Pair], checked: list[tuple[Audit, Outcome]]) -> None:
        """The committed batch's audit results; each failed warning narrowed to the intervals
        it fails (one more query over the committed rows, only when one failed) and recorded
        in the audit log as a ``warning`` execution of those intervals, after their
        completion (a later completion of an interval clears its warning)."""
        span = (group[0][0], group[-1][1])
        warned = [a for a, (n, _) in checked if n]
        per_interval: list[dict[Pair, Outcome]] = []
        if warned and len(group) > 1 and hasattr(self.engine, "audit_intervals"):
            per_interval = self.engine.audit_intervals(self.node, warned, group)
        narrowed = dict(zip([a.name for a in warned], per_interval))
        for audit, (n, samples) in checked:
            failing = narrowed.get(audit.name)
            if not n:
                self.result.audit_results.append(AuditResult(audit.name, span, audit.blocking, 0, ()))
                continue
            if not failing:  # one interval, or an engine that cannot narrow: the whole batch
                failing = {span: (n, samples)}
            for pair in group:  # passed runs between the failing intervals are results too
                if pair not in failing:
                    self.result.audit_results.append(AuditResult(audit.name, pair, audit.blocking, 0, ()))
            for pair, (rows, some) in sorted(failing.items()):
                self.result.audit_results.append(AuditResult(audit.name, pair, audit.blocking, rows, some))
                self._warnings.append((pair, self._origin(group), describe_failure(audit, rows, some)))


class AuditFailed(SeeknalError):
    """A blocking audit failed on a staged batch (rolled back): the runner isolates the
    failing intervals like a ``BatchError``.  ``failed``/``checked``: (audit, outcome) pairs."""

    def __init__(self, failed: list[tuple[Audit, Outcome]], checked: list[tuple[Audit, Outcome]]):
        self.failed, self.checked = failed, checked
        super().__init__("; ".join(describe_failure(a, n, samples) for a, (n, samples) in failed))


def describe_failure(audit: Audit, rows: int, samples) -> str:
    """``audit <name> failed: N rows; samples: a=1, b=NULL | ...`` on one line."""
    text = audit.failure(rows, samples)
    if samples and audit.kind != "row_count":
        shown = " | ".join(", ".join(f"{k}={'NULL' if v is None else v}" for k, v in s.items())
                           for s in samples)
        text += f"; samples: {shown}"
    return text


#: With small batches, input digests are read for this many due intervals at once (one
#: grouped query per source), not per batch: ``batch_size: 1`` would pay a query per interval.
DIGEST_AHEAD = 1000

#: Completions of committed batches are written to the state store at most this often
#: (group commit). Data always commits first, so a crash in between only re-runs those
#: intervals idempotently; it never marks an interval complete without its rows.
FLUSH_SECONDS = 0.5
