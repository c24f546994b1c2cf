"""The seed documents, verbatim and in order: the Interval Backfill Tutorial and the Interval
Tracking Guide, their commands run as subprocesses (their Python through `python -c`), their
printed samples compared with what seeknal prints.

Deliberate differences, each applied where it happens:
- Imports: the documents' `seeknal.workflow.intervals`, `seeknal.project`, `seeknal.flow` and
  `seeknal.tasks.duckdb` are `seeknal_core` and `seeknal_core.flow` (`translate`).
- The tutorial's Python never saves its flow; each snippet that changes it ends with
  `flow.save()`, and a snippet run in a new process starts with `flow = Flow.load(...)`.
- The project names `start: 2024-01-01`: a node without one does not run yet (issue 10's
  start inference is another change); `/path/to/project` is the test's folder.
- The clock is `SEEKNAL_NOW`, one value per step, chosen so the samples' dates come out.
- The samples' `Output: ...` comments are one line of ours, prefixed by the node
  (`events_flow: Processing ...`).
- `seeknal intervals show` ends each node with its freshness (`Last interval ended ...`),
  which the samples predate.
- Part 4 needs the gap that Part 4.1 describes: the test writes it as a state file in the
  guide's format (every interval listed, `23:59:59` ends).
- Part 5's hourly command shells out to `date`: it runs as written on the real clock, in a
  copy of the project; `--last 24h` is the native form, run on the fixed clock.
- Part 6 changes the schedule to hourly: a definition change, so runs note it until
  `seeknal plan --apply` records it (issue 13); the quick reference's last run shows both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from test_cli import guide_project, seeknal

IMPORTS = {
    "from seeknal.workflow.intervals import": "from seeknal_core import",
    "from seeknal.project import": "from seeknal_core.flow import",
    "from seeknal.flow import": "from seeknal_core.flow import",
    "from seeknal.tasks.duckdb import": "from seeknal_core.flow import",
}

# -- the tutorial's code and samples, verbatim -------------------------------------------------
PART_2_1 = '''
from seeknal.workflow.intervals import IntervalCalculator
from seeknal.project import Project

# Set up your project
project = Project(name="ecommerce")
project.get_or_create()

# Define your source with interval schedule
from seeknal.flow import Flow, FlowInput, FlowOutput
from seeknal.tasks.duckdb import DuckDBTask

task = DuckDBTask()
task.add_sql("SELECT * FROM events WHERE event_time >= '__START__' AND event_time < '__END__'")

flow = Flow(
    name="events_flow",
    input=FlowInput(kind="database", value="raw_events"),
    tasks=[task],
    output=FlowOutput()
)

# Configure with schedule
flow.set_interval_schedule(schedule="@daily")
'''

SAMPLE_2_2 = """\
Completed Intervals for events_flow:
  2024-01-01 to 2024-01-02 ✓
  2024-01-02 to 2024-01-03 ✓
  2024-01-03 to 2024-01-04 ✓
"""

SAMPLE_3_1 = "# Output: Processing 1 new interval (2024-01-04 to 2024-01-05)"

SAMPLE_3_2 = """\
# Output:
# Pending intervals (1):
#   2024-01-05 to 2024-01-06
"""

PART_4_1 = '''
from seeknal.workflow.intervals import IntervalCalculator
from datetime import datetime

calculator = IntervalCalculator()

# Find gaps in completed intervals
missing = calculator.get_missing_intervals(
    completed_intervals=[
        (datetime(2024, 1, 1), datetime(2024, 1, 3)),  # Gap here!
        (datetime(2024, 1, 5), datetime(2024, 1, 7)),
    ],
    start_date=datetime(2024, 1, 1),
    end_date=datetime(2024, 1, 7),
    schedule="@daily"
)

print(f"Missing {len(missing)} intervals")
# Output: Missing 2 intervals (2024-01-03, 2024-01-04)
'''

SAMPLE_4_3 = "#   2024-01-03 to 2024-01-04 ✓ (backfilled)"

PART_5_2 = '''
# Enable partition tracking
flow.set_partition_tracking(
    partition_column="event_date",
    partition_format="%Y-%m-%d"  # e.g., 2024-01-01
)
'''

PART_5_3 = '''
# Set hourly schedule
flow.set_interval_schedule(schedule="0 * * * *")  # Every hour
'''

PART_5_3_SHELL = """\
seeknal run \\
  --start-date "$(date -u -d '24 hours ago' +%Y-%m-%dT%H:%M:%S)" \\
  --end-date "$(date -u +%Y-%m-%dT%H:%M:%S)" \\
  --backfill
"""

PART_6 = '''
# Check your flow has schedule set
flow = Flow.load("events_flow")
print(flow.interval_schedule)  # Should not be None
'''


def translate(code: str) -> str:
    for theirs, ours in IMPORTS.items():
        code = code.replace(theirs, ours)
    return textwrap.dedent(code)


def python(code: str, root: Path, *, load: bool = False, save: bool = False) -> str:
    """A document's Python snippet in a fresh interpreter in the project folder; its stdout."""
    head = "from seeknal_core.flow import Flow\nflow = Flow.load('events_flow')\n" if load else ""
    tail = "\nflow.save()\n" if save else ""
    proc = subprocess.run([sys.executable, "-c", head + translate(code) + tail], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def comment_lines(sample: str) -> str:
    """The text of a sample written as `# ...` comments (with `Output:` dropped)."""
    lines = [re.sub(r"^# ?(Output: ?)?", "", line) for line in sample.splitlines()]
    return "\n".join(line for line in lines if line) + "\n"


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def make_raw_events(root: Path) -> None:
    """The Getting Started guide's table: an event every 30 minutes from 2024-01-01."""
    import duckdb

    (root / "target").mkdir(parents=True)
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    con.execute("CREATE TABLE raw_events AS SELECT i AS id, TIMESTAMP '2024-01-01' + INTERVAL (i * 30) "
                "MINUTE AS event_time, strftime(TIMESTAMP '2024-01-01' + INTERVAL (i * 30) MINUTE, "
                "'%Y-%m-%d') AS event_date FROM range(48 * 10) t(i)")
    con.close()


def seed_format_state(pairs: list[tuple[str, str]]) -> str:
    """The guide's `run_state.json`: every daily interval listed, closed `23:59:59` ends."""
    days = [f"2024-01-{d:02d}" for a, b in pairs for d in range(int(a[-2:]), int(b[-2:]))]
    return json.dumps({"nodes": {"events_flow": {"completed_intervals": [
        [f"{d}T00:00:00", f"{d}T23:59:59"] for d in days]}}})


def test_the_backfill_tutorial_in_order(tmp_path):
    root = tmp_path / "ecommerce"
    make_raw_events(root)

    # Part 2.1: the Python API
    python(PART_2_1, root, save=True)
    with open(root / "seeknal_project.yml", "a") as f:
        f.write("start: 2024-01-01\n")

    # Part 2.2: first run, then the completed intervals, one line each
    first = ok(seeknal("run", "--project-path", str(root), now="2024-01-04T06:00:00Z"))
    assert first.splitlines()[0] == "events_flow: Processing 3 new intervals (2024-01-01 to 2024-01-04)"
    show = ok(seeknal("intervals", "show", cwd=root, now="2024-01-04T06:00:00Z"))
    assert show == SAMPLE_2_2 + "Last interval ended 6 hours ago.\n"

    # Part 3: only the new interval, then what is pending
    second = ok(seeknal("run", "--project-path", str(root), now="2024-01-05T00:30:00Z"))
    assert second.splitlines()[0] == "events_flow: " + comment_lines(SAMPLE_3_1).strip()
    pending = ok(seeknal("intervals", "pending", "--schedule", "@daily", cwd=root, now="2024-01-06T08:00:00Z"))
    assert pending == comment_lines(SAMPLE_3_2)

    # Part 4.1: the calculator finds the gap (the test also prints which days)
    out = python(PART_4_1 + "print([f'{iv.start:%Y-%m-%d}' for iv in missing])\n", root)
    assert out == "Missing 2 intervals\n['2024-01-03', '2024-01-04']\n"
    assert comment_lines(PART_4_1.split("\n")[-2]).startswith(out.splitlines()[0])

    # Part 4.2/4.3: the project's state has that gap (written in the guide's format); backfill it
    for log in (root / "target").glob("*.jsonl"):
        log.unlink()
    (root / "target" / "run_state.json").write_text(
        seed_format_state([("2024-01-01", "2024-01-03"), ("2024-01-05", "2024-01-07")]))
    now = "2024-01-07T08:00:00Z"
    backfill = ok(seeknal("run", "--project-path", str(root), "--start-date", "2024-01-03", "--end-date",
                          "2024-01-04", "--backfill", now=now))
    assert backfill.splitlines()[0] == "events_flow: Processing 2 missing intervals (2024-01-03 to 2024-01-05)"
    show = ok(seeknal("intervals", "show", cwd=root, now=now))
    assert comment_lines(SAMPLE_4_3).rstrip("\n") in show.splitlines()  # "Output now includes"
    assert show.splitlines()[1:] == [
        "  2024-01-01 to 2024-01-02 ✓", "  2024-01-02 to 2024-01-03 ✓",
        "  2024-01-03 to 2024-01-04 ✓ (backfilled)", "  2024-01-04 to 2024-01-05 ✓ (backfilled)",
        "  2024-01-05 to 2024-01-06 ✓", "  2024-01-06 to 2024-01-07 ✓", "Last interval ended 8 hours ago."]

    # Part 5, scenario 1: restate, then re-run
    restate = ok(seeknal("intervals", "restate", "--start", "2024-01-01", "--end", "2024-01-07",
                         "--reason", "Fixed aggregation bug", cwd=root, now=now))
    assert restate == ("Restated, reason: Fixed aggregation bug\n"
                       "  events_flow: 6 intervals (2024-01-01 to 2024-01-07)\n"
                       "Run `seeknal run` (or `seeknal run --backfill`) to recompute them.\n")
    rerun = ok(seeknal("run", "--backfill", cwd=root, now=now))
    assert rerun.splitlines()[0] == "events_flow: Processing 6 restated intervals (2024-01-01 to 2024-01-07)"

    # Scenario 2: partition tracking, then exactly these partitions
    python(PART_5_2, root, load=True, save=True)
    parts = ok(seeknal("run", "--partitions", "2024-01-01,2024-01-02,2024-01-03", "--backfill", cwd=root, now=now))
    assert "events_flow: Processing 3 partition intervals (2024-01-01 to 2024-01-04)" in parts.splitlines()

    # Scenario 3: hourly; the last 24 hours as the tutorial writes it (real clock, in a copy) ...
    python(PART_5_3, root, load=True, save=True)
    copy = tmp_path / "real_clock"
    shutil.copytree(root, copy)
    path = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    shell = subprocess.run(["bash", "-c", PART_5_3_SHELL], cwd=copy, capture_output=True, text=True,
                           env={**os.environ, **path, "SEEKNAL_NOW": ""}, timeout=120)
    # 24 hours; 25 only if the clock passes an hour between `date` and seeknal reading it
    assert re.match(r"events_flow: Processing 2[45] missing intervals \(", ok(shell)), shell.stdout
    # ... and natively, on the fixed clock: the daily runs already cover up to 2024-01-07 00:00
    last = ok(seeknal("run", "--last", "24h", "--backfill", cwd=root, now="2024-01-07T12:00:00Z"))
    assert last.splitlines()[0] == "events_flow: Processing 12 missing intervals (2024-01-07 00:00 to 2024-01-07 12:00)"

    # Part 6: troubleshooting
    assert python("from seeknal.flow import Flow\n" + PART_6, root) == "0 * * * *\n"  # + the import
    grep = ok(subprocess.run(["bash", "-c", "cat target/run_state.json | grep completed_intervals"], cwd=root,
                             capture_output=True, text=True))
    assert '"events_flow": {"completed_intervals": [["2024-01-01T00:00:00Z", "2024-01-07T12:00:00Z"]]' in grep

    # Quick reference, on the node as the tutorial left it (hourly now)
    now = "2024-01-08T00:00:00Z"
    show = ok(seeknal("intervals", "show", cwd=root, now=now))
    assert show.splitlines()[1:4] == [  # more than 24 intervals: runs, counted
        "  2024-01-01 00:00 to 2024-01-04 00:00 (72 intervals) ✓ (backfilled)",
        "  2024-01-04 00:00 to 2024-01-07 00:00 (72 intervals) ✓ (restated)",
        "  2024-01-07 00:00 to 2024-01-07 12:00 (12 intervals) ✓ (backfilled)"]
    daily = seeknal("intervals", "pending", "--schedule", "@daily", cwd=root, now=now)
    assert daily.returncode == 2 and daily.stderr == (
        "Error: no node runs on schedule '@daily' — scheduled nodes: events_flow '0 * * * *'\n")
    manual = ok(seeknal("intervals", "complete", "--interval", "2024-01-01", cwd=root, now=now))
    assert manual.splitlines()[1] == ("events_flow: nothing changed: 1 interval already complete "
                                      "(2024-01-01 00:00 to 2024-01-01 01:00)")
    month = ok(seeknal("run", "--start-date", "2024-01-01", "--end-date", "2024-01-31", "--backfill",
                       cwd=root, now=now))
    assert month.splitlines()[0] == "events_flow: Processing 12 missing intervals (2024-01-07 12:00 to 2024-01-08 00:00)"
    # Part 6 changed the schedule: a definition change, which runs report until `seeknal plan --apply`
    assert ok(seeknal("run", "--backfill", cwd=root, now=now)) == (
        "events_flow: nothing to do\n"
        "events_flow: note: definition changed since its intervals were computed: "
        "`seeknal plan` shows what to restate\n")
    ok(seeknal("plan", "--apply", "--no-run", cwd=root, now=now))
    assert ok(seeknal("run", "--backfill", cwd=root, now=now)) == "events_flow: nothing missing in the range\n"
    fixed = ok(seeknal("intervals", "restate", "--start", "2024-01-01", "--end", "2024-01-07", "--reason",
                       "Fixed bug", cwd=root, now=now))
    assert fixed.splitlines()[1] == "  events_flow: 168 intervals (2024-01-01 00:00 to 2024-01-08 00:00)"


# -- the guide ---------------------------------------------------------------------------------------
GUIDE_PYTHON = '''
from seeknal.workflow.intervals import Interval, IntervalSet

# Create an interval
interval = Interval(
    start=datetime(2024, 1, 1, 0, 0),
    end=datetime(2024, 1, 1, 23, 59, 59)
)

from seeknal.workflow.intervals import create_interval_calculator

# Daily schedule
calc = create_interval_calculator("@daily")

# Get pending intervals
pending = calc.get_pending_intervals(
    completed_intervals=[],
    start=datetime(2024, 1, 1),
    end=datetime(2024, 1, 31)
)

# Every 6 hours
calc = create_interval_calculator("0 */6 * * *")

# Weekly on Sunday at 2am
calc = create_interval_calculator("0 2 * * 0")
'''

GUIDE_STATE = """\
{
  "nodes": {
    "my_node": {
      "completed_intervals": [
        ["2024-01-01T00:00:00", "2024-01-01T23:59:59"],
        ["2024-01-02T00:00:00", "2024-01-02T23:59:59"]
      ]
    }
  }
}
"""


def test_the_interval_tracking_guide_in_order(tmp_path):
    root = guide_project(tmp_path / "guide")  # the guide's my_node.yml, verbatim
    # the snippets use datetime without importing it; the test prints what they computed
    out = python("from datetime import datetime\n" + translate(GUIDE_PYTHON)
                 + "print(interval.end - interval.start, len(pending), calc.next_interval('2024-01-01'))\n", root)
    assert out == "23:59:59 30 Interval(2024-01-07T02:00:00+00:00, 2024-01-14T02:00:00+00:00)\n"

    now = "2024-02-10T00:00:00Z"
    listed = ok(seeknal("intervals", "list", "my_node", cwd=root, now=now))
    assert listed == "No completed intervals for my_node yet: run `seeknal run`.\n"
    pending = ok(seeknal("intervals", "pending", "my_node", "--start", "2024-01-01", "--end", "2024-01-31",
                         cwd=root, now=now))
    assert pending == "Pending intervals (31):\n  2024-01-01 to 2024-02-01 (31 intervals)\n"
    backfill = ok(seeknal("intervals", "backfill", "my_node", "--start", "2024-01-01", "--end", "2024-01-31",
                          "--schedule", "@daily", cwd=root, now=now))
    assert backfill.splitlines()[0] == "my_node: Processing 31 missing intervals (2024-01-01 to 2024-02-01)"
    ranged = ok(seeknal("run", "--start", "2024-01-01", "--end", "2024-01-31", cwd=root, now=now))
    assert ranged == "my_node: nothing missing in the range\n"
    again = ok(seeknal("run", "--backfill", "--start", "2024-01-01", "--end", "2024-01-31", cwd=root, now=now))
    assert again == "my_node: nothing missing in the range\n"
    restate = ok(seeknal("run", "--restate", "--start", "2024-01-01", "--end", "2024-01-01", "--node", "my_node",
                         cwd=root, now=now))
    assert restate.splitlines()[:3] == ["Restated, reason: seeknal run --restate",
                                        "  my_node: 1 interval (2024-01-01 to 2024-01-02)",
                                        "my_node: Processing 1 restated interval (2024-01-01 to 2024-01-02)"]

    # "State Tracking": a run_state.json in the guide's format loads as it is (merged, half-open)
    (root / "target" / "run_state.json").write_text(GUIDE_STATE)
    for log in (root / "target").glob("*.jsonl"):
        log.unlink()
    listed = ok(seeknal("intervals", "list", "my_node", cwd=root, now=now))
    assert listed == "Completed intervals for my_node:\n  2024-01-01 to 2024-01-03\n"
