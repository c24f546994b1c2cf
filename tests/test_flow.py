"""The tutorial's Python API: flows are saved as YAML nodes that load_project sees."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest

from seeknal_core import flow as flow_module
from seeknal_core.errors import ProjectError
from seeknal_core.flow import DuckDBTask, Flow, FlowInput, FlowOutput, Project, current_project
from seeknal_core.project import load_project
from seeknal_core.templating import render_sql

UTC = dt.UTC
TUTORIAL_SQL = "SELECT * FROM events WHERE event_time >= '__START__' AND event_time < '__END__'"


@pytest.fixture(autouse=True)
def no_current_project(monkeypatch):
    monkeypatch.setattr(flow_module, "_CURRENT", None)


def tutorial_flow() -> Flow:
    task = DuckDBTask()
    task.add_sql(TUTORIAL_SQL)
    flow = Flow(name="events_flow", input=FlowInput(kind="database", value="raw_events"),
                tasks=[task], output=FlowOutput())
    flow.set_interval_schedule(schedule="@daily")
    return flow


def run(sql: str, setup: str) -> list[tuple]:
    con = duckdb.connect()
    con.execute(setup)
    return con.execute(sql).fetchall()


RAW_EVENTS = """
    CREATE TABLE raw_events AS SELECT * FROM (VALUES
        (1, TIMESTAMP '2024-01-02 23:00:00'),
        (2, TIMESTAMP '2024-01-03 00:00:00'),
        (3, TIMESTAMP '2024-01-03 23:59:59'),
        (4, TIMESTAMP '2024-01-04 00:00:00')) t(id, event_time)
"""


def test_tutorial_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project = Project(name="ecommerce")
    assert project.get_or_create() is project and current_project() is project
    assert (tmp_path / "seeknal_project.yml").is_file()
    assert (tmp_path / "seeknal/transforms").is_dir() and (tmp_path / "seeknal/sources").is_dir()

    flow = tutorial_flow()
    assert flow.interval_schedule == "@daily"
    saved = flow.save()

    loaded = load_project(tmp_path)
    node = loaded.node("events_flow")
    assert loaded.name == "ecommerce" and node == saved
    assert node.path == tmp_path / "seeknal/transforms/events_flow.yml"
    assert node.schedule.cron == "0 0 * * *" and node.is_incremental
    assert node.time_column == "event_time"
    assert node.depends_on == ("raw_events",)
    assert loaded.sources["raw_events"].table == "raw_events"  # the input became a source

    sql = render_sql(node, dt.datetime(2024, 1, 3, tzinfo=UTC), dt.datetime(2024, 1, 4, tzinfo=UTC))
    assert sql.startswith('WITH events AS (SELECT * FROM "raw_events")')
    assert sorted(r[0] for r in run(sql, RAW_EVENTS)) == [2, 3]

    again = Flow.load("events_flow")
    assert again.interval_schedule == "@daily"
    assert again.input == FlowInput(kind="database", value="raw_events")
    assert again.steps == [TUTORIAL_SQL]
    before = node.path.read_text()
    again.save()
    assert node.path.read_text() == before  # load then save changes nothing


def test_interval_schedule_is_none_until_set(tmp_path):
    Project(name="p", path=tmp_path).get_or_create()
    flow = Flow(name="plain", tasks=[DuckDBTask().add_sql("SELECT 1 AS x")])
    assert flow.interval_schedule is None
    node = flow.save()
    assert node.schedule is None and node.materialization == "table"
    assert Flow.load("plain").interval_schedule is None


def test_schedule_timezone_start_and_partition_tracking(tmp_path):
    Project(name="p", path=tmp_path).get_or_create()
    flow = tutorial_flow()
    flow.set_interval_schedule("0 * * * *", timezone="America/New_York", start="2024-01-01")
    flow.set_partition_tracking(partition_column="event_date", partition_format="%Y-%m-%d")
    node = flow.save()
    assert node.schedule.cron == "0 * * * *" and node.timezone == "America/New_York"
    assert node.start == dt.datetime(2024, 1, 1, 5, tzinfo=UTC)
    assert (node.partition_column, node.partition_format) == ("event_date", "%Y-%m-%d")
    loaded = Flow.load("events_flow")
    assert (loaded.interval_schedule, loaded.timezone, loaded.start) == (
        "0 * * * *", "America/New_York", "2024-01-01")
    assert loaded.partition_column == "event_date"


def test_get_or_create_keeps_an_existing_project(tmp_path):
    (tmp_path / "seeknal_project.yml").write_text("name: original\ntimezone: Europe/Paris\n")
    project = Project(name="other", path=tmp_path).get_or_create()
    assert project.name == "original"
    assert (tmp_path / "seeknal_project.yml").read_text().startswith("name: original")
    assert project.load().timezone == "Europe/Paris"


def test_existing_source_is_not_rewritten(tmp_path):
    Project(name="p", path=tmp_path).get_or_create()
    declared = tmp_path / "seeknal/sources/all.yml"
    declared.write_text("raw_events: {path: data/events/*.parquet}\n")
    tutorial_flow().save()
    assert not (tmp_path / "seeknal/sources/raw_events.yml").exists()
    assert load_project(tmp_path).sources["raw_events"].format == "parquet"


def test_reading_the_input_by_name_needs_no_alias(tmp_path):
    Project(name="p", path=tmp_path).get_or_create()
    flow = Flow(name="f", input=FlowInput("table", "raw_events"),
                tasks=[DuckDBTask("SELECT * FROM raw_events WHERE event_time >= '{{ start }}'")])
    flow.set_interval_schedule("@daily")
    node = flow.save()
    assert node.sql == "SELECT * FROM raw_events WHERE event_time >= '{{ start }}'\n"
    assert node.depends_on == ("raw_events",)


def test_steps_are_chained_as_ctes(tmp_path):
    Project(name="p", path=tmp_path).get_or_create()
    task = (DuckDBTask()
            .add_sql("SELECT * FROM __THIS__ WHERE event_time >= '{{ start }}' "
                     "AND event_time < '{{ end }}';")
            .add_sql("SELECT id * 10 AS id, event_time FROM __THIS__")
            .add_sql("WITH x AS (SELECT * FROM __THIS__) SELECT sum(id) AS total, "
                     "min(event_time) AS event_time FROM x"))
    flow = Flow(name="totals", input=FlowInput("database", "raw_events"), tasks=[task])
    flow.set_interval_schedule("@daily")
    node = flow.save()
    assert "__step1 AS (" in node.sql and "__step3 AS (" in node.sql
    assert node.sql.rstrip().endswith("SELECT * FROM __step3")
    assert node.time_column == "event_time" and node.depends_on == ("raw_events",)
    sql = render_sql(node, dt.datetime(2024, 1, 3, tzinfo=UTC), dt.datetime(2024, 1, 4, tzinfo=UTC))
    assert run(sql, RAW_EVENTS) == [(50, dt.datetime(2024, 1, 3))]
    assert Flow.load("totals").steps == flow.steps


def test_file_input_becomes_a_source(tmp_path):
    Project(name="p", path=tmp_path).get_or_create()
    flow = Flow(name="clicks", input=FlowInput(kind="parquet", value="data/clicks/*.parquet"),
                tasks=[DuckDBTask("SELECT * FROM __THIS__")])
    node = flow.save()
    source = load_project(tmp_path).sources["clicks_input"]
    assert source.format == "parquet"
    assert source.location == str(tmp_path.resolve() / "data/clicks/*.parquet")
    assert node.depends_on == ("clicks_input",)
    assert node.sql == "SELECT * FROM {{ ref('clicks_input') }}\n"


def test_output_kind_sets_materialization(tmp_path):
    Project(name="p", path=tmp_path).get_or_create()
    flow = Flow(name="f", input=FlowInput("database", "raw_events"),
                tasks=[DuckDBTask("SELECT * FROM __THIS__")], output=FlowOutput(kind="parquet"))
    flow.set_interval_schedule("@daily")
    assert flow.save().materialization == "parquet"


def test_invalid_flow_is_rolled_back(tmp_path):
    Project(name="p", path=tmp_path).get_or_create()
    flow = Flow(name="bad", input=FlowInput("database", "raw_events"),
                tasks=[DuckDBTask("SELECT * FROM __THIS__")])  # no time filter, no time_column
    flow.set_interval_schedule("@daily")
    with pytest.raises(ProjectError, match="time_column"):
        flow.save()
    assert not (tmp_path / "seeknal/transforms/bad.yml").exists()
    assert not (tmp_path / "seeknal/sources/raw_events.yml").exists()
    flow.time_column = "event_time"
    assert flow.save().time_column == "event_time"


def test_yaml_node_loads_as_a_one_step_flow_and_keeps_its_fields(tmp_path):
    Project(name="p", path=tmp_path).get_or_create()
    path = tmp_path / "seeknal/transforms/many.yml"
    path.write_text(
        "first: {sql: SELECT 1 AS x}\n"
        "daily:\n"
        "  schedule: '@daily'\n"
        "  batch_size: 7\n"
        "  tags: [finance]\n"
        "  sql: SELECT * FROM first WHERE day >= '{{ start_date }}'\n"
    )
    flow = Flow.load("daily")
    assert flow.input is None and flow.steps == [
        "SELECT * FROM first WHERE day >= '{{ start_date }}'"]
    flow.description = "Edited in Python"
    flow.save()
    project = load_project(tmp_path)
    node = project.node("daily")
    assert node.path == path  # written back where it was defined
    assert (node.batch_size, node.tags, node.description) == (7, ("finance",), "Edited in Python")
    assert node.depends_on == ("first",) and "first" in project.nodes


def test_hand_edited_flow_sql_wins(tmp_path):
    Project(name="p", path=tmp_path).get_or_create()
    node = tutorial_flow().save()
    text = node.path.read_text()
    edited = "WITH events AS (SELECT DISTINCT * FROM"
    node.path.write_text(text.replace("WITH events AS (SELECT * FROM", edited))  # sql only
    flow = Flow.load("events_flow")
    assert flow.input is None and len(flow.steps) == 1 and edited in flow.steps[0]
    flow.save()
    assert load_project(tmp_path).node("events_flow").depends_on == ("raw_events",)


def test_flow_errors(tmp_path, monkeypatch):
    with pytest.raises(ProjectError, match="unknown FlowInput kind 'databse'.*'database'"):
        FlowInput(kind="databse", value="x")
    with pytest.raises(ProjectError, match="not a table name"):
        FlowInput(kind="table", value="my-table")
    with pytest.raises(ProjectError, match="unknown FlowOutput kind"):
        FlowOutput(kind="view")
    with pytest.raises(ProjectError, match="invalid flow name"):
        Flow(name="bad name")
    with pytest.raises(ProjectError, match="flow 'f'.*unknown schedule preset"):
        Flow(name="f").set_interval_schedule("@dayly")
    with pytest.raises(ProjectError, match="flow 'f'.*unknown timezone"):
        Flow(name="f").set_interval_schedule("@daily", timezone="Nowhere/City")
    with pytest.raises(ProjectError, match="has no SQL"):
        Flow(name="f").compose_sql()
    with pytest.raises(ProjectError, match="__THIS__ but the flow has no input"):
        Flow(name="f", tasks=[DuckDBTask("SELECT * FROM __THIS__")]).compose_sql()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProjectError, match=r"no current project.*get_or_create"):
        tutorial_flow().save()


def test_tutorial_project_is_the_flow_project_class():
    from seeknal_core import flow
    from seeknal_core import project as loaded

    assert flow.Project is flow.FlowProject and flow.Project is not loaded.Project
    assert flow.Project.__name__ == "FlowProject"
