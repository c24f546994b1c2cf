"""``SeeknalResource``: what a run needs to reach a seeknal project's data and state, typed.

The assets and the apply job take it as a resource parameter (``seeknal: SeeknalResource``)
instead of looking resources up by name.  It holds the project folder, the DuckDB database
(a nested ``DuckDBResource``: pass your own to share its connection settings) and the state
store's DSN override; the project's own ``state:`` settings apply otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from seeknal_core.project import Project
from seeknal_core.state import StateStore, open_store

#: Resource key of the ``SeeknalResource`` (the name of the assets' resource parameter).
SEEKNAL_RESOURCE_KEY = "seeknal"


class SeeknalResource(dg.ConfigurableResource):
    """A seeknal project's runtime settings: ``project_dir``, the ``duckdb`` resource writes
    go through, and ``state_dsn`` (a PostgreSQL DSN overriding the project's ``state:``)."""

    project_dir: str
    duckdb: DuckDBResource
    state_dsn: str | None = None

    @contextmanager
    def state_store(self, project: Project) -> Iterator[StateStore]:
        """The project's store, opened for one run or tick and closed after (no fds leak
        into long-lived daemon processes)."""
        config = project.state_config
        if self.state_dsn:
            config = {"backend": "postgres", "dsn": self.state_dsn,
                      **({"schema": config["schema"]} if config and config.get("schema") else {})}
        store = open_store(project.root, config)
        try:
            yield store
        finally:
            store.close()

    @contextmanager
    def connection(self) -> Iterator[object]:
        """A connection to the project's DuckDB file through the ``duckdb`` resource (its
        folder created first: ``duckdb.connect`` does not)."""
        database = str(self.duckdb.database or "")
        if database and database != ":memory:" and "://" not in database:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        with self.duckdb.get_connection() as con:
            yield con


__all__ = ["SEEKNAL_RESOURCE_KEY", "SeeknalResource"]
