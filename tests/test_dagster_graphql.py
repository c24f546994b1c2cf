"""A partition backfill launched the way the UI launches it: the ``launchPartitionBackfill``
GraphQL mutation against a workspace that loads the project's ``definitions.py``, then the
backfill daemon's own iteration run until the backfill is done.

The instance is a real persistent one (SQLite storage in a temporary DAGSTER_HOME) whose
run coordinator and launcher are Dagster's synchronous test ones, so each run the daemon
submits executes inside the iteration; its steps run in subprocesses that re-import the
code location, as in production.  Nothing else is replaced: the assets run the seeknal
runner against a DuckDB file and record completions in the project's JSON state.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    BACKFILL_ID_TAG,
)
from dagster._core.test_utils import instance_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster_graphql.test.utils import execute_dagster_graphql
from dagster_harness import (
    ASSET_PARTITION_STATS,
    BACKFILL_STATUS,
    LAUNCH_BACKFILL,
    backfill_params,
    drive_backfill,
    launched_backfill_id,
    write_code_location,
)
from test_dagster_assets import NODES, make_project, one_shot, query, store_of, t

from seeknal_core.intervals import IntervalSet
from seeknal_core.project import load_project
from seeknal_dagster.partitions import partitions_def_for

#: the hourly -> daily chain of the asset tests, without the unpartitioned summary
CHAIN = NODES.split("summary:")[0]
DAYS = 30


@pytest.fixture()
def instance():
    """A persistent test instance: runs submitted by the backfill iteration execute synchronously;
    the ``seeknal_duckdb`` pool is limited to one writer, as the README asks."""
    with instance_for_test(
        synchronous_run_coordinator=True, synchronous_run_launcher=True,
        overrides={"concurrency": {"pools": {"default_limit": 1}}},
    ) as inst:
        yield inst


def test_ui_backfill_of_30_days_over_hours_completes_in_dagster_and_seeknal(tmp_path: Path, instance) -> None:
    root = make_project(tmp_path / "proj", CHAIN, days=DAYS + 1)
    definitions = write_code_location(root)
    project = load_project(root)
    hourly_def, daily_def = (partitions_def_for(project.nodes[n]) for n in ("hourly", "daily"))
    hours = hourly_def.get_partition_keys_in_range(dg.PartitionKeyRange("2024-01-01-00:00", "2024-01-30-23:00"))
    days = daily_def.get_partition_keys_in_range(dg.PartitionKeyRange("2024-01-01", "2024-01-30"))
    assert (len(hours), len(days)) == (24 * DAYS, DAYS)

    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(
        python_file=str(definitions), attribute="defs", working_directory=str(root)))
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process_context:
        context = process_context.create_request_context()
        # the UI sends the selection and the keys of its root ("anchor") asset; Dagster maps
        # the 720 hours to the 30 days of the downstream asset
        launched = execute_dagster_graphql(context, LAUNCH_BACKFILL, backfill_params(["hourly", "daily"], hours))
        backfill_id = launched_backfill_id(launched.data)

        backfill, iterations = drive_backfill(process_context, backfill_id)
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, backfill.error
        status = execute_dagster_graphql(context, BACKFILL_STATUS, {"backfillId": backfill_id})
        assert status.data["partitionBackfillOrError"]["status"] == "COMPLETED_SUCCESS"
        stats = {name: execute_dagster_graphql(context, ASSET_PARTITION_STATS, {"assetKey": {"path": [name]}})
                 .data["assetNodeOrError"]["partitionStats"] for name in ("hourly", "daily")}
    assert stats["hourly"]["numMaterialized"] == 24 * DAYS and stats["daily"]["numMaterialized"] == DAYS
    assert stats["hourly"]["numFailed"] == stats["daily"]["numFailed"] == 0

    # every partition is materialised in Dagster, and nothing else
    assert instance.get_materialized_partitions(dg.AssetKey("hourly")) == set(hours)
    assert instance.get_materialized_partitions(dg.AssetKey("daily")) == set(days)
    # single-run backfill policy: one run per asset for the whole range, upstream first
    runs = sorted(instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id})),
                  key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp)
    assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2, iterations
    assert [sorted(k.to_user_string() for k in r.asset_selection) for r in runs] == [["hourly"], ["daily"]]
    assert [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG]) for r in runs] == [
        (hours[0], hours[-1]), (days[0], days[-1])]
    run_ids = {k.to_user_string(): r.run_id for r in runs for k in r.asset_selection}

    # seeknal's state: the 30 days of both nodes, completed by Dagster in those runs
    store = store_of(root)
    january = IntervalSet([(t(2024, 1, 1), t(2024, 1, 31))])
    for node, count in (("hourly", 24 * DAYS), ("daily", DAYS)):
        assert store.completed(node) == january
        assert store.node(node).failed == []
        records = [r for r in store.history(node) if r["event"] == "complete"]
        assert {(r["mode"], r["run_id"]) for r in records} == {("dagster", run_ids[node])}
        completed = IntervalSet([(a, b) for r in records for a, b in r["intervals"]])
        assert completed == january and len(_grid(project, node, completed)) == count

    # the rows equal the node's SQL run once over the whole month
    for node in ("hourly", "daily"):
        assert query(root, f"SELECT * FROM {node}") == one_shot(root, node, t(2024, 1, 1), t(2024, 1, 31))
    assert query(root, "SELECT count(*), sum(n) FROM daily") == [(DAYS, DAYS * 144)]


def _grid(project, node: str, intervals: IntervalSet) -> list:
    """The node's schedule intervals inside ``intervals``."""
    schedule = project.nodes[node].schedule
    out = []
    for interval in intervals:
        ticks = schedule.ticks(int(interval.start.timestamp()), int(interval.end.timestamp()))
        out += list(zip(ticks, ticks[1:]))
    return out
