"""A throwaway PostgreSQL server for the tests (plain functions; the fixture is in conftest.py).

``start_server()`` installs Debian's ``postgresql`` package when no ``initdb`` is found
(``apt-get``, as root), creates a cluster in a fresh temporary folder, starts it on
127.0.0.1 with a free port and returns a ``PgServer`` whose ``stop()`` shuts it down and
deletes the folder.  The cluster is tuned for tests (no fsync) and uses a random
password over TCP; the Unix socket lives in the private folder.

When we are root, ``initdb``/``pg_ctl`` run as the ``postgres`` OS user (PostgreSQL
refuses to run as root) through ``runuser``.  A small watchdog process holds the read
end of a pipe from the test process: if the test process dies, even by SIGKILL, the
pipe closes and the watchdog stops the server and removes the folder, so no server
outlives its test session.

Problems raise ``PgServerError`` with what to do: the tests that need PostgreSQL must
fail, never silently skip.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

__all__ = ["PgServer", "PgServerError", "ensure_installed", "find_bindir", "start_server"]

PG_GLOB = "/usr/lib/postgresql/*/bin/initdb"
INSTALL_LOCK = Path(tempfile.gettempdir()) / "seeknal-postgresql-install.lock"
OS_USER = "postgres"
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "60",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}

# Runs in the watchdog process: wait for EOF on stdin (the test process is gone or done),
# then stop the server (if still running) and remove its folder.
_WATCHDOG = r"""
import shutil, subprocess, sys
cmd, root = sys.argv[1:-1], sys.argv[-1]
try:
    sys.stdin.buffer.read()
except BaseException:
    pass
subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
shutil.rmtree(root, ignore_errors=True)
"""


class PgServerError(RuntimeError):
    """The test PostgreSQL server could not be installed or started; the message says why."""


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian layout), or None."""
    found = []
    for initdb in Path("/").glob(PG_GLOB.lstrip("/")):
        version = initdb.parent.parent.name
        key = tuple(int(p) for p in re.findall(r"\d+", version)) or (0,)
        found.append((key, initdb.parent))
    return max(found)[1] if found else None


def ensure_installed(timeout: float = 900) -> Path:
    """The bin folder of an installed PostgreSQL, installing Debian's package when missing."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    if shutil.which("apt-get") is None:
        raise PgServerError(
            "PostgreSQL is not installed and there is no apt-get: install the PostgreSQL server "
            "(initdb, pg_ctl) or set SEEKNAL_TEST_PG_DSN to an existing server"
        )
    if os.geteuid() != 0:
        raise PgServerError(
            "PostgreSQL is not installed: run `sudo apt-get install -y postgresql` "
            "(or set SEEKNAL_TEST_PG_DSN to an existing server)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    with FileLock(str(INSTALL_LOCK), timeout=timeout):  # one installer per machine
        bindir = find_bindir()
        if bindir is not None:
            return bindir
        deadline = time.monotonic() + timeout
        first = _run(install, env, timeout)
        if first.returncode != 0:  # package lists missing or stale: refresh once, retry
            update = _run(["apt-get", "update", "-q"], env, max(deadline - time.monotonic(), 1))
            again = _run(install, env, max(deadline - time.monotonic(), 1))
            if again.returncode != 0:
                detail = (again.stderr or update.stderr or again.stdout).strip().splitlines()
                raise PgServerError(
                    "could not install PostgreSQL with `apt-get install -y postgresql`: "
                    f"{detail[-1] if detail else 'exit code ' + str(again.returncode)}; install it "
                    "by hand or set SEEKNAL_TEST_PG_DSN"
                )
    bindir = find_bindir()
    if bindir is None:
        raise PgServerError(f"apt-get installed postgresql but no {PG_GLOB} exists")
    return bindir


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PgServerError(f"`{' '.join(cmd)}` timed out after {timeout:.0f}s") from None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """A running throwaway server; ``dsn`` connects as its superuser ``postgres``."""

    bindir: Path
    root: Path
    port: int
    password: str
    _watchdog: subprocess.Popen | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str) -> list[str]:
        return _as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args])

    def stop(self) -> None:
        """Stop the server and delete its folder; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            subprocess.run(self.pg_ctl("-m", "fast", "-w", "-t", "30", "stop"),
                           capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            subprocess.run(self.pg_ctl("-m", "immediate", "stop"), capture_output=True, timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            if self._watchdog is not None:
                self._watchdog.stdin.close()  # type: ignore[union-attr]  # it wakes up and exits
                try:
                    self._watchdog.wait(30)
                except subprocess.TimeoutExpired:
                    self._watchdog.kill()
                    self._watchdog.wait()


def _as_owner(cmd: list[str]) -> list[str]:
    """Run as the ``postgres`` OS user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *cmd]
    return cmd


def start_server(attempts: int = 5) -> PgServer:
    """Install when missing, then initdb and start a server on 127.0.0.1:<free port>."""
    bindir = ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="seeknal-pg-", dir="/tmp" if os.geteuid() == 0 else None))
    password = secrets.token_hex(16)
    server = PgServer(bindir, root, 0, password)
    try:
        if os.geteuid() == 0:
            shutil.chown(root, user=OS_USER)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, user=OS_USER)
        init = subprocess.run(
            _as_owner([str(bindir / "initdb"), "-D", str(server.datadir), "-U", "postgres",
                       f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
                       "-E", "UTF8", "--locale=C", "-N"]),
            capture_output=True, text=True, timeout=120,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise PgServerError(f"initdb failed: {_last_line(init.stderr or init.stdout)}")
        server._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, *server.pg_ctl("-m", "immediate", "stop"), str(root)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the test run must not kill it before cleanup
        )
        for _ in range(attempts):
            server.port = free_port()
            options = " ".join(f"-c {k}={v}" for k, v in
                               {**SETTINGS, "port": server.port,
                                "unix_socket_directories": str(root)}.items())
            started = subprocess.run(
                server.pg_ctl("-l", str(server.logfile), "-w", "-t", "60", "-o", options, "start"),
                capture_output=True, text=True, timeout=90,
            )
            if started.returncode == 0:
                return server
            log = server.logfile.read_text(errors="replace") if server.logfile.exists() else ""
            if "could not bind" not in log and "already in use" not in log:
                raise PgServerError(
                    f"pg_ctl start failed: {_last_line(log or started.stderr or started.stdout)}")
        raise PgServerError(f"no free port found for PostgreSQL after {attempts} attempts")
    except BaseException:
        server.stop()
        raise


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
