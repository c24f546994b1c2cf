"""Project loading, node validation, dependency extraction and the DAG."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seeknal_core.errors import ProjectError, SeeknalError
from seeknal_core.project import (
    Project,
    SourceNode,
    TransformNode,
    infer_time_column,
    load_project,
    read_yaml,
    ref_names,
    table_references,
)

UTC = dt.UTC

SEED_GUIDE_NODE = """\
# seeknal/transforms/my_node.yml
my_node:
  schedule: "@daily"
  sql: |
    SELECT * FROM source WHERE date >= '{{ start }}' AND date < '{{ end }}'
"""


def make_project(root: Path, files: dict[str, str], config: str | None = None) -> Path:
    """Write a project: ``files`` maps paths under seeknal/ to YAML text."""
    (root / "seeknal").mkdir(parents=True, exist_ok=True)
    if config is not None:
        (root / "seeknal_project.yml").write_text(textwrap.dedent(config))
    for rel, text in files.items():
        path = root / "seeknal" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def load(tmp_path: Path, files: dict[str, str], config: str | None = None) -> Project:
    return load_project(make_project(tmp_path, files, config))


def load_error(tmp_path: Path, files: dict[str, str], config: str | None = None) -> str:
    with pytest.raises(ProjectError) as info:
        load(tmp_path, files, config)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- the project folder ------------------------------------------------------------------
def test_seed_guide_example_loads_as_written(tmp_path):
    project = load(tmp_path / "guide", {"transforms/my_node.yml": SEED_GUIDE_NODE})
    node = project.node("my_node")
    assert project.name == "guide"  # no seeknal_project.yml: the folder's name
    assert node.schedule.cron == "0 0 * * *" and node.schedule.timezone == "UTC"
    assert node.time_column == "date"
    assert node.materialization == "incremental" and node.is_incremental
    assert node.depends_on == ()  # `source` is not a declared node: an external table
    assert node.path == tmp_path / "guide" / "seeknal/transforms/my_node.yml"


def test_project_defaults(tmp_path):
    project = load(tmp_path, {})
    assert project.timezone == "UTC" and project.start is None
    assert project.state_config == {"backend": "json", "path": "target/run_state.json"}
    assert project.database_path == (tmp_path / "target/warehouse.duckdb").resolve()
    assert project.database_path.is_absolute()
    assert project.target_dir == tmp_path.resolve() / "target"
    assert project.nodes == {} and project.sources == {}


def test_project_settings_and_node_fallbacks(tmp_path):
    project = load(tmp_path, {
        "transforms/a.yml": """\
            inherits:
              schedule: daily
              sql: SELECT * FROM s WHERE ts >= '{{ start }}'
            overrides:
              schedule: hourly
              timezone: Europe/Berlin
              start: 2024-06-01
              sql: SELECT * FROM s WHERE ts >= '{{ start }}'
        """,
    }, config="""\
        name: shop
        timezone: America/New_York
        start: 2024-01-01
        database: data/shop.duckdb
        state: {backend: postgres, dsn: "postgresql://x"}
    """)
    assert project.name == "shop"
    assert project.timezone == "America/New_York"
    assert project.start == dt.datetime(2024, 1, 1, 5, tzinfo=UTC)  # midnight in New York
    assert project.state_config == {"backend": "postgres", "dsn": "postgresql://x"}
    assert project.database_path == (tmp_path / "data/shop.duckdb").resolve()
    inherits, overrides = project.node("inherits"), project.node("overrides")
    assert inherits.timezone == "America/New_York"
    assert inherits.schedule.timezone == "America/New_York"
    assert inherits.start == project.start
    assert overrides.timezone == "Europe/Berlin" and overrides.schedule.timezone == "Europe/Berlin"
    assert overrides.start == dt.datetime(2024, 5, 31, 22, tzinfo=UTC)  # Berlin midnight, CEST


def test_load_from_the_settings_file_path(tmp_path):
    make_project(tmp_path, {}, config="name: p\n")
    assert load_project(tmp_path / "seeknal_project.yml").root == tmp_path.resolve()


def test_folder_without_project_says_how_to_create_one(tmp_path):
    with pytest.raises(ProjectError, match="seeknal init"):
        load_project(tmp_path)
    with pytest.raises(ProjectError, match="does not exist"):
        load_project(tmp_path / "missing")


def test_project_error_is_a_seeknal_error():
    assert issubclass(ProjectError, SeeknalError)
    assert str(ProjectError("two\n  lines")) == "two lines"


def test_several_nodes_per_file_and_yaml_extension(tmp_path):
    project = load(tmp_path, {
        "transforms/many.yaml": "a: {sql: SELECT 1}\nb: {sql: SELECT 2}\n",
        "transforms/nested/c.yml": "c: {sql: SELECT 3}\n",
        "transforms/empty.yml": "# nothing yet\n",
    })
    assert list(project.nodes) == ["a", "b", "c"]


def test_sources(tmp_path):
    project = load(tmp_path, {"sources/s.yml": """\
        orders: {table: raw_orders, time_column: ordered_at, description: From the shop}
        clicks: {path: data/clicks/*.parquet}
        visits: {path: exports/visits.csv.gz}
        logs: {path: logs/, format: csv}
        users: {}
    """})
    s = project.sources
    assert s["orders"] == SourceNode(
        name="orders", path=s["orders"].path, table="raw_orders", time_column="ordered_at",
        description="From the shop")
    assert s["clicks"].location == str(tmp_path.resolve() / "data/clicks/*.parquet")
    assert s["clicks"].format == "parquet" and s["clicks"].table is None
    assert s["visits"].format == "csv"
    assert s["logs"].format == "csv"
    assert s["users"].table == "users"  # no table and no path: the table of that name
    assert project.resolve("source.clicks") is s["clicks"]
    assert project.source("orders").id == "source.orders"


# -- node ids ----------------------------------------------------------------------------
def test_node_ids_with_and_without_prefix(tmp_path):
    project = load(tmp_path, {
        "transforms/t.yml": "my_node: {sql: SELECT * FROM raw}\n",
        "sources/s.yml": "raw: {}\n",
    })
    node = project.node("my_node")
    assert project.node("transform.my_node") is node
    assert project.node("MY_NODE") is node
    assert node.id == "transform.my_node"
    assert project.resolve("source.raw").name == "raw"
    with pytest.raises(ProjectError, match="unknown node 'my_nod' — did you mean 'my_node'"):
        project.node("my_nod")
    with pytest.raises(ProjectError, match="'source.raw' is a source, not a transform"):
        project.node("source.raw")
    with pytest.raises(ProjectError, match="unknown node 'source.my_node'"):
        project.node("source.my_node")
    with pytest.raises(ProjectError, match="transforms: my_node"):
        project.node("zzz")


# -- validation --------------------------------------------------------------------------
T = "transforms/t.yml"
OK_SQL = "sql: SELECT * FROM s WHERE ts >= '{{ start }}'"


@pytest.mark.parametrize("files, expected", [
    ({T: f"n:\n  schedul: '@daily'\n  {OK_SQL}\n"},
     ["seeknal/transforms/t.yml", "node 'n'", "unknown field 'schedul'",
      "did you mean 'schedule'?"]),
    ({T: "n:\n  schedule: '@daily'\n"}, ["t.yml", "node 'n'", "missing 'sql'"]),
    ({T: "n: {sql: '  '}\n"}, ["t.yml", "field 'sql'", "non-empty string"]),
    ({T: f"n:\n  schedule: '@dayly'\n  {OK_SQL}\n"},
     ["t.yml", "field 'schedule'", "unknown schedule preset '@dayly'"]),
    ({T: f"n:\n  schedule: '0 0 * *'\n  {OK_SQL}\n"},
     ["t.yml", "field 'schedule'", "expected 5 fields"]),
    ({T: f"n:\n  schedule: '@daily'\n  timezone: Mars/Base\n  {OK_SQL}\n"},
     ["t.yml", "field 'timezone'", "unknown timezone 'Mars/Base'"]),
    ({T: f"n:\n  start: yesterday\n  {OK_SQL}\n"},
     ["t.yml", "field 'start'", "invalid date 'yesterday'"]),
    ({T: f"n:\n  start: 2024-13-01\n  {OK_SQL}\n"},
     ["t.yml line 2", "invalid date '2024-13-01'"]),
    ({T: f"n:\n  batch_size: 0\n  {OK_SQL}\n"},
     ["t.yml", "field 'batch_size'", "positive integer, got 0"]),
    ({T: f"n:\n  batch_size: '5'\n  {OK_SQL}\n"}, ["field 'batch_size'", "positive integer"]),
    ({T: f"n:\n  batch_size: true\n  {OK_SQL}\n"}, ["field 'batch_size'"]),
    ({T: f"n:\n  lookback: -1\n  {OK_SQL}\n"}, ["t.yml", "field 'lookback'", "integer >= 0"]),
    ({T: "a: {sql: SELECT 1, depends_on: [bb]}\nb: {sql: SELECT 2}\n"},
     ["t.yml", "node 'a'", "field 'depends_on'", "'bb' names no node or source",
      "did you mean 'b'?"]),
    ({T: "a: {sql: \"SELECT * FROM {{ ref('bee') }}\"}\nbe: {sql: SELECT 2}\n"},
     ["t.yml", "node 'a'", "field 'sql'", "ref('bee') names no node or source",
      "did you mean 'be'?"]),
    ({T: "a: {sql: SELECT 1, depends_on: [transform.s]}\n", "sources/s.yml": "s: {}\n"},
     ["field 'depends_on'", "'transform.s' names no node"]),
    ({T: "n:\n  schedule: hourly\n  sql: SELECT * FROM s\n"},
     ["t.yml", "node 'n'", "field 'time_column'", "needs 'time_column'", "time_column:"]),
    ({T: "n: {sql: SELECT 1, materialization: incremantal}\n"},
     ["field 'materialization'", "did you mean 'incremental'?"]),
    ({T: "n: {sql: SELECT 1, materialization: incremental}\n"},
     ["field 'materialization'", "needs a schedule"]),
    ({T: "n: {sql: SELECT 1, partition_tracking: {format: '%Y'}}\n"},
     ["field 'partition_tracking'", "missing 'column'"]),
    ({T: "n: {sql: SELECT 1, partition_tracking: {column: d, fmt: '%Y'}}\n"},
     ["unknown field 'fmt'", "did you mean 'format'?"]),
    ({T: "n: {sql: SELECT 1, partition_tracking: {column: d, format: ymd}}\n"},
     ["field 'partition_tracking'", "no strftime code"]),
    ({T: "n: {sql: SELECT 1, tags: [1, 2]}\n"}, ["field 'tags'"]),
    ({T: "n:\n  sql: SELECT 1\n  - oops\n"}, ["seeknal/transforms/t.yml line 3", "invalid YAML"]),
    ({T: "n: {sql: SELECT 1}\nn: {sql: SELECT 2}\n"},
     ["t.yml line 2", "duplicate key 'n'"]),
    ({T: "- a\n- b\n"}, ["t.yml", "expected a mapping of node name"]),
    ({T: "sql: SELECT 1\n"}, ["node 'sql'", "nest the fields under the node name"]),
    ({T: "my-node: {sql: SELECT 1}\n"}, ["invalid node name 'my-node'"]),
    ({"sources/s.yml": "s: {table: t, path: x.parquet}\n"}, ["s.yml", "node 's'", "not both"]),
    ({"sources/s.yml": "s: {path: data/x.json}\n"},
     ["field 'path'", "set format: parquet or format: csv"]),
    ({"sources/s.yml": "s: {path: x.parquet, format: avro}\n"},
     ["field 'format'", "unknown format 'avro'"]),
    ({"sources/s.yml": "s: {tabel: x}\n"}, ["unknown field 'tabel'", "did you mean 'table'?"]),
    ({T: "n: {sql: SELECT 1, engine: sprak}\n"},
     ["t.yml", "node 'n'", "field 'engine'", "unknown engine 'sprak'", "did you mean 'spark'?"]),
    ({T: "n: {sql: SELECT 1, dialect: postgress}\n"},
     ["t.yml", "node 'n'", "field 'dialect'", "unknown SQL dialect 'postgress'",
      "did you mean 'postgres'?"]),
    ({T: "n: {sql: SELECT 1, start: 2024-02-01, end: 2024-01-01}\n"},
     ["t.yml", "node 'n'", "field 'end'", "is not after start"]),
    ({T: "n: {sql: SELECT 1, end: tomorrow}\n"}, ["t.yml", "field 'end'", "invalid date"]),
])
def test_validation_errors_name_file_node_and_field(tmp_path, files, expected):
    message = load_error(tmp_path, files)
    for part in expected:
        assert part in message, (part, message)


def test_duplicate_node_names_across_files(tmp_path):
    message = load_error(tmp_path, {
        "transforms/a.yml": "orders: {sql: SELECT 1}\n",
        "transforms/b.yml": "Orders: {sql: SELECT 2}\n",
    })
    assert "seeknal/transforms/b.yml" in message and "seeknal/transforms/a.yml" in message
    assert "duplicate node name" in message


def test_source_and_transform_share_one_namespace(tmp_path):
    message = load_error(tmp_path, {
        "sources/s.yml": "orders: {}\n", "transforms/t.yml": "orders: {sql: SELECT 1}\n"})
    assert "duplicate node name" in message and "seeknal/sources/s.yml" in message


@pytest.mark.parametrize("config, expected", [
    ("nmae: x\n", ["seeknal_project.yml", "unknown field 'nmae'", "did you mean 'name'?"]),
    ("timezone: Nowhere\n", ["seeknal_project.yml", "field 'timezone'", "unknown timezone"]),
    ("start: soon\n", ["seeknal_project.yml", "field 'start'"]),
    ("state: json\n", ["seeknal_project.yml", "field 'state'", "expected a mapping"]),
    ("- a\n", ["seeknal_project.yml", "expected a mapping of settings"]),
    ("name: [\n", ["seeknal_project.yml line", "invalid YAML"]),
    ("on_change: fial\n", ["seeknal_project.yml", "field 'on_change'", "did you mean 'fail'?"]),
    ("engine: {type: flink}\n", ["field 'engine.type'", "unknown engine.type 'flink'",
                                  "duckdb, spark"]),
    ("engine: {type: spark, master: 3}\n", ["field 'engine.master'", "non-empty string"]),
    ("engine: {type: spark, mastr: x}\n", ["field 'engine'", "unknown field 'mastr'",
                                            "did you mean 'master'?"]),
    ("engine: {type: spark, conf: 3}\n", ["field 'engine'", "'conf' must be a mapping"]),
    ("engine: [spark]\n", ["field 'engine'", "expected a mapping"]),
    ("dialect: sparkk\n", ["seeknal_project.yml", "field 'dialect'", "did you mean 'spark'?"]),
    ("start: 2024-02-01\nend: 2024-02-01\n", ["seeknal_project.yml", "field 'end'",
                                              "is not after start"]),
])
def test_project_file_errors(tmp_path, config, expected):
    message = load_error(tmp_path, {}, config=config)
    for part in expected:
        assert part in message, (part, message)


def test_cycle_names_the_path(tmp_path):
    message = load_error(tmp_path, {T: """\
        a: {sql: "SELECT * FROM c"}
        b: {sql: "SELECT * FROM {{ ref('a') }}"}
        c: {sql: SELECT 1, depends_on: [b]}
        d: {sql: SELECT * FROM a}
    """})
    assert "dependency cycle: a -> b -> c -> a" in message
    assert "seeknal/transforms/t.yml" in message


def test_explicit_self_reference_is_a_cycle_but_reading_own_table_is_not(tmp_path):
    message = load_error(tmp_path, {T: "a: {sql: SELECT 1, depends_on: [a]}\n"})
    assert "dependency cycle: a -> a" in message and "{{ this }}" in message
    project = load(tmp_path / "p2", {T: "a: {sql: SELECT * FROM a}\n"})
    assert project.node("a").depends_on == ()


# -- time column inference ---------------------------------------------------------------
@pytest.mark.parametrize("sql, column", [
    ("SELECT * FROM source WHERE date >= '{{ start }}' AND date < '{{ end }}'", "date"),
    ("SELECT * FROM events WHERE event_time >= '__START__' AND event_time < '__END__'",
     "event_time"),
    ("SELECT * FROM e WHERE e.event_time >= '{{start_date}}'", "event_time"),
    ("SELECT * FROM e WHERE ts >= '{{ start_ts }}'::TIMESTAMPTZ", "ts"),
    ("SELECT * FROM e WHERE CAST(ts AS DATE) >= DATE '{{ start_date }}'", "ts"),
    ("SELECT * FROM e WHERE ts >= CAST('{{ start }}' AS TIMESTAMP)", "ts"),
    ("SELECT * FROM e WHERE \"Event Time\" >= '{{ start }}'", "Event Time"),
    ("SELECT * FROM e WHERE '{{ start }}' <= ts AND ts < '{{ end }}'", "ts"),
    ("SELECT * FROM e WHERE ts BETWEEN '{{ start }}' AND '{{ end }}'", "ts"),
    ("SELECT * FROM e WHERE ts::date >= '{{- start -}}'", "ts"),
    ("SELECT * FROM e\n-- WHERE other >= '{{ start }}'\nWHERE ts >= '{{ start }}'", "ts"),
    ("SELECT * FROM e WHERE a >= '{{ start }}' OR b >= '{{ start }}'", None),  # ambiguous
    ("SELECT '{{ start }}' AS interval_start FROM e", None),
    ("SELECT * FROM e", None),
])
def test_infer_time_column(sql, column):
    assert infer_time_column(sql) == column


def test_explicit_time_column_wins(tmp_path):
    project = load(tmp_path, {T: f"n:\n  schedule: daily\n  time_column: day\n  {OK_SQL}\n"})
    assert project.node("n").time_column == "day"


# -- dependencies ------------------------------------------------------------------------
@pytest.mark.parametrize("sql, tables", [
    ("SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN c USING (id)", ["a", "b", "c"]),
    ("SELECT * FROM a, b AS bb, main.c, \"D e\"", ["a", "b", "c", "D e"]),
    ("SELECT * FROM a JOIN b ON true, c", ["a", "b", "c"]),
    ("SELECT 'FROM x', \"FROM\" FROM y -- JOIN z\n/* FROM w */", ["y"]),
    ("SELECT EXTRACT(year FROM ts), TRIM(BOTH ' ' FROM s) FROM t", ["t"]),
    ("SELECT * FROM (SELECT a, b FROM inner_t) s, outer_t", ["inner_t", "outer_t"]),
    ("SELECT * FROM read_parquet('x/*.parquet') r JOIN t ON true", ["t"]),
    ("WITH a AS (SELECT * FROM a), b AS (SELECT * FROM a) SELECT * FROM b, c", ["a", "c"]),
    ("FROM a SELECT x, y", ["a"]),
    ("SELECT * FROM a WHERE x IN (SELECT y FROM b) ORDER BY 1, 2", ["a", "b"]),
    ("select * from a t(x, y), `b`", ["a", "b"]),
    ("SELECT * FROM {{ ref('a') }} r, b", ["b"]),
])
def test_table_references(sql, tables):
    assert table_references(sql) == tables


def test_ref_names_ignore_comments():
    sql = ("SELECT * FROM {{ ref('a') }} JOIN {{ref(\"b\")}} -- {{ ref('c') }}\n"
           "JOIN read_parquet('{{ ref(\"d\") }}') ON true")
    assert ref_names(sql) == ["a", "b", "d"]


def test_dependencies_from_ref_depends_on_and_sql(tmp_path):
    project = load(tmp_path, {
        "sources/s.yml": "raw_orders: {}\ncustomers: {table: crm_customers}\n",
        T: """\
            orders:
              sql: SELECT * FROM RAW_ORDERS o JOIN crm_customers c ON o.c = c.id
            enriched:
              sql: |
                SELECT * FROM {{ ref('transform.orders') }}  -- FROM ghost
                JOIN "Customers" USING (id)
                WHERE note <> 'FROM totals'
            totals:
              depends_on: enriched
              sql: SELECT count(*) FROM events
            events:
              sql: SELECT * FROM unknown_table
        """,
    })
    assert project.node("orders").depends_on == ("customers", "raw_orders")
    assert project.upstream("orders") == []  # reads only sources
    assert project.node("enriched").depends_on == ("customers", "orders")
    assert project.node("totals").depends_on == ("enriched", "events")
    assert project.node("events").depends_on == ()
    assert project.upstream("totals") == ["events", "enriched"]  # topological order


def test_topological_order_downstream_and_upstream(tmp_path):
    project = load(tmp_path, {
        "sources/s.yml": "raw: {}\n",
        T: """\
            z_base: {sql: SELECT * FROM raw}
            a_left: {sql: SELECT * FROM z_base}
            b_right: {sql: SELECT * FROM z_base}
            top: {sql: SELECT * FROM a_left JOIN b_right ON true}
            lonely: {sql: SELECT 1}
        """,
    })
    order = project.topological_order()
    assert order == ["lonely", "z_base", "a_left", "b_right", "top"]
    assert project.topological_order(["top", "transform.z_base"]) == ["z_base", "top"]
    assert project.downstream("z_base") == ["a_left", "b_right", "top"]
    assert project.downstream("z_base", transitive=False) == ["a_left", "b_right"]
    assert project.downstream("source.raw") == ["z_base", "a_left", "b_right", "top"]
    assert project.downstream("top") == []
    assert project.upstream("top") == ["a_left", "b_right"]
    assert load_project(tmp_path).topological_order() == order  # deterministic
    with pytest.raises(ProjectError, match="did you mean 'top'"):
        project.topological_order(["tpo"])


# -- node objects ------------------------------------------------------------------------
def test_materialization_defaults_and_parquet(tmp_path):
    project = load(tmp_path, {T: f"""\
        scheduled:
          schedule: daily
          {OK_SQL}
        full: {{sql: SELECT 1}}
        files:
          schedule: daily
          materialization: parquet
          sql: SELECT * FROM s
        scheduled_table:
          schedule: daily
          materialization: table
          sql: SELECT * FROM s
    """})
    nodes = project.nodes
    assert (nodes["scheduled"].materialization, nodes["scheduled"].is_incremental) == (
        "incremental", True)
    assert (nodes["full"].materialization, nodes["full"].is_incremental) == ("table", False)
    assert nodes["files"].materialization == "parquet" and nodes["files"].is_incremental
    assert nodes["files"].time_column is None  # not needed: each interval is its own file
    assert not nodes["scheduled_table"].is_incremental


def test_all_node_fields(tmp_path):
    project = load(tmp_path, {"sources/s.yml": "raw: {}\n", T: """\
        n:
          description: Daily orders
          tags: [finance, daily]
          schedule: "0 6 * * *"
          timezone: Asia/Tokyo
          start: "2024-01-01T06:00:00"
          time_column: day
          depends_on: [source.raw]
          batch_size: 7
          lookback: 2
          partition_tracking: {column: day_key, format: "%Y%m%d"}
          materialization: incremental
          meta: {owner: data-team}
          sql: SELECT 1
    """})
    n = project.node("n")
    assert n.description == "Daily orders" and n.tags == ("finance", "daily")
    assert n.schedule.cron == "0 6 * * *" and n.timezone == "Asia/Tokyo"
    assert n.start == dt.datetime(2023, 12, 31, 21, tzinfo=UTC)
    assert (n.time_column, n.depends_on, n.batch_size, n.lookback) == ("day", ("raw",), 7, 2)
    assert (n.partition_column, n.partition_format) == ("day_key", "%Y%m%d")
    assert n.meta == {"owner": "data-team"}


def test_engine_dialect_end_and_on_change_defaults(tmp_path):
    project = load(tmp_path, {T: "n: {sql: SELECT 1}\n"})
    node = project.node("n")
    assert (node.engine, node.dialect, node.end) == ("duckdb", "duckdb", None)
    assert project.engine_config == {"type": "duckdb"}
    assert (project.on_change, project.dialect, project.end) == ("warn", "duckdb", None)


def test_engine_dialect_end_and_on_change_from_project_and_node(tmp_path):
    project = load(tmp_path, {T: """\
        inherits: {sql: SELECT 1}
        own:
          sql: SELECT 1
          engine: duckdb
          dialect: postgres
          start: 2024-01-10
          end: 2024-02-01
    """}, config="""\
        timezone: Europe/Paris
        start: 2024-01-01
        end: 2024-03-01
        on_change: fail
        dialect: spark
        engine: {type: spark, master: "local[2]", conf: {spark.sql.shuffle.partitions: 8}}
    """)
    assert project.engine_config == {"type": "spark", "master": "local[2]",
                                     "conf": {"spark.sql.shuffle.partitions": 8}}
    assert (project.on_change, project.dialect) == ("fail", "spark")
    assert project.end == dt.datetime(2024, 2, 29, 23, tzinfo=UTC)
    inherits, own = project.node("inherits"), project.node("own")
    assert (inherits.engine, inherits.dialect, inherits.end) == ("spark", "spark", project.end)
    assert (own.engine, own.dialect) == ("duckdb", "postgres")
    assert (own.start, own.end) == (dt.datetime(2024, 1, 9, 23, tzinfo=UTC),
                                    dt.datetime(2024, 1, 31, 23, tzinfo=UTC))
    assert project.with_nodes(project.nodes).engine_config == project.engine_config
    assert load(tmp_path / "p2", {}, config="engine: spark\n").engine_config == {"type": "spark"}


def test_node_start_after_inherited_end_names_start(tmp_path):
    message = load_error(tmp_path, {T: "n: {sql: SELECT 1, start: 2024-05-01}\n"},
                         config="end: 2024-03-01\n")
    assert "node 'n' field 'start'" in message and "is not after start" in message


def test_fingerprint_tracks_what_changes_results():
    base = TransformNode(name="n", sql="SELECT * FROM s WHERE ts >= '{{ start }}'",
                         schedule="@daily", time_column="ts")
    same = TransformNode(name="n", sql=base.sql, schedule="0 0 * * *", time_column="ts",
                         description="docs do not matter", batch_size=3, lookback=1)
    assert len(base.fingerprint) == 64 and base.fingerprint == same.fingerprint
    changes = [
        {"sql": base.sql + " AND ts < '{{ end }}'"},
        {"schedule": "@hourly"},
        {"timezone": "Europe/Paris"},
        {"time_column": "other"},
        {"materialization": "parquet"},
        {"partition_column": "d", "partition_format": "%Y"},
        {"engine": "spark"},
    ]
    for change in changes:
        fields = {"name": "n", "sql": base.sql, "schedule": "@daily", "time_column": "ts"} | change
        assert TransformNode(**fields).fingerprint != base.fingerprint, change


def test_fingerprint_ignores_comments_whitespace_case_and_quotes():
    def node(sql: str, **fields) -> TransformNode:
        return TransformNode(name="n", sql=sql, schedule="@daily", time_column="ts",
                             depends_on=["s"], **fields)

    base = node("SELECT a, b FROM s WHERE ts >= '{{ start }}' AND ts < '{{ end }}'")
    same = [
        "select a,b\n  from s -- the source\n where ts >= '{{ start }}'\n   and ts < '{{end}}'",
        "/* header */ SELECT\n\ta, \"b\"\nFROM {{ ref('s') }}\nWHERE \"ts\" >= '__START__' AND ts < '__END__'",
    ]
    for sql in same:
        assert node(sql).fingerprint == base.fingerprint, sql
        assert node(sql).normalized_sql == base.normalized_sql
    assert base.normalized_sql.startswith('SELECT\n  "a",\n  "b"\nFROM "s"')
    assert node(base.sql.replace("a, b", "a, c")).fingerprint != base.fingerprint
    assert node(base.sql, engine="spark").fingerprint != base.fingerprint
    assert node(base.sql, materialization="parquet").fingerprint != base.fingerprint


def test_fingerprint_falls_back_to_raw_sql_when_it_cannot_parse():
    bad = TransformNode(name="n", sql="SELECT ((  1\n  FROM  {% if %}", time_column="ts")
    assert bad.normalized_sql == "SELECT (( 1 FROM {% if %}" and len(bad.fingerprint) == 64
    broken = TransformNode(name="n", sql="SELECT * FROM t WHERE ((( x", time_column="ts")
    assert broken.normalized_sql == "SELECT * FROM t WHERE ((( x"


def test_state_written_with_legacy_fingerprints_reports_no_change(tmp_path):
    from seeknal_core import runner
    from seeknal_core.state import open_store

    project = load(tmp_path, {"sources/s.yml": "raw: {}\n", T: f"n:\n  schedule: daily\n  "
                              f"start: 2024-01-01\n  {OK_SQL}\n"})
    node = project.node("n")
    store = open_store(project.root, project.state_config)
    # the old formula, as seeknal 0.1 stored it: raw SQL and fields, NUL-separated
    old = "\x00".join([node.sql, "0 0 * * *", "UTC", "ts", "incremental", "", ""])
    legacy = __import__("hashlib").sha256(old.encode()).hexdigest()
    assert legacy == node.legacy_fingerprint != node.fingerprint
    store.set_fingerprint("n", legacy)
    now = dt.datetime(2024, 1, 3, tzinfo=UTC)
    changed = "definition changed"
    plan = runner.plan(project, store.load(), now=now)
    assert not any(changed in note for p in plan.nodes for note in p.notes)
    store.set_fingerprint("n", node.fingerprint)  # what the next run records
    assert not any(changed in note for p in runner.plan(project, store.load(), now=now).nodes
                   for note in p.notes)
    edited = project.with_nodes({"n": TransformNode(**{**_fields(node), "sql": node.sql + " AND 1=1"})})
    store.set_fingerprint("n", legacy)
    assert any(changed in note for p in runner.plan(edited, store.load(), now=now).nodes for note in p.notes)


def _fields(node: TransformNode) -> dict:
    import dataclasses

    return {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}


def test_transform_node_can_be_built_directly():
    node = TransformNode(name="n", sql="SELECT 1", schedule="@daily", timezone="Europe/Paris",
                         start="2024-01-01", depends_on=["a"])
    assert node.schedule.timezone == "Europe/Paris"
    assert node.start == dt.datetime(2023, 12, 31, 23, tzinfo=UTC)
    assert node.depends_on == ("a",) and node.materialization == "incremental"


def test_yaml_cache_sees_rewrites_of_the_same_size(tmp_path):
    path = tmp_path / "x.yml"
    path.write_text("a: 1\n")
    assert read_yaml(path) == {"a": 1}
    path.write_text("a: 2\n")
    assert read_yaml(path) == {"a": 2}


def test_loading_a_project_imports_neither_duckdb_nor_jinja2_nor_dagster(tmp_path):
    root = make_project(tmp_path, {"transforms/my_node.yml": SEED_GUIDE_NODE})
    code = (
        "import sys; from seeknal_core.project import load_project;"
        f"load_project({str(root)!r});"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('duckdb','jinja2','dagster')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- the load cache ------------------------------------------------------------------------
def _load_in_process(root: Path, probe: str) -> str:
    code = ("import sys; from seeknal_core.project import load_project, sql;"
            f"p = load_project({str(root)!r}); print(repr(({probe})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_load_cache_skips_unchanged_files_and_is_never_stale(tmp_path):
    root = make_project(tmp_path, {
        "sources/s.yml": "raw: {}\n",
        "transforms/a.yml": "a:\n  schedule: daily\n  start: 2024-01-01\n  sql: SELECT * FROM raw WHERE ts >= '{{ start }}'\n",
        "transforms/b.yml": "b: {sql: \"SELECT * FROM {{ ref('a') }}\"}\n",
    })
    (root / "target").mkdir()
    probe = "sql._scan.cache_info().misses, p.node('a').start.isoformat(), p.node('b').depends_on"
    first = _load_in_process(root, probe)
    assert (root / "target" / "project_cache.json").is_file()
    assert first == "(2, '2024-01-01T00:00:00+00:00', ('a',))"
    assert _load_in_process(root, probe) == "(0, '2024-01-01T00:00:00+00:00', ('a',))"  # no rescans
    # the same size, rewritten at once: the content key notices, whatever the mtime says
    b = root / "seeknal" / "transforms" / "b.yml"
    b.write_text(b.read_text().replace("ref('a')", "ref('r')").replace("SELECT *", "SELECT 1"))
    b.write_text("b: {sql: \"SELECT * FROM {{ ref('raw') }}\"}\n")
    assert _load_in_process(root, "p.node('b').depends_on") == "('raw',)"
    (root / "target" / "project_cache.json").write_text("{not json")
    assert _load_in_process(root, "p.node('b').depends_on") == "('raw',)"  # a bad cache is ignored


def test_fingerprints_are_kept_by_the_load_cache(tmp_path):
    root = make_project(tmp_path, {"transforms/a.yml": "a: {sql: select 1 -- one\n}\n"})
    (root / "target").mkdir()
    # (memo entries before the fingerprint is asked for, the fingerprint, sqlglot imported?)
    probe = "len(sql.MEMO['tokens']), p.node('a').fingerprint, 'sqlglot' in sys.modules"
    first = _load_in_process(root, probe)
    assert first.startswith("(0, ") and first.endswith(", False)"), first  # no parser either way
    assert _load_in_process(root, probe) == first.replace("(0, ", "(1, ", 1)  # read from the cache


def test_column_lineage_survives_a_command_that_does_not_read_it(tmp_path):
    """Dagster's load memoises each node's column lineage; a CLI command after an edit
    (which rewrites the cache, and never asks for lineage) keeps the other nodes' entries,
    so Dagster's next load analyses only the edited SQL."""
    import json

    root = make_project(tmp_path, {
        "transforms/a.yml": "a: {sql: \"SELECT 1 AS x\"}\n",
        "transforms/b.yml": "b: {sql: \"SELECT x FROM {{ ref('a') }}\"}\n",
    })
    (root / "target").mkdir()
    cache = root / "target" / "project_cache.json"
    lineage = "[str(lineage.column_lineage(p, n)) for n in ('a', 'b')]"
    code = ("import sys; from seeknal_core.project import load_project, lineage;"
            f"p = load_project({str(root)!r}); print({lineage})")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert len(json.loads(cache.read_text())["lineage"]) == 2
    (root / "seeknal" / "transforms" / "a.yml").write_text("a: {sql: \"SELECT 2 AS x\"}\n")
    _load_in_process(root, "p.node('a').sql")  # as every command does: learns a.yml, writes the cache
    assert len(json.loads(cache.read_text())["lineage"]) == 2  # kept: it never read them
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    # the next lineage reader keeps only what it used: b's entry (unchanged text and schema)
    # and a's new one
    assert len(json.loads(cache.read_text())["lineage"]) == 2


def test_load_cache_trusts_old_stats_and_sees_every_edit(tmp_path):
    import json
    import os
    import time

    root = make_project(tmp_path, {"transforms/a.yml": "a: {sql: SELECT 1}\n"})
    (root / "target").mkdir()
    a = root / "seeknal" / "transforms" / "a.yml"
    hour_ago = time.time() - 3600
    os.utime(a, (hour_ago, hour_ago))
    assert _load_in_process(root, "p.node('a').sql") == "'SELECT 1'"
    files = json.loads((root / "target" / "project_cache.json").read_text())["files"]
    assert list(files) == [str(a)], "an old file's stat is recorded"
    assert _load_in_process(root, "p.node('a').sql") == "'SELECT 1'"
    a.write_text("a: {sql: SELECT 2}\n")  # same size, new mtime
    assert _load_in_process(root, "p.node('a').sql") == "'SELECT 2'"
