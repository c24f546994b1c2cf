"""``seeknal intervals ...``: read and change what the state store knows about intervals.

These commands load the project and the state store only; they never import duckdb
(``backfill`` does, when it runs) or dagster.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from ..intervals import IntervalCalculator, IntervalSet, Pair
from ..reasons import Reason
from ..timeutil import end_bound, from_epoch, get_zone, to_epoch, to_utc
from . import render
from .common import (
    CliError,
    Session,
    Window,
    check_date,
    check_schedule,
    date_options,
    plan_nodes,
    prepare_nodes,
    project_option,
    same_schedule,
    session,
)
from .restate import restate_options, restate_report

if TYPE_CHECKING:
    from ..project import TransformNode
    from ..state import NodeState

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def listing_options(func: Any) -> Any:
    """``--each``/``--runs``: one line per interval, or runs with a count (default: by length)."""
    func = click.option("--runs", "listing", flag_value="runs",
                        help="Fold intervals into runs with a count.")(func)
    return click.option("--each", "listing", flag_value="each",
                        help=f"One line per interval (the default up to {render.SHORT_LIST} a node).")(func)


@click.group("intervals", short_help="Inspect and manage intervals.")
@project_option
def intervals() -> None:
    """Completed, pending and failed intervals; backfills, restatements, manual completion."""


# -- list / show ----------------------------------------------------------------------------------
@intervals.command("list", short_help="Completed intervals of one node.")
@click.argument("node")
@project_option
@json_option
def list_command(node: str, as_json: bool) -> int:
    """Completed intervals of one node (merged runs)."""
    sess = session()
    spec = sess.scheduled(node)
    done = sess.store.completed(spec.name)
    if as_json:
        render.echo_json({"node": spec.name, "timezone": spec.timezone,
                          "completed": [render.interval_dict(a, b, spec) for a, b in done.pairs()]})
        return 0
    if not done:
        click.echo(f"No completed intervals for {spec.name} yet: run `seeknal run`.")
        return 0
    click.echo(f"Completed intervals for {spec.name}:")
    for a, b in done.pairs():
        click.echo(f"  {render.span(a, b, spec)}")
    return 0


@intervals.command("show", short_help="Completed intervals per node, annotated.")
@click.argument("node", required=False)
@project_option
@listing_options
@json_option
def show_command(node: str | None, listing: str | None, as_json: bool) -> int:
    """Completed intervals per node, annotated from the audit log, with pending
    restatements and failed intervals."""
    sess = session()
    nodes = [sess.scheduled(node)] if node else sess.scheduled_nodes()
    states = sess.store.load()
    reports = [_node_report(sess, spec, states.get(spec.name), listing) for spec in nodes]
    sources_json, sources_lines = _watermarks(sess, nodes)
    if as_json:
        render.echo_json({"nodes": [r[0] for r in reports], "sources": sources_json})
        return 0
    if not nodes:
        click.echo("No scheduled nodes: add schedule: '@daily' to a transform to track its intervals.")
    elif sys.stdout.isatty():  # a person watching: a coverage bar per node (rich)
        from .coverage import print_with_bars

        print_with_bars(nodes, states, [r[1] for r in reports], sess.now)
        if sources_lines:
            click.echo("\n" + "\n".join(sources_lines))
        return 0
    click.echo("\n\n".join("\n".join(lines) for lines in [*(r[1] for r in reports), sources_lines] if lines))
    return 0


def _by_interval(warnings: list[tuple[Pair, str]]) -> dict[Pair, list[str]]:
    """Each warned interval's messages, in time order (one JSON entry per interval)."""
    out: dict[Pair, list[str]] = {}
    for pair, message in warnings:
        out.setdefault(pair, []).append(message)
    return out


def _watermarks(sess: Session, nodes: list[TransformNode]) -> tuple[list[dict], list[str]]:
    """(JSON, lines) of each source's readiness watermark, one query per source."""
    from ..engines import EnginePool
    from ..runner import source_watermarks
    from ..runner.readiness import direct_sources, needs_database

    readers = {}
    for spec in nodes:
        for source in direct_sources(sess.project, spec):
            readers.setdefault(source.name, spec)
    if not readers:
        return [], []
    pool = EnginePool(sess.project, database=needs_database(sess.project, nodes))
    try:
        marks = source_watermarks(sess.project, pool, nodes)
    finally:
        pool.close()
    data, lines = [], ["Source watermarks:"]
    for name, mark in marks.items():
        spec = readers[name]
        data.append({"source": name, "ready": mark.kind, "strict": mark.strict,
                     "watermark": None if mark.instant is None else from_epoch(mark.instant).isoformat(),
                     "timezone": spec.timezone})
        lines.append(f"  {name}: {mark.text(spec.timezone)} ({mark.kind}{', strict' if mark.strict else ''})")
    return data, lines if data else []


def _node_report(sess: Session, spec: TransformNode, state: NodeState | None,
                 listing: str | None = None) -> tuple[dict, list[str]]:
    """(JSON, text lines) of one node for ``intervals show``."""
    completed = state.completed if state else IntervalSet()
    history = sess.store.history(spec.name) if completed else []
    pieces = render.annotated_runs(completed, history) if completed else []
    warnings = [(p, w) for p, w in render.audit_warnings(history) if completed.covers(*p)
                ] if spec.audits else []
    lines = [f"Completed Intervals for {spec.name}:"]
    lines += [f"  {render.span(a, b, spec)}{render.counted(count)} ✓{render.annotation(mode)}"
              for a, b, mode, count in render.listed([(a, b, m) for (a, b), m in pieces], spec, listing)]
    if not pieces:
        lines.append("  none yet: run `seeknal run`")
    last_end = from_epoch(pieces[-1][0][1]) if pieces else None
    if last_end is not None:  # freshness, relative to $SEEKNAL_NOW when set
        from .relative import ago

        verb = "ended" if last_end <= sess.now else "ends"
        lines.append(f"Last interval {verb} {ago(last_end, sess.now)}.")
    if warnings:
        lines.append(f"Audit warnings for {spec.name}:")
        lines += render.capped(
            [f"  {render.span(a, b, spec)}{render.counted(count)} ⚠ {message}"
             for a, b, count, _, message in render.audit_runs(((p, None, w) for p, w in warnings), spec)],
            f"seeknal intervals show {spec.name} --json lists them all")
    restatements = []
    for r in state.pending_restatements if state else []:
        left = IntervalSet(r.intervals).difference(completed).pairs()
        restatements.append((r, left))
    if restatements:
        lines.append(f"Pending restatements for {spec.name}:")
        for r, left in restatements:
            lines.append(f"  {render.spans_text(left, spec)}: {render.safe(r.reason)} "
                         f"(by {render.safe(r.actor)}, {render.local_text(r.requested_at, spec)})")
    failed = [f for f in (state.failed if state else []) if not completed.contains(f.interval)]
    if failed:
        lines.append(f"Failed intervals for {spec.name}:")
        for f in failed:
            lines.append(f"  {render.span(f.start, f.end, spec)} ✗ "
                         f"({render.plural(f.attempts, 'attempt')}): {render.safe(f.error)}")
    data = {
        "node": spec.name, "timezone": spec.timezone, "schedule": spec.schedule.expression,
        "completed": [render.interval_dict(a, b, spec, mode=mode or None) for (a, b), mode in pieces],
        "last_interval_end": last_end.isoformat() if last_end else None,
        "audit_warnings": [render.interval_dict(a, b, spec, warning="; ".join(messages))
                           for (a, b), messages in _by_interval(warnings).items()],
        "pending_restatements": [
            {"id": r.id, "reason": r.reason, "actor": r.actor, "requested_at": r.requested_at.isoformat(),
             "intervals": [render.interval_dict(a, b, spec) for a, b in left]}
            for r, left in restatements],
        "failed": [render.interval_dict(f.start, f.end, spec, error=f.error, attempts=f.attempts,
                                        last_attempt=f.last_attempt.isoformat()) for f in failed],
    }
    return data, lines


# -- pending --------------------------------------------------------------------------------------
@intervals.command("pending", short_help="Intervals a backfill would process.")
@click.argument("node", required=False)
@project_option
@date_options
@click.option("--schedule", metavar="CRON", help="Only nodes on this schedule (e.g. @daily).")
@listing_options
@json_option
def pending_command(node: str | None, start: str | None, end: str | None, last: str | None,
                    schedule: str | None, listing: str | None, as_json: bool) -> int:
    """Intervals a backfill would process (default: from each node's start to now)."""
    sess = session()
    nodes = _select(sess, node, schedule)
    plan = plan_nodes(sess, [n.name for n in nodes], Window(start, end, last), mode="backfill")
    node_plans = [node_plan for node_plan in plan.nodes if not node_plan.full_refresh]
    _unknown_starts(sess, node_plans)
    _hold_back(sess, plan)
    total = sum(len(node_plan.due) + sum(w.count for w in node_plan.waiting) for node_plan in node_plans)
    if as_json:
        render.echo_json({"now": plan.now.isoformat(), "total": total, "nodes": [
            {"node": node_plan.node, "timezone": sess.project.nodes[node_plan.node].timezone,
             "notes": node_plan.notes,
             "intervals": [render.interval_dict(a, b, sess.project.nodes[node_plan.node], reason=reason)
                           for (a, b), reason in node_plan.due.items()]
             + [render.interval_dict(a, b, sess.project.nodes[node_plan.node], **_one(waiting.to_dict("UTC")))
                for waiting in node_plan.waiting for (a, b) in waiting.due]}
            for node_plan in node_plans]})
        return 0
    out = [f"Pending intervals ({total}){':' if total else ''}"]  # one write: thousands of lines
    several = len(node_plans) > 1
    indent = "    " if several else "  "
    for node_plan in node_plans:
        spec = sess.project.nodes[node_plan.node]
        count_of = len(node_plan.due) + sum(w.count for w in node_plan.waiting)
        if several and count_of:
            out.append(f"  {node_plan.node} ({count_of}):")
        tagged = [(a, b, r) for a, b, r, _ in node_plan.runs()]
        out += [f"{indent}{render.span(a, b, spec)}{render.counted(count)}{_PENDING_WHY.get(reason, '')}"
                for a, b, reason, count in render.listed(tagged, spec, listing)]
        for waiting in node_plan.waiting:
            why = f" (waiting for {waiting.source}" + (
                f": {waiting.mark.text(spec.timezone)})" if waiting.mark.text(spec.timezone) else ")")
            held = [(a, b, Reason.WAITING) for a, b, _, _ in waiting.due.runs]
            out += [f"{indent}{render.span(a, b, spec)}{render.counted(count)}{why}"
                    for a, b, _, count in render.listed(held, spec, listing)]
        out += [f"  {node_plan.node}: note: {note}" for note in node_plan.notes]
    click.echo("\n".join(out))
    return 0


def _one(waiting: dict) -> dict:
    """A waiting group's fields for one of its intervals (its count is the group's)."""
    return {k: v for k, v in waiting.items() if k != "count"}


def _hold_back(sess: Session, plan) -> None:
    """Readiness, as a run would apply it: each source asked once (imports the engine
    only when a pending node reads a source whose readiness needs a query)."""
    from ..engines import EnginePool
    from ..runner import hold_back
    from ..runner.readiness import needs_database

    pool = EnginePool(sess.project, database=needs_database(
        sess.project, (sess.project.nodes[p.node] for p in plan.nodes if p.due)))
    try:
        hold_back(sess.project, plan, pool)
    finally:
        pool.close()


def _unknown_starts(sess: Session, node_plans: list) -> None:
    """A node without ``start:`` whose start `seeknal run` has not inferred yet: say from where."""
    from ..runner import time_sources

    for node_plan in node_plans:
        if not any(note.startswith("no start:") for note in node_plan.notes):
            continue
        sources = time_sources(sess.project, node_plan.node)
        if sources:
            names = ", ".join(source for source, _ in sources)
            node_plan.notes = [f"start unknown until the first `seeknal run` infers it from {names}"
                               if note.startswith("no start:") else note for note in node_plan.notes]


_PENDING_WHY = {"retry": " (failed: will retry)", "restate": " (restatement)"}


def _select(sess: Session, node: str | None, schedule: str | None) -> list[TransformNode]:
    """One node (checked against ``--schedule``), the nodes on ``--schedule``, or all scheduled."""
    if node:
        spec = _with_schedule(sess, sess.node(node), schedule)
        check_schedule(spec, schedule)
        return [spec]
    nodes = sess.scheduled_nodes()
    if schedule is None:
        return nodes
    chosen = [n for n in nodes if same_schedule(n, schedule)]
    if not chosen:
        known = ", ".join(f"{n.name} {n.schedule.expression!r}" for n in nodes) or "none"
        raise CliError(f"no node runs on schedule {schedule!r} — scheduled nodes: {known}")
    return chosen


def _with_schedule(sess: Session, spec: TransformNode, schedule: str | None) -> TransformNode:
    """The node, given ``--schedule`` when it has none of its own; it must track intervals."""
    if spec.schedule is None and schedule is not None:
        spec = sess.with_schedule(spec, schedule)
    elif spec.schedule is None:
        raise CliError(f"node '{spec.name}' has no schedule: pass --schedule '@daily' or add "
                       "schedule: to its YAML")
    return sess.scheduled(spec.name)


# -- backfill -------------------------------------------------------------------------------------
@intervals.command("backfill", short_help="Process every missing interval of a node.")
@click.argument("node")
@project_option
@date_options
@click.option("--schedule", metavar="CRON",
              help="The node's schedule; gives one to a node that has none (for this backfill).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Intervals per query (default: node's).")
@click.option("--ignore-readiness", is_flag=True,
              help="Fill the range even where a source's data is not in yet.")
@click.option("--dry-run", is_flag=True, help="Show what would run; change nothing.")
@json_option
def backfill_command(node: str, start: str | None, end: str | None, last: str | None, schedule: str | None,
                     batch_size: int | None, ignore_readiness: bool, dry_run: bool, as_json: bool) -> int:
    """Process every missing interval of NODE in the range (default: its start to now)."""
    from . import progress

    sess = session()
    spec = _with_schedule(sess, sess.node(node), schedule)
    check_schedule(spec, schedule)
    window = Window(start, end, last)
    options = {"batch_size": batch_size, "ignore_readiness": ignore_readiness}
    if not dry_run:
        return progress.prepare_and_execute(sess, [spec.name], window, as_json=as_json, mode="backfill",
                                            **options)
    plan = prepare_nodes(sess, [spec.name], window, mode="backfill", dry_run=True, **options).plan
    if as_json:
        render.echo_json(progress.plan_json(sess, plan))
    else:
        click.echo("\n".join(progress.plan_lines(sess, plan, dry_run=True)))
    return 0


# -- complete -------------------------------------------------------------------------------------
@intervals.command("complete", short_help="Mark intervals done by hand (manual).")
@click.argument("node", required=False)
@project_option
@click.option("--interval", "specs", multiple=True, required=True, callback=check_date,
              metavar="DATE|START/END",
              help="The interval containing DATE, or every interval overlapping START/END (repeatable).")
def complete_command(node: str | None, specs: tuple[str, ...]) -> int:
    """Mark intervals done by hand (data loaded elsewhere); recorded as manual."""
    sess = session()
    nodes = [sess.scheduled(node)] if node else sess.scheduled_nodes()
    if not node:
        if not nodes:
            raise CliError("no scheduled nodes to mark complete")
        names = ", ".join(n.name for n in nodes)
        click.echo(f"No node given: marking every scheduled node ({len(nodes)}: {names}).")
    grids: dict[object, list[Pair]] = {}  # nodes on one schedule and timezone name the same intervals
    chosen = {}
    for spec in nodes:  # validate all first
        key = (spec.schedule.cron, spec.timezone) if spec.schedule else spec.name
        if key not in grids:
            grids[key] = _manual_intervals(sess, spec, specs)
        chosen[spec.name] = list(grids[key])
    states = sess.store.load()
    fresh_of = {}
    for name, pairs in chosen.items():
        already = states[name].completed if name in states else IntervalSet()
        fresh_of[name] = [(a, b) for a, b in pairs if not already.covers(a, b)]
    if any(fresh_of.values()):  # one state write for every node; complete intervals keep their annotation
        sess.store.mark_complete_many(
            {name: IntervalSet.from_pairs(fresh) for name, fresh in fresh_of.items() if fresh},
            origin="manual")
    for name, pairs in chosen.items():
        spec = sess.project.nodes[name]
        fresh = fresh_of[name]
        if not fresh:  # nothing to record: the intervals keep their annotation (backfilled, ...)
            click.echo(f"{name}: nothing changed: {render.plural(len(pairs), 'interval')} already "
                       f"complete ({render.spans_text(pairs, spec)})")
            continue
        known = len(pairs) - len(fresh)
        note = f" ({known} already complete, left as they were)" if known else ""
        click.echo(f"{name}: marked {render.plural(len(fresh), 'interval')} complete (manual){note}: "
                   f"{render.spans_text(fresh, spec)}")
    return 0


def _manual_intervals(sess: Session, spec: TransformNode, specs: tuple[str, ...]) -> list[Pair]:
    """The schedule intervals the ``--interval`` values name for one node; only ended ones."""
    calc = IntervalCalculator(spec.schedule)
    pairs: set[Pair] = set()
    for text in specs:
        if "/" in text:
            first, _, last = text.partition("/")
            lo, hi = to_utc(first, spec.timezone), end_bound(last, spec.timezone)
            if lo >= hi:
                raise CliError(f"--interval {text}: start is not before end")
            found = calc.get_intervals(lo, hi)
        else:
            found = [calc.interval_containing(to_utc(text, spec.timezone))]
        pairs.update((to_epoch(iv.start), to_epoch(iv.end)) for iv in found)
    now = to_epoch(sess.now)
    for a, b in sorted(pairs):
        if b > now:
            raise CliError(
                f"node '{spec.name}' interval {render.span(a, b, spec)} has not ended yet (now "
                f"{sess.now.astimezone(get_zone(spec.timezone)):%Y-%m-%d %H:%M}): only finished "
                "intervals can be marked complete")
    return sorted(pairs)


# -- restate ----------------------------------------------------------------------------------------
#: the reason recorded when none is given (as `seeknal run --restate` records its own name)
RESTATE_REASON = "seeknal intervals restate"

@intervals.command("restate", short_help="Mark intervals for re-processing.")
@project_option
@restate_options
@click.option("--reason", help=f"Why the data must be recomputed (recorded; default {RESTATE_REASON!r}).")
@click.option("--dry-run", is_flag=True, help="Show every affected interval; change nothing.")
@json_option
def restate_command(nodes: tuple[str, ...], start: str | None, end: str | None, last: str | None,
                    reason: str | None, dry_run: bool, as_json: bool) -> int:
    """Mark intervals (and their downstream intervals) for re-processing."""
    sess = session()
    impact = restate_report(sess, nodes, Window(start, end, last), reason or RESTATE_REASON,
                            dry_run=dry_run, as_json=as_json)
    if impact and not dry_run and not as_json:
        click.echo("Run `seeknal run` (or `seeknal run --backfill`) to recompute them.")
    return 0


# -- verify -----------------------------------------------------------------------------------------
@intervals.command("verify", short_help="Restate intervals whose input rows changed (late data).")
@click.argument("nodes", nargs=-1)
@project_option
@date_options
@click.option("--dry-run", is_flag=True, help="List what changed; record nothing.")
@json_option
def verify_command(nodes: tuple[str, ...], start: str | None, end: str | None, last: str | None,
                   dry_run: bool, as_json: bool) -> int:
    """Recompute the input digests of completed intervals (one grouped query per source) and
    restate exactly those whose source rows changed since they ran, and their downstream
    intervals; the next `seeknal run` recomputes them.  Default range: everything completed."""
    from ..runner.verify import verify

    sess = session()
    names = [sess.node(n).name for n in nodes] or None
    window = Window(start, end, last)
    lo, hi = window.values(sess.now) if window else (None, None)
    found = verify(sess.project, sess.store, names, start=lo, end=hi, now=sess.now, dry_run=dry_run)
    if as_json:
        project = sess.project
        render.echo_json({
            "dry_run": dry_run, "checked": found.checked, "problems": found.problems,
            "nodes": [{"node": n, "downstream": n not in found.changed, "reason": found.reasons.get(n),
                       "intervals": [render.interval_dict(a, b, project.nodes[n]) for a, b in pairs],
                       "changes": [{**render.interval_dict(a, b, project.nodes[n]), "changes": what}
                                   for (a, b), what in found.changed.get(n, [])]}
                      for n, pairs in found.restated.items()],
            "unverifiable": {n: [render.interval_dict(a, b, project.nodes[n]) for a, b in pairs]
                             for n, pairs in found.unverifiable.items()}})
        return 0
    out = []
    checked = sum(found.checked.values())
    if not found.restated:
        out.append(f"No late data: {render.plural(checked, 'interval')} verified, inputs unchanged.")
    else:
        out.append("Would restate (dry run, nothing recorded):" if dry_run else "Restated:")
        for name, pairs in found.restated.items():
            node = sess.project.nodes[name]
            if name in found.changed:
                out.append(f"  {name}: {render.plural(len(pairs), 'interval')} — {found.reasons[name]}")
            else:
                out.append(f"  {name}: {render.plural(len(pairs), 'interval')} "
                           f"({render.spans_text(pairs, node)})  (downstream)")
    for name, pairs in found.unverifiable.items():
        node = sess.project.nodes[name]
        out.append(f"  {name}: {render.plural(len(pairs), 'interval')} unverifiable: "
                   "completed before digests "
                   f"were recorded ({render.spans_text(pairs, node)}); never restated by verify")
    out += [f"  cannot verify {p}" for p in found.problems]
    if found.restated and not dry_run:
        out.append("Run `seeknal run` to recompute them.")
    click.echo("\n".join(out))
    return 0


# -- history ----------------------------------------------------------------------------------------
@intervals.command("history", short_help="The audit log of one node.")
@click.argument("node")
@project_option
@click.option("--limit", type=click.IntRange(min=1), help="Only the last N records.")
@json_option
def history_command(node: str, limit: int | None, as_json: bool) -> int:
    """The audit log of one node: executions, backfills, restatements, manual completions."""
    sess = session()
    spec = sess.node(node)
    records = sess.store.history(spec.name, limit=limit)
    if as_json:
        render.echo_json({"node": spec.name, "timezone": spec.timezone, "records": records})
        return 0
    if not records:
        click.echo(f"No history for {spec.name} yet.")
        return 0
    click.echo(f"History of {spec.name} (times in {spec.timezone}):")
    rows = [_history_row(r, spec) for r in records]
    header = ("TIME", "EVENT", "MODE", "STATUS", "INTERVALS", "ROWS", "DURATION", "ACTOR", "RUN",
              "REASON/ERROR")
    for line in render.table(header, rows):
        click.echo(line)
    return 0


def _history_row(record: dict[str, Any], spec: TransformNode) -> tuple[str, ...]:
    """One audit record as a row: ACTOR is who asked (a restatement's requester), RUN the
    run that did it (seeknal's run id, or Dagster's); a resolve names both from its
    ``resolved_by`` (``origin:run``)."""
    zone = get_zone(spec.timezone)
    try:
        at = f"{to_utc(record['at']).astimezone(zone):%Y-%m-%d %H:%M:%S}"
    except (KeyError, TypeError, ValueError):
        at = str(record.get("at", "-"))
    pairs = [(to_epoch(a), to_epoch(b)) for a, b in record.get("intervals") or ()]
    rows = record.get("rows")
    detail = record.get("error") or record.get("reason") or ""
    mode, run = record.get("mode"), record.get("run_id")
    if record.get("event") == "resolve":
        detail = f"resolved ({record.get('reason', '')})"
        origin, _, by_run = str(record.get("resolved_by") or "").partition(":")
        mode, run = mode or origin, run or by_run
    cells = (at, record.get("event") or "-", mode or "-", record.get("status") or "-",
             render.spans_text(pairs, spec, limit=2) or "-", "-" if rows is None else str(rows),
             render.seconds_text(record.get("duration")), record.get("actor") or "-", run or "-",
             " ".join(str(detail).split()) or "-")
    return tuple(render.safe(c) for c in cells)
