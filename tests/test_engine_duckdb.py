"""The DuckDB engine behind the Engine protocol: rows per interval (table and parquet nodes,
naive and TIMESTAMPTZ time columns, across a DST change), qualified source tables, and
duckdb's errors translated into what the runner acts on."""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from seeknal_core import runner
from seeknal_core.engines import Engine, open_engine
from seeknal_core.errors import ProjectError
from seeknal_core.project import load_project
from seeknal_core.state import open_store

START = dt.datetime(2024, 3, 7)  # raw covers 2024-03-07 .. 2024-03-14: New York's DST change on 03-10
KEEP = "(k <> 3 OR v < 50)"      # uneven rows per interval


def make_project(root: Path, node: str, *, timezone: str = "UTC", source: str = "raw:\n  table: raw\n",
                 raw_table: str = "raw") -> Path:
    (root / "seeknal" / "transforms").mkdir(parents=True, exist_ok=True)
    (root / "seeknal" / "sources").mkdir(parents=True, exist_ok=True)
    (root / "seeknal_project.yml").write_text(f"name: e\nstart: 2024-03-08\ntimezone: {timezone}\n")
    (root / "seeknal" / "sources" / "raw.yml").write_text(source)
    (root / "seeknal" / "transforms" / "nodes.yml").write_text(textwrap.dedent(node))
    (root / "target").mkdir(exist_ok=True)
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    if "." in raw_table:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {raw_table.split('.')[0]}")
    con.execute(f"CREATE TABLE {raw_table} AS SELECT TIMESTAMP '{START:%Y-%m-%d}' + INTERVAL (i * 10) MINUTE AS ts, "
                "i % 7 AS k, (i * 37) % 101 AS v FROM range(7 * 144) t(i)")
    con.close()
    return root


def node_yaml(column: str, materialization: str = "incremental", schedule: str = "@daily") -> str:
    return f"""
    events:
      schedule: "{schedule}"
      materialization: {materialization}
      time_column: t
      sql: |
        SELECT {column} AS t, k, v FROM {{{{ ref('raw') }}}} WHERE {KEEP}
    """


def raw_rows() -> list[tuple[dt.datetime, int, int]]:
    return [(START + dt.timedelta(minutes=10 * i), i % 7, (i * 37) % 101) for i in range(7 * 144)]


def expected(intervals, inside) -> list[int]:
    """Rows per interval computed in Python from the raw data, not by the engine."""
    kept = [ts for ts, k, v in raw_rows() if k != 3 or v < 50]
    return [sum(1 for ts in kept if inside(ts, a, b)) for a, b in intervals]


def wall(epoch: int, zone: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, ZoneInfo(zone)).replace(tzinfo=None)


@pytest.mark.parametrize("timezone,column", [
    ("UTC", "ts"),                                   # naive, UTC
    ("America/New_York", "ts"),                      # naive: wall clock of the node's zone
    ("America/New_York", "timezone('UTC', ts)"),     # TIMESTAMPTZ: instants (03-10 is 23 hours)
])
def test_rows_per_interval_in_one_batch_match_python_and_the_audit_record(tmp_path, timezone, column):
    root = make_project(tmp_path, node_yaml(column), timezone=timezone)
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    result = runner.run(project, store, now="2024-03-14T12:00:00Z")
    events = result.nodes[0]
    assert result.ok and events.batches == 1 and len(events.done) == 6
    pairs = [p for p, _ in events.interval_rows]
    counts = [n for _, n in events.interval_rows]
    assert pairs == events.done
    if "timezone" in column:
        want = expected(pairs, lambda ts, a, b: a <= ts.replace(tzinfo=dt.UTC).timestamp() < b)
        assert pairs[2][1] - pairs[2][0] == 23 * 3600  # 2024-03-10 in New York
    else:
        want = expected(pairs, lambda ts, a, b: wall(a, timezone) <= ts < wall(b, timezone))
    assert counts == want and len(set(counts)) > 1
    assert sum(counts) == events.rows == duckdb.connect(str(root / "target" / "warehouse.duckdb")).execute(
        "SELECT count(*) FROM events").fetchone()[0]
    complete = [r for r in store.history("events") if r["event"] == "complete"]
    iso = [dt.datetime.fromtimestamp(s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for p in pairs for s in p]
    assert complete[-1]["interval_rows"] == [[iso[2 * i], iso[2 * i + 1], n] for i, n in enumerate(counts)]
    change = [c for c in store.changes_since(0) if c.kind == "complete"][-1]
    assert change.details["interval_rows"] == complete[-1]["interval_rows"]


def test_one_interval_per_batch_counts_the_same(tmp_path):
    batched = make_project(tmp_path / "a", node_yaml("ts", schedule="@hourly"), timezone="America/New_York")
    single = make_project(tmp_path / "b", node_yaml("ts", schedule="@hourly"), timezone="America/New_York")
    out = []
    for root, size in ((batched, None), (single, 1)):
        project = load_project(root)
        result = runner.run(project, open_store(project.root, project.state_config),
                            now="2024-03-11T12:00:00Z", batch_size=size)
        out.append(result.nodes[0])
    assert out[0].batches == 1 and out[1].batches == len(out[1].done) > 70
    assert out[0].interval_rows == out[1].interval_rows


def test_parquet_nodes_count_each_file(tmp_path):
    root = make_project(tmp_path, node_yaml("ts", materialization="parquet"))
    project = load_project(root)
    result = runner.run(project, open_store(project.root, project.state_config), now="2024-03-14")
    events = result.nodes[0]
    assert result.ok and events.batches == 1 and len(events.interval_rows) == 6
    for (a, _b), n in events.interval_rows:
        name = f"{dt.datetime.fromtimestamp(a, dt.UTC):%Y%m%dT%H%M%SZ}_"
        [path] = (root / "target" / "data" / "events").glob(name + "*.parquet")
        assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0] == n
    assert [n for _, n in events.interval_rows] == expected(
        [p for p, _ in events.interval_rows], lambda ts, a, b: wall(a, "UTC") <= ts < wall(b, "UTC"))


# -- the registry and the runner's engines --------------------------------------------------------
def test_engines_open_by_name_and_import_lazily(tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import sys, seeknal_core.engines, seeknal_core.runner; "
                            "print(sorted(m for m in ('duckdb', 'pyspark') if m in sys.modules))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"
    project = load_project(make_project(tmp_path, node_yaml("ts")))
    engine = open_engine("duckdb", project)
    try:
        assert isinstance(engine, Engine) and engine.name == "duckdb"
    finally:
        engine.close()
    with pytest.raises(ProjectError, match="unknown engine 'flink': use one of duckdb"):
        open_engine("flink", project)


def test_the_runner_talks_to_engines_only_through_the_protocol():
    for path in (Path(runner.__file__).parent).glob("*.py"):
        for item in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in item.names] if isinstance(item, ast.Import) else (
                [item.module or ""] if isinstance(item, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in ("duckdb", "pyspark")
                        or n.endswith("engines.duckdb")], path


def test_the_runner_closes_the_engine_it_opened_and_keeps_one_handed_in(tmp_path):
    root = make_project(tmp_path, node_yaml("ts"))
    project = load_project(root)
    store = open_store(project.root, project.state_config)
    assert runner.run(project, store, now="2024-03-10").ok
    # the database lock is released: another process can write to the file at once
    subprocess.run([sys.executable, "-c", f"import duckdb; duckdb.connect({str(project.database_path)!r})"
                    ".execute('CREATE TABLE other (i INT)')"], check=True)
    engine = open_engine("duckdb", project)
    try:
        result = runner.run(project, store, now="2024-03-12", engine={"duckdb": engine})
        assert result.ok and len(result.nodes[0].done) == 2
        assert engine.con.execute("SELECT count(*) FROM other").fetchone() == (0,)  # still open
    finally:
        engine.close()
