"""CLI rendering (spans, annotations, progress) and its fixed cost (no heavy imports)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

from test_cli import EVENTS_FLOW, HOURLY, SUMMARY, invoke, make_project

from seeknal_core import grid
from seeknal_core.cli import progress, render
from seeknal_core.cli.common import Session
from seeknal_core.intervals import IntervalSet
from seeknal_core.project import TransformNode

DAY = 86_400
JAN1 = 1704067200  # 2024-01-01T00:00:00Z


def node(schedule: str, timezone: str = "UTC") -> TransformNode:
    return TransformNode(name="n", sql="SELECT 1", schedule=schedule, timezone=timezone, time_column="t")


def test_spans_in_the_node_timezone():
    assert render.span(JAN1, JAN1 + DAY, node("@daily")) == "2024-01-01 to 2024-01-02"
    assert render.span(JAN1, JAN1 + 3600, node("@hourly")) == "2024-01-01 00:00 to 2024-01-01 01:00"
    ny = node("@daily", "America/New_York")
    assert render.span(JAN1 + 5 * 3600, JAN1 + 29 * 3600, ny) == "2024-01-01 to 2024-01-02"
    assert render.span(JAN1, JAN1 + DAY, ny) == "2023-12-31 19:00 to 2024-01-01 19:00"  # not ticks
    assert render.span(JAN1 + 7200, JAN1 + DAY + 7200, node("0 2 * * *")) == \
        "2024-01-01 02:00 to 2024-01-02 02:00"


def test_spans_text_merges_and_limits():
    daily = node("@daily")
    pairs = [(JAN1 + i * DAY, JAN1 + (i + 1) * DAY) for i in (0, 1, 3, 5, 7)]
    assert render.spans_text(pairs, daily) == ("2024-01-01 to 2024-01-03, 2024-01-04 to 2024-01-05, "
                                              "2024-01-06 to 2024-01-07, +1 more range")


def test_describe_due_counts_reasons():
    daily = node("@daily")
    due = {(JAN1, JAN1 + DAY): "retry", (JAN1 + DAY, JAN1 + 2 * DAY): "new",
           (JAN1 + 2 * DAY, JAN1 + 3 * DAY): "new"}
    assert render.describe_due(due, daily) == "Processing 3 intervals: 2 new, 1 failed (2024-01-01 to 2024-01-04)"
    assert render.describe_due({(JAN1, JAN1 + DAY): "new"}, daily) == \
        "Processing 1 new interval (2024-01-01 to 2024-01-02)"


def iso(t: int) -> str:
    return f"{render.from_epoch(t):%Y-%m-%dT%H:%M:%S}Z"


def test_annotations_follow_the_latest_completion():
    completed = IntervalSet.from_pairs([(JAN1, JAN1 + 6 * DAY)])
    history = [
        {"event": "complete", "mode": "run", "intervals": [[iso(JAN1), iso(JAN1 + 4 * DAY)]]},
        {"event": "restate", "intervals": [[iso(JAN1 + DAY), iso(JAN1 + 2 * DAY)]]},
        {"event": "complete", "mode": "restate", "intervals": [[iso(JAN1 + DAY), iso(JAN1 + 2 * DAY)]]},
        {"event": "complete", "mode": "manual", "intervals": [[iso(JAN1 + 3 * DAY), iso(JAN1 + 5 * DAY)]]},
    ]
    pieces = render.annotated_runs(completed, history)
    assert [((a - JAN1) // DAY, (b - JAN1) // DAY, mode) for (a, b), mode in pieces] == [
        (0, 1, "run"), (1, 2, "restate"), (2, 3, "run"), (3, 5, "manual"), (5, 6, "")]
    assert [render.annotation(m) for _, m in pieces] == ["", " (restated)", "", " (manual)", ""]


def test_rich_progress_bars_per_node(tmp_path):
    from rich.console import Console

    from seeknal_core import runner

    root = make_project(tmp_path, EVENTS_FLOW, SUMMARY)
    sess = Session(str(root))
    sess._now = render.to_utc("2024-01-04T06:00:00Z")
    plan = runner.plan(sess.project, sess.store.load(), now=sess.now, batch_size=2)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, no_color=True)
    with progress.RichProgress(sess, console) as bars:
        result = runner.execute(plan, sess.project, sess.store, progress=bars)
    assert result.ok and result.intervals == 6
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "events_flow batch 2/2" in text and "summary batch 2/2" in text and "3/3" in text


def test_rich_is_used_on_a_terminal_and_respects_no_color(tmp_path, monkeypatch):
    root = make_project(tmp_path)
    monkeypatch.setattr(progress, "is_terminal", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    made = []
    original = progress.RichProgress.__init__

    def spy(self, sess, console=None):
        original(self, sess, console)
        made.append(self.bars.console)

    monkeypatch.setattr(progress.RichProgress, "__init__", spy)
    result = invoke(root, "run")
    assert result.exit_code == 0 and "Done: 3 intervals" in result.output
    assert made and made[0].no_color
    assert "\x1b[3" not in result.output  # no colour escapes


IMPORT_PROBE = """
import sys, json
from seeknal_core.cli import cli
code = cli.main(args=sys.argv[1:], prog_name="seeknal", standalone_mode=False)
heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("duckdb", "dagster", "rich")})
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def probe(root, *args, script: str = IMPORT_PROBE) -> dict:
    proc = subprocess.run([sys.executable, "-c", script, *args, "--project-path", str(root)],
                          capture_output=True, text=True, env={"SEEKNAL_NOW": "2024-01-04T06:00:00Z",
                                                               "PATH": "/usr/bin:/bin"})
    return json.loads(proc.stderr.splitlines()[-1])


def test_interval_commands_import_neither_duckdb_nor_dagster_nor_rich(tmp_path):
    root = make_project(tmp_path, EVENTS_FLOW, HOURLY)
    landed = time.time() - 3600  # the data landed before the run: its watermark is cached by stat
    os.utime(root / "data" / "raw_events.csv", (landed, landed))
    assert invoke(root, "run").exit_code == 0
    for args in (["intervals", "list", "events_flow"], ["intervals", "show"], ["intervals", "pending"],
                 ["intervals", "history", "events_flow", "--json"], ["run", "--dry-run"],
                 ["intervals", "restate", "--start", "2024-01-01", "--end", "2024-01-01", "--reason", "r"],
                 ["intervals", "complete", "events_flow", "--interval", "2024-01-03"]):
        assert probe(root, *args) == {"code": 0, "heavy": []}, args
    assert "duckdb" in probe(root, "run")["heavy"]  # running does need the engine


def test_startup_is_small(tmp_path):
    """A generous bound (the report gives measured numbers): a quick command stays well
    under a second even on a slow CI machine."""
    root = make_project(tmp_path)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "seeknal_core.cli", "intervals", "pending",
                           "--project-path", str(root)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("Pending intervals (")
    assert time.perf_counter() - t < 3.0


PENDULUM_PROBE = IMPORT_PROBE.replace('("duckdb", "dagster", "rich")', '("pendulum",)')


def test_pendulum_is_imported_only_for_last_and_freshness(tmp_path):
    root = make_project(tmp_path)
    assert probe(root, "intervals", "pending", script=PENDULUM_PROBE) == {"code": 0, "heavy": []}
    assert invoke(root, "run").exit_code == 0
    for args in (["intervals", "pending", "--last", "24h"], ["intervals", "show"]):
        assert probe(root, *args, script=PENDULUM_PROBE) == {"code": 0, "heavy": ["pendulum"]}, args


# -- the coverage bar on a real terminal (a pty) -------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def on_a_terminal(root, *args: str, env: dict | None = None, columns: int = 80) -> str:
    """Run the installed `seeknal` with stdout on a pseudo-terminal of ``columns``; what it drew."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    from pathlib import Path

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    seeknal = str(Path(sys.executable).with_name("seeknal"))
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES", "FORCE_COLOR")}
    proc = subprocess.Popen([seeknal, *args, "--project-path", str(root)], stdout=slave, stderr=subprocess.PIPE,
                            env={**base, "TERM": "xterm-256color", **(env or {})})
    os.close(slave)
    chunks = []
    while True:  # read until the child closes the terminal (EIO on Linux)
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait() == 0, proc.stderr.read()
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


def test_show_draws_a_coverage_bar_on_a_terminal(tmp_path):
    from test_cli import fail_on

    root = make_project(tmp_path, EVENTS_FLOW, guard=fail_on("2024-01-03"))
    invoke(root, "run", now="2024-01-06T00:00:00Z")           # 01-03 fails, 01-01..01-05 otherwise done
    invoke(root, "intervals", "restate", "--start", "2024-01-05", "--end", "2024-01-05", "--reason", "late",
           now="2024-01-08T00:00:00Z")                        # 01-05 pending restatement; 01-06, 01-07 missing
    now = {"SEEKNAL_NOW": "2024-01-08T00:00:00Z"}
    drawn = on_a_terminal(root, "intervals", "show", env=now)
    assert "\x1b[" in drawn  # coloured
    lines = ANSI.sub("", drawn).splitlines()
    assert lines[0] == "Completed Intervals for events_flow:"
    bar, ends = lines[1].rsplit("  ", 1)
    assert ends == "2024-01-01 → 2024-01-08" and len(lines[1]) <= 80
    cells = bar.strip()
    assert set(cells) == set("█✗▒░")
    # the 7 days in order: done, done, failed, done, restating, missing, missing
    assert re.sub(r"(.)\1+", r"\1", cells) == "█✗█▒░"
    day = len(cells) / 7
    assert abs(cells.index("✗") - 2 * day) <= 1 and abs(cells.index("░") - 5 * day) <= 1
    assert lines[2:5] == ["  2024-01-01 to 2024-01-02 ✓", "  2024-01-02 to 2024-01-03 ✓", "  2024-01-04 to 2024-01-05 ✓"]
    legend = ["✗", "failed", "▒", "restating", "░", "missing", "█", "completed"]
    assert legend in [line.split() for line in lines]  # then each source's watermark
    plain = ANSI.sub("", on_a_terminal(root, "intervals", "show", env={**now, "NO_COLOR": "1"}))
    assert plain.splitlines()[1] == lines[1]  # glyphs tell the categories apart without colour
    # not a terminal: the text as before, no bar; --json unchanged
    piped = invoke(root, "intervals", "show", now="2024-01-08T00:00:00Z").output
    assert piped.splitlines()[0] == lines[0] and piped.splitlines()[1] == "  2024-01-01 to 2024-01-02 ✓"
    assert "█" not in piped


def test_listing_cuts_runs_at_the_ticks_of_irregular_grids():
    """New York days are 23 and 25 hours around DST: one line per local day, counted alike."""
    ny = node("@daily", "America/New_York")
    mar9, mar12 = 1709960400, 1710216000  # 2024-03-09 and 2024-03-12, 00:00 New York
    assert grid.count(ny.schedule, mar9, mar12) == 3
    assert [render.span(a, b, ny) for a, b, _, _ in render.listed([(mar9, mar12, "")], ny)] == [
        "2024-03-09 to 2024-03-10", "2024-03-10 to 2024-03-11", "2024-03-11 to 2024-03-12"]
    assert list(render.listed([(mar9, mar12, "x")], ny, "runs")) == [(mar9, mar12, "x", 3)]
    hourly = node("@hourly")
    long_run = [(JAN1, JAN1 + 25 * 3600, "")]
    assert list(render.listed(long_run, hourly)) == [(JAN1, JAN1 + 25 * 3600, "", 25)]
    assert len(list(render.listed(long_run, hourly, "each"))) == 25


def test_relative_durations_short_and_iso():
    import datetime as dt

    from seeknal_core.cli import relative

    at = dt.datetime(2024, 3, 31, 12, tzinfo=dt.UTC)
    assert [relative.iso_text(t) for t in ("24h", "7d", "90m", "2w", "1d12h", "P7D")] == [
        "PT24H", "P7D", "PT90M", "P14D", "P1DT12H", "P7D"]
    assert relative.before(at, "24h") == relative.before(at, "PT24H") == dt.datetime(2024, 3, 30, 12, tzinfo=dt.UTC)
    assert relative.before(at, "P1M") == dt.datetime(2024, 2, 29, 12, tzinfo=dt.UTC)  # calendar month
    assert relative.before(dt.date(2024, 1, 6), "36h") == dt.datetime(2024, 1, 4, 12)  # naive stays naive
    assert relative.ago(at - dt.timedelta(hours=3), at) == "3 hours ago"
    assert relative.ago(at + dt.timedelta(days=2), at) == "in 2 days"


def test_the_coverage_bar_starts_at_the_first_whole_interval():
    """A New York daily node or a weekly one, starting 2024-01-01: the bar begins where its first
    interval does (New York midnight, the first Sunday 02:00), so done work shows no missing cell."""
    import dataclasses
    import datetime as dt

    from seeknal_core.cli.coverage import cells, node_range

    now = dt.datetime(2024, 1, 29, tzinfo=dt.UTC)
    for spec, first in ((node("@daily", "America/New_York"), JAN1 + 5 * 3600),
                        (node("0 2 * * 0"), JAN1 + 6 * DAY + 2 * 3600)):
        spec = dataclasses.replace(spec, start=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        lo, hi = node_range(spec, IntervalSet(), now)
        assert lo == first
        done = IntervalSet.from_pairs([(lo, hi)])
        assert set(cells(lo, hi, 60, done, IntervalSet(), IntervalSet())) == {"completed"}
