"""Dagster tells the truth, on a real instance with real DuckDB (no mocks):

* a CLI restatement shows exactly the restated partitions Failed, with the reason, until
  they are recomputed;
* seeknal's own automation sensor runs by default and requests each finished interval,
  restated partitions and a day once its 24 hours are in, whether or not it was running
  at the tick;
* a ranged run with one failing interval fails that partition only;
* every materialisation seeknal reports carries the code version its interval was
  computed with, so a SQL edit shows the partitions computed with the older one stale.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from test_dagster_assets import execute, make_project, materialize
from test_dagster_assets import instance as instance  # fixture
from test_dagster_sensors import Daemon, statuses
from test_runner import open_all

from seeknal_core import runner
from seeknal_dagster import build_definitions
from seeknal_dagster.sensors import AUTOMATION_SENSOR

BIN = Path(sys.executable).parent
HOURLY, DAILY, SUMMARY = dg.AssetKey("hourly"), dg.AssetKey("daily"), dg.AssetKey("summary")


def failed(statuses_: dict[str, str]) -> set[str]:
    return {k for k, v in statuses_.items() if v == "FAILED"}


def cli_restate(root: Path, start: str, end: str, reason: str) -> None:
    done = subprocess.run(
        [str(BIN / "seeknal"), "intervals", "restate", "-p", str(root), "--node", "hourly",
         "--start", start, "--end", end, "--reason", reason],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_cli_restatement_shows_exactly_those_partitions_failed_until_recomputed(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    defs = build_definitions(root)
    with dg.instance_for_test() as instance:  # sqlite: the store `dagster dev` uses
        daemon = Daemon(defs, instance)
        materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-01-23:00")
        materialize(defs, instance, "daily", partition="2024-01-01")
        materialize(defs, instance, "summary")
        summary_at = instance.get_latest_materialization_event(SUMMARY).timestamp

        cli_restate(root, "2024-01-01T02:00:00", "2024-01-01T05:00:00", "late data")
        data = daemon.tick("seeknal_restatements")
        # one run per asset and contiguous range, tagged so run-failure sensors can skip it
        by_asset = {r.asset_selection[0]: r for r in data.run_requests}
        assert set(by_asset) == {HOURLY, DAILY} and len(data.run_requests) == 2
        hours = by_asset[HOURLY]
        assert hours.partition_key_range == dg.PartitionKeyRange("2024-01-01-02:00", "2024-01-01-04:00")
        assert hours.tags["seeknal/reason"] == "late data" and hours.tags["seeknal/actor"]
        assert hours.tags["dagster/max_retries"] == "0" and hours.tags["seeknal/restatement"]
        assert not daemon.tick("seeknal_restatements").run_requests  # never twice
        for request in data.run_requests:
            run = daemon.launch(request, ok=False)
            [error] = [e.step_failure_data.error.message for e in run.all_events if e.is_step_failure]
            assert "restated: late data" in error
            assert instance.get_run_by_id(run.run_id).tags["seeknal/restatement"] == request.tags[
                "seeknal/restatement"]

        hourly = statuses(defs, instance, HOURLY)
        assert failed(hourly) == {"2024-01-01-02:00", "2024-01-01-03:00", "2024-01-01-04:00"}
        assert {k for k, v in hourly.items() if v == "MATERIALIZED"} == {
            f"2024-01-01-{h:02d}:00" for h in range(24) if h not in (2, 3, 4)}
        assert statuses(defs, instance, DAILY) == {"2024-01-01": "FAILED"}
        assert instance.get_latest_materialization_event(SUMMARY).timestamp == summary_at  # untouched
        # the in-sync check still names them
        evaluations = {e.asset_key: e for e in daemon.tick("seeknal_checks").asset_events}
        assert not evaluations[HOURLY].passed and "3 restated partition(s)" in evaluations[HOURLY].description

        # the recompute clears them (the CLI's restatements resolve)
        materialize(defs, instance, "hourly", first="2024-01-01-02:00", last="2024-01-01-04:00")
        materialize(defs, instance, "daily", partition="2024-01-01")
        assert set(statuses(defs, instance, HOURLY).values()) == {"MATERIALIZED"}
        assert statuses(defs, instance, DAILY) == {"2024-01-01": "MATERIALIZED"}
        _, store = open_all(root)
        assert not store.pending_restatements()
        assert not daemon.tick("seeknal_restatements").run_requests


def test_a_720_partition_restatement_is_one_run(tmp_path: Path, instance) -> None:
    root = make_project(tmp_path / "p", days=31)
    defs = build_definitions(root)
    daemon = Daemon(defs, instance)
    project, store = open_all(root)
    assert runner.run(project, store, nodes=["hourly"], start=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                      end=dt.datetime(2024, 1, 31, tzinfo=dt.UTC), mode="backfill").ok
    daemon.tick("seeknal_reconcile")
    runner.restate(project, store, ["hourly"], dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                   dt.datetime(2024, 1, 31, tzinfo=dt.UTC), reason="bad source")
    [request] = daemon.tick("seeknal_restatements").run_requests
    daemon.launch(request, ok=False)
    assert len(failed(statuses(defs, instance, HOURLY))) == 720


def test_observation_display_runs_nothing(tmp_path: Path, instance) -> None:
    root = make_project(tmp_path / "p")
    defs = build_definitions(root, restatement_display="observation")
    materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-01-03:00")
    cli_restate(root, "2024-01-01T01:00:00", "2024-01-01T02:00:00", "late data")
    daemon = Daemon(defs, instance)
    assert not daemon.tick("seeknal_restatements").run_requests
    daemon.tick("seeknal_reconcile")
    [observation] = [r.asset_observation for r in instance.fetch_observations(HOURLY, limit=10).records]
    assert "late data" in observation.description
    assert not failed(statuses(defs, instance, HOURLY))


def evaluator(defs: dg.Definitions, instance: dg.DagsterInstance):
    """Evaluates the assets' conditions as the automation sensor does, keeping its cursor."""
    cursor = None

    def evaluate(at: dt.datetime, key: dg.AssetKey = HOURLY) -> tuple[set[str], dg.EvaluateAutomationConditionsResult]:
        nonlocal cursor
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=at,
                                                   cursor=cursor)
        cursor = result.cursor
        return result.get_requested_partitions(key), result

    return evaluate


def test_seeknal_automation_sensor_runs_by_default_and_requests_finished_intervals(tmp_path: Path,
                                                                                 instance) -> None:
    root = make_project(tmp_path / "p")
    defs = build_definitions(root)
    sensor = defs.resolve_sensor_def(AUTOMATION_SENSOR)
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert set(sensor.asset_selection.resolve(defs.resolve_asset_graph())) == {HOURLY, DAILY}
    restatements = defs.resolve_sensor_def("seeknal_restatements")
    assert restatements.default_status == dg.DefaultSensorStatus.RUNNING

    materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-01-02:00")
    Daemon(defs, instance).tick("seeknal_watermarks")  # the sources' data is in: observed, as the daemon does
    evaluate = evaluator(defs, instance)
    # first evaluated 40 minutes after the 03:00-04:00 hour closed (the sensor was not running
    # at its tick): the latest finished hour is requested, nothing older, the day not yet
    hours, result = evaluate(dt.datetime(2024, 1, 1, 4, 40, tzinfo=dt.UTC))
    assert hours == {"2024-01-01-03:00"}
    assert result.get_requested_partitions(DAILY) == set()
    # every label on the way to a request reads true
    [hourly_result] = [r for r in result.results if r.key == HOURLY]
    labelled = [c for c in hourly_result.child_results if c.condition.get_label()]
    assert {c.condition.get_label() for c in labelled} == {"finished interval to compute",
                                                           "all upstream intervals complete"}
    assert all(c.true_subset.size == 1 for c in labelled)
    assert not any("NOT" in (c.condition.get_label() or "") for c in hourly_result.child_results)
    # requested once, not again while it runs or after
    assert evaluate(dt.datetime(2024, 1, 1, 4, 41, tzinfo=dt.UTC))[0] == set()

    # a restated hour, shown Failed, is requested for its recompute, once
    materialize(defs, instance, "hourly", first="2024-01-01-03:00", last="2024-01-01-03:00")
    project, store = open_all(root)
    runner.restate(project, store, ["hourly"], dt.datetime(2024, 1, 1, 1, tzinfo=dt.UTC),
                   dt.datetime(2024, 1, 1, 2, tzinfo=dt.UTC), reason="late data")
    daemon = Daemon(defs, instance)
    [show] = daemon.tick("seeknal_restatements").run_requests
    daemon.launch(show, ok=False)
    assert evaluate(dt.datetime(2024, 1, 1, 4, 50, tzinfo=dt.UTC))[0] == {"2024-01-01-01:00"}
    assert evaluate(dt.datetime(2024, 1, 1, 4, 51, tzinfo=dt.UTC))[0] == set()


CONDITION_LABELS = """
query ($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode { automationCondition { label expandedLabel } }
  }
}
"""


def test_the_served_condition_reads_on_the_asset_page_as_the_full_tree(tmp_path: Path) -> None:
    """The code location sends a condition's tree trimmed to what the asset page reads
    (``translator.shown_snapshot``): its label and expanded label, through Dagster's own
    GraphQL, are those of the full tree."""
    from dagster._core.definitions.declarative_automation.serialized_objects import get_expanded_label
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import instance_for_test
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster_graphql.test.utils import execute_dagster_graphql
    from dagster_harness import write_code_location

    root = make_project(tmp_path / "p")
    condition = build_definitions(root).resolve_assets_def(HOURLY).specs_by_key[HOURLY].automation_condition
    full = dg.AutomationCondition.get_snapshot(condition)  # Dagster's own, every node
    served = condition.get_snapshot()

    def size(snapshot) -> int:
        return 1 + sum(size(c) for c in snapshot.children)

    assert size(served) < size(full) / 2
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(
        python_file=str(write_code_location(root)), attribute="defs", working_directory=str(root)))
    with instance_for_test() as instance, \
            WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process_context:
        shown = execute_dagster_graphql(process_context.create_request_context(), CONDITION_LABELS,
                                        {"assetKey": {"path": ["hourly"]}}).data["assetNodeOrError"]
    assert shown["automationCondition"] == {"label": full.node_snapshot.label,
                                            "expandedLabel": list(get_expanded_label(full))}
    assert "(finished interval to compute)" in shown["automationCondition"]["expandedLabel"]


def test_a_day_is_requested_once_its_24_hours_are_in_not_before(tmp_path: Path, instance) -> None:
    defs = build_definitions(make_project(tmp_path / "p"))
    evaluate = evaluator(defs, instance)
    hours = [f"2024-01-02-{h:02d}:00" for h in range(24)]
    materialize(defs, instance, "hourly", first=hours[0], last=hours[22])
    day, _ = evaluate(dt.datetime(2024, 1, 3, 0, 5, tzinfo=dt.UTC), DAILY)
    assert day == set()  # closed, but 23:00 is missing
    materialize(defs, instance, "hourly", partition=hours[23])
    assert evaluate(dt.datetime(2024, 1, 3, 0, 6, tzinfo=dt.UTC), DAILY)[0] == {"2024-01-02"}


def test_a_ranged_run_with_one_failing_interval_fails_that_partition_only(tmp_path: Path, instance) -> None:
    root = make_project(tmp_path / "p")
    defs = build_definitions(root)
    execute(root, "INSERT INTO raw VALUES (TIMESTAMP '2024-01-01 02:20:00', 999)")  # 02:00 fails
    materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-01-05:00", ok=False)
    hourly = statuses(defs, instance, HOURLY)
    assert failed(hourly) == {"2024-01-01-02:00"}
    assert {k for k, v in hourly.items() if v == "MATERIALIZED"} == {
        "2024-01-01-00:00", "2024-01-01-01:00", "2024-01-01-03:00", "2024-01-01-04:00", "2024-01-01-05:00"}


def stale(defs: dg.Definitions, instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> bool:
    """Dagster's own staleness verdict for one partition (what the UI draws "Unsynced")."""
    graph = defs.resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=dt.datetime.now(dt.UTC),
                                                           last_event_id=None),
                          instance=instance, asset_graph=graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)
    return resolver.get_status(key, partition) == StaleStatus.STALE


def test_reported_materializations_carry_the_code_version_and_go_stale_on_a_sql_edit(tmp_path: Path,
                                                                                     instance) -> None:
    root = make_project(tmp_path / "p")
    defs = build_definitions(root)
    materialize(defs, instance, "hourly", partition="2024-01-01-00:00")  # a Dagster run
    project, store = open_all(root)
    assert runner.run(project, store, nodes=["hourly"], start=dt.datetime(2024, 1, 1, 1, tzinfo=dt.UTC),
                      end=dt.datetime(2024, 1, 1, 3, tzinfo=dt.UTC), mode="backfill").ok  # the CLI
    Daemon(defs, instance).tick("seeknal_reconcile")
    fingerprint = project.nodes["hourly"].fingerprint
    for partition in ("2024-01-01-00:00", "2024-01-01-01:00", "2024-01-01-02:00"):
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=HOURLY, asset_partitions=[partition]), limit=1).records
        assert record.asset_materialization.tags["dagster/code_version"] == fingerprint
        assert not stale(defs, instance, HOURLY, partition)

    nodes = root / "seeknal" / "transforms" / "nodes.yml"
    nodes.write_text(nodes.read_text().replace("sum(v) AS v FROM raw", "sum(v) + 0 AS v FROM raw"))
    edited = build_definitions(root)
    assert edited.resolve_assets_def(HOURLY).code_versions_by_key[HOURLY] != fingerprint
    for partition in ("2024-01-01-00:00", "2024-01-01-01:00", "2024-01-01-02:00"):
        assert stale(edited, instance, HOURLY, partition)
    # the in-sync check names the pending definition change and how to apply it
    evaluation = next(e for e in Daemon(edited, instance).tick("seeknal_checks").asset_events
                      if e.asset_key == HOURLY)
    assert not evaluation.passed
    assert "seeknal_apply_changes" in evaluation.description and "seeknal plan --apply" in evaluation.description
