"""The runner's one door under Dagster: the rules ``seeknal run`` applies hold when a
Dagster run materialises the same project (real Dagster instance, real DuckDB, the CLI in
a subprocess for the side it is compared with).

* ``on_change: fail``: the asset's step fails with the CLI's one line, nothing written;
* ``on_change: apply``: the change plan is recorded as the CLI records it, then the run;
* start inference: a node without ``start:`` infers and records its start as the CLI does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
from test_cli import seeknal, state_bytes
from test_dagster_assets import materialize
from test_plan import NOW, chain, edit_hourly, fresh_recompute, log, run, tables
from test_start_inference import _without_start

from seeknal_core.state import open_store
from seeknal_dagster import build_definitions

HOUR = "2024-02-09-05:00"  # one hourly partition inside the chain's computed history


def _failure(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.event_specific_data.error.message


def _restate_records(root: Path) -> list[tuple]:
    return sorted((r["node"], r["reason"], json.dumps(r["intervals"]))
                  for r in log(root) if r.get("event") == "restate")


def test_on_change_fail_refuses_under_dagster_with_the_cli_line_and_writes_nothing(tmp_path):
    root = chain(tmp_path / "p", settings="on_change: fail\n")
    run(root, "run", "--backfill")
    edit_hourly(root, "AND v > 0", "AND v > 50")
    before_state, before_tables = state_bytes(root), tables(root)
    before_log = (root / "target" / "run_log.jsonl").read_bytes()

    cli = seeknal("run", "-p", str(root), now=NOW)
    assert cli.returncode == 2 and cli.stderr.startswith("Error: ")
    line = cli.stderr.strip().removeprefix("Error: ")

    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(build_definitions(root), instance, "hourly", partition=HOUR, ok=False)
        assert not instance.get_materialized_partitions(dg.AssetKey("hourly"))
    assert line in _failure(result)
    assert state_bytes(root) == before_state  # no data, no state
    assert (root / "target" / "run_log.jsonl").read_bytes() == before_log
    assert tables(root) == before_tables

    # an unchanged node of the same project is not refused (the rule is about the nodes run)
    edit_hourly(root, "AND v > 50", "AND v > 0")
    with dg.DagsterInstance.ephemeral() as instance:
        materialize(build_definitions(root), instance, "hourly", partition=HOUR)


def test_on_change_apply_under_dagster_records_like_the_cli_then_runs(tmp_path):
    root = chain(tmp_path / "p", settings="on_change: apply\n")
    run(root, "run", "--backfill")
    edit_hourly(root, "AND v > 0", "AND v > 50")
    cli_root = tmp_path / "cli"
    shutil.copytree(root, cli_root)

    run(cli_root, "run", "--node", "hourly")  # the CLI door, same selection: records the plan, then runs
    with dg.DagsterInstance.ephemeral() as instance:
        materialize(build_definitions(root), instance, "hourly", partition=HOUR)
    assert _restate_records(root) == _restate_records(cli_root)  # the same change plan recorded
    store = open_store(root)
    assert store.node("hourly").fingerprint == open_store(cli_root).node("hourly").fingerprint
    # the partition ran with the new definition, recorded by the Dagster run
    completes = [r for r in log(root) if r.get("event") == "complete" and r.get("mode") == "dagster"]
    assert [r["intervals"] for r in completes] == [[["2024-02-09T05:00:00Z", "2024-02-09T06:00:00Z"]]]
    # what the change restated is still due: the next run computes it, like a fresh recompute
    run(root, "run")
    assert tables(root) == fresh_recompute(root, tmp_path)


def test_a_node_without_start_infers_and_records_it_under_dagster_like_the_cli(tmp_path):
    roots = []
    for name in ("dagster", "cli"):
        root = _without_start(tmp_path / name)
        (root / "seeknal_project.yml").write_text("name: t\nend: 2024-01-05\n")  # bounds the real clock
        roots.append(root)
    dagster_root, cli_root = roots
    defs = build_definitions(dagster_root)  # loads: a node without start is an unpartitioned asset
    assert defs.resolve_assets_def("events_flow").partitions_def is None
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(defs, instance, "events_flow")
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("start inferred from raw_events.event_time: 2024-01-02" in m for m in messages)
    run(cli_root, "run")

    dagster_state, cli_state = (open_store(r).node("events_flow") for r in roots)
    assert dagster_state.inferred_start == cli_state.inferred_start is not None
    assert dagster_state.inferred_start.isoformat() == "2024-01-02T05:00:00+00:00"
    assert dagster_state.completed == cli_state.completed and dagster_state.completed
    rows = []
    for root in roots:
        con = duckdb.connect(str(root / "target" / "warehouse.duckdb"), read_only=True)
        rows.append(con.execute("SELECT * FROM events_flow ORDER BY ALL").fetchall())
        con.close()
    assert rows[0] == rows[1] and rows[0]
