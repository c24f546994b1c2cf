"""Worker processes and their launcher for test_state_concurrency and test_state_postgres (no tests here).

Kept free of pytest imports so a forked or spawned child starts in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import random

from seeknal_core import Interval
from seeknal_core.state import JsonStateStore

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def hour(i: int) -> Interval:
    return Interval(T0 + dt.timedelta(hours=i), T0 + dt.timedelta(hours=i + 1))


def start_and_join(procs) -> None:
    """Start every process, then wait for each: all must exit cleanly."""
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0


def writer(path: str, proc: int, count: int, start_gate) -> None:
    """``count`` mutations by writer ``proc``; even hours only, so no two writers'
    intervals touch and every one of them stays visible after merging."""
    store = JsonStateStore(path)
    start_gate.wait()
    for j in range(count):
        i = 2 * (proc * count + j)
        if j % 10 == 9:
            store.mark_failed(f"own_{proc}", [hour(i)], f"boom {proc}/{j}")
        else:
            store.mark_complete("shared", [hour(i)], origin="backfill", run_id=f"{proc}-{j}")


def looping_writer(path: str, acked, started) -> None:
    """Mutate until killed; ``acked`` holds the revision of the last mutation that returned."""
    store = JsonStateStore(path)
    rng = random.Random()
    started.set()
    while True:
        i = rng.randrange(0, 24 * 365)
        kind = rng.random()
        if kind < 0.7:
            rev = store.mark_complete(f"n{i % 5}", [hour(i)], origin="run", rows=i)
        elif kind < 0.9:
            rev = store.mark_failed(f"n{i % 5}", [hour(i)], "boom")
        else:
            store.restate({f"n{i % 5}": [hour(i)], "down": [hour(i)]}, "killed-writer test")
            rev = store.revision
        acked.value = rev
