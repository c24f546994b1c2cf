"""What audits cost, side by side in one run, on bench/runner.py's workload (10M events over
365 days, the daily aggregate `daily_stats`, grain (day, event_type)):

(a) the backfill with not_null + unique on the grain + accepted_range, vs the same backfill
    without audits (in-process, default batching and batch_size: 1);
(b) `seeknal audit` over the 365 completed days (a whole process), vs a plain `python -c`
    opening the DuckDB file and computing the same three checks over the whole table in one
    query (the fixed cost of a process that imports duckdb is in both).

Run: .venv/bin/python bench/audits.py [--rows N] [--repeat N]
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
from runner import AGG, NODE, make_project, ours, reset  # noqa: E402

SEEKNAL = str(Path(sys.executable).with_name("seeknal"))
AUDITS = """  audits:
    - not_null: [day, event_type]
    - unique: [day, event_type]
    - accepted_range: {column: amount, min: 0}
"""
PLAIN_CHECKS = (
    "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print(con.execute('''"
    "SELECT count(*) FILTER (WHERE day IS NULL OR event_type IS NULL), "
    "(SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM daily_stats GROUP BY day, event_type "
    "HAVING count(*) > 1)), count(*) FILTER (WHERE amount < 0) FROM daily_stats''').fetchone())"
)


def node_file(root: Path, audits: bool) -> None:
    sql = AGG.format(lo="{{ start }}", hi="{{ end }}")
    (root / "seeknal" / "transforms" / "daily_stats.yml").write_text(
        NODE.format(sql=sql) + (AUDITS if audits else ""))


CPU: dict[str, float] = {}  # best CPU seconds (user + system) per process variant


def process(key: str, args: list[str]) -> float:
    """Wall seconds of one whole process (its CPU seconds go to ``CPU``: on a shared
    machine, wall time includes waiting for a core)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True,
                          env={**os.environ, "SEEKNAL_NOW": "2024-01-01T00:00:00Z"})
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU[key] = min(CPU.get(key, float("inf")), cpu)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    # bytecode as an installed package has it, even under PYTHONDONTWRITEBYTECODE
    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "seeknal_core"), quiet=1)
    root = Path(tempfile.mkdtemp(prefix="seeknal-bench-audits-"))
    try:
        t = time.perf_counter()
        make_project(root, args.rows)
        print(f"generated {args.rows:,} events over 365 days in {time.perf_counter() - t:.1f} s")
        best = {k: float("inf") for k in ("plain", "audited", "plain1", "audited1", "audit", "query")}
        for _ in range(args.repeat):  # interleaved, best of N: the machine is noisy
            for audits, key in ((False, "plain"), (True, "audited")):
                node_file(root, audits)
                reset(root)
                best[key] = min(best[key], ours(root, None))
            for audits, key in ((False, "plain1"), (True, "audited1")):
                node_file(root, audits)
                reset(root)
                best[key] = min(best[key], ours(root, 1))
            # the audited table of the last backfill: 365 completed days
            db = str(root / "target" / "warehouse.duckdb")
            best["audit"] = min(best["audit"], process("audit", [SEEKNAL, "audit", "--project-path", str(root)]))
            best["query"] = min(best["query"], process("query", [sys.executable, "-c", PLAIN_CHECKS, db]))
        rows = [
            ("(a) backfill without audits, default batching", best["plain"], None, None),
            ("(a) backfill with the 3 audits, default batching", best["audited"],
             best["audited"] / best["plain"], 1.25),
            ("(a) backfill without audits, batch_size: 1", best["plain1"], None, None),
            ("(a) backfill with the 3 audits, batch_size: 1", best["audited1"],
             best["audited1"] / best["plain1"], 1.25),
            ("(b) python -c: the 3 checks in one plain query", best["query"], None, None),
            ("(b) seeknal audit over 365 completed days", best["audit"], best["audit"] / best["query"], 1.5),
        ]
        print(f"{'variant':52} {'seconds':>8} {'ratio':>7} {'target':>7}")
        for label, seconds, ratio, target in rows:
            r = f"{ratio:6.2f}x" if ratio else ""
            tgt = f"<={target}x {'ok' if ratio <= target else 'MISSED'}" if target else ""
            print(f"{label:52} {seconds:8.3f} {r:>7} {tgt}")
        print(f"(b) CPU seconds (user + system), best of {args.repeat}: seeknal audit {CPU['audit']:.3f}, "
              f"plain query {CPU['query']:.3f}: {CPU['audit'] / CPU['query']:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
