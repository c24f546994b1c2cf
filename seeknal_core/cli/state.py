"""``seeknal state ...``: operations on the state store as a whole (thin over ``state.migrate``)."""

from __future__ import annotations

import os

import click

from ..state.backends import BACKENDS
from .common import project_option, session


@click.group("state", short_help="Move the state store between backends.")
@project_option
def state() -> None:
    """The state store as a whole: where seeknal remembers completed intervals."""


@state.command("migrate", short_help="Copy the state to PostgreSQL or a JSON file.")
@click.option("--to", "to", type=click.Choice(list(BACKENDS)), required=True,
              help="The backend to copy into (it must be empty).")
@click.option("--dsn", metavar="DSN",
              help="For --to postgres: postgresql://user@host:5432/dbname (password via PGPASSWORD "
                   "or ~/.pgpass).")
@click.option("--schema", metavar="NAME", help="For --to postgres: the schema to use (default seeknal).")
@click.option("--path", metavar="PATH",
              help="For --to json: the state file (default target/run_state.json, relative to the project).")
@project_option
def migrate_command(to: str, dsn: str | None, schema: str | None, path: str | None) -> int:
    """Copy the project's state to another backend, with nothing lost.

    Completed and failed intervals, restatements (resolved ones too), partition keys,
    fingerprints, last runs and the whole audit history are copied, revision numbers
    included, then checked.  Nothing is switched: the command prints the `state:`
    section to put in seeknal_project.yml.  Stop every writer (runs, Dagster) first.
    """
    from ..state import DSN_VARIABLE, migrate
    from ..state.postgres_store import has_password

    sess = session()
    source = sess.store
    target = migrate.open_destination(sess.project.root, to, dsn=dsn, schema=schema, path=path)
    report = migrate.copy_state(source, target)
    click.echo(
        f"Copied {report.nodes} node(s), {report.restatements} restatement(s) and "
        f"{report.audit_records} audit record(s) at revision {report.revision} "
        f"from {migrate.describe(source)} to {migrate.describe(target)}; verified."
    )
    click.echo(f"Nothing was switched: the project still uses {migrate.describe(source)}. "
               "To use the copy, put this in seeknal_project.yml:")
    click.echo("")
    click.echo(migrate.state_block(target, sess.project.root))
    click.echo("")
    if to == "postgres":
        if dsn and has_password(dsn):
            click.echo("(The password is left out: give it with PGPASSWORD or ~/.pgpass.)")
        click.echo(f"or set {DSN_VARIABLE} in the environment of every seeknal and Dagster process.")
    elif os.environ.get(DSN_VARIABLE, "").strip():
        click.echo(f"and unset {DSN_VARIABLE}, which overrides the file.")
    click.echo("Switch only after stopping every process that writes state: later changes to the "
               "old store are not copied.")
    target.close()
    return 0
