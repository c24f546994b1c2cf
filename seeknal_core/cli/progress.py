"""Running a plan from the CLI: what it will do, progress while it runs, the summary after.

A rich progress bar per node (advanced per batch) when stdout is a terminal; plain lines
otherwise.  rich is imported only here, and only for a terminal.
"""

from __future__ import annotations

import sys
import uuid
from typing import TYPE_CHECKING, Any

import click

from .. import runner
from ..engines import interrupt_open_engines
from ..intervals import Pair
from ..runner.execute import describe_failure
from . import render
from .common import Session, Window, prepare_nodes
from .interrupt import interrupting

if TYPE_CHECKING:
    from ..engines import EnginePool
    from ..runner import NodePlan, NodeResult, Plan, RunResult

MAX_ERRORS = 5  # failure lines printed; the rest are counted


class PlainProgress(runner.Progress):
    """One line per finished batch (logs, CI, pipes)."""

    def __init__(self, sess: Session):
        self.sess = sess

    def batch_finished(self, node: str, batch: list[Pair], rows: int, seconds: float,
                       error: str | None = None) -> None:
        spec = self.sess.project.nodes[node]
        where = render.spans_text(batch, spec) if batch else "whole table"
        status = "failed" if error else f"{render.plural(rows, 'row')} in {render.seconds_text(seconds)}"
        click.echo(f"  {node}  {where}  {'✗' if error else '✓'} {status}")


class _Bar:  # a plain class: a dataclass costs every process ~0.1 ms to create
    """One node's bar: its rich task and the counts it shows."""

    def __init__(self, task: Any, batches: int, total: int) -> None:
        self.task, self.batches, self.total, self.done = task, batches, total, 0


class RichProgress(runner.Progress):
    """A bar per node counting intervals, its description naming the batch."""

    def __init__(self, sess: Session, console: Any = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.sess = sess
        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console or Console(), transient=False,
        )
        self.tasks: dict[str, _Bar] = {}

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def node_started(self, node: str, plan: NodePlan, batches: int) -> None:
        total = max(len(plan.due), 1)
        task = self.bars.add_task(self._label(node, 0, batches), total=total)
        self.tasks[node] = _Bar(task, batches, total)

    def batch_finished(self, node: str, batch: list[Pair], rows: int, seconds: float,
                       error: str | None = None) -> None:
        bar = self.tasks[node]
        bar.done += 1
        self.bars.update(bar.task, advance=max(len(batch), 1),
                         description=self._label(node, min(bar.done, bar.batches), bar.batches))
        if error:
            spec = self.sess.project.nodes[node]
            where = render.spans_text(batch, spec) if batch else "whole table"
            self.bars.console.print(f"[red]✗[/red] {node} {where} failed", highlight=False)

    def node_finished(self, result: NodeResult) -> None:
        bar = self.tasks[result.node]
        self.bars.update(bar.task, completed=bar.total)

    @staticmethod
    def _label(node: str, done: int, batches: int) -> str:
        return f"{node} [dim]batch {done}/{batches}[/dim]"


# -- before: what the plan will do ---------------------------------------------------------------
def plan_lines(sess: Session, plan: Plan, *, dry_run: bool = False) -> list[str]:
    """One line per node (``events_flow: Processing 1 new interval (...)``) plus its notes."""
    lines = []
    verb = "Would process" if dry_run else "Processing"
    for node_plan in plan.nodes:
        node = sess.project.nodes[node_plan.node]
        if node_plan.full_refresh:
            text = f"{'Would rebuild' if dry_run else 'Rebuilding'} the whole table (no schedule)"
        elif node_plan.due:
            text = render.describe_due(node_plan.due, node, verb)
            batches = node_plan.batch_count()
            if dry_run:
                text += f" in {render.plural(batches, 'batch', 'batches')}"
        elif node_plan.waiting:
            text = None  # its waiting lines say it all
        elif node_plan.notes:
            text = "nothing to do"
        else:
            text = "up to date" if plan.mode == "run" else "nothing missing in the range"
        if text is not None:
            lines.append(f"{node_plan.node}: {text}")
        lines += [waiting.line(node_plan.node, node.timezone) for waiting in node_plan.waiting]
        lines += [f"{node_plan.node}: note: {note}" for note in node_plan.notes]
    return lines


def plan_json(sess: Session, plan: Plan, *, each: bool = False) -> dict:
    """The plan as JSON: runs of due intervals per node, or one object per interval (``each``)."""
    data = plan.to_dict(sess.project, each=each)
    data["total_intervals"] = plan.total_intervals
    return data


def is_terminal() -> bool:
    """Progress bars only for a person watching (not pipes, logs or CI)."""
    return sys.stdout.isatty()


# -- during and after --------------------------------------------------------------------------
def execute(sess: Session, plan: Plan, *, as_json: bool = False, origin: str | None = None,
            extra: dict | None = None, engines: EnginePool | None = None) -> int:
    """Run the plan with progress, print the summary; the exit code (1 if any failed).
    ``engines``: the pool that prepared the plan (the caller closes it), else the run's own."""
    run_id = uuid.uuid4().hex[:12]
    busy = any(node_plan.due or node_plan.full_refresh for node_plan in plan.nodes)
    if not as_json:
        lines = plan_lines(sess, plan)
        if lines:
            click.echo("\n".join(lines))  # one write: a project may list thousands of nodes
    if not busy:
        if as_json:
            render.echo_json({**result_json(plan, None, run_id), **(extra or {})})
        return 0
    with interrupting(interrupt_open_engines):  # Ctrl-C stops a running query at once
        if as_json:
            result = runner.execute(plan, sess.project, sess.store, engine=engines, origin=origin,
                                    run_id=run_id, describe=False)
        elif is_terminal():
            with RichProgress(sess) as progress:
                result = runner.execute(plan, sess.project, sess.store, engine=engines,
                                        progress=progress, origin=origin, run_id=run_id, describe=False)
        else:
            result = runner.execute(plan, sess.project, sess.store, engine=engines,
                                    progress=PlainProgress(sess), origin=origin, run_id=run_id,
                                    describe=False)
    if as_json:
        render.echo_json({**result_json(plan, result, run_id), **(extra or {})})
    else:
        summary(sess, result)
    return 0 if result.ok else 1


def prepare_and_execute(sess: Session, names: list[str] | None, window: Window, *, as_json: bool = False,
                        extra: dict | None = None, **options: Any) -> int:
    """``prepare_nodes`` (the one door) then ``execute``, over one pool of engines: readiness,
    input digests and the writes share one DuckDB connection, so a process opens the file
    once.  A plan over files only keeps prepare's own pool (its readiness may read the file,
    its run does not: no lock taken for it)."""
    from ..runner import run_engines

    engines = run_engines(sess.project, names)
    try:
        plan = prepare_nodes(sess, names, window, engines=engines if engines.database else None,
                             **options).plan
        return execute(sess, plan, as_json=as_json, extra=extra, engines=engines)
    finally:
        engines.close()


def node_audit(node, name: str):
    """The node's audit called ``name``."""
    return next(a for a in node.audits if a.name == name)


def warning_lines(node, warnings) -> list[str]:
    """A node's audit warnings: one line per run of intervals failing alike, capped."""
    if not node.is_incremental:  # a table node's audits see the whole table
        return [f"  warning {node.name} whole table: "
                f"{describe_failure(node_audit(node, w.audit), w.rows, w.samples)}" for w in warnings]
    found = [(w.interval, None, describe_failure(node_audit(node, w.audit), w.rows, w.samples))
             for w in warnings]
    return render.capped([f"  warning {node.name} {render.span(a, b, node)}{render.counted(count)}: {message}"
                          for a, b, count, _, message in render.audit_runs(found, node)],
                         f"seeknal audit {node.name} --json lists them all")


def result_json(plan: Plan, result: RunResult | None, run_id: str) -> dict:
    nodes = [n.to_dict() for n in result.nodes] if result else []
    return {
        "mode": plan.mode, "now": plan.now.isoformat(), "run_id": run_id,
        "ok": result.ok if result else True, "intervals": result.intervals if result else 0,
        "rows": result.rows if result else 0, "failed": result.failed if result else 0,
        "warnings": sum(len(n.warnings) for n in result.nodes) if result else 0,
        "seconds": round(result.seconds, 4) if result else 0.0, "nodes": nodes,
        "waiting": waiting_json(plan),
    }


def waiting_json(plan: Plan) -> list[dict]:
    """The intervals held back for their sources' data, per node and source."""
    return [{"node": node_plan.node, **waiting.to_dict("UTC")}
            for node_plan in plan.nodes for waiting in node_plan.waiting]


def summary(sess: Session, result: RunResult) -> None:
    """Totals on stdout; each failure as one ``Error:`` line on stderr; skips with reasons."""
    tables = sum(1 for n in result.nodes if n.full_refresh and not n.failures)
    parts = [render.plural(result.intervals, "interval")]
    if tables:
        parts.append(render.plural(tables, "table") + " rebuilt")
    parts.append(render.plural(result.rows, "row"))
    skipped = [(n, p, r) for n in result.nodes for p, r in n.skipped]
    warnings = [(n, w) for n in result.nodes for w in n.warnings]
    if result.failed:
        parts.append(f"{result.failed} failed")
    if skipped:
        parts.append(f"{len(skipped)} skipped")
    if warnings:
        parts.append(render.plural(len(warnings), "audit warning"))
    head = "Done" if result.ok and not skipped else "Finished with problems"
    click.echo(f"{head}: {', '.join(parts)} in {render.seconds_text(result.seconds)}")
    for n, pair, reason in skipped:
        node = sess.project.nodes[n.node]
        click.echo(f"  skipped {n.node} {render.span(pair[0], pair[1], node)}: {reason}")
    for n in result.nodes:
        if n.warnings:
            click.echo("\n".join(warning_lines(sess.project.nodes[n.node], n.warnings)))
    # a query-level error fails a whole batch with one message: print it once
    errors = list(dict.fromkeys((n.node, error) for n in result.nodes for _pair, error in n.failures))
    for _node, error in errors[:MAX_ERRORS]:
        click.echo(f"Error: {error}", err=True)
    if len(errors) > MAX_ERRORS:
        nodes = ", ".join(dict.fromkeys(n for n, _ in errors[MAX_ERRORS:]))
        click.echo(f"Error: {len(errors) - MAX_ERRORS} more failures of {nodes}: "
                   "`seeknal intervals show` lists them", err=True)
