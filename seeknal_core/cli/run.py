"""``seeknal run``: new intervals, backfills, partitions and restatements."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from . import render
from .common import Session, Window, plan_nodes, project_option, session
from .plan import check_on_change
from .restate import node_names, restate_json, restate_lines, restate_options
from .restate import restate as restate_intervals

if TYPE_CHECKING:
    from ..engines import Engine
    from ..runner import Plan
    from ..state import NodeState

DEFAULT_REASON = "seeknal run --restate"


@click.command("run", short_help="Run due intervals; backfill or restate.")
@project_option
@restate_options
@click.option("--backfill", is_flag=True, help="Fill every missing, failed or restated interval.")
@click.option("--restate", is_flag=True, help="Restate --start..--end (and downstream), then re-run.")
@click.option("--reason", help=f"Why, for --restate (recorded; default {DEFAULT_REASON!r}).")
@click.option("--partitions", metavar="K1,K2", help="Exactly these partition keys: 2024-01-01,2024-01-02.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Intervals per query (default: node's).")
@click.option("--include-open", is_flag=True, help="Also run the interval that has not ended yet.")
@click.option("--dry-run", is_flag=True, help="Show what would run; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable plan (--dry-run) or result.")
@click.option("--each", is_flag=True, help="With --dry-run --json: one object per interval, not per run.")
def run_command(nodes: tuple[str, ...], start: str | None, end: str | None, last: str | None,
                backfill: bool,
                restate: bool, reason: str | None, partitions: str | None, batch_size: int | None,
                include_open: bool, dry_run: bool, as_json: bool, each: bool) -> int:
    """Run the project: only new intervals by default.

    --start/--end (or --backfill) fill every missing interval of the range instead;
    --restate recomputes intervals that were already done.
    """
    from . import progress

    sess = session()
    window = Window(start, end, last)
    keys = _keys(partitions)
    if reason is not None and not restate:
        raise click.UsageError("--reason goes with --restate (or use `seeknal intervals restate`)")
    if keys and (window or restate):
        raise click.UsageError("--partitions selects intervals by key: drop --start/--end/--last/--restate")
    check_on_change(sess, dry_run=dry_run)
    options = {"batch_size": batch_size, "include_open": include_open}
    extra: dict = {}
    if restate:
        plan, extra = _restate_first(sess, nodes, window, reason or DEFAULT_REASON, dry_run, as_json, options)
        if plan is None:
            return 0
    else:
        mode = "backfill" if backfill or window or keys else "run"
        names = node_names(sess, nodes)
        inferred, notes = _infer_starts(sess, names, record=not dry_run)
        plan = plan_nodes(sess, names, window, mode=mode, partitions=keys, inferred_starts=inferred,
                          **options)
        for node_plan in plan.nodes:
            if node_plan.node in notes:
                node_plan.notes.insert(0, notes[node_plan.node])
    if not dry_run:
        return progress.execute(sess, plan, as_json=as_json, extra=extra)
    if as_json:
        render.echo_json(progress.plan_json(sess, plan, each=each))
    else:
        click.echo("\n".join(progress.plan_lines(sess, plan, dry_run=True)))
        click.echo(f"Total: {render.plural(plan.total_intervals, 'interval')} (dry run: nothing ran).")
    return 0


def _restate_first(sess: Session, nodes: tuple[str, ...], window: Window, reason: str, dry_run: bool,
                   as_json: bool, options: dict) -> tuple[Plan | None, dict]:
    """Restate (dry: only report), then plan the re-run of every affected node; (plan, JSON extra).

    No plan when there is nothing to re-run or on a dry run (the restatement is all it shows)."""
    impact, selected = restate_intervals(sess, nodes, window, reason, dry_run=dry_run)
    report = restate_json(sess, impact, selected, reason, dry_run)
    if not as_json:
        click.echo("\n".join(restate_lines(sess, impact, selected, reason, window, dry_run)))
    if dry_run or not impact:
        if as_json:
            render.echo_json(report)
        return None, {}
    return plan_nodes(sess, list(impact), window, mode="restate", **options), {"restated": report}


def _infer_starts(sess: Session, names: list[str] | None, *, record: bool
                  ) -> tuple[dict[str, int], dict[str, str]]:
    """Starts of scheduled nodes without ``start:`` (and none recorded): the earliest time in
    their sources, one ``min()`` each, recorded unless a dry run; (starts, plan notes)."""
    project = sess.project
    wanted = [n for n in project.topological_order(names)
              if project.nodes[n].is_incremental and project.nodes[n].start is None]
    if not wanted:
        return {}, {}
    states = sess.store.load()
    starts: dict[str, int] = {}
    notes: dict[str, str] = {}
    found: dict[tuple[str, str], int | None] = {}
    engines: dict[str, Engine] = {}
    try:
        for name in wanted:
            _infer_one(sess, name, states.get(name), found, engines, starts, notes, record)
    finally:
        for engine in engines.values():
            engine.close()
    return starts, notes


def _infer_one(sess: Session, name: str, state: NodeState | None, found: dict, engines: dict,
               starts: dict[str, int], notes: dict[str, str], record: bool) -> None:
    """One node's inferred start, into ``starts``/``notes`` (and the store when ``record``)."""
    from ..engines import QueryError, open_engine
    from ..runner import time_sources
    from ..timeutil import from_epoch, get_zone

    project = sess.project
    node = project.nodes[name]
    if state is not None and (state.inferred_start is not None or state.completed):
        return
    best: tuple[int, str] | None = None
    for source, column in time_sources(project, name):
        key = (source, column, node.timezone)  # naive times are read in the node's zone
        if key not in found:
            kind = node.engine or "duckdb"
            if kind not in engines:
                engines[kind] = open_engine(kind, project)
            try:
                found[key] = engines[kind].earliest(project.sources[source], column, node.timezone)
            except QueryError:  # not there yet: nothing to infer from
                found[key] = None
        value = found[key]
        if value is not None and (best is None or value < best[0]):
            best = (value, f"{source}.{column}")
    if best is None:
        return
    starts[name] = best[0]
    local = from_epoch(best[0]).astimezone(get_zone(node.timezone))
    notes[name] = f"start inferred from {best[1]}: {local.date().isoformat()}"
    if record:
        sess.store.set_inferred_start(name, best[0])


def _keys(partitions: str | None) -> list[str] | None:
    if partitions is None:
        return None
    keys = [k.strip() for k in partitions.split(",") if k.strip()]
    if not keys:
        raise click.BadParameter("give partition keys such as 2024-01-01,2024-01-02",
                                 param_hint="'--partitions'")
    return keys
