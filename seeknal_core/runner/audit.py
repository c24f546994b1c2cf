"""Audits over history (``seeknal audit``): check completed intervals without recomputing.

Each contiguous run of completed intervals is checked by the node's engine in one query
per audit at most (``Engine.audit_intervals``), never one per interval; the report lists
the intervals that fail.  ``restate_failures`` records restatements of them, cascading
downstream like ``intervals restate``, each with the reason ``audit <name> failed: N rows``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import grid
from ..engines import Engine, open_engine
from ..intervals import IntervalSet
from ..project import Project
from ..project.audits import Audit
from ..timeutil import TimeLike, from_epoch, to_epoch
from .common import Pair, PlanError
from .execute import WHOLE_TABLE, describe_failure
from .plan import node_bounds, range_bounds
from .restate import restate

if TYPE_CHECKING:
    from ..state import StateStore


@dataclass(frozen=True)
class IntervalFailure:
    """One audit failing on one completed interval."""

    interval: Pair
    audit: Audit
    rows: int
    samples: tuple[dict, ...] = ()

    @property
    def message(self) -> str:
        return describe_failure(self.audit, self.rows, self.samples)


@dataclass
class NodeAudit:
    """What ``seeknal audit`` found for one node."""

    node: str
    #: a table node (no schedule): its audits checked the whole table (``built``: it exists);
    #: its failures' ``interval`` is ``WHOLE_TABLE``
    table: bool = False
    built: bool = False
    #: the completed intervals checked, as contiguous runs
    runs: list[Pair] = field(default_factory=list)
    intervals: int = 0
    failures: list[IntervalFailure] = field(default_factory=list)
    queries: int = 0

    @property
    def blocking_failed(self) -> bool:
        return any(f.audit.blocking for f in self.failures)


def audit_completed(
    project: Project,
    store: StateStore,
    nodes: Iterable[str] | None = None,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    *,
    now: TimeLike | None = None,
    engine: Engine | Mapping[str, Engine] | None = None,
) -> list[NodeAudit]:
    """Run the audits of ``nodes`` (default: every node with audits) over their completed
    intervals overlapping ``[start, end)`` (naive bounds in each node's timezone; default
    all of them); a table node's over its whole table.  Engines handed in are the
    caller's; others are opened and closed here."""
    names = project.topological_order(list(nodes)) if nodes else project.topological_order()
    selected = [project.nodes[n] for n in names if project.nodes[n].audits]
    now_s = to_epoch(now) if now is not None else int(time.time())
    given = dict(engine) if isinstance(engine, Mapping) else ({engine.name: engine} if engine else {})
    opened: list[Engine] = []
    states = store.load()
    reports: list[NodeAudit] = []
    try:
        def engine_for(kind: str) -> Engine:
            if kind not in given:
                given[kind] = open_engine(kind, project)
                opened.append(given[kind])
            return given[kind]

        for node in selected:
            if not node.is_incremental:  # a table node: the whole table, whatever the window
                reports.append(_audit_table(engine_for(node.engine), node))
                continue
            report = NodeAudit(node.name)
            reports.append(report)
            state = states.get(node.name)
            completed = state.completed if state else IntervalSet()
            lo, hi = range_bounds(start, end, node.timezone)
            _, limit = node_bounds(node, now_s)
            hi = limit if hi is None else min(hi, limit)
            pairs = [p for a, b in completed.pairs() for p in grid.expand(node.schedule, a, b)
                     if (lo is None or p[1] > lo) and p[0] < hi]
            if not pairs:
                continue
            kind = node.engine
            if not hasattr(engine_for(kind), "audit_intervals"):
                raise PlanError(f"node '{node.name}': engine '{kind}' cannot audit completed intervals yet")
            for a, b in grid.fuse(pairs):
                members = [p for p in pairs if a <= p[0] and p[1] <= b]
                report.runs.append((a, b))
                report.intervals += len(members)
                found = given[kind].audit_intervals(node, node.audits, members)
                report.queries += len(node.audits)
                for audit, failing in zip(node.audits, found):
                    report.failures += [IntervalFailure(pair, audit, n, samples)
                                        for pair, (n, samples) in sorted(failing.items())]
            report.failures.sort(key=lambda f: (f.interval, f.audit.name))
    finally:
        for opened_engine in reversed(opened):
            opened_engine.close()
    return reports


def _audit_table(engine: Engine, node) -> NodeAudit:
    """A table node's audits over its whole published table (nothing to check before its
    first build)."""
    check = getattr(engine, "audit_table", None)
    if check is None:
        raise PlanError(f"node '{node.name}': engine '{engine.name}' cannot audit a table node yet")
    report = NodeAudit(node.name, table=True)
    found = check(node, node.audits)
    if found is not None:
        report.built, report.queries = True, len(node.audits)
        report.failures = [IntervalFailure(WHOLE_TABLE, audit, n, samples)
                           for audit, (n, samples) in zip(node.audits, found) if n]
    return report


def restate_failures(project: Project, store: StateStore, reports: list[NodeAudit], *,
                     actor: str | None = None, now: TimeLike | None = None) -> dict[str, list[Pair]]:
    """Restate every interval a blocking audit fails (downstream included), reason ``audit
    <name> failed: N rows``; contiguous intervals with the same reason share one
    restatement.  Warnings (non-blocking audits) restate nothing: their intervals stay
    complete by definition.  Returns the restated intervals per node."""
    impact: dict[str, set[Pair]] = {}
    for report in (r for r in reports if not r.table):  # a table is rebuilt whole by every run
        reasons: dict[Pair, list[str]] = {}
        for f in (f for f in report.failures if f.audit.blocking):
            reasons.setdefault(f.interval, []).append(f.audit.failure(f.rows, f.samples))
        groups: list[tuple[Pair, str]] = []
        for pair, why in sorted(reasons.items()):
            text = "; ".join(why)
            if groups and groups[-1][1] == text and groups[-1][0][1] == pair[0]:
                groups[-1] = ((groups[-1][0][0], pair[1]), text)
            else:
                groups.append((pair, text))
        for (a, b), text in groups:
            done = restate(project, store, [report.node], from_epoch(a), from_epoch(b), text,
                           actor=actor, now=now)
            for name, pairs in done.items():
                impact.setdefault(name, set()).update(pairs)
    return {name: sorted(pairs) for name, pairs in impact.items()}


__all__ = ["IntervalFailure", "NodeAudit", "audit_completed", "restate_failures"]
