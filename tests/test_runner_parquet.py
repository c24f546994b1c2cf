"""`materialization: parquet`: one file per interval, replaced whole on re-run, readable
under the node's name, and writable by parallel workers without a shared database lock."""

from __future__ import annotations

import multiprocessing as mp
import textwrap
from pathlib import Path

import duckdb

from seeknal_core import runner
from seeknal_core.project import load_project
from seeknal_core.state import open_store

NODES = """
hourly:
  schedule: "@hourly"
  materialization: parquet
  time_column: hour
  sql: |
    SELECT date_trunc('hour', ts) AS hour, count(*) AS n, sum(v) AS v FROM raw
    WHERE ts >= '{{ start }}' AND ts < '{{ end }}' GROUP BY ALL
daily:
  schedule: "@daily"
  materialization: parquet
  time_column: day
  sql: |
    SELECT CAST(date_trunc('day', hour) AS TIMESTAMP) AS day, sum(n) AS n, sum(v) AS v
    FROM {{ ref('hourly') }} WHERE hour >= '{{ start }}' AND hour < '{{ end }}' GROUP BY ALL
"""


def make_project(root: Path, days: int = 3) -> Path:
    (root / "seeknal" / "transforms").mkdir(parents=True)
    (root / "seeknal" / "sources").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "seeknal_project.yml").write_text("name: pq\nstart: 2024-01-01\n")
    (root / "seeknal" / "sources" / "raw.yml").write_text("raw:\n  path: data/raw.parquet\n  time_column: ts\n")
    (root / "seeknal" / "transforms" / "nodes.yml").write_text(textwrap.dedent(NODES))
    duckdb.sql(f"COPY (SELECT TIMESTAMP '2024-01-01' + INTERVAL (i * 10) MINUTE AS ts, (i * 37) % 101 AS v "
               f"FROM range({days * 144}) t(i)) TO '{root / 'data' / 'raw.parquet'}' (FORMAT PARQUET)")
    return root


def files(root: Path, node: str) -> list[str]:
    return sorted(p.name for p in (root / "target" / "data" / node).glob("*.parquet"))


def read(root: Path, node: str) -> list[tuple]:
    return sorted(duckdb.sql(f"SELECT * FROM read_parquet('{root}/target/data/{node}/*.parquet')").fetchall())


def test_one_file_per_interval_and_exact_rows(tmp_path):
    root = make_project(tmp_path)
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    result = runner.run(project, store, now="2024-01-04")
    assert result.ok and result.intervals == 72 + 3
    assert len(files(root, "hourly")) == 72 and files(root, "daily") == [
        "20240101T000000Z_20240102T000000Z.parquet", "20240102T000000Z_20240103T000000Z.parquet",
        "20240103T000000Z_20240104T000000Z.parquet"]
    expected = duckdb.sql("SELECT TIMESTAMP '2024-01-01' + INTERVAL (i // 144) DAY AS day, count(*), "
                          "sum((i * 37) % 101) FROM range(432) t(i) GROUP BY ALL").fetchall()
    assert read(root, "daily") == sorted(expected)
    assert not (root / "target" / "warehouse.duckdb").exists()  # file-only runs never open it
    before = read(root, "hourly")
    runner.restate(project, store, ["hourly"], "2024-01-02T05:00", "2024-01-02T06:00", "re-run", now="2024-01-04")
    assert runner.run(project, store, now="2024-01-04").intervals == 2  # the hour and its day
    assert read(root, "hourly") == before and len(files(root, "hourly")) == 72  # replaced, not added
    assert not list((root / "target" / "data" / "hourly").glob(".*.tmp"))


def _backfill_day(root: str, day: int) -> int:
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    result = runner.run(project, store, mode="backfill", nodes=["hourly"], start=f"2024-01-0{day}",
                        end=f"2024-01-0{day + 1}", now="2024-01-05", batch_size=1)
    return result.intervals


def test_parallel_workers_write_disjoint_intervals(tmp_path):
    root = make_project(tmp_path, days=4)
    with mp.get_context("spawn").Pool(4) as pool:
        counts = pool.starmap(_backfill_day, [(str(root), d) for d in (1, 2, 3, 4)])
    assert counts == [24, 24, 24, 24]
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    assert [(iv.start.day, iv.end.day) for iv in store.completed("hourly")] == [(1, 5)]
    assert len(files(root, "hourly")) == 96 and sum(r[1] for r in read(root, "hourly")) == 4 * 144
