"""Parallel backfill: bench/runner.py's workload (10M events, 365 days, a daily aggregate)
as a `parquet` node over Parquet files, backfilled by 1 and by 2 worker processes, each
taking a contiguous share of the days; side by side in one run, with the state store's
cost per mutation (JSON file, and PostgreSQL when SEEKNAL_BENCH_PG_DSN or a local test
server is available).

Run: .venv/bin/python bench/parallel.py [--rows N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
from runner import events_sql  # noqa: E402  (bench/runner.py: the same workload)

from seeknal_core import runner
from seeknal_core.project import load_project
from seeknal_core.state import open_store

NODE = """
daily_stats:
  schedule: "@daily"
  materialization: parquet
  time_column: day
  sql: |
    SELECT CAST(date_trunc('day', event_time) AS TIMESTAMP) AS day, event_type, count(*) AS events,
           count(DISTINCT user_id) AS users, sum(amount) AS amount
    FROM events WHERE event_time >= '{{ start }}' AND event_time < '{{ end }}' GROUP BY ALL
"""


def make_project(root: Path, rows: int) -> Path:
    (root / "seeknal" / "transforms").mkdir(parents=True)
    (root / "seeknal" / "sources").mkdir(parents=True)
    (root / "data" / "events").mkdir(parents=True)
    (root / "seeknal_project.yml").write_text("name: parallel\nstart: 2023-01-01\n")
    (root / "seeknal" / "sources" / "events.yml").write_text(
        "events:\n  path: data/events/*.parquet\n  time_column: event_time\n")
    (root / "seeknal" / "transforms" / "daily_stats.yml").write_text(NODE)
    con = duckdb.connect()
    con.execute(f"CREATE TABLE events AS {events_sql(rows)}")
    for month in range(1, 13):
        con.execute(f"COPY (SELECT * FROM events WHERE month(event_time) = {month} ORDER BY event_time) "
                    f"TO '{root}/data/events/2023-{month:02d}.parquet' (FORMAT PARQUET)")
    con.close()
    return root


def worker(root: str, start: str, end: str) -> int:
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    result = runner.run(project, store, mode="backfill", start=start, end=end, now="2024-01-01",
                        batch_size=1)
    assert result.ok, result
    return result.intervals


def reset(root: Path) -> None:
    shutil.rmtree(root / "target", ignore_errors=True)


def backfill(root: Path, workers: int) -> float:
    days = [dt.date(2023, 1, 1) + dt.timedelta(days=i) for i in range(366)]  # 365 days and the end
    bounds = [days[365 * k // workers] for k in range(workers + 1)]
    shares = [(str(root), str(a), str(b)) for a, b in zip(bounds, bounds[1:])]
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.apply(os.getpid)  # workers are up before the clock starts
        t = time.perf_counter()
        counts = pool.starmap(worker, shares)
        elapsed = time.perf_counter() - t
    assert sum(counts) == 365, counts
    return elapsed


def mutation_cost(store, n: int = 300) -> float:
    base = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    times = []
    for i in range(n):
        t = time.perf_counter()
        store.mark_complete("bench_node", [(base + dt.timedelta(hours=2 * i), base + dt.timedelta(hours=2 * i + 1))])
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def postgres_dsn() -> tuple[str | None, object]:
    dsn = os.environ.get("SEEKNAL_BENCH_PG_DSN")
    if dsn:
        return dsn, None
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    try:
        import pg_server  # the test suite's throwaway server on loopback
    except ImportError:
        return None, None
    server = pg_server.start_server()
    return server.dsn, server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="seeknal-parallel-"))
    try:
        t = time.perf_counter()
        make_project(root, args.rows)
        print(f"generated {args.rows:,} events as 12 monthly Parquet files in {time.perf_counter() - t:.1f} s")
        one = two = float("inf")
        for _ in range(2):
            reset(root)
            one = min(one, backfill(root, 1))
            reset(root)
            two = min(two, backfill(root, 2))
        print(f"{'backfill of 365 daily intervals (batch_size 1)':52} {'seconds':>8}")
        print(f"{'1 worker':52} {one:8.2f}")
        print(f"{'2 workers (2 cores)':52} {two:8.2f}   speed-up {one / two:.2f}x")
        json_store = open_store(root / "mut", None)
        rows = [("JSON file (durable)", mutation_cost(json_store))]
        dsn, server = postgres_dsn()
        try:
            if dsn:
                from seeknal_core.state.postgres_store import PostgresStateStore

                pg = PostgresStateStore(dsn, schema=f"bench_{os.getpid()}")
                rows.append(("PostgreSQL (loopback)", mutation_cost(pg)))
        finally:
            if server is not None:
                server.stop()
        print(f"{'state store, one mark_complete':52} {'median ms':>9}")
        for label, seconds in rows:
            print(f"{label:52} {seconds * 1e3:9.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
