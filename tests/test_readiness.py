"""Per-source readiness (issue 19): intervals whose data is not in wait, on real DuckDB
through the CLI (in process and as the `seeknal` command)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
from click.testing import CliRunner
from test_cli import EVENTS_FLOW, invoke, make_project, seeknal, state_bytes

from seeknal_core.cli import cli

NOW = "2024-01-12T06:00:00Z"  # the CSV holds hourly rows up to 2024-01-10 23:00


def _source(root: Path, ready: str) -> None:
    (root / "seeknal" / "sources" / "raw_events.yml").write_text(
        "raw_events:\n  path: data/raw_events.csv\n  time_column: event_time\n" + ready)


def _completed(root: Path, node: str = "events_flow") -> list:
    return json.loads((root / "target" / "run_state.json").read_text())["nodes"][node]["completed_intervals"]


def test_watermark_default_waits_then_runs_when_the_data_lands(tmp_path):
    root = make_project(tmp_path)
    run = invoke(root, "run", now=NOW)
    assert run.exit_code == 0, run.output
    assert "events_flow: Processing 10 new intervals (2024-01-01 to 2024-01-11)" in run.output
    assert "events_flow: 1 interval waiting for raw_events (data up to 2024-01-10 23:00)" in run.output
    assert _completed(root) == [["2024-01-01T00:00:00Z", "2024-01-11T00:00:00Z"]]
    pending = invoke(root, "intervals", "pending", now=NOW)
    assert pending.output == ("Pending intervals (1):\n  2024-01-11 to 2024-01-12 "
                              "(waiting for raw_events: data up to 2024-01-10 23:00)\n")
    data = json.loads(invoke(root, "intervals", "pending", "--json", now=NOW).output)
    [held] = data["nodes"][0]["intervals"]
    assert held["reason"] == "waiting" and held["source"] == "raw_events"
    assert held["watermark"] == "2024-01-10T23:00:00+00:00"
    result = json.loads(invoke(root, "run", "--json", now=NOW).output)
    assert result["intervals"] == 0 and result["waiting"][0]["reason"] == "waiting"
    assert result["waiting"][0]["watermark"] == "2024-01-10T23:00:00+00:00"
    # a file lands with one row of Jan 11 at 00:10: the day has begun, so it is ready
    with open(root / "data" / "raw_events.csv", "a") as f:
        f.write("2024-01-11 00:10:00,1,5\n")
    again = invoke(root, "run", now=NOW)
    assert "events_flow: Processing 1 new interval (2024-01-11 to 2024-01-12)" in again.output
    assert "waiting" not in again.output


def test_strict_waits_for_a_row_at_or_after_the_end(tmp_path):
    root = make_project(tmp_path)
    _source(root, "  ready: {watermark: event_time, strict: true}\n")
    run = invoke(root, "run", now=NOW)
    assert "events_flow: Processing 9 new intervals (2024-01-01 to 2024-01-10)" in run.output
    assert "events_flow: 2 intervals waiting for raw_events (data up to 2024-01-10 23:00)" in run.output


def test_sql_readiness_is_complete_up_to_its_instant(tmp_path):
    root = make_project(tmp_path)
    _source(root, "  ready: {sql: \"SELECT TIMESTAMP '2024-01-05 00:00'\"}\n")
    run = invoke(root, "run", now=NOW)
    assert "events_flow: Processing 4 new intervals (2024-01-01 to 2024-01-05)" in run.output
    assert "events_flow: 7 intervals waiting for raw_events (complete up to 2024-01-05 00:00)" in run.output


def test_python_readiness_decides_per_interval(tmp_path, monkeypatch):
    (tmp_path / "signals_mod.py").write_text(
        "CALLS = []\n"
        "def even_days(source, intervals):\n"
        "    CALLS.append((source.name, len(intervals)))\n"
        "    return [(a, b) for a, b in intervals if a.day % 2 == 0]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    root = make_project(tmp_path / "p")
    _source(root, "  ready: {python: \"signals_mod:even_days\"}\n")
    run = invoke(root, "run", now=NOW)
    assert run.exit_code == 0, run.output
    import signals_mod

    assert signals_mod.CALLS == [("raw_events", 11)]  # one call with every interval
    assert "events_flow: 6 intervals waiting for raw_events" in run.output
    assert [a[8:10] for a, _ in _completed(root)] == ["02", "04", "06", "08", "10"]


def test_ignore_readiness_and_backfill(tmp_path):
    root = make_project(tmp_path)
    back = invoke(root, "intervals", "backfill", "events_flow", "--start", "2024-01-09", "--end", "2024-01-12",
                  now=NOW)
    assert "events_flow: Processing 2 missing intervals (2024-01-09 to 2024-01-11)" in back.output
    assert "events_flow: 1 interval waiting for raw_events (data up to 2024-01-10 23:00)" in back.output
    forced = invoke(root, "run", "--ignore-readiness", now=NOW)
    assert "events_flow: Processing 1 new interval (2024-01-11 to 2024-01-12)" in forced.output
    assert "waiting" not in forced.output


def test_a_failing_readiness_query_exits_2_and_runs_nothing(tmp_path):
    root = make_project(tmp_path)
    _source(root, "  ready: {sql: \"SELECT max(loaded_until) FROM no_such_table\"}\n")
    run = CliRunner().invoke(cli, ["run", "--project-path", str(root)], env={"SEEKNAL_NOW": NOW})
    assert run.exit_code == 2
    lines = run.output.strip().splitlines()
    assert len(lines) == 1 and "source 'raw_events': readiness query failed" in lines[0], run.output
    assert state_bytes(root) is None


def test_bad_ready_values_name_file_source_and_field(tmp_path):
    root = make_project(tmp_path)
    _source(root, "  ready: watermak\n")
    out = invoke(root, "run", now=NOW)
    assert out.exit_code == 2
    assert "raw_events.yml: node 'raw_events' field 'ready': unknown readiness 'watermak' — did you mean " \
           "'watermark'?" in out.output
    _source(root, "  ready: {sql: 'SELECT 1', stric: true}\n")
    assert "did you mean 'strict'?" in invoke(root, "run", now=NOW).output


def test_one_readiness_query_per_source_per_command(tmp_path):
    """Three nodes (daily, hourly, and one more daily) read one table source over 11 days of
    intervals: its readiness query runs once, counted by a DuckDB function it calls."""
    from seeknal_core import runner
    from seeknal_core.engines.duckdb import DuckDBEngine
    from seeknal_core.project import load_project
    from seeknal_core.state import open_store

    hourly = EVENTS_FLOW.replace("events_flow:", "hourly_flow:").replace('"@daily"', '"@hourly"')
    other = EVENTS_FLOW.replace("events_flow:", "other_flow:")
    root = make_project(tmp_path, EVENTS_FLOW, hourly, other)
    (root / "seeknal" / "sources" / "raw_events.yml").write_text(
        "raw_events:\n  table: raw_events\n  time_column: event_time\n"
        "  ready: {sql: \"SELECT CASE WHEN readiness_call() > 0 THEN max(event_time) END FROM raw_events\"}\n")
    project = load_project(root)
    project.database_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(project.database_path))
    con.execute(f"CREATE TABLE raw_events AS SELECT * FROM read_csv_auto('{root / 'data' / 'raw_events.csv'}')")
    calls = []
    con.create_function("readiness_call", lambda: calls.append(1) or 1, [], "INTEGER", side_effects=True)
    store = open_store(project.root, project.state_config)
    result = runner.run(project, store, engine=DuckDBEngine(project, connection=con), now=NOW)
    by_node = {n.node: n for n in result.plan.nodes}
    assert len(by_node["hourly_flow"].due) == 239 and len(by_node["events_flow"].due) == 9
    assert [w.count for w in by_node["events_flow"].waiting] == [2]  # complete up to 23:00
    assert len(calls) == 1
    con.close()


def test_init_project_first_run_processes_exactly_the_days_with_data(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "SEEKNAL_NOW"}
    root = tmp_path / "my_project"
    subprocess.run([sys.executable, "-m", "seeknal_core.cli", "init", str(root)], check=True, env=env,
                   capture_output=True)
    run = subprocess.run([sys.executable, "-m", "seeknal_core.cli", "run"], cwd=root, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "events_flow: Processing 31 new intervals (2024-01-01 to 2024-02-01)"
    assert "waiting for raw_events (data up to 2024-01-31 23:30)" in run.stdout.splitlines()[1]
    assert _completed(root) == [["2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"]]


def test_example_project_hours_past_the_data_wait_and_run_once_it_lands(tmp_path):
    """`make dagster`'s data ends at the last finished hour: later hours wait (not computed
    empty and recorded complete) and run with the events once regenerated data reaches them."""
    import shutil

    example = Path(__file__).resolve().parent.parent / "example_project"
    root = tmp_path / "example_project"
    shutil.copytree(example, root, ignore=shutil.ignore_patterns("data", "target", "__pycache__"))

    def generate(end: str) -> None:
        subprocess.run([sys.executable, str(root / "generate_data.py"), "--rows", "20000", "--end", end],
                       check=True, capture_output=True)

    generate("2024-04-01T00:00")
    first = seeknal("run", "--node", "hourly_events", cwd=root, now="2024-04-01T05:30:00Z")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "hourly_events: 5 intervals waiting for events (data up to 2024-03-31 23:" in first.stdout
    assert _completed(root, "hourly_events")[-1][1] == "2024-04-01T00:00:00Z"
    generate("2024-04-01T05:00")  # the regenerated data now reaches 05:00
    second = seeknal("run", "--node", "hourly_events", cwd=root, now="2024-04-01T05:30:00Z")
    assert "hourly_events: Processing 5 new intervals (2024-04-01 00:00 to 2024-04-01 05:00)" in second.stdout
    assert _completed(root, "hourly_events")[-1][1] == "2024-04-01T05:00:00Z"
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"), read_only=True)
    computed = con.execute("SELECT sum(events) FROM hourly_events WHERE hour >= TIMESTAMP '2024-04-01'").fetchone()[0]
    landed = con.execute(f"SELECT count(*) FROM read_parquet('{root / 'data' / 'events' / '*.parquet'}') "
                         "WHERE event_time >= TIMESTAMP '2024-04-01'").fetchone()[0]
    con.close()
    assert landed > 0 and computed == landed


def test_an_unchanged_source_is_not_asked_again(tmp_path):
    """The watermark of files unchanged since the last command comes from
    target/readiness_cache.json: `intervals pending` then never imports duckdb; a new row
    (the file changes) is seen at once."""
    import os

    root = make_project(tmp_path)
    csv = root / "data" / "raw_events.csv"
    os.utime(csv, (1_700_000_000, 1_700_000_000))  # written long ago (not "racy")
    assert invoke(root, "run", now=NOW).exit_code == 0
    probe = ("import sys; from seeknal_core.cli import cli; "
             "cli(['intervals', 'pending', '--project-path', sys.argv[1]], standalone_mode=False); "
             "print('duckdb' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, str(root)], capture_output=True, text=True,
                         env={**os.environ, "SEEKNAL_NOW": NOW})
    assert out.stdout.splitlines()[-1] == "False", out.stdout + out.stderr
    assert "waiting for raw_events: data up to 2024-01-10 23:00" in out.stdout
    with open(csv, "a") as f:
        f.write("2024-01-11 00:10:00,1,5\n")
    assert "data up to 2024-01-11 00:10" in invoke(root, "intervals", "show", now=NOW).output


def test_the_tutorials_first_run_processes_all_available_data_on_the_real_clock(tmp_path):
    """The tutorial's Part 2.2 ("First run - processes all available data") over three days
    of events, on today's clock: exactly its three intervals, as its sample shows."""
    import os

    from test_tutorial import SAMPLE_2_2

    root = make_project(tmp_path, days=3)
    env = {k: v for k, v in os.environ.items() if k != "SEEKNAL_NOW"}
    first = subprocess.run([sys.executable, "-m", "seeknal_core.cli", "run", "--project-path", str(root)],
                           env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == "events_flow: Processing 3 new intervals (2024-01-01 to 2024-01-04)"
    show = subprocess.run([sys.executable, "-m", "seeknal_core.cli", "intervals", "show"], cwd=root, env=env,
                          capture_output=True, text=True).stdout
    assert show.startswith(SAMPLE_2_2)
