"""DuckDB's time functions transpiled to Spark SQL give DuckDB's results, value for value:
``timezone()`` both ways (with New York's, London's and Lord Howe's DST gaps and repeated
hours), ``AT TIME ZONE``, ``time_bucket()`` with default, explicit and offset origins
(before and after them, on naive values, instants and dates) and ``date_trunc`` of naive
values; each result's type (naive, instant, date) is DuckDB's too."""

from __future__ import annotations

import duckdb
import pytest
from spark_env import spark, spark_group  # noqa: F401

from seeknal_core.engines.spark_sql import spark_template
from seeknal_core.errors import ProjectError
from seeknal_core.project import load_project
from seeknal_core.state import open_store

pytestmark = spark_group
COLUMNS = (("d", "date"), ("ts", "naive"), ("tz", "instant"))
EXPRESSIONS = [
    "timezone('America/New_York', ts)",
    "timezone('Europe/London', ts)",
    "timezone('Australia/Lord_Howe', ts)",
    "timezone('UTC', ts)",
    "timezone('America/New_York', tz)",
    "timezone('Australia/Lord_Howe', tz)",
    "tz AT TIME ZONE 'America/New_York'",
    "ts AT TIME ZONE 'America/New_York'",
    "timezone('America/New_York', d)",
    "date_trunc('day', timezone('America/New_York', timezone('UTC', ts)))",  # example_project's ny_day
    "date_trunc('hour', ts)",
    "date_trunc('week', d)",
    "time_bucket(INTERVAL 7 DAY, ts)",
    "time_bucket(INTERVAL '7 days', ts, TIMESTAMP '2024-03-03 02:00:00')",  # weekly_active_users'
    "time_bucket(INTERVAL 2 HOUR, ts, INTERVAL 30 MINUTE)",
    "time_bucket(INTERVAL 90 MINUTE, ts, TIMESTAMP '2030-01-01 00:15:00')",  # every value before origin
    "time_bucket(INTERVAL 1 DAY, tz)",
    "time_bucket(INTERVAL 45 SECOND, tz, TIMESTAMPTZ '2024-01-01 00:00:07+00')",
    "time_bucket(INTERVAL 7 DAY, d)",
    "time_bucket(INTERVAL 3 DAY, d, DATE '2024-03-02')",
    "time_bucket(INTERVAL 1 WEEK, timezone('America/New_York', tz), TIMESTAMP '2024-03-03 00:00:00')",
]
#: naive times every 10 minutes for a day either side of each 2024 DST change in the three
#: zones (gaps and repeated hours), and every 13 hours from 1998 to 2031
SAMPLE = """
SELECT ts, CAST(ts AS TIMESTAMPTZ) AS tz, CAST(ts AS DATE) AS d FROM (
    SELECT DISTINCT unnest(generate_series(c - INTERVAL 1 DAY, c + INTERVAL 1 DAY, INTERVAL 10 MINUTE)) AS ts
    FROM (VALUES (TIMESTAMP '2024-03-10 02:00'), (TIMESTAMP '2024-11-03 01:00'),
                 (TIMESTAMP '2024-03-31 01:00'), (TIMESTAMP '2024-10-27 01:00'),
                 (TIMESTAMP '2024-04-07 01:30'), (TIMESTAMP '2024-10-06 02:00')) AS t(c)
    UNION
    SELECT unnest(generate_series(TIMESTAMP '1998-01-01', TIMESTAMP '2031-01-01', INTERVAL 13 HOUR)))
"""
DUCKDB_KIND = {"TIMESTAMP": "timestamp_ntz", "TIMESTAMP WITH TIME ZONE": "timestamp", "DATE": "date"}


def test_time_functions_give_duckdbs_values_and_types_on_spark(tmp_path, spark):  # noqa: F811
    path = tmp_path / "sample.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # instants print in UTC on both sides
    con.execute(f"COPY ({SAMPLE}) TO '{path}' (FORMAT PARQUET)")
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{path}')")
    spark.read.parquet(str(path)).createOrReplaceTempView("t")
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] > 20_000
    for expression in EXPRESSIONS:
        inner = f"SELECT ts, {expression} AS v FROM t"
        ours = spark_template("n", inner, "duckdb", COLUMNS)
        want = con.execute(f"SELECT CAST(ts AS VARCHAR), CAST(v AS VARCHAR), typeof(v) FROM ({inner})").fetchall()
        got = spark.sql(f"SELECT CAST(ts AS STRING), CAST(v AS STRING), typeof(v) FROM ({ours})").collect()
        want = sorted((t, v.removesuffix("+00"), DUCKDB_KIND[k]) for t, v, k in want)
        got = sorted(tuple(r) for r in got)
        mismatches = [(w, g) for w, g in zip(want, got) if w != g]
        assert len(got) == len(want) and not mismatches, (expression, ours, mismatches[:3])


@pytest.mark.parametrize("sql, construct", [
    ("SELECT timezone('UTC', v) FROM t", "timezone(...) of `v`: cannot tell whether it is a TIMESTAMP"),
    ("SELECT time_bucket(INTERVAL 1 MONTH, ts) FROM t", "time_bucket(...) with a width of INTERVAL '1' MONTH"),
    ("SELECT time_bucket(INTERVAL 1 DAY, tz, 'America/New_York') FROM t", "time_bucket(...) with a time zone"),
    ("SELECT time_bucket(INTERVAL 1 DAY, ts, INTERVAL 1 MONTH) FROM t", "with an offset of INTERVAL '1' MONTH"),
    # one name, two kinds: the query's alias shadows the naive column
    ("SELECT timezone('UTC', ts) FROM (SELECT CAST(ts AS TIMESTAMPTZ) AS ts FROM t) UNION ALL "
     "SELECT timezone('UTC', ts) FROM t", "timezone(...) of `ts`"),
])
def test_what_does_not_translate_is_one_line_naming_it(sql, construct):
    with pytest.raises(ProjectError) as err:
        spark_template("weekly", sql, "duckdb", COLUMNS)
    message = str(err.value)
    assert "\n" not in message and message.startswith("node 'weekly': ") and construct in message


CSV_NODE = """
hourly:
  schedule: "@hourly"
  engine: {engine}
  materialization: parquet
  time_column: hour
  sql: |
    SELECT date_trunc('hour', ts) AS hour, timezone('America/New_York', ts) AS ny, count(*) AS n
    FROM {{{{ ref('raw') }}}} WHERE ts >= '{{{{ start }}}}' AND ts < '{{{{ end }}}}' GROUP BY ALL
"""


def test_a_csv_timestamp_is_naive_on_spark_as_on_duckdb(tmp_path, spark):  # noqa: F811
    """Spark infers a CSV timestamp as an instant, DuckDB as naive: the SQL means DuckDB's."""
    from test_spark_contract import make, output

    from seeknal_core import runner

    results = []
    for engine in ("duckdb", "spark"):
        root = tmp_path / engine
        root.mkdir()
        project, store = make(root, engine, days=1, nodes=CSV_NODE)
        duckdb.execute(f"COPY (SELECT * FROM read_parquet('{root}/data/raw/*.parquet')) TO '{root}/raw.csv'")
        (root / "seeknal" / "sources" / "raw.yml").write_text("raw:\n  path: raw.csv\n  time_column: ts\n")
        store.close()
        project = load_project(root)
        store = open_store(project.root, project.state_config)
        assert runner.run(project, store, now="2024-01-02").ok
        results.append(output(root, "hourly"))
    assert results[0] == results[1] and len(results[0]) == 144  # one row per 10 minutes
    assert results[0][0][:2] == ("2024-01-01 00:00:00", "2024-01-01 05:00:00")  # 00:00 in New York, in UTC
