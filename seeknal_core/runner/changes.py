"""Change plans: what a definition change does to a node's history and to its readers.

State records, per node, the definition its completed intervals were computed with (its
fingerprint and the definition itself).  ``change_plan`` compares it with the project:
per node new, unchanged or changed; for a change, what changed, the category and which
intervals must be recomputed, here and downstream, down to the column (a reader of
none of the changed columns is not affected; a non-breaking change restates only the
node itself).  A schedule or timezone change keeps completed ranges: on the new grid
only intervals that history covers partly are recomputed.

``record_changes`` records the restatements and the new definitions (the door's
``policy.apply_changes`` then runs them), so the CLI (``seeknal plan --apply``),
``on_change: apply`` and an orchestrator's job share it.  The runner keeps the recorded
definition until a plan is applied, so a change stays visible however many runs pass.  Recording is one store
mutation (``StateStore.record_plan``): a crash leaves the whole plan recorded or none of
it, and a changed node's pending restatements count as changed rows for its readers, so
a plan made after an older, partly recorded apply still restates them.  Every changed
node's SQL is rendered and parsed while planning, so a template or syntax error stops
the plan before anything is recorded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ProjectError
from ..intervals import IntervalSet
from ..project import Project, TransformNode
from ..timeutil import UTC, TimeLike, from_epoch, to_epoch
from .common import Pair
from .plan import grid_pairs, node_bounds

if TYPE_CHECKING:
    from .. import changes as sql_changes
    from ..state import NodeState, StateStore
    from .execute import RunResult

#: the definition fields a plan compares, in the order it reports them
FIELDS = ("sql", "schedule", "timezone", "time_column", "materialization", "engine", "audits")
#: fields whose change restates nothing: audits check what is written, they do not change
#: it (``seeknal audit`` checks history against new audits)
_CHECKS_ONLY = frozenset({"audits"})
_FOREVER = 2**35  # seconds: an end beyond any schedule's last tick (year 3058)


@dataclass
class NodeChange:
    """One node's entry in a change plan.

    ``status``: ``new`` (nothing recorded), ``unchanged`` or ``changed`` (its own
    definition); ``fields``: which definition fields changed; ``category``:
    ``breaking``/``non-breaking`` for a changed node; ``upstream``: changed nodes whose
    columns it reads (then it is restated too); ``restate``: intervals to recompute.
    """

    node: str
    status: str
    fields: tuple[str, ...] = ()
    category: str | None = None
    sql: sql_changes.SqlChange | None = None
    diff: list[str] = field(default_factory=list)
    grid_note: str | None = None
    upstream: tuple[str, ...] = ()
    affected_columns: tuple[str, ...] = ()
    restate: list[Pair] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    planned: bool = True  # False: changed, but left out by a node selection

    @property
    def affected(self) -> bool:
        return self.status == "changed" or bool(self.upstream)

    def summary(self) -> str:
        """``daily_revenue filter``: the node and what changed in it, in words."""
        words = [w for f in self.fields for w in (self.sql.parts if f == "sql" and self.sql else (
            f.replace("_", " "),))]
        return f"{self.node} {', '.join(dict.fromkeys(words))}".strip()


@dataclass
class ChangePlan:
    """Every node's entry, upstream first, for the plan's clock and ``since`` bound."""

    now: dt.datetime
    since: TimeLike | None
    nodes: list[NodeChange]
    #: restated intervals not recomputed yet (an earlier apply or restatement), per node (of
    #: the selected nodes and their readers): what applying this plan runs even when no
    #: definition changed
    pending: dict[str, list[Pair]] = field(default_factory=dict)

    def entry(self, name: str) -> NodeChange:
        return next(n for n in self.nodes if n.node == name)

    @property
    def changed(self) -> list[NodeChange]:
        return [n for n in self.nodes if n.status == "changed" and n.planned]

    @property
    def restatements(self) -> dict[str, list[Pair]]:
        return {n.node: n.restate for n in self.nodes if n.restate}

    @property
    def total_intervals(self) -> int:
        return sum(len(n.restate) for n in self.nodes)

    def default_reason(self) -> str:
        """``definition changed: daily_revenue filter; hourly columns``."""
        return "definition changed: " + "; ".join(n.summary() for n in self.changed)


def changed_nodes(project: Project, store: StateStore) -> list[str]:
    """Nodes whose recorded definition differs from their own (cheap: fingerprints first,
    the recorded definitions only for nodes whose fingerprint does not match)."""
    recorded = store.fingerprints()
    suspects = [n for n in project.topological_order()
                if n in recorded and not project.nodes[n].fingerprint_matches(recorded[n])]
    states = store.load() if suspects else {}
    return [n for n in suspects if not project.nodes[n].fingerprint_matches(
        recorded[n], getattr(states.get(n), "definition", None))]


def change_plan(
    project: Project,
    store: StateStore,
    nodes: Iterable[str] | None = None,
    *,
    since: TimeLike | None = None,
    now: TimeLike | None = None,
) -> ChangePlan:
    """Compare every node's definition with the recorded one and plan the restatements.

    ``nodes`` limits which changes are planned (their readers are still followed);
    ``since`` restates only intervals from that instant on (naive: each node's timezone).
    """
    from .. import changes as sql_changes  # sqlglot: imported only when a plan is made

    now_dt = dt.datetime.now(UTC) if now is None else from_epoch(to_epoch(now))
    now_s = to_epoch(now_dt)
    wanted = set(project.topological_order(nodes)) if nodes else None
    scope = None if wanted is None else wanted.union(*(project.downstream(n) for n in wanted))
    states = store.load()
    analyses = _Analyses(project)
    effects: dict[str, sql_changes.Effect | None] = {}  # what readers of a node see change
    spans: dict[str, IntervalSet | None] = {}  # restated instants per node (None: all of it)
    pending_of: dict[str, list[Pair]] = {}
    out: list[NodeChange] = []
    for name in project.topological_order():
        node, state = project.nodes[name], states.get(name)
        entry = _own_change(node, state, analyses)
        if wanted is not None and name not in wanted and entry.status == "changed":
            entry.planned = False
            entry.notes.append("changed, but not among the selected nodes: not planned")
        out.append(entry)
        done = state.completed if state else IntervalSet()
        lo = None if since is None else to_epoch(since, node.timezone)
        own = _own_restatement(node, entry, done, lo, now_s) if entry.planned else []
        effect = sql_changes.effect_of(entry.sql) if entry.sql and entry.planned else None
        if entry.planned and entry.status == "changed" and "time_column" in entry.fields:
            effect = sql_changes.Effect(True, frozenset({sql_changes.ALL}))
        upstream = {u: effects[u] for u in project.upstream(name) if effects.get(u)}
        if upstream:
            reach = sql_changes.propagate(analyses.query(name), upstream)
            if reach is not None:
                entry.upstream = tuple(upstream)
                entry.affected_columns = tuple(sorted(reach.columns))
                effect = reach if effect is None else sql_changes.Effect(
                    effect.rows or reach.rows, effect.columns | reach.columns)
                own = sorted(set(own) | set(_downstream_pairs(node, done, [spans[u] for u in upstream],
                                                               lo, now_s)))
            else:
                entry.notes.append(f"reads none of the changed columns of {', '.join(upstream)}")
        entry.restate = own
        effects[name] = effect
        waiting = _pending_span(state)  # restated, not recomputed: changed rows for readers too
        spans[name] = None if not node.is_incremental else IntervalSet.from_pairs(own).union(waiting)
        if node.is_incremental and waiting and (scope is None or name in scope):
            pairs = grid_pairs(node.schedule, waiting, node_bounds(node, now_s)[1])
            pending = [p for p in pairs if not done.covers(*p)]
            if pending:
                pending_of[name] = pending
    plan = ChangePlan(now=now_dt, since=since, nodes=out, pending=pending_of)
    check_renders(project, plan)
    return plan


def _pending_span(state: NodeState | None) -> IntervalSet:
    """The intervals of the node's pending restatements."""
    if state is None or not state.pending_restatements:
        return IntervalSet()
    return IntervalSet(iv for r in state.pending_restatements for iv in r.intervals)


def check_renders(project: Project, plan: ChangePlan) -> None:
    """Render and parse every changed node's SQL (its first restated interval, or the
    latest one), so a template error or SQL its engine cannot parse is a ``ProjectError``
    while planning, before anything is recorded."""
    from ..engines import syntax_error
    from ..templating import render_sql, where

    for entry in plan.changed:
        node = project.nodes[entry.node]
        if not node.is_incremental:
            sql = render_sql(node, None, None)
        else:
            if entry.restate:
                a, b = entry.restate[0]
            else:
                b = node.schedule.tick_at_or_before(to_epoch(plan.now))
                a = node.schedule.tick_before(b)
            sql = render_sql(node, from_epoch(a), from_epoch(b))
        why = syntax_error(node, sql)
        if why:
            raise ProjectError(f"{where(node)}: its SQL does not parse: {why} — fix the SQL; "
                               "nothing was recorded")


class _Analyses:
    """Parsed, qualified SQL per node, each upstream's output columns as its schema."""

    def __init__(self, project: Project):
        self.project = project
        self._queries: dict[str, sql_changes.Query] = {}

    def schema(self, name: str) -> dict[str, tuple[str, ...]]:
        out = {}
        for u in self.project.upstream(name):
            columns = self.query(u).known_outputs
            if columns is not None:
                out[u] = columns
        return out

    def query(self, name: str) -> sql_changes.Query:
        if name not in self._queries:
            from .. import changes as sql_changes

            node = self.project.nodes[name]
            self._queries[name] = sql_changes.analyse(node.normalized_sql, node.dialect, self.schema(name))
        return self._queries[name]


def _own_change(node: TransformNode, state: NodeState | None, analyses: _Analyses) -> NodeChange:
    if state is None or not state.fingerprint:
        return NodeChange(node.name, "new")
    if node.fingerprint_matches(state.fingerprint, state.definition):
        return NodeChange(node.name, "unchanged")
    from .. import changes as sql_changes

    old, new = state.definition, node.definition
    if not old:
        return NodeChange(node.name, "changed", fields=("definition",), category="breaking",
                          sql=sql_changes.SqlChange(changed=True, rows=True, parts=("definition",)),
                          notes=["the definition these intervals were computed with was not "
                                 "recorded: every interval is restated"])
    fields = tuple(f for f in FIELDS if old.get(f) != new.get(f))
    entry = NodeChange(node.name, "changed" if fields else "unchanged", fields=fields)
    if not fields:
        return entry
    breaking = "time_column" in fields
    if "sql" in fields:
        change = sql_changes.classify(str(old.get("sql") or ""), new["sql"], node.dialect,
                                      analyses.schema(node.name))
        if change.changed:
            entry.sql = change
            entry.diff = sql_changes.diff(str(old.get("sql") or ""), new["sql"], node.dialect)
            breaking = breaking or change.breaking
        else:
            entry.fields = fields = tuple(f for f in fields if f != "sql")
            if not fields:
                entry.status = "unchanged"
                return entry
    entry.category = "breaking" if breaking else "non-breaking"
    if "audits" in fields:
        entry.notes.append(_audit_note(old.get("audits") or [], new.get("audits") or []))
    if {"schedule", "timezone"} & set(fields) and node.is_incremental:
        entry.grid_note = ("completed ranges stay valid on the new grid; intervals they cover "
                           "only partly are recomputed")
    return entry


def _audit_note(old: list, new: list) -> str:
    """``audits added: x; removed: y; changed: z`` — and that they restate nothing."""
    before = {a.get("name"): a for a in old if isinstance(a, dict)}
    after = {a.get("name"): a for a in new if isinstance(a, dict)}
    parts = [f"{word}: {', '.join(str(n) for n in names)}" for word, names in (
        ("added", [n for n in after if n not in before]),
        ("removed", [n for n in before if n not in after]),
        ("changed", [n for n in after if n in before and before[n] != after[n]])) if names]
    return (f"audits {'; '.join(parts) or 'reordered'} — restates nothing "
            "(`seeknal audit` checks completed intervals)")


def _own_restatement(node: TransformNode, entry: NodeChange, done: IntervalSet, lo: int | None,
                     now_s: int) -> list[Pair]:
    """The node's own intervals a change of its definition invalidates."""
    if entry.status != "changed" or not node.is_incremental or not done:
        return []
    fields = set(entry.fields) - _CHECKS_ONLY
    if not fields:
        return []
    _, limit = node_bounds(node, now_s)
    span = done if lo is None else done.intersection([(from_epoch(lo), from_epoch(_FOREVER))])
    pairs = grid_pairs(node.schedule, span, limit)
    if fields <= {"schedule", "timezone"}:  # history stays; partial intervals redo
        return [p for p in pairs if not done.covers(*p)]
    return pairs


def _downstream_pairs(node: TransformNode, done: IntervalSet, upstream: list[IntervalSet | None],
                      lo: int | None, now_s: int) -> list[Pair]:
    """The completed intervals of a reader that overlap what its upstream recomputes (an
    unscheduled upstream is rebuilt whole: every interval from ``lo`` on)."""
    if not node.is_incremental or not done:
        return []
    _, limit = node_bounds(node, now_s)
    if any(s is None for s in upstream):
        reach = [(from_epoch(lo if lo is not None else 0), from_epoch(_FOREVER))]
    else:
        reach = IntervalSet().union(p for s in upstream for p in s)
    return grid_pairs(node.schedule, done.intersection(reach), limit)


# -- applying a plan -----------------------------------------------------------------------------
@dataclass
class ApplyResult:
    reason: str
    restated: dict[str, list[Pair]]
    recorded: list[str]
    run: RunResult | None = None
    #: restated intervals an earlier apply or restatement left to recompute (``ChangePlan.pending``)
    pending: dict[str, list[Pair]] = field(default_factory=dict)


def record_changes(project: Project, store: StateStore, plan: ChangePlan, *, reason: str | None = None,
                   actor: str | None = None) -> ApplyResult:
    """Record the plan's restatements (the changed nodes', then their readers' with the
    cascade named) and the changed nodes' new fingerprints and definitions, in one store
    mutation (``StateStore.record_plan``): all of it or, after a crash, none."""
    why = (reason or "").strip() or plan.default_reason()
    direct = {n.node: n.restate for n in plan.changed if n.restate}
    readers = {n.node: n.restate for n in plan.nodes if n.restate and n.node not in direct}
    groups = []
    if direct:
        groups.append(({n: IntervalSet.from_pairs(p) for n, p in direct.items()}, why))
    if readers:
        groups.append(({n: IntervalSet.from_pairs(p) for n, p in readers.items()},
                       f"{why} (downstream of {', '.join(n.node for n in plan.changed)})"))
    definitions = {n.node: (project.nodes[n.node].fingerprint, project.nodes[n.node].definition)
                   for n in plan.changed}
    if groups or definitions:
        store.record_plan(groups, definitions, actor)
    return ApplyResult(reason=why, restated={**direct, **readers}, recorded=list(definitions),
                       pending=dict(plan.pending))


def rerun_nodes(result: ApplyResult) -> list[str]:
    """The nodes a run after ``record_changes`` must visit: the restated ones and those
    with restatements still pending from before."""
    return list(dict.fromkeys([*result.restated, *result.pending]))
