"""Readiness queries are engine capabilities: Spark's `latest` and `instant` agree with
DuckDB's over the same source (a real local Spark session)."""

from __future__ import annotations

from spark_env import spark  # noqa: F401
from test_spark_engine import NODES, make_mixed

from seeknal_core.engines import open_engine
from seeknal_core.project import load_project


def test_spark_latest_and_instant_match_duckdb(tmp_path, spark):  # noqa: F811
    project = load_project(make_mixed(tmp_path, NODES))
    source = project.sources["raw"]
    duck = open_engine("duckdb", project, in_memory=True)
    engine = open_engine("spark", project)
    try:
        assert engine.latest(source, "ts") == duck.latest(source, "ts") is not None
        assert engine.instant("SELECT TIMESTAMP '2024-01-02 05:00:00'", "UTC") == 1704171600
        assert duck.instant("SELECT TIMESTAMP '2024-01-02 05:00:00'", "UTC") == 1704171600
    finally:
        engine.close()
        duck.close()
