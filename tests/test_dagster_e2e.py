"""End to end through a real ``dagster dev``: webserver, daemon and code server as
subprocesses on 127.0.0.1, a partition backfill launched over HTTP with the UI's GraphQL
mutation, run by the daemons (queued run coordinator, default run launcher, multiprocess
executor, the ``seeknal_duckdb`` pool limited to one writer), then checked in Dagster, in
seeknal's state and in DuckDB; the processes are stopped by their group and the port freed.
Without a click, seeknal's automation sensor requests the latest finished day, and a CLI
restatement turns its partitions Failed (a run the restatement sensor requests and the
daemon launches) until the automation condition recomputes them.

Slow by nature (the backfill daemon iterates every 30 s): one test, which waits on
progress and fails only when nothing moves for minutes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_harness import (
    ASSET_PARTITION_STATS,
    BACKFILL_RUNS,
    LAUNCH_BACKFILL,
    Progress,
    backfill_params,
    dagster_dev,
    group_alive,
    launched_backfill_id,
    listening,
    write_code_location,
)
from test_dagster_assets import make_project, one_shot, query, store_of, t

from seeknal_core.intervals import IntervalSet

CHAIN = """
events_daily:
  schedule: "@daily"
  end: 2024-01-07
  sql: |
    SELECT CAST(date_trunc('day', ts) AS TIMESTAMP) AS day, count(*) AS n, sum(v) AS v FROM raw
    WHERE ts >= TIMESTAMP '{{ start }}' AND ts < TIMESTAMP '{{ end }}'
    GROUP BY ALL
  time_column: day
events_rollup:
  schedule: "@daily"
  end: 2024-01-07
  sql: |
    SELECT day, n, v, v / n AS mean_v FROM {{ ref('events_daily') }}
    WHERE day >= TIMESTAMP '{{ start }}' AND day < TIMESTAMP '{{ end }}'
  time_column: day
"""
DAGSTER_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1        # DuckDB: one writing process per database file
  runs:
    max_concurrent_runs: 2
"""
LOCATION = "seeknal_e2e"
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
LATEST = "2024-01-06"  # the last finished day before the nodes' end: the automation's
ALL_RUNS = """
query AllRuns {
  runsOrError {
    __typename
    ... on Runs { results { runId status assetSelection { path } tags { key value } } }
  }
}
"""
READY_TIMEOUT = 300.0  # of no progress at all, not of start-up time
BIN = Path(sys.executable).parent


def partition_stats(server) -> dict[str, dict]:
    return {name: server.graphql(ASSET_PARTITION_STATS, {"assetKey": {"path": [name]}})
            ["assetNodeOrError"]["partitionStats"] for name in ("events_daily", "events_rollup")}


def wait_for(server, what: str, look: Callable[[], Any], ready: Callable[[Any], bool]) -> Any:
    """Poll ``look()`` until ``ready`` holds; fail when neither it nor the server log moves
    for long (the daemons tick every 30 s), never at a fixed deadline."""
    progress = Progress(what)
    while True:
        assert server.alive(), server.log_tail()
        found = look()
        if ready(found):
            return found
        size = server.activity()
        progress.observe((repr(found), size), "\n" + server.log_tail())
        time.sleep(1.0)


def wait_for_stats(server, ready: Callable[[dict], bool]) -> dict:
    return wait_for(server, "the automation's runs", lambda: partition_stats(server), ready)


def test_dagster_dev_runs_a_ui_backfill_end_to_end(tmp_path: Path) -> None:
    started = time.monotonic()
    root = make_project(tmp_path / "proj", CHAIN, days=7)
    write_code_location(root, LOCATION, "sensor_interval_seconds=5")  # ticks every 5 s: the waits end sooner
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)

    with dagster_dev(root / "workspace.yaml", home, location=LOCATION, ready_timeout=READY_TIMEOUT) as server:
        data = server.graphql(LAUNCH_BACKFILL, backfill_params(["events_daily", "events_rollup"], DAYS))
        backfill_id = launched_backfill_id(data)
        backfill = server.wait_for_backfill(backfill_id, ["events_daily", "events_rollup"])
        status = backfill["status"]
        assert status == "COMPLETED_SUCCESS", (status, backfill.get("error"), server.log_tail())
        runs = server.graphql(BACKFILL_RUNS, {"backfillId": backfill_id})["runsOrError"]["results"]
        # no click: the automation sensor requests the latest finished day of both
        stats = wait_for_stats(server, lambda s: all(v["numMaterialized"] == 6 for v in s.values()))
        # a CLI restatement: Failed through a run the daemon launches, then recomputed
        restate = subprocess.run(
            [str(BIN / "seeknal"), "intervals", "restate", "-p", str(root), "--node", "events_daily",
             "--start", "2024-01-03", "--end", "2024-01-04", "--reason", "late data"],  # 2 days
            capture_output=True, text=True, timeout=120)
        assert restate.returncode == 0, restate.stderr
        shown = wait_for(server, "the restatement shown Failed", lambda: [
            r for r in server.graphql(ALL_RUNS)["runsOrError"]["results"]
            if r["status"] == "FAILURE" and any(t["key"] == "seeknal/restatement" for t in r["tags"])],
            lambda found: len(found) == 2)
        wait_for(server, "the restatement recomputed", lambda: (store_of(root).pending_restatements(),
                                                                 partition_stats(server)),
                 lambda found: not found[0] and all(v["numFailed"] == 0 and v["numMaterialized"] == 6
                                                    for v in found[1].values()))
        port, pgid = server.port, server.proc.pid
        done = time.monotonic()
    stopped = time.monotonic()

    # the restatement's runs: one per asset, the restated days only, failed with the reason
    assert sorted(r["assetSelection"][0]["path"][0] for r in shown) == ["events_daily", "events_rollup"]
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        for run in shown:
            tags = instance.get_run_by_id(run["runId"]).tags
            assert tags["seeknal/reason"].startswith("late data") and tags["dagster/max_retries"] == "0"
            # one run for the range (the CLI's end date is inclusive: two days)
            assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
                "2024-01-03", "2024-01-04")
            # the restated days were planned by the failed run: Dagster drew them Failed until recomputed
            planned = [e for e in instance.all_logs(run["runId"]) if e.dagster_event and
                       e.dagster_event.event_type_value == "ASSET_MATERIALIZATION_PLANNED"]
            assert {e.dagster_event.event_specific_data.partition for e in planned} == {"2024-01-03", "2024-01-04"}
            [failure] = [e for e in instance.all_logs(run["runId"]) if e.dagster_event and
                         e.dagster_event.is_step_failure]
            assert "restated: late data" in failure.dagster_event.step_failure_data.error.message
    finally:
        instance.dispose()

    # stopped: dagster dev and every process of its group are gone, nothing listens any more
    assert server.proc.returncode is not None and not group_alive(pgid)
    assert not listening(port)

    # same partitions, single-run backfill policy: one run for both assets over the whole range
    [run] = runs
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert run["status"] == "SUCCESS" and sorted(k["path"][0] for k in run["assetSelection"]) == [
        "events_daily", "events_rollup"]
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
        DAYS[0], DAYS[-1])
    for name in ("events_daily", "events_rollup"):
        assert stats[name]["numMaterialized"] == len(DAYS) + 1 and stats[name]["numFailed"] == 0, stats
    store = store_of(root)
    for node in ("events_daily", "events_rollup"):
        assert store.completed(node) == IntervalSet([(t(2024, 1, 1), t(2024, 1, 7))])
        records = [r for r in store.history(node) if r["event"] == "complete"]
        assert records and ("dagster", run["runId"]) in {(r["mode"], r["run_id"]) for r in records}
        assert all(r["mode"] == "dagster" for r in records)
        assert query(root, f"SELECT * FROM {node}") == one_shot(root, node, t(2024, 1, 1), t(2024, 1, 7))
    assert query(root, "SELECT count(*), sum(n) FROM events_rollup") == [(6, 6 * 144)]
    print(f"\ndagster dev ready after {server.ready_seconds:.1f} s, backfill done after "
          f"{done - started:.1f} s, stopped after {stopped - started:.1f} s")
