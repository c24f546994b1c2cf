"""What late-data detection costs, side by side in one run, on bench/runner.py's workload
(10M events over 365 days, the daily aggregate `daily_stats`):

(a) the backfill recording input digests (one grouped query per source per batch) vs the
    same backfill without them (an engine without ``digests``), default batching and
    batch_size: 1; target <= 1.1x;
(b) `intervals verify` over the 365 completed days (the runner's ``verify``: one grouped
    digest query over the source, comparison, nothing restated), vs one plain
    ``SELECT date_trunc('day', event_time), count(*) FROM events GROUP BY 1``; both open
    the DuckDB file inside the timing; target <= 1.5x;
(c) the same as whole processes: `seeknal intervals verify` vs `python -c` running the
    plain query (the fixed cost of a process that imports duckdb is in both);
(d) the JSON state with a year of hourly digests of one source: its size, and one durable
    ``mark_complete`` on that node (its line is re-serialised) with vs without them.

The workload and its timing: bench/workload.py.

Run: .venv/bin/python bench/latedata.py [--rows N] [--repeat N]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
from workload import NOW, SEEKNAL, Best, arguments, backfill, process, project_dir, report, reset  # noqa: E402

from seeknal_core.engines.duckdb import DuckDBEngine  # noqa: E402
from seeknal_core.project import load_project  # noqa: E402
from seeknal_core.runner.verify import verify  # noqa: E402
from seeknal_core.state import open_store  # noqa: E402

PLAIN = "SELECT date_trunc('day', event_time), count(*) FROM events GROUP BY 1"


class UndigestedEngine(DuckDBEngine):
    """The baseline for (a): the same engine without ``digests`` (records none)."""

    digests = None


def backfill_digests(root: Path, batch_size: int | None, digests: bool) -> float:
    done = backfill(root, batch_size, None if digests else UndigestedEngine)
    assert bool(done.store.digests("daily_stats")) == digests
    return done.seconds


def verify_once(root: Path) -> float:
    t = time.perf_counter()
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    found = verify(project, store, now=NOW)
    elapsed = time.perf_counter() - t
    assert found.checked == {"daily_stats": 365} and not found.restated, found
    return elapsed


def plain_query(root: Path) -> float:
    t = time.perf_counter()
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    assert len(con.execute(PLAIN).fetchall()) == 365
    con.close()
    return time.perf_counter() - t


def state_cost(hours: int = 8760, repeat: int = 20) -> tuple[int, int, float, float]:
    """(d) A year of hourly digests of one source in the JSON store: file size without and
    with them, and the median durable ``mark_complete`` of one more hour on that node."""
    import statistics

    from seeknal_core.intervals import IntervalSet
    from seeknal_core.state import JsonStateStore

    t0 = 1_672_531_200  # 2023-01-01
    sizes, times = [], []
    for digests in (False, True):
        folder = Path(tempfile.mkdtemp(prefix="seeknal-bench-latedata-state-"))
        try:
            store = JsonStateStore(folder / "run_state.json")
            per = {t0 + 3600 * i: (27_398, (t0 + 3600 * i + 3599) * 1_000_000, "duckdb2.0:fe859304c54cdb9a")
                   for i in range(hours)}
            store.mark_complete("hourly", IntervalSet.from_pairs([(t0, t0 + 3600 * hours)]), digests={"raw": per} if digests else None)
            sizes.append((folder / "run_state.json").stat().st_size)
            spent = []
            for i in range(repeat):
                a = t0 + 3600 * (hours + i)
                extra = {"raw": {a: (1, a * 1_000_000, "duckdb2.0:01")}} if digests else None
                t = time.perf_counter()
                store.mark_complete("hourly", IntervalSet.from_pairs([(a, a + 3600)]), digests=extra)
                spent.append(time.perf_counter() - t)
            times.append(statistics.median(spent))
            store.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return sizes[0], sizes[1], times[0], times[1]


def main() -> None:
    args = arguments()
    with project_dir("seeknal-bench-latedata-", args.rows) as root:
        best = Best()
        db = str(root / "target" / "warehouse.duckdb")
        for _ in range(args.repeat):  # interleaved, best of N: the machine is noisy
            for key, size, digests in (("plain", None, False), ("digests", None, True),
                                       ("plain1", 1, False), ("digests1", 1, True)):
                reset(root)
                best.add(key, backfill_digests(root, size, digests))
            # the last backfill recorded digests of all 365 days
            best.add("verify", verify_once(root))
            best.add("query", plain_query(root))
            best.add("verify_p", process([SEEKNAL, "intervals", "verify", "--project-path", str(root)])[0])
            best.add("query_p", process(
                [sys.executable, "-c", f"import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
                 f"print(len(con.execute({PLAIN!r}).fetchall()))", db])[0])
        report([
            ("(a) backfill without digests, default batching", best["plain"], None, None),
            ("(a) backfill with digests, default batching", best["digests"], best["digests"] / best["plain"], 1.1),
            ("(a) backfill without digests, batch_size: 1", best["plain1"], None, None),
            ("(a) backfill with digests, batch_size: 1", best["digests1"], best["digests1"] / best["plain1"], 1.1),
            ("(b) plain date_trunc/count(*) GROUP BY query", best["query"], None, None),
            ("(b) verify over 365 completed days", best["verify"], best["verify"] / best["query"], 1.5),
            ("(c) python -c: the plain query", best["query_p"], None, None),
            ("(c) seeknal intervals verify (process)", best["verify_p"], best["verify_p"] / best["query_p"], 1.5),
        ], 52)
        state = root / "target" / "run_state.json"
        print(f"state file with 365 daily digests of one source: {state.stat().st_size:,} bytes")
        plain_size, digest_size, plain_t, digest_t = state_cost()
        print(f"(d) a year of hourly digests of one source: state file {plain_size:,} -> {digest_size:,} bytes; "
              f"one mark_complete on that node {plain_t * 1e3:.2f} ms -> {digest_t * 1e3:.2f} ms "
              f"({digest_t / plain_t:.2f}x)")


if __name__ == "__main__":
    main()
