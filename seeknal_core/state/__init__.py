"""Where seeknal remembers what it has computed: the ``StateStore`` protocol and its backends.

``open_store(project_root, config)`` is the one entry point the runner, CLI and
Dagster adapter use, so the backend is a configuration choice, not a code change.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import (
    CHANGE_KINDS,
    MODES,
    Change,
    FailedInterval,
    IntervalsLike,
    NodeState,
    Restatement,
    StateError,
    StateStore,
    default_actor,
)
from .json_store import SCHEMA_VERSION, JsonStateStore
from .postgres_store import PostgresStateStore  # psycopg itself is imported on first use

__all__ = [
    "CHANGE_KINDS",
    "DEFAULT_STATE_PATH",
    "DSN_VARIABLE",
    "MODES",
    "SCHEMA_VERSION",
    "Change",
    "FailedInterval",
    "IntervalsLike",
    "JsonStateStore",
    "NodeState",
    "PostgresStateStore",
    "Restatement",
    "StateError",
    "StateStore",
    "default_actor",
    "open_store",
]

DEFAULT_STATE_PATH = "target/run_state.json"
_JSON_OPTIONS = ("path", "log_path", "durable", "lock_timeout")
_POSTGRES_OPTIONS = ("dsn", "schema", "connect_timeout", "lock_timeout")
#: A PostgreSQL DSN here selects the postgres backend whatever ``seeknal_project.yml`` says
#: (deployments set it; the password can stay in ``$PGPASSWORD`` or ``~/.pgpass``).
DSN_VARIABLE = "SEEKNAL_STATE_DSN"


def open_store(
    project_root: str | os.PathLike[str], config: Mapping[str, Any] | None = None
) -> StateStore:
    """The project's state store.

    ``config`` is the project's ``state:`` section: ``backend`` (default ``json``) and,
    for ``json``, ``path`` / ``log_path`` (relative to the project root), ``durable``
    and ``lock_timeout``; for ``postgres``, ``dsn``, ``schema`` (default ``seeknal``),
    ``connect_timeout`` and ``lock_timeout``.  ``$SEEKNAL_STATE_DSN``, when set, selects
    ``postgres`` with that DSN (keeping the file's ``schema`` when it configures postgres).
    """
    options = dict(config or {})
    backend = str(options.pop("backend", None) or "json").strip().lower()
    root = Path(project_root)
    env_dsn = os.environ.get(DSN_VARIABLE, "").strip()
    if env_dsn:
        if backend not in ("postgres", "postgresql"):
            options = {}  # the file's JSON options do not apply to the override
        backend = "postgres"
        options["dsn"] = env_dsn
    if backend == "json":
        unknown = sorted(set(options) - set(_JSON_OPTIONS))
        if unknown:
            raise StateError(
                f"unknown state option(s) {', '.join(unknown)} for backend 'json': "
                f"use {', '.join(_JSON_OPTIONS)}"
            )
        log_path = options.get("log_path")
        return JsonStateStore(
            root / str(options.get("path") or DEFAULT_STATE_PATH),
            None if log_path is None else root / str(log_path),
            durable=bool(options.get("durable", True)),
            lock_timeout=float(options.get("lock_timeout", 60.0)),
        )
    if backend in ("postgres", "postgresql"):
        unknown = sorted(set(options) - set(_POSTGRES_OPTIONS))
        if unknown:
            raise StateError(
                f"unknown state option(s) {', '.join(unknown)} for backend 'postgres': "
                f"use {', '.join(_POSTGRES_OPTIONS)}"
            )
        return PostgresStateStore(
            str(options.get("dsn") or ""),
            schema=str(options.get("schema") or "seeknal"),
            connect_timeout=float(options.get("connect_timeout", 10.0)),
            lock_timeout=float(options.get("lock_timeout", 60.0)),
        )
    raise StateError(f"unknown state backend {backend!r}: use 'json' (the default) or 'postgres'")
