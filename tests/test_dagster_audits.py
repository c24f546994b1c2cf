"""Audits as Dagster asset checks, on a real Dagster instance (SQLite storage), real DuckDB
and the project's own state store: one check per audit, one verdict per partition even
when one run covers a range, and a partition failed by a blocking audit is Failed in
Dagster (never materialized), readable through the instance and the UI's GraphQL."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionResolvedStatus as CheckStatus,
)
from dagster._core.test_utils import instance_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster_graphql.test.utils import execute_dagster_graphql
from dagster_harness import (
    LAUNCH_BACKFILL,
    backfill_params,
    drive_backfill,
    launched_backfill_id,
    write_code_location,
)
from test_dagster_assets import execute, make_project, materializations, materialize, query, store_of

from seeknal_core.errors import ProjectError
from seeknal_core.project import load_project
from seeknal_dagster import CHECK_NAME, build_definitions
from seeknal_dagster.partitions import partitions_def_for

NODES = """
daily:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT CAST(date_trunc('day', ts) AS TIMESTAMP) AS day, count(*) AS n, min(v) AS low FROM raw
    WHERE ts >= TIMESTAMP '{{ start }}' AND ts < TIMESTAMP '{{ end }}' GROUP BY ALL
  audits:
    - accepted_range: {column: low, min: 0}
    - not_null: [day, n]
    - name: at most 144 a day
      accepted_range: {column: n, max: 144}
      blocking: false
daily_total:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT day, n FROM {{ ref('daily') }} WHERE day >= TIMESTAMP '{{ start }}' AND day < TIMESTAMP '{{ end }}'
summary:
  sql: SELECT count(*) AS days, sum(n) AS n FROM {{ ref('daily') }}
  audits:
    - row_count: {min: 1}
"""
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
BAD_DAY = "2024-01-02"
#: the audits of ``daily`` as Dagster checks: (name, blocking); the third one's name is slugged
DAILY_CHECKS = {"accepted_range": True, "not_null": True, "at_most_144_a_day": False}

CHECK_STATUSES = """
query CheckStatuses($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      assetPartitionStatuses { __typename ... on TimePartitionStatuses { ranges { startKey endKey status } } }
      assetChecksOrError {
        __typename
        ... on AssetChecks { checks { name blocking partitionStatuses {
          __typename ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } } } } }
      }
    }
  }
}
"""


@pytest.fixture()
def instance():
    """A persistent SQLite instance, the storage ``dagster dev`` uses."""
    with instance_for_test() as inst:
        yield inst


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Four days of ``raw``; on 2024-01-02 one negative value (``accepted_range`` on ``low``
    fails: blocking) and on 2024-01-03 one row too many (the warning ``at most 144 a day``)."""
    root = make_project(tmp_path / "proj", NODES)
    execute(root, "INSERT INTO raw VALUES (TIMESTAMP '2024-01-02 05:15:00', -5), (TIMESTAMP '2024-01-03 05:15:00', 5)")
    return root


def pdef_of(root: Path, node: str = "daily"):
    return partitions_def_for(load_project(root).nodes[node])


def statuses(instance, root: Path, key: str = "daily") -> dict[str, str]:
    pdef = pdef_of(root, key)
    return {k: s.value if s else "MISSING"
            for k, s in instance.get_status_by_partition(dg.AssetKey(key), DAYS, pdef).items()}


def check_state(instance, root: Path, check: str, key: str = "daily") -> dict[str, list[str]]:
    """Per status, the partitions of one check, as Dagster's check status cache resolves them."""
    check_key = dg.AssetCheckKey(dg.AssetKey(key), check)
    state = instance.event_log_storage.get_asset_check_state([(check_key, pdef_of(root, key))])[check_key]
    return {status.value: sorted(subset.subset_value.get_partition_keys())
            for status, subset in state.subsets.items() if not subset.is_empty}


def evaluations(result: dg.ExecuteInProcessResult) -> list[dg.AssetCheckEvaluation]:
    return [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def test_one_check_spec_per_audit_with_its_blocking_flag(root: Path) -> None:
    defs = build_definitions(root)
    graph = defs.resolve_asset_graph()
    daily = dg.AssetKey("daily")
    specs = {k.name: graph.get(k) for k in graph.asset_check_keys if k.asset_key == daily}
    assert {name: node.blocking for name, node in specs.items()} == {**DAILY_CHECKS, CHECK_NAME: False}
    # the audits' checks are partitioned like the asset: one verdict per partition
    assert {name: node.partitions_def for name, node in specs.items() if name in DAILY_CHECKS} == {
        name: graph.get(daily).partitions_def for name in DAILY_CHECKS}
    assert "no NULL in day, n" in specs["not_null"].description
    assert "still materializes" in specs["at_most_144_a_day"].description
    # the checks, seeknal_in_sync too, are declared on the node's asset step, so that step
    # reports them; the in-sync check is unpartitioned (one verdict for the whole asset)
    assert {k.name for k in graph.get(daily).assets_def.check_keys} == {*DAILY_CHECKS, CHECK_NAME}
    assert specs[CHECK_NAME].partitions_def is None
    # a node without audits has none; an unpartitioned one gets unpartitioned checks
    assert {k.name for k in graph.asset_check_keys if k.asset_key == dg.AssetKey("daily_total")} == {CHECK_NAME}
    [summary] = [graph.get(k) for k in graph.asset_check_keys if k.asset_key == dg.AssetKey("summary")]
    assert (summary.key.name, summary.blocking, summary.partitions_def) == ("row_count", True, None)


def test_audit_names_that_would_share_a_check_are_refused_in_one_line(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", NODES.replace("- not_null: [day, n]", "- name: at_most_144 a day\n"
                                                         "      not_null: [day, n]"))
    with pytest.raises(ProjectError) as refused:
        build_definitions(root)
    assert str(refused.value) == (
        "node 'daily': audits 'at_most_144 a day' and 'at most 144 a day' would both be the Dagster check "
        "'at_most_144_a_day' — rename one (letters, digits, _)")


def test_ranged_run_fails_exactly_the_violating_partition_and_its_check(root: Path, instance) -> None:
    defs = build_definitions(root)
    result = materialize(defs, instance, "daily", first=DAYS[0], last=DAYS[-1], ok=False)

    # the run fails naming the audit; the bad day has no materialization and no rows
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "1 interval(s) failed" in failure.event_specific_data.error.message
    assert "audit accepted_range failed: 1 row;" in failure.event_specific_data.error.message
    assert sorted(m.partition for m in materializations(result, "daily")) == [d for d in DAYS if d != BAD_DAY]
    assert query(root, "SELECT strftime(day, '%Y-%m-%d') FROM daily ORDER BY day") == [
        (d,) for d in DAYS if d != BAD_DAY]
    [failed] = store_of(root).node("daily").failed
    assert failed.start.date().isoformat() == BAD_DAY and "accepted_range" in failed.error

    # Dagster: exactly that partition FAILED, the others MATERIALIZED
    assert statuses(instance, root) == {d: "FAILED" if d == BAD_DAY else "MATERIALIZED" for d in DAYS}
    # one verdict per audit per partition, from the ranged run
    by_check: dict[str, dict[str, bool]] = {}
    for evaluation in evaluations(result):
        by_check.setdefault(evaluation.check_name, {})[evaluation.partition] = evaluation.passed
    assert by_check["accepted_range"] == {d: d != BAD_DAY for d in DAYS}
    # the bad day reports only the audits that failed it (its rows were rolled back)
    assert by_check["not_null"] == {d: True for d in DAYS if d != BAD_DAY}
    [bad] = [e for e in evaluations(result) if e.check_name == "accepted_range" and not e.passed]
    assert bad.severity == dg.AssetCheckSeverity.ERROR and bad.blocking
    assert bad.metadata["offending_rows"].value == 1
    assert bad.metadata["sample_rows"].value[0]["low"] == -5
    # ... as Dagster's check status resolves them per partition
    assert check_state(instance, root, "accepted_range") == {
        CheckStatus.SUCCEEDED.value: [d for d in DAYS if d != BAD_DAY], CheckStatus.FAILED.value: [BAD_DAY]}
    assert check_state(instance, root, "not_null") == {
        CheckStatus.SUCCEEDED.value: [d for d in DAYS if d != BAD_DAY],
        CheckStatus.EXECUTION_FAILED.value: [BAD_DAY]}

    # ... and as the UI reads them (GraphQL over the same instance and the project's code location)
    statuses_gql = _graphql_statuses(root, instance)
    assert statuses_gql["asset"] == [("2024-01-01", "2024-01-01", "MATERIALIZED"), (BAD_DAY, BAD_DAY, "FAILED"),
                                     ("2024-01-03", "2024-01-04", "MATERIALIZED")]
    assert statuses_gql["checks"]["accepted_range"] == (True, [
        ("2024-01-01", "2024-01-01", "SUCCEEDED"), (BAD_DAY, BAD_DAY, "FAILED"),
        ("2024-01-03", "2024-01-04", "SUCCEEDED")])

    # fixed upstream and re-run: the partition and its check turn green
    execute(root, "DELETE FROM raw WHERE v = -5")
    materialize(defs, instance, "daily", partition=BAD_DAY)
    assert statuses(instance, root) == {d: "MATERIALIZED" for d in DAYS}
    assert check_state(instance, root, "accepted_range") == {CheckStatus.SUCCEEDED.value: DAYS}
    assert not store_of(root).node("daily").failed

    # broken again, re-run alone: Failed again, not materialized; the table keeps the good rows
    execute(root, "INSERT INTO raw VALUES (TIMESTAMP '2024-01-02 07:00:00', -1)")
    again = materialize(defs, instance, "daily", partition=BAD_DAY, ok=False)
    assert not materializations(again, "daily")
    assert statuses(instance, root) == {d: "FAILED" if d == BAD_DAY else "MATERIALIZED" for d in DAYS}
    assert check_state(instance, root, "accepted_range") == {
        CheckStatus.SUCCEEDED.value: [d for d in DAYS if d != BAD_DAY], CheckStatus.FAILED.value: [BAD_DAY]}
    assert query(root, f"SELECT n, low FROM daily WHERE day = TIMESTAMP '{BAD_DAY}'") == [(144, 0)]


def test_ui_backfill_over_a_range_shows_the_failed_partition_and_its_check(root: Path) -> None:
    """The same through the daemon's path: the UI's backfill mutation, the backfill daemon's
    iteration, a run whose step runs in a subprocess that re-imports the code location."""
    with instance_for_test(synchronous_run_coordinator=True, synchronous_run_launcher=True,
                           overrides={"concurrency": {"pools": {"default_limit": 1}}}) as instance:
        origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(
            python_file=str(write_code_location(root)), attribute="defs", working_directory=str(root)))
        with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process_context:
            launched = execute_dagster_graphql(process_context.create_request_context(), LAUNCH_BACKFILL,
                                               backfill_params(["daily"], DAYS))
            backfill, _ = drive_backfill(process_context, launched_backfill_id(launched.data))
        assert backfill.status == BulkActionStatus.COMPLETED_FAILED
        [run] = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert statuses(instance, root) == {d: "FAILED" if d == BAD_DAY else "MATERIALIZED" for d in DAYS}
        assert check_state(instance, root, "accepted_range") == {
            CheckStatus.SUCCEEDED.value: [d for d in DAYS if d != BAD_DAY], CheckStatus.FAILED.value: [BAD_DAY]}
        assert check_state(instance, root, "at_most_144_a_day") == {
            CheckStatus.SUCCEEDED.value: ["2024-01-01", "2024-01-04"],
            CheckStatus.FAILED.value: [BAD_DAY, "2024-01-03"]}


def test_non_blocking_failure_materializes_with_a_warning(root: Path, instance) -> None:
    defs = build_definitions(root)
    result = materialize(defs, instance, "daily", partition="2024-01-03")

    assert [m.partition for m in materializations(result, "daily")] == ["2024-01-03"]
    assert query(root, "SELECT n FROM daily") == [(145,)]
    [warning] = [e for e in evaluations(result) if e.check_name == "at_most_144_a_day"]
    assert (warning.passed, warning.severity, warning.partition) == (False, dg.AssetCheckSeverity.WARN, "2024-01-03")
    assert "audit at most 144 a day failed: 1 row in 2024-01-03" in warning.description
    # the verdict is about the partition's new materialization, so Dagster shows it current
    assert warning.target_materialization_data.run_id == result.run_id
    assert statuses(instance, root) == {d: "MATERIALIZED" if d == "2024-01-03" else "MISSING" for d in DAYS}
    assert check_state(instance, root, "at_most_144_a_day") == {CheckStatus.FAILED.value: ["2024-01-03"]}
    assert check_state(instance, root, "accepted_range") == {CheckStatus.SUCCEEDED.value: ["2024-01-03"]}
    assert [(i.start.date().isoformat(), i.end.date().isoformat()) for i in store_of(root).completed("daily")] == [
        ("2024-01-03", "2024-01-04")]


def test_downstream_in_the_same_run_does_not_run_for_the_failed_partition(root: Path, instance) -> None:
    defs = build_definitions(root)
    # daily and daily_total share one step (same partitions); summary is a step downstream of it
    result = dg.materialize(
        list(defs.assets), selection=[dg.AssetKey(k) for k in ("daily", "daily_total", "summary")],
        tags=range_tags(DAYS[0], DAYS[-1]), instance=instance, resources=defs.resources, raise_on_error=False)
    assert not result.success

    assert BAD_DAY not in {m.partition for m in materializations(result, "daily_total")}
    assert not materializations(result, "summary")
    assert not store_of(root).completed("daily_total")
    assert statuses(instance, root, "daily_total")[BAD_DAY] == "FAILED"
    # the step downstream of the failed one never started
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"seeknal_daily_and_1_more"}


def _graphql_statuses(root: Path, instance) -> dict:
    definitions = write_code_location(root)
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(
        python_file=str(definitions), attribute="defs", working_directory=str(root)))
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process_context:
        data = execute_dagster_graphql(process_context.create_request_context(), CHECK_STATUSES,
                                       {"assetKey": {"path": ["daily"]}}).data["assetNodeOrError"]
    ranges = lambda statuses: [(r["startKey"], r["endKey"], r["status"]) for r in statuses["ranges"]]  # noqa: E731
    return {
        "asset": ranges(data["assetPartitionStatuses"]),
        "checks": {c["name"]: (c["blocking"], ranges(c["partitionStatuses"]) if c["partitionStatuses"] else None)
                   for c in data["assetChecksOrError"]["checks"]},
    }


def test_a_table_node_check_result_comes_from_its_asset_step(tmp_path: Path, instance) -> None:
    """An unpartitioned (table) node's audits run over its whole new table in its asset
    step: a pass and a warning materialize it; a blocking failure fails the step, keeps
    the old table and reports the failed check with its offending rows."""
    root = make_project(tmp_path / "proj", NODES.replace("    - row_count: {min: 1}\n", (
        "    - row_count: {min: 1}\n"
        "    - accepted_range: {column: days, max: 1}\n"
        "    - name: two_rows\n      row_count: {min: 2}\n      blocking: false\n")))
    defs = build_definitions(root)
    materialize(defs, instance, "daily", partition=DAYS[0])

    first = materialize(defs, instance, "summary")
    assert len(materializations(first, "summary")) == 1
    verdicts = {e.check_name: e for e in evaluations(first)}
    assert {name: (e.passed, e.partition) for name, e in verdicts.items()} == {
        "row_count": (True, None), "accepted_range": (True, None), "two_rows": (False, None)}
    warning = verdicts["two_rows"]
    assert warning.severity == dg.AssetCheckSeverity.WARN and not warning.blocking
    assert warning.description == ("audit two_rows failed: 1 rows written, expected >= 2 in the whole table "
                                   "(warning: the interval completed)")
    assert warning.target_materialization_data.run_id == first.run_id
    assert "interval_start" not in warning.metadata
    assert query(root, "SELECT days FROM summary") == [(1,)]

    materialize(defs, instance, "daily", partition=DAYS[1])
    second = materialize(defs, instance, "summary", ok=False)
    assert not materializations(second, "summary")
    failed = {e.check_name: e for e in evaluations(second)}
    # only the audits that failed on the new table (the passing one's verdict was rolled back with it)
    assert {name: (e.passed, e.blocking) for name, e in failed.items()} == {
        "accepted_range": (False, True), "two_rows": (False, False)}
    assert failed["accepted_range"].metadata["offending_rows"].value == 1
    assert failed["accepted_range"].metadata["sample_rows"].value[0]["days"] == 2
    assert query(root, "SELECT days FROM summary") == [(1,)]  # the old table stays
    [record] = [r for r in store_of(root).history("summary") if r.get("status") == "failed"]
    assert "audit accepted_range failed: 1 row" in record["error"]
