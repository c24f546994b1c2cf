"""Sensors and asset checks through a real Dagster instance: CLI completions reported as
runless materialisations (bounded, never twice), restatements turned into runs and
resolved after re-materialisation, and the sync check failing while the sides disagree.

Ticks are evaluated as the sensor daemon does: ``evaluate_tick``, then every asset event
is recorded with ``report_runless_asset_event`` and run requests are executed as runs of
the requested job with the requested tags.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
from test_dagster_assets import execute, materialize, one_shot, query, t
from test_dagster_assets import instance as instance  # fixture
from test_dagster_assets import project_root as project_root  # fixture
from test_runner import open_all

from seeknal_core import runner
from seeknal_dagster import CHECK_NAME, build_definitions
from seeknal_dagster.sensors import reconcile_tick, restatement_tick

HOURLY = dg.AssetKey("hourly")
DAILY = dg.AssetKey("daily")


class Daemon:
    """Drives the definitions' sensors like the sensor daemon, keeping their cursors."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance, self.cursors = defs, instance, {}

    def tick(self, name: str):
        sensor = self.defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursors.get(name),
                                          definitions=self.defs)
        data = sensor.evaluate_tick(context)
        for event in data.asset_events:
            self.instance.report_runless_asset_event(event)
        if data.cursor is not None:
            self.cursors[name] = data.cursor
        return data

    def launch(self, request: dg.RunRequest, ok: bool = True) -> dg.ExecuteInProcessResult:
        # a tick's request names Dagster's implicit asset job; a tick function's names none
        job = self.defs.resolve_job_def(request.job_name or "__ASSET_JOB")
        result = job.execute_in_process(
            instance=self.instance, partition_key=request.partition_key, tags=request.tags,
            asset_selection=request.asset_selection, resources=self.defs.resources, raise_on_error=False,
        )
        assert result.success is ok, [e.message for e in result.all_events if e.is_failure]
        return result

    def check(self, key: dg.AssetKey):
        """The check's latest evaluation as the UI shows it."""
        record = self.instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(key, CHECK_NAME)])[dg.AssetCheckKey(key, CHECK_NAME)]
        return record.event.dagster_event.event_specific_data


def statuses(defs: dg.Definitions, instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, str]:
    """Each partition's status as Dagster's partition view draws it (materialized ones only
    need not be listed: MISSING is left out)."""
    pdef = defs.resolve_assets_def(key).partitions_def
    out = instance.get_status_by_partition(key, pdef.get_partition_keys(), pdef) or {}
    return {k: v.value for k, v in out.items() if v is not None and v.value != "MISSING"}


def test_cli_completions_become_materialisations_once(project_root: Path, instance) -> None:
    defs = build_definitions(project_root)
    daemon = Daemon(defs, instance)
    # Dagster computed one hour itself; the CLI then backfills the whole first day
    materialize(defs, instance, "hourly", partition="2024-01-01-03:00")
    project, store = open_all(project_root)
    result = runner.run(project, store, mode="backfill", nodes=["hourly"], start=t(2024, 1, 1),
                        end=t(2024, 1, 2), now=t(2024, 1, 5))
    assert result.ok and result.intervals == 23  # the Dagster hour was already complete
    store.mark_complete("daily", [(t(2024, 1, 3), t(2024, 1, 4))], origin="manual")

    data = daemon.tick("seeknal_reconcile")
    reported = {(e.asset_key, e.partition) for e in data.asset_events}
    assert len(reported) == len(data.asset_events) == 24
    assert (HOURLY, "2024-01-01-03:00") not in reported  # Dagster already shows it
    assert (DAILY, "2024-01-03") in reported
    by_partition = {(e.asset_key, e.partition): e for e in data.asset_events}
    # each carries the code version its interval was computed with, as Dagster's own do
    assert by_partition[(HOURLY, "2024-01-01-05:00")].tags == {
        "seeknal/origin": "backfill", "dagster/code_version": project.nodes["hourly"].fingerprint,
        # and the provenance Dagster writes on its own (here: the unobserved source)
        "dagster/input_data_version/raw": "INITIAL", "dagster/input_event_pointer/raw": "NULL"}
    assert by_partition[(DAILY, "2024-01-03")].metadata["seeknal/origin"].value == "manual"
    assert len(instance.get_materialized_partitions(HOURLY)) == 24
    assert instance.get_materialized_partitions(DAILY) == {"2024-01-03"}
    assert json.loads(daemon.cursors["seeknal_reconcile"]) == {"revision": store.revision}

    assert not daemon.tick("seeknal_reconcile").asset_events  # nothing twice
    # a lost cursor replays the journal, but Dagster's materialised partitions stop repeats
    daemon.cursors.pop("seeknal_reconcile")
    assert not daemon.tick("seeknal_reconcile").asset_events


def test_replaced_store_resyncs_from_completed_intervals(project_root: Path, instance) -> None:
    """A cursor ahead of the store (the state file was replaced) means the journal cannot
    be trusted: every completed partition Dagster does not show is reported, once."""
    defs = build_definitions(project_root)
    materialize(defs, instance, "hourly", partition="2024-01-01-00:00")
    project, store = open_all(project_root)
    store.mark_complete("hourly", [(t(2024, 1, 1), t(2024, 1, 1, 3))], origin="manual")
    result = reconcile_tick(project, store, instance, {"revision": 10_000})
    assert [e.partition for e in result.events] == ["2024-01-01-01:00", "2024-01-01-02:00"]
    tags = result.events[0].tags  # a resync: the definition the store records for the node
    assert tags["seeknal/origin"] == "seeknal" and tags["dagster/code_version"] == store.node("hourly").fingerprint
    assert result.cursor == {"revision": store.revision}


def test_large_backlog_is_reported_in_bounded_chunks(project_root: Path, instance) -> None:
    defs = build_definitions(project_root, max_partitions_per_tick=40)
    daemon = Daemon(defs, instance)
    project, store = open_all(project_root)
    runner.run(project, store, mode="backfill", nodes=["hourly"], start=t(2024, 1, 1), end=t(2024, 1, 4),
               now=t(2024, 1, 5), batch_size=72)  # one change of 72 hours
    sizes, cursors = [], []
    for _ in range(3):
        data = daemon.tick("seeknal_reconcile")
        sizes.append(len(data.asset_events))
        cursors.append(json.loads(daemon.cursors["seeknal_reconcile"]))
    assert sizes == [40, 32, 0]
    assert cursors[0]["offset"] == 40 and cursors[0]["revision"] < cursors[0]["group"]
    assert cursors[1] == {"revision": store.revision}
    assert len(instance.get_materialized_partitions(HOURLY)) == 72


def test_restatement_runs_replace_rows_and_resolve(project_root: Path, instance) -> None:
    """``automation: schedules``: the sensor shows the restated partitions Failed, then
    recomputes them, upstream first, and resolves the restatements."""
    defs = build_definitions(project_root, automation="schedules")
    daemon = Daemon(defs, instance)
    materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-02-23:00")
    materialize(defs, instance, "daily", first="2024-01-01", last="2024-01-02")
    assert daemon.tick("seeknal_checks").asset_events[0].passed

    # late data arrives for 2024-01-02 05:00-07:00; the CLI restates those hours
    execute(project_root, "INSERT INTO raw VALUES (TIMESTAMP '2024-01-02 05:30:00', 1000), "
                  "(TIMESTAMP '2024-01-02 06:10:00', 2000)")
    project, store = open_all(project_root)
    impact = runner.restate(project, store, ["hourly"], t(2024, 1, 2, 5), t(2024, 1, 2, 7),
                            reason="late data", now=t(2024, 1, 5))
    assert impact == {"hourly": [(1704171600, 1704175200), (1704175200, 1704178800)],
                      "daily": [(1704153600, 1704240000)]}
    [hourly_r] = store.pending_restatements("hourly")
    [daily_r] = store.pending_restatements("daily")

    # the checks fail, naming the restated partitions
    evaluations = {e.asset_key: e for e in daemon.tick("seeknal_checks").asset_events}
    assert not evaluations[HOURLY].passed and not evaluations[DAILY].passed
    assert "2024-01-02-05:00, 2024-01-02-06:00" in evaluations[HOURLY].description
    assert evaluations[HOURLY].metadata["restated_partitions"].value == ["2024-01-02-05:00",
                                                                         "2024-01-02-06:00"]
    assert not daemon.check(DAILY).passed

    # tick 1: the restated partitions are shown Failed first, one run per asset and range
    data = daemon.tick("seeknal_restatements")
    hours_shown, day_shown = sorted(data.run_requests, key=lambda r: r.asset_selection != [HOURLY])
    # through Dagster's implicit asset job: seeknal builds no job of its own for the sensor
    assert hours_shown.job_name == "__ASSET_JOB" and hours_shown.asset_selection == [HOURLY]
    assert hours_shown.partition_key_range == dg.PartitionKeyRange("2024-01-02-05:00", "2024-01-02-06:00")
    assert hours_shown.tags["seeknal/restatement"] == hourly_r.id
    assert hours_shown.tags["seeknal/reason"] == "late data" and hours_shown.tags["dagster/max_retries"] == "0"
    assert day_shown.partition_key == "2024-01-02" and day_shown.tags["seeknal/restatement"] == daily_r.id
    # tick 2, before the runs started: nothing is requested twice
    assert not daemon.tick("seeknal_restatements").run_requests
    for request in (hours_shown, day_shown):
        failed = daemon.launch(request, ok=False)
        [error] = [e.step_failure_data.error.message for e in failed.all_events if e.is_step_failure]
        assert "Failure: restated: late data" in error and "shown Failed until recomputed" in error
        # the display run's step reports the in-sync check before it fails: a restatement waits
        [check] = failed.get_asset_check_evaluations()
        assert check.asset_key == request.asset_selection[0] and not check.passed
        assert "restated partition(s) waiting to be re-materialised" in check.description
    assert {k for k, v in statuses(defs, instance, HOURLY).items() if v == "FAILED"} == {
        "2024-01-02-05:00", "2024-01-02-06:00"}
    assert statuses(defs, instance, DAILY) == {"2024-01-01": "MATERIALIZED", "2024-01-02": "FAILED"}

    # tick 3: one recompute run for the contiguous hours; the day waits for its hours
    data = daemon.tick("seeknal_restatements")
    [request] = data.run_requests
    assert request.job_name == "__ASSET_JOB" and request.asset_selection == [HOURLY]
    assert request.partition_key_range == dg.PartitionKeyRange("2024-01-02-05:00", "2024-01-02-06:00")
    assert request.tags["seeknal/recompute"] == hourly_r.id and "seeknal/restatement" not in request.tags
    assert not daemon.tick("seeknal_restatements").run_requests

    run = daemon.launch(request)
    assert run.success
    [check] = run.get_asset_check_evaluations()  # recomputed by the run: in sync again
    assert check.passed and check.metadata["in_sync_count"].value == 48, check.description
    assert query(project_root, "SELECT * FROM hourly") == one_shot(project_root, "hourly", t(2024, 1, 1), t(2024, 1, 3))
    assert set(statuses(defs, instance, HOURLY).values()) == {"MATERIALIZED"}

    # tick 4: the hours are re-materialised -> resolved; the day is requested now
    data = daemon.tick("seeknal_restatements")
    [request] = data.run_requests
    assert request.partition_key == "2024-01-02" and request.tags["seeknal/recompute"] == daily_r.id
    assert not store.pending_restatements("hourly")
    assert daemon.launch(request).success
    assert query(project_root, "SELECT * FROM daily") == one_shot(project_root, "daily", t(2024, 1, 1), t(2024, 1, 3))
    assert statuses(defs, instance, DAILY) == {"2024-01-01": "MATERIALIZED", "2024-01-02": "MATERIALIZED"}

    # tick 5: nothing left to request, nothing tracked
    data = daemon.tick("seeknal_restatements")
    assert not data.run_requests and json.loads(daemon.cursors["seeknal_restatements"]) == {"tracked": {}}
    assert not store.pending_restatements()
    history = [r for r in store.history("hourly") if r["event"] == "resolve"]
    assert history[-1]["restatement_id"] == hourly_r.id

    evaluations = {e.asset_key: e for e in daemon.tick("seeknal_checks").asset_events}
    assert evaluations[HOURLY].passed and evaluations[DAILY].passed
    assert daemon.check(DAILY).passed


def test_failed_restatement_run_is_requested_again(project_root: Path, instance) -> None:
    defs = build_definitions(project_root)
    materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-01-03:00")
    project, store = open_all(project_root)
    runner.restate(project, store, ["hourly"], t(2024, 1, 1, 1), t(2024, 1, 1, 2), reason="bad hour",
                   now=t(2024, 1, 5))
    first = restatement_tick(project, store, instance, {}, now=1000.0, display="observation")
    [request] = first.run_requests
    assert restatement_tick(project, store, instance, first.cursor, now=1100.0).run_requests == []

    execute(project_root, "INSERT INTO raw VALUES (TIMESTAMP '2024-01-01 01:20:00', 999)")  # the rerun fails
    daemon = Daemon(defs, instance)
    daemon.launch(request, ok=False)
    second = restatement_tick(project, store, instance, first.cursor, now=1200.0)
    [retry] = second.run_requests
    assert retry.tags["seeknal/restatement_attempt"] == "2" and retry.run_key != request.run_key
    assert store.pending_restatements("hourly")


def test_check_reports_drift_until_reconciled(project_root: Path, instance) -> None:
    defs = build_definitions(project_root)
    daemon = Daemon(defs, instance)
    project, store = open_all(project_root)
    runner.run(project, store, mode="backfill", nodes=["hourly"], start=t(2024, 1, 1),
               end=t(2024, 1, 1, 3), now=t(2024, 1, 5))

    # the check alone, executed in a run (as from the UI): its asset's step reports it and
    # materialises nothing; complete in seeknal only -> fails, naming them
    result = dg.materialize(list(defs.assets), instance=instance,
                            selection=dg.AssetSelection.checks(dg.AssetCheckKey(HOURLY, CHECK_NAME)),
                            resources=defs.resources)
    assert not result.get_asset_materialization_events()
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert "3 partition(s) complete in seeknal but not materialised in Dagster" in evaluation.description
    assert evaluation.metadata["only_in_seeknal"].value == [
        "2024-01-01-00:00", "2024-01-01-01:00", "2024-01-01-02:00"]

    daemon.tick("seeknal_reconcile")
    assert daemon.tick("seeknal_checks").asset_events[0].passed
    assert daemon.check(HOURLY).passed
    assert not daemon.tick("seeknal_checks").asset_events  # nothing changed since

    # Dagster shows a partition seeknal no longer has (state reset by hand) -> fails again
    store.restate({"hourly": [(t(2024, 1, 1, 2), t(2024, 1, 1, 3))]}, "state surgery")
    store.resolve_restatement(store.pending_restatements("hourly")[0].id, by="test")
    [evaluation] = daemon.tick("seeknal_checks").asset_events
    assert not evaluation.passed and evaluation.metadata["only_in_dagster"].value == ["2024-01-01-02:00"]


def test_cli_recompute_of_a_restated_partition_is_reported(project_root: Path, instance) -> None:
    """Dagster shows the partition materialised (old data); the CLI restates and re-runs it:
    the new completion is news, even though the partition is already materialised."""
    defs = build_definitions(project_root)
    daemon = Daemon(defs, instance)
    materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-01-03:00")
    daemon.tick("seeknal_reconcile")
    project, store = open_all(project_root)
    runner.restate(project, store, ["hourly"], t(2024, 1, 1, 1), t(2024, 1, 1, 2), reason="fix",
                   now=t(2024, 1, 5))
    daemon.tick("seeknal_reconcile")  # sees the restatement alone
    runner.run(project, store, nodes=["hourly"], now=t(2024, 1, 1, 4))
    data = daemon.tick("seeknal_reconcile")
    assert [(e.asset_key, e.partition) for e in data.asset_events] == [(HOURLY, "2024-01-01-01:00")]
    tags = data.asset_events[0].tags
    assert tags["seeknal/origin"] == "restate" and tags["dagster/code_version"] == project.nodes["hourly"].fingerprint
    assert not daemon.tick("seeknal_reconcile").asset_events
