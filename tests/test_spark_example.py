"""The example project on both engines: its nodes whose DuckDB SQL Spark can run
(hourly_events, daily_revenue) give the same rows and sums on Spark as on DuckDB; the
two that use DuckDB-only functions are refused with the one-line error."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import pytest
from spark_env import spark, spark_group  # noqa: F401
from test_example_project import EXAMPLE, _import_generator
from test_spark_contract import output

from seeknal_core import runner
from seeknal_core.engines.spark_sql import spark_template
from seeknal_core.errors import ProjectError
from seeknal_core.project import load_project
from seeknal_core.state import open_store

pytestmark = spark_group
SPARK_NODES = ("hourly_events", "daily_revenue")


def copy(root: Path, engine: str) -> Path:
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("data", "target", "__pycache__"))
    gen = _import_generator(root / "generate_data.py")
    gen.generate(root / "data", rows=3_000, days=3, start=dt.date(2024, 1, 1))
    gen.follow(root / "seeknal_project.yml", dt.date(2024, 1, 1))  # the project's start follows the data
    for name in SPARK_NODES:
        path = root / "seeknal" / "transforms" / f"{name}.yml"
        text = path.read_text().replace(f"{name}:\n", f"{name}:\n  engine: {engine}\n  materialization: parquet\n", 1)
        path.write_text(text)
    return root


def test_example_nodes_give_equal_results_on_spark_and_duckdb(tmp_path, spark):  # noqa: F811
    results = {}
    for engine in ("duckdb", "spark"):
        project = load_project(copy(tmp_path / engine, engine))
        store = open_store(project.root, project.state_config)
        run = runner.run(project, store, nodes=list(SPARK_NODES), now="2024-01-04")
        assert run.ok and [len(n.done) for n in run.nodes] == [72, 3]
        results[engine] = {n: output(project.root, n) for n in SPARK_NODES}
    assert results["spark"] == results["duckdb"]
    daily = results["spark"]["daily_revenue"]
    con = duckdb.connect()
    raw = con.execute(f"SELECT count(*) FILTER (WHERE event_type = 'purchase'), CAST(sum(amount) AS DECIMAL(18, 2)) "
                      f"FROM read_parquet('{tmp_path}/spark/data/events/*.parquet') "
                      "WHERE event_time < '2024-01-04'").fetchone()
    header = ["day", "event_date", "purchases", "refunds", "gross_revenue", "refunded", "revenue"]
    assert sum(int(r[header.index("purchases")]) for r in daily) == raw[0]
    assert sum(float(r[header.index("revenue")]) for r in daily) == pytest.approx(float(raw[1]))
    project = load_project(tmp_path / "spark")
    for name, construct in [("daily_orders_ny", "timezone(...)"), ("weekly_active_users", "time_bucket")]:
        with pytest.raises(ProjectError) as err:
            spark_template(name, project.nodes[name].sql, "duckdb")
        assert f"node '{name}'" in str(err.value) and construct in str(err.value) and "\n" not in str(err.value)
