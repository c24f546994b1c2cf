"""The Spark engine on its own terms: transpilation (Jinja kept, one line for what does
not transpile), what a Spark node reads (CSV and Parquet paths, DuckDB ``parquet``
nodes; never a ``.duckdb`` table), DuckDB reading a Spark node through ``ref()``, the
error classes, and one end-to-end ``seeknal run`` through Spark Connect."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from spark_env import spark, spark_connect, spark_group, subprocess_env  # noqa: F401
from test_spark_contract import output, write_day

from seeknal_core import runner
from seeknal_core.engines import QueryError, open_engine
from seeknal_core.engines.spark_sql import render_spark_sql, spark_template
from seeknal_core.errors import ProjectError
from seeknal_core.project import load_project
from seeknal_core.runner.execute import renderer
from seeknal_core.state import open_store
from seeknal_core.templating import render_sql

pytestmark = spark_group


def test_transpiled_template_keeps_jinja_and_names_what_spark_lacks():
    sql = ("SELECT date_trunc('hour', ts) AS hour, sum(v)::BIGINT AS v FROM {{ ref('raw') }} "
           "WHERE ts >= '{{ start }}' AND ts < '__END__' {% if true %}{% endif %} GROUP BY ALL")
    assert spark_template("n", sql, "duckdb") is None  # blocks: rendered first, then transpiled
    plain = sql.replace("{% if true %}{% endif %} ", "")
    assert spark_template("n", plain, "duckdb") == (
        "SELECT DATE_TRUNC('HOUR', ts) AS hour, CAST(SUM(v) AS BIGINT) AS v FROM {{ ref('raw') }} "
        "WHERE ts >= '{{ start }}' AND ts < '{{ end }}' GROUP BY ALL")
    for bad, construct in [("SELECT * FROM a ASOF JOIN b ON a.t >= b.t", "ASOF JOIN"),
                           # translated in general (test_spark_time.py), but not these forms
                           ("SELECT time_bucket(INTERVAL 1 MONTH, ts) FROM a", "time_bucket(...)"),
                           ("SELECT timezone('UTC', ts) FROM a", "timezone(...)")]:  # ts: of unknown type
        with pytest.raises(ProjectError) as err:
            spark_template("weekly", bad, "duckdb")
        message = str(err.value)
        assert "\n" not in message and "node 'weekly'" in message and construct in message


NODES = """
orders_by_day:            # DuckDB, Parquet output: a Spark node may read it
  schedule: "@daily"
  materialization: parquet
  sql: |
    SELECT CAST(ts AS DATE) AS day, product, count(*) AS n FROM {{ ref('orders') }}
    WHERE ts >= '{{ start }}' AND ts < '{{ end }}' GROUP BY ALL
  time_column: day
hourly:                   # Spark, over a Parquet glob and the CSV dimension
  schedule: "@hourly"
  engine: spark
  sql: |
    SELECT date_trunc('hour', r.ts) AS hour, p.category, count(*) AS n
    FROM {{ ref('raw') }} AS r JOIN {{ ref('products') }} AS p ON CAST(r.v AS INTEGER) % 3 = p.id
    WHERE r.ts >= '{{ start }}' AND r.ts < '{{ end }}' GROUP BY ALL
  time_column: hour
spark_daily:              # Spark, over the DuckDB parquet node
  schedule: "@daily"
  engine: spark
  sql: |
    SELECT day, sum(n) AS n FROM {{ ref('orders_by_day') }}
    WHERE day >= '{{ start }}' AND day < '{{ end }}' GROUP BY ALL
  time_column: day
rollup:                   # DuckDB, in the database, over the Spark node
  schedule: "@daily"
  sql: |
    SELECT CAST(hour AS DATE) AS day, category, sum(n) AS n FROM {{ ref('hourly') }}
    WHERE hour >= '{{ start }}' AND hour < '{{ end }}' GROUP BY ALL
  time_column: day
"""


def make_mixed(root: Path, nodes: str = NODES, engine_block: str = "") -> Path:
    (root / "seeknal" / "transforms").mkdir(parents=True)
    (root / "seeknal" / "sources").mkdir(parents=True)
    (root / "seeknal_project.yml").write_text("name: m\nstart: 2024-01-01\n" + engine_block)
    (root / "seeknal" / "sources" / "s.yml").write_text(textwrap.dedent("""
        raw: {path: data/raw/*.parquet, time_column: ts}
        products: {path: data/products.csv}
        orders: {table: orders, time_column: ts}
    """))
    (root / "seeknal" / "transforms" / "nodes.yml").write_text(textwrap.dedent(nodes))
    write_day(root, "2024-01-01")
    write_day(root, "2024-01-02")
    (root / "data" / "products.csv").write_text("id,category\n0,books\n1,games\n2,music\n")
    (root / "target").mkdir(exist_ok=True)
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    con.execute("CREATE TABLE orders AS SELECT TIMESTAMP '2024-01-01' + INTERVAL (i * 7) MINUTE AS ts, "
                "i % 4 AS product FROM range(600) t(i)")
    con.close()
    return root


def test_spark_and_duckdb_nodes_read_each_other(tmp_path, spark):  # noqa: F811
    project = load_project(make_mixed(tmp_path))
    store = open_store(project.root, project.state_config)
    result = runner.run(project, store, now="2024-01-03")
    assert result.ok, [n.failures for n in result.nodes]
    assert {n.node: len(n.done) for n in result.nodes} == {
        "orders_by_day": 2, "hourly": 48, "spark_daily": 2, "rollup": 2}
    con = duckdb.connect(str(tmp_path / "target" / "warehouse.duckdb"), read_only=True)
    con.execute(f"CREATE TEMP VIEW raw AS SELECT * FROM read_parquet('{tmp_path}/data/raw/*.parquet')")
    con.execute(f"CREATE TEMP VIEW products AS SELECT * FROM read_csv_auto('{tmp_path}/data/products.csv')")
    expected = con.execute(
        "SELECT CAST(ts AS DATE), category, count(*) FROM raw JOIN products ON CAST(v AS INTEGER) % 3 = id "
        "GROUP BY ALL ORDER BY ALL").fetchall()
    assert con.execute("SELECT * FROM rollup ORDER BY ALL").fetchall() == expected
    by_day = con.execute("SELECT CAST(CAST(ts AS DATE) AS VARCHAR), count(*) FROM orders WHERE ts < '2024-01-03' GROUP BY ALL").fetchall()
    con.close()
    assert output(tmp_path, "spark_daily") == sorted((d, str(n)) for d, n in by_day)
    assert len(list((tmp_path / "target" / "data" / "hourly").glob("seeknal_interval=*"))) == 48


def test_a_spark_node_over_a_duckdb_table_is_one_line(tmp_path, spark):  # noqa: F811
    nodes = NODES + """
from_table:
  schedule: "@daily"
  engine: spark
  sql: "SELECT ts, product FROM {{ ref('orders') }} WHERE ts >= '{{ start }}' AND ts < '{{ end }}'"
  time_column: ts
"""
    project = load_project(make_mixed(tmp_path, nodes))
    store = open_store(project.root, project.state_config)
    with pytest.raises(ProjectError) as err:
        runner.run(project, store, nodes=["from_table"], now="2024-01-02")
    message = str(err.value)
    assert "\n" not in message and "'orders'" in message and "warehouse.duckdb" in message
    assert "path:" in message and "materialization: parquet" in message
    assert not store.completed("from_table")


def test_a_spark_node_is_transpiled_once_and_rendered_per_batch(tmp_path, spark):  # noqa: F811
    project = load_project(make_mixed(tmp_path))
    store = open_store(project.root, project.state_config)
    spark_template.cache_clear()
    result = runner.run(project, store, nodes=["hourly"], now="2024-01-01T12:00", batch_size=4)
    assert result.ok and result.nodes[0].batches == 3
    assert (spark_template.cache_info().misses, spark_template.cache_info().hits) == (1, 2)
    # what the runner hands each engine: Spark SQL for Spark, DuckDB's rendering for DuckDB
    engine, duck = open_engine("spark", project), open_engine("duckdb", project, in_memory=True)
    try:
        start, end = dt.datetime(2024, 1, 1, 4, tzinfo=dt.UTC), dt.datetime(2024, 1, 1, 8, tzinfo=dt.UTC)
        ours = renderer(engine)(project.nodes["hourly"], start, end)
        assert ours == render_spark_sql(project.nodes["hourly"], start, end, (("ts", "naive"),))
        assert "FROM `raw` AS r JOIN `products`" in ours and "'2024-01-01 04:00:00'" in ours
        assert renderer(duck) is render_sql
    finally:
        engine.close()
        duck.close()


def test_sql_errors_are_query_errors(tmp_path, spark):  # noqa: F811
    project = load_project(make_mixed(tmp_path, NODES.replace("p.category, count(*)", "p.nope, count(*)")))
    engine = open_engine("spark", project)
    try:
        with pytest.raises(QueryError, match="nope"):
            engine.write_intervals(project.nodes["hourly"], None, [(1704067200, 1704070800)])
        assert engine.earliest(project.sources["raw"], "ts") == 1704067200
    finally:
        engine.close()
    assert not spark.sparkContext._jsc.sc().isStopped()  # the shared session was not stopped


def test_seeknal_run_through_spark_connect(tmp_path, spark_connect):  # noqa: F811
    nodes = NODES.split("spark_daily:")[0]
    root = make_mixed(tmp_path, nodes.replace("  engine: spark\n", ""),
                      f"engine:\n  type: spark\n  remote: {spark_connect}\n")
    env = {**subprocess_env(), "SEEKNAL_NOW": "2024-01-03T00:00:00Z"}
    seeknal = str(Path(sys.executable).parent / "seeknal")
    done = subprocess.run([seeknal, "run", "--project-path", str(root), "--node", "hourly"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE VIEW raw AS SELECT * FROM read_parquet('{tmp_path}/data/raw/*.parquet')")
    con.execute(f"CREATE VIEW products AS SELECT * FROM read_csv_auto('{tmp_path}/data/products.csv')")
    expected = con.execute(
        "SELECT CAST(date_trunc('hour', ts) AS VARCHAR), category, CAST(count(*) AS VARCHAR) FROM raw "
        "JOIN products ON CAST(v AS INTEGER) % 3 = id GROUP BY ALL").fetchall()
    assert output(tmp_path, "hourly") == sorted(expected)
    assert len(list((tmp_path / "target" / "data" / "hourly").glob("seeknal_interval=*"))) == 48
