"""Helpers for the Dagster tests that go through the UI's GraphQL API: a small project with a
``definitions.py`` code location, the backfill mutation and status query, a daemon-less
backfill driver, and a ``dagster dev`` deployment started and stopped as subprocesses.

Nothing here is mocked: runs are real Dagster runs (step subprocesses, real instance
storage), the state store is the project's own and the warehouse is a DuckDB file.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster_graphql.client.query import LAUNCH_PARTITION_BACKFILL_MUTATION

BIN = Path(sys.executable).parent
DEFINITIONS = """\
from pathlib import Path

from seeknal_dagster import build_definitions

defs = build_definitions(Path(__file__).resolve().parent{options})
"""
WORKSPACE = """\
load_from:
  - python_file:
      relative_path: definitions.py
      attribute: defs
      location_name: {location}
      working_directory: .
"""

#: the mutation the UI's "Launch backfill" button sends (dagster_graphql's client copy of it)
LAUNCH_BACKFILL = LAUNCH_PARTITION_BACKFILL_MUTATION
BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill { id status numCancelable error { message } }
    ... on PythonError { message stack }
  }
}
"""
ASSET_PARTITION_STATS = """
query AssetPartitionStats($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode { partitionStats { numMaterialized numPartitions numFailed numMaterializing } }
  }
}
"""
BACKFILL_RUNS = """
query BackfillRuns($backfillId: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $backfillId}]}) {
    __typename
    ... on Runs { results { runId status assetSelection { path } tags { key value } } }
  }
}
"""
LOCATION_STATUS = """
query LocationStatus {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""
TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED", "FAILING",
            "CANCELING"}


def write_code_location(root: Path, location: str = "seeknal_test", options: str = "") -> Path:
    """``definitions.py`` (one ``build_definitions`` line, as the README says; ``options``:
    its keyword arguments, e.g. ``automation="none"``) and a ``workspace.yaml`` that loads
    it; returns the definitions file."""
    (root / "definitions.py").write_text(DEFINITIONS.format(options=f", {options}" if options else ""))
    (root / "workspace.yaml").write_text(WORKSPACE.format(location=location))
    return root / "definitions.py"


def backfill_params(assets: Sequence[str], partitions: Sequence[str], **extra: Any) -> dict[str, Any]:
    """``LaunchBackfillParams`` as the UI sends them: the selected assets and the partition
    keys of the root asset of the selection (its "anchor")."""
    return {"backfillParams": {"assetSelection": [{"path": [a]} for a in assets],
                               "partitionNames": list(partitions), **extra}}


def launched_backfill_id(data: dict[str, Any]) -> str:
    result = data["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


# -- a daemon-less backfill -------------------------------------------------------------------
#: How long a waiting test tolerates *no progress at all* (no run, status, materialisation
#: or log line changing) before it fails; a loaded machine slows progress, it does not stop it.
STALL_SECONDS = 600.0


#: the automation sensor's per-tick log lines, which say nothing about progress
HEARTBEAT = ("Prefetching asset records", "Done prefetching asset records")


class Progress:
    """Fails a wait only when nothing has moved for ``stall`` seconds, never at a fixed deadline."""

    def __init__(self, what: str, stall: float = STALL_SECONDS):
        self.what, self.stall = what, stall
        self.last, self.moved = None, time.monotonic()

    def observe(self, signature: Any, detail: str = "") -> None:
        if signature != self.last:
            self.last, self.moved = signature, time.monotonic()
            return
        idle = time.monotonic() - self.moved
        assert idle < self.stall, f"{self.what}: nothing moved for {idle:.0f} s ({signature}){detail}"


def drive_backfill(workspace_process_context, backfill_id: str, *, stall: float = STALL_SECONDS):
    """Run the backfill daemon's iterations until the backfill leaves REQUESTED.

    With the instance's synchronous run coordinator and launcher, every run the iteration
    submits executes to completion inside it (the run's steps still run in their own
    processes). Errors the daemon would only log fail here; so does an iteration that
    changes nothing (no new run, no status change) for ``stall`` seconds.
    """
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._daemon.backfill import execute_backfill_iteration

    instance = workspace_process_context.instance
    logger = logging.getLogger("seeknal.test.backfill")
    progress = Progress(f"backfill {backfill_id}", stall)
    iterations = 0
    while True:
        errors = [e for e in execute_backfill_iteration(workspace_process_context, logger) if e]
        assert not errors, errors[0].to_string()
        iterations += 1
        backfill = instance.get_backfill(backfill_id)
        if backfill.status != BulkActionStatus.REQUESTED:
            return backfill, iterations
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        progress.observe((str(backfill.status), sorted((r.run_id, str(r.status)) for r in runs)))


# -- `dagster dev` as subprocesses ------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


class DagsterDev:
    """``dagster dev`` (webserver, daemon, code server) over a workspace, on 127.0.0.1."""

    def __init__(self, workspace: Path, home: Path, port: int, log: Path):
        self.workspace, self.home, self.port, self.log_path = workspace, home, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "DAGSTER_HOME": str(self.home), "DAGSTER_DISABLE_TELEMETRY": "yes",
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("PYTEST_XDIST_WORKER", None)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-w", str(self.workspace), "-h", "127.0.0.1", "-p", str(self.port),
             "--log-level", "warning"],
            cwd=self.workspace.parent, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def activity(self) -> int:
        """Log lines that tell of work: the automation sensor writes two lines every tick
        whether or not anything moves, so they would make a stalled wait look busy forever."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if not any(h in line for h in HEARTBEAT))

    def graphql(self, query: str, variables: dict[str, Any] | None = None, timeout: float = 30.0) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        assert not payload.get("errors"), payload["errors"]
        return payload["data"]

    def wait_until_loaded(self, location: str, timeout: float) -> float:
        """Poll until the webserver answers and the code location is loaded; seconds taken.
        Fails when ``dagster dev`` exits or nothing (answer, log) changes for ``timeout`` s."""
        started = time.monotonic()
        progress = Progress("dagster dev start", timeout)
        last = "no answer"
        while True:
            size = self.activity()
            progress.observe((last, size), "\n" + self.log_tail())
            assert self.alive(), f"dagster dev exited ({self.proc.returncode}):\n{self.log_tail()}"
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                    if response.status == 200:
                        data = self.graphql(LOCATION_STATUS, timeout=10)["workspaceOrError"]
                        entries = {e["name"]: e for e in data.get("locationEntries", [])}
                        entry = entries.get(location)
                        last = json.dumps(entry)
                        if entry and entry["loadStatus"] == "LOADED":
                            error = entry["locationOrLoadError"]
                            assert error["__typename"] == "RepositoryLocation", error
                            return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                last = repr(exc)
            time.sleep(0.5)

    def wait_for_backfill(self, backfill_id: str, assets: Sequence[str] = (), *,
                          stall: float = STALL_SECONDS) -> dict[str, Any]:
        """Poll until the backfill is terminal; fail on ``dagster dev`` exiting or on nothing
        moving (backfill status, its runs, the assets' partition counts, the server log)
        for ``stall`` seconds.  Returns the last backfill status object."""
        progress = Progress(f"backfill {backfill_id}", stall)
        while True:
            assert self.alive(), self.log_tail()
            backfill = self.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})["partitionBackfillOrError"]
            assert backfill["__typename"] == "PartitionBackfill", backfill
            if backfill["status"] in TERMINAL:
                return backfill
            runs = self.graphql(BACKFILL_RUNS, {"backfillId": backfill_id})["runsOrError"].get("results", [])
            stats = [self.graphql(ASSET_PARTITION_STATS, {"assetKey": {"path": [a]}})["assetNodeOrError"]
                     .get("partitionStats") for a in assets]
            size = self.activity()
            progress.observe((backfill["status"], sorted((r["runId"], r["status"]) for r in runs), stats, size),
                             "\n" + self.log_tail())
            time.sleep(1.0)

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM to the process group (webserver, daemon, code server, run workers), wait,
        then SIGKILL whatever is left; the exit code of ``dagster dev``."""
        if self.proc is None:
            return None
        pgid = self.proc.pid  # start_new_session: the group id is dagster dev's pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + grace
        while group_alive(pgid) and time.monotonic() < deadline:  # children shut down after it
            time.sleep(0.2)
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies of already-exited members still count for killpg: look for live members
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@contextmanager
def dagster_dev(workspace: Path, home: Path, *, location: str, ready_timeout: float = 300.0
                ) -> Iterator[DagsterDev]:
    """A running ``dagster dev``; always stopped on exit, and its port released."""
    server = DagsterDev(workspace, home, free_port(), home / "dagster_dev.log")
    server.start()
    try:
        server.ready_seconds = server.wait_until_loaded(location, ready_timeout)
        yield server
    finally:
        server.stop()
