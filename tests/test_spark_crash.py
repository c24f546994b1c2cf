"""SIGKILL during a Spark backfill: ``seeknal run --backfill`` (its own local[1] JVM) is
killed, process group and all, ten times, at a random point of its progress, told by
what it leaves on disk: half the trials once k intervals' directories are committed (a
kill between a batch's data and its state record, or inside a commit), half while a
later batch's write is in flight (a ``.spark-staging-*`` directory exists).  After each
kill no interval is recorded complete without exactly its rows, and a re-run converges
to the direct computation.

Each trial's JVM starts from a class-data archive of Spark's classes (dumped by one short
uninterrupted backfill first) and with the client compiler only, so a trial costs a
third of a cold JVM start; every kill still lands in a real backfill's own JVM."""

from __future__ import annotations

import datetime as dt
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

#: its own xdist group: its JVM start-ups dominate, so another worker runs it beside the
#: other Spark tests
pytestmark = pytest.mark.xdist_group("spark-crash")
TRIALS = 10
SEEKNAL = str(Path(sys.executable).parent / "seeknal")


def _setup(root: Path, java_options: str) -> Path:
    """The trial project: one hourly Spark node over two days of raw files, local[1]."""
    root.mkdir()
    make(root, "spark", days=2, nodes=HOURLY)[1].close()
    (root / "seeknal_project.yml").write_text(
        "name: c\nstart: 2024-01-01\nengine:\n  type: spark\n  master: local[1]\n  conf:\n"
        f"    spark.driver.extraJavaOptions: \"{java_options}\"\n    spark.sql.shuffle.partitions: 2\n")
    return root


def _backfill(root: Path, now: str = "2024-01-03T00:00:00Z") -> subprocess.Popen:
    env = {**subprocess_env(), "SEEKNAL_NOW": now}
    return subprocess.Popen([SEEKNAL, "run", "--backfill", "--batch-size", "4", "--project-path", str(root)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _class_archive(tmp_path: Path) -> Path:
    """Spark's classes as loaded by a short backfill, dumped when its JVM exits."""
    archive = tmp_path / "spark-classes.jsa"
    proc = _backfill(_setup(tmp_path / "archive", f"-XX:ArchiveClassesAtExit={archive}"),
                     now="2024-01-01T08:00:00Z")
    _, err = proc.communicate()
    assert proc.returncode == 0 and archive.is_file(), err.decode()[-500:]
    return archive


def _on_disk(root: Path) -> tuple[int, bool]:
    """(interval directories committed, whether a write is in flight)."""
    try:
        names = os.listdir(root / "target" / "data" / "hourly")
    except FileNotFoundError:
        return 0, False
    return (sum(n.startswith("seeknal_interval=") for n in names),
            any(n.startswith(".spark-staging-") for n in names))


def _kill_at(proc: subprocess.Popen, root: Path, committed: int, writing: bool) -> bool:
    """SIGKILL the backfill once ``committed`` interval directories exist (and, with
    ``writing``, a later batch's write is in flight), or let it finish; True when killed."""
    while proc.poll() is None:
        done, in_flight = _on_disk(root)
        if done >= committed and (in_flight or not writing):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    proc.stderr.close()
    return proc.returncode == -signal.SIGKILL


def test_sigkill_during_a_spark_backfill_never_completes_an_interval_without_its_rows(
        tmp_path, spark):  # noqa: F811
    rng = random.Random(14)
    archive = _class_archive(tmp_path)
    java_options = f"-XX:SharedArchiveFile={archive} -XX:TieredStopAtLevel=1"
    killed = {False: 0, True: 0}  # by kill point: committed directories / a write in flight
    try:
        for trial in range(TRIALS):
            root = _setup(tmp_path / f"t{trial}", java_options)
            writing = trial % 2 == 1
            killed[writing] += _kill_at(_backfill(root), root, rng.randint(1, 40), writing)
            _check_and_rerun(root, trial)
    finally:
        archive.unlink()
    assert min(killed.values()) >= TRIALS // 2 - 1, killed  # nearly every trial really died mid-backfill


def _check_and_rerun(root: Path, trial: int) -> None:
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    expected = {r[0]: r for r in direct(root, "hourly")}
    got = {r[0]: r for r in output(root, "hourly")}
    for interval in store.completed("hourly"):
        hours = int((interval.end - interval.start).total_seconds() // 3600)
        for h in range(hours):
            key = f"{(interval.start.replace(tzinfo=None) + dt.timedelta(hours=h)):%Y-%m-%d %H:%M:%S}"
            assert got.get(key) == expected[key], (trial, key)
    result = runner.run(project, store, mode="backfill", now="2024-01-03", batch_size=48)
    assert result.ok
    assert output(root, "hourly") == direct(root, "hourly")
    assert [(iv.start.isoformat(), iv.end.isoformat()) for iv in store.completed("hourly")] == [
        ("2024-01-01T00:00:00+00:00", "2024-01-03T00:00:00+00:00")]
    log = (root / "target" / "run_log.jsonl")
    assert all(json.loads(line) for line in log.read_text().splitlines())
    store.close()
