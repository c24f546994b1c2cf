"""`seeknal plan` over a generated project of 1,000 daily nodes (100 chains of 10, each
reading the one before; a year completed, definitions recorded), 10 of them changed (a
column of each chain's head: 10 x 9 readers follow), side by side with `seeknal intervals
pending` on the same project.  Both are whole processes, best of 3; wall and CPU time.

Run: .venv/bin/python bench/plan.py [--nodes 1000] [--changed 10]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEEKNAL = str(Path(sys.executable).with_name("seeknal"))
NOW = "2024-01-01T00:00:00Z"
CHAIN = 10
HEAD = """\
n{i}:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT CAST(event_time AS DATE) AS day, user_id, sum(v) AS amount, count(*) AS n
    FROM raw_events WHERE event_time >= '{{{{ start }}}}' AND event_time < '{{{{ end }}}}' GROUP BY ALL
"""
LINK = """\
n{i}:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT day, user_id, amount * 2 AS amount, n FROM {{{{ ref('n{up}') }}}}
    WHERE day >= '{{{{ start }}}}' AND day < '{{{{ end }}}}' AND n > 0
"""


def make_project(root: Path, nodes: int) -> None:
    (root / "seeknal" / "sources").mkdir(parents=True)
    (root / "seeknal" / "transforms").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "raw_events.csv").write_text("event_time,user_id,v\n2023-01-01 00:00:00,1,1\n")
    (root / "seeknal_project.yml").write_text("name: bench\nstart: 2023-01-01\n")
    (root / "seeknal" / "sources" / "raw_events.yml").write_text("raw_events:\n  path: data/raw_events.csv\n")
    chains = max(nodes // CHAIN, 1)
    for i in range(nodes):
        text = HEAD.format(i=i) if i < chains else LINK.format(i=i, up=i - chains)
        (root / "seeknal" / "transforms" / f"n{i}.yml").write_text(text)


def record_history(root: Path) -> None:
    """A year completed under the current definitions (what runs would have recorded)."""
    from seeknal_core.project import load_project
    from seeknal_core.state import open_store

    project = load_project(root)
    store = open_store(project.root, project.state_config)
    for node in project.nodes.values():
        store.mark_complete(node.name, [("2023-01-01", "2024-01-01")], fingerprint=node.fingerprint,
                            definition=node.definition)
    store.close()


def change_heads(root: Path, count: int) -> None:
    for i in range(count):
        path = root / "seeknal" / "transforms" / f"n{i}.yml"
        path.write_text(path.read_text().replace("sum(v) AS amount", "sum(v) + 1 AS amount"))


def timed(args: list[str], repeat: int = 3) -> tuple[float, float]:
    """(wall, CPU) seconds of the best of ``repeat`` runs.  CPU (user + system of the child)
    is what the process itself costs when other work shares the machine's cores."""
    env = {**os.environ, "SEEKNAL_NOW": NOW}
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, (wall, cpu))
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--changed", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="seeknal-plan-bench-"))
    try:
        make_project(root, args.nodes)
        record_history(root)
        change_heads(root, args.changed)
        p = ["--project-path", str(root)]
        check = subprocess.run([SEEKNAL, "plan", *p], env={**os.environ, "SEEKNAL_NOW": NOW},
                               capture_output=True, text=True)
        print(check.stdout.strip().splitlines()[-2])  # the Total: line
        plan = timed([SEEKNAL, "plan", *p])
        plan_json = timed([SEEKNAL, "plan", "--json", *p])
        pending = timed([SEEKNAL, "intervals", "pending", *p])
        print(f"{args.nodes} nodes, {args.changed} changed; whole processes, best of 3")
        print(f"{'command':28} {'wall s':>8} {'cpu s':>8} {'vs pending':>11} {'target':>9}")
        for label, (wall, cpu) in (("seeknal plan", plan), ("seeknal plan --json", plan_json),
                                   ("seeknal intervals pending", pending)):
            target = "<= 2 s" if label.startswith("seeknal plan") else ""
            verdict = ("ok" if wall <= 2.0 else "MISSED") if target else ""
            print(f"{label:28} {wall:8.3f} {cpu:8.3f} {wall / pending[0]:10.2f}x {target:>9} {verdict}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
