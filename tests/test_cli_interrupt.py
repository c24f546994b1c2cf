"""Ctrl-C during `seeknal run`, in a real subprocess, while DuckDB runs a long query.

The node's second interval is a query of 10^12 rows (hours): the run must stop at once
with `Error: aborted` and exit 130 (SIGTERM: `Error: terminated (SIGTERM)`, exit 143), roll the batch back and record nothing for it, also
when the process was started with SIGINT ignored (a background job in a script).  Without
the CLI's interrupt handling this test would wait for the query (and time out).
"""

from __future__ import annotations

import os
import signal
import subprocess

import duckdb
import pytest
from test_cli import SEEKNAL, make_project

from seeknal_core.project import load_project
from seeknal_core.state import open_store

#: the first interval is instant; from the second on the query is a 10^12-row cross join
SLOW = """\
slow:
  schedule: "@daily"
  time_column: day
  batch_size: 1
  sql: |
    SELECT CAST(event_time AS DATE) AS day, count(*) AS n FROM raw_events
    WHERE event_time >= '{{ start }}' AND event_time < '{{ end }}'
      AND (SELECT count(*) FROM range(CASE WHEN DATE '{{ start }}' >= DATE '2024-01-02'
           THEN 1000000 ELSE 1 END) AS a, range(CASE WHEN DATE '{{ start }}' >= DATE '2024-01-02'
           THEN 1000000 ELSE 1 END) AS b) > 0
    GROUP BY ALL
"""


@pytest.mark.parametrize(("sigint_ignored", "signum", "code", "message"), [
    (False, signal.SIGINT, 130, "Error: aborted\n"),
    (True, signal.SIGINT, 130, "Error: aborted\n"),
    (False, signal.SIGTERM, 143, "Error: terminated (SIGTERM)\n"),  # a scheduler stopping the job
], ids=["ctrl-c", "started-with-sigint-ignored", "sigterm"])
def test_ctrl_c_during_a_query_aborts_cleanly(tmp_path, sigint_ignored, signum, code, message):
    root = make_project(tmp_path, SLOW)
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["SEEKNAL_NOW"] = "2024-01-04T06:00:00Z"
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    proc = subprocess.Popen([SEEKNAL, "run"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=ignore)
    seen = []
    for line in proc.stdout:  # progress, not a clock: batch 1 is done, batch 2's query starts
        seen.append(line)
        if "2024-01-01 to 2024-01-02  ✓" in line:
            break
    else:
        pytest.fail(f"the run ended before its second batch: {''.join(seen)}{proc.stderr.read()}")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, (out, err)
    assert err == message
    project = load_project(root)
    state = open_store(project.root, project.state_config).load()["slow"]
    assert [(a.date().isoformat(), b.date().isoformat()) for a, b in state.completed] == [
        ("2024-01-01", "2024-01-02")]
    with duckdb.connect(str(project.database_path), read_only=True) as con:
        days = con.execute("SELECT CAST(day AS VARCHAR) FROM slow ORDER BY day").fetchall()
    assert days == [("2024-01-01",)]  # the interrupted batch left no rows
