"""SQL change analysis (seeknal_core.changes): category, diff and column-level lineage on
plain SQL, as a node's normalized_sql gives it."""

from __future__ import annotations

from seeknal_core import changes as c
from seeknal_core.project import normalize_sql

HOURLY = ("SELECT date_trunc('hour', event_time) AS hour, user_id, v AS amount FROM raw_events "
          "WHERE event_time >= '2000-01-01' AND v > 0")
DAILY = ('SELECT CAST(hour AS DATE) AS day, sum(amount) AS revenue FROM "hourly" '
         "WHERE hour >= '2000-01-01' GROUP BY ALL")
USERS = ('SELECT CAST(hour AS DATE) AS day, count(DISTINCT user_id) AS users FROM "hourly" '
         "GROUP BY 1")
HOURLY_COLUMNS = {"hourly": ("hour", "user_id", "amount")}


def test_a_filter_change_is_breaking_and_changes_every_row():
    change = c.classify(HOURLY, HOURLY.replace("v > 0", "v > 50"))
    assert change.changed and change.breaking and change.rows
    assert change.parts == ("filter",)
    assert c.effect_of(change) == c.Effect(True, frozenset({c.ALL}))
    assert any(line.startswith("+") and "v > 50" in line for line in c.diff(HOURLY, HOURLY.replace("v > 0", "v > 50")))


def test_formatting_and_comments_are_no_change():
    edited = "-- fixed\nselect date_trunc('hour',event_time) as hour,\n  user_id, v as amount\nfrom raw_events " \
             "where event_time >= '2000-01-01' /* keep */ and v > 0"
    assert not c.classify(HOURLY, edited).changed
    assert c.diff(HOURLY, edited) == []
    assert normalize_sql("n", HOURLY) == normalize_sql("n", edited)


def test_added_columns_only_are_non_breaking_and_reach_no_reader():
    change = c.classify(HOURLY, HOURLY.replace("v AS amount", "v AS amount, v % 2 AS parity"))
    assert change.changed and not change.breaking and change.added == ("parity",)
    assert c.effect_of(change) is None


def test_column_lineage_reaches_only_readers_of_the_changed_column():
    change = c.classify(HOURLY, HOURLY.replace("v AS amount", "v * 2 AS amount"))
    assert change.breaking and not change.rows and change.modified == ("amount",)
    effect = {"hourly": c.effect_of(change)}
    daily = c.propagate(c.analyse(DAILY, schema=HOURLY_COLUMNS), effect)
    assert daily == c.Effect(False, frozenset({"revenue"}))
    assert c.propagate(c.analyse(USERS, schema=HOURLY_COLUMNS), effect) is None
    # one more hop: a weekly node over daily.revenue, and one over daily.day only
    weekly = 'SELECT date_trunc(\'week\', day) AS week, sum(revenue) AS revenue FROM "daily" GROUP BY 1'
    days = 'SELECT count(*) AS n, max(day) AS last_day FROM "daily"'
    schema = {"daily": ("day", "revenue")}
    assert c.propagate(c.analyse(weekly, schema=schema), {"daily": daily}) == c.Effect(False, frozenset({"revenue"}))
    assert c.propagate(c.analyse(days, schema=schema), {"daily": daily}) is None


def test_a_changed_column_in_a_filter_or_grouping_changes_every_row_downstream():
    effect = {"hourly": c.Effect(False, frozenset({"user_id"}))}
    grouped = 'SELECT user_id, sum(amount) AS revenue FROM "hourly" GROUP BY user_id'
    filtered = 'SELECT hour, amount FROM "hourly" WHERE user_id <> 3'
    for sql in (grouped, filtered):
        assert c.propagate(c.analyse(sql, schema=HOURLY_COLUMNS), effect) == c.Effect(True, frozenset({c.ALL}))


def test_select_star_passes_changed_columns_through_and_ctes_are_pruned():
    effect = {"hourly": c.Effect(False, frozenset({"amount"}))}
    assert c.propagate(c.analyse('SELECT * FROM "hourly"'), effect) == c.Effect(False, frozenset({"amount"}))
    cte = ('WITH h AS (SELECT hour, user_id, amount FROM "hourly") '
           "SELECT hour, count(DISTINCT user_id) AS users FROM h GROUP BY hour")
    assert c.propagate(c.analyse(cte, schema=HOURLY_COLUMNS), effect) is None


def test_distinct_and_unparseable_sql_are_treated_conservatively():
    distinct = "SELECT DISTINCT user_id FROM raw_events"
    change = c.classify(distinct, "SELECT DISTINCT user_id, v FROM raw_events")
    assert change.breaking and change.rows
    broken = c.classify("SELECT FROM WHERE (", "SELECT FROM WHERE ((")
    assert broken.changed and broken.breaking
    assert c.propagate(c.analyse("SELECT FROM WHERE ("), {"x": c.Effect(False, frozenset({"a"}))}).rows


def test_group_by_all_keys_choose_rows():
    """``GROUP BY ALL`` groups by the projections without an aggregate: changing such a key
    changes every row and every column, and an upstream change to a column a key reads
    reaches every downstream column (a reduction names the keys before dropping any)."""
    old = "SELECT date_trunc('hour', t) AS t, sum(n) AS n FROM raw GROUP BY ALL"
    change = c.classify(old, old.replace("'hour'", "'day'"))
    assert change.rows and change.modified == ("t", "n")
    daily = 'SELECT CAST(hour AS DATE) AS day, sum(amount) AS revenue FROM "hourly" GROUP BY ALL'
    query = c.analyse(daily, schema=HOURLY_COLUMNS)
    assert c.column_lineage(query) == {"day": {"hourly": ["hour"]}, "revenue": {"hourly": ["amount", "hour"]}}
    assert c.propagate(query, {"hourly": c.Effect(False, frozenset({"hour"}))}) == c.Effect(True, frozenset({c.ALL}))
    assert c.propagate(query, {"hourly": c.Effect(False, frozenset({"amount"}))}) == c.Effect(
        False, frozenset({"revenue"}))
