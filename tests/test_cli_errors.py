"""User errors: one `Error: ...` line on stderr, exit code 2 (1 for failed intervals), no
traceback, and the state file byte-for-byte unchanged."""

from __future__ import annotations

import json

import pytest
from test_cli import EVENTS_FLOW, TOTALS, invoke, make_project, seeknal, state_bytes


@pytest.fixture
def project(tmp_path):
    """A project whose first three days have run (so a state file exists)."""
    root = make_project(tmp_path, EVENTS_FLOW, TOTALS)
    assert invoke(root, "run").exit_code == 0
    return root


def one_error(result, code: int = 2) -> str:
    """The single stderr line of a failed command (CliRunner or subprocess)."""
    stderr = result.stderr
    exit_code = getattr(result, "exit_code", getattr(result, "returncode", None))
    assert exit_code == code, (exit_code, result.stdout, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr + result.stdout
    return lines[0]


CASES = [
    (["intervals", "list", "events_flw"], "unknown node 'events_flw' — did you mean 'events_flow'?"),
    (["intervals", "show", "nope"], "unknown node 'nope'"),
    (["intervals", "list", "totals"], "node 'totals' has no schedule"),
    (["intervals", "history", "raw_events"], "'raw_events' is a source, not a transform"),
    (["run", "--node", "events_flw"], "did you mean 'events_flow'?"),
    (["run", "--start", "2024-01-05", "--end", "2024-01-01"], "--start 2024-01-05 is after --end 2024-01-01"),
    (["intervals", "pending", "--start", "2024-01-05T00:00", "--end", "2024-01-01"], "is after --end"),
    (["run", "--start", "2024-13-01"], "Invalid value for '--start' / '--start-date': invalid date '2024-13-01'"),
    (["run", "--end-date", "yesterday"], "Invalid value for '--end'"),
    (["run", "--bogus"], "No such option '--bogus'. (see `seeknal run --help`)"),
    (["intervals", "frobnicate"], "No such command 'frobnicate'"),
    (["run", "--reason", "why"], "--reason goes with --restate"),
    (["run", "--restate", "--start", "2024-01-01"], "missing --end"),
    (["run", "--partitions", "2024-01-01", "--start", "2024-01-01"], "--partitions selects intervals by key"),
    (["run", "--partitions", ","], "give partition keys"),
    (["run", "--node", ",,"], "--node ',,' names no node"),
    (["intervals", "restate", "--node", " , ", "--start", "2024-01-01", "--end", "2024-01-01",
      "--reason", "r"], "names no node"),
    (["run", "--partitions", "01/02/2024"], "partition key '01/02/2024' does not match node 'events_flow'"),
    (["run", "--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["intervals", "restate", "--start", "2024-01-01", "--end", "2024-01-02", "--reason", " "],
     "a restatement needs a reason"),
    (["intervals", "restate", "--node", "totals", "--start", "2024-01-01", "--end", "2024-01-02",
      "--reason", "r"], "node 'totals' has no schedule"),
    (["intervals", "pending", "--schedule", "61 * * * *"], "Invalid value for '--schedule': invalid cron"),
    (["intervals", "pending", "--schedule", "@hourly"], "no node runs on schedule '@hourly'"),
    (["intervals", "pending", "events_flow", "--schedule", "@hourly"], "differs from node 'events_flow'"),
    (["intervals", "backfill", "events_flow", "--schedule", "0 2 * * *"],
     "--schedule '0 2 * * *' (0 2 * * *) differs from node 'events_flow' schedule '@daily'"),
    (["intervals", "backfill", "totals"], "node 'totals' has no schedule: pass --schedule"),
    (["intervals", "backfill", "totals", "--schedule", "@daily"], "node 'totals' needs time_column"),
    (["intervals", "complete", "events_flow", "--interval", "2024-01-04"],
     "node 'events_flow' interval 2024-01-04 to 2024-01-05 has not ended yet"),
    (["intervals", "complete", "--interval", "2024-01-03/2024-01-01"], "start is not before end"),
    (["intervals", "complete", "events_flow"], "Missing option '--interval'"),
    (["intervals", "complete", "--interval", "Jan 1"], "invalid date 'Jan 1'"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_user_errors_are_one_line_exit_2_and_change_nothing(project, args, message):
    before = state_bytes(project)
    line = one_error(invoke(project, *args))
    assert message in line
    assert state_bytes(project) == before


def test_bad_clock_override(project):
    assert "$SEEKNAL_NOW: invalid date 'soon'" in one_error(invoke(project, "run", now="soon"))


@pytest.mark.parametrize(("settings", "node", "message"), [
    ("", EVENTS_FLOW.replace('"@daily"', '"61 * * * *"'), "field 'schedule': invalid cron '61 * * * *'"),
    ("", EVENTS_FLOW.replace('"@daily"', '"@fortnightly"'), "unknown schedule preset '@fortnightly'"),
    ("timezone: Mars/Olympus\n", EVENTS_FLOW, "unknown timezone 'Mars/Olympus'"),
    ("", EVENTS_FLOW.replace("schedule:", "schedul:"), "unknown field 'schedul' — did you mean 'schedule'?"),
    ("state: {backend: mongo}\n", EVENTS_FLOW, "unknown state backend 'mongo'"),
])
def test_configuration_errors(tmp_path, settings, node, message):
    root = make_project(tmp_path, node, settings=settings)
    assert message in one_error(invoke(root, "intervals", "pending"))


def test_not_a_project(tmp_path):
    assert "is not a seeknal project" in one_error(invoke(tmp_path, "intervals", "show"))
    assert "does not exist" in one_error(invoke(tmp_path / "missing", "run"))


def test_corrupt_state_file_is_reported_and_kept(project):
    path = project / "target" / "run_state.json"
    path.write_bytes(b'{"schema_version": 1, "nodes": {')
    before = path.read_bytes()
    for args in (["intervals", "show"], ["intervals", "pending"], ["run"],
                 ["intervals", "complete", "events_flow", "--interval", "2024-01-01"]):
        line = one_error(invoke(project, *args))
        assert "run_state.json" in line
    assert path.read_bytes() == before


def test_sql_error_is_a_failed_interval_exit_1(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW.replace("count(*)", "count(nope)"))
    result = seeknal("run", cwd=root)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    # a binder error is the query's: the batch of 3 intervals fails once, with one line
    assert len(lines) == 1 and lines[0].startswith(
        "Error: node 'events_flow' interval 2024-01-01T00:00:00+00:00 to 2024-01-04T00:00:00+00:00:")
    assert "nope" in lines[0] and "Traceback" not in result.stderr
    assert "Finished with problems: 0 intervals, 0 rows, 3 failed" in result.stdout
    many = invoke(root, "run", now="2024-01-10T00:00:00Z")  # 3 retried one by one + 6 new as a batch
    assert many.exit_code == 1 and len(many.stderr.splitlines()) == 4
    state = json.loads((root / "target" / "run_state.json").read_text())
    assert state["nodes"]["events_flow"]["completed_intervals"] == []


def test_errors_in_a_real_subprocess(project):
    before = state_bytes(project)
    for args, message in [(["intervals", "list", "events_flw"], "did you mean 'events_flow'?"),
                          (["run", "--start", "2024-01-05", "--end", "2024-01-01"], "is after --end"),
                          (["intervals", "backfill", "events_flow", "--schedule", "@hourly"], "differs")]:
        assert message in one_error(seeknal(*args, cwd=project))
    assert state_bytes(project) == before


def test_missing_output_time_column_stops_the_run_with_one_line(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW.replace("time_column: day", "time_column: ts"))
    line = one_error(invoke(root, "run"))
    assert "node 'events_flow': its SQL has no output column 'ts'" in line


def test_a_node_without_start_is_noted_not_run(tmp_path):
    root = make_project(tmp_path)
    (root / "seeknal_project.yml").write_text("name: t\n")
    (root / "data" / "raw_events.csv").write_text("event_time,user_id,v\n")  # nothing to infer a start from
    result = invoke(root, "run")
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == "events_flow: nothing to do"
    assert result.output.splitlines()[1].startswith("events_flow: note: no start: set `start:`")
    pending = invoke(root, "intervals", "pending")
    assert pending.output.startswith("Pending intervals (0)\n  events_flow: note: start unknown until the first `seeknal run`")
    ranged = invoke(root, "intervals", "pending", "--start", "2024-01-02")
    # the range is pending, and waits: the source has no rows yet (readiness)
    assert ranged.output == ("Pending intervals (2):\n"
                             "  2024-01-02 to 2024-01-03 (waiting for raw_events: no data yet)\n"
                             "  2024-01-03 to 2024-01-04 (waiting for raw_events: no data yet)\n")
