"""A backfill killed with SIGKILL at random moments never leaves state that claims an
interval whose rows are not committed, and the next run converges to the exact result."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from test_runner import HOURLY_DAILY, expected_rows, make_project, open_all, table_rows

from seeknal_core import runner

BACKFILL = """
import sys
from seeknal_core import runner
from seeknal_core.project import load_project
from seeknal_core.state import open_store
project = load_project(sys.argv[1])
store = open_store(project.root, project.state_config)
class Ready(runner.Progress):
    def batch_finished(self, *args, **kwargs):
        print("ready", flush=True)  # writing has begun: the kill lands mid-backfill
runner.run(project, store, mode="backfill", now="2024-01-06", batch_size=1, progress=Ready())
print("ready", flush=True)
"""


def test_sigkill_during_backfill_never_claims_uncommitted_rows(tmp_path):
    rnd = random.Random(7)
    root = make_project(tmp_path, HOURLY_DAILY, days=5)
    project, store = open_all(root)
    killed = 0
    for trial in range(20):
        proc = subprocess.Popen([sys.executable, "-c", BACKFILL, str(root)], stdout=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rnd.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        for name, column in (("hourly", "hour"), ("rollup", "day")):
            members = " OR ".join(
                f"({column} >= TIMESTAMP '{iv.start:%Y-%m-%d %H:%M:%S}' "
                f"AND {column} < TIMESTAMP '{iv.end:%Y-%m-%d %H:%M:%S}')"
                for iv in store.completed(name)) or "false"
            assert table_rows(root, name, members) == expected_rows(root, project, store, name), (
                f"trial {trial}: state of {name} claims rows that are not there")
    assert killed >= 15  # the kills landed while the backfill was writing
    result = runner.run(project, store, mode="backfill", now="2024-01-06")
    assert result.ok
    assert len(store.completed("hourly")) == 1 and len(store.completed("rollup")) == 1
    for name in ("hourly", "rollup"):
        assert table_rows(root, name, "true") == expected_rows(root, project, store, name)
