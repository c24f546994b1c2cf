"""The `seeknal` CLI end to end: the seed guide's and the tutorial's flows as real
subprocesses, every command through click's CliRunner, JSON shapes and exit codes.

Projects are built in tmp_path over a small CSV source; SEEKNAL_NOW fixes the clock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from seeknal_core.cli import cli

SEEKNAL = str(Path(sys.executable).with_name("seeknal"))

EVENTS_FLOW = """\
events_flow:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT CAST(event_time AS DATE) AS day, count(*) AS n, sum(v) AS v FROM raw_events
    WHERE event_time >= '{{ start }}' AND event_time < '{{ end }}' {guard} GROUP BY ALL
"""

HOURLY = """\
hourly:
  schedule: "0 * * * *"
  time_column: hour
  sql: |
    SELECT date_trunc('hour', event_time) AS hour, count(*) AS n FROM raw_events
    WHERE event_time >= '{{ start }}' AND event_time < '{{ end }}' GROUP BY ALL
"""

SUMMARY = """\
summary:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT day, sum(n) AS n FROM {{ ref('events_flow') }}
    WHERE day >= '{{ start }}' AND day < '{{ end }}' GROUP BY ALL
"""

TOTALS = """\
totals:
  sql: SELECT count(*) AS days FROM {{ ref('events_flow') }}
"""


def fail_on(day: str) -> str:
    """A SQL guard that makes the interval containing ``day`` fail."""
    return (f"AND CASE WHEN CAST(event_time AS DATE) = DATE '{day}' THEN error('injected failure') "
            "ELSE true END")


def write_csv(path: Path, days: int = 10, step_minutes: int = 60) -> None:
    start = dt.datetime(2024, 1, 1)
    lines = ["event_time,user_id,v"]
    for i in range(days * 24 * 60 // step_minutes):
        at = start + dt.timedelta(minutes=i * step_minutes)
        lines.append(f"{at:%Y-%m-%d %H:%M:%S},{i % 7},{(i * 37) % 101}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


#: what `intervals show` ends with over make_project's source (its newest row)
WATERMARK = "\nSource watermarks:\n  raw_events: data up to 2024-01-10 23:00 (watermark)\n"


def make_project(root: Path, *transforms: str, settings: str = "", days: int = 10,
                 guard: str = "") -> Path:
    """A project over `raw_events` (data/raw_events.csv, one row an hour from 2024-01-01)."""
    (root / "seeknal" / "sources").mkdir(parents=True, exist_ok=True)
    (root / "seeknal" / "transforms").mkdir(parents=True, exist_ok=True)
    (root / "seeknal_project.yml").write_text("name: t\nstart: 2024-01-01\n" + textwrap.dedent(settings))
    (root / "seeknal" / "sources" / "raw_events.yml").write_text(
        "raw_events:\n  path: data/raw_events.csv\n  time_column: event_time\n")
    text = "".join(transforms or (EVENTS_FLOW,)).replace("{guard}", guard)
    (root / "seeknal" / "transforms" / "nodes.yml").write_text(text)
    write_csv(root / "data" / "raw_events.csv", days)
    return root


def invoke(root: Path | None, *args: str, now: str | None = "2024-01-04T06:00:00Z"):
    """Run the CLI in-process (click's CliRunner); ``root`` becomes --project-path."""
    argv = [*args, "--project-path", str(root)] if root is not None else list(args)
    env = {"SEEKNAL_NOW": now} if now else {"SEEKNAL_NOW": ""}
    return CliRunner().invoke(cli, argv, env=env, catch_exceptions=False)


def seeknal(*args: str, cwd: Path | None = None, now: str | None = "2024-01-04T06:00:00Z",
            extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script in a real subprocess."""
    env = {k: v for k, v in os.environ.items() if k not in ("SEEKNAL_NOW", "NO_COLOR")}
    if now:
        env["SEEKNAL_NOW"] = now
    env.update(extra_env or {})
    return subprocess.run([SEEKNAL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def state_bytes(root: Path) -> bytes | None:
    path = root / "target" / "run_state.json"
    return path.read_bytes() if path.exists() else None


# -- the tutorial ------------------------------------------------------------------------------
def tutorial_project(root: Path) -> Path:
    """The tutorial's Part 2 with its Python API, over a DuckDB table `raw_events`."""
    import duckdb

    from seeknal_core.flow import DuckDBTask, Flow, FlowInput, FlowOutput, Project

    Project(name="ecommerce", path=root).get_or_create()
    with open(root / "seeknal_project.yml", "a") as f:
        f.write("start: 2024-01-01\n")
    task = DuckDBTask()
    task.add_sql("SELECT * FROM events WHERE event_time >= '__START__' AND event_time < '__END__'")
    flow = Flow(name="events_flow", input=FlowInput(kind="database", value="raw_events"),
                tasks=[task], output=FlowOutput())
    flow.set_interval_schedule(schedule="@daily")
    flow.save(root)
    (root / "target").mkdir(exist_ok=True)
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    con.execute("CREATE TABLE raw_events AS SELECT i AS id, TIMESTAMP '2024-01-01' + "
                "INTERVAL (i * 30) MINUTE AS event_time FROM range(48 * 10) t(i)")
    con.close()
    return root


def test_tutorial_end_to_end(tmp_path):
    root = tutorial_project(tmp_path / "shop")
    first = seeknal("run", "--project-path", str(root), now="2024-01-04T06:00:00Z")
    assert first.returncode == 0, first.stderr
    assert "events_flow: Processing 3 new intervals (2024-01-01 to 2024-01-04)" in first.stdout
    assert "Done: 3 intervals, 144 rows" in first.stdout

    show = seeknal("intervals", "show", cwd=root)
    # issue 10: one line per interval for a short list, as the tutorial prints it
    assert show.stdout == ("Completed Intervals for events_flow:\n  2024-01-01 to 2024-01-02 ✓\n"
                           "  2024-01-02 to 2024-01-03 ✓\n  2024-01-03 to 2024-01-04 ✓\n"
                           "Last interval ended 6 hours ago.\n")

    second = seeknal("run", "--project-path", str(root), now="2024-01-05T00:30:00Z")
    assert second.returncode == 0, second.stderr
    assert "Processing 1 new interval (2024-01-04 to 2024-01-05)" in second.stdout

    pending = seeknal("intervals", "pending", "--schedule", "@daily", cwd=root, now="2024-01-06T08:00:00Z")
    assert pending.returncode == 0 and pending.stdout == "Pending intervals (1):\n  2024-01-05 to 2024-01-06\n"

    restate = seeknal("intervals", "restate", "--start", "2024-01-01", "--end", "2024-01-07",
                      "--reason", "Fixed aggregation bug", cwd=root, now="2024-01-06T08:00:00Z")
    assert restate.returncode == 0, restate.stderr
    # only completed intervals are restated: 2024-01-05 was never run
    assert "events_flow: 4 intervals (2024-01-01 to 2024-01-05)" in restate.stdout
    rerun = seeknal("run", "--backfill", cwd=root, now="2024-01-06T08:00:00Z")
    assert rerun.returncode == 0, rerun.stderr
    assert "Processing 5 intervals: 4 restated, 1 missing (2024-01-01 to 2024-01-06)" in rerun.stdout

    manual = seeknal("intervals", "complete", "--interval", "2024-01-06", cwd=root, now="2024-01-07T08:00:00Z")
    assert manual.returncode == 0, manual.stderr
    assert "No node given: marking every scheduled node (1: events_flow)" in manual.stdout
    show = seeknal("intervals", "show", cwd=root)
    assert show.stdout == ("Completed Intervals for events_flow:\n"
                           + "".join(f"  2024-01-0{d} to 2024-01-0{d + 1} ✓ (restated)\n" for d in range(1, 6))
                           + "  2024-01-06 to 2024-01-07 ✓ (manual)\nLast interval ends in 2 days.\n")
    runs = seeknal("intervals", "show", "--runs", cwd=root)
    assert runs.stdout == ("Completed Intervals for events_flow:\n"
                           "  2024-01-01 to 2024-01-06 (5 intervals) ✓ (restated)\n"
                           "  2024-01-06 to 2024-01-07 ✓ (manual)\nLast interval ends in 2 days.\n")
    history = seeknal("intervals", "history", "events_flow", cwd=root)
    assert "Fixed aggregation bug" in history.stdout and "manual" in history.stdout


LEGACY_STATE = {"nodes": {"events_flow": {"completed_intervals": [
    ["2024-01-01T00:00:00", "2024-01-01T23:59:59"], ["2024-01-02T00:00:00", "2024-01-02T23:59:59"],
    ["2024-01-04T00:00:00", "2024-01-04T23:59:59"], ["2024-01-05T00:00:00", "2024-01-05T23:59:59"]]}}}


def test_tutorial_gap_backfill_is_annotated(tmp_path):
    """Part 4: a gap on 2024-01-03 in a seed-format state file, filled by --backfill."""
    root = make_project(tmp_path)
    (root / "target").mkdir()
    (root / "target" / "run_state.json").write_text(json.dumps(LEGACY_STATE))
    missing = seeknal("intervals", "pending", "events_flow", "--start", "2024-01-01", "--end", "2024-01-05",
                      cwd=root, now="2024-01-06T08:00:00Z")
    assert missing.stdout == "Pending intervals (1):\n  2024-01-03 to 2024-01-04\n"
    run = seeknal("run", "--project-path", str(root), "--start-date", "2024-01-03", "--end-date",
                  "2024-01-04", "--backfill", now="2024-01-06T08:00:00Z")
    assert run.returncode == 0, run.stderr
    assert "events_flow: Processing 1 missing interval (2024-01-03 to 2024-01-04)" in run.stdout
    show = seeknal("intervals", "show", cwd=root)
    assert show.stdout == ("Completed Intervals for events_flow:\n"
                           "  2024-01-01 to 2024-01-02 ✓\n  2024-01-02 to 2024-01-03 ✓\n"
                           "  2024-01-03 to 2024-01-04 ✓ (backfilled)\n"
                           "  2024-01-04 to 2024-01-05 ✓\n  2024-01-05 to 2024-01-06 ✓\n"
                           "Last interval ends in 1 day.\n" + WATERMARK)  # SEEKNAL_NOW 2024-01-04 precedes the imported state


def test_tutorial_partition_backfill(tmp_path):
    node = EVENTS_FLOW.replace("AS day,", "AS day, strftime(CAST(event_time AS DATE), '%Y-%m-%d') "
                               "AS event_date,") + "  partition_tracking: {column: event_date, format: '%Y-%m-%d'}\n"
    root = make_project(tmp_path, node)
    result = seeknal("run", "--partitions", "2024-01-01,2024-01-02,2024-01-03", "--backfill", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "events_flow: Processing 3 partition intervals (2024-01-01 to 2024-01-04)" in result.stdout
    show = invoke(root, "intervals", "show")
    assert show.output == "Completed Intervals for events_flow:\n" + "".join(
        f"  2024-01-0{d} to 2024-01-0{d + 1} ✓ (backfilled)\n" for d in (1, 2, 3)) + "Last interval ended 6 hours ago.\n" \
        + WATERMARK
    bad = invoke(root, "run", "--partitions", "2024/01/01")
    assert bad.exit_code == 2 and "does not match" in bad.stderr


def test_tutorial_hourly_backfill_of_the_last_24_hours(tmp_path):
    root = make_project(tmp_path, HOURLY)
    now = "2024-01-05T12:00:00Z"
    result = seeknal("run", "--start-date", "2024-01-04T12:00:00", "--end-date", "2024-01-05T12:00:00",
                     "--backfill", cwd=root, now=now)
    assert result.returncode == 0, result.stderr
    assert "hourly: Processing 24 missing intervals (2024-01-04 12:00 to 2024-01-05 12:00)" in result.stdout
    assert "Done: 24 intervals, 24 rows" in result.stdout
    listed = invoke(root, "intervals", "list", "hourly", now=now)
    assert listed.output == "Completed intervals for hourly:\n  2024-01-04 12:00 to 2024-01-05 12:00\n"


# -- the seed guide -----------------------------------------------------------------------------
GUIDE_NODE = """\
# seeknal/transforms/my_node.yml
my_node:
  schedule: "@daily"
  sql: |
    SELECT * FROM source WHERE date >= '{{ start }}' AND date < '{{ end }}'
"""


def guide_project(root: Path) -> Path:
    (root / "seeknal" / "transforms").mkdir(parents=True)
    (root / "seeknal" / "sources").mkdir(parents=True)
    (root / "seeknal_project.yml").write_text("start: 2024-01-01\n")
    (root / "seeknal" / "transforms" / "my_node.yml").write_text(GUIDE_NODE)
    (root / "seeknal" / "sources" / "source.yml").write_text("source:\n  path: data/source.csv\n")
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(40)]
    (root / "data").mkdir()
    (root / "data" / "source.csv").write_text("date,amount\n" + "".join(f"{d},{d.day}\n" for d in days))
    return root


def test_seed_guide_commands(tmp_path):
    root = guide_project(tmp_path)
    now = "2024-02-10T00:00:00Z"
    run = seeknal("run", "--start", "2024-01-01", "--end", "2024-01-31", cwd=root, now=now)
    assert run.returncode == 0, run.stderr
    assert "my_node: Processing 31 missing intervals (2024-01-01 to 2024-02-01)" in run.stdout
    listed = seeknal("intervals", "list", "my_node", cwd=root, now=now)
    assert listed.stdout == "Completed intervals for my_node:\n  2024-01-01 to 2024-02-01\n"
    pending = seeknal("intervals", "pending", "my_node", "--start", "2024-01-01", "--end", "2024-01-31",
                      cwd=root, now=now)
    assert pending.stdout == "Pending intervals (0)\n"
    again = seeknal("run", "--backfill", "--start", "2024-01-01", "--end", "2024-01-31", cwd=root, now=now)
    assert again.returncode == 0 and "my_node: nothing missing in the range" in again.stdout
    backfill = seeknal("intervals", "backfill", "my_node", "--start", "2024-01-01", "--end", "2024-02-05",
                       "--schedule", "@daily", cwd=root, now=now)
    assert backfill.returncode == 0, backfill.stderr
    assert "my_node: Processing 5 missing intervals (2024-02-01 to 2024-02-06)" in backfill.stdout
    restate = seeknal("run", "--restate", "--start", "2024-01-01", "--end", "2024-01-01", "--node", "my_node",
                      cwd=root, now=now)
    assert restate.returncode == 0, restate.stderr
    assert "Restated, reason: seeknal run --restate\n  my_node: 1 interval (2024-01-01 to 2024-01-02)" \
        in restate.stdout
    assert "my_node: Processing 1 restated interval (2024-01-01 to 2024-01-02)" in restate.stdout
    history = invoke(root, "intervals", "history", "my_node", "--json", now=now)
    records = json.loads(history.output)["records"]
    assert [r["event"] for r in records] == ["complete", "complete", "restate", "complete", "resolve"]
    assert records[2]["reason"] == "seeknal run --restate" and records[3]["mode"] == "restate"
    show = invoke(root, "intervals", "show", now=now)
    assert show.output.splitlines()[1:] == ["  2024-01-01 to 2024-01-02 ✓ (restated)",
                                            "  2024-01-02 to 2024-02-06 (35 intervals) ✓ (backfilled)",
                                            "Last interval ended 4 days ago."]
    each = invoke(root, "intervals", "show", "--each", now=now).output.splitlines()
    assert len(each) == 1 + 36 + 1 and each[-2] == "  2024-02-05 to 2024-02-06 ✓ (backfilled)"


# -- init ------------------------------------------------------------------------------------------
def test_init_then_run_works_at_once(tmp_path):
    target = tmp_path / "new_project"
    made = seeknal("init", str(target), now=None)
    assert made.returncode == 0, made.stderr
    assert (target / "seeknal_project.yml").is_file() and (target / "data" / "events.csv").is_file()
    run = seeknal("run", "--project-path", str(target), now="2024-01-10T00:00:00Z")
    assert run.returncode == 0, run.stderr
    assert "events_flow: Processing 9 new intervals (2024-01-01 to 2024-01-10)" in run.stdout
    assert "Done: 9 intervals, 27 rows" in run.stdout  # three event types a day
    real_clock = invoke(target, "run", now=None)  # today: every day since 2024-01-01, in one query
    assert real_clock.exit_code == 0 and "Done:" in real_clock.output
    twice = invoke(None, "init", str(target))
    assert twice.exit_code == 2 and "already holds a project" in twice.stderr


# -- every command in-process ---------------------------------------------------------------------
def test_run_reports_new_intervals_then_up_to_date(tmp_path):
    root = make_project(tmp_path)
    first = invoke(root, "run")
    assert first.exit_code == 0
    assert first.output.splitlines() == [
        "events_flow: Processing 3 new intervals (2024-01-01 to 2024-01-04)",
        "  events_flow  2024-01-01 to 2024-01-04  ✓ 3 rows in " + first.output.split(" rows in ")[1].split("\n")[0],
        first.output.splitlines()[2],
    ]
    assert first.output.splitlines()[2].startswith("Done: 3 intervals, 3 rows in ")
    again = invoke(root, "run")
    assert again.exit_code == 0 and again.output == "events_flow: up to date\n"


def test_run_dry_run_changes_nothing_and_has_json(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW, SUMMARY, TOTALS)
    text = invoke(root, "run", "--dry-run")
    assert text.exit_code == 0
    assert text.output.splitlines() == [
        "events_flow: Would process 3 new intervals (2024-01-01 to 2024-01-04) in 1 batch",
        "summary: Would process 3 new intervals (2024-01-01 to 2024-01-04) in 1 batch",
        "totals: Would rebuild the whole table (no schedule)",
        "Total: 6 intervals (dry run: nothing ran).",
    ]
    data = json.loads(invoke(root, "run", "--dry-run", "--json", "--batch-size", "2").output)
    assert data["mode"] == "run" and data["now"] == "2024-01-04T06:00:00+00:00" and data["total_intervals"] == 6
    flow = data["nodes"][0]
    assert flow["node"] == "events_flow" and flow["batches"] == 2
    assert flow["runs"] == [{"start": "2024-01-01T00:00:00+00:00", "end": "2024-01-04T00:00:00+00:00",
                             "local_start": "2024-01-01T00:00:00+00:00", "count": 3, "reason": "new"}]
    data = json.loads(invoke(root, "run", "--dry-run", "--json", "--each", "--batch-size", "2").output)
    flow = data["nodes"][0]
    assert "runs" not in flow and len(flow["intervals"]) == 3
    assert flow["intervals"][0] == {"start": "2024-01-01T00:00:00+00:00", "end": "2024-01-02T00:00:00+00:00",
                                    "local_start": "2024-01-01T00:00:00+00:00", "reason": "new"}
    assert state_bytes(root) is None and not (root / "target" / "warehouse.duckdb").exists()


def test_run_json_result_and_node_selection(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW, SUMMARY)
    result = invoke(root, "run", "--node", "events_flow", "--json")
    data = json.loads(result.output)
    assert result.exit_code == 0 and data["ok"] and data["intervals"] == 3 and data["failed"] == 0
    assert [n["node"] for n in data["nodes"]] == ["events_flow"]
    assert set(data) == {"mode", "now", "run_id", "ok", "intervals", "rows", "failed", "warnings", "seconds",
                         "nodes", "waiting"}


def test_run_include_open_runs_the_current_interval(tmp_path):
    root = make_project(tmp_path)
    result = invoke(root, "run", "--include-open")
    assert "Processing 4 new intervals (2024-01-01 to 2024-01-05)" in result.output


def test_failed_interval_exits_1_names_node_and_interval_and_skips_downstream(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW, SUMMARY, guard=fail_on("2024-01-02"))
    result = invoke(root, "run")
    assert result.exit_code == 1
    errors = result.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith(
        "Error: node 'events_flow' interval 2024-01-02T00:00:00+00:00 to 2024-01-03T00:00:00+00:00: ")
    assert "injected failure" in errors[0]
    assert "skipped summary 2024-01-02 to 2024-01-03: upstream 'events_flow' failed" in result.stdout
    assert "Finished with problems: 4 intervals, 4 rows, 1 failed, 1 skipped" in result.stdout
    show = invoke(root, "intervals", "show", "events_flow")
    assert "Failed intervals for events_flow:\n  2024-01-02 to 2024-01-03 ✗ (1 attempt): node" in show.output
    pending = invoke(root, "intervals", "pending", "events_flow")
    assert pending.output == "Pending intervals (1):\n  2024-01-02 to 2024-01-03 (failed: will retry)\n"


def test_plain_progress_lines_per_batch(tmp_path):
    root = make_project(tmp_path)
    result = invoke(root, "run", "--batch-size", "2")
    lines = result.output.splitlines()
    assert lines[1].startswith("  events_flow  2024-01-01 to 2024-01-03  ✓ 2 rows in ")
    assert lines[2].startswith("  events_flow  2024-01-03 to 2024-01-04  ✓ 1 row in ")


def test_show_json_and_pending_restatements(tmp_path):
    root = make_project(tmp_path)
    invoke(root, "run")
    invoke(root, "intervals", "restate", "--start", "2024-01-02", "--end", "2024-01-02", "--reason", "late data")
    text = invoke(root, "intervals", "show").output
    assert "Pending restatements for events_flow:\n  2024-01-02 to 2024-01-03: late data (by " in text
    data = json.loads(invoke(root, "intervals", "show", "--json").output)
    node = data["nodes"][0]
    assert node["node"] == "events_flow" and node["schedule"] == "@daily" and node["timezone"] == "UTC"
    assert [(c["start"], c["end"], c["mode"]) for c in node["completed"]] == [
        ("2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00", "run"),
        ("2024-01-03T00:00:00+00:00", "2024-01-04T00:00:00+00:00", "run")]
    assert node["pending_restatements"][0]["reason"] == "late data"
    assert node["failed"] == []


def test_list_text_and_json(tmp_path):
    root = make_project(tmp_path)
    assert invoke(root, "intervals", "list", "events_flow").output == \
        "No completed intervals for events_flow yet: run `seeknal run`.\n"
    invoke(root, "run")
    data = json.loads(invoke(root, "intervals", "list", "transform.events_flow", "--json").output)
    assert data == {"node": "events_flow", "timezone": "UTC", "completed": [
        {"start": "2024-01-01T00:00:00+00:00", "end": "2024-01-04T00:00:00+00:00",
         "local_start": "2024-01-01T00:00:00+00:00", "local_end": "2024-01-04T00:00:00+00:00"}]}


def test_pending_several_nodes_json_and_notes(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW, HOURLY)
    text = invoke(root, "intervals", "pending", now="2024-01-02T02:00:00Z").output
    assert text.splitlines() == [
        "Pending intervals (27):", "  events_flow (1):", "    2024-01-01 to 2024-01-02",
        "  hourly (26):", "    2024-01-01 00:00 to 2024-01-02 02:00 (26 intervals)"]
    daily = json.loads(invoke(root, "intervals", "pending", "--schedule", "daily", "--json").output)
    assert daily["total"] == 3 and [n["node"] for n in daily["nodes"]] == ["events_flow"]
    assert daily["nodes"][0]["intervals"][0]["reason"] == "backfill"
    hourly = invoke(root, "intervals", "pending", "hourly", "--start", "2024-01-03T10:00", "--end",
                    "2024-01-03T12:30")
    assert hourly.output == ("Pending intervals (3):\n  2024-01-03 10:00 to 2024-01-03 11:00\n"
                             "  2024-01-03 11:00 to 2024-01-03 12:00\n  2024-01-03 12:00 to 2024-01-03 13:00\n")
    folded = invoke(root, "intervals", "pending", "hourly", "--start", "2024-01-03T10:00", "--end",
                    "2024-01-03T12:30", "--runs")
    assert folded.output == "Pending intervals (3):\n  2024-01-03 10:00 to 2024-01-03 13:00 (3 intervals)\n"
    each = invoke(root, "intervals", "pending", "hourly", "--each").output.splitlines()
    assert len(each) == 1 + 78 and each[1] == "  2024-01-01 00:00 to 2024-01-01 01:00"


def test_node_timezone_reads_naive_dates_in_that_zone(tmp_path):
    node = EVENTS_FLOW.replace('"@daily"\n', '"@daily"\n  timezone: America/New_York\n')
    root = make_project(tmp_path, node)
    text = invoke(root, "intervals", "pending", "--start", "2024-01-02", "--end", "2024-01-02")
    assert text.output == "Pending intervals (1):\n  2024-01-02 to 2024-01-03\n"
    data = json.loads(invoke(root, "intervals", "pending", "--start", "2024-01-02", "--end", "2024-01-02",
                             "--json").output)
    interval = data["nodes"][0]["intervals"][0]
    assert interval["start"] == "2024-01-02T05:00:00+00:00" and interval["local_end"] == "2024-01-03T00:00:00-05:00"
    offset = json.loads(invoke(root, "intervals", "pending", "--start", "2024-01-02T00:00:00+00:00",
                               "--end", "2024-01-02T00:00:01+00:00", "--json").output)
    assert offset["nodes"][0]["intervals"][0]["local_start"] == "2024-01-01T00:00:00-05:00"


def test_backfill_command_with_dry_run_json_and_a_schedule_for_an_unscheduled_node(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW, TOTALS.replace(
        "SELECT count(*) AS days FROM {{ ref('events_flow') }}",
        "SELECT CAST(event_time AS DATE) AS day, count(*) AS n FROM raw_events "
        "WHERE event_time >= '{{ start }}' AND event_time < '{{ end }}' GROUP BY ALL"
    ) + "  time_column: day\n")
    dry = json.loads(invoke(root, "intervals", "backfill", "events_flow", "--dry-run", "--json").output)
    assert dry["mode"] == "backfill" and dry["total_intervals"] == 3
    done = invoke(root, "intervals", "backfill", "totals", "--start", "2024-01-01", "--end", "2024-01-02",
                  "--schedule", "@daily")
    assert done.exit_code == 0, done.output
    assert "totals: Processing 2 missing intervals (2024-01-01 to 2024-01-03)" in done.output
    assert json.loads(invoke(root, "intervals", "backfill", "events_flow", "--json").output)["intervals"] == 3


def test_complete_forms_of_interval(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW, HOURLY)
    by_date = invoke(root, "intervals", "complete", "events_flow", "--interval", "2024-01-01T13:00")
    assert by_date.output == "events_flow: marked 1 interval complete (manual): 2024-01-01 to 2024-01-02\n"
    ranged = invoke(root, "intervals", "complete", "hourly", "--interval", "2024-01-02/2024-01-02",
                    "--interval", "2024-01-01T05:30")
    assert ranged.output == ("hourly: marked 25 intervals complete (manual): 2024-01-01 05:00 to "
                             "2024-01-01 06:00, 2024-01-02 00:00 to 2024-01-03 00:00\n")
    show = invoke(root, "intervals", "show", "hourly").output
    assert show.splitlines()[1:] == ["  2024-01-01 05:00 to 2024-01-01 06:00 ✓ (manual)",
                                     "  2024-01-02 00:00 to 2024-01-03 00:00 (24 intervals) ✓ (manual)",
                                     "Last interval ended 1 day ago.", *WATERMARK.splitlines()]
    history = invoke(root, "intervals", "history", "hourly")
    assert history.output.splitlines()[0] == "History of hourly (times in UTC):"
    assert history.output.splitlines()[1].split() == [
        "TIME", "EVENT", "MODE", "STATUS", "INTERVALS", "ROWS", "DURATION", "ACTOR", "RUN", "REASON/ERROR"]
    assert "complete  manual" in history.output
    nothing = invoke(root, "run", "--node", "events_flow")
    assert "Processing 2 new intervals (2024-01-02 to 2024-01-04)" in nothing.output


def test_restate_dry_run_shows_downstream_and_changes_nothing(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW, SUMMARY)
    invoke(root, "run")
    before = state_bytes(root)
    dry = invoke(root, "intervals", "restate", "--node", "events_flow", "--start", "2024-01-02",
                 "--end", "2024-01-02", "--reason", "bad source", "--dry-run")
    assert dry.output.splitlines() == [
        "Would restate (dry run, nothing changed), reason: bad source",
        "  events_flow: 1 interval (2024-01-02 to 2024-01-03)",
        "  summary: 1 interval (2024-01-02 to 2024-01-03)  (downstream)"]
    data = json.loads(invoke(root, "intervals", "restate", "--node", "events_flow", "--start", "2024-01-02",
                             "--end", "2024-01-02", "--reason", "bad source", "--dry-run", "--json").output)
    assert [(n["node"], n["downstream"], len(n["intervals"])) for n in data["nodes"]] == [
        ("events_flow", False, 1), ("summary", True, 1)]
    assert state_bytes(root) == before
    done = invoke(root, "intervals", "restate", "--node", "events_flow", "--start", "2024-01-02",
                  "--end", "2024-01-02", "--reason", "bad source")
    assert done.exit_code == 0 and done.output.startswith("Restated, reason: bad source\n")
    rerun = invoke(root, "run")
    assert "events_flow: Processing 1 restated interval (2024-01-02 to 2024-01-03)" in rerun.output
    assert "summary: Processing 1 restated interval (2024-01-02 to 2024-01-03)" in rerun.output
    future = invoke(root, "intervals", "restate", "--start", "2024-02-01", "--end", "2024-02-02", "--reason", "x")
    assert future.exit_code == 0 and future.output.startswith("Nothing to restate")


def test_run_restate_json_and_dry_run(tmp_path):
    root = make_project(tmp_path)
    invoke(root, "run")
    dry = json.loads(invoke(root, "run", "--restate", "--start", "2024-01-01", "--end", "2024-01-01",
                            "--dry-run", "--json").output)
    assert dry["dry_run"] and dry["reason"] == "seeknal run --restate"
    data = json.loads(invoke(root, "run", "--restate", "--start", "2024-01-01", "--end", "2024-01-01",
                             "--reason", "typo", "--json").output)
    assert data["ok"] and data["intervals"] == 1 and data["restated"]["reason"] == "typo"


def test_history_json_and_empty(tmp_path):
    root = make_project(tmp_path)
    assert invoke(root, "intervals", "history", "events_flow").output == "No history for events_flow yet.\n"
    invoke(root, "run")
    data = json.loads(invoke(root, "intervals", "history", "events_flow", "--json", "--limit", "1").output)
    assert data["node"] == "events_flow" and len(data["records"]) == 1
    record = data["records"][0]
    assert record["event"] == "complete" and record["mode"] == "run" and record["rows"] == 3
    assert record["intervals"] == [["2024-01-01T00:00:00Z", "2024-01-04T00:00:00Z"]] and record["run_id"]


def test_global_project_path_and_short_option(tmp_path):
    root = make_project(tmp_path)
    result = CliRunner().invoke(cli, ["-p", str(root), "intervals", "pending"], env={"SEEKNAL_NOW": "2024-01-03"})
    assert result.output == "Pending intervals (2):\n  2024-01-01 to 2024-01-02\n  2024-01-02 to 2024-01-03\n"


@pytest.mark.parametrize("args", [
    ["run"], ["intervals", "list", "events_flow"], ["intervals", "show"], ["intervals", "pending"],
    ["intervals", "backfill", "events_flow"], ["intervals", "complete", "--interval", "2024-01-01"],
    ["intervals", "restate", "--start", "2024-01-01", "--end", "2024-01-01", "--reason", "r"],
    ["intervals", "history", "events_flow"], ["--help"],
])
def test_every_command_as_a_subprocess(tmp_path, args):
    root = make_project(tmp_path)
    result = seeknal(*args, cwd=root)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and result.stdout


def test_pending_with_a_schedule_for_an_unscheduled_node(tmp_path):
    daily_table = TOTALS.replace(
        "SELECT count(*) AS days FROM {{ ref('events_flow') }}",
        "SELECT CAST(event_time AS DATE) AS day FROM raw_events "
        "WHERE event_time >= '{{ start }}' AND event_time < '{{ end }}'") + "  time_column: day\n"
    root = make_project(tmp_path, EVENTS_FLOW, daily_table)
    result = invoke(root, "intervals", "pending", "totals", "--schedule", "@daily")
    assert result.output == ("Pending intervals (3):\n  2024-01-01 to 2024-01-02\n  2024-01-02 to 2024-01-03\n"
                             "  2024-01-03 to 2024-01-04\n")


def test_completing_an_already_complete_interval_changes_nothing(tmp_path):
    """Issue 10: no "marked 1 interval complete (1 already complete)", no relabelling as manual."""
    root = make_project(tmp_path)
    backfill = invoke(root, "run", "--backfill", now="2024-01-06T08:00:00Z")
    assert backfill.exit_code == 0
    before = state_bytes(root)
    again = invoke(root, "intervals", "complete", "events_flow", "--interval", "2024-01-05",
                   now="2024-01-06T08:00:00Z")
    assert again.exit_code == 0
    assert again.output == "events_flow: nothing changed: 1 interval already complete (2024-01-05 to 2024-01-06)\n"
    assert state_bytes(root) == before
    show = invoke(root, "intervals", "show", now="2024-01-06T08:00:00Z")
    assert "  2024-01-05 to 2024-01-06 ✓ (backfilled)" in show.output and "(manual)" not in show.output
    mixed = invoke(root, "intervals", "complete", "events_flow", "--interval", "2024-01-05/2024-01-06",
                   now="2024-01-07T08:00:00Z")
    assert mixed.output == ("events_flow: marked 1 interval complete (manual) (1 already complete, left as "
                            "they were): 2024-01-06 to 2024-01-07\n")
    show = invoke(root, "intervals", "show", now="2024-01-07T08:00:00Z").output
    assert "  2024-01-05 to 2024-01-06 ✓ (backfilled)\n  2024-01-06 to 2024-01-07 ✓ (manual)\n" in show


def test_restate_matching_nothing_prints_only_that(tmp_path):
    root = make_project(tmp_path)
    invoke(root, "run")
    result = invoke(root, "intervals", "restate", "--start", "2024-02-01", "--end", "2024-02-02", "--reason", "x")
    assert result.exit_code == 0
    assert result.output == ("Nothing to restate: no finished interval of events_flow overlaps "
                             "2024-02-01 to 2024-02-02.\n")
    done = invoke(root, "intervals", "restate", "--start", "2024-01-01", "--end", "2024-01-01", "--reason", "x")
    assert done.output.endswith("Run `seeknal run` (or `seeknal run --backfill`) to recompute them.\n")


# -- relative ranges and freshness (issue 10) -----------------------------------------------------
def test_last_is_a_relative_range_on_run_pending_backfill_and_restate(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW, HOURLY)
    now = "2024-01-05T12:00:00Z"
    dry = invoke(root, "run", "--node", "hourly", "--last", "24h", "--dry-run", now=now)
    assert dry.output.splitlines()[0] == \
        "hourly: Would process 24 missing intervals (2024-01-04 12:00 to 2024-01-05 12:00) in 1 batch"
    iso = invoke(root, "run", "--node", "hourly", "--last", "PT24H", "--dry-run", now=now)
    assert iso.output == dry.output
    pending = invoke(root, "intervals", "pending", "events_flow", "--last", "P2D", now=now)
    # [2024-01-03T12:00, now) overlaps 2024-01-03 and 2024-01-04 (2024-01-05 has not ended)
    assert pending.output == "Pending intervals (2):\n  2024-01-03 to 2024-01-04\n  2024-01-04 to 2024-01-05\n"
    before_end = invoke(root, "intervals", "pending", "events_flow", "--last", "1d", "--end", "2024-01-02",
                        now=now)
    assert before_end.output == "Pending intervals (1):\n  2024-01-02 to 2024-01-03\n"
    ran = seeknal("run", "--last", "90m", "--node", "hourly", cwd=root, now=now)
    assert ran.returncode == 0, ran.stderr
    assert "hourly: Processing 2 missing intervals (2024-01-05 10:00 to 2024-01-05 12:00)" in ran.stdout
    backfill = invoke(root, "intervals", "backfill", "hourly", "--last", "3h", "--dry-run", now=now)
    assert backfill.output.startswith("hourly: Would process 1 missing interval (2024-01-05 09:00 to 2024-01-05 10:00)")
    restate = invoke(root, "intervals", "restate", "--node", "hourly", "--last", "1h", "--reason", "late", now=now)
    assert restate.output.startswith("Restated, reason: late\n  hourly: 1 interval (2024-01-05 11:00 to 2024-01-05 12:00)")
    nothing = invoke(root, "intervals", "restate", "--node", "events_flow", "--last", "1h", "--reason", "x", now=now)
    assert nothing.output == "Nothing to restate: no finished interval of events_flow overlaps the last 1h.\n"


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--last", "24h", "--start", "2024-01-01"], "--last and --start both set where the range starts"),
    (["intervals", "pending", "--last", "soon"], "Invalid value for '--last': invalid duration 'soon': use 24h"),
    (["intervals", "restate", "--last", "PT0S", "--reason", "r"], "duration 'PT0S' is not positive"),
    (["run", "--partitions", "2024-01-01", "--last", "1d"], "--partitions selects intervals by key"),
])
def test_last_errors_are_one_line_exit_2(tmp_path, args, message):
    root = make_project(tmp_path)
    result = invoke(root, *args)
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert message in result.stderr


def test_show_says_how_fresh_each_node_is(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW, HOURLY)
    invoke(root, "run", now="2024-01-03T05:10:00Z")
    text = invoke(root, "intervals", "show", now="2024-01-03T08:10:00Z").output
    assert "  2024-01-02 to 2024-01-03 ✓\nLast interval ended 8 hours ago.\n" in text
    assert "  2024-01-01 00:00 to 2024-01-03 05:00 (53 intervals) ✓\nLast interval ended 3 hours ago.\n" in text
    data = json.loads(invoke(root, "intervals", "show", "--json", now="2024-01-03T08:10:00Z").output)
    assert [n["last_interval_end"] for n in data["nodes"]] == ["2024-01-03T00:00:00+00:00",
                                                               "2024-01-03T05:00:00+00:00"]
