"""Pending-interval computation: seeknal_core vs Dagster's partition keys vs a croniter loop.

All three enumerate the same grid in one process; each row prints the ratios.
Run: `make bench` (or `.venv/bin/python bench/intervals.py`).
"""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

from croniter import croniter

from seeknal_core import IntervalSet, create_interval_calculator

START = dt.datetime(2014, 1, 1)


def best_of(fn, *args, repeat=3):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, result


def seeknal(cron, tz, years, completed):
    calc = create_interval_calculator(cron, tz)  # construction counted, as a caller pays it
    end = START.replace(year=START.year + years)
    return calc.get_pending_intervals(completed, START, end)


def dagster_keys(cron, tz, years):
    from dagster import TimeWindowPartitionsDefinition

    fmt = "%Y-%m-%d" if cron == "0 0 * * *" else "%Y-%m-%d-%H:%M"
    pdef = TimeWindowPartitionsDefinition(
        start=START, end=START.replace(year=START.year + years), fmt=fmt,
        cron_schedule=cron, timezone=tz,
    )
    return pdef.get_partition_keys(current_time=START.replace(year=START.year + years))


def croniter_loop(cron, tz, years):
    zone = ZoneInfo(tz)
    end = START.replace(year=START.year + years, tzinfo=zone)
    it = croniter(cron, START.replace(tzinfo=zone) - dt.timedelta(seconds=1))
    out, prev = [], it.get_next(dt.datetime)
    while prev < end:
        nxt = it.get_next(dt.datetime)
        out.append((prev, nxt))
        prev = nxt
    return out


def every_other_hour(years):
    base = START.replace(tzinfo=dt.UTC)
    hours = int((START.replace(year=START.year + years) - START).total_seconds() // 3600)
    return [(base + dt.timedelta(hours=h), base + dt.timedelta(hours=h + 1)) for h in range(0, hours, 2)]


CASES = [
    ("(a) hourly UTC 10y, none done", "0 * * * *", "UTC", 10, lambda: []),
    ("(b) hourly UTC 10y, every other hour done", "0 * * * *", "UTC", 10, lambda: every_other_hour(10)),
    ("(c) hourly America/New_York 10y", "0 * * * *", "America/New_York", 10, lambda: []),
    ("(d) 0 */6 * * * New York 10y", "0 */6 * * *", "America/New_York", 10, lambda: []),
    ("(e) daily UTC 30y", "0 0 * * *", "UTC", 30, lambda: []),
]
TARGETS = {"(a)": 20, "(b)": 20, "(c)": 20, "(d)": 5, "(e)": 10}


def main() -> None:
    print(f"{'case':44} {'ours ms':>9} {'dagster ms':>11} {'croniter ms':>12} "
          f"{'x dagster':>10} {'x croniter':>11} {'target':>7}  pending")
    for label, cron, tz, years, completed_fn in CASES:
        completed = IntervalSet(completed_fn())  # as the state store hands it over
        t_ours, pending = best_of(seeknal, cron, tz, years, completed, repeat=7)
        t_dag, keys = best_of(dagster_keys, cron, tz, years, repeat=2)
        t_cron, grid = best_of(croniter_loop, cron, tz, years, repeat=1)
        expected = len(grid) - len(completed)
        assert len(pending) == expected, (label, len(pending), expected)
        target = TARGETS[label[:3]]
        verdict = "ok" if t_dag / t_ours >= target else "MISSED"
        print(f"{label:44} {t_ours * 1e3:9.1f} {t_dag * 1e3:11.1f} {t_cron * 1e3:12.1f} "
              f"{t_dag / t_ours:9.1f}x {t_cron / t_ours:10.1f}x {target:>5}x {verdict} {len(pending)}"
              f" (dagster keys {len(keys)})")


if __name__ == "__main__":
    main()
