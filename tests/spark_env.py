"""Real Spark for the tests: a Java runtime (Debian's ``openjdk-17-jre-headless`` is
installed when ``java`` is missing, under a machine-wide lock as tests/pg_server.py does
for PostgreSQL), one ``local[2]`` session per test worker reused by every test, and a
Spark Connect server on loopback started from the pyspark package's
``sbin/start-connect-server.sh`` and stopped by process id.

Test modules import the fixtures: ``from spark_env import spark, spark_connect  # noqa``.
Every Spark test is in the xdist group "spark", so one worker (one JVM) runs them all.
Problems raise ``SparkEnvError`` saying what to do: these tests fail, never skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from filelock import FileLock

INSTALL_LOCK = Path(tempfile.gettempdir()) / "seeknal-java-install.lock"
JAVA_PACKAGE = "openjdk-17-jre-headless"
SESSION_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.log.level": "FATAL",
}
#: marks a test as Spark's: all of them run on one xdist worker, sharing its session
spark_group = pytest.mark.xdist_group("spark")


class SparkEnvError(RuntimeError):
    """Java or the Spark Connect server could not be provided; the message says why."""


def ensure_java(timeout: float = 900) -> str:
    """The ``java`` executable, installing Debian's JRE package when it is missing."""
    found = shutil.which("java")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SparkEnvError(f"Java is not installed: run `sudo apt-get install -y {JAVA_PACKAGE}` "
                            "(Spark needs Java 17+)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", JAVA_PACKAGE]
    with FileLock(str(INSTALL_LOCK), timeout=timeout):  # one installer per machine
        if shutil.which("java") is None:
            done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:  # package lists missing or stale: refresh once, retry
                subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=timeout)
                done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()
                raise SparkEnvError(f"could not install {JAVA_PACKAGE}: {tail[-1] if tail else done.returncode}")
    found = shutil.which("java")
    if not found:
        raise SparkEnvError(f"apt-get installed {JAVA_PACKAGE} but no `java` is on PATH")
    return found


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def subprocess_env() -> dict[str, str]:
    """Environment for a child process that runs Spark (the venv's python and spark)."""
    ensure_java()
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
            "PYSPARK_PYTHON": sys.executable, "SPARK_HOME": str(spark_home())}


@pytest.fixture(scope="session")
def spark():
    """This worker's local[2] SparkSession; engines built without a session reuse it."""
    ensure_java()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master("local[2]").appName("seeknal-tests")
    for key, value in SESSION_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    yield session
    session.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def spark_connect(tmp_path_factory):
    """``sc://127.0.0.1:<port>`` of a Spark Connect server (local[2]) for this session;
    waits on its log for the "started" line, stops it by pid afterwards."""
    env = subprocess_env()
    root = tmp_path_factory.mktemp("spark-connect")
    port = _free_port()
    env.update(SPARK_LOG_DIR=str(root / "logs"), SPARK_PID_DIR=str(root / "pids"),
               SPARK_IDENT_STRING="seeknal-tests")
    script = spark_home() / "sbin" / "start-connect-server.sh"
    confs = {"spark.connect.grpc.binding.port": str(port),
             "spark.connect.grpc.binding.address": "127.0.0.1",
             # INFO stays on: the "started" line is what we wait for
             **{k: v for k, v in SESSION_CONF.items() if k != "spark.log.level"}}
    cmd = ["bash", str(script), "--master", "local[2]"]
    for key, value in confs.items():
        cmd += ["--conf", f"{key}={value}"]
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    pids = list((root / "pids").glob("*.pid"))
    if started.returncode != 0 or not pids:
        raise SparkEnvError(f"start-connect-server.sh failed: {(started.stderr or started.stdout)[-500:]}")
    pid = int(pids[0].read_text().strip())
    try:
        while True:  # progress: the server logs its start, or dies
            logs = "".join(p.read_text(errors="replace") for p in (root / "logs").glob("*.out"))
            if "Spark Connect server started" in logs:
                break
            if not _alive(pid):
                raise SparkEnvError(f"the Spark Connect server exited: {logs[-800:]}")
            time.sleep(0.5)
        yield f"sc://127.0.0.1:{port}"
    finally:
        _stop(pid)


def _stop(pid: int, grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL once ``grace`` seconds pass without the JVM exiting: its
    shutdown hooks sometimes hang (seen once: 9 minutes asleep on a lock after SIGTERM),
    and a session's teardown must end."""
    deadline, sig = time.monotonic() + grace, signal.SIGTERM
    while _alive(pid):
        if sig is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            sig = None
        try:  # reap it when it is our child's child already gone
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if deadline is not None and time.monotonic() > deadline:
            deadline, sig = None, signal.SIGKILL
        time.sleep(0.2)
