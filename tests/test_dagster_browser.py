"""The UI tells the truth per partition, read in a real browser: ``dagster dev`` on
loopback, the asset's Partitions page in headless Chromium (selenium + Debian's
``chromium``/``chromium-driver``, installed here with apt-get when missing, as
tests/pg_server.py installs PostgreSQL), and what it shows compared with seeknal's state
and DuckDB.  The node's ``end:`` bounds its partitions, so the page lists exactly a week.

One test, and slow by nature (a webserver and a browser): waits follow progress (the
page's text changing), never a fixed deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster_harness import STALL_SECONDS, Progress, dagster_dev, group_alive, listening, write_code_location
from filelock import FileLock
from test_dagster_assets import make_project, materialize, query, store_of, t

from seeknal_core.intervals import IntervalSet
from seeknal_core.project import load_project
from seeknal_dagster import build_definitions
from seeknal_dagster.partitions import keys_for_intervals, partitions_def_for

webdriver = pytest.importorskip("selenium.webdriver")

NODES = """
daily_counts:
  schedule: "@daily"
  end: 2024-01-08
  sql: |
    SELECT CAST(date_trunc('day', ts) AS TIMESTAMP) AS day, v % (1 + day(ts)) AS bucket, count(*) AS n
    FROM raw WHERE ts >= TIMESTAMP '{{ start }}' AND ts < TIMESTAMP '{{ end }}'
    GROUP BY ALL
  time_column: day
"""
LOCATION = "seeknal_ui"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL_LOCK = Path(tempfile.gettempdir()) / "seeknal-chromium-install.lock"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def ensure_chromium() -> None:
    """Debian's chromium and chromium-driver, installed once per machine (a file lock) if missing."""
    if Path(CHROMIUM).exists() and Path(DRIVER).exists():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail("chromium is not installed: run `sudo apt-get install -y chromium chromium-driver`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"]
    with FileLock(str(INSTALL_LOCK), timeout=900):
        if Path(CHROMIUM).exists() and Path(DRIVER).exists():
            return
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
            done = subprocess.run(install, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"could not install chromium: {done.stderr[-2000:]}"


def page_until(driver, what: str, ready, stall: float = STALL_SECONDS / 5) -> str:
    """Poll the page's text until ``ready(text)`` holds; fail when it stops changing for long."""
    progress = Progress(what, stall)
    while True:
        text = driver.find_element("tag name", "body").text
        if ready(text):
            return text
        progress.observe(text, "\n" + text[-2000:])
        time.sleep(0.5)


def test_partitions_page_shows_the_state_and_per_partition_rows(tmp_path: Path) -> None:
    ensure_chromium()
    root = make_project(tmp_path / "proj", NODES, days=7)
    write_code_location(root, LOCATION)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # three days materialized by a real Dagster run into the instance dagster dev then serves
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        materialize(build_definitions(root), instance, "daily_counts", first="2024-01-02", last="2024-01-04")
    finally:
        instance.dispose()

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path / "chromium-profile"  # fresh: no state from another run
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    with dagster_dev(root / "workspace.yaml", home, location=LOCATION) as server:
        port, pgid = server.port, server.proc.pid
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
        driver_pid = driver.service.process.pid
        try:
            driver.set_window_size(1400, 1000)
            driver.get(f"{server.url}/assets/daily_counts?view=partitions")
            # without a click, seeknal's automation sensor requests the last finished day
            # (2024-01-07, the node's end); the page follows it live
            overview = page_until(driver, "the Partitions page with the automation's day",
                                  lambda s: "Materialized (4)" in s and "2024-01-07" in s, stall=STALL_SECONDS)
            driver.get(f"{server.url}/assets/daily_counts?view=partitions&partition=2024-01-03")
            row = "//tr[td[normalize-space()='rows']]/td[2]"
            page_until(driver, "partition 2024-01-03's metadata",
                       lambda s: driver.find_elements("xpath", row))
            rows_shown = driver.find_element("xpath", row).text
        finally:
            driver.quit()
    assert not group_alive(pgid) and not listening(port)  # dagster dev and its group are gone
    # chromedriver and every Chromium process of this profile are gone (quit stops them by pid)
    assert not Path(f"/proc/{driver_pid}").exists() and subprocess.run(["pgrep", "-f", str(profile)]).returncode == 1

    counts = {k: int(v) for k, v in re.findall(r"(Materialized|Missing|Failed) \((\d+)\)", overview)}
    store = store_of(root)
    assert store.completed("daily_counts") == IntervalSet([(t(2024, 1, 2), t(2024, 1, 5)), (t(2024, 1, 7), t(2024, 1, 8))])
    pdef = partitions_def_for(load_project(root).node("daily_counts"))
    done = keys_for_intervals(pdef, store.completed("daily_counts"))
    assert counts == {"Materialized": len(done), "Missing": len(pdef.get_partition_keys()) - len(done),
                      "Failed": 0} == {"Materialized": 4, "Missing": 3, "Failed": 0}  # end: 7 days
    [(expected,)] = query(root, "SELECT count(*) FROM daily_counts WHERE day = TIMESTAMP '2024-01-03'")
    assert int(rows_shown) == expected == 4  # 1 + day(2024-01-03) buckets of v
