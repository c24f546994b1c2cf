"""Audits on the Spark engine at the engine's edge: a staged batch is invisible to the
node's readers until ``commit`` (its old rows stay readable meanwhile), ``rollback``
leaves nothing behind, a failed coalesced batch is split and re-staged on a fresh node,
``check`` counts and samples exactly what the batch wrote, and ``audit_intervals``
(``seeknal audit``) narrows failures to intervals of the published directories.

The per-audit runner contract (each built-in and a custom audit, on DuckDB and Spark)
is in test_spark_contract.py."""

from __future__ import annotations

import pytest
from spark_env import spark, spark_group  # noqa: F401 - the session fixture
from test_spark_contract import GOOD, make_audited, output, purchases_days, write_purchases

from seeknal_core import runner
from seeknal_core.durable import FileMutex
from seeknal_core.engines import QueryError
from seeknal_core.engines.spark import SparkEngine, release
from seeknal_core.project.audits import Audit
from seeknal_core.runner.audit import audit_completed
from seeknal_core.timeutil import from_epoch

pytestmark = spark_group
DAY = 86400
JAN = 1704067200  # 2024-01-01


def days(first: int, n: int = 1) -> list[tuple[int, int]]:
    """``n`` daily intervals from January ``first``."""
    start = JAN + (first - 1) * DAY
    return [(start + i * DAY, start + (i + 1) * DAY) for i in range(n)]


def stage(engine: SparkEngine, intervals):
    node = engine.project.nodes["events"]
    sql = engine.render_sql(node, from_epoch(intervals[0][0]), from_epoch(intervals[-1][1]))
    return engine.stage(node, sql, intervals)


def hidden(root) -> list[str]:
    """What a batch leaves inside the node's dataset besides interval directories."""
    folder = root / "target" / "data" / "events"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("seeknal_interval=")) \
        if folder.exists() else []


def readable(root) -> list[tuple]:
    """The node's rows as its readers see them (none before any interval is published)."""
    if not any((root / "target" / "data" / "events").glob("seeknal_interval=*/*.parquet")):
        return []
    return output(root, "events")


def check_staged_rows_are_invisible_until_commit(root, session) -> None:
    project, store = make_audited(root, "spark")
    store.close()
    for d in range(1, 9):
        write_purchases(root, d, GOOD)
    write_purchases(root, 2, "(1, 'view', 3), (1, 'buy', -4), (NULL, 'refund', 2)")
    engine = SparkEngine(project, session=session)
    audits = [Audit(name="not_null", kind="not_null", columns=("user_id",)),
              Audit(name="unique", kind="unique", columns=("user_id",)),
              Audit(name="accepted_range", kind="accepted_range", columns=("amount",), min=0),
              Audit(name="row_count", kind="row_count", min=4),
              Audit(name="mine", kind="sql", sql="SELECT * FROM {{ this }} WHERE ts < '{{ start }}' "
                                                 "OR event_type = 'refund'")]
    # a fresh node: the failed batch is rolled back, then its halves are staged again
    staged = stage(engine, days(1, 2))
    assert staged.rows == [3, 3] and readable(root) == []
    outcomes = staged.check(audits)
    assert [n for n, _ in outcomes] == [1, 2, 1, 2, 1]
    assert outcomes[0][1][0]["user_id"] is None and "_seeknal_interval" not in outcomes[0][1][0]
    assert sorted(s["amount"] for s in outcomes[1][1]) == [-4, 3]  # unique within each day only
    assert [s["rows"] for s in outcomes[3][1]] == [3, 3]
    assert outcomes[4][1][0]["event_type"] == "refund"
    staged.rollback()
    assert hidden(root) == [] and readable(root) == []
    first = stage(engine, days(1))
    assert first.check(audits[:3]) == [(0, ()), (0, ()), (0, ())]
    first.commit()
    assert purchases_days(root) == ["2024-01-01"] and hidden(root) == []
    # a writer killed inside its commit, having set day 1 aside: the next stage puts it back
    # and clears the dead staging, but never a live writer's (its lock is held)
    folder = root / "target" / "data" / "events"
    dead = folder / ".spark-staging-seeknal-dead"
    (dead / "seeknal_interval=20240102T000000Z").mkdir(parents=True)
    (folder / ".spark-staging-seeknal-dead-replaced").mkdir()
    day1 = next(folder.glob("seeknal_interval=*"))
    day1.rename(folder / ".spark-staging-seeknal-dead-replaced" / day1.name)
    (folder / ".spark-staging-seeknal-dead.lock").touch()
    live = FileMutex(folder / ".spark-staging-seeknal-live.lock", timeout=0)
    live.acquire()
    # a restated day: its old rows stay readable while the new ones are staged and audited
    write_purchases(root, 1, "(5, 'buy', 1)")
    again = stage(engine, days(1))
    assert again.rows == [1] and len(readable(root)) == 3
    assert engine.relation("events").count() == 3
    again.commit()
    assert hidden(root) == [".spark-staging-seeknal-live.lock"]
    release(live)
    assert [r[1:] for r in readable(root)] == [("5", "buy", "1")]
    # a re-run that yields no rows removes the interval's directory on commit
    write_purchases(root, 1, "")
    empty = stage(engine, days(1))
    assert empty.rows == [0] and empty.check(audits[:2] + audits[3:4])[2][0] == 1
    empty.commit()
    assert readable(root) == [] and hidden(root) == []


def test_staged_rows_are_invisible_until_commit(tmp_path, spark):  # noqa: F811
    check_staged_rows_are_invisible_until_commit(tmp_path, spark)


def test_a_failing_custom_audit_names_itself_and_leaves_the_staging_open(tmp_path, spark):  # noqa: F811
    project, store = make_audited(tmp_path, "spark")
    store.close()
    engine = SparkEngine(project, session=spark)
    staged = stage(engine, days(1))
    bad = Audit(name="typo", kind="sql", sql="SELECT * FROM {{ this }} WHERE amout > 1")
    fine = Audit(name="not_null", kind="not_null", columns=("user_id",))
    with pytest.raises(QueryError) as err:
        staged.check([fine, bad])
    assert str(err.value).startswith("audit 'typo': ") and "amout" in str(err.value)
    assert staged.check([fine]) == [(0, ())]  # still open: the runner decides
    staged.rollback()
    assert hidden(tmp_path) == [] and readable(tmp_path) == []


def test_a_coalesced_batch_isolates_its_bad_day_and_narrows_a_warning(tmp_path, spark):  # noqa: F811
    """Four days in one batch on a fresh node: day 3 fails ``unique`` (the batch and its
    half are rolled back, the good days re-staged and committed), day 2's warning is
    narrowed to day 2 by ``audit_intervals`` over the committed directories."""
    project, store = make_audited(tmp_path, "spark")
    for d in range(1, 9):
        write_purchases(tmp_path, d, GOOD)
    write_purchases(tmp_path, 2, GOOD + ", (4, 'buy', 600)")
    write_purchases(tmp_path, 3, "(7, 'buy', 10), (7, 'view', 20)")
    result = runner.run(project, store, now="2024-01-05", batch_size=4)
    node = result.nodes[0]
    assert [p for p, _ in node.failures] == days(3)
    assert "audit unique failed: 2 rows" in node.failures[0][1]
    assert sorted(node.done) == days(1, 2) + days(4)
    assert [(w.audit, w.interval, w.rows) for w in node.warnings] == [("small_amounts", days(2)[0], 1)]
    assert purchases_days(tmp_path) == ["2024-01-01", "2024-01-02", "2024-01-04"]
    assert hidden(tmp_path) == []
    # `seeknal audit` over the completed days (two runs: day 3 is missing) finds the warning
    report, = audit_completed(project, store)
    assert report.runs == [(JAN, JAN + 2 * DAY), days(4)[0]]
    assert [(f.interval, f.audit.name, f.rows) for f in report.failures] == [(days(2)[0], "small_amounts", 1)]
    assert not report.blocking_failed
    store.close()


def test_audit_intervals_checks_published_days_one_query_per_audit(tmp_path, spark):  # noqa: F811
    project, store = make_audited(tmp_path, "spark")
    store.close()
    for d in range(1, 5):
        write_purchases(tmp_path, d, GOOD)
    write_purchases(tmp_path, 2, "(1, 'view', -3), (1, 'buy', 4)")
    write_purchases(tmp_path, 3, "")
    engine = SparkEngine(project, session=spark)
    node = project.nodes["events"]
    engine.write_intervals(node, None, days(1, 4))
    audits = [Audit(name="accepted_range", kind="accepted_range", columns=("amount",), min=0),
              Audit(name="unique", kind="unique", columns=("user_id",)),
              Audit(name="row_count", kind="row_count", min=1),
              Audit(name="keeps_rows", kind="sql", sql="SELECT * FROM {{ this }} WHERE amount > 50"),
              Audit(name="drops_them", kind="sql",
                    sql="SELECT count(*) AS n FROM {{ this }} HAVING count(*) < 3")]
    found = engine.audit_intervals(node, audits, days(1, 4))
    d1, d2, d3, d4 = days(1, 4)
    assert {p: n for p, (n, _) in found[0].items()} == {d2: 1}
    assert found[0][d2][1][0]["amount"] == -3 and "_seeknal_interval" not in found[0][d2][1][0]
    assert {p: n for p, (n, _) in found[1].items()} == {d2: 2}
    assert found[2] == {d3: (1, ({"interval": "2024-01-03T00:00:00+00:00", "rows": 0},))}
    assert {p: n for p, (n, _) in found[3].items()} == {d1: 1, d4: 1}
    # a query that drops the rows' interval runs per interval, an empty one included
    assert {p: s for p, (_, s) in found[4].items()} == {d2: ({"n": 2},), d3: ({"n": 0},)}

