"""A mixed project under Dagster: an hourly Spark node feeding a daily DuckDB node,
materialised over a range with real Dagster ``materialize()``; Spark assets sit in
their own pool, not DuckDB's."""

from __future__ import annotations

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from spark_env import spark, spark_group  # noqa: F401
from test_dagster_assets import instance, materialize  # noqa: F401 - the instance fixture
from test_spark_contract import DAILY, HOURLY, direct, make, output

from seeknal_dagster import build_definitions
from seeknal_dagster.assets import POOL, SPARK_POOL, SPARK_RESOURCE_KEY

pytestmark = spark_group


def test_hourly_spark_node_feeds_daily_duckdb_node_through_dagster(tmp_path, spark, instance):  # noqa: F811
    project, store = make(tmp_path, "spark", days=2, nodes=HOURLY + DAILY.replace("{engine}", "duckdb"))
    store.close()
    defs = build_definitions(tmp_path, sensors=False, automation="none", checks=False)
    pools = {a.key.to_user_string(): a.op.pool for a in defs.assets if isinstance(a, dg.AssetsDefinition)}
    assert pools == {"hourly": SPARK_POOL, "daily": None} and SPARK_POOL != POOL  # daily: parquet files
    # Spark assets take their session from dagster-pyspark's resource, configured like the CLI's
    assert isinstance(defs.resources[SPARK_RESOURCE_KEY], LazyPySparkResource)
    assert defs.resources[SPARK_RESOURCE_KEY].spark_config["spark.master"] == "local[*]"
    needs = {a.key.to_user_string(): a.required_resource_keys for a in defs.assets
             if isinstance(a, dg.AssetsDefinition)}
    assert SPARK_RESOURCE_KEY in needs["hourly"] and SPARK_RESOURCE_KEY not in needs["daily"]
    materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-02-23:00")
    materialize(defs, instance, "daily", first="2024-01-01", last="2024-01-02")
    assert output(tmp_path, "hourly") == direct(tmp_path, "hourly")
    assert output(tmp_path, "daily") == direct(tmp_path, "daily")
