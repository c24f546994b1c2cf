"""SIGKILL during a Spark backfill: ``seeknal run --backfill`` (its own local[1] JVM) is
killed, process group and all, at a random point of its progress, ten times.  After
each kill no interval is recorded complete without exactly its rows, and a re-run
converges to the direct computation."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from spark_env import spark, subprocess_env  # noqa: F401
from test_spark_contract import HOURLY, direct, make, output

from seeknal_core import runner
from seeknal_core.project import load_project
from seeknal_core.state import open_store

#: its own xdist group: ten JVM start-ups dominate, so another worker runs it beside the
#: other Spark tests
pytestmark = pytest.mark.xdist_group("spark-crash")
TRIALS = 10


def _partitions(root: Path) -> int:
    return len(list((root / "target" / "data" / "hourly").glob("seeknal_interval=*")))


def _kill_after(root: Path, wanted: int) -> bool:
    """Start the backfill, SIGKILL it once ``wanted`` interval directories exist (or let
    it finish); True when it was killed."""
    seeknal = str(Path(sys.executable).parent / "seeknal")
    env = {**subprocess_env(), "SEEKNAL_NOW": "2024-01-03T00:00:00Z"}
    proc = subprocess.Popen([seeknal, "run", "--backfill", "--batch-size", "4", "--project-path", str(root)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    while proc.poll() is None and _partitions(root) < wanted:
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return killed


def test_sigkill_during_a_spark_backfill_never_completes_an_interval_without_its_rows(
        tmp_path, spark):  # noqa: F811
    rng = random.Random(14)
    killed = 0
    for trial in range(TRIALS):
        root = tmp_path / f"t{trial}"
        root.mkdir()
        project, store = make(root, "spark", days=2, nodes=HOURLY)
        (root / "seeknal_project.yml").write_text("name: c\nstart: 2024-01-01\nengine:\n  type: spark\n"
                                                  "  master: local[1]\n")
        store.close()
        killed += _kill_after(root, rng.randint(1, 40))
        project = load_project(root)
        store = open_store(project.root, project.state_config)
        expected = {r[0]: r for r in direct(root, "hourly")}
        got = {r[0]: r for r in output(root, "hourly")}
        for interval in store.completed("hourly"):
            hours = int((interval.end - interval.start).total_seconds() // 3600)
            for h in range(hours):
                key = f"{(interval.start.replace(tzinfo=None) + _hour(h)):%Y-%m-%d %H:%M:%S}"
                assert got.get(key) == expected[key], (trial, key)
        result = runner.run(project, store, mode="backfill", now="2024-01-03", batch_size=48)
        assert result.ok
        assert output(root, "hourly") == direct(root, "hourly")
        assert [(iv.start.isoformat(), iv.end.isoformat()) for iv in store.completed("hourly")] == [
            ("2024-01-01T00:00:00+00:00", "2024-01-03T00:00:00+00:00")]
        log = (root / "target" / "run_log.jsonl")
        assert all(json.loads(line) for line in log.read_text().splitlines())
        store.close()
    assert killed >= TRIALS // 2  # most trials really died mid-backfill


def _hour(h: int):
    import datetime as dt

    return dt.timedelta(hours=h)
