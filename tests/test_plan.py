"""`seeknal plan` end to end: real DuckDB, the CLI as a subprocess where a user types it.

A chain hourly -> daily -> weekly plus a second daily reader (daily_users) over a CSV of
one row an hour from 2024-01-01 for 45 days; SEEKNAL_NOW is 2024-02-10.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
from test_cli import make_project, seeknal, state_bytes

from seeknal_core.project import load_project
from seeknal_core.runner import changes, policy
from seeknal_core.state import open_store

NOW = "2024-02-10T00:00:00Z"

HOURLY = """\
hourly:
  schedule: "0 * * * *"
  time_column: hour
  sql: |
    SELECT date_trunc('hour', event_time) AS hour, user_id, v AS amount FROM raw_events
    WHERE event_time >= '{{ start }}' AND event_time < '{{ end }}' AND v > 0
"""
READERS = """\
daily:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT CAST(hour AS DATE) AS day, sum(amount) AS revenue FROM {{ ref('hourly') }}
    WHERE hour >= '{{ start }}' AND hour < '{{ end }}' GROUP BY ALL
daily_users:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT CAST(hour AS DATE) AS day, count(DISTINCT user_id) AS users FROM {{ ref('hourly') }}
    WHERE hour >= '{{ start }}' AND hour < '{{ end }}' GROUP BY ALL
weekly:
  schedule: "0 0 * * 1"
  time_column: week
  sql: |
    SELECT CAST(date_trunc('week', day) AS DATE) AS week, sum(revenue) AS revenue
    FROM {{ ref('daily') }} WHERE day >= '{{ start }}' AND day < '{{ end }}' GROUP BY ALL
"""
NODES = ("hourly", "daily", "daily_users", "weekly")


def chain(root: Path, hourly: str = HOURLY, settings: str = "") -> Path:
    make_project(root, hourly, READERS, days=45, settings=settings)
    return root


def edit_hourly(root: Path, old: str, new: str) -> None:
    path = root / "seeknal" / "transforms" / "nodes.yml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def run(root: Path, *args: str):
    done = seeknal(*args, "-p", str(root), now=NOW)
    assert done.returncode == 0, done.stderr
    return done


def plan_json(root: Path, *args: str) -> dict:
    return json.loads(run(root, "plan", "--json", *args).stdout)


def restated(data: dict) -> dict[str, int]:
    return {n["node"]: n["restate_intervals"] for n in data["nodes"] if n["restate_intervals"]}


def tables(root: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"), read_only=True)
    try:
        return {n: con.execute(f'SELECT * FROM "{n}" ORDER BY ALL').fetchall() for n in NODES}
    finally:
        con.close()


def fresh_recompute(root: Path, tmp: Path) -> dict[str, list[tuple]]:
    """The same project (current SQL) computed from nothing."""
    copy = tmp / "fresh"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("target"))
    run(copy, "run", "--backfill")
    return tables(copy)


def log(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "target" / "run_log.jsonl").read_text().splitlines()]


def test_breaking_filter_change_restates_every_reader_and_apply_equals_a_fresh_recompute(tmp_path):
    root = chain(tmp_path / "p")
    run(root, "run", "--backfill")
    edit_hourly(root, "AND v > 0", "AND v > 50")

    data = plan_json(root)
    hourly = next(n for n in data["nodes"] if n["node"] == "hourly")
    assert (hourly["status"], hourly["category"], hourly["changes"]) == ("changed", "breaking", ["sql"])
    assert hourly["what"] == ["filter"] and hourly["columns"]["rows"] is True
    assert any(line.startswith("+") and "50" in line for line in hourly["diff"])
    assert restated(data) == {"hourly": 960, "daily": 40, "daily_users": 40, "weekly": 5}
    text = run(root, "plan").stdout
    assert "hourly: changed (sql) — breaking" in text and "restate 960 intervals" in text

    applied = run(root, "plan", "--apply")
    assert "Recorded: reason 'definition changed: hourly filter'" in applied.stdout
    assert tables(root) == fresh_recompute(root, tmp_path)
    reasons = {(r["node"], r["reason"]) for r in log(root) if r.get("event") == "restate"}
    assert ("hourly", "definition changed: hourly filter") in reasons
    assert ("weekly", "definition changed: hourly filter (downstream of hourly)") in reasons
    assert plan_json(root)["total_intervals"] == 0  # the new definition is recorded


def test_a_column_only_one_reader_reads_restates_only_that_reader(tmp_path):
    root = chain(tmp_path / "p")
    run(root, "run", "--backfill")
    edit_hourly(root, "v AS amount", "v * 2 AS amount")
    data = plan_json(root)
    assert restated(data) == {"hourly": 960, "daily": 40, "weekly": 5}
    users = next(n for n in data["nodes"] if n["node"] == "daily_users")
    assert users["upstream"] == [] and users["restate_intervals"] == 0
    before = state_bytes(root)
    assert run(root, "plan", "--apply", "--no-run").returncode == 0
    assert state_bytes(root) != before
    run(root, "run")
    assert tables(root) == fresh_recompute(root, tmp_path)
    store = open_store(root)
    assert not store.node("daily_users").restatements


def test_comment_or_reformatting_edit_is_unchanged_and_records_nothing(tmp_path):
    root = chain(tmp_path / "p")
    run(root, "run", "--backfill")
    edit_hourly(root, "    SELECT date_trunc('hour', event_time) AS hour, user_id, v AS amount FROM raw_events\n",
                "    -- one row per hour\n    select date_trunc('hour',event_time) as hour,\n"
                "           user_id, v as amount\n    from raw_events\n")
    data = plan_json(root)
    assert {n["status"] for n in data["nodes"]} == {"unchanged"} and data["total_intervals"] == 0
    before = state_bytes(root)
    out = run(root, "plan", "--apply").stdout
    assert "No definition changed" in out
    assert state_bytes(root) == before


def test_adding_a_column_is_non_breaking_restates_only_the_node_and_fills_it(tmp_path):
    root = chain(tmp_path / "p")
    run(root, "run", "--backfill")
    edit_hourly(root, "v AS amount", "v AS amount, v % 2 AS parity")
    data = plan_json(root)
    hourly = next(n for n in data["nodes"] if n["node"] == "hourly")
    assert hourly["category"] == "non-breaking" and hourly["columns"]["added"] == ["parity"]
    assert restated(data) == {"hourly": 960}
    before = {n: open_store(root).node(n).completed for n in ("daily", "daily_users", "weekly")}
    run(root, "plan", "--apply")
    store = open_store(root)
    assert {n: store.node(n).completed for n in before} == before
    assert not any(store.node(n).restatements for n in before)
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*), count(parity) FROM hourly").fetchone() == (
            con.execute("SELECT count(*), count(*) FROM hourly").fetchone())
        assert con.execute("SELECT count(*) FROM hourly WHERE parity <> amount % 2").fetchone() == (0,)
    finally:
        con.close()


def test_from_restates_from_that_date_only(tmp_path):
    root = chain(tmp_path / "p")
    run(root, "run", "--backfill")
    old = tables(root)
    edit_hourly(root, "AND v > 0", "AND v > 50")
    data = plan_json(root, "--from", "2024-02-01")
    assert restated(data) == {"hourly": 216, "daily": 9, "daily_users": 9, "weekly": 1}
    run(root, "plan", "--apply", "--from", "2024-02-01")
    new = tables(root)
    assert [r for r in new["daily"] if str(r[0]) < "2024-02-01"] == [r for r in old["daily"] if str(r[0]) < "2024-02-01"]
    fresh = fresh_recompute(root, tmp_path)
    assert [r for r in new["daily"] if str(r[0]) >= "2024-02-01"] == [r for r in fresh["daily"] if str(r[0]) >= "2024-02-01"]
    for record in (r for r in log(root) if r.get("event") == "restate"):
        assert all(start >= "2024-01-29" for start, _ in record["intervals"])


def test_on_change_fail_stops_seeknal_run_with_one_line_and_leaves_state(tmp_path):
    root = chain(tmp_path / "p", settings="on_change: fail\n")
    run(root, "run", "--backfill")
    edit_hourly(root, "AND v > 0", "AND v > 50")
    before = state_bytes(root)
    done = seeknal("run", "-p", str(root), now="2024-02-11T00:00:00Z")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "hourly" in done.stderr and "seeknal plan" in done.stderr
    assert state_bytes(root) == before
    # --restate too: refused before anything is restated
    again = seeknal("run", "--restate", "--start", "2024-02-01", "--end", "2024-02-01", "-p", str(root),
                    now="2024-02-11T00:00:00Z")
    assert again.returncode == 2 and again.stderr == done.stderr
    assert state_bytes(root) == before


def test_on_change_warn_names_the_nodes_and_keeps_the_change_visible(tmp_path):
    root = chain(tmp_path / "p")
    run(root, "run", "--backfill")
    edit_hourly(root, "AND v > 0", "AND v > 50")
    for args in (("run", "--dry-run"), ("run",)):
        done = seeknal(*args, "-p", str(root), now="2024-02-11T00:00:00Z")
        # once per run: the node's note on stdout (issue 21: it used to warn on stderr too)
        assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
        assert done.stdout.count("definition changed") == 1
        assert "hourly: note: definition changed since its intervals were computed" in done.stdout
    assert next(n for n in plan_json(root)["nodes"] if n["node"] == "hourly")["status"] == "changed"


def test_on_change_apply_restates_within_seeknal_run(tmp_path):
    root = chain(tmp_path / "p", settings="on_change: apply\n")
    run(root, "run", "--backfill")
    edit_hourly(root, "AND v > 0", "AND v > 50")
    run(root, "run")
    assert tables(root) == fresh_recompute(root, tmp_path)


def test_schedule_change_daily_to_hourly_keeps_history_and_plans_only_what_the_grid_lacks(tmp_path):
    daily = HOURLY.replace('"0 * * * *"', '"@daily"')
    root = make_project(tmp_path / "p", daily, days=45)
    run(root, "run", "--backfill")
    edit_hourly(root, '"@daily"', '"0 * * * *"')
    data = plan_json(root)
    entry = data["nodes"][0]
    assert (entry["status"], entry["changes"], entry["category"]) == ("changed", ["schedule"], "non-breaking")
    assert entry["restate_intervals"] == 0 and "stay valid" in entry["grid"]
    run(root, "plan", "--apply")
    due = json.loads(seeknal("run", "--dry-run", "--json", "--each", "-p", str(root),
                             now="2024-02-10T06:00:00Z").stdout)
    intervals = due["nodes"][0]["intervals"]
    assert len(intervals) == 6 and intervals[0]["start"] == "2024-02-10T00:00:00+00:00"


def test_python_api_plan_as_data(tmp_path):
    root = chain(tmp_path / "p")
    run(root, "run", "--backfill")
    edit_hourly(root, "v AS amount", "v * 2 AS amount")
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    plan = changes.change_plan(project, store, now=NOW)
    assert [n.node for n in plan.changed] == ["hourly"]
    assert plan.entry("daily").upstream == ("hourly",) and plan.entry("daily").affected_columns == ("revenue",)
    assert plan.entry("daily_users").restate == []
    result = policy.apply_changes(project, store, plan, options={"now": NOW})
    assert set(result.restated) == {"hourly", "daily", "weekly"} and result.run.ok
