"""Audits on real DuckDB and the real JSON state store: each built-in and a custom audit
fails exactly the violating interval (table and parquet), a re-run after the fix completes
it, a bad day inside a coalesced batch is isolated, warnings complete and show up
everywhere, ``seeknal audit`` checks history (and restates), bad definitions are one line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from seeknal_core import runner
from seeknal_core.cli import cli
from seeknal_core.errors import ProjectError
from seeknal_core.project import load_project
from seeknal_core.runner.audit import audit_completed
from seeknal_core.state import open_store
from seeknal_core.timeutil import from_epoch, to_epoch

#: one row per (day, k); the `bad` table (d DATE, what VARCHAR) injects violations per day
NODE = """
daily:
  schedule: "@daily"
  time_column: day
  {extra}
  sql: |
    WITH base AS (
      SELECT CAST(ts AS DATE) AS day,
             CASE WHEN CAST(ts AS DATE) IN (SELECT d FROM bad WHERE what = 'null') THEN NULL ELSE k END AS k,
             CASE WHEN CAST(ts AS DATE) IN (SELECT d FROM bad WHERE what = 'value') THEN 'zzz' ELSE 'a' END
               AS kind,
             count(*) * max(CASE WHEN CAST(ts AS DATE) IN (SELECT d FROM bad WHERE what = 'big') THEN 1000
                                 ELSE 1 END) AS n,
             sum(v) * max(CASE WHEN CAST(ts AS DATE) IN (SELECT d FROM bad WHERE what = 'negative') THEN -1
                               ELSE 1 END) AS v
      FROM raw WHERE ts >= '{{{{ start }}}}' AND ts < '{{{{ end }}}}' GROUP BY ALL)
    SELECT * FROM base WHERE day NOT IN (SELECT d FROM bad WHERE what = 'empty')
    UNION ALL SELECT * FROM base WHERE day IN (SELECT d FROM bad WHERE what = 'dup')
  audits:
{audits}
"""

READER = """
weekly_reader:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT day, sum(n) AS n FROM {{ ref('daily') }}
    WHERE day >= '{{ start }}' AND day < '{{ end }}' GROUP BY ALL
"""

UTC_DAY = 86400
START = to_epoch("2024-01-01")


def day_pair(day: int) -> tuple[int, int]:
    """The interval of 2024-01-<day>."""
    return (START + (day - 1) * UTC_DAY, START + day * UTC_DAY)


def make_project(root: Path, audits: str, *, days: int = 6, extra: str = "", readers: str = "") -> Path:
    (root / "seeknal" / "transforms").mkdir(parents=True, exist_ok=True)
    (root / "seeknal" / "sources").mkdir(parents=True, exist_ok=True)
    (root / "seeknal_project.yml").write_text("name: t\nstart: 2024-01-01\n")
    (root / "seeknal" / "sources" / "raw.yml").write_text(
        "raw:\n  table: raw\n  time_column: ts\nbad:\n  table: bad\n")
    write_nodes(root, audits, extra=extra, readers=readers)
    (root / "target").mkdir(exist_ok=True)
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    con.execute(f"CREATE OR REPLACE TABLE raw AS SELECT TIMESTAMP '2024-01-01' + INTERVAL (i * 60) MINUTE AS ts, "
                f"i % 3 AS k, (i * 37) % 101 AS v FROM range({days * 24}) t(i)")
    con.execute("CREATE OR REPLACE TABLE bad (d DATE, what VARCHAR)")
    con.close()
    return root


def write_nodes(root: Path, audits: str, *, extra: str = "", readers: str = "") -> None:
    text = NODE.format(audits=textwrap.indent(textwrap.dedent(audits).strip("\n"), "    "), extra=extra)
    (root / "seeknal" / "transforms" / "nodes.yml").write_text(text + readers)


def sql(root: Path, query: str, *params) -> list[tuple]:
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    try:
        return con.execute(query, list(params)).fetchall()
    finally:
        con.close()


def run(root: Path, now: str = "2024-01-07", **options):
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    try:
        return runner.run(project, store, now=now, **options), store.load()
    finally:
        store.close()


def invoke(root: Path, *args: str, now: str = "2024-01-07T00:00:00Z"):
    return CliRunner().invoke(cli, [*args, "--project-path", str(root)], env={"SEEKNAL_NOW": now},
                              catch_exceptions=False)


# (what the `bad` table injects, the audit YAML, the audit's name, offending rows on the bad day)
CASES = [
    ("null", "- not_null: [day, k]", "not_null", 1),  # the day's NULL keys group into one row
    ("dup", "- unique: [day, k]", "unique", 6),
    ("value", "- accepted_values: {column: kind, values: [a, b]}", "accepted_values", 3),
    ("negative", "- accepted_range: {column: v, min: 0}", "accepted_range", 3),
    ("empty", "- row_count: {min: 1}", "row_count", 1),
    ("big", "- name: no_huge_counts\n  sql: SELECT * FROM {{ this }} WHERE n > 100", "no_huge_counts", 3),
]


@pytest.mark.parametrize("materialization", ["incremental", "parquet"])
@pytest.mark.parametrize("what,audit,name,offending", CASES, ids=[c[2] for c in CASES])
def test_violating_interval_fails_alone_and_reruns_after_fix(tmp_path, what, audit, name, offending,
                                                             materialization):
    root = make_project(tmp_path, audit, extra=f"materialization: {materialization}")
    sql(root, "INSERT INTO bad VALUES (DATE '2024-01-03', ?)", what)
    result, states = run(root)
    node = result.nodes[0]
    assert [p for p, _ in node.failures] == [day_pair(3)]
    assert sorted(node.done) == [day_pair(d) for d in (1, 2, 4, 5, 6)]
    error = node.failures[0][1]
    assert f"audit {name} failed" in error and "2024-01-03" in error
    if name != "row_count":
        assert f"failed: {offending} row" in error and "samples:" in error
    else:
        assert "0 rows written, expected >= 1" in error
    assert states["daily"].failed_intervals.pairs() == [day_pair(3)]
    failed = [r for r in node.audit_results if not r.passed]
    assert [(r.audit, r.interval, r.rows) for r in failed] == [
        (name, day_pair(3), offending)]
    assert all(r.passed for r in node.audit_results if r.interval != day_pair(3))
    relation = ("daily" if materialization == "incremental"
                else f"read_parquet('{root}/target/data/daily/*.parquet')")
    days = [r[0].day for r in sql(root, f"SELECT DISTINCT day FROM {relation} ORDER BY 1")]
    assert days == [1, 2, 4, 5, 6]  # the table holds no row of the failed interval
    if materialization == "parquet":  # no staged file left behind
        assert not [f for f in (root / "target" / "data" / "daily").iterdir() if "staged" in f.name]

    sql(root, "DELETE FROM bad")
    result, states = run(root)
    assert result.ok and result.nodes[0].done == [day_pair(3)]  # retried first, now passes
    assert states["daily"].completed.pairs() == [(day_pair(1)[0], day_pair(6)[1])]
    assert [r[0].day for r in sql(root, f"SELECT DISTINCT day FROM {relation} ORDER BY 1")] == [1, 2, 3, 4, 5, 6]


def test_one_bad_day_in_a_30_day_batch_is_isolated_and_readers_wait(tmp_path):
    root = make_project(tmp_path, """
        - not_null: [day, k]
        - unique: [k]
        - accepted_range: {column: v, min: 0}
    """, days=30, extra="batch_size: 30", readers=READER)
    sql(root, "INSERT INTO bad VALUES (DATE '2024-01-17', 'negative')")
    result, states = run(root, now="2024-01-31")
    daily, reader = result.nodes
    assert [p for p, _ in daily.failures] == [day_pair(17)]
    assert len(daily.done) == 29
    assert sql(root, "SELECT count(*) FROM daily WHERE day = DATE '2024-01-17'") == [(0,)]
    assert sql(root, "SELECT count(DISTINCT day) FROM daily") == [(29,)]
    # unique on [k] holds within each interval, not across the 30 days of the batch
    assert all(r.passed for r in daily.audit_results if r.audit == "unique")
    assert [p for p, _ in reader.skipped] == [day_pair(17)]
    assert "upstream 'daily' failed" in reader.skipped[0][1]
    assert not states["weekly_reader"].completed.covers(*day_pair(17))


def test_prepared_audits_follow_a_rolled_back_table_and_leave_a_callers_connection(tmp_path):
    """A table batch's built-in audits run as one statement prepared per run and engine:
    it still checks the right rows after the first batch, which created the table, rolled
    back and the table was created again; an engine on a caller's connection leaves no
    prepared statement behind."""
    from seeknal_core.engines.duckdb import DuckDBEngine

    root = make_project(tmp_path, """
        - not_null: [day, k]
        - unique: [day, k]
        - accepted_range: {column: v, min: 0}
    """)
    sql(root, "INSERT INTO bad VALUES (DATE '2024-01-01', 'dup'), (DATE '2024-01-05', 'negative')")
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    try:
        for fixed in (False, True):
            engine = DuckDBEngine(project, connection=con)
            result = runner.run(project, store, now="2024-01-07", engine=engine)
            engine.close()
            assert con.execute("SELECT name FROM duckdb_prepared_statements()").fetchall() == []
            node = result.nodes[0]
            if fixed:
                assert result.ok and sorted(node.done) == [day_pair(1), day_pair(5)]
                break
            # one batch of the 6 days (it creates the table), rolled back, halved down to the bad days
            errors = dict(node.failures)
            assert sorted(errors) == [day_pair(1), day_pair(5)]
            assert "audit unique failed: 6 rows" in errors[day_pair(1)]
            assert "audit accepted_range failed: 3 rows" in errors[day_pair(5)]
            assert sorted(node.done) == [day_pair(d) for d in (2, 3, 4, 6)]
            assert con.execute("SELECT count(*) FROM daily").fetchone() == (12,)
            con.execute("DELETE FROM bad")
    finally:
        con.close()
        store.close()


def test_non_blocking_failure_completes_with_a_warning_everywhere(tmp_path):
    root = make_project(tmp_path, """
        - accepted_range: {column: v, min: 0}
          blocking: false
        - not_null: [day]
    """, days=7, extra="batch_size: 10")
    sql(root, "INSERT INTO bad VALUES (DATE '2024-01-04', 'negative')")
    out = invoke(root, "run")
    assert out.exit_code == 0, out.output
    assert "1 audit warning" in out.stdout
    assert "warning daily 2024-01-04 to 2024-01-05: audit accepted_range failed: 3 rows" in out.stdout
    assert "Error:" not in out.output
    assert sql(root, "SELECT count(DISTINCT day) FROM daily") == [(6,)]

    show = invoke(root, "intervals", "show", "daily")
    assert "Audit warnings for daily:" in show.stdout
    assert "2024-01-04 to 2024-01-05 ⚠ audit accepted_range failed: 3 rows" in show.stdout
    shown = json.loads(invoke(root, "intervals", "show", "daily", "--json").stdout)
    assert [w["start"][:10] for w in shown["nodes"][0]["audit_warnings"]] == ["2024-01-04"]
    history = invoke(root, "intervals", "history", "daily")
    assert "warning" in history.stdout and "audit accepted_range failed: 3 rows" in history.stdout

    sql(root, "DELETE FROM bad")
    invoke(root, "run", "--start", "2024-01-04", "--end", "2024-01-04", "--restate")  # fixed and re-run
    show = invoke(root, "intervals", "show", "daily")
    assert "Audit warnings" not in show.stdout  # the new completion cleared it

    sql(root, "INSERT INTO bad VALUES (DATE '2024-01-07', 'negative')")
    data = json.loads(invoke(root, "run", "--json", now="2024-01-08T00:00:00Z").stdout)
    assert data["ok"] and data["warnings"] == 1
    audits = data["nodes"][0]["audits"]
    assert {(a["audit"], a["passed"], a["blocking"]) for a in audits} == {
        ("accepted_range", False, False), ("not_null", True, True)}
    assert next(a for a in audits if not a["passed"])["samples"][0]["v"] < 0


def test_blocking_failure_exits_1_with_one_error_line_per_interval(tmp_path):
    root = make_project(tmp_path, "- accepted_range: {column: v, min: 0}")
    sql(root, "INSERT INTO bad VALUES (DATE '2024-01-02', 'negative'), (DATE '2024-01-05', 'negative')")
    out = invoke(root, "run")
    assert out.exit_code == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 2
    for line, day in zip(errors, ("2024-01-02", "2024-01-05")):
        assert "node 'daily'" in line and day in line and "audit accepted_range failed: 3 rows" in line
    sql(root, "DELETE FROM bad")
    plan = invoke(root, "run", "--dry-run")
    assert "2 failed" in plan.stdout  # retried first, like any failure
    assert invoke(root, "run").exit_code == 0


def test_custom_audit_whose_sql_fails_names_the_audit(tmp_path):
    root = make_project(tmp_path, "- name: typo\n  sql: SELECT * FROM {{ this }} WHERE nosuch > 1")
    result, _ = run(root)
    node = result.nodes[0]
    assert not node.done and len(node.failures) == 6
    assert "audit 'typo':" in node.failures[0][1] and "nosuch" in node.failures[0][1]
    # rolled back: not even the table its first batch created is left
    assert sql(root, "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'daily'") == [(0,)]


@pytest.mark.parametrize("materialization", ["incremental", "parquet"])
def test_seeknal_audit_checks_history_and_restates(tmp_path, materialization):
    extra = f"materialization: {materialization}"
    root = make_project(tmp_path, "- not_null: [day]", readers=READER, extra=extra)
    sql(root, "INSERT INTO bad VALUES (DATE '2024-01-02', 'negative'), (DATE '2024-01-03', 'negative'), "
              "(DATE '2024-01-05', 'dup')")
    result, _ = run(root)
    assert result.ok
    # new audits: history is checked without recomputing (plan restates nothing for them)
    write_nodes(root, """
        - accepted_range: {column: v, min: 0}
        - unique: [day, k]
        - row_count: {max: 3}
          blocking: false
    """, readers=READER, extra=extra)
    plan = invoke(root, "plan")
    assert "changed (audits) — non-breaking" in plan.stdout and "restate nothing" in plan.stdout

    project = load_project(root)
    store = open_store(project.root, project.state_config)
    reports = audit_completed(project, store, now="2024-01-07")
    assert [(r.node, r.intervals, len(r.runs)) for r in reports] == [("daily", 6, 1)]
    found = {(from_epoch(f.interval[0]).day, f.audit.name, f.rows) for f in reports[0].failures}
    assert found == {(2, "accepted_range", 3), (3, "accepted_range", 3), (5, "unique", 6),
                     (5, "row_count", 1)}
    store.close()

    out = invoke(root, "audit", "daily", "--last", "3d")  # 2024-01-04 .. 2024-01-06
    assert out.exit_code == 1
    assert "daily: 3 intervals in 1 run, 1 interval failing:" in out.stdout
    assert "2024-01-05 to 2024-01-06 ✗ audit unique failed: 6 rows" in out.stdout
    assert "2024-01-05 to 2024-01-06 ⚠ audit row_count failed: 6 rows written, expected <= 3" in out.stdout

    out = invoke(root, "audit", "--restate")
    assert out.exit_code == 1
    assert "Restated" in out.stdout and "weekly_reader" in out.stdout
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    reasons = {(r.node, r.reason) for r in store.pending_restatements()}
    assert ("daily", "audit accepted_range failed: 3 rows") in reasons
    assert ("daily", "audit unique failed: 6 rows") in reasons
    assert any(n == "weekly_reader" and "downstream of daily" in why for n, why in reasons)
    pending = {n: sorted(p[0] for r in store.pending_restatements(n) for p in
                         [(to_epoch(i.start), to_epoch(i.end)) for i in r.intervals])
               for n in ("daily", "weekly_reader")}
    store.close()
    assert pending["daily"] == [day_pair(2)[0], day_pair(5)[0]]  # days 2-3 share one restatement
    assert len(pending["weekly_reader"]) >= 2

    sql(root, "DELETE FROM bad")
    assert invoke(root, "run").exit_code == 0  # the restated days are recomputed, now clean
    assert invoke(root, "audit").exit_code == 0


def test_audit_json_and_gaps_make_separate_runs(tmp_path):
    root = make_project(tmp_path, "- accepted_range: {column: v, min: 0}")
    sql(root, "INSERT INTO bad VALUES (DATE '2024-01-03', 'negative')")
    assert run(root)[0].nodes[0].failures
    data = json.loads(invoke(root, "audit", "--json").stdout)
    assert data["ok"] and data["nodes"][0]["runs"] == 2 and data["nodes"][0]["intervals"] == 5
    assert data["nodes"][0]["failures"] == []


BAD = [
    ("- not_nul: [day]", "unknown audit 'not_nul' — did you mean 'not_null'?"),
    ("- accepted_values: {column: kind}", "audit 'accepted_values': missing argument 'values'"),
    ("- accepted_range: {column: v}", "audit 'accepted_range': missing argument 'min' or 'max'"),
    ("- accepted_range: {colum: v, min: 0}", "unknown argument 'colum' — did you mean 'column'?"),
    ("- name: broken\n  sql: SELECT * FROM {{ this }} WHERE", "audit 'broken': its SQL does not parse"),
    ("- not_null: [day]\n- not_null: [k]", "two audits are named 'not_null' — give one a `name:`"),
    ("- row_count: {min: -1}", "audit 'row_count': 'min' must be a row count"),
    ("- not_null: day\n  blocking: maybe", "audit 'not_null': 'blocking' must be true or false"),
]


@pytest.mark.parametrize("audits,message", BAD, ids=[m.split(":")[0][:30] for _, m in BAD])
def test_bad_audit_definitions_are_one_line(tmp_path, audits, message):
    root = make_project(tmp_path, audits)
    with pytest.raises(ProjectError) as info:
        load_project(root)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("seeknal/transforms/nodes.yml: node 'daily' field 'audits': "), text
    assert message in text


def test_a_column_the_sql_does_not_produce_is_named_at_load(tmp_path):
    root = make_project(tmp_path, "- not_null: [dya]")
    (root / "seeknal" / "transforms" / "nodes.yml").write_text(textwrap.dedent("""
        daily:
          schedule: "@daily"
          time_column: day
          sql: SELECT CAST(ts AS DATE) AS day, count(*) AS n FROM raw WHERE ts >= '{{ start }}' AND ts < '{{ end }}' GROUP BY ALL
          audits:
            - not_null: [dya]
    """))
    out = invoke(root, "run")
    assert out.exit_code == 2
    lines = out.stderr.strip().splitlines()
    assert lines == ["Error: seeknal/transforms/nodes.yml: node 'daily' field 'audits': audit 'not_null': the "
                     "node's SQL has no output column 'dya' — did you mean 'day'?"]


def test_audits_keep_fingerprints_of_nodes_without_them(tmp_path):
    root = make_project(tmp_path, "- not_null: [day]")
    node = load_project(root).nodes["daily"]
    bare = type(node)(**{**{f: getattr(node, f) for f in ("name", "sql", "schedule", "time_column")},
                         "audits": ()})
    assert "audits" not in bare.definition and "audits" in node.definition
    assert bare.fingerprint != node.fingerprint


def test_a_column_unknown_until_the_first_run_is_named_by_that_run(tmp_path):
    # the node's SQL ends in SELECT *: its columns are known only when it runs
    root = make_project(tmp_path, "- not_null: [day]\n- accepted_range: {column: amount, min: 0}")
    result, _ = run(root)
    node = result.nodes[0]
    assert not node.done and len(node.failures) == 6  # the query's error: the batch fails once
    assert "audit 'accepted_range':" in node.failures[0][1] and "amount" in node.failures[0][1]


@pytest.mark.parametrize("materialization", ["incremental", "parquet"])
def test_seeknal_audit_places_rows_without_a_time_key_and_custom_queries(tmp_path, materialization):
    extra = f"materialization: {materialization}"
    root = make_project(tmp_path, "- not_null: [day]", extra=extra)
    sql(root, "INSERT INTO bad VALUES (DATE '2024-01-02', 'dup'), (DATE '2024-01-04', 'big'), "
              "(DATE '2024-01-05', 'negative')")
    assert run(root)[0].ok
    write_nodes(root, """
        - unique: [k]
        - name: huge
          sql: SELECT * FROM {{ this }} WHERE n > 100
        - name: negative_days
          sql: SELECT day, count(*) AS c FROM {{ this }} WHERE v < 0 GROUP BY day
    """, extra=extra)
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    try:
        reports = audit_completed(project, store, now="2024-01-07")
    finally:
        store.close()
    found = {(from_epoch(f.interval[0]).day, f.audit.name, f.rows) for f in reports[0].failures}
    assert found == {(2, "unique", 6), (4, "huge", 3), (5, "negative_days", 1)}
    unique = next(f for f in reports[0].failures if f.audit.name == "unique")
    assert len(unique.samples) == 5 and all(s["day"].day == 2 for s in unique.samples)


def test_an_audit_that_cannot_be_evaluated_fails_its_batch_once_naming_it(tmp_path):
    root = make_project(tmp_path, "- not_null: [day]\n- accepted_range: {column: v, min: abc}")
    result, _ = run(root)
    node = result.nodes[0]
    assert not node.done and len({error for _, error in node.failures}) == 1  # not split per interval
    assert "audits 'not_null', 'accepted_range':" in node.failures[0][1]
    assert "abc" in node.failures[0][1]


def test_warnings_show_as_runs_with_totals_capped_per_node(tmp_path):
    """Contiguous intervals failing alike are one line stating the run's total, in the run's
    summary, `seeknal audit` and `intervals show`; at most 20 runs per node, then a count;
    `--json` keeps one entry per interval."""
    root = make_project(tmp_path, """
        - accepted_range: {column: v, min: 0}
          blocking: false
        - row_count: {max: 2}
          blocking: false
    """, days=60)
    negative = [*range(1, 11), *range(13, 60, 2)]  # one run of 10 days, then 24 single days
    sql(root, "INSERT INTO bad SELECT DATE '2023-12-31' + CAST(d AS INTEGER), 'negative' FROM unnest(?) t(d)",
        negative)
    now = "2024-03-01T00:00:00Z"
    out = invoke(root, "run", now=now)
    assert out.exit_code == 0, out.output
    assert f"{60 + len(negative)} audit warnings" in out.stdout
    hint = "  ... and 6 more runs (seeknal audit daily --json lists them all)"
    warned = [line for line in out.stdout.splitlines() if line.startswith("  warning daily ")]
    assert len(warned) == 20 and out.stdout.splitlines()[-1] == hint
    assert ("  warning daily 2024-01-01 to 2024-01-11 (10 intervals): audit accepted_range failed: 30 rows"
            in warned)
    assert ("  warning daily 2024-01-01 to 2024-03-01 (60 intervals): audit row_count failed: "
            "3 rows written, expected <= 2") in warned
    single = next(line for line in warned if line.startswith("  warning daily 2024-01-13 to 2024-01-14:"))
    assert single.endswith("audit accepted_range failed: 3 rows; samples: " + single.split("samples: ")[1])

    audit = invoke(root, "audit", "daily", now=now)
    assert audit.exit_code == 0
    lines = audit.stdout.splitlines()
    assert lines[0] == "daily: 60 intervals in 1 run, 60 intervals failing:"
    assert "  2024-01-01 to 2024-01-11 (10 intervals) ⚠ audit accepted_range failed: 30 rows" in lines
    assert len(lines) == 22 and lines[-1] == hint
    failures = json.loads(invoke(root, "audit", "daily", "--json", now=now).stdout)["nodes"][0]["failures"]
    assert len(failures) == 60 + len(negative)

    show = invoke(root, "intervals", "show", "daily", now=now).stdout.splitlines()
    shown = show[show.index("Audit warnings for daily:") + 1:]
    shown = shown[:shown.index("")] if "" in shown else shown  # the source watermarks follow
    assert len(shown) == 21 and shown[-1] == (
        "  ... and 6 more runs (seeknal intervals show daily --json lists them all)")
    assert "  2024-01-01 to 2024-03-01 (60 intervals) ⚠ audit row_count failed: 3 rows written, expected <= 2" in shown
    data = json.loads(invoke(root, "intervals", "show", "daily", "--json", now=now).stdout)
    per_interval = data["nodes"][0]["audit_warnings"]
    assert len(per_interval) == 60  # one per interval, its warnings joined
    assert per_interval[0]["warning"].startswith("audit accepted_range failed: 3 rows; samples: ")
    assert per_interval[0]["warning"].endswith("; audit row_count failed: 3 rows written, expected <= 2")
    run = json.loads(invoke(root, "run", "--json", "--start", "2024-01-01", "--end", "2024-01-10", "--restate",
                            now=now).stdout)
    assert run["warnings"] == 20  # per interval: 10 days, 2 audits each


def test_blocking_failures_keep_one_error_line_per_interval_capped(tmp_path):
    root = make_project(tmp_path, "- accepted_range: {column: v, min: 0}", days=12)
    sql(root, "INSERT INTO bad SELECT DATE '2024-01-01' + 2 * CAST(d AS INTEGER), 'negative' FROM range(6) t(d)")
    out = invoke(root, "run", now="2024-01-13T00:00:00Z")
    assert out.exit_code == 1
    errors = out.stderr.splitlines()
    assert len(errors) == 6 and all(line.startswith("Error: ") for line in errors)
    assert errors[0].startswith("Error: node 'daily' interval 2024-01-01T00:00:00+00:00 to 2024-01-02T00:00:00+00:00: "
                                "audit accepted_range failed: 3 rows; samples: ")
    assert errors[-1] == "Error: 1 more failures of daily: `seeknal intervals show` lists them"


TABLE_NODE = """
dim:
  sql: |
    SELECT k, count(*) AS n FROM raw GROUP BY k
    UNION ALL SELECT DISTINCT 0, 0 FROM bad WHERE what = 'dup'
  audits:
    - unique: [k]
    - row_count: {min: 5}
      blocking: false
"""


def test_table_node_audits_warn_block_and_keep_the_old_table(tmp_path):
    root = make_project(tmp_path, "- not_null: [day]", readers=TABLE_NODE)
    assert invoke(root, "audit", "dim").stdout == "dim: no table to audit yet: run `seeknal run`\n"

    out = invoke(root, "run")
    assert out.exit_code == 0, out.output
    assert "1 table rebuilt" in out.stdout and "1 audit warning" in out.stdout
    assert "  warning dim whole table: audit row_count failed: 3 rows written, expected >= 5" in out.stdout
    assert sql(root, "SELECT count(*) FROM dim") == [(3,)]
    history = invoke(root, "intervals", "history", "dim").stdout
    assert "warning" in history and "audit row_count failed: 3 rows written" in history

    sql(root, "INSERT INTO bad VALUES (DATE '2024-01-01', 'dup')")  # the next build repeats k = 0
    out = invoke(root, "run")
    assert out.exit_code == 1
    assert out.stderr.splitlines() == [
        "Error: node 'dim': audit unique failed: 2 rows; samples: k=0, n=48 | k=0, n=0"]
    assert sql(root, "SELECT count(*), min(n) FROM dim") == [(3, 48)]  # the old table stays
    data = json.loads(invoke(root, "run", "--json").stdout)
    [node] = [n for n in data["nodes"] if n["node"] == "dim"]
    assert not data["ok"] and [(f["start"], f["end"]) for f in node["failures"]] == [(None, None)]
    assert {(a["audit"], a["passed"], a["rows"]) for a in node["audits"]} == {("unique", False, 2),
                                                                              ("row_count", False, 1)}
    assert [s["k"] for s in next(a for a in node["audits"] if a["audit"] == "unique")["samples"]] == [0, 0]

    audit = invoke(root, "audit", "dim")  # the published (old) table: only the warning
    assert (audit.exit_code, audit.stdout) == (0, "dim: whole table, 1 audit failing:\n"
                                                   "  ⚠ audit row_count failed: 3 rows written, expected >= 5\n")
    sql(root, "INSERT INTO dim VALUES (1, 7)")
    audit = invoke(root, "audit")
    assert audit.exit_code == 1
    assert "dim: whole table, 2 audits failing:\n  ✗ audit unique failed: 2 rows; samples: k=1" in audit.stdout
    report = json.loads(invoke(root, "audit", "dim", "--json").stdout)
    assert report == {"ok": False, "nodes": [{"node": "dim", "table": True, "built": True, "failures": [
        {"audit": "unique", "blocking": True, "rows": 2, "message": report["nodes"][0]["failures"][0]["message"]},
        {"audit": "row_count", "blocking": False, "rows": 1,
         "message": "audit row_count failed: 4 rows written, expected >= 5"}]}]}
    restated = invoke(root, "audit", "--restate")
    assert restated.exit_code == 1 and "Nothing to restate" in restated.stdout  # a table is rebuilt by every run


def test_an_engine_without_a_staged_full_refresh_refuses_audits_on_a_table_node(tmp_path, monkeypatch):
    """An engine without a staged full refresh (the test-only hive engine) cannot audit a
    table: a table node's audits are refused at run time in one line, nothing written."""
    from engine_hive import HIVE

    from seeknal_core import engines

    monkeypatch.setitem(engines.ENGINES, HIVE.name, HIVE)
    root = make_project(tmp_path, "- not_null: [day]",
                        readers="dim:\n  engine: hive\n  sql: SELECT 1 AS k\n  audits:\n    - unique: [k]\n")
    out = invoke(root, "run")
    assert out.exit_code == 1
    assert out.stderr.splitlines() == [
        "Error: node 'dim': engine 'hive' cannot audit a table node yet: remove `audits:` from node 'dim', "
        "give it a schedule, or run it on duckdb"]
    assert not (root / "target" / "data" / "dim").exists()
