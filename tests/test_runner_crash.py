"""A backfill killed with SIGKILL at random moments never leaves state that claims an
interval whose rows are not committed, and the next run converges to the exact result."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid

import duckdb
from conftest import drop_schema
from test_cli import make_project as cli_project
from test_cli import seeknal
from test_plan import HOURLY, READERS, edit_hourly
from test_runner import HOURLY_DAILY, expected_rows, make_project, open_all, table_rows

from seeknal_core import runner
from seeknal_core.state import PostgresStateStore

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


# -- seeknal plan --apply killed at every store write --------------------------------------------
# The child runs the real CLI; after every state mutation it reads the store's revision (the state
# file, or the database) and kills itself with SIGKILL once the revision reaches the target: a
# kill at each write in turn, decided by what is recorded, not by timing.
KILL_AT_REVISION = """
import os, signal, sys
from seeknal_core.state.common import StoreBase
target = int(sys.argv[1])
def killing(name):
    original = getattr(StoreBase, name)
    def after(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if self.revision >= target:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(StoreBase, name, after)
for name in ("mark_complete", "mark_complete_many", "mark_failed", "restate", "record_plan",
             "set_fingerprint", "set_inferred_start", "resolve_restatement", "record_execution"):
    if hasattr(StoreBase, name):
        killing(name)
from seeknal_core.cli import main
main(sys.argv[2:])
"""
APPLY_NOW = "2024-01-10T00:00:00Z"


def _apply_project(root, settings: str = ""):
    return cli_project(root, HOURLY, READERS, days=9, settings=settings)


def _tables(root) -> dict:
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"), read_only=True)
    try:
        return {n: con.execute(f'SELECT * FROM "{n}" ORDER BY ALL').fetchall()
                for n in ("hourly", "daily", "daily_users", "weekly")}
    finally:
        con.close()


def _cli(root, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return seeknal(*args, "-p", str(root), now=APPLY_NOW, extra_env=env)


def _kill_trials(tmp_path, backend: str, pg_dsn: str | None = None) -> None:
    """Back up a backfilled project, then per write k of `seeknal plan --apply`: restore, kill the
    apply once the store reaches its k-th revision, recover (`plan --apply`, then `run`) and
    compare every table with the project computed from nothing with the new SQL."""
    env = {"SEEKNAL_STATE_DSN": pg_dsn} if pg_dsn else {}
    fresh = _apply_project(tmp_path / "fresh")
    edit_hourly(fresh, "AND v > 0", "AND v > 50")
    assert _cli(fresh, "run", "--backfill").returncode == 0
    expected = _tables(fresh)

    schemas: list[str] = []

    def project_at(path):
        if backend == "json":
            return _apply_project(path)
        schemas.append(f"t_{uuid.uuid4().hex[:12]}")
        return _apply_project(path, settings=f"state:\n  backend: postgres\n  schema: {schemas[-1]}\n")

    base = project_at(tmp_path / "base")
    assert _cli(base, "run", "--backfill", env=env).returncode == 0
    edit_hourly(base, "AND v > 0", "AND v > 50")
    if backend == "json":
        snapshot = None
        start = json.loads((base / "target" / "run_state.json").read_text())["revision"]
    else:
        with PostgresStateStore(pg_dsn, schema=schemas[-1]) as store:
            snapshot, start = store.export(), store.revision
    kills: list[int] = []
    k = 1
    try:
        while True:
            root = tmp_path / f"trial{k}"
            shutil.copytree(base, root, ignore=shutil.ignore_patterns("project_cache.json"))
            if backend == "postgres":
                text = (root / "seeknal_project.yml").read_text().replace(schemas[0], f"t_{k}_{schemas[0]}")
                (root / "seeknal_project.yml").write_text(text)
                schemas.append(f"t_{k}_{schemas[0]}")
                with PostgresStateStore(pg_dsn, schema=schemas[-1]) as store:
                    store.import_(snapshot)
            child = subprocess.run(
                [sys.executable, "-c", KILL_AT_REVISION, str(start + k), "plan", "--apply", "-p", str(root)],
                env={**os.environ, "PYTHONPATH": os.getcwd(), "SEEKNAL_NOW": APPLY_NOW, **env},
                capture_output=True, text=True, timeout=300)
            if child.returncode == 0:
                break  # the apply made fewer than k writes: every write has been a kill point
            assert child.returncode == -signal.SIGKILL, child.stderr
            if backend == "json":
                reached = json.loads((root / "target" / "run_state.json").read_text())["revision"]
            else:
                with PostgresStateStore(pg_dsn, schema=schemas[-1]) as store:
                    reached = store.revision
            kills.append(reached - start)
            again = _cli(root, "plan", "--apply", env=env)
            assert again.returncode == 0, (k, again.stdout, again.stderr)
            assert _cli(root, "run", env=env).returncode == 0
            assert _tables(root) == expected, f"kill at write {k}: recovery did not converge\n{again.stdout}"
            plan = json.loads(_cli(root, "plan", "--json", env=env).stdout)
            assert plan["total_intervals"] == 0 and plan["pending_intervals"] == 0, k
            shutil.rmtree(root)
            k = reached - start + 1  # one mutation may make several revisions (record_plan)
    finally:
        if pg_dsn:
            for schema in schemas:
                drop_schema(pg_dsn, schema)
    assert len(kills) >= 3, kills  # the recording write and several writes of the run phase


def test_plan_apply_killed_at_every_store_write_converges_json(tmp_path):
    _kill_trials(tmp_path, "json")


def test_plan_apply_killed_at_every_store_write_converges_postgres(tmp_path, pg_dsn):
    _kill_trials(tmp_path, "postgres", pg_dsn)
