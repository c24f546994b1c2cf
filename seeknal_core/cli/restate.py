"""Restatements from the CLI (``intervals restate`` and ``run --restate``): the runner computes
the impact and the cascade; this module reads the dates per timezone and reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click

from ..intervals import Pair
from . import render
from .common import CliError, Session, Window, date_options


def node_option(func: Callable) -> Callable:
    return click.option(
        "--node", "nodes", multiple=True, metavar="NAME",
        help="Only this node (repeatable, or comma-separated; default: every node).",
    )(func)


def restate_options(func: Callable) -> Callable:
    return node_option(date_options(func))


def node_names(sess: Session, nodes: Sequence[str]) -> list[str] | None:
    """``--node`` values (repeatable, comma-separated) as node names; None for all nodes.

    ``--node ,,`` names no node: a usage error, never "every node"."""
    names = [part.strip() for value in nodes for part in value.split(",") if part.strip()]
    if nodes and not names:
        raise click.UsageError(f"--node {' '.join(nodes)!r} names no node: give names such as "
                               "--node events_flow (or leave --node out for every node)")
    return [sess.node(n).name for n in dict.fromkeys(names)] or None


def restate(sess: Session, nodes: Sequence[str], window: Window, reason: str, *,
            dry_run: bool) -> tuple[dict[str, list[Pair]], list[str]]:
    """Restate (or, dry, only compute) the intervals; (impact per node, directly selected)."""
    from .. import runner

    window.require()
    if not reason or not reason.strip():
        raise CliError('a restatement needs a reason: --reason is blank — say why the data is '
                       "wrong, or leave --reason out to record the command's name")
    names = node_names(sess, nodes)
    selected = names or [n.name for n in sess.scheduled_nodes()]
    start, end = window.values(sess.now)
    if dry_run:
        impact = runner.restatement_impact(sess.project, names, start, end, now=sess.now,
                                           store=sess.store)
    else:
        impact = runner.restate(sess.project, sess.store, names, start, end, reason.strip(),
                                now=sess.now)
    return impact, selected


def restate_report(sess: Session, nodes: Sequence[str], window: Window, reason: str, *,
                   dry_run: bool, as_json: bool) -> dict[str, list[Pair]]:
    """Restate and print what was (or would be) restated; the impact per node."""
    impact, selected = restate(sess, nodes, window, reason, dry_run=dry_run)
    if as_json:
        render.echo_json(restate_json(sess, impact, selected, reason, dry_run))
        return impact
    for line in restate_lines(sess, impact, selected, reason, window, dry_run):
        click.echo(line)
    return impact


def restate_json(sess: Session, impact: dict[str, list[Pair]], selected: list[str], reason: str,
                 dry_run: bool) -> dict:
    return {"dry_run": dry_run, "reason": reason.strip(), "nodes": [
        {"node": name, "downstream": name not in selected,
         "intervals": [render.interval_dict(a, b, sess.project.nodes[name]) for a, b in pairs]}
        for name, pairs in impact.items()]}


def restate_lines(sess: Session, impact: dict[str, list[Pair]], selected: list[str], reason: str,
                  window: Window, dry_run: bool) -> list[str]:
    if not impact:
        return [f"Nothing to restate: no finished interval of {', '.join(selected) or 'any node'} "
                f"overlaps {window}."]
    head = "Would restate (dry run, nothing changed)" if dry_run else "Restated"
    lines = [f"{head}, reason: {render.safe(reason.strip())}"]
    for name, pairs in impact.items():
        node = sess.project.nodes[name]
        downstream = "" if name in selected else "  (downstream)"
        lines.append(f"  {name}: {render.plural(len(pairs), 'interval')} "
                     f"({render.spans_text(pairs, node)}){downstream}")
    return lines
