"""The workload bench/runner.py, bench/audits.py and bench/latedata.py share, and how they
time it: 10M synthetic events over 2023 in a DuckDB table, one daily node aggregating
them per (day, event_type) (`daily_stats`), a backfill of its 365 days in-process or a
command as a whole process, trials alternated and the best of N kept (the machine is
shared: interleaving exposes every variant to the same load), and the table of ratios.

Not a benchmark itself: imported by the scripts beside it (each puts bench/ on sys.path).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import duckdb

from seeknal_core import runner
from seeknal_core.project import load_project
from seeknal_core.state import open_store

AGG = ("SELECT CAST(date_trunc('day', event_time) AS TIMESTAMP) AS day, event_type, count(*) AS events, "
       "count(DISTINCT user_id) AS users, sum(amount) AS amount FROM events "
       "WHERE event_time >= '{lo}' AND event_time < '{hi}' GROUP BY ALL")
NODE = """
daily_stats:
  schedule: "@daily"
  time_column: day
  sql: |
    {sql}
"""
#: the run's clock: the whole of 2023 is due
NOW = "2024-01-01T00:00:00Z"
#: the `seeknal` command beside this Python
SEEKNAL = str(Path(sys.executable).with_name("seeknal"))


def events_sql(rows: int) -> str:
    """`rows` synthetic events spread evenly over 2023: time, user, one of 5 types, amount."""
    return f"""
        SELECT TIMESTAMP '2023-01-01' + to_microseconds(CAST(i * (365 * 86400000000 // {rows}) AS BIGINT))
                 AS event_time,
               CAST(hash(i) % 200000 AS INTEGER) AS user_id,
               ['page_view', 'add_to_cart', 'checkout', 'purchase', 'refund'][CAST(1 + hash(i * 7) % 5 AS BIGINT)]
                 AS event_type,
               CAST((hash(i * 13) % 10000) / 100.0 AS DECIMAL(10, 2)) AS amount
        FROM range({rows}) t(i)"""


def write_node(root: Path, extra: str = "") -> None:
    """`daily_stats`'s YAML, with ``extra`` lines appended to its definition (``audits:``)."""
    sql = AGG.format(lo="{{ start }}", hi="{{ end }}")
    (root / "seeknal" / "transforms" / "daily_stats.yml").write_text(NODE.format(sql=sql) + extra)


def make_project(root: Path, rows: int) -> Path:
    """A project in ``root``: the `events` source (``rows`` events in target/warehouse.duckdb)
    and `daily_stats`."""
    (root / "seeknal" / "transforms").mkdir(parents=True)
    (root / "seeknal" / "sources").mkdir(parents=True)
    (root / "target").mkdir()
    (root / "seeknal_project.yml").write_text("name: bench\nstart: 2023-01-01\n")
    (root / "seeknal" / "sources" / "events.yml").write_text("events:\n  table: events\n  time_column: event_time\n")
    write_node(root)
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    con.execute(f"CREATE TABLE events AS {events_sql(rows)}")
    con.close()
    return root


@contextlib.contextmanager
def project_dir(prefix: str, rows: int) -> Iterator[Path]:
    """A fresh project in a temporary folder (its generation time printed), removed after."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        t = time.perf_counter()
        make_project(root, rows)
        print(f"generated {rows:,} events over 365 days in {time.perf_counter() - t:.1f} s")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def reset(root: Path) -> None:
    """Back to nothing built: the node's table (and the plain baselines') dropped, no state."""
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    for table in ("daily_stats", "baseline_b", "baseline_p"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute("CHECKPOINT")
    con.close()
    for name in ("run_state.json", "run_log.jsonl", "run_state.json.lock"):
        (root / "target" / name).unlink(missing_ok=True)


class Backfill(NamedTuple):
    seconds: float  # wall
    cpu: float  # CPU seconds of this process (DuckDB's threads included)
    result: Any  # runner.RunResult
    store: Any  # the run's state store


def backfill(root: Path, batch_size: int | None = None, engine_class: type | None = None) -> Backfill:
    """One in-process backfill of the 365 days (project load included); ``engine_class``:
    a DuckDBEngine variant to run on (the baseline of a cost measured by switching one
    capability off)."""
    t, cpu = time.perf_counter(), time.process_time()
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    engine = engine_class(project) if engine_class else None
    try:
        result = runner.run(project, store, mode="backfill", now=NOW, batch_size=batch_size, engine=engine)
    finally:
        if engine is not None:
            engine.close()
    done = Backfill(time.perf_counter() - t, time.process_time() - cpu, result, store)
    assert result.ok and result.intervals == 365, result
    return done


def process(args: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one whole process run with the
    workload's clock; on a shared machine wall time includes waiting for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "SEEKNAL_NOW": NOW})
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


class Best(dict):
    """The best (smallest) value seen per variant, over alternated trials."""

    def add(self, key: str, value: float) -> float:
        self[key] = min(self.get(key, float("inf")), value)
        return value


def arguments(rows: int = 10_000_000, repeat: int = 3) -> argparse.Namespace:
    """``--rows N`` (events generated) and ``--repeat N`` (alternated trials)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--repeat", type=int, default=repeat)
    return parser.parse_args()


def report(rows: list[tuple[str, float, float | None, float | None]], width: int) -> None:
    """The table: (label, seconds, ratio to its baseline or None, target ratio or None)."""
    print(f"{'variant':{width}} {'seconds':>8} {'ratio':>7} {'target':>7}")
    for label, seconds, ratio, target in rows:
        r = f"{ratio:6.2f}x" if ratio else ""
        tgt = f"<={target}x {'ok' if ratio <= target else 'MISSED'}" if target else ""
        print(f"{label:{width}} {seconds:8.3f} {r:>7} {tgt}")
