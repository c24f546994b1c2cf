"""What audits cost, side by side in one run, on bench/runner.py's workload (10M events over
365 days, the daily aggregate `daily_stats`, grain (day, event_type)):

(a) the backfill with not_null + unique on the grain + accepted_range, vs the same backfill
    without audits (in-process, default batching and batch_size: 1);
(b) `seeknal audit` over the 365 completed days (a whole process), vs a plain `python -c`
    opening the DuckDB file and computing the same three checks over the whole table in one
    query (the fixed cost of a process that imports duckdb is in both).

The workload and its timing: bench/workload.py.

Run: .venv/bin/python bench/audits.py [--rows N] [--repeat N]
"""

from __future__ import annotations

import compileall
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from workload import SEEKNAL, Best, arguments, backfill, process, project_dir, report, reset, write_node  # noqa: E402

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


def main() -> None:
    args = arguments()
    # bytecode as an installed package has it, even under PYTHONDONTWRITEBYTECODE
    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "seeknal_core"), quiet=1)
    with project_dir("seeknal-bench-audits-", args.rows) as root:
        best, cpu = Best(), Best()  # wall and CPU seconds
        for _ in range(args.repeat):  # interleaved, best of N: the machine is noisy
            for batch_size, suffix in ((None, ""), (1, "1")):
                for audits, key in ((False, "plain"), (True, "audited")):
                    write_node(root, AUDITS if audits else "")
                    reset(root)
                    done = backfill(root, batch_size)
                    best.add(key + suffix, done.seconds)
                    cpu.add(key + suffix, done.cpu)
            # the audited table of the last backfill: 365 completed days
            db = str(root / "target" / "warehouse.duckdb")
            for key, command in (("audit", [SEEKNAL, "audit", "--project-path", str(root)]),
                                 ("query", [sys.executable, "-c", PLAIN_CHECKS, db])):
                wall, seconds = process(command)
                best.add(key, wall)
                cpu.add(key, seconds)
        report([
            ("(a) backfill without audits, default batching", best["plain"], None, None),
            ("(a) backfill with the 3 audits, default batching", best["audited"],
             best["audited"] / best["plain"], 1.25),
            ("(a) backfill without audits, batch_size: 1", best["plain1"], None, None),
            ("(a) backfill with the 3 audits, batch_size: 1", best["audited1"],
             best["audited1"] / best["plain1"], 1.25),
            ("(b) python -c: the 3 checks in one plain query", best["query"], None, None),
            ("(b) seeknal audit over 365 completed days", best["audit"], best["audit"] / best["query"], 1.5),
        ], 52)
        print(f"(a) CPU seconds, best of {args.repeat}: batch_size 1 with audits {cpu['audited1']:.3f}, "
              f"without {cpu['plain1']:.3f}: {cpu['audited1'] / cpu['plain1']:.2f}x; "
              f"per transaction +{(cpu['audited1'] - cpu['plain1']) / 365 * 1e3:.2f} ms CPU, "
              f"+{(best['audited1'] - best['plain1']) / 365 * 1e3:.2f} ms wall")
        print(f"(b) CPU seconds (user + system), best of {args.repeat}: seeknal audit {cpu['audit']:.3f}, "
              f"plain query {cpu['query']:.3f}: {cpu['audit'] / cpu['query']:.2f}x")


if __name__ == "__main__":
    main()
