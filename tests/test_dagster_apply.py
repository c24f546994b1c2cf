"""``seeknal_apply_changes``: ``seeknal plan --apply`` as a Dagster run, on a real instance
and a real DuckDB file (the chain of tests/test_plan.py, its history computed by the CLI)."""

from __future__ import annotations

import dagster as dg
from test_plan import NOW, chain, edit_hourly, fresh_recompute, log, plan_json, run, tables

from seeknal_core.project import load_project
from seeknal_core.state import open_store
from seeknal_dagster import APPLY_JOB, build_definitions


def apply(root, **config) -> tuple[dg.ExecuteInProcessResult, list[str]]:
    """Run the job on a real (ephemeral) instance; its result and the run's log lines."""
    defs = build_definitions(root)
    job = defs.resolve_job_def(APPLY_JOB)
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            run_config={"ops": {"seeknal_apply_changes_op": {"config": {"now": NOW, **config}}}},
            resources=defs.resources, instance=instance, raise_on_error=False)
        return result, [e.user_message for e in instance.all_logs(result.run_id)]


def test_the_job_records_the_plan_and_recomputes_like_plan_apply(tmp_path):
    root = chain(tmp_path / "p")
    run(root, "run", "--backfill")
    edit_hourly(root, "AND v > 0", "AND v > 50")
    result, messages = apply(root, reason="fix the hourly filter")
    assert result.success
    assert any(m.startswith("hourly: changed, breaking; restate 960 interval(s) from 2024-01-01") for m in messages)
    assert any(m.startswith("weekly: unchanged, reads daily; restate 5 interval(s)") for m in messages)
    assert "Recomputed 1045 interval(s)" in " ".join(messages)

    project = load_project(root)
    store = open_store(root)
    for name, node in project.nodes.items():
        state = store.node(name)
        assert state.fingerprint == node.fingerprint, name
        assert state.restatements and {r.resolved_by for r in state.restatements} == {f"dagster:{result.run_id}"}
        assert state.definition is not None
    assert store.node("hourly").definition["sql"] == project.nodes["hourly"].normalized_sql
    assert tables(root) == fresh_recompute(root, tmp_path)
    records = [r for r in log(root) if r.get("event") == "restate"]
    assert {(r["node"], r["reason"]) for r in records} >= {("hourly", "fix the hourly filter")}
    completes = [r for r in log(root) if r.get("event") == "complete" and r.get("mode") == "dagster"]
    assert {r["node"] for r in completes} == set(project.nodes)
    assert {r["run_id"] for r in completes} == {result.run_id}
    assert plan_json(root)["total_intervals"] == 0


def test_run_false_only_records_and_an_unchanged_project_records_nothing(tmp_path):
    root = chain(tmp_path / "p")
    run(root, "run", "--backfill")
    before = (root / "target" / "run_log.jsonl").read_text()
    assert apply(root)[0].success
    assert (root / "target" / "run_log.jsonl").read_text() == before  # nothing changed
    edit_hourly(root, "v AS amount", "v * 2 AS amount")
    assert apply(root, run=False, **{"from": "2024-02-01"})[0].success
    store = open_store(root)
    assert [r.resolved_by for r in store.node("hourly").restatements] == [None]  # recorded, not run
    assert not store.node("daily_users").restatements
    assert store.node("hourly").fingerprint == load_project(root).nodes["hourly"].fingerprint


def test_the_asset_code_version_is_the_node_fingerprint(tmp_path):
    root = chain(tmp_path / "p")
    project = load_project(root)
    graph = build_definitions(root).resolve_asset_graph()
    for name, node in project.nodes.items():
        assert graph.get(dg.AssetKey(name)).code_version == node.fingerprint


def test_the_job_can_be_left_out(tmp_path):
    root = chain(tmp_path / "p")
    names = {j.name for j in build_definitions(root, apply_job=False).resolve_all_job_defs()}
    assert APPLY_JOB not in names
    assert APPLY_JOB in {j.name for j in build_definitions(root).resolve_all_job_defs()}


def test_sql_that_does_not_parse_fails_the_job_with_the_cli_line_and_records_nothing(tmp_path):
    """The parse check lives in the runner's change plan, so the Dagster door refuses
    broken SQL as `seeknal plan --apply` does: the same line, nothing recorded."""
    root = chain(tmp_path / "p")
    run(root, "run", "--backfill")
    edit_hourly(root, "AND v > 0", "AND v > 0 AND (v")
    before = (root / "target" / "run_state.json").read_bytes()
    result, _ = apply(root, reason="broken")
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "node 'hourly'" in message and "its SQL does not parse" in message and "nothing was recorded" in message
    assert (root / "target" / "run_state.json").read_bytes() == before
