"""Beyond one process: a Dagster backfill of 48 hourly partitions of a `parquet` node,
run by a real `dagster dev` as several concurrent runs (multi-run backfill policy, the
multiprocess executor), with seeknal's state in a real PostgreSQL server. Every interval
completes once, the files hold exactly the one-shot rows, and runs overlapped in time."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import duckdb
from dagster_harness import (
    LAUNCH_BACKFILL,
    backfill_params,
    dagster_dev,
    launched_backfill_id,
    write_code_location,
)

from seeknal_core.intervals import IntervalSet
from seeknal_core.project import load_project
from seeknal_core.state import open_store

NODE = """
hourly:
  schedule: "@hourly"
  materialization: parquet
  batch_size: 6              # a backfill becomes runs of 6 partitions each
  time_column: hour
  sql: |
    SELECT date_trunc('hour', ts) AS hour, count(*) AS n, sum(v) AS v FROM raw
    WHERE ts >= TIMESTAMP '{{ start }}' AND ts < TIMESTAMP '{{ end }}' GROUP BY ALL
"""
DAGSTER_YAML = """\
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 4
"""
LOCATION = "seeknal_parallel"
HOURS = [f"2024-01-0{1 + h // 24}-{h % 24:02d}:00" for h in range(48)]


def make_project(root: Path, dsn: str, schema: str) -> Path:
    (root / "seeknal" / "transforms").mkdir(parents=True)
    (root / "seeknal" / "sources").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "seeknal_project.yml").write_text(
        f"name: parallel\nstart: 2024-01-01\nstate:\n  backend: postgres\n  dsn: '{dsn}'\n  schema: {schema}\n")
    (root / "seeknal" / "sources" / "raw.yml").write_text("raw:\n  path: data/raw.parquet\n  time_column: ts\n")
    (root / "seeknal" / "transforms" / "hourly.yml").write_text(textwrap.dedent(NODE))
    duckdb.sql(f"COPY (SELECT TIMESTAMP '2024-01-01' + INTERVAL (i) MINUTE AS ts, (i * 37) % 101 AS v "
               f"FROM range(3 * 1440) t(i)) TO '{root / 'data' / 'raw.parquet'}' (FORMAT PARQUET)")
    return root


def test_parallel_parquet_backfill_with_postgres_state(tmp_path, pg_dsn, pg_schema):
    root = make_project(tmp_path / "proj", pg_dsn, pg_schema)
    # only the backfill runs: no automation requesting the latest hour beside it
    write_code_location(root, LOCATION, 'automation="none"')
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    with dagster_dev(root / "workspace.yaml", home, location=LOCATION) as server:
        backfill_id = launched_backfill_id(server.graphql(LAUNCH_BACKFILL, backfill_params(["hourly"], HOURS)))
        backfill = server.wait_for_backfill(backfill_id, ["hourly"])
        status = backfill["status"]
        assert status == "COMPLETED_SUCCESS", (status, backfill.get("error"), server.log_tail())

    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert len(records) == 8 and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
        spans = sorted((r.start_time, r.end_time) for r in records)
        overlapping = sum(1 for a, b in itertools.combinations(spans, 2) if a[0] < b[1] and b[0] < a[1])
        assert overlapping >= 1, f"no two runs overlapped: {spans}"
        messages = [e.message for r in records[:1] for e in instance.all_logs(r.dagster_run.run_id)]
        assert any("multiprocess executor" in (m or "") for m in messages)

    project = load_project(root)
    store = open_store(project.root, project.state_config)
    assert type(store).__name__ == "PostgresStateStore"
    utc = "+00:00"
    assert store.completed("hourly") == IntervalSet([(f"2024-01-01T00:00{utc}", f"2024-01-03T00:00{utc}")])
    completions = [r for r in store.history("hourly") if r["event"] == "complete"]
    assert len(completions) == 8 and {r["mode"] for r in completions} == {"dagster"}
    files = sorted((root / "target" / "data" / "hourly").glob("*.parquet"))
    assert len(files) == 48
    got = duckdb.sql(f"SELECT * FROM read_parquet('{root}/target/data/hourly/*.parquet') ORDER BY 1").fetchall()
    want = duckdb.sql(f"SELECT date_trunc('hour', ts), count(*), sum(v) FROM '{root}/data/raw.parquet' "
                      "WHERE ts < TIMESTAMP '2024-01-03' GROUP BY ALL ORDER BY 1").fetchall()
    assert got == want
    assert not (root / "target" / "warehouse.duckdb").exists()  # no worker touched a database file
