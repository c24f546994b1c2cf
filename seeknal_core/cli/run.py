"""``seeknal run``: new intervals, backfills, partitions and restatements."""

from __future__ import annotations

import click

from . import render
from .common import Session, Window, prepare_nodes, project_option, session
from .restate import node_names, restate_json, restate_lines, restate_options
from .restate import restate as restate_intervals

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
@click.option("--ignore-readiness", is_flag=True,
              help="Run what the clock made due even where a source's data is not in yet.")
@click.option("--dry-run", is_flag=True, help="Show what would run; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable plan (--dry-run) or result.")
@click.option("--each", is_flag=True, help="With --dry-run --json: one object per interval, not per run.")
def run_command(nodes: tuple[str, ...], start: str | None, end: str | None, last: str | None,
                backfill: bool,
                restate: bool, reason: str | None, partitions: str | None, batch_size: int | None,
                include_open: bool, ignore_readiness: bool, dry_run: bool, as_json: bool, each: bool) -> int:
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
    options = {"batch_size": batch_size, "include_open": include_open, "ignore_readiness": ignore_readiness}
    extra: dict = {}
    if restate:
        impact, extra = _restate_first(sess, nodes, window, reason or DEFAULT_REASON, dry_run, as_json)
        if impact is None:
            return 0
        names, mode = impact, "restate"
    else:
        names = node_names(sess, nodes)
        mode = "backfill" if backfill or window or keys else "run"
        options["partitions"] = keys
    if dry_run:
        plan = prepare_nodes(sess, names, window, mode=mode, dry_run=True, **options).plan
        if as_json:
            render.echo_json(progress.plan_json(sess, plan, each=each))
        else:
            click.echo("\n".join(progress.plan_lines(sess, plan, dry_run=True)))
            click.echo(f"Total: {render.plural(plan.total_intervals, 'interval')} (dry run: nothing ran).")
        return 0
    return progress.prepare_and_execute(sess, names, window, as_json=as_json, extra=extra, mode=mode,
                                        **options)


def _restate_first(sess: Session, nodes: tuple[str, ...], window: Window, reason: str, dry_run: bool,
                   as_json: bool) -> tuple[list[str] | None, dict]:
    """Restate (dry: only report); (the nodes to re-run, JSON extra).

    None when there is nothing to re-run or on a dry run (the restatement is all it shows).
    ``on_change`` is applied before anything is restated (``fail`` restates nothing)."""
    from ..runner import apply_on_change

    applied = apply_on_change(sess.project, sess.store, node_names(sess, nodes), now=sess.now,
                                 dry_run=dry_run)
    for note in applied:
        click.echo(note, err=True)
    impact, selected = restate_intervals(sess, nodes, window, reason, dry_run=dry_run)
    report = restate_json(sess, impact, selected, reason, dry_run)
    if not as_json:
        click.echo("\n".join(restate_lines(sess, impact, selected, reason, window, dry_run)))
    if dry_run or not impact:
        if as_json:
            render.echo_json(report)
        return None, {}
    return list(impact), {"restated": report}


def _keys(partitions: str | None) -> list[str] | None:
    if partitions is None:
        return None
    keys = [k.strip() for k in partitions.split(",") if k.strip()]
    if not keys:
        raise click.BadParameter("give partition keys such as 2024-01-01,2024-01-02",
                                 param_hint="'--partitions'")
    return keys
