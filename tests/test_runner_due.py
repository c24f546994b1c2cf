"""The planner's runs (``runner.due``) against the per-interval model they replace, and a plan
over 1,087,038 hourly intervals in memory proportional to its runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import HOURLY, make_project

from seeknal_core import grid
from seeknal_core.intervals import IntervalSet
from seeknal_core.runner import Reason
from seeknal_core.runner.due import Due
from seeknal_core.schedule import Schedule

JAN1 = 1704067200  # 2024-01-01T00:00:00Z
#: a fixed period, a daily grid with DST days (no fixed period) and a weekday-only cron
SCHEDULES = [Schedule("@daily"), Schedule("@daily", "America/New_York"), Schedule("0 9 * * 1-5")]
TICKS = {id(s): s.ticks(JAN1 - 86_400 * 8, JAN1 + 86_400 * 80) for s in SCHEDULES}

schedules = st.sampled_from(SCHEDULES)
reasons = st.sampled_from(list(Reason))


def per_interval(schedule: Schedule, wanted: list[tuple[int, int, Reason]]) -> dict:
    """The planner before runs: one dict entry per interval, a stronger reason replacing a weaker."""
    due: dict = {}
    for a, b, reason in wanted:
        ticks = schedule.ticks(a, b)
        for pair in zip(ticks, ticks[1:]):
            if pair not in due or outranks(reason, due[pair]):
                due[pair] = reason
    return due


def outranks(reason: Reason, other: Reason) -> bool:
    """``Reason`` is declared weakest first: a later (or the same) one replaces an earlier."""
    order = list(Reason)
    return order.index(reason) >= order.index(other)


def uncovered_listed(ticks: list[int], done: IntervalSet) -> list[tuple[int, int]]:
    """The grid listed interval by interval: those no member covers whole, fused into runs."""
    out: list[tuple[int, int]] = []
    for a, b in zip(ticks, ticks[1:]):
        if done.covers(a, b):
            continue
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


@st.composite
def contributions(draw):
    schedule = draw(schedules)
    ticks = TICKS[id(schedule)]
    wanted = []
    for _ in range(draw(st.integers(0, 8))):
        i = draw(st.integers(0, len(ticks) - 2))
        j = draw(st.integers(i + 1, min(i + 20, len(ticks) - 1)))
        wanted.append((ticks[i], ticks[j], draw(reasons)))
    return schedule, wanted


@settings(max_examples=300, deadline=None)
@given(contributions(), st.sampled_from([None, 1, 2, 5]))
def test_runs_read_like_the_per_interval_plan(case, batch_size):
    schedule, wanted = case
    expected = per_interval(schedule, wanted)
    due = Due.merged(schedule, wanted)
    assert due == expected and len(due) == len(expected) and bool(due) == bool(expected)
    assert sorted(due) == list(due) == sorted(expected)
    assert dict(due.items()) == expected and sorted(due.values()) == sorted(expected.values())
    for pair, reason in expected.items():
        assert due[pair] == reason and pair in due
        assert due.reasons_within(*pair) == {reason}
    for (_, b, r1, _), (c, _, r2, _) in zip(due.runs, due.runs[1:]):
        assert b <= c and not (b == c and r1 == r2)  # disjoint, sorted, touching ones of a reason fused
    assert [run.count for run in due.runs] == [grid.count(schedule, a, b) for a, b, _, _ in due.runs]
    pairs = sorted(expected)
    old_batches = [[p] for p in pairs if expected[p] == Reason.RETRY] + list(grid.batches(
        [p for p in pairs if expected[p] != Reason.RETRY], batch_size))
    assert list(due.batches(batch_size)) == old_batches
    assert due.batch_count(batch_size) == len(old_batches)
    assert due.reason_counts() == {r: list(expected.values()).count(r) for r in set(expected.values())}


def test_only_grid_intervals_of_a_run_are_keys():
    daily = Schedule("@daily")
    due = Due.merged(daily, [(JAN1, JAN1 + 3 * 86_400, Reason.NEW)])
    assert (JAN1, JAN1 + 86_400) in due and (JAN1 + 86_400, JAN1 + 2 * 86_400) in due
    for pair in [(JAN1, JAN1 + 2 * 86_400), (JAN1 + 3600, JAN1 + 86_400 + 3600),
                 (JAN1 + 3 * 86_400, JAN1 + 4 * 86_400), (JAN1 - 86_400, JAN1)]:
        assert pair not in due and due.get(pair) is None
    assert Due.from_mapping(daily, {(JAN1, JAN1 + 86_400): "retry"}).runs == [
        (JAN1, JAN1 + 86_400, Reason.RETRY, 1)]
    assert list(grid.expand(Schedule("0 9 * * 1-5"), JAN1 + 9 * 3600, JAN1 + 4 * 86_400 + 9 * 3600)) == [
        (JAN1 + 9 * 3600 + k * 86_400, JAN1 + 9 * 3600 + (k + 1) * 86_400) for k in range(4)]  # Mon-Fri


@st.composite
def done_sets(draw):
    schedule = draw(schedules)
    ticks = TICKS[id(schedule)]
    members = []
    for _ in range(draw(st.integers(0, 10))):
        i = draw(st.integers(0, len(ticks) - 2))
        j = draw(st.integers(i + 1, min(i + 15, len(ticks) - 1)))
        # on the ticks, or a microsecond to half an hour off them (a start after its tick and
        # an end before its tick leave that interval uncovered)
        s = ticks[i] * 1_000_000 + draw(st.sampled_from([0, 1, -1, 1_800_000_000]))
        e = ticks[j] * 1_000_000 - draw(st.sampled_from([0, 1, -1, 1_800_000_000]))
        if s < e:
            members.append((s, e))
    lo = draw(st.integers(0, len(ticks) - 2))
    hi = draw(st.integers(lo, len(ticks) - 1))
    done = IntervalSet.from_micros([s for s, _ in members], [e for _, e in members])
    return schedule, done, ticks[lo], ticks[hi]


@settings(max_examples=300, deadline=None)
@given(done_sets())
def test_uncovered_runs_follow_the_gaps_like_the_listed_grid(case):
    schedule, done, lo, hi = case
    ticks = schedule.ticks(lo, hi)
    listed = uncovered_listed(ticks, done)
    assert grid.uncovered(schedule, done.micros(), lo, hi) == listed
    assert grid.uncovered(schedule, done.micros(), lo, hi, ticks) == listed  # placed by bisection
    assert grid.fuse(listed) == listed
    assert sum(grid.count(schedule, a, b) for a, b in listed) == sum(
        len(list(grid.expand(schedule, a, b))) for a, b in listed)


def test_a_century_of_hourly_intervals_plans_in_memory_proportional_to_its_runs(tmp_path):
    """1,087,038 hourly intervals since 1900, with a lookback, a failed hour and a pending
    restatement, planned under an address-space limit of what the process already maps plus
    64 MiB: a dict per interval (the planner before runs) needs about 200 MiB and fails here."""
    root = make_project(tmp_path, HOURLY.replace("  time_column: hour\n", "  time_column: hour\n  lookback: 2\n"))
    (root / "seeknal_project.yml").write_text("name: t\nstart: 1900-01-01\n")
    script = textwrap.dedent("""
        import json, os, resource, sys
        from seeknal_core import runner
        from seeknal_core.project import load_project
        from seeknal_core.state import open_store
        project = load_project(sys.argv[1])
        store = open_store(project.root, project.state_config)
        store.mark_complete("hourly", [("1900-01-01", "1950-01-01T05:00")])
        store.mark_failed("hourly", [("1960-06-01T03:00", "1960-06-01T04:00")], "boom")
        store.restate({"hourly": [("1901-01-01", "1901-01-02")]}, "bad day")
        store.load()
        mapped = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + 64 * 2**20, resource.RLIM_INFINITY))
        plan = runner.plan(project, store.load(), now="2024-01-04T06:00:00Z")
        node = plan.nodes[0]
        print(json.dumps({"total": plan.total_intervals, "batches": node.batch_count(),
                          "doc": plan.to_dict(project)}))
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    runs = [(r["start"][:16], r["end"][:16], r["count"], r["reason"]) for r in data["doc"]["nodes"][0]["runs"]]
    assert runs == [
        ("1901-01-01T00:00", "1901-01-02T00:00", 24, "restate"),
        ("1950-01-01T03:00", "1950-01-01T05:00", 2, "lookback"),
        ("1950-01-01T05:00", "1960-06-01T03:00", 91_294, "new"),
        ("1960-06-01T03:00", "1960-06-01T04:00", 1, "retry"),
        ("1960-06-01T04:00", "2024-01-04T06:00", 557_450, "new"),  # .. now, hourly
    ]
    assert data["total"] == 24 + 2 + 91_294 + 1 + 557_450
    # the retry alone, then the restated day, the lookback with what follows it, the rest
    assert data["batches"] == data["doc"]["nodes"][0]["batches"] == 1 + 3
