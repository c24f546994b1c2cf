"""DuckDB execution: idempotent interval writes.

``incremental`` nodes: each batch is one transaction: delete the batch's time range (or
partition keys) from the node's table, insert the rendered query's rows that fall inside
the range, commit.  Re-running an interval therefore replaces its rows and never
duplicates them.  Rows a query produces outside its interval are not inserted (as
SQLMesh and dbt's microbatch do), because nothing would ever delete them again.

``parquet`` nodes: each interval is its own file under ``target/data/<node>/``, written
to a temp file and renamed over the old one, so a re-run replaces it whole and workers
writing different intervals never block each other.  The node's name is a view over all
of its files.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import duckdb

from ..errors import ProjectError, SeeknalError
from ..project import Project, SourceNode, TransformNode
from ..templating import quote_identifier as q
from ..timeutil import get_zone


class ExecutionError(SeeknalError):
    """A node's SQL failed for an interval; the message names node and interval."""


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def source_relation_sql(source: SourceNode) -> str:
    """A SELECT over a source's files or table."""
    if source.location:
        reader = "read_csv_auto" if (source.format or "").lower() == "csv" else "read_parquet"
        return f"SELECT * FROM {reader}({_sql_literal(source.location)})"
    return f"SELECT * FROM {q(source.table or source.name)}"


class DuckDBEngine:
    """Runs a project's nodes against one DuckDB database.

    ``connection`` lets a caller (the Dagster ``DuckDBResource``) hand in its own.
    """

    def __init__(
        self,
        project: Project,
        connection: duckdb.DuckDBPyConnection | None = None,
        *,
        in_memory: bool = False,
    ):
        self.project = project
        if connection is None and in_memory:
            connection = duckdb.connect(":memory:")
            self._owned = True
        elif connection is None:
            Path(project.database_path).parent.mkdir(parents=True, exist_ok=True)
            try:
                connection = duckdb.connect(str(project.database_path))
            except duckdb.IOException as exc:
                raise SeeknalError(
                    f"cannot open database {project.database_path}: {str(exc).splitlines()[0]} "
                    "— is another seeknal or Dagster process writing to it?"
                ) from None
            self._owned = True
        else:
            self._owned = False
        self.con = connection
        self._table_kinds: dict[str, dict[str, str]] = {}
        self._register_sources()

    def close(self) -> None:
        if self._owned:
            self.con.close()

    def __enter__(self) -> DuckDBEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- relations ------------------------------------------------------------------------
    def _register_sources(self) -> None:
        """Make every file source visible to SQL under its own name (temp views, so the
        database file is not changed by merely reading)."""
        for source in self.project.sources.values():
            if source.location or (source.table and source.table != source.name):
                self.con.execute(
                    f"CREATE OR REPLACE TEMP VIEW {q(source.name)} AS {source_relation_sql(source)}"
                )
        for node in self.project.nodes.values():
            if node.materialization == "parquet":
                self._register_parquet_view(node)

    def parquet_dir(self, node: TransformNode) -> Path:
        return self.project.target_dir / "data" / node.name

    def _register_parquet_view(self, node: TransformNode) -> None:
        folder = self.parquet_dir(node)
        if any(folder.glob("*.parquet")):
            glob = _sql_literal(str(folder / "*.parquet"))
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {q(node.name)} AS "
                             f"SELECT * FROM read_parquet({glob}, union_by_name = true)")

    def write_parquet_intervals(
        self, node: TransformNode, sql: str, intervals: list[tuple[dt.datetime, dt.datetime]]
    ) -> int:
        """Run the batch's query once, then write each interval's rows to its own file
        (temp file, then rename).  Returns the rows written."""
        folder = self.parquet_dir(node)
        folder.mkdir(parents=True, exist_ok=True)
        staged = f"_seeknal_batch_{uuid.uuid4().hex}"
        single = len(intervals) == 1
        con = self.con
        if not single:
            con.execute(f"CREATE TEMP TABLE {q(staged)} AS SELECT * FROM ({sql}) AS q")
        rows = 0
        try:
            for start, end in intervals:
                source = f"({sql})" if single else q(staged)
                where = self._range_predicate(node, start, end, "") if node.time_column else "true"
                final = folder / f"{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}.parquet"
                temp = folder / f".{final.name}.{uuid.uuid4().hex}.tmp"
                try:
                    result = con.execute(
                        f"COPY (SELECT * FROM {source} AS q WHERE {where}) TO "
                        f"{_sql_literal(str(temp))} (FORMAT PARQUET)").fetchone()
                    os.replace(temp, final)
                finally:
                    temp.unlink(missing_ok=True)
                rows += int(result[0]) if result else 0
        finally:
            if not single:
                con.execute(f"DROP TABLE IF EXISTS {q(staged)}")
        self._register_parquet_view(node)
        return rows

    def _columns(self, name: str) -> dict[str, str]:
        kinds = self._table_kinds.get(name)
        if kinds is None:
            rows = self.con.execute(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
                "AND schema_name = 'main' AND database_name = current_database()", [name]
            ).fetchall()
            kinds = {c.lower(): t for c, t in rows}
            if kinds:
                self._table_kinds[name] = kinds
        return kinds

    def count_rows(self, name: str) -> int:
        return int(self.con.execute(f"SELECT count(*) FROM {q(name)}").fetchone()[0])

    # -- writes ---------------------------------------------------------------------------
    def _range_predicate(
        self, node: TransformNode, start: dt.datetime, end: dt.datetime, kind: str | None = None
    ) -> str:
        """``time_column in [start, end)``, in the column's own terms: wall clock of the
        node's timezone for naive types (as ``{{ start }}`` renders), instants for TIMESTAMPTZ.
        ``kind`` is the column's type (default: looked up in the node's table)."""
        column = q(node.time_column)
        if kind is None:
            kind = self._columns(node.name).get(node.time_column.lower(), "")
        if "WITH TIME ZONE" in kind.upper():
            lo, hi = (_sql_literal(t.isoformat()) for t in (start, end))
            return f"{column} >= CAST({lo} AS TIMESTAMPTZ) AND {column} < CAST({hi} AS TIMESTAMPTZ)"
        tz = get_zone(node.timezone)
        lo, hi = (_sql_literal(t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")) for t in (start, end))
        return (f"CAST({column} AS TIMESTAMP) >= CAST({lo} AS TIMESTAMP) "
                f"AND CAST({column} AS TIMESTAMP) < CAST({hi} AS TIMESTAMP)")

    def write_batch(
        self,
        node: TransformNode,
        sql: str,
        start: dt.datetime,
        end: dt.datetime,
        partition_keys: list[str] | None = None,
    ) -> int:
        """Replace the node's rows for ``[start, end)`` with the query's rows; one transaction.

        Returns the number of rows inserted.  Raises ``ExecutionError`` (rolled back).
        """
        name = q(node.name)
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            if not self._columns(node.name):
                con.execute(f"CREATE TABLE IF NOT EXISTS {name} AS SELECT * FROM ({sql}) AS q LIMIT 0")
                self._table_kinds.pop(node.name, None)
                if node.time_column and node.time_column.lower() not in self._columns(node.name):
                    raise ProjectError(
                        f"node '{node.name}': its SQL has no output column '{node.time_column}' "
                        f"(time_column); set time_column: to one of {', '.join(self._columns(node.name))}"
                    )
            where = self._range_predicate(node, start, end)
            delete_where = where
            if node.partition_column and partition_keys:
                keys = ", ".join(_sql_literal(k) for k in partition_keys)
                delete_where = f"({where}) OR CAST({q(node.partition_column)} AS VARCHAR) IN ({keys})"
            con.execute(f"DELETE FROM {name} WHERE {delete_where}")
            rows = con.execute(
                f"INSERT INTO {name} SELECT * FROM ({sql}) AS q WHERE {where}"
            ).fetchone()[0]
            con.execute("COMMIT")
            return int(rows)
        except BaseException:
            con.execute("ROLLBACK")
            self._table_kinds.pop(node.name, None)
            raise

    def replace_table(self, node: TransformNode, sql: str) -> int:
        """Full refresh of a ``table`` node: the new table replaces the old atomically."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute(f"CREATE OR REPLACE TABLE {q(node.name)} AS {sql}")
            rows = self.count_rows(node.name)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self._table_kinds.pop(node.name, None)
        return rows
