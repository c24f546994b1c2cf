"""Bad input is one line, the right exit code, bounded memory and time, and nothing half-written.

Each case runs the installed `seeknal` as a real subprocess (the exit code and stderr are what
a user sees) under an address-space limit, so a template, YAML or date that would take the
machine fails here instead.  The last cases are what a new user hit on a first walkthrough.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import EVENTS_FLOW, HOURLY, make_project

SEEKNAL = str(Path(sys.executable).with_name("seeknal"))
MEMORY_LIMIT = 2 * 1024**3  # bytes of address space: a bomb below needs far more
NOW = "2024-01-04T06:00:00Z"
ROOT = Path(__file__).resolve().parent.parent


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def seeknal(root: Path, *args: str, now: str = NOW, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**{k: v for k, v in os.environ.items() if k != "NO_COLOR"}, "SEEKNAL_NOW": now, **(env or {})}
    return subprocess.run([SEEKNAL, *args, "--project-path", str(root)], env=full, capture_output=True,
                          text=True, timeout=300, preexec_fn=_limit_memory)


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2 and exactly one ``Error: ...`` line on stderr holding ``words``; the line."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[-2000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def node_file(root: Path, text: str, name: str = "x.yml") -> Path:
    path = root / "seeknal" / "transforms" / name
    path.write_text(text)
    return path


# -- SQL as engines wrap it -----------------------------------------------------------------------
ENDINGS = {
    "comment-without-newline": ("sql: |-\n    SELECT date_trunc('hour', event_time) AS hour, count(*) AS n "
                                "FROM raw_events\n    WHERE event_time >= '{{ start }}' AND event_time < "
                                "'{{ end }}' GROUP BY ALL -- one row per hour"),
    "semicolon": ("sql: \"SELECT date_trunc('hour', event_time) AS hour, count(*) AS n FROM raw_events "
                  "WHERE event_time >= '{{ start }}' AND event_time < '{{ end }}' GROUP BY ALL;\""),
    "semicolon-then-comment": ("sql: \"SELECT date_trunc('hour', event_time) AS hour, count(*) AS n FROM "
                               "raw_events WHERE event_time >= '{{ start }}' AND event_time < '{{ end }}' "
                               "GROUP BY ALL; -- done;\""),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_sql_ending_in_a_semicolon_or_a_comment_runs(tmp_path, ending):
    root = make_project(tmp_path, "hourly:\n  schedule: \"0 * * * *\"\n  time_column: hour\n  "
                        + ENDINGS[ending] + "\n"
                        "total:\n  sql: \"SELECT sum(n) AS n FROM {{ ref('hourly') }} -- all rows\"\n")
    result = seeknal(root, "run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Done: 78 intervals, 1 table rebuilt" in result.stdout


def test_spark_sql_is_wrapped_the_same_way():
    from seeknal_core.engines.spark_sql import render_spark_sql
    from seeknal_core.project import TransformNode

    for sql, dialect in (("SELECT 1 AS a FROM t -- one", "spark"), ("SELECT 1 AS a FROM t;", "spark"),
                         ("SELECT 1 AS a FROM t; -- x", "spark"), ("SELECT 1 AS a FROM t;", "duckdb")):
        node = TransformNode(name="n", sql=sql, dialect=dialect)
        rendered = render_spark_sql(node, None, None)
        assert ";" not in rendered.split("--")[0], rendered
        assert "--" not in rendered or rendered.endswith("\n"), rendered


# -- Jinja: a bounded sandbox ---------------------------------------------------------------------
TEMPLATES = {
    "division-by-zero": ("{{ 1/0 }}", "division by zero"),
    "ref-without-argument": ("{{ ref() }}", "ref() missing 1 required positional argument"),
    "recursive-macro": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "calls itself"),
    "huge-range": ("{% for i in range(300000000) %}x{% endfor %}", "range"),
    "huge-repeat": ("{{ ' ' * 4000000000 }}", "too large"),
    "doubling-concatenation": ("{% set ns = namespace(s='a') %}{% for i in range(40) %}"
                               "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "too large"),
    "huge-power": ("{{ 7 ** 100000000 }}", "too large"),
    "huge-output": ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "too large"),
}


@pytest.mark.parametrize("case", list(TEMPLATES))
def test_a_template_bomb_is_one_line_naming_file_and_node(tmp_path, case):
    template, words = TEMPLATES[case]
    root = make_project(tmp_path, HOURLY)
    node_file(root, "x:\n  schedule: \"@daily\"\n  time_column: d\n  sql: \"SELECT DATE '{{ start_date }}' "
              f"AS d {template}\"\n")
    line = assert_refused(seeknal(root, "run"), "node 'x'", "x.yml", "SQL template error", words)
    assert "Traceback" not in line and "MemoryError" not in line


# -- YAML aliases ------------------------------------------------------------------------------
def laughs(indent: str = "") -> str:
    """Nine levels of ten aliases each: 10^9 strings once expanded, 1 KB as text."""
    lines = [f'{indent}a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefghi", "bcdefghij"):
        lines.append(f"{indent}{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["meta", "node-file", "project-file", "self-reference"])
def test_a_yaml_alias_bomb_is_refused_and_not_cached(tmp_path, where):
    root = make_project(tmp_path, HOURLY)
    assert seeknal(root, "run").returncode == 0  # the cache exists, from good files
    cache = root / "target" / "project_cache.json"
    before = cache.read_bytes()
    if where == "meta":
        path = node_file(root, "x:\n  sql: SELECT 1 AS a\n  meta:\n" + laughs("    "))
    elif where == "node-file":
        path = node_file(root, laughs())
    elif where == "project-file":
        path = root / "seeknal_project.yml"
        path.write_text("name: t\nstart: 2024-01-01\n" + laughs())
    else:
        path = node_file(root, "x:\n  sql: SELECT 1 AS a\n  meta: &m [*m]\n")
    assert_refused(seeknal(root, "intervals", "show"), path.name, "aliases", "1,000,000")
    assert cache.read_bytes() == before  # not walked, not written
    assert not list((root / "target").glob(".project_cache.*"))


# -- lookback ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lookback", [200, 20_000_000, 1_000_000_000_000])
def test_a_lookback_past_the_history_stops_at_the_node_start(tmp_path, lookback):
    root = make_project(tmp_path, HOURLY.replace("time_column: hour", f"time_column: hour\n  lookback: {lookback}"))
    assert seeknal(root, "run", now="2024-01-03T00:00:00Z").returncode == 0
    result = seeknal(root, "run", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["nodes"][0]["runs"]
    lookback_runs = [r for r in runs if r["reason"] == "lookback"]
    assert lookback_runs[0]["start"] == "2024-01-01T00:00:00+00:00", runs  # the node's start, not before
    assert sum(r["count"] for r in runs) == 78


# -- dates at the edges of the calendar ---------------------------------------------------------------
@pytest.mark.parametrize(("args", "now", "words"), [
    (("plan", "--from", "3100-01-01"), NOW, ("--from 3100-01-01 is after now",)),
    (("plan", "--from", "2024-01-01/2024-01-03"), NOW, ("'--from'", "invalid date")),
    (("run", "--last", "P100000Y", "--dry-run"), NOW, ("--last P100000Y", "0001-01-01")),
    (("run", "--last", "99999999999999999999d", "--dry-run"), NOW, ("'--last'", "longer than")),
    (("run", "--last", "P1M", "--end", "0001-01-15", "--dry-run"), NOW, ("--last P1M", "0001-01-01")),
    (("run", "--dry-run"), "0001-01-01T00:00:00+14:00", ("$SEEKNAL_NOW",)),
    (("intervals", "restate", "--start", "0001-01-01", "--end", "0001-01-02", "--dry-run"), NOW,
     ("calendar",)),
], ids=["from-future", "from-range", "last-100000y", "last-huge-days", "last-before-year-1",
        "now-before-year-1", "year-1-at-utc+14"])
def test_dates_off_the_calendar_are_one_line(tmp_path, args, now, words):
    root = make_project(tmp_path, HOURLY, settings="timezone: Pacific/Kiritimati\n")  # UTC+14
    assert_refused(seeknal(root, *args, now=now), *words)
    assert not (root / "target" / "run_state.json").exists()


def test_a_seed_format_state_ending_at_9999_is_the_corrupt_file_line(tmp_path):
    root = make_project(tmp_path, HOURLY)
    state = root / "target" / "run_state.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"nodes": {"hourly": {"completed_intervals": [
        ["2024-01-01T00:00:00", "9999-12-31T23:59:59"]]}}}))
    before = state.read_bytes()
    assert_refused(seeknal(root, "run", "--dry-run"), "is corrupt", "9999-12-31T23:59:59")
    assert state.read_bytes() == before


# -- the load cache --------------------------------------------------------------------------------
FOREIGN = {
    "wrong-types": '{"version": 2, "yaml": [], "files": "x", "scan": [1], "normalized": {"k": 1}}',
    "short-entries": None,  # a real cache with every entry cut short, written below
    "deep-lists": '{"version": 2, "yaml": {"k": ' + "[" * 100_000 + "]" * 100_000 + "}}",
}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_cache_of_the_wrong_shape_is_ignored(tmp_path, kind):
    root = make_project(tmp_path, HOURLY, EVENTS_FLOW.replace("{guard}", ""))
    assert seeknal(root, "run", now="2024-01-02T00:00:00Z").returncode == 0
    clean = seeknal(root, "intervals", "pending")
    assert clean.returncode == 0, clean.stderr
    cache = root / "target" / "project_cache.json"
    if kind == "short-entries":
        doc = json.loads(cache.read_text())
        assert doc["scan"] and doc["yaml"]
        doc["files"] = {k: v[:2] for k, v in doc["files"].items()}
        doc["scan"] = {k: v[:1] for k, v in doc["scan"].items()}
        cache.write_text(json.dumps(doc))
    else:
        cache.write_text(FOREIGN[kind])
    for _ in range(2):  # ignored, then replaced by a good one
        again = seeknal(root, "intervals", "pending")
        assert (again.returncode, again.stdout) == (0, clean.stdout), again.stderr[-2000:]


def test_exit_2_leaves_the_cache_as_it_was(tmp_path):
    root = make_project(tmp_path, HOURLY)
    assert seeknal(root, "run").returncode == 0
    cache = root / "target" / "project_cache.json"
    before = cache.read_bytes()
    node_file(root, "y:\n  sql: SELECT 1 AS a\n", "y.yml")  # parsed and cached, then ...
    node_file(root, "x:\n  sql: SELECT 1 AS a\n  schedul: '@daily'\n")  # ... an unknown field
    assert_refused(seeknal(root, "intervals", "show"), "schedul")
    assert cache.read_bytes() == before


# -- Spark that does not answer -------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["remote: sc://127.0.0.1:1", "master: spark://127.0.0.1:1"])
def test_an_unreachable_spark_is_one_line(tmp_path, setting):
    root = make_project(tmp_path, HOURLY, settings=f"engine:\n  type: spark\n  {setting}\n")
    assert_refused(seeknal(root, "run"), "cannot reach Spark", setting.split(": ")[1], "Connection refused")
    assert not (root / "target" / "run_state.json").exists()


# -- state files that are not ----------------------------------------------------------------------
@pytest.mark.parametrize("other", ["target/warehouse.duckdb", "seeknal_project.yml", "target/project_cache.json"])
def test_migrate_refuses_a_path_that_is_not_a_state_file(tmp_path, other):
    root = make_project(tmp_path, HOURLY)
    assert seeknal(root, "run").returncode == 0
    path = root / other
    before, listing = path.read_bytes(), sorted(p.name for p in path.parent.iterdir())
    assert_refused(seeknal(root, "state", "migrate", "--to", "json", "--path", other), "not a seeknal state file")
    if path.name != "project_cache.json":  # seeknal's own cache may learn file stats on any load
        assert path.read_bytes() == before
    else:
        assert json.loads(path.read_bytes())["version"] == json.loads(before)["version"]
    assert sorted(p.name for p in path.parent.iterdir()) == listing  # no lock, no copy


def test_a_dangling_state_link_is_refused(tmp_path):
    root = make_project(tmp_path, HOURLY)
    (root / "target").mkdir()
    gone = tmp_path / "elsewhere" / "deep" / "state.json"
    (root / "target" / "run_state.json").symlink_to(gone)
    assert_refused(seeknal(root, "run"), "is a link to", str(gone), "does not exist")
    assert not (tmp_path / "elsewhere").exists()


# -- text others wrote ------------------------------------------------------------------------------
def test_control_and_bidi_characters_are_escaped_on_output(tmp_path):
    root = make_project(tmp_path, HOURLY)
    assert seeknal(root, "run").returncode == 0
    reason, actor = "late \x1b[31mdata\u202e fixed", "ops\u202ebot"
    restated = seeknal(root, "intervals", "restate", "--start", "2024-01-02", "--end", "2024-01-02",
                       "--reason", reason, env={"SEEKNAL_ACTOR": actor})
    assert restated.returncode == 0, restated.stderr
    shown = seeknal(root, "intervals", "show")
    history = seeknal(root, "intervals", "history", "hourly")
    for out in (restated.stdout, shown.stdout, history.stdout):
        assert "\x1b" not in out and "\u202e" not in out, out
        assert "late \\x1b[31mdata\\u202e fixed" in out, out
    assert "ops\\u202ebot" in shown.stdout and "ops\\u202ebot" in history.stdout
    records = json.loads(seeknal(root, "intervals", "history", "hourly", "--json").stdout)["records"]
    assert records[-1]["reason"] == reason and records[-1]["actor"] == actor  # stored as given


# -- what a new user hit ------------------------------------------------------------------------------
def test_partition_keys_name_the_nodes_whose_format_they_fit(tmp_path):
    root = make_project(tmp_path, HOURLY, EVENTS_FLOW.replace("{guard}", ""))
    assert_refused(seeknal(root, "run", "--partitions", "2024-01-02", "--backfill"),
                   "fits the format of events_flow", "not of hourly (%Y-%m-%d-%H:%M)", "--node events_flow")
    result = seeknal(root, "run", "--node", "events_flow", "--partitions", "2024-01-02", "--dry-run")
    assert result.returncode == 0 and "1 partition interval (2024-01-02 to 2024-01-03)" in result.stdout


def test_both_restate_commands_default_a_reason_naming_the_command(tmp_path):
    root = make_project(tmp_path, HOURLY)
    assert seeknal(root, "run").returncode == 0
    result = seeknal(root, "intervals", "restate", "--start", "2024-01-02", "--end", "2024-01-02")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Restated, reason: seeknal intervals restate\n")
    assert_refused(seeknal(root, "intervals", "restate", "--start", "2024-01-02", "--end", "2024-01-02",
                           "--reason", " "), "needs a reason")
    assert_refused(seeknal(root, "run", "--restate", "--start", "2024-01-02", "--end", "2024-01-02",
                           "--reason", " "), "needs a reason")


def test_history_shows_the_actor_and_the_run_in_their_own_columns(tmp_path):
    root = make_project(tmp_path, HOURLY)
    assert seeknal(root, "run").returncode == 0
    env = {"SEEKNAL_ACTOR": "alice"}
    assert seeknal(root, "intervals", "restate", "--start", "2024-01-02", "--end", "2024-01-02",
                   "--reason", "late", env=env).returncode == 0
    assert seeknal(root, "run").returncode == 0
    lines = seeknal(root, "intervals", "history", "hourly").stdout.splitlines()
    header = lines[1]
    actor_at, run_at, reason_at = header.index("ACTOR"), header.index("RUN "), header.index("REASON")
    columns = {line.split()[2]: (line[actor_at:run_at].strip(), line[run_at:reason_at].strip())
               for line in lines[2:]}  # EVENT -> (ACTOR, RUN); the last record of each event
    records = json.loads(seeknal(root, "intervals", "history", "hourly", "--json").stdout)["records"]
    run_id = records[-2]["run_id"]
    assert records[-1]["resolved_by"] == f"restate:{run_id}"
    assert columns["restate"] == ("alice", "-")
    assert columns["complete"] == ("-", run_id)
    assert columns["resolve"] == ("-", run_id)  # the resolving run, no longer shown as the actor


def test_the_demo_steps_leave_the_checkout_clean(tmp_path):
    """`make demo`'s steps (generate the data, backfill, show) on a copy of the example project
    in its own git checkout: nothing tracked changes."""
    work = tmp_path / "repo"
    shutil.copytree(ROOT / "example_project", work / "example_project",
                    ignore=shutil.ignore_patterns("data", "target", "__pycache__", "*.local.yml"))
    shutil.copy(ROOT / ".gitignore", work / ".gitignore")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "clean"]):
        subprocess.run([*git, *args], cwd=work, check=True)
    env = {**os.environ, "SEEKNAL_EXAMPLE_END": "2024-04-01T00:00"}
    subprocess.run([sys.executable, "example_project/generate_data.py", "--rows", "3000"], cwd=work,
                   env=env, check=True, capture_output=True)
    project = work / "example_project"
    for args in (("run", "--backfill"), ("intervals", "show")):
        result = seeknal(project, *args, now="2024-04-01T00:00:00Z")
        assert result.returncode == 0, result.stderr
    assert "  2023-12-31 02:00 to 2024-01-07 02:00 ✓" in result.stdout  # weekly, from the data's start
    status = subprocess.run(["git", "status", "--porcelain"], cwd=work, capture_output=True, text=True)
    assert status.stdout == ""
