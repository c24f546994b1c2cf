"""DuckDB execution: idempotent interval writes.

``incremental`` nodes: each batch is one transaction: delete the batch's time range (or
partition keys) from the node's table, insert the rendered query's rows that fall inside
the range, count them per interval, commit.  Re-running an interval therefore replaces its
rows and never duplicates them.  Rows a query produces outside its interval are not
inserted (as SQLMesh and dbt's microbatch do), because nothing would ever delete them again.

``parquet`` nodes: each interval is its own file under ``target/data/<node>/``, written
to a temp file and renamed over the old one, so a re-run replaces it whole and workers
writing different intervals never block each other.  The node's name is a view over all
of its files.

duckdb's exceptions stop here: they leave as the engine protocol's ``QueryError``,
``BatchError`` or ``ResourceError`` (``errors.py``), or as ``KeyboardInterrupt`` (Ctrl-C,
or ``interrupt()`` from another thread).
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb

from ..durable import atomic_write
from ..errors import ProjectError, SeeknalError
from ..project import Project, SourceNode, TransformNode, did_you_mean
from ..project.audits import INTERVAL_COLUMN, ROW_KINDS, SAMPLES, Audit, aggregate_sql
from ..templating import quote_identifier as q
from ..timeutil import from_epoch, get_zone, to_epoch
from . import DATABASE, DATASET, output_layout
from .base import BatchError, Digest, EngineError, Outcome, Pair, QueryError, ResourceError, publish
from .digest import Buckets

#: errors in the SQL itself: every interval of a batch fails the same way
_QUERY_ERRORS = (duckdb.ParserException, duckdb.SyntaxException, duckdb.BinderException,
                 duckdb.CatalogException)
_LOCKED = ("could not set lock", "conflicting lock")
_DISK_FULL = ("no space left on device", "disk quota exceeded")
#: the machine's fault, not the batch's: nothing later in the run can succeed
_RESOURCE = (*_LOCKED, *_DISK_FULL, "read-only file system", "database has been invalidated")
_LOCK_HINT = " — is another seeknal or Dagster process writing to it?"


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def engine_error(exc: duckdb.Error, where: Path) -> EngineError:
    """duckdb's exception as the engine protocol's: what the runner should do about it.
    ``where`` is the file or folder being written (named when the disk is full)."""
    text = _text(exc)
    low = text.lower()
    if any(m in low for m in _DISK_FULL):
        return ResourceError(f"the disk is full: no space left on device for {where} — free space "
                             f"there (or point `database:` elsewhere), then re-run `seeknal run`")
    if any(m in low for m in _RESOURCE) or isinstance(exc, duckdb.FatalException):
        return ResourceError(text + (_LOCK_HINT if any(m in low for m in _LOCKED) else ""))
    if isinstance(exc, _QUERY_ERRORS):
        return QueryError(text)
    return BatchError(text)


def syntax_error(sql: str) -> str | None:
    """Why DuckDB's parser refuses ``sql`` (its message and line), or None: parsed only,
    nothing bound or run, so no database is needed (``EngineKind.syntax``)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        first, *rest = str(exc).strip().splitlines() or [type(exc).__name__]
        line = next((r.split(":", 1)[0].strip() for r in rest if r.strip().startswith("LINE ")), "")
        return " ".join(first.split()) + (f" ({line.lower()} of its SQL)" if line else "")
    if len(statements) != 1:
        return f"it holds {len(statements)} statements: a node's SQL is one query"
    return None


def open_error(path: Path, exc: BaseException) -> SeeknalError:
    """Why the database file cannot be opened; the concurrency hint only for a lock."""
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    message = f"cannot open database {path}: {first}"
    low = first.lower()
    if any(m in low for m in _LOCKED):
        return ResourceError(message + _LOCK_HINT)
    if "not a valid duckdb database" in low:
        return ProjectError(message + " — point `database:` in seeknal_project.yml at a DuckDB file")
    return ResourceError(message)


def _interrupted(exc: RuntimeError) -> bool:
    """duckdb reports Ctrl-C during a query as ``RuntimeError('Query interrupted')``."""
    return "query interrupted" in str(exc).lower()


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def qualified(name: str) -> str:
    """A table name as SQL, each dot-separated part quoted: ``raw.events`` ->
    ``"raw"."events"`` (parts already in double quotes are kept whole)."""
    parts, part, quoted, i = [], "", False, 0
    while i < len(name):
        ch = name[i]
        if ch == '"' and quoted and name[i + 1:i + 2] == '"':
            part, i = part + '"', i + 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(part)
            part = ""
        else:
            part += ch
        i += 1
    return ".".join(q(p.strip()) for p in [*parts, part])


def source_relation_sql(source: SourceNode) -> str:
    """A SELECT over a source's files or table."""
    if source.location:
        reader = "read_csv_auto" if (source.format or "").lower() == "csv" else "read_parquet"
        return f"SELECT * FROM {reader}({_sql_literal(source.location)})"
    return f"SELECT * FROM {qualified(source.table or source.name)}"


class DuckDBEngine:
    """Runs a project's nodes against one DuckDB database.

    ``connection`` lets a caller (the Dagster ``DuckDBResource``) hand in its own;
    ``in_memory`` serves runs that touch only files (no database lock to share).
    """

    name = "duckdb"

    def __init__(
        self,
        project: Project,
        connection: duckdb.DuckDBPyConnection | None = None,
        *,
        in_memory: bool = False,
    ):
        self.project = project
        self.in_memory = in_memory and connection is None
        if connection is None and in_memory:
            connection = duckdb.connect(":memory:")
            self._owned = True
        elif connection is None:
            try:
                Path(project.database_path).parent.mkdir(parents=True, exist_ok=True)
                connection = duckdb.connect(str(project.database_path))
            except (duckdb.Error, OSError) as exc:
                raise open_error(project.database_path, exc) from None
            self._owned = True
        else:
            self._owned = False
        self.con = connection
        self._table_kinds: dict[str, dict[str, str]] = {}
        self._evolved: set[str] = set()  # nodes whose table has their query's columns
        self._busy = self._stop = False  # a write runs; Ctrl-C asked it to stop
        self._bounds: list[str] = []  # temp tables of interval starts (audits), dropped after use
        self._described: dict[str, list] = {}  # source relation -> DESCRIBE rows (digests)
        self._audit_columns_ok: set[str] = set()  # nodes whose audits' columns were found
        # (node, interval column) -> (audits, their aggregate's SQL parts, prepared statements)
        self._aggregates: dict[tuple, tuple] = {}
        self._prepared: list[str] = []  # names of the statements prepared on the connection
        self._register_sources()

    def close(self) -> None:
        if self._owned:
            self.con.close()
            return
        for name in self._prepared:  # a caller's connection outlives this engine
            with contextlib.suppress(duckdb.Error):
                self.con.execute(f"DEALLOCATE {name}")
        self._prepared.clear()

    def __enter__(self) -> DuckDBEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- relations ------------------------------------------------------------------------
    def _register_sources(self) -> None:
        """Make every source visible to SQL under its own name (temp views, so the database
        file is not changed by merely reading).  A source table that does not exist is the
        project's configuration error, named here once."""
        for source in self.project.sources.values():
            aliased = source.table and source.table != source.name and not self.in_memory
            if source.location or aliased:
                try:
                    self.con.execute(
                        f"CREATE OR REPLACE TEMP VIEW {q(source.name)} AS {source_relation_sql(source)}")
                except duckdb.CatalogException:
                    raise ProjectError(
                        f"source '{source.name}': table {source.table} does not exist in "
                        f"{self.project.database_path}: create it, or fix `table:` in "
                        f"{source.path or 'its source file'}") from None
                except duckdb.Error as exc:
                    raise engine_error(exc, self._where()) from None
        for node in self.project.nodes.values():
            if output_layout(node) != DATABASE:
                self._register_parquet_view(node)

    def parquet_dir(self, node: TransformNode) -> Path:
        return self.project.target_dir / "data" / node.name

    def _register_parquet_view(self, node: TransformNode) -> None:
        """The node's name as a view over its files, read as its engine's layout says."""
        folder = self.parquet_dir(node)
        if output_layout(node) == DATASET:  # Hive partitions (engines/spark.py), without the key
            if any(folder.glob("seeknal_interval=*/*.parquet")):  # not .spark-staging-* leftovers
                glob = _sql_literal(str(folder / "seeknal_interval=*" / "*.parquet"))
                self.con.execute(
                    f"CREATE OR REPLACE TEMP VIEW {q(node.name)} AS SELECT * EXCLUDE (seeknal_interval) "
                    f"FROM read_parquet({glob}, hive_partitioning = true, union_by_name = true)")
            elif any(folder.glob("*.parquet")):  # an unscheduled node's whole dataset
                self.con.execute(f"CREATE OR REPLACE TEMP VIEW {q(node.name)} AS SELECT * FROM "
                                 f"read_parquet({_sql_literal(str(folder / '*.parquet'))})")
            return
        if any(folder.glob("*.parquet")):
            glob = _sql_literal(str(folder / "*.parquet"))
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {q(node.name)} AS "
                             f"SELECT * FROM read_parquet({glob}, union_by_name = true)")

    def register_inputs(self, node: TransformNode) -> None:
        """Views over the node's inputs that another engine writes as files, whose first
        files may have appeared after this engine opened (earlier in the same run)."""
        for dep in node.depends_on:
            other = self.project.nodes.get(dep)
            if other is not None and other.engine != self.name and output_layout(other) != DATABASE:
                self._register_parquet_view(other)

    def _where(self, node: TransformNode | None = None) -> Path:
        """Where this engine writes, for a resource error's message."""
        if node is not None and node.materialization == "parquet":
            return self.parquet_dir(node)
        return Path(":memory:") if self.in_memory else self.project.database_path

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

    def output_columns(self, node: TransformNode) -> list[tuple[str, str]]:
        """(name, type) of each column of the node's written output (its table, or the
        view over its files), in order: what Dagster shows as the table's schema."""
        if output_layout(node) != DATABASE:
            self._register_parquet_view(node)
        try:
            return [(str(r[0]), str(r[1])) for r in self.con.execute(f"DESCRIBE {q(node.name)}").fetchall()]
        except duckdb.Error:
            return []

    def count_rows(self, name: str) -> int:
        return int(self.con.execute(f"SELECT count(*) FROM {q(name)}").fetchone()[0])

    # -- time ranges ----------------------------------------------------------------------
    def _time_terms(self, node: TransformNode, kind: str | None) -> tuple[str, str, object]:
        """(column expression, SQL type, instant -> literal text) for comparing the node's
        time column with interval bounds in the column's own terms: wall clock of the node's
        timezone for naive types (as ``{{ start }}`` renders), instants for TIMESTAMPTZ.
        ``kind`` is the column's type (None: looked up in the node's table)."""
        column = q(node.time_column)
        if kind is None:
            kind = self._columns(node.name).get(node.time_column.lower(), "")
        if "WITH TIME ZONE" in kind.upper():
            return column, "TIMESTAMPTZ", lambda t: from_epoch(t).isoformat()
        tz = get_zone(node.timezone)
        return (f"CAST({column} AS TIMESTAMP)", "TIMESTAMP",
                lambda t: from_epoch(t).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"))

    def _range_predicate(self, node: TransformNode, start: int, end: int, kind: str | None = None) -> str:
        """``time_column in [start, end)`` (epoch seconds), per ``_time_terms``."""
        column, sql_type, text = self._time_terms(node, kind)
        lo, hi = (f"CAST({_sql_literal(text(t))} AS {sql_type})" for t in (start, end))
        return f"{column} >= {lo} AND {column} < {hi}"

    def _interval_counts(self, node: TransformNode, intervals: Sequence[Pair], where: str) -> list[int]:
        """Rows of the node's table per interval among those in ``where`` (the batch's
        range, just replaced): one grouped range join against the intervals' bounds."""
        column, sql_type, text = self._time_terms(node, None)
        counts = self.con.execute(
            f"SELECT b.i, count(*) FROM {q(node.name)} AS t JOIN ("
            f"SELECT unnest(range({len(intervals)})) AS i, unnest(CAST(? AS {sql_type}[])) AS lo, "
            f"unnest(CAST(? AS {sql_type}[])) AS hi) AS b "
            f"ON {column} >= b.lo AND {column} < b.hi WHERE {where} GROUP BY b.i",
            [[text(a) for a, _ in intervals], [text(b) for _, b in intervals]],
        ).fetchall()
        rows = [0] * len(intervals)
        for i, n in counts:
            rows[i] = int(n)
        return rows

    # -- writes: stage -> audit -> commit --------------------------------------------------
    def write_intervals(
        self,
        node: TransformNode,
        sql: str,
        intervals: Sequence[Pair],
        partition_keys: Sequence[str] = (),
    ) -> list[int]:
        """Replace the node's rows for the contiguous ``intervals``; rows per interval.

        ``stage`` then ``commit``: one transaction (rolled back on any error)."""
        return publish(self.stage(node, sql, intervals, partition_keys))

    def stage(
        self,
        node: TransformNode,
        sql: str,
        intervals: Sequence[Pair],
        partition_keys: Sequence[str] = (),
    ) -> _TableStaged | _ParquetStaged:
        """The batch's rows, unpublished (``base.Staged``): for a table, written inside an
        open transaction (nobody else sees them before ``commit``); for parquet, one staged
        file per interval beside its final name, renamed into place by ``commit``."""
        self.register_inputs(node)
        staged = None
        try:
            with self._writing(node):
                if node.materialization == "parquet":
                    staged = self._stage_parquet(node, sql, intervals)
                else:
                    staged = self._stage_table(node, sql, intervals, partition_keys)
        except BaseException:
            if staged is not None:  # Ctrl-C seen as the stage ended
                staged.rollback()
            raise
        return staged

    @contextlib.contextmanager
    def _writing(self, node: TransformNode) -> Iterator[None]:
        """A write: duckdb's errors translated, and Ctrl-C (``interrupt()``) raised as
        ``KeyboardInterrupt`` here, after the transaction has rolled back, never midway."""
        self._busy, self._stop = True, False
        try:
            yield
        except duckdb.InterruptException:  # ``interrupt()`` stopped the query
            raise KeyboardInterrupt from None
        except duckdb.Error as exc:
            raise engine_error(exc, self._where(node)) from None
        except RuntimeError as exc:
            if _interrupted(exc):  # Ctrl-C seen by duckdb itself inside a query
                raise KeyboardInterrupt from None
            raise
        finally:
            self._busy = False
        if self._stop:  # asked between two of its statements: the batch committed, stop now
            raise KeyboardInterrupt

    def interrupt(self) -> bool:
        """Stop the running write, from any thread or a signal handler; whether one was
        running (it then raises ``KeyboardInterrupt`` once rolled back or committed)."""
        if not self._busy:
            return False
        self._stop = True
        try:
            self.con.interrupt()
        except duckdb.Error:  # already closed: nothing runs
            pass
        return True

    def _stage_table(self, node: TransformNode, sql: str, intervals: Sequence[Pair],
                     partition_keys: Sequence[str]) -> _TableStaged:
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
            elif node.name not in self._evolved:
                self._add_new_columns(node, sql)
            where = self._range_predicate(node, intervals[0][0], intervals[-1][1])
            delete_where = where
            if node.partition_column and partition_keys:
                keys = ", ".join(_sql_literal(k) for k in partition_keys)
                delete_where = f"({where}) OR CAST({q(node.partition_column)} AS VARCHAR) IN ({keys})"
            con.execute(f"DELETE FROM {name} WHERE {delete_where}")
            inserted = int(con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM ({sql}) AS q WHERE {where}")
                           .fetchone()[0])
            rows = [inserted] if len(intervals) == 1 else self._interval_counts(node, intervals, where)
            return _TableStaged(self, node, list(intervals), where, rows)
        except BaseException:
            self._rollback()
            raise

    def _add_new_columns(self, node: TransformNode, sql: str) -> None:
        """Give the node's table the columns its query gained (a non-breaking change adds
        some; rows not rewritten keep NULL there).  Checked once per node per engine;
        inserts go by name, so the table's column order does not matter."""
        self._evolved.add(node.name)
        have = self._columns(node.name)
        for column, kind, *_ in self.con.execute(f"DESCRIBE SELECT * FROM ({sql}) AS q").fetchall():
            if column.lower() not in have:
                self.con.execute(f"ALTER TABLE {q(node.name)} ADD COLUMN {q(column)} {kind}")
                self._table_kinds.pop(node.name, None)

    def _rollback(self) -> None:
        """Roll back if a transaction is still open.  A failed COMMIT (a full disk) has
        already ended it; the original error, not "no transaction is active", is the news."""
        self._table_kinds.clear()
        self._evolved.clear()  # an ALTER TABLE in it is undone too
        try:
            self.con.execute("ROLLBACK")
        except duckdb.Error:
            pass

    def _interval_file(self, node: TransformNode, pair: Pair) -> Path:
        a, b = from_epoch(pair[0]), from_epoch(pair[1])
        return self.parquet_dir(node) / f"{a:%Y%m%dT%H%M%SZ}_{b:%Y%m%dT%H%M%SZ}.parquet"

    def _stage_parquet(self, node: TransformNode, sql: str, intervals: Sequence[Pair]) -> _ParquetStaged:
        """Run the batch's query once, then write each interval's rows to a staged file
        beside its final one (not matched by the node's ``*.parquet`` view)."""
        folder = self.parquet_dir(node)
        folder.mkdir(parents=True, exist_ok=True)
        batch = f"_seeknal_batch_{uuid.uuid4().hex}"
        single = len(intervals) == 1
        con = self.con
        if not single:
            con.execute(f"CREATE TEMP TABLE {q(batch)} AS SELECT * FROM ({sql}) AS q")
        staged = _ParquetStaged(self, node, list(intervals))
        try:
            for pair in intervals:
                source = f"({sql})" if single else q(batch)
                where = self._range_predicate(node, *pair, "") if node.time_column else "true"
                final = self._interval_file(node, pair)
                temp = final.with_name(f".{final.name}.staged-{uuid.uuid4().hex[:12]}")
                staged.files.append((temp, final))
                try:
                    result = con.execute(f"COPY (SELECT * FROM {source} AS q WHERE {where}) TO "
                                         f"{_sql_literal(str(temp))} (FORMAT PARQUET)").fetchone()
                except duckdb.IOException as exc:
                    raise ResourceError(f"cannot write {final}: {_text(exc)}") from None
                staged.rows.append(int(result[0]) if result else 0)
        except BaseException:
            staged.rollback()
            raise
        finally:
            if not single:
                con.execute(f"DROP TABLE IF EXISTS {q(batch)}")
        return staged

    # -- audits ---------------------------------------------------------------------------
    def _bounds_sql(self, node: TransformNode, intervals: Sequence[Pair],
                    kind: str | None) -> tuple[str, str]:
        """(the node's time expression, a temp table of the intervals' starts ``_seeknal_lo``
        with their index ``_seeknal_i``) for an ASOF join placing rows in intervals.  The
        starts go in as one parameter (365 literals cost DuckDB's parser ~20 ms); the
        table is dropped by ``_drop_bounds``."""
        column, sql_type, text = self._time_terms(node, kind)
        name = f"_seeknal_bounds_{uuid.uuid4().hex[:12]}"
        self.con.execute(f"CREATE TEMP TABLE {q(name)} AS SELECT unnest(range({len(intervals)})) "
                         f"AS _seeknal_i, unnest(CAST(? AS {sql_type}[])) AS _seeknal_lo",
                         [[text(a) for a, _ in intervals]])
        self._bounds.append(name)
        return column, q(name)

    def _drop_bounds(self) -> None:
        """Drop the temp tables of interval starts; in a transaction a failed statement
        aborted, they go with its rollback (and the failure, not the DROP's, is the news)."""
        for name in self._bounds:
            with contextlib.suppress(duckdb.Error):
                self.con.execute(f"DROP TABLE IF EXISTS {q(name)}")
        self._bounds.clear()

    def _table_relation(self, node: TransformNode, intervals: Sequence[Pair], where: str,
                        keyed: bool) -> str:
        """The node's rows inside ``where``; ``keyed``: with ``INTERVAL_COLUMN`` (the index of
        each row's interval in ``intervals``), by an ASOF join on the interval starts."""
        if not keyed:
            return f"(SELECT * FROM {q(node.name)} WHERE {where})"
        column, bounds = self._bounds_sql(node, intervals, None)
        return (f"(SELECT t.*, b._seeknal_i AS {INTERVAL_COLUMN} FROM {q(node.name)} AS t "
                f"ASOF JOIN {bounds} AS b ON {column} >= b._seeknal_lo WHERE {where})")

    def _files_relation(self, files: Sequence[tuple[Path, int]], keyed: bool) -> str:
        """Rows of parquet ``files`` (each with its interval's index); ``keyed``: with
        ``INTERVAL_COLUMN`` from the file each row came from."""
        listed = ", ".join(_sql_literal(str(f)) for f, _ in files)
        if not keyed:
            return f"(SELECT * FROM read_parquet([{listed}], union_by_name = true))"
        index = ", ".join(f"({_sql_literal(str(f))}, {i})" for f, i in files)
        return (f"(SELECT t.* EXCLUDE (_seeknal_file), f._seeknal_i AS {INTERVAL_COLUMN} FROM "
                f"read_parquet([{listed}], union_by_name = true, filename = '_seeknal_file') AS t "
                f"JOIN (VALUES {index}) AS f(_seeknal_path, _seeknal_i) "
                f"ON t._seeknal_file = f._seeknal_path)")

    def _samples(self, query: str) -> tuple[dict, ...]:
        cur = self.con.execute(f"SELECT * FROM ({query}) AS s LIMIT {SAMPLES}")
        names = [d[0] for d in cur.description]
        return tuple({k: v for k, v in zip(names, row) if k != INTERVAL_COLUMN} for row in cur.fetchall())

    def _name_failing(self, node: TransformNode, audits: Sequence[Audit], relation: str,
                      interval_column: str | None) -> None:
        """After a combined audit query failed: raise the error of the first audit that
        fails alone (a column the node does not produce), naming it."""
        for a in audits:
            try:
                self.con.execute(f"DESCRIBE {a.query(relation, interval_column=interval_column)}")
            except duckdb.Error as err:
                raise self._audit_error(node, a, err) from None

    def _execute_audit(self, node: TransformNode, audit: Audit, query: str) -> list[tuple]:
        try:
            return self.con.execute(query).fetchall()
        except duckdb.Error as exc:
            raise self._audit_error(node, audit, exc) from None

    def _audit_error(self, node: TransformNode, audit: Audit, exc: duckdb.Error) -> EngineError:
        error = engine_error(exc, self._where(node))
        if isinstance(error, ResourceError):
            return error
        return QueryError(f"audit '{audit.name}': {_text(exc)}")

    def check_staged(self, staged: _TableStaged | _ParquetStaged | _ReplacedTable,
                     audits: Sequence[Audit]) -> list[Outcome]:
        """``Staged.check``: the built-ins in one aggregate pass over the staged rows,
        ``row_count`` from the counts staging took, each custom audit in one count; samples
        only for the audits that fail."""
        node, intervals = staged.node, staged.intervals
        # a table node's staging has no intervals: its audits see the whole table
        start, end = ((from_epoch(intervals[0][0]), from_epoch(intervals[-1][1])) if intervals
                      else (None, None))
        # unique holds per interval: several intervals need each row's interval, unless the
        # key includes the time column (then equal keys are in one interval anyway)
        keyed = len(intervals) > 1 and any(
            a.kind == "unique" and (node.time_column or "").lower() not in {c.lower() for c in a.columns}
            for a in audits)
        interval_column = INTERVAL_COLUMN if keyed else None
        out: dict[int, Outcome] = {}
        with self._writing(node):
            try:
                self._check_staged(staged, audits, staged.keyed_relation() if keyed else staged.relation,
                                   interval_column, start, end, out)
            finally:
                self._drop_bounds()
        return [out[i] for i in range(len(audits))]

    def _check_staged(self, staged: _TableStaged | _ParquetStaged | _ReplacedTable, audits: Sequence[Audit],
                      relation: str, interval_column: str | None, start: dt.datetime | None,
                      end: dt.datetime | None,
                      out: dict[int, Outcome]) -> None:
        node, intervals = staged.node, staged.intervals
        built = [(i, a) for i, a in enumerate(audits) if a.kind in ROW_KINDS or a.kind == "unique"]
        if built and node.name not in self._audit_columns_ok:
            # a failed statement aborts the transaction: name a missing column before querying
            have = [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {staged.relation}").fetchall()]
            for _, a in built:
                for column in a.columns:
                    if column.lower() not in {h.lower() for h in have}:
                        hint = did_you_mean(column, have) or f" — its columns: {', '.join(have)}"
                        raise QueryError(f"audit '{a.name}': the node's rows have no column '{column}'{hint}")
            self._audit_columns_ok.add(node.name)
        if built:
            try:
                counts = self._aggregate_counts(staged, audits, relation, interval_column)
            except duckdb.Error as exc:  # the transaction is aborted: no query can say which
                if len(built) == 1:
                    raise self._audit_error(node, built[0][1], exc) from None
                error = engine_error(exc, self._where(node))
                if isinstance(error, ResourceError):
                    raise error from None
                names = ", ".join(f"'{a.name}'" for _, a in built)
                raise QueryError(f"audits {names}: {_text(exc)}") from None
            for (i, a), n in zip(built, counts):
                n = int(n or 0)
                samples = self._samples(a.query(relation, interval_column=interval_column)) if n else ()
                out[i] = (n, samples)
        for i, a in enumerate(audits):
            if a.kind == "row_count":
                bad = a.failing_counts(staged.rows)
                out[i] = (len(bad), tuple({"interval": from_epoch(intervals[k][0]).isoformat(),
                                           "rows": staged.rows[k]} if intervals else {"rows": staged.rows[k]}
                                          for k in bad[:SAMPLES]))
            elif a.kind == "sql":
                query = a.query(staged.relation, node=node, start=start, end=end)
                try:
                    n = int(self.con.execute(f"SELECT count(*) FROM ({query}) AS s").fetchone()[0])
                    out[i] = (n, self._samples(query) if n else ())
                except duckdb.Error as exc:
                    raise self._audit_error(node, a, exc) from None

    def _aggregate_counts(self, staged: _TableStaged | _ParquetStaged | _ReplacedTable,
                          audits: Sequence[Audit], relation: str, interval_column: str | None) -> tuple:
        """The built-in audits' offending-row counts (``audits.aggregate_sql``, rendered once
        per node and run).  A table batch over one range, the usual case, runs a statement
        prepared once per node and run with the range's bounds as its parameters: DuckDB
        neither parses nor optimises it again per batch, and still prunes the table's row
        groups by the bounds; other relations (files, rows placed in intervals) run the
        query rendered for them."""
        node = staged.node
        key = (node.name, interval_column)
        cached = self._aggregates.get(key)
        if cached is None or cached[0] is not audits:
            cached = self._aggregates[key] = (audits, aggregate_sql(audits, _RELATION, interval_column)
                                              .split(_RELATION), {})
        _, parts, prepared = cached
        if type(staged) is not _TableStaged or interval_column is not None:
            return self.con.execute(relation.join(parts)).fetchone()
        column, sql_type, text = self._time_terms(node, None)
        name = prepared.get((column, sql_type))
        if name is None:  # the time column's type picks the predicate: one statement per type
            name = f"_seeknal_audits_{uuid.uuid4().hex[:12]}"
            rows = (f"(SELECT * FROM {q(node.name)} WHERE {column} >= CAST($1 AS {sql_type}) "
                    f"AND {column} < CAST($2 AS {sql_type}))")
            self.con.execute(f"PREPARE {name} AS {rows.join(parts)}")
            prepared[(column, sql_type)] = name
            self._prepared.append(name)
        lo, hi = (_sql_literal(text(t)) for t in (staged.intervals[0][0], staged.intervals[-1][1]))
        return self.con.execute(f"EXECUTE {name}({lo}, {hi})").fetchone()

    def audit_intervals(self, node: TransformNode, audits: Sequence[Audit],
                        intervals: Sequence[Pair]) -> list[dict[Pair, Outcome]]:
        """``seeknal audit`` over completed, contiguous ``intervals`` of the published rows:
        the built-ins in one aggregate grouped by interval, each ``unique`` and custom audit
        in one query over the run; samples only for failing intervals."""
        intervals = list(intervals)
        with self._writing(node):
            try:
                return self._audit_intervals(node, audits, intervals)
            finally:
                self._drop_bounds()

    def _audit_intervals(self, node: TransformNode, audits: Sequence[Audit],
                         intervals: list[Pair]) -> list[dict[Pair, Outcome]]:
        """Offending rows are placed in intervals by their time column, after filtering (they
        are few): no join of every row against the intervals.  Without a time column (a
        parquet node), by the file each row came from."""
        kind: str | None = None
        if node.materialization == "parquet":
            files = [(f, i) for i, pair in enumerate(intervals)
                     if (f := self._interval_file(node, pair)).exists()]
            if not files:
                return [{} for _ in audits]
            plain, kind = self._files_relation(files, keyed=False), ""
            keyed = lambda: self._files_relation(files, keyed=True)  # noqa: E731
        else:
            if not self._columns(node.name):
                return [{} for _ in audits]
            where = self._range_predicate(node, intervals[0][0], intervals[-1][1])
            plain = self._table_relation(node, intervals, where, keyed=False)
            keyed = lambda: self._table_relation(node, intervals, where, keyed=True)  # noqa: E731
        by_time = node.time_column is not None
        column, sql_type, _ = self._time_terms(node, kind) if by_time else ("", "", None)
        starts = [p[0] for p in intervals]

        def place(value: object) -> int:
            """The index of the interval holding a time column value."""
            if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                value = dt.datetime.combine(value, dt.time())
            return bisect.bisect_right(starts, to_epoch(value, node.timezone)) - 1

        start, end = from_epoch(intervals[0][0]), from_epoch(intervals[-1][1])
        out: list[dict[Pair, Outcome]] = [{} for _ in audits]
        iv = INTERVAL_COLUMN
        relation = None  # the keyed relation, made only when needed

        def with_samples(i: int, a: Audit, counts: dict[int, int], query: str) -> None:
            samples = self._grouped_samples(query) if counts else {}
            for j, n in counts.items():
                out[i][intervals[j]] = (n, samples.get(j, ()))

        rowwise = [(i, a) for i, a in enumerate(audits) if a.kind in ROW_KINDS]
        if rowwise:
            flags = ", ".join(f"coalesce({a.predicate()}, false) AS _seeknal_a{k}"
                              for k, (_, a) in enumerate(rowwise))
            terms = ", ".join(f"count(*) FILTER (WHERE _seeknal_a{k})" for k in range(len(rowwise)))
            anyone = " OR ".join(f"coalesce({a.predicate()}, false)" for _, a in rowwise)
            if by_time:
                query = (f"SELECT _seeknal_t, {terms} FROM (SELECT {column} AS _seeknal_t, {flags} "
                         f"FROM {plain} AS t WHERE {anyone}) AS f GROUP BY ALL")
            else:
                relation = relation or keyed()
                query = (f"SELECT {iv}, {terms} FROM (SELECT {iv}, {flags} FROM {relation} AS t "
                         f"WHERE {anyone}) AS f GROUP BY ALL")
            try:
                found = self.con.execute(query).fetchall()
            except duckdb.Error as exc:
                self._name_failing(node, [a for _, a in rowwise], plain, None)
                raise engine_error(exc, self._where(node)) from None
            for k, (i, a) in enumerate(rowwise):
                counts: dict[int, int] = {}
                for row in found:
                    if row[k + 1]:
                        j = place(row[0]) if by_time else int(row[0])
                        counts[j] = counts.get(j, 0) + int(row[k + 1])
                if counts:
                    relation = relation or keyed()
                    with_samples(i, a, counts, a.query(relation))
        for i, a in enumerate(audits):
            if a.kind == "row_count":
                if node.materialization == "parquet":
                    relation = relation or keyed()
                    per = dict(self.con.execute(
                        f"SELECT {iv}, count(*) FROM {relation} AS t GROUP BY 1").fetchall())
                    rows = [int(per.get(j, 0)) for j in range(len(intervals))]
                else:
                    rows = self._interval_counts(node, intervals, where)
                for j in a.failing_counts(rows):
                    out[i][intervals[j]] = (1, ({"interval": from_epoch(intervals[j][0]).isoformat(),
                                                 "rows": rows[j]},))
            elif a.kind == "unique":  # one GROUP BY; the offending rows only on a failure
                within = by_time and node.time_column.lower() in {c.lower() for c in a.columns}
                if within:  # equal keys share a time, hence an interval
                    keys = ", ".join(q(c) for c in a.columns)
                    found = self._execute_audit(node, a, (
                        f"SELECT any_value({column}) AS _seeknal_t, count(*) AS n FROM {plain} AS t "
                        f"GROUP BY {keys} HAVING count(*) > 1"))
                    counts = {}
                    for t, n in found:
                        counts[place(t)] = counts.get(place(t), 0) + int(n)
                else:
                    relation = relation or keyed()
                    keys = ", ".join(q(c) for c in (*a.columns, iv))
                    counts = dict(self._execute_audit(node, a, (
                        f"SELECT {iv}, sum(n) FROM (SELECT {iv}, count(*) AS n FROM {relation} AS t "
                        f"GROUP BY {keys} HAVING count(*) > 1) GROUP BY {iv}")))
                if counts:
                    relation = relation or keyed()
                    with_samples(i, a, {int(j): int(n) for j, n in counts.items()},
                                 a.query(relation, interval_column=iv))
            elif a.kind == "sql":
                relation = relation or keyed()
                self._audit_custom(node, a, relation, intervals, start, end, out[i])
        return out

    def _audit_custom(self, node: TransformNode, a: Audit, relation: str, intervals: list[Pair],
                      start: dt.datetime, end: dt.datetime, out: dict[Pair, Outcome]) -> None:
        """A custom audit over a run: one query when its result keeps each row's interval
        (``SELECT *``), else one per interval."""
        iv = INTERVAL_COLUMN
        query = a.query(relation, node=node, start=start, end=end)
        try:
            columns = [d[0] for d in self.con.execute(f"DESCRIBE {query}").fetchall()]
            if iv in columns:
                counts = self.con.execute(
                    f"SELECT {iv}, count(*) FROM ({query}) AS s GROUP BY {iv}").fetchall()
                samples = self._grouped_samples(query) if counts else {}
                for j, n in counts:
                    out[intervals[int(j)]] = (int(n), samples.get(int(j), ()))
                return
            for j, pair in enumerate(intervals):  # a custom query that drops the rows' interval
                one = a.query(f"(SELECT * EXCLUDE ({iv}) FROM {relation} AS r WHERE {iv} = {j})",
                              node=node, start=from_epoch(pair[0]), end=from_epoch(pair[1]))
                n = int(self.con.execute(f"SELECT count(*) FROM ({one}) AS s").fetchone()[0])
                if n:
                    out[pair] = (n, self._samples(one))
        except duckdb.Error as exc:
            raise self._audit_error(node, a, exc) from None

    def _grouped_samples(self, query: str) -> dict[int, tuple[dict, ...]]:
        """Up to ``SAMPLES`` rows of ``query`` per interval, in one query."""
        cur = self.con.execute(f"SELECT * FROM ({query}) AS s QUALIFY row_number() OVER "
                               f"(PARTITION BY {INTERVAL_COLUMN}) <= {SAMPLES}")
        names = [d[0] for d in cur.description]
        out: dict[int, list[dict]] = {}
        for row in cur.fetchall():
            record = dict(zip(names, row))
            j = int(record.pop(INTERVAL_COLUMN))
            out.setdefault(j, []).append(record)
        return {j: tuple(v) for j, v in out.items()}

    def replace_table(self, node: TransformNode, sql: str) -> int:
        """Full refresh of a ``table`` node: the new table replaces the old atomically."""
        staged = self.stage_replace(node, sql)
        try:
            staged.commit()
        except BaseException:
            staged.rollback()
            raise
        return staged.rows[0]

    def stage_replace(self, node: TransformNode, sql: str) -> _ReplacedTable:
        """A full refresh, unpublished (``base.Staged`` without intervals): the new table
        built by ``CREATE OR REPLACE TABLE`` inside an open transaction, so its audits see
        it whole while everyone else still sees the old one until ``commit``."""
        self.register_inputs(node)
        staged = None
        try:
            with self._writing(node):
                self.con.execute("BEGIN TRANSACTION")
                try:
                    self.con.execute(f"CREATE OR REPLACE TABLE {q(node.name)} AS {sql}")
                    self._table_kinds.pop(node.name, None)
                    staged = _ReplacedTable(self, node, self.count_rows(node.name))
                except BaseException:
                    self._rollback()
                    raise
        except BaseException:
            if staged is not None:  # Ctrl-C seen as the stage ended
                staged.rollback()
            raise
        return staged

    def audit_table(self, node: TransformNode, audits: Sequence[Audit]) -> list[Outcome] | None:
        """``seeknal audit`` over a table node: ``audits`` over the whole published table
        (one ``Outcome`` each, like ``Staged.check``); ``None`` before its first build."""
        if not self._columns(node.name):
            return None
        return self.check_staged(_ReplacedTable(self, node, self.count_rows(node.name)), audits)

    def earliest(self, source: SourceNode, column: str, timezone: str | None = None) -> int | None:
        """``min(column)`` of the source as epoch seconds; naive values are read in
        ``timezone`` (the node's), default the project's."""
        return self._bound("min", source, column, timezone)

    def latest(self, source: SourceNode, column: str, timezone: str | None = None) -> int | None:
        """``max(column)`` of the source as epoch seconds (its readiness watermark)."""
        return self._bound("max", source, column, timezone)

    def _bound(self, func: str, source: SourceNode, column: str, timezone: str | None) -> int | None:
        sql = f"SELECT {func}({q(column)}) FROM ({source_relation_sql(source)}) AS s"
        value = self._scalar(sql)
        if value is not None and not isinstance(value, (dt.date, dt.datetime)):
            raise ProjectError(f"source '{source.name}': column '{column}' is not a date or timestamp")
        return self._epoch(value, timezone)

    def instant(self, sql: str, timezone: str | None = None) -> int | None:
        """The first column of ``sql``'s first row as epoch seconds (a readiness query)."""
        value = self._scalar(sql)
        if value is not None and not isinstance(value, (dt.date, dt.datetime)):
            raise QueryError(f"expected a timestamp or date, got {value!r}")
        return self._epoch(value, timezone)

    def _scalar(self, sql: str) -> object:
        try:
            row = self.con.execute(sql).fetchone()
        except duckdb.Error as exc:
            raise engine_error(exc, self._where()) from None
        return None if row is None else row[0]

    def _epoch(self, value: object, timezone: str | None) -> int | None:
        if value is None:
            return None
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, dt.time())
        return to_epoch(value, timezone or self.project.timezone)

    def digests(self, source: SourceNode, column: str, timezone: str | None,
                intervals: Sequence[Pair]) -> dict[Pair, Digest]:
        """The source's rows per interval: (count, newest, checksum) from ONE grouped query
        over the intervals' whole range.

        Rows are grouped by the largest time unit dividing every bound, then folded into
        intervals (``digest.Buckets``).  The checksum is ``bit_xor(hash(c1, c2, ...))`` over every column
        in the source's order: DuckDB's ``hash`` has no seed, so it is the same in every
        process; its kind names DuckDB's major.minor version, as another version may hash
        differently (verification then compares counts and newest times only)."""
        if not intervals:
            return {}
        relation = source_relation_sql(source)
        try:
            described = self._described.get(relation)
            if described is None:  # once per source and engine (a run): batch_size 1 asks 365 times
                described = self._described[relation] = self.con.execute(f"DESCRIBE {relation}").fetchall()
            found = next((row for row in described if row[0].lower() == column.lower()), None)
            if found is None:
                raise ProjectError(f"source '{source.name}': no column '{column}'"
                                   + did_you_mean(column, [r[0] for r in described]))
            aware = "WITH TIME ZONE" in str(found[1]).upper()
            buckets = Buckets(intervals, aware, timezone or self.project.timezone)
            sql_type = "TIMESTAMPTZ" if aware else "TIMESTAMP"
            cast = f"CAST({q(found[0])} AS {sql_type})"
            # the range as literals of the column's type too: DuckDB skips row groups by it
            lo, hi = (f"CAST('{from_epoch(b).strftime('%Y-%m-%d %H:%M:%S')}{'+00' if aware else ''}' "
                      f"AS {sql_type})" for b in (buckets.bounds[0][0], buckets.bounds[-1][1]))
            hashed = ", ".join(q(row[0]) for row in described)
            groups = self.con.execute(
                f"SELECT epoch_us({cast}) // {buckets.unit_us}, count(*), max(epoch_us({cast})), "
                f"bit_xor(hash({hashed})) FROM ({relation}) AS s "
                f"WHERE {cast} >= {lo} AND {cast} < {hi} GROUP BY 1"
            ).fetchall()
        except duckdb.Error as exc:
            raise engine_error(exc, self._where()) from None
        return buckets.fold(groups, DUCKDB_DIGEST_KIND)


#: where the audited relation goes in a rendered audit query (no SQL contains it)
_RELATION = "\x00relation\x00"

#: the kind of DuckDB's digest checksums (``hash`` may change with DuckDB's version)
DUCKDB_DIGEST_KIND = "duckdb" + ".".join(duckdb.__version__.split(".")[:2])


class _TableStaged:
    """A table batch inside its open transaction: the node's rows in the batch's range
    are exactly the rows it wrote (the range was emptied first)."""

    def __init__(self, engine: DuckDBEngine, node: TransformNode, intervals: list[Pair], where: str,
                 rows: list[int]):
        self.engine, self.node, self.intervals, self.where, self.rows = engine, node, intervals, where, rows
        self.relation = engine._table_relation(node, intervals, where, keyed=False)

    def keyed_relation(self) -> str:
        return self.engine._table_relation(self.node, self.intervals, self.where, keyed=True)

    def check(self, audits: Sequence[Audit]) -> list[Outcome]:
        return self.engine.check_staged(self, audits)

    def commit(self) -> None:
        engine = self.engine
        try:
            with engine._writing(self.node):
                engine.con.execute("COMMIT")
        except BaseException:
            engine._rollback()
            raise

    def rollback(self) -> None:
        self.engine._rollback()


class _ReplacedTable(_TableStaged):
    """A table node's new table inside its open transaction (or, for ``audit_table``, the
    published one): no intervals, the whole table is what its audits check."""

    intervals: tuple[Pair, ...] = ()

    def __init__(self, engine: DuckDBEngine, node: TransformNode, rows: int):
        self.engine, self.node, self.rows = engine, node, [rows]
        self.relation = q(node.name)

    def keyed_relation(self) -> str:
        return self.relation

    def commit(self) -> None:
        super().commit()
        self.engine._table_kinds.pop(self.node.name, None)


class _ParquetStaged:
    """A parquet batch as staged files, one per interval, each renamed over its final name
    on commit (``durable.atomic_write``: fsync, rename, folder fsync)."""

    def __init__(self, engine: DuckDBEngine, node: TransformNode, intervals: list[Pair]):
        self.engine, self.node, self.intervals = engine, node, intervals
        self.files: list[tuple[Path, Path]] = []  # (staged, final)
        self.rows: list[int] = []

    @property
    def relation(self) -> str:
        return self.engine._files_relation([(temp, i) for i, (temp, _) in enumerate(self.files)], keyed=False)

    def keyed_relation(self) -> str:
        return self.engine._files_relation([(temp, i) for i, (temp, _) in enumerate(self.files)], keyed=True)

    def check(self, audits: Sequence[Audit]) -> list[Outcome]:
        return self.engine.check_staged(self, audits)

    def commit(self) -> None:
        for temp, final in self.files:
            try:
                atomic_write(final, lambda tmp, temp=temp: os.replace(temp, tmp))
            except OSError as exc:
                raise ResourceError(f"cannot write {final}: {exc.strerror or exc}") from None
        self.files.clear()
        self.engine._register_parquet_view(self.node)

    def rollback(self) -> None:
        for temp, _ in self.files:
            with contextlib.suppress(OSError):
                temp.unlink()
        self.files.clear()
