"""A third engine, for the tests only (not shipped): proof that an engine is one module
plus one registry line (docs/architecture.md, "Adding an engine").

``HiveParquetEngine`` computes a node's SQL with an in-memory DuckDB and writes each
interval as a Hive partition of a Parquet dataset, ``target/data/<node>/seeknal_interval=
<UTC start>/part-0.parquet`` (the ``dataset`` layout, Spark's), so DuckDB and Spark nodes
read its output and it reads theirs.  A batch is computed whole into a staging folder
first and published interval by interval only once the query succeeded, so a failing
batch changes nothing.  The contract suite (tests/test_spark_contract.py) runs it.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import duckdb

from seeknal_core.engines import DATASET, EngineKind
from seeknal_core.engines.base import Pair, ResourceError
from seeknal_core.engines.duckdb import DuckDBEngine, engine_error
from seeknal_core.errors import ProjectError
from seeknal_core.project import Project, SourceNode, TransformNode
from seeknal_core.templating import quote_identifier as q
from seeknal_core.timeutil import from_epoch, get_zone

#: the registry line (``seeknal_core.engines.register(HIVE)``)
HIVE = EngineKind("hive", "engine_hive:HiveParquetEngine",
                  outputs={"incremental": DATASET, "table": DATASET, "parquet": DATASET},
                  dagster_kinds=("duckdb", "parquet"))
PARTITION = "seeknal_interval"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class HiveParquetEngine:
    name = "hive"

    def __init__(self, project: Project, **_options):
        self.project = project
        # reads sources and other nodes' file outputs through views (engines/duckdb.py)
        self.reader = DuckDBEngine(project, in_memory=True)
        self.con = self.reader.con

    def close(self) -> None:
        self.reader.close()

    def interrupt(self) -> bool:
        return self.reader.interrupt()

    def dataset_dir(self, node: TransformNode) -> Path:
        return self.project.target_dir / "data" / node.name

    def _bound(self, node: TransformNode, kind: str, t: int) -> str:
        """Interval bound ``t`` in the time column's terms: an instant for TIMESTAMPTZ,
        else wall clock of the node's timezone (as ``{{ start }}`` renders)."""
        if "WITH TIME ZONE" in kind.upper():
            return f"TIMESTAMPTZ {_literal(from_epoch(t).isoformat())}"
        wall = from_epoch(t).astimezone(get_zone(node.timezone)).strftime("%Y-%m-%d %H:%M:%S")
        return f"TIMESTAMP {_literal(wall)}"

    def write_intervals(self, node: TransformNode, sql: str, intervals: Sequence[Pair],
                        partition_keys: Sequence[str] = ()) -> list[int]:
        """Replace the partitions of ``intervals`` with the rows of ``sql`` inside each."""
        del partition_keys  # whole intervals are replaced
        self.reader.register_inputs(node)
        folder = self.dataset_dir(node)
        staging = folder / f".staging-{uuid.uuid4().hex}"
        rows: list[int] = []
        try:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE __hive_batch AS SELECT * FROM ({sql}) AS q")
            kinds = {c.lower(): t for c, t, *_ in self.con.execute("DESCRIBE __hive_batch").fetchall()}
            kind = kinds.get((node.time_column or "").lower())
            if kind is None:
                raise ProjectError(f"node '{node.name}': its SQL has no output column '{node.time_column}' "
                                   f"(time_column); set time_column: to one of {', '.join(kinds)}")
            column = q(node.time_column) if "WITH TIME ZONE" in kind.upper() else \
                f"CAST({q(node.time_column)} AS TIMESTAMP)"
            for a, b in intervals:
                part = staging / f"{PARTITION}={from_epoch(a):%Y%m%dT%H%M%SZ}"
                part.mkdir(parents=True)
                copied = self.con.execute(
                    f"COPY (SELECT * FROM __hive_batch WHERE {column} >= {self._bound(node, kind, a)} "
                    f"AND {column} < {self._bound(node, kind, b)}) TO {_literal(str(part / 'part-0.parquet'))} "
                    "(FORMAT PARQUET)").fetchone()
                rows.append(int(copied[0]) if copied else 0)
        except duckdb.Error as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise engine_error(exc, folder) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            self.con.execute("DROP TABLE IF EXISTS __hive_batch")
        try:
            self._publish(folder, staging, [a for a, _ in intervals], rows)
        except OSError as exc:
            raise ResourceError(f"cannot write {folder}: {exc.strerror or exc}") from None
        return rows

    @staticmethod
    def _publish(folder: Path, staging: Path, starts: list[int], rows: list[int]) -> None:
        """Each interval's staged directory replaces its published one; an interval with no
        rows loses its old directory."""
        for a, n in zip(starts, rows):
            name = f"{PARTITION}={from_epoch(a):%Y%m%dT%H%M%SZ}"
            final, old = folder / name, staging / f"old-{name}"
            if final.exists():
                final.rename(old)
            if n:
                (staging / name).rename(final)
        shutil.rmtree(staging)

    def replace_table(self, node: TransformNode, sql: str) -> int:
        """An unscheduled node: its folder replaced whole by one Parquet file."""
        self.reader.register_inputs(node)
        folder = self.dataset_dir(node)
        staging = folder.with_name(f".{node.name}.staging-{uuid.uuid4().hex}")
        staging.mkdir(parents=True)
        try:
            copied = self.con.execute(f"COPY ({sql}) TO {_literal(str(staging / 'part-0.parquet'))} "
                                      "(FORMAT PARQUET)").fetchone()
        except duckdb.Error as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise engine_error(exc, folder) from None
        old = folder.with_name(f".{node.name}.old-{uuid.uuid4().hex}")
        if folder.exists():
            folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
        return int(copied[0]) if copied else 0

    def earliest(self, source: SourceNode, column: str, timezone: str | None = None) -> int | None:
        return self.reader.earliest(source, column, timezone)

    def latest(self, source: SourceNode, column: str, timezone: str | None = None) -> int | None:
        return self.reader.latest(source, column, timezone)

    def instant(self, sql: str, timezone: str | None = None) -> int | None:
        return self.reader.instant(sql, timezone)


__all__ = ["HIVE", "HiveParquetEngine"]
