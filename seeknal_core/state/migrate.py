"""Move a project's state between backends (``seeknal state migrate``).

``copy_state(src, dst)`` exports everything the source holds (completed and failed
intervals, restatements including resolved ones, partition keys, fingerprints,
``last_run``, per-node revisions and the whole audit history), imports it into an empty
destination and checks that the destination now exports exactly the same document.
Revision numbers are kept, so a Dagster sensor's cursor stays valid after a switch.
Nothing is switched: ``state_block(dst)`` is the ``state:`` section to put in
``seeknal_project.yml`` once every writer of the old store is stopped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .base import StateError, StateStore
from .json_store import JsonStateStore
from .postgres_store import DEFAULT_SCHEMA, PostgresStateStore

__all__ = ["CopyReport", "copy_state", "describe", "open_destination", "redact_dsn", "state_block"]

BACKENDS = ("postgres", "json")


@dataclass(frozen=True)
class CopyReport:
    """What ``copy_state`` copied."""

    nodes: int
    audit_records: int
    revision: int
    restatements: int


def copy_state(src: StateStore, dst: StateStore, *, verify: bool = True) -> CopyReport:
    """Copy everything ``src`` holds into ``dst``, which must be empty.

    With ``verify`` the destination is exported again and must equal the source's
    export; a difference raises ``StateError`` (the destination is then left as it is,
    to be inspected or dropped).
    """
    if same_store(src, dst):
        raise StateError(f"source and destination are the same store ({describe(src)}): "
                         "choose another destination")
    data = src.export()
    dst.import_(data)
    if verify:
        copied = dst.export()
        if copied != data:
            raise StateError(
                f"the copy in {describe(dst)} differs from {describe(src)} "
                f"({_first_difference(data, copied)}); the source is unchanged — drop the "
                "destination and report this as a bug"
            )
    return CopyReport(
        nodes=len(data["nodes"]),
        audit_records=len(data["audit"]),
        revision=data["revision"],
        restatements=sum(len(n.get("restatements") or []) for n in data["nodes"].values()),
    )


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    for key in ("revision", "nodes", "audit"):
        if a.get(key) != b.get(key):
            if key == "nodes":
                for name in sorted(set(a["nodes"]) | set(b["nodes"])):
                    if a["nodes"].get(name) != b["nodes"].get(name):
                        return f"node {name!r}"
            if key == "audit":
                for i, (x, y) in enumerate(zip(a["audit"], b["audit"])):
                    if x != y:
                        return f"audit record {i + 1} (revision {x.get('revision')})"
                return f"{len(a['audit'])} vs {len(b['audit'])} audit records"
            return key
    return "unknown"


def open_destination(
    project_root: str | os.PathLike[str],
    to: str,
    *,
    dsn: str | None = None,
    schema: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> StateStore:
    """The store to copy into: ``postgres`` (needs ``dsn``) or ``json`` (``path``, default
    ``target/run_state.json``, relative to the project)."""
    if to == "postgres":
        if path is not None:
            raise StateError("--path is for --to json; PostgreSQL takes --dsn (and --schema)")
        if not dsn:
            raise StateError("--to postgres needs --dsn postgresql://user@host:5432/dbname "
                             "(keep the password in PGPASSWORD or ~/.pgpass)")
        return PostgresStateStore(dsn, schema=schema or DEFAULT_SCHEMA)
    if to == "json":
        if dsn is not None or schema is not None:
            raise StateError("--dsn and --schema are for --to postgres; JSON takes --path")
        from . import DEFAULT_STATE_PATH

        target = Path(project_root) / (path or DEFAULT_STATE_PATH)
        problem = _not_a_state_file(target)
        if problem is not None:
            raise StateError(f"--path {target} {problem}, not a seeknal state file: nothing was "
                             "copied — give a new file's path (the copy needs an empty state)")
        return JsonStateStore(target)
    raise StateError(f"unknown state backend {to!r}: use {' or '.join(BACKENDS)}")


def _not_a_state_file(path: Path) -> str | None:
    """What an existing ``path`` is when it is not a JSON state document (None: it does
    not exist, or it is one), read before anything is opened, locked or copied there."""
    import json

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


def same_store(a: StateStore, b: StateStore) -> bool:
    if isinstance(a, JsonStateStore) and isinstance(b, JsonStateStore):
        return a.path == b.path or a.log_path == b.log_path
    if isinstance(a, PostgresStateStore) and isinstance(b, PostgresStateStore):
        return (a.where, a.schema) == (b.where, b.schema)
    return False


def describe(store: StateStore) -> str:
    """A short, password-free name of a store for messages."""
    if isinstance(store, JsonStateStore):
        return str(store.path)
    if isinstance(store, PostgresStateStore):
        return f"PostgreSQL {store.where} (schema {store.schema})"
    return repr(store)


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password (URL or ``key=value`` form)."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            netloc = f"{userinfo.split(':', 1)[0]}@{host}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                           if k != "password"])
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params.pop("password", None)
    return make_conninfo(**params)


def has_password(dsn: str) -> bool:
    return bool(dsn) and redact_dsn(dsn) != dsn


def state_block(store: StateStore, project_root: str | os.PathLike[str] | None = None) -> str:
    """The ``state:`` section of ``seeknal_project.yml`` that selects ``store``."""
    if isinstance(store, PostgresStateStore):
        lines = ["state:", "  backend: postgres", f"  dsn: {_yaml(redact_dsn(store.dsn))}"]
        if store.schema != DEFAULT_SCHEMA:
            lines.append(f"  schema: {store.schema}")
        return "\n".join(lines)
    if isinstance(store, JsonStateStore):
        path: Path | str = store.path
        if project_root is not None:
            try:
                path = store.path.relative_to(Path(project_root).resolve())
            except ValueError:
                pass
        return "\n".join(["state:", "  backend: json", f"  path: {_yaml(str(path))}"])
    raise TypeError(f"no state: block for {store!r}")


def _yaml(text: str) -> str:
    """A YAML scalar: quoted when plain style would change its meaning."""
    if text and all(c.isalnum() or c in "/._-@:?=&%+~" for c in text) and text[0] not in "@%&?":
        return text
    return "'" + text.replace("'", "''") + "'"
