"""Fingerprints from sqlglot's tokens: what they see, and upgrading from the parsed form.

The chain and the CLI come from test_plan (real DuckDB, the CLI as a subprocess).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import seeknal
from test_plan import NODES, chain, edit_hourly, plan_json, run

from seeknal_core.project import TransformNode, load_project, strip_comments, table_references
from seeknal_core.project.fingerprint import tokens
from seeknal_core.state import open_store

LATER = "2024-02-13T00:00:00Z"  # after NOW (2024-02-10): every node has new intervals


def node(sql: str, **fields) -> TransformNode:
    return TransformNode(name="n", sql=sql, schedule="@daily", time_column="ts", **fields)


def test_tokens_see_literals_numbers_and_operators_but_not_case_or_quotes():
    base = node("SELECT a, sum(b) AS s FROM t WHERE c = 'A' AND d >= 1e5 GROUP BY a")
    same = [
        'select "a", SUM(b) as s from t where c = \'A\' and d>=1e5 group by a;',
        "SELECT a, Sum ( b ) AS s /* x */ FROM t WHERE c = 'A' AND d >= 1e5 GROUP BY a -- y",
    ]
    for sql in same:
        assert node(sql).fingerprint == base.fingerprint, sql
    different = [
        base.sql.replace("'A'", "'a'"),  # a literal's case
        base.sql.replace("1e5", "1 e5"),  # 1 AS e5
        base.sql.replace(">=", ">"),
        base.sql.replace("AS s", "AS S2"),
        base.sql.replace("FROM t", 'FROM "T"'),  # a quoted identifier keeps its case
        base.sql.replace("1e5", "0x1F"), base.sql.replace("1e5", "0 x1F"),  # 0 AS x1F
        base.sql.replace("1e5", "1_000"), base.sql.replace("1e5", "1 _000"),
        base.sql.replace("'A'", "$$A  B$$"), base.sql.replace("'A'", "$$A B$$"),  # spaces in a string
        base.sql.replace("'A'", "E'A\\' B'"), base.sql.replace("'A'", "E'A\\'  B'"),
        base.sql.replace("d >= 1e5", "d > = 1e5"),
    ]
    for sql in different:
        assert node(sql).fingerprint != base.fingerprint, sql
    assert len({node(sql).fingerprint for sql in different}) == len(different)


#: literals whose text looks like comments, quotes or a FROM: one lexeme each, for the
#: scanners (table references) and the fingerprint alike
TRICKY = ["$$ -- x $$", "$t$ FROM other $t$", "$$ /* $$", "'--'", "'it''s /*'", "E'it\\'s -- no'",
          "e'\\\\'", "'$$'", "$a$ $b$ $a$", "1e5", "0x1F"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TRICKY), min_size=1, max_size=4),
       st.sampled_from(["events", '"Events"', "s.events", "`ev``ents`"]))
def test_scanners_and_fingerprint_read_one_lexer(literals, table):
    """``SELECT <literals> FROM <table>``: the table is the one reference, nothing of a
    literal is a comment to strip_comments, and each literal is one fingerprint token."""
    select = ", ".join(f"{lit} AS c{i}" for i, lit in enumerate(literals))
    sql = f"SELECT {select} FROM {table} WHERE x > 0 -- the end"
    name = {"events": "events", '"Events"': "Events", "s.events": "events", "`ev``ents`": "ev`ents"}[table]
    assert table_references(sql) == [name]
    assert all(lit in strip_comments(sql) for lit in literals)
    assert "-- the end" not in strip_comments(sql)
    values = [t.split(":", 2)[2] for t in tokens(sql)]
    assert all(lit in values for lit in literals)


def test_dollar_quoted_comment_markers_hide_no_table():
    """They used to disagree: the scanner read ``-- x $$ AS c FROM events`` as a comment."""
    sql = "SELECT $$ -- x $$ AS c FROM events"
    assert table_references(sql) == ["events"]
    assert node(sql).fingerprint != node("SELECT $$ -- y $$ AS c FROM events").fingerprint
    assert node(sql).fingerprint == node("select $$ -- x $$ as c\nfrom events").fingerprint


def test_fingerprints_and_dagster_code_versions_need_no_parse(tmp_path):
    """Loading, fingerprinting and matching an unchanged node never parses SQL: neither the
    project nor the Dagster adapter asks for the normalised SQL or imports sqlglot."""
    root = chain(tmp_path / "p")
    (root / "target").mkdir(exist_ok=True)  # where the load cache lives once a project has run
    code = (
        "import json, sys; import seeknal_dagster as sd; from seeknal_core.project import load_project, sql;"
        f"p = load_project({str(root)!r}); fps = {{n: x.fingerprint for n, x in p.nodes.items()}};"
        "assert all(x.fingerprint_matches(fps[n]) for n, x in p.nodes.items());"
        f"g = sd.build_definitions({str(root)!r}).resolve_asset_graph();"
        "cv = {k.path[-1]: g.get(k).code_version for k in g.get_all_asset_keys() if k.path[-1] in fps};"
        "print(json.dumps([fps, cv, sorted(sql.USED['normalized']), [m for m in sys.modules if 'sqlglot' in m]]))"
    )

    def load() -> list:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    # a cold load analyses column lineage with sqlglot (cached in target/), never to fingerprint
    fps, versions, normalized, _ = load()
    assert versions == fps and set(fps) == set(NODES) and normalized == []
    assert load() == [fps, versions, [], []], "stable across loads; a warm load imports no sqlglot"
    edit_hourly(root, "AND v > 0", "AND v > 1")
    edited, versions, _, _ = load()
    assert versions == edited and edited["hourly"] != fps["hourly"]
    assert {n: edited[n] for n in NODES if n != "hourly"} == {n: fps[n] for n in NODES if n != "hourly"}


def _record_parsed_form(root: Path) -> None:
    """State as seeknal 0.2 left it: fingerprints of the normalised (parsed) SQL."""
    project, store = load_project(root), open_store(root)
    for name, n in project.nodes.items():
        assert n.ast_fingerprint != n.fingerprint
        store.set_fingerprint(name, n.ast_fingerprint, definition=n.definition)
    store.close()


def test_state_with_parsed_form_fingerprints_reports_no_change_and_runs_record_tokens(tmp_path):
    root = chain(tmp_path / "p", settings="on_change: fail\n")
    run(root, "run", "--backfill")
    _record_parsed_form(root)
    data = plan_json(root)
    assert {n["status"] for n in data["nodes"]} == {"unchanged"} and data["total_intervals"] == 0
    later = seeknal("run", "-p", str(root), now=LATER)
    assert later.returncode == 0 and "definition" not in later.stderr, later.stderr
    project, store = load_project(root), open_store(root)
    assert {n: store.node(n).fingerprint for n in NODES} == {n: project.nodes[n].fingerprint for n in NODES}
    edit_hourly(root, "AND v > 0", "AND v > 50")
    refused = seeknal("run", "-p", str(root), now=LATER)
    assert refused.returncode == 2 and "definitions changed" in refused.stderr


def test_an_edit_only_the_tokens_see_is_no_change_and_the_next_run_records_it(tmp_path):
    """``v AS amount`` -> ``v amount``: other tokens, the same parsed query; with
    ``on_change: fail`` runs go on, and the next run records the new fingerprint."""
    root = chain(tmp_path / "p", settings="on_change: fail\n")
    run(root, "run", "--backfill")
    recorded = open_store(root).node("hourly").fingerprint
    edit_hourly(root, "v AS amount", "v amount")
    assert load_project(root).nodes["hourly"].fingerprint != recorded
    data = plan_json(root)
    assert {n["status"] for n in data["nodes"]} == {"unchanged"} and data["total_intervals"] == 0
    later = seeknal("run", "-p", str(root), now=LATER)
    assert later.returncode == 0 and "definition" not in later.stderr, later.stderr
    assert open_store(root).node("hourly").fingerprint == load_project(root).nodes["hourly"].fingerprint
    assert plan_json(root)["total_intervals"] == 0
