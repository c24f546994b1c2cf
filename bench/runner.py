"""Runner overhead on a year of data: seeknal vs plain DuckDB, side by side in one process.

10,000,000 synthetic events over 365 days, generated inside DuckDB with range(); one
daily node aggregating per (day, event_type): count, distinct users, sum of amount.

  (b) one plain CREATE TABLE AS over the year           <- baseline for default batching
  (p) a plain loop of 365 per-day DELETE+INSERT commits  <- baseline for batch_size: 1
  ours, default batching (one coalesced query) and with batch_size: 1
  (u) ours with the per-interval row count switched off   <- the cost of counting rows per
      interval (one grouped range join in the batch's transaction) must stay within 1.1x

Run: .venv/bin/python bench/runner.py [--rows N]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
from workload import (  # noqa: E402, F401 - AGG, events_sql, make_project: other benches import them from here
    AGG,
    Best,
    arguments,
    backfill,
    events_sql,
    make_project,
    project_dir,
    report,
    reset,
)

from seeknal_core.engines.duckdb import DuckDBEngine  # noqa: E402


def plain_ctas(root: Path) -> float:
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    t = time.perf_counter()
    con.execute("CREATE TABLE baseline_b AS " + AGG.format(lo="2023-01-01", hi="2024-01-01"))
    elapsed = time.perf_counter() - t
    con.close()
    return elapsed


def plain_loop(root: Path) -> float:
    import datetime as dt

    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    con.execute("CREATE TABLE baseline_p AS " + AGG.format(lo="2000-01-01", hi="2000-01-01") + " LIMIT 0")
    t = time.perf_counter()
    day = dt.datetime(2023, 1, 1)
    for _ in range(365):
        lo, hi = day.strftime("%Y-%m-%d %H:%M:%S"), (day + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
        con.execute("BEGIN TRANSACTION")
        con.execute(f"DELETE FROM baseline_p WHERE day >= '{lo}' AND day < '{hi}'")
        con.execute("INSERT INTO baseline_p " + AGG.format(lo=lo, hi=hi))
        con.execute("COMMIT")
        day += dt.timedelta(days=1)
    elapsed = time.perf_counter() - t
    con.close()
    return elapsed


class UncountedEngine(DuckDBEngine):
    """The baseline for (u): the same write without the per-interval row count."""

    def _interval_counts(self, node, intervals, where):
        return [0] * len(intervals)


def ours(root: Path, batch_size: int | None, counted: bool = True) -> float:
    done = backfill(root, batch_size, None if counted else UncountedEngine)
    if counted:
        assert sum(n for _, n in done.result.nodes[0].interval_rows) == done.result.rows, done.result
    return done.seconds


def check_equal(root: Path, baseline: str) -> None:
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"), read_only=True)
    diff = con.execute(f"SELECT count(*) FROM ((SELECT * FROM daily_stats EXCEPT ALL SELECT * FROM {baseline}) "
                       f"UNION ALL (SELECT * FROM {baseline} EXCEPT ALL SELECT * FROM daily_stats))").fetchone()[0]
    con.close()
    assert diff == 0, f"daily_stats differs from {baseline} by {diff} rows"


def main() -> None:
    args = arguments()
    with project_dir("seeknal-bench-", args.rows) as root:
        best = Best()
        for _ in range(args.repeat):  # interleaved, best of N: the machine is noisy
            reset(root)
            best.add("b", plain_ctas(root))
            best.add("ours", ours(root, None))
            check_equal(root, "baseline_b")
            reset(root)
            best.add("u", ours(root, None, counted=False))
            reset(root)
            best.add("p", plain_loop(root))
            best.add("ours1", ours(root, 1))
            check_equal(root, "baseline_p")
        report([
            ("(b) plain CREATE TABLE AS over the year", best["b"], None, None),
            ("ours, default batching (1 query)", best["ours"], best["ours"] / best["b"], 1.2),
            ("(u) ours without per-interval row counts", best["u"], None, None),
            ("ours, default batching, vs (u)", best["ours"], best["ours"] / best["u"], 1.1),
            ("(p) plain loop, 365 delete+insert commits", best["p"], None, None),
            ("ours, batch_size: 1 (365 batches)", best["ours1"], best["ours1"] / best["p"], 1.3),
        ], 44)
        print(f"per interval, batch_size 1: ours {best['ours1'] / 365 * 1e3:.1f} ms, "
              f"plain loop {best['p'] / 365 * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
