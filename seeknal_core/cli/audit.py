"""``seeknal audit``: run nodes' audits over completed intervals, without recomputing."""

from __future__ import annotations

import click

from . import render
from .common import CliError, Window, date_options, project_option, session
from .restate import restate_json, restate_lines


@click.command("audit", short_help="Check completed intervals against their audits.")
@click.argument("nodes", nargs=-1)
@project_option
@date_options
@click.option("--restate", is_flag=True, help="Restate the failing intervals (and downstream).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit_command(nodes: tuple[str, ...], start: str | None, end: str | None, last: str | None,
                  restate: bool, as_json: bool) -> int:
    """Run the audits of NODE... (default: every node with audits) over their completed
    intervals in --start..--end or --last (default: all), one query per audit per
    contiguous run; exit 1 when a blocking audit fails.  --restate records restatements of
    the failing intervals with reason "audit <name> failed: N rows"."""
    from ..runner.audit import audit_completed, restate_failures

    sess = session()
    names = [sess.node(n).name for n in nodes]
    for name in names:
        if not sess.project.nodes[name].audits:
            raise CliError(f"node '{name}' has no audits: add `audits:` to "
                           f"{sess.project.nodes[name].path or 'its YAML'}")
    start_v, end_v = Window(start, end, last).values(sess.now)
    reports = audit_completed(sess.project, sess.store, names or None, start_v, end_v, now=sess.now)
    impact = restate_failures(sess.project, sess.store, reports, now=sess.now) if restate else {}
    failed = any(r.blocking_failed for r in reports)
    if as_json:
        data = {"ok": not failed, "nodes": [_node_json(sess, r) for r in reports]}
        if restate:
            data["restated"] = restate_json(sess, impact, [r.node for r in reports], "audit failures", False)
        render.echo_json(data)
        return 1 if failed else 0
    if not reports:
        click.echo("No node has audits: add `audits:` to a transform.")
        return 0
    for r in reports:
        node = sess.project.nodes[r.node]
        if r.table:
            click.echo("\n".join(_table_lines(r)))
            continue
        if not r.intervals:
            click.echo(f"{r.node}: no completed interval to audit")
            continue
        checked = f"{render.plural(r.intervals, 'interval')} in {render.plural(len(r.runs), 'run')}"
        if not r.failures:
            click.echo(f"{r.node}: {checked} ✓ every audit passed")
            continue
        bad = len({f.interval for f in r.failures})
        click.echo(f"{r.node}: {checked}, {render.plural(bad, 'interval')} failing:")
        found = [(f.interval, "✗" if f.audit.blocking else "⚠", f.message) for f in r.failures]
        click.echo("\n".join(render.capped(
            [f"  {render.span(a, b, node)}{render.counted(count)} {mark} {message}"
             for a, b, count, mark, message in render.audit_runs(found, node)],
            f"seeknal audit {r.node} --json lists them all")))
    if restate:
        if impact:
            lines = restate_lines(sess, impact, [r.node for r in reports], "the failing audits",
                                  Window(start, end, last), False)
            click.echo("\n".join(lines))
            click.echo("Run `seeknal run` to recompute them.")
        else:
            click.echo("Nothing to restate: every audit passed.")
    return 1 if failed else 0


def _node_json(sess, r) -> dict:
    """One node's report: per failing interval (a table node: per failing audit)."""
    node = sess.project.nodes[r.node]
    if r.table:
        return {"node": r.node, "table": True, "built": r.built, "failures": [
            {"audit": f.audit.name, "blocking": f.audit.blocking, "rows": f.rows, "message": f.message}
            for f in r.failures]}
    return {"node": r.node, "intervals": r.intervals, "runs": len(r.runs),
            "failures": [render.interval_dict(*f.interval, node, audit=f.audit.name,
                                              blocking=f.audit.blocking, rows=f.rows, message=f.message)
                         for f in r.failures]}


def _table_lines(r) -> list[str]:
    """A table node's audits over the whole table."""
    if not r.built:
        return [f"{r.node}: no table to audit yet: run `seeknal run`"]
    if not r.failures:
        return [f"{r.node}: whole table ✓ every audit passed"]
    return [f"{r.node}: whole table, {render.plural(len(r.failures), 'audit')} failing:",
            *(f"  {'✗' if f.audit.blocking else '⚠'} {f.message}" for f in r.failures)]
