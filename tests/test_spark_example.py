"""The example project on both engines: every node (hourly_events, daily_revenue,
daily_orders_ny with its New York days, weekly_active_users with its Sunday-02:00 weeks)
runs on Spark and on DuckDB from the same SQL, over two weeks of data that contain New
York's 23-hour spring-forward day, and gives the same rows and the same sums; the sums
also match the raw events."""

from __future__ import annotations

import datetime as dt
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
from spark_env import spark, spark_group  # noqa: F401
from test_example_project import EXAMPLE, _import_generator
from test_spark_contract import output

from seeknal_core import runner
from seeknal_core.project import load_project
from seeknal_core.state import open_store

pytestmark = spark_group
NODES = ("hourly_events", "daily_revenue", "daily_orders_ny", "weekly_active_users")
START, DAYS, NOW = dt.date(2024, 3, 3), 15, "2024-03-18"  # a Sunday; 2024-03-10 is 23 hours in New York
#: intervals each node completes by NOW: 360 hours, 15 UTC days, 14 New York days (the
#: 15th ends at 04:00 UTC on the 18th), 2 weeks from Sunday 02:00
DONE = {"hourly_events": 360, "daily_revenue": 15, "daily_orders_ny": 14, "weekly_active_users": 2}


def copy(root: Path, engine: str) -> Path:
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("data", "target", "__pycache__"))
    gen = _import_generator(root / "generate_data.py")
    gen.generate(root / "data", rows=3_000, days=DAYS, start=START)
    gen.follow(root / "seeknal_project.yml", START)  # the project's start follows the data
    for name in NODES:
        path = root / "seeknal" / "transforms" / f"{name}.yml"
        text = path.read_text().replace(f"{name}:\n", f"{name}:\n  engine: {engine}\n  materialization: parquet\n", 1)
        path.write_text(text)
    return root


def raw(root: Path, sql: str):
    con = duckdb.connect()
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{root}/data/events/*.parquet')")
    return con.execute(sql).fetchone()


def column_sums(rows: list[tuple]) -> list[Decimal]:
    """Per column, the sum of its numeric values (the rows are text)."""
    def number(v: str) -> Decimal | None:
        try:
            return Decimal(v)
        except ArithmeticError:
            return None
    return [sum(n for n in map(number, col) if n is not None) for col in zip(*rows)]


def test_every_example_node_gives_equal_rows_and_sums_on_spark_and_duckdb(tmp_path, spark):  # noqa: F811
    results = {}
    for engine in ("duckdb", "spark"):
        project = load_project(copy(tmp_path / engine, engine))
        assert {project.nodes[n].engine for n in NODES} == {engine}
        store = open_store(project.root, project.state_config)
        run = runner.run(project, store, now=NOW)
        assert run.ok and {n.node: len(n.done) for n in run.nodes} == DONE
        results[engine] = {n: output(project.root, n) for n in NODES}
    for name in NODES:
        assert results["spark"][name] == results["duckdb"][name], name
        assert column_sums(results["spark"][name]) == column_sums(results["duckdb"][name]), name
    spark_root, out = tmp_path / "spark", results["spark"]

    hourly_events = raw(spark_root, f"SELECT count(*) FROM events WHERE event_time < '{NOW}'")[0]
    assert sum(int(r[2]) for r in out["hourly_events"]) == hourly_events
    purchases, revenue = raw(spark_root, f"SELECT count(*) FILTER (WHERE event_type = 'purchase'), sum(amount) "
                                         f"FROM events WHERE event_time < '{NOW}'")
    assert sum(int(r[2]) for r in out["daily_revenue"]) == purchases
    assert sum(Decimal(r[-1]) for r in out["daily_revenue"]) == revenue

    ny = out["daily_orders_ny"]  # ny_day, orders, customers, revenue, avg_order_value
    assert [r[0] for r in ny][:8] == [f"2024-03-{d:02} 00:00:00" for d in range(3, 11)]
    orders, ny_revenue = raw(spark_root, "SELECT count(*), sum(amount) FROM events WHERE event_type = 'purchase' "
                                         "AND event_time >= '2024-03-03 05:00' AND event_time < '2024-03-17 04:00'")
    assert sum(int(r[1]) for r in ny) == orders and sum(Decimal(r[3]) for r in ny) == ny_revenue
    spring = raw(spark_root, "SELECT count(*) FROM events WHERE event_type = 'purchase' "  # 23 hours of UTC
                             "AND event_time >= '2024-03-10 05:00' AND event_time < '2024-03-11 04:00'")[0]
    assert [int(r[1]) for r in ny if r[0] == "2024-03-10 00:00:00"] == [spring]

    weekly = out["weekly_active_users"]  # week_start, active_users, buyers, events
    assert [r[0] for r in weekly] == ["2024-03-03 02:00:00", "2024-03-10 02:00:00"]
    events, users = raw(spark_root, "SELECT count(*), count(DISTINCT user_id) FROM events "
                                    "WHERE event_time >= '2024-03-10 02:00' AND event_time < '2024-03-17 02:00'")
    assert weekly[1][1:] != weekly[0][1:] and (int(weekly[1][1]), int(weekly[1][3])) == (users, events)
