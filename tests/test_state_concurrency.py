"""JsonStateStore under concurrent writers and writers killed with SIGKILL mid-write."""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import signal
import sys
import time
from pathlib import Path

import pytest
from test_state_workers import hour, looping_writer, start_and_join, writer

from seeknal_core import IntervalSet
from seeknal_core.state import JsonStateStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process semantics")

PROCS, MUTATIONS = 8, 200


def test_concurrent_writers_lose_no_update(tmp_path):
    path = tmp_path / "target" / "run_state.json"
    ctx = mp.get_context("spawn")
    gate = ctx.Barrier(PROCS)
    procs = [ctx.Process(target=writer, args=(str(path), p, MUTATIONS, gate))
             for p in range(PROCS)]
    start_and_join(procs)

    doc = json.loads(path.read_text())  # the file parses
    assert doc["revision"] == PROCS * MUTATIONS
    store = JsonStateStore(path)
    expected = [
        hour(2 * (p * MUTATIONS + j)) for p in range(PROCS) for j in range(MUTATIONS) if j % 10 != 9
    ]
    assert list(store.completed("shared")) == sorted(expected)
    for p in range(PROCS):
        failed = store.node(f"own_{p}").failed
        assert len(failed) == MUTATIONS // 10 and all(f.attempts == 1 for f in failed)

    records = [json.loads(line) for line in store.log_path.read_text().splitlines()]
    assert sorted(r["revision"] for r in records) == list(range(1, PROCS * MUTATIONS + 1))
    assert {r["run_id"] for r in records if r["event"] == "complete"} == {
        f"{p}-{j}" for p in range(PROCS) for j in range(MUTATIONS) if j % 10 != 9
    }
    assert [c.revision for c in store.changes_since(0)] == list(range(1, PROCS * MUTATIONS + 1))


def test_writer_killed_at_random_points_never_leaves_an_unreadable_file(tmp_path):
    path = tmp_path / "target" / "run_state.json"
    ctx = mp.get_context("forkserver")  # fork from a clean, pre-imported server: fast starts
    ctx.set_forkserver_preload(["seeknal_core.state"])
    acked = ctx.Value("q", 0, lock=False)  # a lock held by a killed writer would hang us
    rng = random.Random(11)
    deadline = time.monotonic() + 50
    trials = 0
    while trials < 200 and time.monotonic() < deadline:
        started = ctx.Event()
        proc = ctx.Process(target=looping_writer, args=(str(path), acked, started))
        proc.start()
        assert started.wait(10)
        time.sleep(rng.uniform(0, 0.02))
        proc.kill()  # SIGKILL
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
        trials += 1

        if not path.exists():  # killed before its first write: the previous state is "none"
            assert acked.value == 0
            continue
        doc = json.loads(path.read_bytes())  # never torn
        store = JsonStateStore(path)
        state = store.load()  # never "corrupt"
        assert store.revision == doc["revision"] >= acked.value, "an acknowledged write was lost"
        assert all(isinstance(s.completed, IntervalSet) for s in state.values())
    assert trials >= 100, f"only {trials} trials ran in time"

    # the next writer repairs the audit log: every revision is there, whole
    store = JsonStateStore(path)
    store.mark_complete("after", [hour(0)])
    lines = store.log_path.read_text().splitlines()
    revisions = set()
    for line in lines:
        try:
            revisions.add(json.loads(line)["revision"])
        except ValueError:
            pass  # SIGKILL cannot tear a single write(2), but stay lenient
    assert revisions == set(range(1, store.revision + 1))
    assert [c.revision for c in store.changes_since(0)][-1] == store.revision
    leftovers = [p.name for p in Path(path.parent).iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "temp files of killed writers are swept"
