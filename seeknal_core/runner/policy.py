"""The one door into the runner: the project's policies applied in one place, then plan
and execute.

``seeknal run``, ``seeknal plan --apply``'s run phase, the Dagster assets and the
``seeknal_apply_changes`` job all call ``prepare`` (or ``run``, which is ``prepare`` then
``execute`` over one set of engines), so a rule holds for every door alike:

1. ``on_change`` (``apply_on_change``): a selected node whose definition changed since
   its intervals were computed is refused (``fail``: ``DefinitionsChanged``, nothing
   written), recorded as a change plan first (``apply``), or noted (``warn``; and on any
   dry run) by the planner's one ``CHANGED_NOTE``.
2. Start inference (``infer_starts``): a scheduled node without ``start:`` and nothing
   recorded starts at its sources' earliest time, recorded with ``set_inferred_start``.
3. Planning (``plan.plan``, lookback included) over the state loaded once, here.
4. Readiness (``readiness.hold_back``): intervals whose sources' data is not in are
   moved from ``NodePlan.due`` to ``NodePlan.waiting`` (one query per source), unless
   ``ignore_readiness``.
5. Execution (``execute.execute``), where audits run per batch.

Notes come back as data (``Prepared.notes``, each ``NodePlan.notes``, ``RunResult.notes``);
each door shows them its own way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..engines import Engine, EngineOptions, EnginePool, QueryError, uses_database
from ..errors import SeeknalError
from ..project import Project, SourceNode
from ..timeutil import TimeLike, from_epoch, get_zone
from .execute import Progress, RunResult, execute, plan_uses_database
from .plan import Plan, plan, time_sources
from .readiness import hold_back, needs_database

if TYPE_CHECKING:
    from ..state import NodeState, StateStore
    from .changes import ApplyResult, ChangePlan


class DefinitionsChanged(SeeknalError):
    """``on_change: fail`` and a selected node's definition changed: nothing ran."""


class Prepared:  # a plain class: a dataclass costs every process ~0.1 ms to create
    """A plan with the policies applied, and their run-level ``notes`` (the change plan
    ``on_change: apply`` recorded)."""

    def __init__(self, plan: Plan, notes: list[str] | None = None) -> None:
        self.plan = plan
        self.notes = notes if notes is not None else []


def changed_line(names: Sequence[str]) -> str:
    """The one line ``on_change: fail`` refuses with, at every door."""
    return (f"definitions changed since their intervals were computed: {', '.join(names)} — run "
            "`seeknal plan` to see the impact and `seeknal plan --apply` to restate, or set "
            "on_change: warn in seeknal_project.yml")


def apply_on_change(project: Project, store: StateStore, nodes: Iterable[str] | None = None, *,
                    now: TimeLike | None = None, dry_run: bool = False) -> list[str]:
    """The project's ``on_change`` policy for the selected nodes:
    raise ``DefinitionsChanged`` (``fail``), record their change plan (``apply``: its
    restatements are then due), or nothing (``warn``, and any dry run: the planner notes
    each changed node).  Returns the notes of what it did."""
    policy = project.on_change
    if policy == "warn" or dry_run:
        return []
    from . import changes  # only a project with on_change: apply pays for it

    nodes = None if nodes is None else list(nodes)
    selected = set(project.topological_order(nodes))
    changed = [n for n in changes.changed_nodes(project, store) if n in selected]
    if not changed:
        return []
    if policy == "fail":
        raise DefinitionsChanged(changed_line(changed))
    change_plan = changes.change_plan(project, store, nodes, now=now)
    result = changes.record_changes(project, store, change_plan)
    count = sum(len(p) for p in result.restated.values())
    return [f"Applied definition changes of {', '.join(changed)}: restated {count} "
            f"interval{'' if count == 1 else 's'} ({result.reason})"]


def infer_starts(project: Project, states: Mapping[str, NodeState], nodes: Iterable[str] | None,
                 engines: EnginePool, *, record: StateStore | None = None
                 ) -> tuple[dict[str, int], dict[str, str]]:
    """Starts of scheduled nodes without ``start:`` and nothing recorded: the earliest
    time in their sources (``time_sources``), one ``min()`` each through the node's own
    engine; recorded in ``record`` (none on a dry run).  (starts, a note per node)."""
    starts: dict[str, int] = {}
    notes: dict[str, str] = {}
    found: dict[tuple[str, str, str, str], int | None] = {}
    for name in project.topological_order(nodes):
        node = project.nodes[name]
        state = states.get(name)
        if not node.is_incremental or node.start is not None or (
                state is not None and (state.inferred_start is not None or state.completed)):
            continue
        best: tuple[int, str] | None = None
        for table, column in time_sources(project, name):
            key = (node.engine, table, column, node.timezone)  # naive times: the node's zone
            if key not in found:
                source = project.sources.get(table) or SourceNode(name=table, table=table)
                try:
                    found[key] = engines.get(node.engine).earliest(source, column, node.timezone)
                except QueryError:  # not there yet: nothing to infer from
                    found[key] = None
            value = found[key]
            if value is not None and (best is None or value < best[0]):
                best = (value, f"{table}.{column}")
        if best is None:
            continue
        starts[name] = best[0]
        local = from_epoch(best[0]).astimezone(get_zone(node.timezone))
        notes[name] = f"start inferred from {best[1]}: {local.date().isoformat()}"
        if record is not None:
            record.set_inferred_start(name, best[0])
    return starts, notes


def prepare(
    project: Project,
    store: StateStore,
    *,
    mode: str = "run",
    nodes: Iterable[str] | None = None,
    dry_run: bool = False,
    engines: EnginePool | None = None,
    now: TimeLike | None = None,
    ignore_readiness: bool = False,
    **plan_options: Any,
) -> Prepared:
    """The plan of a run with every policy applied (see the module's steps); a dry run
    changes nothing (no change plan recorded, no start recorded, never refused).

    ``engines``: the pool execution will use (``run_engines``; start inference and
    readiness read through it, so a process opens the project's DuckDB file once), left
    set to open later engines on the file only when the plan writes through it; without
    one, engines opened here are closed before returning.  ``plan_options`` go
    to ``plan.plan`` (``start``, ``end``, ``partitions``, ``intervals``, ``batch_size``,
    ``include_open``); ``ignore_readiness`` runs what the clock made due, data or not."""
    names = None if nodes is None else list(nodes)
    notes = apply_on_change(project, store, names, now=now, dry_run=dry_run)
    pool = engines if engines is not None else EnginePool(project)
    try:
        # `verify: 7d`: late data in that window is restated before planning (only a project
        # that verifies imports that policy)
        if not dry_run and any(n.verify for n in project.nodes.values()):
            from .verify import verify_windows

            notes += verify_windows(project, store, names, pool, now=now)
        states = store.load()
        starts, inferred = infer_starts(project, states, names, pool,
                                        record=None if dry_run else store)
        the_plan = plan(project, states, mode=mode, nodes=names, now=now, inferred_starts=starts,
                        **plan_options)
        for node_plan in the_plan.nodes:
            if node_plan.node in inferred:
                node_plan.notes.insert(0, inferred[node_plan.node])
        if not ignore_readiness:
            if engines is None:  # its own pool: the project file only when a readiness query reads it
                due = [project.nodes[p.node] for p in the_plan.nodes if p.due]
                pool.database = needs_database(project, due)
            hold_back(project, the_plan, pool)
        if engines is not None:
            engines.database = plan_uses_database(project, the_plan)
    finally:
        if engines is None:
            pool.close()
    return Prepared(plan=the_plan, notes=notes)


def run_engines(project: Project, nodes: Iterable[str] | None = None, engine: Engine | Mapping[str, Engine]
                | None = None, options: EngineOptions | None = None) -> EnginePool:
    """The one pool of engines for ``prepare`` then ``execute`` over ``nodes`` (the caller
    closes it): ``engine`` handed in, ``options`` for opening the others.  Nodes over files
    only never open the project's DuckDB file (no lock to share with other workers)."""
    selected = [project.nodes[n] for n in project.topological_order(nodes)]
    return EnginePool(project, engine, options,
                      database=any(uses_database(project, node) for node in selected))


def run(
    project: Project,
    store: StateStore,
    *,
    engine: Engine | Mapping[str, Engine] | None = None,
    engine_options: EngineOptions | None = None,
    progress: Progress | None = None,
    origin: str | None = None,
    run_id: str | None = None,
    **request: Any,
) -> RunResult:
    """``prepare`` then ``execute``, over one pool of engines (``engine``: engines handed
    in; ``engine_options``: how to open the others, e.g. Dagster's resources).  The
    result carries the plan and the run-level notes."""
    if request.get("nodes") is not None:
        request["nodes"] = list(request["nodes"])
    pool = run_engines(project, request.get("nodes"), engine, engine_options)
    try:
        prepared = prepare(project, store, engines=pool, **request)
        result = execute(prepared.plan, project, store, engine=pool, progress=progress, origin=origin,
                         run_id=run_id)
    finally:
        pool.close()
    result.plan, result.notes = prepared.plan, prepared.notes
    return result


_door = run  # apply_changes' argument ``run`` (whether to run) hides the function


def apply_changes(
    project: Project,
    store: StateStore,
    plan: ChangePlan | None = None,
    *,
    reason: str | None = None,
    actor: str | None = None,
    run: bool = True,
    engine: Any = None,
    engine_options: Any = None,
    progress: Progress | None = None,
    origin: str | None = None,
    run_id: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> ApplyResult:
    """Record a change plan (default: the current one) and run what it restated.

    The entry point for any driver (the CLI, an orchestrator's job): the run goes through
    the door (``run``): ``options`` go to its plan (``now``,
    ``batch_size``, ...), ``engine``/``engine_options`` to its engines."""
    from . import changes

    opts = dict(options or {})
    plan = plan or changes.change_plan(project, store, now=opts.get("now"))
    result = changes.record_changes(project, store, plan, reason=reason, actor=actor)
    if run and changes.rerun_nodes(result):
        result.run = _door(project, store, mode="run", nodes=changes.rerun_nodes(result), engine=engine,
                           engine_options=engine_options, progress=progress, origin=origin,
                           run_id=run_id, **opts)
    return result


__all__ = ["DefinitionsChanged", "Prepared", "apply_changes", "apply_on_change", "changed_line",
           "infer_starts", "prepare", "run", "run_engines"]
