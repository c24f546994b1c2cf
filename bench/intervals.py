"""Pending-interval computation: seeknal_core vs Dagster's partition keys vs a croniter loop.

Each side does what its caller does: ours builds the calculator and passes the completed
intervals as the seed's list of ``(start, end)`` datetime tuples (so their conversion is
timed); Dagster builds the partitions definition and lists its keys.  Both run the same
number of times, alternating, in one process; rows print medians and their ratio.
Run: `make bench` (or `.venv/bin/python bench/intervals.py [runs]`).
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from zoneinfo import ZoneInfo

from croniter import croniter

from seeknal_core import create_interval_calculator

START = dt.datetime(2014, 1, 1)
RUNS = 5


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def seeknal(cron, tz, years, completed):
    calc = create_interval_calculator(cron, tz)
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


def every_other(grid):
    """Every other interval of the grid, as the seed's (start, end) UTC datetime tuples."""
    return [(a.astimezone(dt.UTC), b.astimezone(dt.UTC)) for a, b in grid[::2]]


CASES = [
    ("(a) hourly UTC 10y, none done", "0 * * * *", "UTC", 10, False),
    ("(b) hourly UTC 10y, every other hour done", "0 * * * *", "UTC", 10, True),
    ("(c) hourly America/New_York 10y", "0 * * * *", "America/New_York", 10, False),
    ("(c2) hourly New York 10y, every other hour done", "0 * * * *", "America/New_York", 10, True),
    ("(d) 0 */6 * * * New York 10y", "0 */6 * * *", "America/New_York", 10, False),
    ("(e) daily UTC 30y", "0 0 * * *", "UTC", 30, False),
]
TARGETS = {"(a)": 20, "(b)": 20, "(c)": 20, "(c2)": 20, "(d)": 5, "(e)": 10}


def main(runs: int = RUNS) -> None:
    print(f"medians of {runs} alternating runs per side")
    print(f"{'case':50} {'ours ms':>9} {'dagster ms':>11} {'croniter ms':>12} "
          f"{'x dagster':>10} {'x croniter':>11} {'target':>7}  pending")
    for label, cron, tz, years, half_done in CASES:
        t_cron, grid = timed(croniter_loop, cron, tz, years)
        completed = every_other(grid) if half_done else []
        ours, theirs = [], []
        for _ in range(runs):
            t, pending = timed(seeknal, cron, tz, years, completed)
            ours.append(t)
            t, keys = timed(dagster_keys, cron, tz, years)
            theirs.append(t)
        t_ours, t_dag = statistics.median(ours), statistics.median(theirs)
        expected = len(grid) - len(completed)
        assert len(pending) == expected, (label, len(pending), expected)
        target = TARGETS[label.split()[0]]
        verdict = "ok" if t_dag / t_ours >= target else "MISSED"
        print(f"{label:50} {t_ours * 1e3:9.1f} {t_dag * 1e3:11.1f} {t_cron * 1e3:12.1f} "
              f"{t_dag / t_ours:9.1f}x {t_cron / t_ours:10.1f}x {target:>5}x {verdict} {len(pending)}"
              f" (dagster keys {len(keys)})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else RUNS)
