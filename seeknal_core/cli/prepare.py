"""``seeknal prepare``: warm the load cache at build time, as ``dbt parse`` prepares
dagster-dbt's manifest.

A Dagster code location reads each transform's fingerprint and column lineage from
``target/project_cache.json``; when every entry is there it parses no SQL (it does not even
import sqlglot).  A container's code server starts from the image, so the image must carry
the cache: run this command when building it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from . import render
from .common import CliError, project_option, session


@click.command("prepare", short_help="Warm the load cache for a deploy image (like `dbt parse`).")
@project_option
def prepare_command() -> int:
    """Load the project and compute what a Dagster load reads from the load cache: every
    transform's fingerprint and column lineage; write target/project_cache.json now.

    Run it when building a deploy image, like `dbt parse`, so code servers start warm
    (no SQL parsed).  A transform whose SQL cannot be analysed exactly gets no lineage:
    counted, not an error.
    """
    from ..project.cache import CACHE_FILE, save_learned
    from ..project.lineage import column_lineage

    began = time.perf_counter()
    project = session().project
    target = project.root / "target"
    try:
        target.mkdir(exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {target}: {exc.strerror or exc} — make the project folder "
                       "writable") from None
    if not os.access(target, os.W_OK):
        raise CliError(f"cannot write to {target}: make it writable")
    analysed = 0
    for name in project.topological_order():  # upstream first: each reads its inputs' outputs
        project.nodes[name].fingerprint  # noqa: B018 - computed to be cached
        analysed += column_lineage(project, name) is not None
    save_learned(project.root)
    path = target / CACHE_FILE
    if not path.is_file():  # save_learned keeps quiet about a failed write (other commands go on)
        raise CliError(f"could not write {path}: make {target} writable")
    total = len(project.nodes)
    click.echo(f"Prepared {render.plural(total, 'node')} in {_shown(path)} (lineage for {analysed}; "
               f"{total - analysed} not analysable) in {time.perf_counter() - began:.1f} s")
    return 0


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
