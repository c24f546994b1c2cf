"""Spark execution (``engine: spark``): the same interval contract as DuckDB, on a
Spark session (``local[N]``, a ``spark://`` cluster, or Spark Connect ``sc://``).

A Spark node's output is a Parquet dataset under ``target/data/<node>/`` with one
partition directory per interval (``seeknal_interval=20240101T000000Z``).  A batch is
staged, audited, then committed: ``stage`` writes its intervals' directories under a
hidden ``.spark-staging-seeknal-*`` directory of the dataset, the node's audits run on
those files (a temp view; audit SQL transpiled like node SQL), and only ``commit``
renames each interval's directory into place, replacing exactly its intervals'
directories (workers writing different intervals never touch each other's; an
interval whose re-run yields no rows loses its old directory).  Rows are counted per
interval from the staged files' Parquet footers, before the runner records
completion: data first, then state.

A Spark node reads sources with ``path:`` (Parquet or CSV, globs, any Hadoop URI), other
Spark nodes, and DuckDB nodes with ``materialization: parquet``; never a table inside
the ``.duckdb`` file (one line says so).  pyspark's exceptions stop here, translated to
``QueryError``/``BatchError``/``ResourceError``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from ..durable import FileMutex
from ..errors import ProjectError
from ..project import Project, SourceNode, TransformNode
from ..project.audits import INTERVAL_COLUMN, ROW_KINDS, SAMPLES, Audit, aggregate_sql
from ..timeutil import from_epoch, get_zone, to_epoch
from . import DATABASE, output_layout
from .base import BatchError, Digest, EngineError, Outcome, Pair, QueryError, ResourceError, publish
from .digest import Buckets
from .spark_sql import Columns, render_spark_sql, transpile
from .spark_sql import spark_identifier as q

#: the partition column of every Spark node's dataset (dropped when the dataset is read)
PARTITION = "seeknal_interval"
#: prefix of a batch's staging directory inside the node's dataset (a dot-directory, so
#: neither Spark nor DuckDB reading the dataset sees it)
STAGING = ".spark-staging-seeknal-"
#: applied to sessions this engine builds; a project's ``engine: conf:`` overrides them
DEFAULT_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "8",
    "spark.log.level": "FATAL",
}
#: session settings the contract depends on, set on every session (also a Connect one)
RUNTIME_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
}
_RESOURCE = ("no space left on device", "disk quota exceeded", "connection refused", "unavailable",
             "sparkcontext was shut down", "cannot call methods on a stopped sparkcontext",
             "read-only file system", "outofmemoryerror", "java heap space")
_lock = threading.Lock()
#: Spark's type names -> the kinds the transpiler tells apart (spark_time.py)
_KIND = {"timestamp_ntz": "naive", "timestamp": "instant", "date": "date"}


def partition_value(start: int) -> str:
    """An interval's partition directory value: its UTC start, ``20240101T000000Z``."""
    return f"{from_epoch(start):%Y%m%dT%H%M%SZ}"


def published(folder: Path) -> bool:
    """Whether a node's dataset has published data (an entry that is not hidden: a batch
    being staged leaves only a dot-directory)."""
    try:
        return any(not name.startswith((".", "_")) for name in os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return False


def release(lock: FileMutex) -> None:
    """Drop a staging's lock file (its directory is gone), then let go of the lock."""
    try:
        lock.lock_path.unlink(missing_ok=True)
    except OSError:
        pass
    lock.close()


def sweep_staging(folder: Path) -> None:
    """Clear what killed writers left in a dataset: every staging whose lock file no live
    process holds.  An interval directory a dead commit had set aside but not yet replaced
    is put back (its old rows), the rest deleted."""
    for path in folder.glob(f"{STAGING}*.lock"):
        mutex = FileMutex(path, timeout=0)
        try:
            mutex.acquire()
        except (TimeoutError, OSError):
            continue  # a live writer's
        staging = path.with_name(path.name.removesuffix(".lock"))
        aside = staging.with_name(staging.name + "-replaced")
        try:
            for old in aside.glob(f"{PARTITION}=*"):
                if not (folder / old.name).exists():
                    os.rename(old, folder / old.name)
        except OSError:
            pass
        shutil.rmtree(aside, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        release(mutex)


def parquet_rows(folder: Path) -> dict[str, int]:
    """Rows per interval directory under ``folder`` (partition value -> rows), read from
    the Parquet footers by DuckDB: no Spark job."""
    import duckdb

    if not any(folder.glob(f"{PARTITION}=*/*.parquet")):
        return {}
    glob = str(folder / f"{PARTITION}=*" / "*.parquet").replace("'", "''")
    try:
        with duckdb.connect() as con:
            found = con.execute(f"SELECT file_name, num_rows FROM parquet_file_metadata('{glob}')").fetchall()
    except duckdb.Error as exc:
        raise ResourceError(f"cannot read the Parquet files under {folder}: {exc}") from None
    rows: dict[str, int] = {}
    for name, n in found:
        value = Path(name).parent.name.partition("=")[2]
        rows[value] = rows.get(value, 0) + int(n)
    return rows


def engine_error(exc: BaseException) -> EngineError:
    """pyspark's exception as the engine protocol's (first line of Spark's message)."""
    from pyspark.errors import AnalysisException

    text = " ".join((str(exc).strip().splitlines() or [type(exc).__name__])[0].split())
    low = str(exc).lower()
    if any(m in low for m in _RESOURCE) or type(exc).__name__ in ("Py4JNetworkError", "Py4JError"):
        return ResourceError(f"Spark: {text}")
    if isinstance(exc, AnalysisException):
        return QueryError(text)
    return BatchError(text)


def duckdb_table_error(project: Project, name: str, what: str) -> ProjectError:
    """The one line for a Spark node reading a table inside the ``.duckdb`` file."""
    return ProjectError(
        f"a Spark node cannot read '{name}': {what} inside {project.database_path}, which only "
        f"DuckDB opens — give it `path:` (Parquet/CSV) or `materialization: parquet`, or run the "
        f"reading node with `engine: duckdb`")


def _spark_errors() -> tuple[type[BaseException], ...]:
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JError, ConnectionError)


def session_conf(config: dict) -> dict[str, str]:
    """The Spark conf of a project's ``engine:`` block: app name, ``master`` (with the
    local defaults) or ``remote``, then ``conf``; what ``build_session`` and the Dagster
    ``pyspark`` resource both start a session from."""
    out = {"spark.app.name": "seeknal"}
    if config.get("remote"):
        out["spark.remote"] = str(config["remote"])
    else:
        out["spark.master"] = str(config.get("master") or "local[*]")
        out.update(DEFAULT_CONF)
    out.update({str(k): str(v) for k, v in (config.get("conf") or {}).items()})
    return out


#: seconds to wait for a Spark master or Connect server to accept a connection
CONNECT_TIMEOUT = 10
#: the port a URL without one means, per scheme
_DEFAULT_PORT = {"sc": 15002, "spark": 7077}


def unreachable(url: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """Why no server answers at a ``sc://`` or ``spark://`` URL (None: one does, or the URL
    names no network server, as ``local[*]`` or ``yarn``).  Checked with one socket before
    Spark tries: its own client retries for minutes (Connect) or a minute of log lines
    (standalone) before it fails."""
    import socket
    from urllib.parse import urlsplit

    scheme, _, rest = url.partition("://")
    if scheme not in _DEFAULT_PORT or not rest:
        return None
    problem = None
    for part in rest.split("/", 1)[0].split(","):  # spark://h1:7077,h2:7077 (standby masters)
        try:
            parsed = urlsplit(f"{scheme}://{part}")
            host, port = parsed.hostname or "localhost", parsed.port or _DEFAULT_PORT[scheme]
        except ValueError as exc:
            return f"{exc}"
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return None
        except OSError as exc:
            problem = f"{host}:{port}: {exc.strerror or exc}"
    return problem


def build_session(config: dict):
    """A Spark session from a project's ``engine:`` block (``master`` or ``remote``, and
    ``conf``); an already active classic session in this process is reused as is.  A
    server that does not answer is one ``ResourceError`` line, within CONNECT_TIMEOUT."""
    from pyspark.sql import SparkSession

    where = str(config.get("remote") or config.get("master") or "local[*]")
    problem = unreachable(where)
    if problem is not None:
        key = "remote" if config.get("remote") else "master"
        raise ResourceError(f"cannot reach Spark at {where} ({problem}) — start the Spark "
                            f"{'Connect server' if key == 'remote' else 'master'} there, or fix "
                            f"`engine: {key}:` in seeknal_project.yml")
    builder = SparkSession.builder
    for key, value in session_conf(config).items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - any start-up failure is one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ResourceError(f"cannot start a Spark session on {where}: {first} — check `engine:` "
                            f"in seeknal_project.yml (and that Java 17+ is installed for local "
                            f"mode)") from None


class SparkEngine:
    """Runs Spark nodes of a project.  ``session`` hands in a live session (tests, a
    Dagster resource); otherwise one is built from the project's ``engine:`` block and
    stopped on ``close`` unless it was already running in this process."""

    name = "spark"

    def __init__(self, project: Project, session=None, **_options):
        self.project = project
        if session is None:
            from pyspark.sql import SparkSession

            with _lock:
                active = SparkSession.getActiveSession()
                session = active or build_session(project.engine_config)
            self._owned = active is None
        else:
            self._owned = False
        self.spark = session
        try:
            for key, value in RUNTIME_CONF.items():
                self.spark.conf.set(key, value)
        except _spark_errors() as exc:
            raise engine_error(exc) from None
        #: per node: the kinds of its input columns, read once (what the transpiler needs)
        self._columns: dict[str, tuple[tuple[str, str], ...]] = {}

    def close(self) -> None:
        if self._owned:
            try:
                self.spark.stop()
            except _spark_errors():
                pass

    def __enter__(self) -> SparkEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- relations ------------------------------------------------------------------------
    def dataset_dir(self, name: str) -> Path:
        return self.project.target_dir / "data" / name

    def _reader(self, fmt: str):
        reader = self.spark.read
        return reader.option("header", "true").option("inferSchema", "true") if fmt == "csv" else reader

    def relation(self, name: str):
        """A DataFrame over a source or node the project defines, as a Spark node reads it."""
        if name in self.project.sources:
            source = self.project.sources[name]
            if not source.location:
                raise self._duckdb_table(name, f"source '{name}' is a table")
            fmt = (source.format or "parquet").lower()
            return self._reader(fmt).format("csv" if fmt == "csv" else "parquet").load(source.location)
        node = self.project.nodes[name]
        folder = self.dataset_dir(name)
        if output_layout(node) == DATABASE:
            raise self._duckdb_table(name, f"node '{name}' is a DuckDB {node.materialization} node")
        if not published(folder):
            raise QueryError(f"'{name}' has no data yet: nothing under {folder} — run it first")
        df = self.spark.read.parquet(str(folder))
        return df.drop(PARTITION) if PARTITION in df.columns else df

    def _duckdb_table(self, name: str, what: str) -> ProjectError:
        return duckdb_table_error(self.project, name, what)

    def _register(self, node: TransformNode) -> None:
        """A temp view per relation the node reads (fresh, so new files are seen), and
        ``this`` (its own dataset) when it exists."""
        for dep in node.depends_on:
            if dep in self.project.sources or dep in self.project.nodes:
                self.relation(dep).createOrReplaceTempView(dep)
        if published(self.dataset_dir(node.name)):
            self.relation(node.name).createOrReplaceTempView(node.name)

    def _input_columns(self, node: TransformNode) -> tuple[tuple[str, str], ...]:
        """The time-typed columns of what the node reads, by kind (``naive`` for
        TIMESTAMP_NTZ, ``instant`` for TIMESTAMP, ``date``), as DuckDB would type them;
        a name two inputs type differently is left out.  Spark infers a CSV timestamp as an
        instant where DuckDB reads it naive: there it counts as naive (in the UTC session
        both hold the same wall clock)."""
        if node.name not in self._columns:
            kinds: dict[str, str | None] = {}
            names = [d for d in node.depends_on if d in self.project.sources or d in self.project.nodes]
            if published(self.dataset_dir(node.name)):
                names.append(node.name)
            for name in names:
                source = self.project.sources.get(name)
                csv = source is not None and (source.format or "").lower() == "csv"
                for f in self.relation(name).schema.fields:
                    kind = _KIND.get(f.dataType.typeName())
                    kind = "naive" if csv and kind == "instant" else kind
                    key = f.name.lower()
                    kinds[key] = kind if kinds.get(key, kind) == kind else None
            self._columns[node.name] = tuple(sorted((k, v) for k, v in kinds.items() if v))
        return self._columns[node.name]

    def render_sql(self, node: TransformNode, start: dt.datetime | None, end: dt.datetime | None) -> str:
        """The node's SQL for ``[start, end)`` in Spark SQL, what ``write_intervals`` and
        ``replace_table`` run: transpiled from its dialect once per node (on its first
        batch), its variables rendered per batch.  The runner renders through this in
        place of DuckDB's rendering."""
        try:
            return render_spark_sql(node, start, end, self._input_columns(node))
        except _spark_errors() as exc:
            raise engine_error(exc) from None

    # -- time ranges ----------------------------------------------------------------------
    def _bound(self, node: TransformNode, kind: str, t: int) -> str:
        """Interval bound ``t`` as a literal in the time column's own terms: wall clock of
        the node's timezone for naive types (as ``{{ start }}`` renders), an instant for
        Spark's TIMESTAMP (with local time zone)."""
        if kind == "timestamp":
            return f"TIMESTAMP '{from_epoch(t).strftime('%Y-%m-%d %H:%M:%S')}'"
        wall = from_epoch(t).astimezone(get_zone(node.timezone))
        return f"TIMESTAMP_NTZ '{wall.strftime('%Y-%m-%d %H:%M:%S')}'"

    def _time_column(self, node: TransformNode, df) -> tuple[str, str]:
        """(column expression, "timestamp" | "ntz") for the node's time column."""
        fields = {f.name.lower(): f for f in df.schema.fields}
        found = fields.get((node.time_column or "").lower())
        if found is None:
            raise ProjectError(
                f"node '{node.name}': its SQL has no output column '{node.time_column}' "
                f"(time_column); set time_column: to one of {', '.join(df.columns)}")
        kind = found.dataType.typeName()
        if kind == "timestamp":
            return q(found.name), "timestamp"
        return f"CAST({q(found.name)} AS TIMESTAMP_NTZ)", "ntz"

    # -- writes ---------------------------------------------------------------------------
    def write_intervals(
        self,
        node: TransformNode,
        sql: str | None,
        intervals: Sequence[Pair],
        partition_keys: Sequence[str] = (),
    ) -> list[int]:
        """Replace the node's partition directories for ``intervals`` with the rows of the
        batch's query that fall inside them; rows per interval (stage, then commit)."""
        return publish(self.stage(node, sql, intervals, partition_keys))

    def stage(
        self,
        node: TransformNode,
        sql: str | None,
        intervals: Sequence[Pair],
        partition_keys: Sequence[str] = (),
    ) -> SparkStaged:
        """Write the batch's rows, one ``seeknal_interval=`` directory per interval with
        rows, under a fresh ``.spark-staging-seeknal-*`` directory inside the node's
        dataset (hidden from its readers: Spark and DuckDB skip dot-directories); nothing
        the node's readers see changes until ``commit``.

        While staged, the batch holds a lock file beside its directory; a staging whose lock
        nobody holds is a dead writer's, cleared here first (``sweep_staging``).

        ``sql`` is the batch's SQL in Spark's dialect, as ``render_sql`` gives it (None:
        rendered here)."""
        del partition_keys  # partition tracking re-runs whole intervals here
        if sql is None:
            sql = self.render_sql(node, from_epoch(intervals[0][0]), from_epoch(intervals[-1][1]))
        folder = self.dataset_dir(node.name)
        staging = folder / f"{STAGING}{uuid.uuid4().hex}"
        lock = FileMutex(staging.with_name(staging.name + ".lock"), timeout=10)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            sweep_staging(folder)
            lock.acquire()
            self._register(node)
            query = self.spark.sql(sql)
            column, kind = self._time_column(node, query)
            query.createOrReplaceTempView("__seeknal_batch")
            bounds = ", ".join(f"('{partition_value(a)}', {self._bound(node, kind, a)}, "
                               f"{self._bound(node, kind, b)})" for a, b in intervals)
            out = self.spark.sql(
                f"SELECT q.*, b.p AS {PARTITION} FROM __seeknal_batch AS q "
                f"JOIN (SELECT /*+ BROADCAST(b) */ * FROM VALUES {bounds} AS b(p, lo, hi)) AS b "
                f"ON {column} >= b.lo AND {column} < b.hi")
            out.write.partitionBy(PARTITION).parquet(str(staging))
            return SparkStaged(self, node, intervals, staging, out.schema, lock)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            release(lock)
            if isinstance(exc, TimeoutError):
                raise ResourceError(f"cannot lock {lock.lock_path}: held by another process") from None
            if isinstance(exc, _spark_errors()):
                raise engine_error(exc) from None
            if isinstance(exc, OSError):
                raise ResourceError(f"cannot write {staging}: {exc.strerror or exc}") from None
            raise

    # -- audits ---------------------------------------------------------------------------
    def audit_views(self, name: str, df) -> Columns:
        """Register rows to audit (a DataFrame over interval directories, with their
        partition column) as ``name`` (the node's columns) and ``name_keyed`` (plus
        ``_seeknal_interval``: each row's partition value); the kinds of their time columns,
        what transpiling audit SQL needs."""
        df.withColumnRenamed(PARTITION, INTERVAL_COLUMN).createOrReplaceTempView(f"{name}_keyed")
        plain = df.drop(PARTITION)
        plain.createOrReplaceTempView(name)
        return tuple(sorted((f.name.lower(), _KIND[f.dataType.typeName()]) for f in plain.schema.fields
                            if f.dataType.typeName() in _KIND))

    def drop_views(self, name: str) -> None:
        for view in (name, f"{name}_keyed"):
            try:
                self.spark.catalog.dropTempView(view)
            except _spark_errors():
                pass

    def audit_query(self, audit: Audit | None, sql: str, columns: Columns, names_only: bool = False) -> list:
        """Rows (``names_only``: the column names) of an audit query written in DuckDB SQL
        (``audit`` None: the aggregate of several), transpiled like node SQL; what fails is
        a ``QueryError`` naming the audit (a ``ResourceError`` when it is the machine)."""
        subject = f"audit '{audit.name}'" if audit else "audits"
        try:
            df = self.spark.sql(transpile(subject, sql, "duckdb", columns))
            return list(df.columns) if names_only else df.collect()
        except ProjectError as exc:
            raise QueryError(str(exc)) from None
        except _spark_errors() as exc:
            error = engine_error(exc)
            if isinstance(error, ResourceError):
                raise error from None
            raise QueryError(f"{subject}: {error}") from None

    def audit_samples(self, audit: Audit, query: str, columns: Columns) -> tuple[dict, ...]:
        """Up to ``SAMPLES`` of a failed audit's offending rows (without the interval)."""
        found = self.audit_query(audit, f"SELECT * FROM ({query}) AS s LIMIT {SAMPLES}", columns)
        return tuple({k: v for k, v in r.asDict().items() if k != INTERVAL_COLUMN} for r in found)

    def audit_intervals(self, node: TransformNode, audits: Sequence[Audit],
                        intervals: Sequence[Pair]) -> list[dict[Pair, Outcome]]:
        """``seeknal audit`` over completed, contiguous ``intervals`` of the published
        directories: the row-wise built-ins in one aggregate grouped by interval,
        ``row_count`` from Parquet footers, each ``unique`` and custom audit in one query
        over the run; samples only for failing intervals, in one query per audit."""
        intervals = list(intervals)
        folder = self.dataset_dir(node.name)
        values = [partition_value(a) for a, _ in intervals]
        index = {v: j for j, v in enumerate(values)}
        dirs = [str(folder / f"{PARTITION}={v}") for v in values if (folder / f"{PARTITION}={v}").is_dir()]
        out: list[dict[Pair, Outcome]] = [{} for _ in audits]
        if not dirs:
            return out
        name = f"__seeknal_audited_{uuid.uuid4().hex}"
        keyed, iv = f"{name}_keyed", INTERVAL_COLUMN
        try:
            df = self.spark.read.option("basePath", str(folder)).parquet(*dirs)
            columns = self.audit_views(name, df)
            rowwise = [(i, a) for i, a in enumerate(audits) if a.kind in ROW_KINDS]
            if rowwise:
                terms = ", ".join(f"count(*) FILTER (WHERE {a.predicate()})" for _, a in rowwise)
                sql = f"SELECT {iv}, {terms} FROM {keyed} AS t GROUP BY {iv}"
                grouped = self.audit_query(None, sql, columns)
                per = {index[str(r[0])]: r[1:] for r in grouped}
                for k, (i, a) in enumerate(rowwise):
                    failing = {j: int(v[k]) for j, v in per.items() if v[k]}
                    samples = self._grouped_samples(a, a.query(keyed), columns, index) if failing else {}
                    out[i] = {intervals[j]: (n, samples.get(j, ())) for j, n in failing.items()}
            counted = parquet_rows(folder)
            for i, a in enumerate(audits):
                if a.kind == "row_count":
                    rows = [counted.get(v, 0) for v in values]
                    out[i] = {intervals[j]: (1, ({"interval": from_epoch(intervals[j][0]).isoformat(),
                                                  "rows": rows[j]},)) for j in a.failing_counts(rows)}
                elif a.kind in ("unique", "sql"):
                    out[i] = self._audit_run(node, a, name, intervals, index, columns)
        except _spark_errors() as exc:
            raise engine_error(exc) from None
        finally:
            self.drop_views(name)
        return out

    def _audit_run(self, node: TransformNode, audit: Audit, name: str, intervals: list[Pair],
                   index: dict[str, int], columns: Columns) -> dict[Pair, Outcome]:
        """A ``unique`` or custom audit over a run: one query grouped by interval when its
        rows keep ``_seeknal_interval``; else (a custom query that drops it) one per interval."""
        keyed, iv = f"{name}_keyed", INTERVAL_COLUMN
        if audit.kind == "unique":
            query = audit.query(keyed, interval_column=iv)
        else:
            query = audit.query(keyed, node=node, start=from_epoch(intervals[0][0]),
                                end=from_epoch(intervals[-1][1]))
        out: dict[Pair, Outcome] = {}
        if iv in self.audit_query(audit, query, columns, names_only=True):
            sql = f"SELECT {iv}, count(*) FROM ({query}) AS s GROUP BY {iv}"
            counts = self.audit_query(audit, sql, columns)
            samples = self._grouped_samples(audit, query, columns, index) if counts else {}
            for value, n in counts:
                j = index[str(value)]
                out[intervals[j]] = (int(n), samples.get(j, ()))
            return out
        one = f"{name}_one"
        try:
            for value, j in index.items():
                (self.spark.table(keyed).where(f"{iv} = '{value}'").drop(iv)
                 .createOrReplaceTempView(one))
                query = audit.query(one, node=node, start=from_epoch(intervals[j][0]),
                                    end=from_epoch(intervals[j][1]))
                n = int(self.audit_query(audit, f"SELECT count(*) FROM ({query}) AS s", columns)[0][0])
                if n:
                    out[intervals[j]] = (n, self.audit_samples(audit, query, columns))
        finally:
            self.drop_views(one)
        return out

    def _grouped_samples(self, audit: Audit, query: str, columns: Columns,
                         index: dict[str, int]) -> dict[int, tuple[dict, ...]]:
        """Up to ``SAMPLES`` offending rows per interval (by index), in one query."""
        iv = INTERVAL_COLUMN
        found = self.audit_query(
            audit, f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {iv} ORDER BY {iv}) "
                   f"AS _seeknal_rn FROM ({query}) AS s) AS s WHERE _seeknal_rn <= {SAMPLES}", columns)
        out: dict[int, list[dict]] = {}
        for r in found:
            record = r.asDict()
            j = index[str(record.pop(iv))]
            record.pop("_seeknal_rn", None)
            out.setdefault(j, []).append(record)
        return {j: tuple(v) for j, v in out.items()}

    def replace_table(self, node: TransformNode, sql: str | None) -> int:
        """Full refresh of an unscheduled node: its dataset is overwritten whole (``sql``
        as for ``write_intervals``)."""
        if sql is None:
            sql = self.render_sql(node, None, None)
        try:
            self._register(node)
            df = self.spark.sql(sql)
            folder = self.dataset_dir(node.name)
            df.write.mode("overwrite").option("partitionOverwriteMode", "static").parquet(str(folder))
            return int(self.spark.read.parquet(str(folder)).count())
        except _spark_errors() as exc:
            raise engine_error(exc) from None

    def stage_replace(self, node: TransformNode, sql: str | None) -> SparkReplaced:
        """A full refresh, unpublished (``base.Staged`` without intervals): the new table
        written under a hidden staging directory beside the node's dataset, which its
        readers keep seeing until ``commit`` swaps the two."""
        if sql is None:
            sql = self.render_sql(node, None, None)
        folder = self.dataset_dir(node.name)
        staging = folder.with_name(f"{STAGING}{folder.name}-{uuid.uuid4().hex}")
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            self._register(node)
            df = self.spark.sql(sql)
            df.write.parquet(str(staging))
            return SparkReplaced(self, node, staging, df.schema)
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, _spark_errors()):
                raise engine_error(exc) from None
            if isinstance(exc, OSError):
                raise ResourceError(f"cannot write {staging}: {exc.strerror or exc}") from None
            raise

    def audit_table(self, node: TransformNode, audits: Sequence[Audit]) -> list[Outcome] | None:
        """``seeknal audit`` over a table node: ``audits`` over its whole published dataset
        (``None`` before its first build)."""
        folder = self.dataset_dir(node.name)
        if not any(folder.glob("*.parquet")):
            return None
        published = SparkReplaced(self, node, folder, None)
        try:
            return published.check(audits)
        finally:
            published.drop_views()

    def earliest(self, source: SourceNode, column: str, timezone: str | None = None) -> int | None:
        """``min(column)`` of the source as epoch seconds; naive values are read in
        ``timezone`` (the node's), default the project's."""
        return self._extreme("min", source, column, timezone)

    def latest(self, source: SourceNode, column: str, timezone: str | None = None) -> int | None:
        """``max(column)`` of the source as epoch seconds (its readiness watermark)."""
        return self._extreme("max", source, column, timezone)

    def _source_column(self, source: SourceNode, column: str):
        """(the source's DataFrame, its field ``column``, matched case-insensitively);
        a missing column is the project's error, named once here."""
        df = self.relation(source.name)
        found = {f.name.lower(): f for f in df.schema.fields}.get(column.lower())
        if found is None:
            raise ProjectError(f"source '{source.name}': no column '{column}'")
        return df, found

    def _extreme(self, func: str, source: SourceNode, column: str, timezone: str | None) -> int | None:
        try:
            df, found = self._source_column(source, column)
            kind = found.dataType.typeName()
            if kind not in ("timestamp", "timestamp_ntz", "date"):
                raise ProjectError(f"source '{source.name}': column '{column}' is not a date or timestamp")
            value = df.selectExpr(f"CAST({func}({q(found.name)}) AS STRING)").collect()[0][0]
        except _spark_errors() as exc:
            raise engine_error(exc) from None
        return self._epoch(value, kind, timezone)

    def instant(self, sql: str, timezone: str | None = None) -> int | None:
        """The first column of ``sql``'s first row (Spark SQL) as epoch seconds."""
        try:
            df = self.spark.sql(sql)
            kind = df.schema.fields[0].dataType.typeName()
            if kind not in ("timestamp", "timestamp_ntz", "date"):
                raise QueryError(f"expected a timestamp or date, got a {kind}")
            rows = df.selectExpr(f"CAST({q(df.schema.fields[0].name)} AS STRING)").limit(1).collect()
        except _spark_errors() as exc:
            raise engine_error(exc) from None
        return self._epoch(rows[0][0] if rows else None, kind, timezone)

    def _epoch(self, value: str | None, kind: str, timezone: str | None) -> int | None:
        if value is None:
            return None
        parsed = dt.datetime.fromisoformat(value)
        if kind == "timestamp":
            return to_epoch(parsed.replace(tzinfo=dt.UTC))
        return to_epoch(parsed, timezone or self.project.timezone)

    def digests(self, source: SourceNode, column: str, timezone: str | None,
                intervals: Sequence[Pair]) -> dict[Pair, Digest]:
        """The source's rows per interval from ONE grouped aggregate (``digest.Buckets``):
        count, newest and ``bit_xor(xxhash64(every column))``, Spark's seedless row hash
        (stable across Spark processes; not comparable with DuckDB's: another kind)."""
        if not intervals:
            return {}
        try:
            df, found = self._source_column(source, column)
            # the session's zone is UTC: TIMESTAMP is an instant, NTZ and DATE wall clock
            buckets = Buckets(intervals, found.dataType.typeName() == "timestamp",
                              timezone or self.project.timezone)
            micros = f"unix_micros(CAST({q(found.name)} AS TIMESTAMP))"
            hashed = ", ".join(q(f.name) for f in df.schema.fields)
            groups = (df.selectExpr(f"{micros} AS _m", f"xxhash64({hashed}) AS _h")
                      .where(f"_m >= {buckets.lo_us} AND _m < {buckets.hi_us}")
                      .selectExpr(f"div(_m, {buckets.unit_us}) AS _k", "_m", "_h")
                      .groupBy("_k").agg({"*": "count", "_m": "max", "_h": "bit_xor"})
                      .selectExpr("_k", "`count(1)`", "`max(_m)`", "`bit_xor(_h)`").collect())
        except _spark_errors() as exc:
            raise engine_error(exc) from None
        return buckets.fold([tuple(r) for r in groups], "spark")



class SparkReplaced:
    """A table node's new dataset under its staging directory (or, for ``audit_table``,
    the published one): no intervals, its audits see the whole table.  ``commit`` renames
    the old dataset aside, the staging into its place, then deletes the old one;
    ``rollback`` deletes the staging."""

    intervals: tuple[Pair, ...] = ()

    def __init__(self, engine: SparkEngine, node: TransformNode, folder: Path, schema) -> None:
        self.engine, self.node, self.folder = engine, node, folder
        try:
            reader = engine.spark.read if schema is None else engine.spark.read.schema(schema)
            self._df = reader.parquet(str(folder))
            self.rows = [int(self._df.count())]
        except _spark_errors() as exc:
            raise engine_error(exc) from None
        self.relation = f"__seeknal_table_{uuid.uuid4().hex[:12]}"
        self._columns: Columns | None = None

    def check(self, audits: Sequence[Audit]) -> list[Outcome]:
        """The built-ins in one aggregate over the whole table, each custom audit in one
        count, ``row_count`` from ``rows``; samples only for failures."""
        engine = self.engine
        try:
            if self._columns is None:
                self._columns = engine.audit_views(self.relation, self._df)
        except _spark_errors() as exc:
            raise engine_error(exc) from None
        columns, out = self._columns, {}
        built = [(i, a) for i, a in enumerate(audits) if a.kind in ROW_KINDS or a.kind == "unique"]
        aggregate = aggregate_sql([a for _, a in built], self.relation)
        if aggregate:
            try:
                counts = engine.audit_query(None, aggregate, columns)[0]
            except QueryError:  # which audit: each alone names it
                for _, a in built:
                    engine.audit_query(a, f"SELECT count(*) FROM ({a.query(self.relation)}) AS s", columns)
                raise
            for (i, a), n in zip(built, counts):
                n = int(n or 0)
                out[i] = (n, engine.audit_samples(a, a.query(self.relation), columns) if n else ())
        for i, a in enumerate(audits):
            if a.kind == "row_count":
                bad = a.failing_counts(self.rows)
                out[i] = (len(bad), tuple({"rows": self.rows[k]} for k in bad[:SAMPLES]))
            elif a.kind == "sql":
                query = a.query(self.relation, node=self.node)
                n = int(engine.audit_query(a, f"SELECT count(*) FROM ({query}) AS s", columns)[0][0])
                out[i] = (n, engine.audit_samples(a, query, columns) if n else ())
        return [out[i] for i in range(len(audits))]

    def commit(self) -> None:
        self.drop_views()
        final = self.engine.dataset_dir(self.node.name)
        aside = self.folder.with_name(self.folder.name + "-replaced")
        try:
            swap_in(self.folder, final, aside)
        except OSError as exc:
            raise ResourceError(f"cannot publish {final}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(aside, ignore_errors=True)

    def rollback(self) -> None:
        self.drop_views()
        shutil.rmtree(self.folder, ignore_errors=True)

    def drop_views(self) -> None:
        if self._columns is not None:
            self.engine.drop_views(self.relation)
            self._columns = None



def swap_in(new: Path, final: Path, old: Path) -> None:
    """Publish ``new`` (when it exists) as ``final``: the previous ``final`` is renamed to
    ``old`` first (the caller deletes it) and put back if the second rename fails; two
    renames on one filesystem, so readers see the old directory or the new one."""
    if final.exists():
        old.parent.mkdir(exist_ok=True)
        os.rename(final, old)
    if new.exists():
        try:
            os.rename(new, final)
        except OSError:
            if old.exists():
                os.rename(old, final)
            raise


class SparkStaged:
    """A Spark batch written under its staging directory, not yet published.

    ``relation`` is a temp view of the staged rows (what a custom audit's ``{{ this }}``
    is); ``keyed`` adds each row's interval (its partition value) in ``_seeknal_interval``,
    what ``unique`` is checked within.  ``rows`` are counted from the staged files'
    Parquet footers.  ``commit`` moves each interval's directory into the dataset (an
    interval with no rows loses its old directory), ``rollback`` deletes the staging:
    either way the views are dropped."""

    def __init__(self, engine: SparkEngine, node: TransformNode, intervals: Sequence[Pair],
                 staging: Path, schema, lock: FileMutex) -> None:
        self.engine, self.node, self.staging, self.lock = engine, node, staging, lock
        self.intervals = list(intervals)
        self.values = [partition_value(a) for a, _ in intervals]
        counted = parquet_rows(staging)
        self.rows = [counted.get(v, 0) for v in self.values]
        self.relation = f"__seeknal_staged_{staging.name.rpartition('-')[2]}"
        self.keyed = f"{self.relation}_keyed"
        self._schema = schema
        self._columns: Columns | None = None  # set when the views exist (a write without audits makes none)

    @property
    def columns(self) -> Columns:
        """The kinds of the staged time columns, once the views over the staged files exist."""
        if self._columns is None:
            spark = self.engine.spark
            df = (spark.read.schema(self._schema).parquet(str(self.staging)) if sum(self.rows)
                  else spark.createDataFrame([], self._schema))
            self._columns = self.engine.audit_views(self.relation, df)
        return self._columns

    def check(self, audits: Sequence[Audit]) -> list[Outcome]:
        """The audits on the staged rows in one query: the row-wise and ``unique`` built-ins
        as one aggregate (known to pass when nothing was staged), each custom audit as a
        count beside it; ``row_count`` from ``rows``; then samples, only for the audits
        that fail (one query each)."""
        try:
            engine, columns = self.engine, self.columns
        except _spark_errors() as exc:
            raise engine_error(exc) from None
        out: dict[int, Outcome] = {}
        built = [(i, a) for i, a in enumerate(audits) if a.kind in ROW_KINDS or a.kind == "unique"]
        if not sum(self.rows):
            out.update((i, (0, ())) for i, _ in built)
            built = []
        custom = [(i, a) for i, a in enumerate(audits) if a.kind == "sql"]
        # one scan: the row-wise counts ride on the first unique audit's GROUP BY
        aggregate = aggregate_sql([a for _, a in built], self.keyed, INTERVAL_COLUMN)
        parts = [f"({aggregate}) AS b"] if aggregate else []
        parts += [f"(SELECT count(*) FROM ({self._query(a)}) AS s) AS c{i}" for i, a in custom]
        if parts:
            try:
                counts = engine.audit_query(None, f"SELECT * FROM {', '.join(parts)}", columns)[0]
            except QueryError:  # which audit: each alone names it
                for _, a in built + custom:
                    engine.audit_query(a, f"SELECT count(*) FROM ({self._query(a)}) AS s", columns)
                raise
            for (i, a), n in zip(built + custom, counts):
                n = int(n or 0)
                out[i] = (n, engine.audit_samples(a, self._query(a), columns) if n else ())
        for i, a in enumerate(audits):
            if a.kind == "row_count":
                bad = a.failing_counts(self.rows)
                out[i] = (len(bad), tuple({"interval": from_epoch(self.intervals[k][0]).isoformat(),
                                           "rows": self.rows[k]} for k in bad[:SAMPLES]))
        return [out[i] for i in range(len(audits))]

    def _query(self, audit: Audit) -> str:
        """The audit's offending rows among the staged ones (DuckDB SQL)."""
        if audit.kind == "sql":
            return audit.query(self.relation, node=self.node, start=from_epoch(self.intervals[0][0]),
                               end=from_epoch(self.intervals[-1][1]))
        return audit.query(self.keyed, interval_column=INTERVAL_COLUMN)

    def commit(self) -> None:
        """Move each interval's staged directory into the dataset, replacing its old one
        (renamed aside first, deleted after); an interval with no staged rows loses its
        old directory.  Each interval's swap is two renames on one filesystem."""
        self._drop_views()
        folder = self.staging.parent
        aside = folder / f"{self.staging.name}-replaced"
        try:
            for v in self.values:
                new, final = self.staging / f"{PARTITION}={v}", folder / f"{PARTITION}={v}"
                swap_in(new, final, aside / f"{PARTITION}={v}")
        except OSError as exc:
            raise ResourceError(f"cannot publish {folder}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(aside, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        release(self.lock)

    def rollback(self) -> None:
        """Delete the staged files; the dataset keeps what it had."""
        self._drop_views()
        shutil.rmtree(self.staging, ignore_errors=True)
        release(self.lock)

    def _drop_views(self) -> None:
        if self._columns is not None:
            self.engine.drop_views(self.relation)
            self._columns = None
