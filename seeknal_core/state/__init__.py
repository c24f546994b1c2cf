"""Where seeknal remembers what it has computed: the ``StateStore`` protocol and its backends.

``open_store(project_root, config)`` is the one entry point the runner, CLI and
Dagster adapter use, so the backend is a configuration choice, not a code change.
The backends are listed once, in ``backends.BACKENDS``; their store classes
(``JsonStateStore``, ``PostgresStateStore``) are imported on first use, so that naming
the backends costs no store import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends import BACKENDS, DEFAULT_STATE_PATH, backend
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

if TYPE_CHECKING:
    from .json_store import SCHEMA_VERSION, JsonStateStore
    from .postgres_store import PostgresStateStore

__all__ = [
    "BACKENDS",
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

#: A PostgreSQL DSN here selects the postgres backend whatever ``seeknal_project.yml`` says
#: (deployments set it; the password can stay in ``$PGPASSWORD`` or ``~/.pgpass``).
DSN_VARIABLE = "SEEKNAL_STATE_DSN"

#: names this package exports from a store module, imported when first asked for
_LAZY = {"JsonStateStore": "json_store", "SCHEMA_VERSION": "json_store",
         "PostgresStateStore": "postgres_store"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(
    project_root: str | os.PathLike[str], config: Mapping[str, Any] | None = None
) -> StateStore:
    """The project's state store.

    ``config`` is the project's ``state:`` section: ``backend`` (default ``json``) and,
    for ``json``, ``path`` / ``log_path`` (relative to the project root), ``durable``
    and ``lock_timeout``; for ``postgres``, ``dsn``, ``schema`` (default ``seeknal``),
    ``connect_timeout`` and ``lock_timeout`` (``backends.BACKENDS`` lists them).
    ``$SEEKNAL_STATE_DSN``, when set, selects ``postgres`` with that DSN (keeping the
    file's ``schema`` when it configures postgres).
    """
    options = dict(config or {})
    name = str(options.pop("backend", None) or "json").strip().lower()
    env_dsn = os.environ.get(DSN_VARIABLE, "").strip()
    if env_dsn:
        postgres = BACKENDS["postgres"]
        if name not in (postgres.name, *postgres.aliases):
            options = {}  # the file's options do not apply to the override
        name = postgres.name
        options["dsn"] = env_dsn
    chosen = backend(name)
    unknown = sorted(set(options) - set(chosen.options))
    if unknown:
        raise StateError(
            f"unknown state option(s) {', '.join(unknown)} for backend {chosen.name!r}: "
            f"use {', '.join(chosen.options)}"
        )
    return chosen.open(Path(project_root), options)

