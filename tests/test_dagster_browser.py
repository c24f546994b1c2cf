"""The UI tells the truth per partition, read in a real browser: ``dagster dev`` on
loopback (its instance limits the ``seeknal_duckdb`` pool to one run, as ``make dagster``
does), pages in headless Chromium (selenium + Debian's ``chromium``/``chromium-driver``,
installed here with apt-get when missing, as tests/pg_server.py installs PostgreSQL), and
what they show compared with seeknal's state and DuckDB.  The nodes' ``end:`` bounds their
partitions, so the pages list exactly a week.

Without a click: seeknal's automation sensor shows Running and requests the finished hour
and day; a CLI restatement turns its partition red (Failed) with the reason one link away
(the failed run's step failure), and once the sensor runs again the partition is
recomputed and green.  The sensor is stopped while the red partition is read (through the
GraphQL mutation the UI's toggle sends), or its recompute could beat the page.

One test, and slow by nature (a webserver, a daemon, runs and a browser): waits follow
progress (the page's text, the runs GraphQL lists, the server's log), never a fixed deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster_harness import STALL_SECONDS, Progress, dagster_dev, group_alive, listening, write_code_location
from filelock import FileLock
from test_dagster_assets import make_project, materialize, query, store_of, t

from seeknal_core.intervals import IntervalSet
from seeknal_core.project import load_project
from seeknal_dagster import SeeknalTranslator, build_definitions
from seeknal_dagster.partitions import keys_for_intervals
from seeknal_dagster.sensors import AUTOMATION_SENSOR

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
hourly_counts:
  schedule: "@hourly"
  end: 2024-01-08
  sql: |
    SELECT date_trunc('hour', ts) AS hour, count(*) AS n
    FROM raw WHERE ts >= TIMESTAMP '{{ start }}' AND ts < TIMESTAMP '{{ end }}'
    GROUP BY ALL
  time_column: hour
"""
LOCATION = "seeknal_ui"
REASON = "late rows from the shop feed"
BIN = Path(sys.executable).parent
#: the instance ``make dagster`` writes: one run at a time per pool (one DuckDB writer)
INSTANCE_YAML = "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL_LOCK = Path(tempfile.gettempdir()) / "seeknal-chromium-install.lock"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")

SENSOR = {"repositoryName": "__repository__", "repositoryLocationName": LOCATION, "sensorName": AUTOMATION_SENSOR}
SENSOR_STATE = """
query SensorState($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { id sensorState { status } }
  }
}
"""
#: what the sensor page's toggle sends
STOP_SENSOR = """
mutation StopSensor($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message }
  }
}
"""
START_SENSOR = """
mutation StartSensor($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""
RUNS = """
query Runs {
  runsOrError {
    __typename
    ... on Runs { results { runId status assetSelection { path } tags { key value } } }
  }
}
"""


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


def runs(server) -> list[dict[str, Any]]:
    """Every run, newest first, with its asset, status and tags (``{key: value}``)."""
    data = server.graphql(RUNS)["runsOrError"]
    assert data["__typename"] == "Runs", data
    return [{"id": r["runId"], "status": r["status"], "tags": {x["key"]: x["value"] for x in r["tags"]},
             "assets": ["/".join(a["path"]) for a in r["assetSelection"] or ()]} for r in data["results"]]


def run_until(server, what: str, found: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the instance's runs (GraphQL) until one matching ``found`` has finished; fail
    when ``dagster dev`` exits or nothing (runs, statuses, the server's log) moves for long:
    a sensor tick and a run start are slow on a loaded machine, not stalled."""
    progress = Progress(what)
    while True:
        assert server.alive(), server.log_tail()
        listed = runs(server)
        done = [r for r in listed if found(r) and r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        if done:
            return done[0]
        progress.observe((sorted((r["id"], r["status"]) for r in listed), server.activity()),
                         "\n" + server.log_tail())
        time.sleep(1.0)


def automation_sensor(server, start: bool | None = None) -> str:
    """The automation sensor's status; ``start``: start or stop it first, as its toggle does."""
    if start is True:
        result = server.graphql(START_SENSOR, {"selector": SENSOR})["startSensor"]
        assert result["__typename"] == "Sensor", result
    elif start is False:
        sensor = server.graphql(SENSOR_STATE, {"selector": SENSOR})["sensorOrError"]
        result = server.graphql(STOP_SENSOR, {"id": sensor["id"]})["stopSensor"]
        assert result["__typename"] == "StopSensorMutationResult", result
    sensor = server.graphql(SENSOR_STATE, {"selector": SENSOR})["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    return sensor["sensorState"]["status"]


def partition_dot(driver, key: str) -> str:
    """The style of the status dot beside partition ``key`` in the partition list."""
    dots = driver.find_elements("xpath", f"//div[@data-tooltip='{key}']/following-sibling::div[1]")
    return dots[0].get_attribute("style") if dots else ""


def counts(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(Materialized|Missing|Failed) \((\d+)\)", text)}


def test_the_ui_shows_automation_restated_partitions_and_per_partition_rows(tmp_path: Path) -> None:
    ensure_chromium()
    root = make_project(tmp_path / "proj", NODES, days=7)
    write_code_location(root, LOCATION, "sensor_interval_seconds=5")  # ticks every 5 s: the waits end sooner
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
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
            # seeknal's automation sensor runs out of the box: its page says so, toggle on
            driver.get(f"{server.url}/locations/{LOCATION}/sensors/{AUTOMATION_SENSOR}")
            page_until(driver, "the automation sensor's page", lambda s: "Running" in s.splitlines())
            toggled = [e for e in driver.find_elements("css selector", "input[type=checkbox]") if e.is_selected()]
            assert len(toggled) == 1 and automation_sensor(server) == "RUNNING"

            # without a click, it requests the last finished hour and day (the nodes' end)
            hour = run_until(server, "the automation's run of the last finished hour",
                             lambda r: r["assets"] == ["hourly_counts"])
            assert hour["status"] == "SUCCESS", hour
            assert hour["tags"]["dagster/partition"] == "2024-01-07-23:00"
            assert hour["tags"]["dagster/sensor_name"] == AUTOMATION_SENSOR
            assert hour["tags"]["dagster/from_automation_condition"] == "true"
            driver.get(f"{server.url}/assets/hourly_counts?view=partitions")
            hours = page_until(driver, "the hourly Partitions page", lambda s: "Materialized (1)" in s)
            # the page follows the automation's day live
            driver.get(f"{server.url}/assets/daily_counts?view=partitions")
            overview = page_until(driver, "the Partitions page with the automation's day",
                                  lambda s: "Materialized (4)" in s and "2024-01-07" in s, stall=STALL_SECONDS)
            driver.get(f"{server.url}/assets/daily_counts?view=partitions&partition=2024-01-03")
            row = "//tr[td[normalize-space()='rows']]/td[2]"
            page_until(driver, "partition 2024-01-03's metadata",
                       lambda s: driver.find_elements("xpath", row))
            rows_shown = driver.find_element("xpath", row).text

            # a CLI restatement of 2024-01-03 shows it red with the reason, until recomputed
            assert automation_sensor(server, start=False) == "STOPPED"
            restate = subprocess.run(
                [str(BIN / "seeknal"), "intervals", "restate", "-p", str(root), "--node", "daily_counts",
                 "--start", "2024-01-03", "--end", "2024-01-03", "--reason", REASON],
                capture_output=True, text=True, timeout=300)
            assert restate.returncode == 0, restate.stderr
            shown = run_until(server, "the restatement's run", lambda r: "seeknal/restatement" in r["tags"])
            assert shown["status"] == "FAILURE" and shown["tags"]["seeknal/reason"] == REASON, shown
            assert shown["tags"]["dagster/partition"] == "2024-01-03"
            driver.get(f"{server.url}/assets/daily_counts?view=partitions&partition=2024-01-03")
            failed_page = page_until(
                driver, "partition 2024-01-03 Failed",
                lambda s: "Failed (1)" in s and f"{shown['id'][:8]} failed, and did not materialize" in s)
            red, green = partition_dot(driver, "2024-01-03"), partition_dot(driver, "2024-01-02")
            links = driver.find_elements("xpath", f"//a[contains(@href, '/runs/{shown['id']}')]")
            assert links, "no link to the failed run beside the partition's status"
            driver.get(links[0].get_attribute("href"))  # the failed run, from the partition's status
            run_page = page_until(driver, "the restatement run's failure", lambda s: f"restated: {REASON}" in s)

            # running again, the automation recomputes it without a click
            assert automation_sensor(server, start=True) == "RUNNING"
            again = run_until(server, "the automation's recompute of 2024-01-03",
                              lambda r: r["tags"].get("dagster/sensor_name") == AUTOMATION_SENSOR
                              and "2024-01-03" in (r["tags"].get("dagster/partition"),
                                                   r["tags"].get("dagster/asset_partition_range_start")))
            assert again["status"] == "SUCCESS", again
            driver.get(f"{server.url}/assets/daily_counts?view=partitions&partition=2024-01-03")
            recomputed = page_until(driver, "partition 2024-01-03 recomputed",
                                    lambda s: "Failed (0)" in s and "Materialized (4)" in s)
            green_again = partition_dot(driver, "2024-01-03")
        finally:
            driver.quit()
    assert not group_alive(pgid) and not listening(port)  # dagster dev and its group are gone
    # chromedriver and every Chromium process of this profile are gone (quit stops them by pid)
    assert not Path(f"/proc/{driver_pid}").exists() and subprocess.run(["pgrep", "-f", str(profile)]).returncode == 1

    store = store_of(root)
    done = IntervalSet([(t(2024, 1, 2), t(2024, 1, 5)), (t(2024, 1, 7), t(2024, 1, 8))])
    assert store.completed("daily_counts") == done and not store.pending_restatements()
    assert store.completed("hourly_counts") == IntervalSet([(t(2024, 1, 7, 23), t(2024, 1, 8))])
    pdef = SeeknalTranslator().get_partitions_def(load_project(root).node("daily_counts"))
    keys = keys_for_intervals(pdef, done)
    assert counts(overview) == {"Materialized": len(keys), "Missing": len(pdef.get_partition_keys()) - len(keys),
                                "Failed": 0} == {"Materialized": 4, "Missing": 3, "Failed": 0}  # end: 7 days
    assert counts(hours) == {"Materialized": 1, "Missing": 7 * 24 - 1, "Failed": 0}
    [(expected,)] = query(root, "SELECT count(*) FROM daily_counts WHERE day = TIMESTAMP '2024-01-03'")
    assert int(rows_shown) == expected == 4  # 1 + day(2024-01-03) buckets of v
    # restated: red beside its key, counted Failed, the reason on the failed run's page
    assert counts(failed_page) == {"Materialized": 3, "Missing": 3, "Failed": 1}
    assert "accent-red" in red and "accent-green" in green and "accent-green" in green_again
    assert f"restated: {REASON}" in run_page and "STEP_FAILURE" in run_page
    assert counts(recomputed) == counts(overview)
