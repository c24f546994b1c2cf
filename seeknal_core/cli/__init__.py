"""The ``seeknal`` command line: thin over the runner and the state store.

Exit codes: 0 success, 1 some intervals failed, 2 usage or configuration error, 3 data written
but not recorded in state (re-run), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).  User
errors are one ``Error: ...`` line on stderr, never a traceback.  ``$SEEKNAL_NOW`` (an
ISO instant) replaces the clock for every command.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Sequence
from typing import Any

import click

from ..errors import SeeknalError
from ..lexer import LazyPattern
from .common import Session, project_option

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: command name -> (module in this package, attribute): a command's module, and what it
#: imports (runner, state, duckdb), loads only when that command runs or help lists it
COMMANDS = {
    "audit": ("audit", "audit_command"),
    "init": ("init", "init_command"),
    "intervals": ("intervals", "intervals"),
    "plan": ("plan", "plan_command"),
    "prepare": ("prepare", "prepare_command"),
    "run": ("run", "run_command"),
    "state": ("state", "state"),
}


class SeeknalGroup(click.Group):
    """A group whose ``main`` turns user errors into one line and an exit code, and
    whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(f".{module}", __name__), attr), cmd_name)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # as Abort, so click prints no blank line before ours
            raise click.exceptions.Abort() from None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        from . import interrupt

        with interrupt.terminate_like_interrupt():
            code = _guarded(lambda: super(SeeknalGroup, self).main(
                args, prog_name or "seeknal", complete_var, standalone_mode=False, **extra))
        if code == EXIT_USAGE and (cache := sys.modules.get("seeknal_core.project.cache")):
            cache.discard_unsaved()  # bad input: target/project_cache.json stays as it was
        if standalone_mode:
            sys.exit(code)
        return code


def _guarded(call: Any) -> int:
    """Run the CLI; map results and user errors to exit codes."""
    try:
        result = call()
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
        return EXIT_OK
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        _error(exc.format_message() + hint)
        return EXIT_USAGE
    except click.ClickException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except click.exceptions.Abort:
        from . import interrupt

        if interrupt.received == signal.SIGTERM:
            _error("terminated (SIGTERM)")
            return 128 + signal.SIGTERM
        _error("aborted")
        return 130
    except SeeknalError as exc:  # includes ProjectError, PlanError, StateError
        _error(str(exc))
        return exc.exit_code  # 2, or 3 when rows were written but not recorded
    except (OverflowError, ValueError) as exc:
        if not _OUT_OF_CALENDAR.search(str(exc)):
            raise
        # a date that some time zone or step moves past the year 1 or 9999 (the checks
        # before it cannot foresee every such step): bad input, not a crash
        _error(f"a date reaches outside the calendar (0001-01-01 to 9999-12-31): {exc} — "
               "use dates (and $SEEKNAL_NOW) nearer to now")
        return EXIT_USAGE
    return result if isinstance(result, int) else EXIT_OK


_OUT_OF_CALENDAR = LazyPattern(r"year -?\d+ is out of range|date value out of range|"
                              r"must have magnitude <=|out of range for (?:date|datetime)")


def _error(message: str) -> None:
    click.echo(f"Error: {' '.join(str(message).split())}", err=True)


@click.group("seeknal", cls=SeeknalGroup, context_settings={"help_option_names": ["-h", "--help"]})
@project_option
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Interval tracking for incremental SQL pipelines.

    \b
    seeknal run                          process new intervals
    seeknal run --backfill               fill every missing interval
    seeknal intervals show               completed intervals per node
    seeknal intervals pending            what a backfill would do

    Exit codes: 0 ok, 1 some intervals failed, 2 usage or configuration error,
    3 data written but state not recorded (re-run), 130 interrupted, 143 terminated.
    SEEKNAL_NOW=2024-01-05T00:00:00Z replaces the clock (tests, demos).
    """
    ctx.ensure_object(Session)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``seeknal``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="seeknal")


__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "cli", "main"]
