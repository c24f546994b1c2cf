"""``seeknal plan``: what changed definitions do to history, and ``--apply`` to fix it.

``on_change`` (warn, fail, apply) is the runner's: ``runner.policy``, applied at every door.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .. import grid
from . import render
from .common import CliError, Session, check_date, project_option, session

if TYPE_CHECKING:
    from ..runner.changes import ApplyResult, ChangePlan, NodeChange

ON_CHANGE = ("warn", "fail", "apply")


@click.command("plan", short_help="Show what changed definitions restate; --apply to do it.")
@project_option
@click.argument("nodes", nargs=-1, metavar="[NODE]...")
@click.option("--apply", "apply_", is_flag=True, help="Record the restatements and definitions, then run.")
@click.option("--from", "since", metavar="DATE", callback=check_date,
              help="Restate only intervals from this date on (a fix that applies forward).")
@click.option("--reason", help="Why, recorded with --apply (default: a summary of the changes).")
@click.option("--no-run", is_flag=True, help="With --apply: only record; the next run recomputes.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable plan (stable keys).")
def plan_command(nodes: tuple[str, ...], apply_: bool, since: str | None, reason: str | None,
                 no_run: bool, as_json: bool) -> int:
    """Compare each node's definition with the one its intervals were computed with.

    Per node: new, unchanged or changed; what changed, the SQL diff, breaking or
    non-breaking, and which intervals of it and of its readers would be restated.
    """
    from ..runner import changes

    if not apply_ and (reason is not None or no_run):
        raise click.UsageError("--reason and --no-run go with --apply")
    sess = session()
    names = [sess.node(n).name for n in nodes] or None
    plan = changes.change_plan(sess.project, sess.store, names, since=_since(since, sess.now), now=sess.now)
    if not apply_:
        if as_json:
            render.echo_json(plan_json(sess, plan, None))
        else:
            click.echo("\n".join(plan_lines(sess, plan, names)))
        return 0
    return apply_plan(sess, plan, reason=reason, run=not no_run, as_json=as_json, names=names)


def _since(text: str | None, now):
    """``--from``: a date no later than now (a day of margin for naive values, read in each
    node's timezone): no computed interval starts after now, so a later one means a typo."""
    import datetime as dt

    from ..timeutil import parse_datetime_text, to_utc

    if text is None:
        return None
    since = parse_datetime_text(text)
    try:
        late = to_utc(since) - now > dt.timedelta(days=1)
    except OverflowError:  # 9999-12-31T23:00-05:00 is past the last instant: late
        late = True
    if late:
        raise CliError(f"--from {text} is after now ({now:%Y-%m-%d %H:%M} UTC): no computed "
                       "interval starts after now, so it would restate nothing — give a date "
                       "before now, or leave --from out to restate everything the change touches")
    return since


def apply_plan(sess: Session, plan: ChangePlan, *, reason: str | None, run: bool, as_json: bool,
               names: list[str] | None = None) -> int:
    """Record the plan, report it, then (``run``) execute what it restated."""
    from .. import runner
    from ..runner import changes
    from . import progress

    result = changes.record_changes(sess.project, sess.store, plan, reason=reason)
    report = plan_json(sess, plan, result)
    if not as_json:
        click.echo("\n".join(plan_lines(sess, plan, names, result)))
    if not run or not changes.rerun_nodes(result):
        if as_json:
            render.echo_json(report)
        return 0
    due = runner.prepare(sess.project, sess.store, mode="run", nodes=changes.rerun_nodes(result),
                         now=sess.now).plan
    return progress.execute(sess, due, as_json=as_json, extra={"plan": report})


# -- text -------------------------------------------------------------------------------------------
def plan_lines(sess: Session, plan: ChangePlan, names: list[str] | None,
               result: ApplyResult | None = None) -> list[str]:
    shown = [n for n in plan.nodes if n.affected or n.notes or (names and n.node in names)]
    lines: list[str] = []
    for entry in shown:
        lines += _entry_lines(sess, entry)
    counts = {s: sum(1 for n in plan.nodes if n.status == s) for s in ("changed", "unchanged", "new")}
    readers = sum(1 for n in plan.nodes if n.upstream and n.status != "changed")
    if not plan.changed:
        lines.append(f"No definition changed ({render.plural(counts['unchanged'], 'node')} unchanged, "
                     f"{counts['new']} new).")
        return lines + _pending_lines(plan, result)
    lines.append(f"Total: {render.plural(counts['changed'], 'changed node')}, "
                 f"{render.plural(readers, 'affected reader')}, "
                 f"{render.plural(plan.total_intervals, 'interval')} to restate.")
    if result is None:
        lines.append("Apply with `seeknal plan --apply` (`--from DATE` to restate from a date on).")
    else:
        lines.append(f"Recorded: reason {result.reason!r}; new definitions of {', '.join(result.recorded)}.")
    return lines + _pending_lines(plan, result)


def _pending_lines(plan: ChangePlan, result: ApplyResult | None) -> list[str]:
    """Restated intervals not recomputed yet (an interrupted apply, a restatement): what
    ``--apply`` runs besides the plan."""
    if not plan.pending:
        return []
    count = sum(len(p) for p in plan.pending.values())
    what = (f"{render.plural(count, 'restated interval')} of {', '.join(plan.pending)} "
            "not recomputed yet")
    if result is None:
        return [f"Pending: {what}: `seeknal plan --apply` or `seeknal run` recomputes them."]
    return [f"Pending: {what}."]


def _entry_lines(sess: Session, entry: NodeChange) -> list[str]:
    node = sess.project.nodes[entry.node]
    if entry.status != "changed":
        head = f"{entry.node}: {entry.status}"
    else:
        what = ", ".join(entry.fields)
        head = f"{entry.node}: changed ({what}) — {entry.category}"
    lines = [head]
    if entry.sql is not None:
        cols = entry.sql
        for word, names in (("added", cols.added), ("removed", cols.removed), ("modified", cols.modified)):
            if names and not (word == "modified" and cols.rows):
                lines.append(f"  columns {word}: {', '.join(names)}")
        if cols.rows:
            lines.append(f"  rows: {', '.join(p for p in cols.parts if p != 'columns')} changed — every "
                         "column of every interval")
    lines += [f"  {line}" for line in entry.diff]
    if entry.grid_note:
        lines.append(f"  {entry.grid_note}")
    if entry.upstream:
        columns = "every column" if "*" in entry.affected_columns else ", ".join(entry.affected_columns)
        lines.append(f"  affected through {', '.join(entry.upstream)}: {columns}")
    lines += [f"  note: {note}" for note in entry.notes]
    if entry.restate:
        lines.append(f"  restate {render.plural(len(entry.restate), 'interval')} "
                     f"({render.spans_text(entry.restate, node)})")
    elif entry.affected:
        lines.append("  restate nothing" + ("" if node.is_incremental else
                                             " (no schedule: rebuilt whole on every run)"))
    return lines


# -- JSON -------------------------------------------------------------------------------------------
def plan_json(sess: Session, plan: ChangePlan, result: ApplyResult | None) -> dict:
    """Stable keys: see README "Change detection: seeknal plan"."""
    return {
        "now": plan.now.isoformat(),
        "from": None if plan.since is None else str(plan.since),
        "applied": result is not None,
        "reason": result.reason if result else (plan.default_reason() if plan.changed else None),
        "total_intervals": plan.total_intervals,
        "pending_intervals": sum(len(p) for p in plan.pending.values()),
        "nodes": [_entry_json(sess, n) for n in plan.nodes],
    }


def _entry_json(sess: Session, entry: NodeChange) -> dict:
    node = sess.project.nodes[entry.node]
    sql = entry.sql
    return {
        "node": entry.node, "status": entry.status, "changes": list(entry.fields),
        "category": entry.category, "planned": entry.planned,
        "columns": {"added": list(sql.added), "removed": list(sql.removed),
                    "modified": list(sql.modified), "rows": sql.rows} if sql else None,
        "what": list(sql.parts) if sql else [],
        "diff": entry.diff, "grid": entry.grid_note,
        "upstream": list(entry.upstream), "affected_columns": list(entry.affected_columns),
        "restate": [render.interval_dict(a, b, node) for a, b in grid.fuse(entry.restate)],
        "restate_intervals": len(entry.restate), "notes": list(entry.notes),
    }


__all__ = ["ON_CHANGE", "apply_plan", "plan_command", "plan_json", "plan_lines"]
