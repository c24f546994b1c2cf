"""The state backends seeknal knows, one entry each: the only list of them.

``open_store`` (a project's ``state:`` section), ``seeknal state migrate`` (its destination,
messages and the ``state:`` block it prints) and the CLI's ``--to`` choices all read
``BACKENDS``, so adding a backend is one ``Backend`` subclass and its entry here, beside its
store class.  A store module is imported only when a store of it is opened or described, so
naming the backends (``seeknal --help``) stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import StateError

if TYPE_CHECKING:
    from .base import StateStore

__all__ = ["BACKENDS", "DEFAULT_STATE_PATH", "Backend", "backend", "backend_of"]

DEFAULT_STATE_PATH = "target/run_state.json"


class Backend:
    """One state backend: how a ``state:`` section or ``seeknal state migrate --to`` opens a
    store of it, and how messages and the printed ``state:`` block name one."""

    name: str
    aliases: tuple[str, ...] = ()
    #: its keys in the ``state:`` section
    options: tuple[str, ...]
    #: the options ``seeknal state migrate --to <name>`` takes, as ``--<option>``
    migrate_options: tuple[str, ...]

    def store_class(self) -> type:
        """The store class (its module imported now)."""
        raise NotImplementedError

    def open(self, root: Path, options: Mapping[str, Any]) -> StateStore:
        """A store from ``options`` (known keys only), paths relative to the project ``root``."""
        raise NotImplementedError

    def check_destination(self, root: Path, options: Mapping[str, Any]) -> None:
        """Refuse a ``migrate`` destination before anything is opened, locked or copied."""

    def describe(self, store: Any) -> str:
        """A short, password-free name of ``store`` for messages."""
        raise NotImplementedError

    def config(self, store: Any, root: Path | None) -> dict[str, str]:
        """The ``state:`` options that open ``store`` again (no password)."""
        raise NotImplementedError

    def places(self, store: Any) -> set[str]:
        """Where ``store`` keeps anything: two stores sharing one are the same store."""
        raise NotImplementedError


class JsonBackend(Backend):
    name = "json"
    options = ("path", "log_path", "durable", "lock_timeout")
    migrate_options = ("path",)

    def store_class(self) -> type:
        from .json_store import JsonStateStore

        return JsonStateStore

    def open(self, root: Path, options: Mapping[str, Any]) -> StateStore:
        log_path = options.get("log_path")
        return self.store_class()(
            root / str(options.get("path") or DEFAULT_STATE_PATH),
            None if log_path is None else root / str(log_path),
            durable=bool(options.get("durable", True)),
            lock_timeout=float(options.get("lock_timeout", 60.0)),
        )

    def check_destination(self, root: Path, options: Mapping[str, Any]) -> None:
        target = root / str(options.get("path") or DEFAULT_STATE_PATH)
        problem = _not_a_state_file(target)
        if problem is not None:
            raise StateError(f"--path {target} {problem}, not a seeknal state file: nothing was "
                             "copied — give a new file's path (the copy needs an empty state)")

    def describe(self, store: Any) -> str:
        return str(store.path)

    def config(self, store: Any, root: Path | None) -> dict[str, str]:
        path: Path = store.path
        if root is not None:
            try:
                path = store.path.relative_to(Path(root).resolve())
            except ValueError:
                pass
        return {"path": str(path)}

    def places(self, store: Any) -> set[str]:
        return {str(store.path), str(store.log_path)}


class PostgresBackend(Backend):
    name = "postgres"
    aliases = ("postgresql",)
    options = ("dsn", "schema", "connect_timeout", "lock_timeout")
    migrate_options = ("dsn", "schema")

    def store_class(self) -> type:
        from .postgres_store import PostgresStateStore  # psycopg itself: when a store is created

        return PostgresStateStore

    def open(self, root: Path, options: Mapping[str, Any]) -> StateStore:
        from .postgres_store import DEFAULT_SCHEMA

        return self.store_class()(
            str(options.get("dsn") or ""),
            schema=str(options.get("schema") or DEFAULT_SCHEMA),
            connect_timeout=float(options.get("connect_timeout", 10.0)),
            lock_timeout=float(options.get("lock_timeout", 60.0)),
        )

    def check_destination(self, root: Path, options: Mapping[str, Any]) -> None:
        if not options.get("dsn"):
            raise StateError("--to postgres needs --dsn postgresql://user@host:5432/dbname "
                             "(keep the password in PGPASSWORD or ~/.pgpass)")

    def describe(self, store: Any) -> str:
        return f"PostgreSQL {store.where} (schema {store.schema})"

    def config(self, store: Any, root: Path | None) -> dict[str, str]:
        from .postgres_store import DEFAULT_SCHEMA, redact_dsn

        out = {"dsn": redact_dsn(store.dsn)}
        if store.schema != DEFAULT_SCHEMA:
            out["schema"] = store.schema
        return out

    def places(self, store: Any) -> set[str]:
        return {f"{store.where}/{store.schema}"}


#: name -> backend, the default (``json``) first
BACKENDS: dict[str, Backend] = {b.name: b for b in (JsonBackend(), PostgresBackend())}


def backend(name: str) -> Backend:
    """The backend called ``name`` (or one of its aliases); ``StateError`` naming the choices."""
    key = str(name).strip().lower()
    for entry in BACKENDS.values():
        if key == entry.name or key in entry.aliases:
            return entry
    first, *rest = BACKENDS
    choices = " or ".join([f"'{first}' (the default)", *(f"'{n}'" for n in rest)])
    raise StateError(f"unknown state backend {name!r}: use {choices}")


def backend_of(store: object) -> Backend | None:
    """The backend whose store class ``store`` is (None: not one of seeknal's)."""
    for entry in BACKENDS.values():
        if isinstance(store, entry.store_class()):
            return entry
    return None


def _not_a_state_file(path: Path) -> str | None:
    """What an existing ``path`` is when it is not a JSON state document (None: it does
    not exist, or it is one), read before anything is opened, locked or copied there."""
    if not path.exists():
        return "is a link to nothing" if path.is_symlink() else None
    if not path.is_file():
        return "is a folder" if path.is_dir() else "is not a regular file"
    try:
        with path.open("rb") as handle:
            if not handle.read(4096).lstrip()[:1] == b"{":
                return "is another kind of file"
            handle.seek(0)
            doc = json.loads(handle.read())
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except (ValueError, RecursionError):
        return "is JSON that does not parse"
    return None if isinstance(doc, dict) and isinstance(doc.get("nodes"), dict) else "is other JSON"
