"""A scheduled node without ``start:``: the first ``seeknal run`` infers it from its sources'
earliest time (real DuckDB, the CLI in a subprocess), records it, and later runs reuse it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_cli import make_project, seeknal


def _without_start(root: Path, earliest: str = "2024-01-02 05") -> Path:
    """The test_cli project with no `start:`, its events starting at ``earliest`` (an hour)."""
    make_project(root)
    (root / "seeknal_project.yml").write_text("name: t\n")
    csv = root / "data" / "raw_events.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], *(x for x in lines[1:] if x[:13] >= earliest)]) + "\n")
    return root


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _state(root: Path) -> dict:
    return json.loads((root / "target" / "run_state.json").read_text())["nodes"]["events_flow"]


def test_first_run_infers_the_start_records_it_and_the_next_run_reuses_it(tmp_path):
    root = _without_start(tmp_path / "p")
    first = _ok(seeknal("run", "--project-path", str(root), now="2024-01-05T06:00:00Z"))
    assert first.splitlines()[0] == "events_flow: Processing 3 new intervals (2024-01-02 to 2024-01-05)"
    assert "start inferred from raw_events.event_time: 2024-01-02" in first
    assert _state(root)["inferred_start"] == "2024-01-02T05:00:00Z"
    assert _state(root)["completed_intervals"] == [["2024-01-02T00:00:00Z", "2024-01-05T00:00:00Z"]]

    # the recorded start is used, no query: dropping the early rows changes nothing, and no note
    csv = root / "data" / "raw_events.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], *(x for x in lines[1:] if x[:10] >= "2024-01-04")]) + "\n")
    (root / "target" / "run_state.json").write_text(json.dumps({"nodes": {"events_flow": {
        "completed_intervals": [], "inferred_start": "2024-01-02T05:00:00Z"}}}))
    for log in (root / "target").glob("*.jsonl"):
        log.unlink()
    second = _ok(seeknal("run", "--project-path", str(root), now="2024-01-05T06:00:00Z"))
    assert second.splitlines()[0] == "events_flow: Processing 3 new intervals (2024-01-02 to 2024-01-05)"
    assert "inferred" not in second


def test_pending_names_the_source_until_the_first_run_then_uses_the_recorded_start(tmp_path):
    root = _without_start(tmp_path / "p")
    before = _ok(seeknal("intervals", "pending", cwd=root, now="2024-01-05T06:00:00Z"))
    assert "start unknown until the first `seeknal run` infers it from raw_events" in before
    dry = _ok(seeknal("run", "--dry-run", cwd=root, now="2024-01-05T06:00:00Z"))
    assert "start inferred from raw_events.event_time: 2024-01-02" in dry
    assert not (root / "target" / "run_state.json").exists()  # a dry run records nothing
    _ok(seeknal("run", cwd=root, now="2024-01-05T06:00:00Z"))
    after = _ok(seeknal("intervals", "pending", "--start", "2024-01-01", cwd=root, now="2024-01-06T06:00:00Z"))
    assert after.splitlines()[0] == "Pending intervals (1):"
    assert "unknown" not in after
    # pending asks a watermark source for its newest row (readiness); with `ready: always`
    # it reads the state store only and never imports duckdb
    source = next((root / "seeknal" / "sources").glob("*.yml"))
    source.write_text(source.read_text().rstrip("\n") + "\n  ready: always\n")
    out = subprocess.run([sys.executable, "-c", "import sys; from seeknal_core.cli import cli; "
                          "cli(['intervals', 'pending', '--project-path', sys.argv[1]], standalone_mode=False);"
                          "print('duckdb' in sys.modules)", str(root)],
                         capture_output=True, text=True, env={"SEEKNAL_NOW": "2024-01-06T06:00:00Z"})
    assert out.stdout.splitlines()[-1] == "False", out.stdout + out.stderr


def test_an_explicit_start_overrides_inference(tmp_path):
    root = _without_start(tmp_path / "p")
    (root / "seeknal_project.yml").write_text("name: t\nstart: 2024-01-03\n")
    first = _ok(seeknal("run", cwd=root, now="2024-01-05T06:00:00Z"))
    assert first.splitlines()[0] == "events_flow: Processing 2 new intervals (2024-01-03 to 2024-01-05)"
    assert "inferred" not in first
    assert "inferred_start" not in _state(root)


def test_earliest_reads_naive_times_in_the_project_zone_and_timestamptz_as_instants(tmp_path):
    from seeknal_core.engines import open_engine
    from seeknal_core.project import load_project

    root = _without_start(tmp_path / "p")
    (root / "seeknal_project.yml").write_text("name: t\ntimezone: Asia/Jakarta\n")
    (root / "data" / "tz.csv").write_text("event_time,v\n2024-01-01 23:30:00+00,1\n2024-01-03 00:00:00+00,2\n")
    (root / "seeknal" / "sources" / "tz.yml").write_text("tz:\n  path: data/tz.csv\n  time_column: event_time\n")
    project = load_project(root)
    engine = open_engine("duckdb", project)
    try:
        naive = engine.earliest(project.sources["raw_events"], "event_time")
        aware = engine.earliest(project.sources["tz"], "event_time")
        in_utc = engine.earliest(project.sources["raw_events"], "event_time", "UTC")
        aware_in_utc = engine.earliest(project.sources["tz"], "event_time", "UTC")
    finally:
        engine.close()
    assert naive == 1704146400  # 2024-01-02 05:00 in Jakarta (UTC+7) = 2024-01-01T22:00Z
    assert aware == aware_in_utc == 1704151800  # 2024-01-01T23:30Z in any zone
    assert in_utc == 1704171600  # a node's own zone: 2024-01-02 05:00 UTC


def test_set_inferred_start_is_recorded_on_both_backends(store_factory):
    import datetime as dt

    import pytest

    store = store_factory()
    assert store.node("n").inferred_start is None
    before = store.revision
    after = store.set_inferred_start("n", 1704171600)
    assert after > before
    expected = dt.datetime(2024, 1, 2, 5, tzinfo=dt.UTC)
    assert store.node("n").inferred_start == expected
    assert store_factory().load()["n"].inferred_start == expected  # another instance reads it
    store.mark_complete("n", [("2024-01-02", "2024-01-03")])
    assert store.node("n").inferred_start == expected  # completing keeps it
    assert [c.kind for c in store.changes_since(before)][0] == "inferred_start"
    for bad in ("2024-01-02", 1.5, True):
        with pytest.raises(ValueError, match="epoch seconds"):
            store.set_inferred_start("n", bad)


def test_a_table_not_declared_as_a_source_infers_from_the_nodes_own_time_filter(tmp_path):
    """Issue 21 item 5: `FROM raw_events WHERE event_time >= '{{ start }}'` with raw_events a
    table in the project database and no source file: the start comes from that table and
    column, as for a declared source (it used to be "nothing to do", exit 0)."""
    import duckdb

    root = _without_start(tmp_path / "p")
    (root / "seeknal" / "sources" / "raw_events.yml").unlink()
    (root / "target").mkdir()
    con = duckdb.connect(str(root / "target" / "warehouse.duckdb"))
    con.execute(f"CREATE TABLE raw_events AS SELECT * FROM read_csv_auto('{root / 'data' / 'raw_events.csv'}')")
    con.close()
    dry = _ok(seeknal("run", "--dry-run", cwd=root, now="2024-01-05T06:00:00Z"))
    assert "start inferred from raw_events.event_time: 2024-01-02" in dry
    first = _ok(seeknal("run", cwd=root, now="2024-01-05T06:00:00Z"))
    assert first.splitlines()[0] == "events_flow: Processing 3 new intervals (2024-01-02 to 2024-01-05)"
    assert _state(root)["inferred_start"] == "2024-01-02T05:00:00Z"
    assert _state(root)["completed_intervals"] == [["2024-01-02T00:00:00Z", "2024-01-05T00:00:00Z"]]
