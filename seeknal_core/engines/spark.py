"""Spark execution (``engine: spark``): the same interval contract as DuckDB, on a
Spark session (``local[N]``, a ``spark://`` cluster, or Spark Connect ``sc://``).

A Spark node's output is a Parquet dataset under ``target/data/<node>/`` with one
partition directory per interval (``seeknal_interval=20240101T000000Z``), written with
dynamic partition overwrite: a batch replaces exactly its intervals' directories, and
workers writing different intervals never touch each other's.  An interval whose
re-run yields no rows has its old directory removed after the write.  Rows are counted
per interval from the files just written (Parquet metadata), before the runner records
completion: data first, then state.

A Spark node reads sources with ``path:`` (Parquet or CSV, globs, any Hadoop URI), other
Spark nodes, and DuckDB nodes with ``materialization: parquet``; never a table inside
the ``.duckdb`` file (one line says so).  pyspark's exceptions stop here, translated to
``QueryError``/``BatchError``/``ResourceError``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

from ..errors import ProjectError
from ..project import Project, SourceNode, TransformNode
from ..timeutil import from_epoch, get_zone, to_epoch
from . import DATABASE, output_layout
from .base import BatchError, Digest, EngineError, Pair, QueryError, ResourceError
from .digest import Buckets
from .spark_sql import render_spark_sql
from .spark_sql import spark_identifier as q

#: the partition column of every Spark node's dataset (dropped when the dataset is read)
PARTITION = "seeknal_interval"
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


def _identity(folder: Path, value: str) -> tuple[int, int] | None:
    """(inode, mtime) of an interval's directory, or None when it does not exist."""
    try:
        info = (folder / f"{PARTITION}={value}").stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns


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


def build_session(config: dict):
    """A Spark session from a project's ``engine:`` block (``master`` or ``remote``, and
    ``conf``); an already active classic session in this process is reused as is."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in session_conf(config).items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - any start-up failure is one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = config.get("remote") or config.get("master") or "local[*]"
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
        if not folder.is_dir():
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
        if self.dataset_dir(node.name).is_dir():
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
            if self.dataset_dir(node.name).is_dir():
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
        batch's query that fall inside them; rows per interval.

        ``sql`` is the batch's SQL in Spark's dialect, as ``render_sql`` gives it (None:
        rendered here)."""
        del partition_keys  # partition tracking re-runs whole intervals here
        if sql is None:
            sql = self.render_sql(node, from_epoch(intervals[0][0]), from_epoch(intervals[-1][1]))
        try:
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
            folder = self.dataset_dir(node.name)
            before = {v: _identity(folder, v) for v in map(partition_value, (a for a, _ in intervals))}
            (out.write.mode("overwrite").option("partitionOverwriteMode", "dynamic")
             .partitionBy(PARTITION).parquet(str(folder)))
            return self._settle(folder, intervals, before)
        except _spark_errors() as exc:
            raise engine_error(exc) from None
        except OSError as exc:
            where = self.dataset_dir(node.name)
            raise ResourceError(f"cannot write {where}: {exc.strerror or exc}") from None

    def _settle(self, folder: Path, intervals: Sequence[Pair], before: dict) -> list[int]:
        """Rows per interval from the directories this write replaced (dynamic overwrite
        renames a new directory into place); a directory it left untouched holds an
        interval that now has no rows, and is removed."""
        values = [partition_value(a) for a, _ in intervals]
        written = []
        for v in values:
            now = _identity(folder, v)
            if now is not None and now == before[v]:
                shutil.rmtree(folder / f"{PARTITION}={v}")
            elif now is not None:
                written.append(v)
        counts: dict[str, int] = {}
        if written:
            rows = (self.spark.read.option("basePath", str(folder))
                    .parquet(*(str(folder / f"{PARTITION}={v}") for v in written))
                    .groupBy(PARTITION).count().collect())
            counts = {str(r[0]): int(r[1]) for r in rows}
        return [counts.get(v, 0) for v in values]

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

    def earliest(self, source: SourceNode, column: str, timezone: str | None = None) -> int | None:
        """``min(column)`` of the source as epoch seconds; naive values are read in
        ``timezone`` (the node's), default the project's."""
        try:
            df = self.relation(source.name)
            fields = {f.name.lower(): f for f in df.schema.fields}
            found = fields.get(column.lower())
            if found is None:
                raise ProjectError(f"source '{source.name}': no column '{column}'")
            kind = found.dataType.typeName()
            if kind not in ("timestamp", "timestamp_ntz", "date"):
                raise ProjectError(f"source '{source.name}': column '{column}' is not a date or timestamp")
            value = df.selectExpr(f"CAST(min({q(found.name)}) AS STRING)").collect()[0][0]
        except _spark_errors() as exc:
            raise engine_error(exc) from None
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
            df = self.relation(source.name)
            fields = {f.name.lower(): f for f in df.schema.fields}
            found = fields.get(column.lower())
            if found is None:
                raise ProjectError(f"source '{source.name}': no column '{column}'")
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
