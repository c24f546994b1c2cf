"""SQL rendering: interval variables in the node's timezone, ref(), placeholders, errors."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from seeknal_core.errors import ProjectError
from seeknal_core.intervals import create_interval_calculator
from seeknal_core.project import TransformNode
from seeknal_core.templating import compile_sql, interval_variables, render_sql

UTC = dt.UTC
ALL_VARS = ("{{ start }}|{{ end }}|{{ start_date }}|{{ end_date }}|{{ start_ts }}|{{ end_ts }}")


def node(sql: str = ALL_VARS, **fields) -> TransformNode:
    fields.setdefault("schedule", "@daily")
    fields.setdefault("time_column", "ts")
    return TransformNode(name="n", sql=sql, path=Path("seeknal/transforms/n.yml"), **fields)


def render_error(n: TransformNode) -> str:
    """The message of the ProjectError that rendering ``n`` over 2024-01-01 raises."""
    with pytest.raises(ProjectError) as info:
        render_sql(n, dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 2, tzinfo=UTC))
    return str(info.value)


def test_variables_in_utc():
    start, end = dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 2, tzinfo=UTC)
    sql = render_sql(node(), start, end)
    assert sql.split("|") == [
        "2024-01-01 00:00:00", "2024-01-02 00:00:00", "2024-01-01", "2024-01-02",
        "2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00",
    ]


@pytest.mark.parametrize("day, start_ts, end_ts", [
    # spring forward on 2024-03-10: a 23-hour day
    (dt.date(2024, 3, 10), "2024-03-10T00:00:00-05:00", "2024-03-11T00:00:00-04:00"),
    # fall back on 2024-11-03: a 25-hour day
    (dt.date(2024, 11, 3), "2024-11-03T00:00:00-04:00", "2024-11-04T00:00:00-05:00"),
])
def test_daily_variables_in_new_york_across_dst(day, start_ts, end_ts):
    n = node(timezone="America/New_York")
    calc = create_interval_calculator("@daily", "America/New_York")
    interval = calc.interval_containing(dt.datetime.combine(day, dt.time(12)))
    rendered = render_sql(n, interval.start, interval.end).split("|")
    next_day = day + dt.timedelta(days=1)
    assert rendered == [
        f"{day} 00:00:00", f"{next_day} 00:00:00", str(day), str(next_day), start_ts, end_ts,
    ]


def test_hourly_variables_in_the_repeated_fall_back_hour():
    """Wall clock repeats 01:00 twice; the *_ts variables keep the two hours apart."""
    n = node(schedule="@hourly", timezone="America/New_York")
    first = render_sql(n, dt.datetime(2024, 11, 3, 5, tzinfo=UTC),
                       dt.datetime(2024, 11, 3, 6, tzinfo=UTC)).split("|")
    second = render_sql(n, dt.datetime(2024, 11, 3, 6, tzinfo=UTC),
                        dt.datetime(2024, 11, 3, 7, tzinfo=UTC)).split("|")
    assert first[0] == second[0] == "2024-11-03 01:00:00"
    assert first[4] == "2024-11-03T01:00:00-04:00"
    assert second[4] == "2024-11-03T01:00:00-05:00"


def test_naive_bounds_are_read_in_the_node_timezone():
    values = interval_variables(dt.datetime(2024, 7, 1), dt.datetime(2024, 7, 2),
                                "Europe/Berlin")
    assert values["start_ts"] == "2024-07-01T00:00:00+02:00"
    assert values["end"] == "2024-07-02 00:00:00"


def test_tutorial_placeholders_mean_start_and_end():
    n = node("SELECT * FROM events WHERE event_time >= '__START__' AND event_time < '__END__'")
    sql = render_sql(n, dt.datetime(2024, 1, 3, tzinfo=UTC), dt.datetime(2024, 1, 4, tzinfo=UTC))
    assert sql == ("SELECT * FROM events WHERE event_time >= '2024-01-03 00:00:00' "
                   "AND event_time < '2024-01-04 00:00:00'")


def test_ref_and_this():
    n = node("SELECT * FROM {{ ref('orders') }} JOIN {{ ref('source.Users') }} "
             "UNION ALL SELECT * FROM {{ this }}", depends_on=("orders", "users"))
    assert render_sql(n, None, None) == (
        'SELECT * FROM "orders" JOIN "users" UNION ALL SELECT * FROM "n"')
    mapped = render_sql(n, None, None, relation_for=lambda name: f"main.{name}")
    assert mapped == "SELECT * FROM main.orders JOIN main.users UNION ALL SELECT * FROM main.n"


def test_ref_outside_dependencies_is_an_error():
    n = node("SELECT * FROM {{ ref('order') }}", depends_on=("orders",))
    with pytest.raises(ProjectError, match=r"node 'n' .*ref\('order'\).*did you mean 'orders'"):
        render_sql(n, None, None)


def test_undefined_variable_names_itself():
    n = node("SELECT * FROM t WHERE ts >= '{{ stat }}'")
    message = render_error(n)
    assert "undefined template variable 'stat'" in message
    assert "did you mean 'start'?" in message
    assert "node 'n'" in message and "seeknal/transforms/n.yml" in message


def test_interval_variable_without_an_interval():
    n = node("SELECT * FROM t WHERE ts >= '{{ start }}'", schedule=None)
    with pytest.raises(ProjectError, match="'start'.*has no interval"):
        render_sql(n, None, None)


def test_syntax_error_names_node_and_file():
    n = node("SELECT {{ start ")
    message = render_error(n)
    assert "node 'n'" in message and "seeknal/transforms/n.yml" in message
    assert "template error on line 1" in message and "\n" not in message


def test_templates_are_compiled_once_per_sql():
    a, b = node("SELECT '{{ start }}'"), node("SELECT '{{ start }}'", timezone="Asia/Tokyo")
    assert compile_sql(a) is compile_sql(b)


def test_sql_is_otherwise_untouched():
    sql = "SELECT 1 -- trailing comment\n"
    assert render_sql(node(sql), None, None) == sql


def test_importing_templating_does_not_import_jinja2():
    code = ("import sys, seeknal_core.templating;"
            "sys.exit(1 if 'jinja2' in sys.modules or 'duckdb' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("sql, simple", [
    (ALL_VARS, True),
    ("SELECT * FROM {{ ref('orders') }} o JOIN {{ref(\"source.Users\")}} u ON true "
     "WHERE ts >= '__START__' AND ts < '{{end_ts}}' UNION ALL SELECT * FROM {{ this }}\n", True),
    ("SELECT '{' || '}' AS braces, '{{ start }}{{ end }}' AS glued\n\n", True),
    ("SELECT {{- start -}} AS trimmed", False),         # whitespace control: Jinja's path
    ("{% if true %}SELECT 1{% endif %}", False),        # blocks: Jinja's path
    ("SELECT '{{ start | upper }}'", False),            # filters: Jinja's path
    ("SELECT 1\r\nFROM t -- CR LF\r\n", False),         # Jinja normalises line ends
])
def test_fast_substitution_renders_exactly_what_jinja_renders(sql, simple):
    import jinja2

    from seeknal_core import templating

    n = node(sql, depends_on=("orders", "users"))
    start, end = dt.datetime(2024, 3, 10, tzinfo=UTC), dt.datetime(2024, 3, 11, tzinfo=UTC)
    ours = render_sql(n, start, end)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text = sql.replace("__START__", "{{ start }}").replace("__END__", "{{ end }}")
    context = {**interval_variables(start, end), "this": '"n"',
               "ref": lambda r: '"' + r.split(".")[-1].lower() + '"'}
    assert ours == env.from_string(text).render(context)
    assert isinstance(templating.compile_sql(n), templating._SimpleTemplate) == simple


def test_rendering_plain_substitutions_does_not_import_jinja2():
    code = ("import sys, datetime as dt; from seeknal_core.project import TransformNode;"
            "from seeknal_core.templating import render_sql;"
            "n = TransformNode(name='n', sql=\"SELECT * FROM {{ ref('a') }} WHERE ts >= '{{ start }}'\","
            " schedule='@daily', time_column='ts', depends_on=['a']);"
            "d = dt.datetime(2024, 1, 1, tzinfo=dt.UTC);"
            "print(render_sql(n, d, d + dt.timedelta(days=1)), 'jinja2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "SELECT * FROM \"a\" WHERE ts >= '2024-03-10 00:00:00' False".replace(
        "2024-03-10", "2024-01-01")
