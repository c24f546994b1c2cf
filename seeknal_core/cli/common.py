"""What every command shares: the project and store, the clock, dates, node selection."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from ..errors import SeeknalError
from ..timeutil import UTC, inclusive_end, parse_datetime_text, to_utc

if TYPE_CHECKING:  # imported where used: `seeknal --help` and `init` load no project code
    from ..project import Project, TransformNode
    from ..runner import Plan, Prepared
    from ..schedule import Schedule
    from ..state import StateStore

NOW_VARIABLE = "SEEKNAL_NOW"


class CliError(SeeknalError):
    """A usage or configuration error found by the CLI itself (exit code 2)."""


# -- the session: project, store, clock -----------------------------------------------------
class Session:  # a plain class: a dataclass costs every process ~0.1 ms to create
    """The project a command works on, loaded on first use."""

    def __init__(self, project_path: str = ".") -> None:
        self.project_path = project_path
        self._now: dt.datetime | None = None

    @cached_property
    def project(self) -> Project:
        from ..project import load_project

        return load_project(self.project_path)

    @cached_property
    def store(self) -> StateStore:
        from ..state import open_store

        return open_store(self.project.root, self.project.state_config)

    @property
    def now(self) -> dt.datetime:
        """``$SEEKNAL_NOW`` (an ISO instant; naive means UTC) or the clock."""
        if self._now is None:
            text = os.environ.get(NOW_VARIABLE, "").strip()
            if not text:
                self._now = dt.datetime.now(UTC)
            else:
                try:
                    self._now = to_utc(text)
                except ValueError as exc:
                    raise CliError(f"${NOW_VARIABLE}: {exc}") from None
                except OverflowError:  # 0001-01-01T00:00+14:00 is before the first instant
                    raise CliError(f"${NOW_VARIABLE}={text} is outside the instants a date-time "
                                   "can hold (0001-01-01 to 9999-12-31 UTC): give a later (or "
                                   "earlier) clock") from None
        return self._now

    def node(self, name: str) -> TransformNode:
        return self.project.node(name)

    def scheduled(self, name: str) -> TransformNode:
        """A node that tracks intervals; a clear error for a full-refresh table."""
        node = self.node(name)
        if not node.is_incremental:
            raise CliError(f"node '{node.name}' has no schedule, so it has no intervals: add "
                           f"schedule: '@daily' (and time_column:) to {_where(node)}")
        return node

    def with_schedule(self, node: TransformNode, text: str) -> TransformNode:
        """``node`` given ``text`` as its schedule for this command only (``backfill --schedule``)."""
        if node.time_column is None:
            raise CliError(f"node '{node.name}' needs time_column: to be backfilled by interval — "
                           f"add it to {_where(node)}")
        changed = replace(node, schedule=parse_schedule(text, node.timezone), materialization="incremental")
        self.project = self.project.with_nodes({**self.project.nodes, node.name: changed})
        return changed

    def scheduled_nodes(self) -> list[TransformNode]:
        return [self.project.nodes[n] for n in self.project.topological_order()
                if self.project.nodes[n].is_incremental]


def _where(node: TransformNode) -> str:
    return str(node.path) if node.path else f"node '{node.name}'"


def project_option(func: Callable) -> Callable:
    """``--project-path`` (default: the current folder), stored on the click context."""

    def store_path(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            ctx.ensure_object(Session).project_path = value
        return value

    return click.option(
        "--project-path", "-p", metavar="PATH", expose_value=False, callback=store_path,
        is_eager=True, help="Project folder (default: the current folder).",
    )(func)


def session() -> Session:
    return click.get_current_context().ensure_object(Session)


# -- dates --------------------------------------------------------------------------------------
def check_date(_ctx: click.Context | None, param: click.Parameter | None, value: Any) -> Any:
    """Validate date options at parse time (bad text is a usage error); keep the raw text."""
    if value is None:
        return None
    for text in value if isinstance(value, tuple) else (value,):
        for part in str(text).split("/") if isinstance(value, tuple) else (str(text),):
            try:
                parse_datetime_text(part)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param=param) from None
    return value


def check_duration(_ctx: click.Context | None, param: click.Parameter | None, value: Any) -> Any:
    """Validate ``--last`` at parse time (pendulum is imported only when it is given)."""
    if value is not None:
        from .relative import parse_duration

        try:
            parse_duration(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param=param) from None
    return value


def date_options(func: Callable) -> Callable:
    """``--start/--start-date``, ``--end/--end-date`` (raw text, read per node) and ``--last``."""
    func = click.option(
        "--last", metavar="DURATION", callback=check_duration,
        help="The range ending at --end (default: now): 24h, 7d, 90m or ISO 8601 (PT24H, P7D).",
    )(func)
    func = click.option(
        "--end", "--end-date", "end", metavar="DATE", callback=check_date,
        help="End of the range: a date means through that whole day; a date-time is exclusive.",
    )(func)
    return click.option(
        "--start", "--start-date", "start", metavar="DATE", callback=check_date,
        help="Start of the range: 2024-01-01 or 2024-01-01T06:00:00[+02:00] (naive = node's timezone).",
    )(func)


class Window(NamedTuple):  # immutable like a frozen dataclass, ~0.4 ms less to create at start-up
    """A user's ``--start``/``--end``/``--last`` text; naive values are read in each node's
    timezone.  ``--last D`` is the range ``[end - D, end)``, ``end`` defaulting to now."""

    start: str | None = None
    end: str | None = None
    last: str | None = None

    def __bool__(self) -> bool:
        return self.start is not None or self.end is not None or self.last is not None

    def __str__(self) -> str:
        if self.last is not None:
            return f"the last {self.last}" + (f" before {self.end}" if self.end is not None else "")
        return f"{self.start} to {self.end}"

    def values(self, now: dt.datetime | None = None) -> tuple[Any, Any]:
        """The range for the runner, which reads naive values in each node's timezone; a
        date alone as ``--end`` means through the end of that day."""
        start = parse_datetime_text(self.start) if self.start is not None else None
        end = parse_datetime_text(self.end) if self.end is not None else None
        if start is not None and end is not None and to_utc(start) > to_utc(end):
            raise CliError(f"--start {self.start} is after --end {self.end}: swap them")
        end = inclusive_end(end) if end is not None else None
        if self.last is not None:
            if self.start is not None:
                raise click.UsageError("--last and --start both set where the range starts: drop one")
            from .relative import before

            end = end if end is not None else now if now is not None else session().now
            try:
                return before(end, self.last), end
            except (OverflowError, ValueError):  # before the year 1
                raise CliError(f"--last {self.last} before {self.end or 'now'} reaches before the "
                               "first representable date (0001-01-01): give a shorter duration "
                               "or a later --end") from None
        return start, end

    def require(self) -> None:
        if self.last is not None:
            return
        if self.start is None or self.end is None:
            missing = " and ".join(o for o, v in (("--start", self.start), ("--end", self.end)) if v is None)
            raise click.UsageError(f"missing {missing}: give the range as --start DATE --end DATE")


def plan_nodes(
    sess: Session, names: Sequence[str] | None, window: Window, **options: Any
) -> Plan:
    """``runner.plan`` over the user's window and the state as stored: what is due, with
    no policy applied (``intervals pending``)."""
    from .. import runner

    start, end = window.values(sess.now)
    return runner.plan(sess.project, sess.store.load(), mode=options.pop("mode", "run"), nodes=names,
                       start=start, end=end, now=sess.now, **options)


def prepare_nodes(
    sess: Session, names: Sequence[str] | None, window: Window, *, dry_run: bool = False, **options: Any
) -> Prepared:
    """``runner.prepare`` (the one door: on_change, start inference, plan) over the user's
    window; its run-level notes printed once, on stderr."""
    from .. import runner

    start, end = window.values(sess.now)
    prepared = runner.prepare(sess.project, sess.store, mode=options.pop("mode", "run"), nodes=names,
                              start=start, end=end, now=sess.now, dry_run=dry_run, **options)
    for note in prepared.notes:
        click.echo(note, err=True)
    return prepared


# -- schedules -------------------------------------------------------------------------------------
def parse_schedule(text: str, timezone: str = "UTC") -> Schedule:
    from ..schedule import Schedule

    try:
        return Schedule(text, timezone)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--schedule'") from None


def same_schedule(node: TransformNode, text: str) -> bool:
    """The node's schedule equals ``text`` read in the node's timezone (cron and zone)."""
    return node.schedule is not None and node.schedule == parse_schedule(text, node.timezone)


def check_schedule(node: TransformNode, text: str | None) -> None:
    """``--schedule`` given for a node that has its own: they must agree."""
    if text is None or node.schedule is None or same_schedule(node, text):
        return
    own = node.schedule
    raise CliError(
        f"--schedule {text!r} ({parse_schedule(text, node.timezone).cron}) differs from node "
        f"'{node.name}' schedule {own.expression!r} ({own.cron}, {own.timezone}): drop --schedule "
        "or change the node's YAML")
