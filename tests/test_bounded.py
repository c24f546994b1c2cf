"""Bounded work on absurd input: a clock in year 9999, a start in year 1, an end at the last
representable day.  Each command runs as a real subprocess under an address-space limit, so
a regression fails here instead of exhausting the machine."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from test_cli import EVENTS_FLOW, HOURLY, make_project

SEEKNAL = str(Path(sys.executable).with_name("seeknal"))
MEMORY_LIMIT = 2 * 1024**3  # bytes of address space; the commands below need a fraction


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def seeknal(root: Path, *args: str, now: str = "2024-01-04T06:00:00Z") -> subprocess.CompletedProcess:
    env = {**os.environ, "SEEKNAL_NOW": now}
    return subprocess.run([SEEKNAL, *args, "--project-path", str(root)], env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=_limit_memory)


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_a_clock_in_year_9999_is_refused_with_the_count(tmp_path):
    root = make_project(tmp_path, HOURLY)
    result = seeknal(root, "run", now="9999-12-31T23:59:59Z")
    assert_refused(result, "intervals", "10,000,000", "--start/--end")
    assert "69,916,175 intervals" in result.stderr  # every hour from 2024-01-01 to 9999-12-31T23:00
    assert not (root / "target" / "run_state.json").exists()


def test_a_start_in_year_one_is_refused_for_hourly_and_listed_for_daily(tmp_path):
    root = make_project(tmp_path / "hourly", HOURLY)
    (root / "seeknal_project.yml").write_text("name: t\nstart: 0001-01-01\n")
    assert_refused(seeknal(root, "intervals", "pending"), "intervals", "10,000,000")

    root = make_project(tmp_path / "daily", EVENTS_FLOW.replace("{guard}", ""))
    (root / "seeknal_project.yml").write_text("name: t\nstart: 0001-01-01\n")
    result = seeknal(root, "intervals", "pending")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "Pending intervals (738888):"  # 0001-01-01 .. 2024-01-04


def test_an_end_on_the_last_representable_day_is_one_line(tmp_path):
    root = make_project(tmp_path, HOURLY)
    assert_refused(seeknal(root, "run", "--start", "2024-01-01", "--end", "9999-12-31", "--dry-run"),
                   "9999-12-31")
    assert_refused(seeknal(root, "intervals", "restate", "--node", "hourly", "--start", "2024-01-01",
                           "--end", "9999-12-31", "--reason", "bad"), "9999-12-31")
    # the day before is fine: only intervals that have ended (by the clock) are restated
    result = seeknal(root, "intervals", "restate", "--node", "hourly", "--start", "2024-01-01",
                     "--end", "9999-12-30", "--reason", "bad", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr


def test_dry_run_json_prints_runs_unless_each(tmp_path):
    root = make_project(tmp_path, HOURLY)
    (root / "seeknal_project.yml").write_text("name: t\nstart: 1900-01-01\n")
    result = seeknal(root, "run", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    node = data["nodes"][0]
    assert data["total_intervals"] == 1_087_038  # 1900-01-01 to 2024-01-04T06:00, hourly
    assert node["runs"] == [{"start": "1900-01-01T00:00:00+00:00", "end": "2024-01-04T06:00:00+00:00",
                             "local_start": "1900-01-01T00:00:00+00:00", "count": 1_087_038,
                             "reason": "new"}]
    assert len(result.stdout) < 2000

    root = make_project(tmp_path / "short", HOURLY)
    each = json.loads(seeknal(root, "run", "--dry-run", "--json", "--each").stdout)
    assert "runs" not in each["nodes"][0] and len(each["nodes"][0]["intervals"]) == 78
