"""Errors that tell the truth (issue 10), through the real `seeknal` command: a full disk
stops the run with one line and one failure record, the concurrency hint only for a lock,
exit 3 when rows were written but not recorded, and schema-qualified source tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from seeknal_core.engines.duckdb import qualified

SEEKNAL = str(Path(sys.executable).with_name("seeknal"))

FAT = """
fat:
  schedule: "@hourly"
  batch_size: 1
  time_column: t
  sql: |
    SELECT ts AS t, i, md5(CAST(i AS VARCHAR)) || md5(CAST(i * 7 AS VARCHAR)) AS pad
    FROM {{ ref('raw') }}, range(20000) r(i) WHERE ts >= '{{ start }}' AND ts < '{{ end }}'
"""

SMALL = """
small:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT CAST(ts AS DATE) AS day, count(*) AS n FROM {{ ref('raw') }}
    WHERE ts >= '{{ start }}' AND ts < '{{ end }}' GROUP BY ALL
"""


def make_project(root: Path, nodes: str, *, database: str | None = None, state: str | None = None,
                 sources: str = "raw:\n  path: data/raw.parquet\n  time_column: ts\n") -> Path:
    (root / "seeknal" / "transforms").mkdir(parents=True, exist_ok=True)
    (root / "seeknal" / "sources").mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    config = "name: errs\nstart: 2024-01-01\n"
    if database:
        config += f"database: {database}\n"
    if state:
        config += f"state:\n  path: {state}\n"
    (root / "seeknal_project.yml").write_text(config)
    (root / "seeknal" / "sources" / "raw.yml").write_text(sources)
    (root / "seeknal" / "transforms" / "nodes.yml").write_text(textwrap.dedent(nodes))
    duckdb.sql(f"COPY (SELECT TIMESTAMP '2024-01-01' + INTERVAL (i * 10) MINUTE AS ts FROM range(20 * 144) t(i)) "
               f"TO '{root / 'data' / 'raw.parquet'}' (FORMAT PARQUET)")
    return root


def seeknal(*args: str, cwd: Path, now: str = "2024-01-21T00:00:00Z") -> subprocess.CompletedProcess:
    env = {**os.environ, "SEEKNAL_NOW": now}
    return subprocess.run([SEEKNAL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@contextmanager
def small_filesystem(path: Path, size: str = "4m", options: str = ""):
    """A real tmpfs of ``size`` mounted at ``path`` (needs root, as on the CI machine)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path) -> None:
    """Fill the filesystem under ``folder`` to the last byte."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    with open(folder / "filler", "ab", buffering=0) as f:  # the last partial block
        try:
            while True:
                f.write(b"\0")
                f.flush()
        except OSError:
            pass


def log_records(root: Path) -> list[dict]:
    path = root / "target" / "run_log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_full_disk_stops_the_run_with_one_line_and_one_failure(tmp_path):
    with small_filesystem(tmp_path / "small") as mount:
        root = make_project(tmp_path / "p", FAT + SMALL, database=str(mount / "warehouse.duckdb"))
        result = seeknal("run", cwd=root)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "the disk is full" in lines[0], result.stderr
        assert str(mount / "warehouse.duckdb") in lines[0] and "no transaction is active" not in lines[0]
        failures = [r for r in log_records(root) if r["status"] == "failed"]
        assert len(failures) == 1 and failures[0]["node"] == "fat"
        done = [r for r in log_records(root) if r["event"] == "complete"]
        state = json.loads((root / "target" / "run_state.json").read_text())
        assert len(state["nodes"]["fat"]["failed_intervals"]) == 1
        # the intervals before the full one stay recorded; the run ended there (no `small`)
        assert all(r["node"] == "fat" for r in done) and "small" not in state["nodes"]


def one_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_the_concurrency_hint_only_for_a_lock_conflict(tmp_path):
    hint = "is another seeknal or Dagster process writing to it?"
    root = make_project(tmp_path / "p", SMALL)
    (root / "target").mkdir()
    database = root / "target" / "warehouse.duckdb"
    database.write_text("not a database")
    result = seeknal("run", cwd=root)
    line = one_error(result)
    assert result.returncode == 2 and "not a valid DuckDB database file" in line and hint not in line
    database.unlink()
    holder = duckdb.connect(str(database))  # this process holds the write lock
    try:
        result = seeknal("run", cwd=root)
        assert result.returncode == 2 and hint in one_error(result)
    finally:
        holder.close()
    with small_filesystem(tmp_path / "ro", size="1m", options=",ro") as mount:
        readonly = make_project(tmp_path / "q", SMALL, database=str(mount / "warehouse.duckdb"))
        result = seeknal("run", cwd=readonly)
        line = one_error(result)
        assert result.returncode == 2 and "Read-only file system" in line and hint not in line


def test_rows_written_but_state_not_recorded_exits_3(tmp_path):
    with small_filesystem(tmp_path / "state", size="1m") as mount:
        root = make_project(tmp_path / "p", SMALL, state=str(mount / "run_state.json"))
        (mount / "run_state.json.lock").touch()
        fill(mount)  # the state's disk is full; the database's is not
        result = seeknal("run", cwd=root)
        line = one_error(result)
        assert result.returncode == 3, result.stderr
        assert "node 'small': data written, state not recorded" in line and "re-running is safe" in line
        assert not (mount / "run_state.json").exists()
        (mount / "filler").unlink()
        con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
        assert con.execute("SELECT sum(n) FROM small").fetchone() == (20 * 144,)
        con.close()
        again = seeknal("run", cwd=root)  # the re-run recomputes and records, no duplicate rows
        assert again.returncode == 0, again.stderr
        con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
        assert con.execute("SELECT sum(n), count(*) FROM small").fetchone() == (20 * 144, 20)
        con.close()


def test_schema_qualified_source_tables(tmp_path):
    assert qualified("raw.events") == '"raw"."events"'
    assert qualified('db."raw.x".events') == '"db"."raw.x"."events"'
    for table in ("raw.events", "warehouse.raw.events"):
        root = make_project(tmp_path / table, SMALL, sources=f"raw:\n  table: {table}\n  time_column: ts\n")
        (root / "target").mkdir()
        con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
        con.execute("CREATE SCHEMA raw")
        con.execute(f"CREATE TABLE raw.events AS SELECT * FROM read_parquet('{root / 'data' / 'raw.parquet'}')")
        con.close()
        result = seeknal("run", cwd=root)
        assert result.returncode == 0 and "Done: 20 intervals, 20 rows" in result.stdout, result.stderr
    missing = make_project(tmp_path / "missing", SMALL, sources="raw:\n  table: raw.nope\n")
    result = seeknal("run", cwd=missing)
    line = one_error(result)
    assert result.returncode == 2 and "source 'raw': table raw.nope does not exist" in line
