"""``seeknal prepare``: the load cache written at build time, so a Dagster code server's
first load is warm (no SQL parsed), as ``dbt parse`` prepares dagster-dbt's manifest.

Real subprocesses of the ``seeknal`` CLI and of a fresh Python building the Definitions.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from test_cli import EVENTS_FLOW, SUMMARY, TOTALS, make_project, seeknal

#: a table over the source's columns, which no YAML declares: no exact lineage
EVERYTHING = """\
everything:
  sql: SELECT * FROM raw_events
"""

#: builds the Definitions and resolves the asset graph, then ends like a killed code server
#: (no exit handlers: nothing it learned is saved) and says whether sqlglot was imported
LOAD = ("import os, sys; from seeknal_dagster import build_definitions; "
        "build_definitions(sys.argv[1]).resolve_asset_graph(); print('sqlglot' in sys.modules); "
        "sys.stdout.flush(); os._exit(0)")


def dagster_load_imports_sqlglot(root: Path) -> bool:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "DAGSTER_DISABLE_TELEMETRY": "yes"}
    proc = subprocess.run([sys.executable, "-c", LOAD, str(root)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split() in (["True"], ["False"]), proc.stderr[-2000:]
    return proc.stdout.split() == ["True"]


def summary(nodes: int, lineage: int, path: str) -> re.Pattern:
    return re.compile(rf"Prepared {nodes} nodes in {re.escape(path)} \(lineage for {lineage}; "
                      rf"{nodes - lineage} not analysable\) in \d+\.\d s\n")


def test_prepare_makes_the_first_dagster_load_warm(tmp_path):
    nodes = (EVENTS_FLOW, SUMMARY, TOTALS, EVERYTHING)
    prepared, cold = make_project(tmp_path / "prepared", *nodes), make_project(tmp_path / "cold", *nodes)
    assert not (prepared / "target").exists()  # prepare makes it
    result = seeknal("prepare", "--project-path", str(prepared), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert summary(4, 3, "prepared/target/project_cache.json").fullmatch(result.stdout), result.stdout
    assert (prepared / "target" / "project_cache.json").is_file()
    assert not dagster_load_imports_sqlglot(prepared)
    assert dagster_load_imports_sqlglot(cold)  # without prepare, the first load parses the SQL


def test_counts_a_node_whose_sql_cannot_be_analysed(tmp_path):
    root = make_project(tmp_path / "p", EVENTS_FLOW, EVERYTHING)
    result = seeknal("prepare", cwd=root)
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert summary(2, 1, "target/project_cache.json").fullmatch(result.stdout), result.stdout
    again = seeknal("-p", str(root), "prepare", cwd=tmp_path)  # already warm: the same counts
    assert summary(2, 1, "p/target/project_cache.json").fullmatch(again.stdout), again.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    missing = seeknal("prepare", "-p", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2 and not missing.stdout
    assert missing.stderr.count("\n") == 1 and missing.stderr.startswith("Error: project folder "), \
        missing.stderr
    root = make_project(tmp_path / "p")
    (root / "seeknal" / "transforms" / "nodes.yml").write_text("events_flow:\n  sql: [unclosed\n")
    bad = seeknal("prepare", "-p", str(root), cwd=tmp_path)
    assert bad.returncode == 2 and not bad.stdout
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("Error: ") and "nodes.yml" in bad.stderr, \
        bad.stderr
    assert not (root / "target").exists()  # nothing written
