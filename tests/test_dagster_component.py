"""The Dagster-native surface on real Dagster: the ``dg`` component (loaded from a generated
``dg`` project, ``dg scaffold`` and ``dg check defs`` as subprocesses), declarative
automation evaluated on a real instance, restatements shown in Dagster's own partition
status, readable names, and seeknal's error for a cron Dagster rejects."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
from test_dagster_assets import NODES, execute, make_project, materializations, materialize, store_of
from test_dagster_assets import instance as instance  # fixture
from test_runner import rows as query

from seeknal_core.errors import SeeknalError
from seeknal_dagster import build_definitions
from seeknal_dagster.checks import sync_status
from seeknal_dagster.schedules import cron_label
from seeknal_dagster.sensors import reconcile_tick

BIN = Path(sys.executable).parent
PYPROJECT = """\
[project]
name = "shop-dg"
version = "0.1.0"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "shop_dg"
registry_modules = ["seeknal_dagster"]
"""
DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs():
    return dg.load_from_defs_folder(project_root=Path(__file__).resolve().parent.parent)
"""


def dg_project(root: Path) -> Path:
    """A ``dg`` project folder with a seeknal project inside it, no component yet."""
    make_project(root / "seeknal_project")
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "shop_dg" / "defs").mkdir(parents=True)
    (root / "shop_dg" / "__init__.py").write_text("")
    (root / "shop_dg" / "definitions.py").write_text(DEFINITIONS)
    return root


def dg_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(root / ".home"), "DAGSTER_DISABLE_TELEMETRY": "yes",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    (root / ".home").mkdir(exist_ok=True)
    return subprocess.run([str(BIN / "dg"), *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)


def summary(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    return {
        "assets": {k: (graph.get(k).partitions_def, graph.get(k).code_version,
                       graph.get(k).automation_condition is not None) for k in graph.get_all_asset_keys()},
        "checks": set(graph.asset_check_keys),
        "sensors": {s.name for s in defs.sensors or ()},
        "schedules": {s.name for s in defs.schedules or ()},
    }


def test_component_from_a_dg_project_equals_build_definitions(tmp_path: Path, monkeypatch) -> None:
    root = dg_project(tmp_path / "shop")
    monkeypatch.syspath_prepend(str(root))  # as `dg` runs it: the project folder importable
    (root / "shop_dg" / "defs" / "warehouse").mkdir()
    (root / "shop_dg" / "defs" / "warehouse" / "defs.yaml").write_text(textwrap.dedent("""\
        type: seeknal_dagster.SeeknalProjectComponent
        attributes:
          project: "{{ context.project_root }}/seeknal_project"
        """))
    loaded = dg.load_from_defs_folder(project_root=root)
    direct = build_definitions(root / "seeknal_project")
    assert summary(loaded) == summary(direct)
    assert dg.AssetKey("daily") in summary(loaded)["assets"]
    assert {"seeknal_reconcile", "seeknal_restatements", "seeknal_checks"} <= summary(loaded)["sensors"]

    # optional attributes: a key prefix, schedules instead of automation, no sensors
    (root / "shop_dg" / "defs" / "warehouse" / "defs.yaml").write_text(textwrap.dedent("""\
        type: seeknal_dagster.SeeknalProjectComponent
        attributes:
          project: "{{ context.project_root }}/seeknal_project"
          key_prefix: [shop]
          automation: schedules
          sensors: false
          nodes: [hourly]
        """))
    custom = summary(dg.load_from_defs_folder(project_root=root))
    assert set(custom["assets"]) == {dg.AssetKey(["shop", "hourly"]), dg.AssetKey(["shop", "raw"])}
    assert not any(auto for _, _, auto in custom["assets"].values())
    assert custom["schedules"] == {"seeknal_hourly_utc"} and not custom["sensors"]


def test_dg_scaffold_writes_a_defs_yaml_that_dg_check_accepts(tmp_path: Path) -> None:
    root = dg_project(tmp_path / "shop")
    scaffold = dg_cli(root, "scaffold", "defs", "seeknal_dagster.SeeknalProjectComponent", "shop")
    assert scaffold.returncode == 0, scaffold.stderr[-2000:]
    text = (root / "shop_dg" / "defs" / "shop" / "defs.yaml").read_text()
    assert "type: seeknal_dagster.SeeknalProjectComponent" in text and "seeknal_project" in text
    check = dg_cli(root, "check", "defs")
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "All definitions loaded successfully" in check.stdout + check.stderr


def test_daily_is_requested_only_after_its_24_hours(tmp_path: Path, instance) -> None:
    """The automation condition on a real instance: nothing before the day's 24 hours are in,
    the day once they are, and not twice."""
    defs = build_definitions(make_project(tmp_path / "p"))
    daily = dg.AssetKey("daily")
    at = dt.datetime(2024, 1, 3, 0, 5, tzinfo=dt.UTC)
    cursor = None

    def evaluate(minutes: int):
        nonlocal cursor
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(daily),
            evaluation_time=at + dt.timedelta(minutes=minutes), cursor=cursor)
        cursor = result.cursor
        return result.get_requested_partitions(daily)

    assert evaluate(-10) == set()  # before midnight: the day has not closed
    hours = [f"2024-01-02-{h:02d}:00" for h in range(24)]
    for hour in hours[:23]:
        instance.report_runless_asset_event(dg.AssetMaterialization("hourly", partition=hour))
    assert evaluate(0) == set()  # closed, but 23:00 is missing
    instance.report_runless_asset_event(dg.AssetMaterialization("hourly", partition=hours[23]))
    assert evaluate(1) == {"2024-01-02"}
    assert evaluate(2) == set()


def test_cli_restatement_is_recorded_on_the_asset_and_resolved_by_a_recompute(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    defs = build_definitions(root)
    hourly, daily, summary_key = dg.AssetKey("hourly"), dg.AssetKey("daily"), dg.AssetKey("summary")
    with dg.instance_for_test() as instance:  # a sqlite event log: it can wipe partitions
        materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-01-23:00")
        materialize(defs, instance, "daily", partition="2024-01-01")
        materialize(defs, instance, "summary")
        before_summary = instance.get_latest_materialization_event(summary_key).timestamp

        restate = subprocess.run(  # restates the hours and, downstream, their day
            [str(BIN / "seeknal"), "intervals", "restate", "-p", str(root), "--node", "hourly",
             "--start", "2024-01-01T02:00:00", "--end", "2024-01-01T04:00:00", "--reason", "late data"],
            capture_output=True, text=True, timeout=120)
        assert restate.returncode == 0, restate.stderr
        result = reconcile_tick(defs_project(root), store_of(root), instance, {})
        # open-source Dagster 1.13 cannot wipe single partitions (sqlite and PostgreSQL event
        # logs raise NotImplementedError): the restatement is recorded on each asset, nothing
        # else is touched, and the in-sync check names the restated partitions
        assert sorted(m.split(" of ")[1].split(":")[0] for m in result.messages) == ["daily", "hourly"]
        assert all("cannot wipe partitions" in m for m in result.messages)
        assert len(instance.get_materialized_partitions(hourly)) == 24
        assert instance.get_materialized_partitions(daily) == {"2024-01-01"}
        assert instance.get_latest_materialization_event(summary_key).timestamp == before_summary
        [observation] = [r.asset_observation for r in instance.fetch_observations(hourly, limit=10).records]
        assert "late data" in observation.description and "Restated by" in observation.description
        assert observation.metadata["seeknal/restated_count"].value == 2
        status = sync_status(store_of(root), instance, defs_project(root).nodes["hourly"], hourly)
        assert status.restated == ["2024-01-01-02:00", "2024-01-01-03:00"]
        assert "the seeknal_restatements sensor shows them Failed until recomputed" in status.description()

        # a second tick wipes nothing more; recomputing brings them back, restatements resolved
        again = reconcile_tick(defs_project(root), store_of(root), instance, result.cursor)
        assert not again.messages and len(instance.fetch_observations(hourly, limit=10).records) == 1
        materialize(defs, instance, "hourly", first="2024-01-01-02:00", last="2024-01-01-03:00")
        materialize(defs, instance, "daily", partition="2024-01-01")
        assert len(instance.get_materialized_partitions(hourly)) == 24
        assert instance.get_materialized_partitions(daily) == {"2024-01-01"}
        assert not store_of(root).pending_restatements()


def defs_project(root: Path):
    from seeknal_core.project import load_project
    return load_project(root)


@pytest.mark.parametrize(("cron", "label"), [
    ("0 2 * * 0", "weekly_sun_0200"), ("0 0 * * *", "daily"), ("15 * * * *", "hourly_at_15"),
    ("30 6 * * *", "daily_0630"), ("0 6 1 * *", "monthly_day1_0600"), ("*/5 * * * *", "x_every_5_x_x_x_x"),
])
def test_schedule_names_read_like_the_schedule(cron: str, label: str) -> None:
    assert cron_label(cron) == label


def test_cron_dagster_rejects_is_one_line_naming_the_node(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", NODES + 'never:\n  schedule: "0 0 30 2 3"\n  sql: SELECT 1 AS x\n'
                                                "  time_column: x\n")
    with pytest.raises(SeeknalError) as info:
        build_definitions(root)
    message = str(info.value)
    assert "node 'never'" in message and "0 0 30 2 3" in message and "\n" not in message


def test_asset_shows_its_timezone_and_a_plain_description(tmp_path: Path) -> None:
    nodes = NODES.replace('daily:\n  schedule: "@daily"\n', 'daily:\n  schedule: "@daily"\n'
                          "  timezone: America/New_York\n")
    graph = build_definitions(make_project(tmp_path / "p", nodes)).resolve_asset_graph()
    daily = graph.get(dg.AssetKey("daily"))
    assert "America/New_York" in daily.description and "```" not in daily.description
    assert daily.metadata["seeknal/timezone"] == "America/New_York"
    assert daily.tags["seeknal/timezone"] == "America_New_York"
    assert "```sql" in daily.metadata["seeknal/sql"].value
    assert daily.freshness_policy is not None


PASS_THROUGH = """
events:
  schedule: "@hourly"
  sql: SELECT ts, v FROM raw WHERE ts >= TIMESTAMP '{{ start }}' AND ts < TIMESTAMP '{{ end }}'
  time_column: ts
"""


def test_every_partition_carries_its_own_rows(tmp_path: Path, instance) -> None:
    """A single-run range backfill: each partition's `rows` is that hour's count in DuckDB;
    partitions the CLI completed carry their rows too, reported by the reconcile sensor."""
    root = make_project(tmp_path / "p", PASS_THROUGH, days=3)
    con_sql = "DELETE FROM raw WHERE (v % 3 = 0) OR (ts >= TIMESTAMP '2024-01-01 07:00' AND v % 2 = 0)"
    execute(root, con_sql)  # uneven hours, so a run total would not pass for a partition's rows
    defs = build_definitions(root)
    result = materialize(defs, instance, "events", first="2024-01-01-00:00", last="2024-01-01-23:00")
    counts = dict(query(root, "SELECT strftime(date_trunc('hour', ts), '%Y-%m-%d-%H:%M'), count(*) "
                              "FROM events GROUP BY 1"))
    mats = {m.partition: m for m in materializations(result, "events")}
    assert len(mats) == 24 and len(set(counts.values())) > 1
    for key, mat in mats.items():
        assert mat.metadata["rows"].value == counts.get(key, 0), key
        assert mat.metadata["interval_start"].value.startswith(key[:10])
        assert mat.metadata["run/rows"].value == sum(counts.values())

    cli = subprocess.run([str(BIN / "seeknal"), "run", "-p", str(root), "--start", "2024-01-02",
                          "--end", "2024-01-02T06:00:00"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "SEEKNAL_NOW": "2024-01-04T00:00:00Z"})
    assert cli.returncode == 0, cli.stdout + cli.stderr
    counts = dict(query(root, "SELECT strftime(date_trunc('hour', ts), '%Y-%m-%d-%H:%M'), count(*) "
                              "FROM events WHERE ts >= TIMESTAMP '2024-01-02' GROUP BY 1"))
    reported = reconcile_tick(defs_project(root), store_of(root), instance, {}).events
    assert {e.partition for e in reported} == set(counts) and len(counts) == 6
    for event in reported:
        assert event.metadata["rows"].value == counts[event.partition]
        assert event.metadata["run/duration_seconds"].value >= 0

