"""DuckDB vs Spark on bench/runner.py's workload, side by side in one run.

Synthetic events (default 2,000,000 over 2023, as bench/runner.py generates them) in
Parquet files, one daily node (count, distinct users, sum per day and event type)
writing Parquet, run three ways: a full backfill of the year (default batching), one
new day, and restating 7 days.  Each engine runs in its own process (a fresh JVM for
Spark, so ``local[1]`` and ``local[2]`` are comparable); Spark's fixed start-up cost
(session creation) is timed apart from the work.

Run: .venv/bin/python bench/engines.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
from runner import AGG, events_sql  # noqa: E402 - bench/runner.py's workload

CONFIGS = [("duckdb", None), ("spark", "local[1]"), ("spark", "local[2]")]


def make_project(root: Path, rows: int, engine: str, master: str | None) -> None:
    (root / "seeknal" / "transforms").mkdir(parents=True)
    (root / "seeknal" / "sources").mkdir(parents=True)
    (root / "data").mkdir()
    block = f"engine:\n  type: spark\n  master: {master}\n" if engine == "spark" else ""
    (root / "seeknal_project.yml").write_text(f"name: bench\nstart: 2023-01-01\n{block}")
    (root / "seeknal" / "sources" / "events.yml").write_text(
        "events:\n  path: data/*.parquet\n  time_column: event_time\n")
    sql = AGG.format(lo="{{ start }}", hi="{{ end }}")
    (root / "seeknal" / "transforms" / "daily.yml").write_text(
        f'daily_stats:\n  schedule: "@daily"\n  time_column: day\n  materialization: parquet\n'
        f"  engine: {engine}\n  sql: |\n    {sql}\n")
    duckdb.sql(f"COPY ({events_sql(rows)}) TO '{root / 'data' / 'events.parquet'}' (FORMAT PARQUET)")


def one(rows: int, engine: str, master: str | None) -> dict:
    """Time one engine in this process: start-up, backfill, one new day, 7-day restatement."""
    from seeknal_core import runner
    from seeknal_core.engines import open_engine
    from seeknal_core.project import load_project
    from seeknal_core.state import open_store

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root, rows, engine, master)
        project = load_project(root)
        store = open_store(project.root, project.state_config)
        t = time.perf_counter()
        eng = open_engine(engine, project, **({"in_memory": True} if engine == "duckdb" else {}))
        out = {"startup": time.perf_counter() - t}
        try:
            for name, kwargs in [("backfill", {"now": "2023-12-31"}), ("new day", {"now": "2024-01-01"})]:
                t = time.perf_counter()
                result = runner.run(project, store, engine=eng, **kwargs)
                assert result.ok, [n.failures for n in result.nodes]
                out[name] = time.perf_counter() - t
            runner.restate(project, store, ["daily_stats"], "2023-06-01", "2023-06-08", "bench",
                           actor="bench", now="2024-01-01")
            t = time.perf_counter()
            result = runner.run(project, store, engine=eng, now="2024-01-01")
            assert result.ok and result.intervals == 7
            out["restate 7 days"] = time.perf_counter() - t
        finally:
            eng.close()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        engine, master = args.one
        print(json.dumps(one(args.rows, engine, None if master == "-" else master)))
        return
    results = {}
    for engine, master in CONFIGS:
        label = engine if master is None else f"spark {master}"
        done = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--one", engine, master or "-"],
                              capture_output=True, text=True, check=True)
        results[label] = json.loads(done.stdout.strip().splitlines()[-1])
    work = ["backfill", "new day", "restate 7 days"]
    print(f"{args.rows:,} events over 2023, one daily node writing Parquet\n")
    print(f"{'':16}" + "".join(f"{w:>16}" for w in ["start-up", *work]))
    for label, r in results.items():
        print(f"{label:16}" + "".join(f"{r[k]:>15.2f}s" for k in ["startup", *work]))
    duck = results["duckdb"]
    for label in ("spark local[1]", "spark local[2]"):
        print(f"\n{label} / duckdb: " + ", ".join(f"{w} {results[label][w] / duck[w]:.1f}x" for w in work))
    one_core, two = results["spark local[1]"], results["spark local[2]"]
    print("\nspark local[1] / local[2] (its scaling signal on this machine): "
          + ", ".join(f"{w} {one_core[w] / two[w]:.2f}x" for w in work))
    print(f"spark's fixed start-up (session creation): {two['startup']:.1f}s, "
          f"{two['startup'] / max(duck['startup'], 1e-6):.0f}x duckdb's")


if __name__ == "__main__":
    main()
