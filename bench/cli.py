"""The seeknal CLI as whole processes, on bench/runner.py's workload (10M events, 365 days,
a daily aggregate), side by side with (b): a plain `python -c` doing one DuckDB
CREATE TABLE AS over the year, and (r): a plain `python -c` that opens the DuckDB file
and does one day's DELETE+INSERT, the baseline for re-running one restated day (the
fixed cost of one seeknal process: imports, project, state).

The restated-day pair alternates ``--repeat`` times (best of each) and is also given in CPU
seconds (user + system), which a loaded machine inflates far less than wall time.

Run: .venv/bin/python bench/cli.py [--rows N] [--repeat N]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from runner import AGG, make_project  # noqa: E402

SEEKNAL = str(Path(sys.executable).with_name("seeknal"))
BASELINE = (
    "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
    "con.execute('DROP TABLE IF EXISTS baseline_b'); "
    f"con.execute(\"CREATE TABLE baseline_b AS {AGG.format(lo='2023-01-01', hi='2024-01-01')}\")"
)


REDO_DAY = (
    "import duckdb, sys; con = duckdb.connect(sys.argv[1]); con.execute('BEGIN'); "
    "con.execute(\"DELETE FROM daily_stats WHERE day >= '2023-06-10' AND day < '2023-06-11'\"); "
    f"con.execute(\"INSERT INTO daily_stats {AGG.format(lo='2023-06-10', hi='2023-06-11')}\"); "
    "con.execute('COMMIT')"
)


def timed(args: list[str], now: str | None = None, repeat: int = 1, env: dict | None = None) -> float:
    """Best whole-process time of ``args`` (``env`` adds variables); a failure stops the bench."""
    return timed_cpu(args, now, repeat, env)[0]


def timed_cpu(args: list[str], now: str | None = None, repeat: int = 1, env: dict | None = None
              ) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds: user + system of the process and its threads)
    of ``args``; CPU is what a loaded machine does not inflate."""
    env = {**os.environ, **({"SEEKNAL_NOW": now} if now else {}), **(env or {})}
    best = cpu = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        best = min(best, time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = min(cpu, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return best, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="alternating runs of the restated-day pair")
    args = parser.parse_args()
    # bytecode as an installed package has it, even under PYTHONDONTWRITEBYTECODE
    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "seeknal_core"), quiet=1)
    root = Path(tempfile.mkdtemp(prefix="seeknal-cli-bench-"))
    try:
        make_project(root, args.rows)
        db = str(root / "target" / "warehouse.duckdb")
        p = ["--project-path", str(root)]
        base = min(timed([sys.executable, "-c", BASELINE, db]) for _ in range(2))
        rows = []
        # a fresh state and table for each full backfill, best of 2
        full = float("inf")
        for _ in range(2):
            for name in ("run_state.json", "run_log.jsonl"):
                (root / "target" / name).unlink(missing_ok=True)
            subprocess.run([sys.executable, "-c", "import duckdb,sys; duckdb.connect(sys.argv[1])"
                            ".execute('DROP TABLE IF EXISTS daily_stats')", db], check=True)
            full = min(full, timed([SEEKNAL, "run", "--backfill", *p], now="2023-12-31T00:00:00Z"))
        rows.append(("full backfill (364 days)", full, f"{full / base:.2f}x (b)", "<= 1.3x (b)",
                     full / base <= 1.3))
        one = timed([SEEKNAL, "run", *p], now="2024-01-01T00:00:00Z")
        rows.append(("run finding one new day", one, "", "<= 0.5 s", one <= 0.5))
        none = timed([SEEKNAL, "run", *p], now="2024-01-01T00:00:00Z", repeat=3)
        rows.append(("run with nothing due", none, "", "<= 0.5 s", none <= 0.5))
        restate = timed([SEEKNAL, "run", "--restate", "--start", "2023-06-01", "--end", "2023-06-07",
                         "--node", "daily_stats", "--reason", "bench", *p], now="2024-01-01T00:00:00Z")
        rows.append(("restate 7 days and re-run them", restate, "", "", True))
        redo = [SEEKNAL, "run", "--restate", "--start", "2023-06-10", "--end", "2023-06-10",
                "--node", "daily_stats", "--reason", "bench", *p]
        ours = plain = ours_cpu = plain_cpu = float("inf")
        for _ in range(args.repeat):  # alternating, best of each
            wall, cpu = timed_cpu(redo, now="2024-01-01T00:00:00Z")
            ours, ours_cpu = min(ours, wall), min(ours_cpu, cpu)
            wall, cpu = timed_cpu([sys.executable, "-c", REDO_DAY, db])
            plain, plain_cpu = min(plain, wall), min(plain_cpu, cpu)
        rows.append(("re-run one restated day", ours, f"{ours / plain:.2f}x (r)", "<= 1.3x (r)",
                     ours / plain <= 1.3))
        rows.append(("  the same, CPU seconds", ours_cpu, f"{ours_cpu / plain_cpu:.2f}x (r)", "", False))
        pending = timed([SEEKNAL, "intervals", "pending", *p], now="2024-01-01T00:00:00Z", repeat=5)
        rows.append(("intervals pending", pending, "", "<= 0.25 s", pending <= 0.25))
        print(f"(b) python -c CREATE TABLE AS over the year: {base:.3f} s")
        print(f"(r) python -c one day's DELETE+INSERT: {plain:.3f} s ({plain_cpu:.3f} s CPU)")
        print(f"{'command':36} {'seconds':>8} {'ratio':>12} {'target':>12}")
        for label, seconds, ratio, target, ok in rows:
            print(f"{label:36} {seconds:8.3f} {ratio:>12} {target:>12} {'ok' if ok else 'MISSED' if target else ''}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
