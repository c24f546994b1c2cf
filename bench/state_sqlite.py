"""Would stdlib sqlite3 in WAL mode replace the JSON store's hand-made journal?  Measured
side by side in one run (the decision and the numbers are in docs/architecture.md).

* Durable mutation: ``JsonStateStore.mark_complete`` (lock, atomic file replace with
  fsyncs, audit line) against the same change in SQLite (WAL, one transaction: read the
  node's row, write it back, insert an audit row, bump the revision), with
  ``synchronous=FULL`` (durable at commit, as ours) and ``NORMAL`` (WAL's usual setting:
  a power loss may drop the last commits).  Rounds alternate, medians reported.
* Load: a new process's view of 3,000 nodes: ``JsonStateStore(path).load()`` against
  ``SELECT`` of every row plus parsing each node's intervals.
* Crash safety: a child process mutating in a loop is SIGKILLed at a random moment,
  ``KILLS`` times per store; afterwards the state must open, and its revision must equal
  the number of audit records (nothing torn, nothing lost between state and log).

Run: `.venv/bin/python bench/state_sqlite.py` (about a minute; not a test).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seeknal_core import IntervalSet  # noqa: E402
from seeknal_core.state import JsonStateStore  # noqa: E402

T0 = 1_420_070_400  # 2015-01-01
HOUR = 3600
KILLS = 12


def sqlite_open(path: Path, synchronous: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={synchronous}")
    con.execute("CREATE TABLE IF NOT EXISTS store (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER)")
    con.execute("INSERT OR IGNORE INTO store VALUES (1, 0)")
    con.execute("CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, completed TEXT, revision INTEGER)")
    con.execute("CREATE TABLE IF NOT EXISTS audit (revision INTEGER, node TEXT, record TEXT)")
    return con


def sqlite_complete(con: sqlite3.Connection, node: str, start: int, end: int) -> int:
    """The same change as ``mark_complete``: merge the interval into the node's set."""
    con.execute("BEGIN IMMEDIATE")
    revision = con.execute("SELECT revision FROM store").fetchone()[0] + 1
    row = con.execute("SELECT completed FROM nodes WHERE name = ?", [node]).fetchone()
    done = IntervalSet.from_pairs(json.loads(row[0]) if row else [])
    done = done.union(IntervalSet.from_pairs([(start, end)]))
    con.execute("INSERT OR REPLACE INTO nodes VALUES (?, ?, ?)",
                [node, json.dumps(done.pairs()), revision])
    con.execute("INSERT INTO audit VALUES (?, ?, ?)",
                [revision, node, json.dumps({"event": "complete", "intervals": [[start, end]]})])
    con.execute("UPDATE store SET revision = ?", [revision])
    con.execute("COMMIT")
    return revision


def mutations(root: Path, n: int = 2_000, rounds: int = 20) -> dict[str, float]:
    ours = JsonStateStore(root / "json" / "run_state.json")
    full = sqlite_open(root / "full.db", "FULL")
    normal = sqlite_open(root / "normal.db", "NORMAL")
    samples: dict[str, list[float]] = {"json": [], "full": [], "normal": []}
    per = n // rounds
    for r in range(rounds):
        hours = range(r * per, (r + 1) * per)
        for key, fn in (
            ("json", lambda h: ours.mark_complete("orders", IntervalSet.from_pairs(
                [(T0 + h * HOUR, T0 + (h + 1) * HOUR)]))),
            ("full", lambda h: sqlite_complete(full, "orders", T0 + h * HOUR, T0 + (h + 1) * HOUR)),
            ("normal", lambda h: sqlite_complete(normal, "orders", T0 + h * HOUR, T0 + (h + 1) * HOUR)),
        ):
            t0 = time.perf_counter()
            for h in hours:
                fn(h)
            samples[key].append((time.perf_counter() - t0) / per)
    return {k: statistics.median(v) for k, v in samples.items()}


def loads(root: Path, nodes: int = 3_000) -> dict[str, float]:
    path = root / "load" / "run_state.json"
    store = JsonStateStore(path, durable=False)
    pairs = {f"node_{i:04d}": [(T0 + 2 * k * HOUR, T0 + (2 * k + 1) * HOUR) for k in range(50)]
             for i in range(nodes)}
    store.mark_complete_many({k: IntervalSet.from_pairs(v) for k, v in pairs.items()})
    con = sqlite_open(root / "load.db", "FULL")
    con.execute("BEGIN")
    con.executemany("INSERT INTO nodes VALUES (?, ?, 1)", [(k, json.dumps(v)) for k, v in pairs.items()])
    con.execute("COMMIT")
    con.close()
    best = {"json": float("inf"), "sqlite": float("inf")}
    for _ in range(5):
        t0 = time.perf_counter()
        state = JsonStateStore(path).load()
        best["json"] = min(best["json"], time.perf_counter() - t0)
        assert len(state) == nodes
        t0 = time.perf_counter()
        con = sqlite3.connect(root / "load.db")
        rows = {name: IntervalSet.from_pairs(json.loads(text))
                for name, text in con.execute("SELECT name, completed FROM nodes")}
        con.close()
        best["sqlite"] = min(best["sqlite"], time.perf_counter() - t0)
        assert len(rows) == nodes
    return best


CHILD = """
import sys, sqlite3
sys.path.insert(0, {repo!r})
from seeknal_core import IntervalSet
from seeknal_core.state import JsonStateStore
sys.path.insert(0, {bench!r})
from state_sqlite import sqlite_complete, sqlite_open, T0, HOUR
kind, path = sys.argv[1], sys.argv[2]
store = JsonStateStore(path) if kind == "json" else sqlite_open(path, "FULL")
print("ready", flush=True)
h = 0
while True:
    h += 1
    if kind == "json":
        store.mark_complete("n%d" % (h % 7), IntervalSet.from_pairs([(T0 + h * HOUR, T0 + h * HOUR + 60)]))
    else:
        sqlite_complete(store, "n%d" % (h % 7), T0 + h * HOUR, T0 + h * HOUR + 60)
"""


def crashes(root: Path) -> dict[str, str]:
    repo, bench = str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)
    rng = random.Random(3)
    out = {}
    for kind, path in (("json", root / "crash" / "run_state.json"), ("sqlite", root / "crash.db")):
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(KILLS):
            child = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=repo, bench=bench), kind, str(path)],
                                     stdout=subprocess.PIPE, text=True)
            assert child.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 0.4))
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        if kind == "json":
            store = JsonStateStore(path)
            records = len(store.export()["audit"])
            revision = store.revision
        else:
            con = sqlite3.connect(path)
            records = con.execute("SELECT count(*) FROM audit").fetchone()[0]
            revision = con.execute("SELECT revision FROM store").fetchone()[0]
        ok = "consistent" if records == revision else "INCONSISTENT"
        out[kind] = f"{KILLS} SIGKILLs, {revision} revisions, {records} audit records: {ok}"
    return out


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="seeknal-bench-sqlite-"))
    m = mutations(root)
    load = loads(root)
    crash = crashes(root)
    print(f"durable mutation: JsonStateStore {m['json'] * 1e3:.3f} ms, sqlite WAL synchronous=FULL "
          f"{m['full'] * 1e3:.3f} ms (ours / sqlite {m['json'] / m['full']:.2f}x), "
          f"synchronous=NORMAL {m['normal'] * 1e3:.3f} ms ({m['json'] / m['normal']:.2f}x; not durable)")
    print(f"load 3,000 nodes in a new store: JsonStateStore {load['json'] * 1e3:.1f} ms, sqlite "
          f"{load['sqlite'] * 1e3:.1f} ms (ours / sqlite {load['json'] / load['sqlite']:.2f}x)")
    for kind, text in crash.items():
        print(f"crash safety, {kind}: {text}")


if __name__ == "__main__":
    main()
