"""The example project: its generator, its YAML, and that every node's SQL is right.

A small dataset (20,000 events, 2024-03-01 .. 2024-03-15) is generated into a copy
of the project; each node's SQL is rendered for real intervals with the project's
own templating and run in DuckDB, and its output is checked against the raw events.
The range contains New York's spring-forward day (2024-03-10, 23 hours long).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from seeknal_core.intervals import create_interval_calculator
from seeknal_core.project import Project, load_project
from seeknal_core.templating import render_sql
from seeknal_core.timeutil import get_zone

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"
UTC = dt.UTC
NY = get_zone("America/New_York")
ROWS, DAYS, START = 20_000, 15, dt.date(2024, 3, 1)
DATA_START, DATA_END = dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 16)  # naive UTC


def _import_generator(path: Path):
    spec = importlib.util.spec_from_file_location(f"example_generate_data_{id(path)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def project_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("example") / "example_project"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("data", "target", "__pycache__"))
    gen = _import_generator(root / "generate_data.py")
    assert gen.generate(root / "data", rows=ROWS, days=DAYS, start=START) is True
    gen.follow(root / "seeknal_project.yml", START)  # the project's start follows the data
    return root


@pytest.fixture(scope="module")
def gen(project_root):
    return _import_generator(project_root / "generate_data.py")


@pytest.fixture(scope="module")
def project(project_root) -> Project:
    return load_project(project_root)


@pytest.fixture
def con(project_root):
    c = duckdb.connect()
    # Session timezone far from both UTC and New York: no result may depend on it.
    c.execute("SET TimeZone = 'Asia/Kolkata'")
    glob = (project_root / "data" / "events" / "*.parquet").as_posix()
    c.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{glob}')")
    yield c
    c.close()


def run(con, project: Project, name: str, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """The node's rendered SQL for [start, end) executed, as dicts ordered by the time column."""
    node = project.node(name)
    rel = con.sql(render_sql(node, start, end))
    rows = [dict(zip(rel.columns, r)) for r in rel.fetchall()]
    return sorted(rows, key=lambda r: (r[node.time_column], *(str(v) for v in r.values())))


def one(con, sql: str, *params):
    return con.execute(sql, list(params)).fetchall()[0][0]


def wall(instant: dt.datetime, tz) -> dt.datetime:
    """A UTC instant as naive wall clock in ``tz``: what a node's time column holds."""
    return instant.astimezone(tz).replace(tzinfo=None)


def assert_inside_interval(project, name, rows, start, end):
    """The runner deletes an interval by its wall-clock bounds: every row must fall inside."""
    node = project.node(name)
    tz = get_zone(node.timezone)
    lo, hi = wall(start, tz), wall(end, tz)
    assert rows, f"{name} produced no rows for [{start}, {end})"
    assert all(lo <= r[node.time_column] < hi for r in rows)


# -- the project definition ------------------------------------------------------------------
def test_project_loads_with_the_expected_nodes(project, project_root):
    assert project.name == "ecommerce" and project.timezone == "UTC"
    assert project.start == dt.datetime(2024, 3, 1, tzinfo=UTC)  # a Friday
    assert project.database_path == (project_root / "target" / "warehouse.duckdb").resolve()
    assert project.state_config == {"backend": "json", "path": "target/run_state.json"}
    assert list(project.nodes) == [
        "daily_orders_ny", "daily_revenue", "hourly_events", "weekly_active_users"]
    assert set(project.sources) == {"events", "products"}
    events = project.source("events")
    assert events.format == "parquet" and events.time_column == "event_time"
    assert events.location == str(project_root.resolve() / "data" / "events" / "*.parquet")

    expected = {  # name: (cron, timezone, time column, depends on, first interval's start in UTC)
        "hourly_events": ("0 * * * *", "UTC", "hour", ("events",), dt.datetime(2024, 3, 1)),
        "daily_revenue": ("0 0 * * *", "UTC", "day", ("hourly_events",), dt.datetime(2024, 3, 1)),
        "weekly_active_users": ("0 2 * * 0", "UTC", "week_start", ("events",),
                                dt.datetime(2024, 3, 3, 2)),  # the first Sunday 02:00
        "daily_orders_ny": ("0 0 * * *", "America/New_York", "ny_day", ("events",),
                            dt.datetime(2024, 3, 1, 5)),  # New York midnight
    }
    for name, (cron, tz, time_column, deps, first) in expected.items():
        node = project.node(name)
        assert node.schedule.cron == cron and node.schedule.timezone == tz == node.timezone, name
        assert node.time_column == time_column, name
        assert node.depends_on == deps, name
        assert node.start == project.start, name  # every node follows the data's start
        first_s = node.schedule.tick_at_or_after(int(node.start.timestamp()))
        assert first_s == int(first.replace(tzinfo=UTC).timestamp()), name
        assert node.is_incremental and node.description, name
    assert project.upstream("daily_revenue") == ["hourly_events"]
    assert project.downstream("hourly_events") == ["daily_revenue"]
    assert project.downstream("events") == [
        "daily_orders_ny", "hourly_events", "daily_revenue", "weekly_active_users"]
    revenue = project.node("daily_revenue")
    assert (revenue.partition_column, revenue.partition_format) == ("event_date", "%Y-%m-%d")
    assert project.node("hourly_events").batch_size == 168
    assert not project.node("weekly_active_users").schedule.midnight_aligned


# -- each node's SQL, run on the generated data ------------------------------------------------
def test_hourly_events(con, project):
    start, end = dt.datetime(2024, 3, 5, 19, tzinfo=UTC), dt.datetime(2024, 3, 5, 20, tzinfo=UTC)
    rows = run(con, project, "hourly_events", start, end)
    assert_inside_interval(project, "hourly_events", rows, start, end)
    assert {r["hour"] for r in rows} == {dt.datetime(2024, 3, 5, 19)}
    lo, hi = wall(start, UTC), wall(end, UTC)
    direct = {
        t: (n, u, s) for t, n, u, s in con.execute(
            "SELECT event_type, count(*), count(DISTINCT user_id), sum(amount) FROM events "
            "WHERE event_time >= ? AND event_time < ? GROUP BY ALL", [lo, hi]).fetchall()
    }
    assert {r["event_type"]: (r["events"], r["users"], r["revenue"]) for r in rows} == direct
    assert set(direct) == {"page_view", "add_to_cart", "checkout", "purchase", "refund"}

    # A coalesced batch (the whole range as one query) gives every hour the same rows.
    batch = run(con, project, "hourly_events", DATA_START.replace(tzinfo=UTC),
                DATA_END.replace(tzinfo=UTC))
    assert [r for r in batch if r["hour"] == lo] == rows
    assert sum(r["events"] for r in batch) == ROWS
    assert len({r["hour"] for r in batch}) == DAYS * 24


def test_daily_revenue_adds_up_the_hours(con, project):
    whole = render_sql(project.node("hourly_events"), DATA_START.replace(tzinfo=UTC),
                       DATA_END.replace(tzinfo=UTC))
    con.execute(f"CREATE TABLE hourly_events AS {whole}")

    start, end = dt.datetime(2024, 3, 5, tzinfo=UTC), dt.datetime(2024, 3, 6, tzinfo=UTC)
    [row] = run(con, project, "daily_revenue", start, end)
    assert_inside_interval(project, "daily_revenue", [row], start, end)
    assert row["day"] == dt.datetime(2024, 3, 5) and row["event_date"] == "2024-03-05"
    lo, hi = wall(start, UTC), wall(end, UTC)
    assert row["revenue"] == one(
        con, "SELECT sum(revenue) FROM hourly_events WHERE hour >= ? AND hour < ?", lo, hi)
    assert one(con, "SELECT count(DISTINCT hour) FROM hourly_events WHERE hour >= ? AND hour < ?",
               lo, hi) == 24
    direct = con.execute(
        "SELECT count(*) FILTER (WHERE event_type = 'purchase'), "
        "count(*) FILTER (WHERE event_type = 'refund'), "
        "sum(amount) FILTER (WHERE event_type = 'purchase'), "
        "-sum(amount) FILTER (WHERE event_type = 'refund'), sum(amount) "
        "FROM events WHERE event_time >= ? AND event_time < ?", [lo, hi]).fetchall()[0]
    assert (row["purchases"], row["refunds"], row["gross_revenue"], row["refunded"],
            row["revenue"]) == direct
    assert row["purchases"] > 0 and row["refunds"] > 0
    assert row["gross_revenue"] - row["refunded"] == row["revenue"]

    days = run(con, project, "daily_revenue", DATA_START.replace(tzinfo=UTC),
               DATA_END.replace(tzinfo=UTC))
    assert [r["event_date"] for r in days] == [
        (START + dt.timedelta(days=k)).isoformat() for k in range(DAYS)]
    assert [r["day"].strftime("%Y-%m-%d") for r in days] == [r["event_date"] for r in days]
    assert next(r for r in days if r["event_date"] == "2024-03-05") == row
    assert sum(r["revenue"] for r in days) == one(con, "SELECT sum(amount) FROM events")


def test_weekly_active_users(con, project):
    node = project.node("weekly_active_users")
    calc = create_interval_calculator(node.schedule.cron, node.timezone)
    week = calc.interval_containing(dt.datetime(2024, 3, 5, tzinfo=UTC))
    assert (week.start, week.end) == (dt.datetime(2024, 3, 3, 2, tzinfo=UTC),
                                      dt.datetime(2024, 3, 10, 2, tzinfo=UTC))
    [row] = run(con, project, "weekly_active_users", week.start, week.end)
    assert_inside_interval(project, "weekly_active_users", [row], week.start, week.end)
    assert row["week_start"] == dt.datetime(2024, 3, 3, 2)
    lo, hi = wall(week.start, UTC), wall(week.end, UTC)
    assert row["active_users"] == one(
        con, "SELECT count(DISTINCT user_id) FROM events WHERE event_time >= ? AND event_time < ?",
        lo, hi)
    assert row["events"] == one(
        con, "SELECT count(*) FROM events WHERE event_time >= ? AND event_time < ?", lo, hi)
    assert 0 < row["buyers"] < row["active_users"] < one(
        con, "SELECT count(DISTINCT user_id) FROM events")

    # Two weeks coalesced into one query: one row per week, the first one unchanged.
    both = run(con, project, "weekly_active_users", week.start, week.end + dt.timedelta(days=7))
    assert [r["week_start"] for r in both] == [dt.datetime(2024, 3, 3, 2), dt.datetime(2024, 3, 10, 2)]
    assert both[0] == row


def test_daily_orders_new_york_days(con, project):
    node = project.node("daily_orders_ny")
    calc = create_interval_calculator(node.schedule.cron, node.timezone)
    purchases = ("SELECT count(*) FROM events WHERE event_type = 'purchase' "
                 "AND event_time >= ? AND event_time < ?")

    # The spring-forward day: New York midnight to midnight is 23 hours of UTC events.
    day = calc.interval_containing(dt.datetime(2024, 3, 10, 12, tzinfo=NY))
    assert (day.start, day.end) == (dt.datetime(2024, 3, 10, 5, tzinfo=UTC),
                                    dt.datetime(2024, 3, 11, 4, tzinfo=UTC))
    [row] = run(con, project, "daily_orders_ny", day.start, day.end)
    assert_inside_interval(project, "daily_orders_ny", [row], day.start, day.end)
    assert row["ny_day"] == dt.datetime(2024, 3, 10)  # naive New York wall clock = {{ start }}
    assert row["orders"] == one(con, purchases, dt.datetime(2024, 3, 10, 5), dt.datetime(2024, 3, 11, 4))
    assert row["orders"] > 0 and row["revenue"] > 0

    # New York days 03-01 .. 03-14 in one query: the UTC range shifts from -5 h to -4 h.
    start, end = dt.datetime(2024, 3, 1, tzinfo=NY), dt.datetime(2024, 3, 15, tzinfo=NY)
    days = run(con, project, "daily_orders_ny", start, end)
    assert_inside_interval(project, "daily_orders_ny", days, start, end)
    assert [r["ny_day"] for r in days] == [dt.datetime(2024, 3, d) for d in range(1, 15)]
    assert sum(r["orders"] for r in days) == one(
        con, purchases, dt.datetime(2024, 3, 1, 5), dt.datetime(2024, 3, 15, 4))
    assert next(r for r in days if r["ny_day"] == dt.datetime(2024, 3, 10)) == row
    # the same purchases, counted per UTC day instead, sum to a different total
    assert sum(r["orders"] for r in days) != one(
        con, purchases, dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 15))


# -- the generator ------------------------------------------------------------------------------
def _rows(out: Path) -> list[tuple]:
    glob = (out / "events" / "*.parquet").as_posix()
    return duckdb.sql(f"SELECT * FROM read_parquet('{glob}') ORDER BY event_id").fetchall()


def test_generated_events_follow_the_schema(con, gen, project_root):
    columns = con.execute("DESCRIBE events").fetchall()
    assert {c[0]: c[1] for c in columns} == gen.EVENT_COLUMNS
    stats = con.execute("""
        SELECT count(*), count(DISTINCT event_id), min(event_id), max(event_id),
               min(event_time), max(event_time), bool_and(amount != 0) FILTER (WHERE event_type IN
               ('purchase', 'refund')), bool_and(amount = 0) FILTER (WHERE event_type NOT IN
               ('purchase', 'refund')), max(amount) FILTER (WHERE event_type = 'refund'),
               min(amount) FILTER (WHERE event_type = 'purchase'), count(DISTINCT country),
               bool_and(event_id = rn)
        FROM (SELECT *, row_number() OVER (ORDER BY event_time, event_id) AS rn FROM events)
    """).fetchall()[0]
    count, ids, lo_id, hi_id, first, last, paid_nonzero, other_zero, max_refund, min_purchase, \
        countries, ordered = stats
    assert (count, ids, lo_id, hi_id) == (ROWS, ROWS, 1, ROWS)
    assert DATA_START <= first < last < DATA_END
    assert paid_nonzero and other_zero and ordered
    assert max_refund < 0 < min_purchase and countries > 5
    types = dict(con.execute("SELECT event_type, count(*) FROM events GROUP BY ALL").fetchall())
    assert set(types) == {"page_view", "add_to_cart", "checkout", "purchase", "refund"}
    assert types["page_view"] > types["add_to_cart"] > types["purchase"] > types["refund"]
    assert one(con, "SELECT count(DISTINCT country) FROM events GROUP BY user_id "
               "ORDER BY 1 DESC LIMIT 1") == 1  # a user lives in one country
    glob = (project_root / "data" / "events" / "*.parquet").as_posix()
    assert one(con, f"""
        SELECT bool_and(event_id = previous + 1) FROM (
            SELECT event_id, lag(event_id) OVER (ORDER BY filename, file_row_number) AS previous
            FROM read_parquet('{glob}', filename = true, file_row_number = true))
        WHERE previous IS NOT NULL""")  # files in month order, rows stored in event_id order


def test_generator_is_deterministic(gen, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert gen.generate(first, rows=5_000, days=3, start="2024-02-28") is True
    assert gen.generate(second, rows=5_000, days=3, start=dt.date(2024, 2, 28)) is True
    files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert files == ["events/events_2024-02.parquet", "events/events_2024-03.parquet",
                     "manifest.json", "products.csv"]
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    rows = _rows(first)
    assert len(rows) == 5_000 and rows == _rows(second)
    assert rows[0][1] >= dt.datetime(2024, 2, 28) and rows[-1][1] < dt.datetime(2024, 3, 2)


def test_generator_skips_current_data_and_replaces_stale_files(gen, tmp_path):
    out = tmp_path / "data"
    assert gen.generate(out, rows=2_000, days=5, start="2024-01-30") is True
    jan = out / "events" / "events_2024-01.parquet"
    before = jan.stat().st_mtime_ns
    assert gen.generate(out, rows=2_000, days=5, start="2024-01-30") is False  # unchanged: skipped
    assert jan.stat().st_mtime_ns == before
    assert gen.generate(out, rows=2_000, days=5, start="2024-01-30", force=True) is True

    assert gen.generate(out, rows=1_000, days=3, start="2024-02-01") is True  # new parameters
    assert sorted(p.name for p in (out / "events").iterdir()) == ["events_2024-02.parquet"]
    assert len(_rows(out)) == 1_000

    (out / "events" / "events_2024-02.parquet").unlink()  # a listed file is missing: rebuild
    assert not gen.is_current(out, rows=1_000, days=3, start="2024-02-01")
    assert gen.generate(out, rows=1_000, days=3, start="2024-02-01") is True


def test_generator_cli(gen, project_root, tmp_path, capsys):
    out = tmp_path / "d"
    args = ["--rows", "500", "--days", "2", "--start", "2024-03-09", "--out", str(out)]
    first = subprocess.run([sys.executable, str(project_root / "generate_data.py"), *args],
                           capture_output=True, text=True, check=True)
    assert first.stdout.startswith("wrote 500 events, 2024-03-09 .. 2024-03-10")
    assert len(_rows(out)) == 500
    products = (out / "products.csv").read_text().splitlines()
    assert products[0] == "product_id,product_name,category,price" and len(products) == 201

    assert gen.main(args) == 0
    assert "skipped (use --force to regenerate)" in capsys.readouterr().out
    assert gen.main([*args, "--force"]) == 0
    assert capsys.readouterr().out.startswith("wrote 500 events")
    with pytest.raises(SystemExit) as bad:
        gen.main(["--rows", "0", "--out", str(out)])
    assert bad.value.code == 2 and "--rows and --days must be positive" in capsys.readouterr().err


def test_anchored_data_ends_at_the_hour_and_starts_on_a_sunday(gen, tmp_path, monkeypatch):
    """Without --start the data follows the clock (pinned here by $SEEKNAL_EXAMPLE_END): from the
    Sunday 13-14 weeks back to the end hour, and a later end in the same week only adds rows."""
    monkeypatch.setenv("SEEKNAL_EXAMPLE_END", "2024-04-01T00:37:10Z")
    assert gen.anchor() == (dt.date(2023, 12, 31), dt.datetime(2024, 4, 1))  # a Sunday; floored hour
    out = tmp_path / "d"
    assert gen.generate(out, rows=9_800) is True
    assert gen.generate(out, rows=9_800) is False  # same anchor: skipped
    rows = _rows(out)
    assert rows[0][1] >= dt.datetime(2023, 12, 31) and rows[-1][1] < dt.datetime(2024, 4, 1)
    assert 9_000 < len(rows) < 9_800  # 13 weeks and a day of the 14 drawn
    assert gen.generate(out, rows=9_800, end="2024-04-02T05:00") is True
    later = _rows(out)
    assert later[: len(rows)] == rows and later[-1][1] < dt.datetime(2024, 4, 2, 5) < later[-1][1] + \
        dt.timedelta(hours=6)
    with pytest.raises(ValueError, match="not an ISO date-time"):
        gen.anchor("tomorrow")


def test_generator_cli_sets_the_example_start(project_root, tmp_path):
    """Into a project's default data folder the generator writes the project's `start:` and,
    when it moves, removes target/ built from the previous data."""
    root = tmp_path / "p"
    shutil.copytree(project_root, root, ignore=shutil.ignore_patterns("data", "target", "__pycache__"))
    (root / "target").mkdir()
    env = {**__import__("os").environ, "SEEKNAL_EXAMPLE_END": "2024-04-01T00:00"}
    cmd = [sys.executable, str(root / "generate_data.py"), "--rows", "2000"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    assert "2023-12-31 00:00 .. 2024-04-01 00:00 UTC" in out and "removed" in out
    assert load_project(root).start == dt.datetime(2023, 12, 31, tzinfo=UTC)
    assert not (root / "target").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    assert "skipped" in again and "start" not in again.split("skipped")[1]
