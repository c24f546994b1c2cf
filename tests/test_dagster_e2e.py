"""End to end through a real ``dagster dev``: webserver, daemon and code server as
subprocesses on 127.0.0.1, a partition backfill launched over HTTP with the UI's GraphQL
mutation, run by the daemons (queued run coordinator, default run launcher, multiprocess
executor, the ``seeknal_duckdb`` pool limited to one writer), then checked in Dagster, in
seeknal's state and in DuckDB; the processes are stopped by their group and the port freed.

Slow by nature (the backfill daemon iterates every 30 s): one test, which waits on
progress and fails only when nothing moves for minutes.
"""

from __future__ import annotations

import time
from pathlib import Path

from dagster_harness import (
    ASSET_PARTITION_STATS,
    BACKFILL_RUNS,
    LAUNCH_BACKFILL,
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
  sql: |
    SELECT CAST(date_trunc('day', ts) AS TIMESTAMP) AS day, count(*) AS n, sum(v) AS v FROM raw
    WHERE ts >= TIMESTAMP '{{ start }}' AND ts < TIMESTAMP '{{ end }}'
    GROUP BY ALL
  time_column: day
events_rollup:
  schedule: "@daily"
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
READY_TIMEOUT = 300.0  # of no progress at all, not of start-up time


def test_dagster_dev_runs_a_ui_backfill_end_to_end(tmp_path: Path) -> None:
    started = time.monotonic()
    root = make_project(tmp_path / "proj", CHAIN, days=7)
    write_code_location(root, LOCATION)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)

    with dagster_dev(root / "workspace.yaml", home, location=LOCATION, ready_timeout=READY_TIMEOUT) as server:
        data = server.graphql(LAUNCH_BACKFILL, backfill_params(["events_daily", "events_rollup"], DAYS))
        backfill_id = launched_backfill_id(data)
        backfill = server.wait_for_backfill(backfill_id, ["events_daily", "events_rollup"])
        status = backfill["status"]
        assert status == "COMPLETED_SUCCESS", (status, backfill.get("error"), server.log_tail())
        stats = {name: server.graphql(ASSET_PARTITION_STATS, {"assetKey": {"path": [name]}})
                 ["assetNodeOrError"]["partitionStats"] for name in ("events_daily", "events_rollup")}
        runs = server.graphql(BACKFILL_RUNS, {"backfillId": backfill_id})["runsOrError"]["results"]
        port, pgid = server.port, server.proc.pid
        done = time.monotonic()
    stopped = time.monotonic()

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
        assert stats[name]["numMaterialized"] == len(DAYS) and stats[name]["numFailed"] == 0, stats
    store = store_of(root)
    for node in ("events_daily", "events_rollup"):
        assert store.completed(node) == IntervalSet([(t(2024, 1, 1), t(2024, 1, 6))])
        records = [r for r in store.history(node) if r["event"] == "complete"]
        assert records and {(r["mode"], r["run_id"]) for r in records} == {("dagster", run["runId"])}
        assert query(root, f"SELECT * FROM {node}") == one_shot(root, node, t(2024, 1, 1), t(2024, 1, 6))
    assert query(root, "SELECT count(*), sum(n) FROM events_rollup") == [(5, 5 * 144)]
    print(f"\ndagster dev ready after {server.ready_seconds:.1f} s, backfill done after "
          f"{done - started:.1f} s, stopped after {stopped - started:.1f} s")
