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

from .backends import BACKENDS, backend, backend_of
from .base import StateError, StateStore

__all__ = ["CopyReport", "copy_state", "describe", "open_destination", "state_block"]


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
    """The store to copy into, of backend ``to`` (``backends.BACKENDS``): ``postgres`` needs
    ``dsn``; ``json`` takes ``path`` (default ``target/run_state.json``, relative to the
    project).  Checked before anything is opened, locked or copied there."""
    chosen = backend(to)
    given = {k: v for k, v in (("dsn", dsn), ("schema", schema), ("path", path)) if v is not None}
    foreign = [k for k in given if k not in chosen.migrate_options]
    if foreign:
        owners = " or ".join(b.name for b in BACKENDS.values() if set(foreign) & set(b.migrate_options))
        flags = " and ".join(f"--{k}" for k in foreign)
        takes = " and ".join(f"--{k}" for k in chosen.migrate_options) or "no option"
        raise StateError(f"{flags} {'is' if len(foreign) == 1 else 'are'} for --to {owners}; "
                         f"--to {chosen.name} takes {takes}")
    root = Path(project_root)
    chosen.check_destination(root, given)
    return chosen.open(root, given)


def same_store(a: StateStore, b: StateStore) -> bool:
    """Whether ``a`` and ``b`` keep anything in the same place (a copy would read its own writes)."""
    kind = backend_of(a)
    return kind is not None and kind is backend_of(b) and bool(kind.places(a) & kind.places(b))


def describe(store: StateStore) -> str:
    """A short, password-free name of a store for messages."""
    kind = backend_of(store)
    return repr(store) if kind is None else kind.describe(store)


def state_block(store: StateStore, project_root: str | os.PathLike[str] | None = None) -> str:
    """The ``state:`` section of ``seeknal_project.yml`` that selects ``store``."""
    kind = backend_of(store)
    if kind is None:
        raise TypeError(f"no state: block for {store!r}")
    root = None if project_root is None else Path(project_root)
    options = kind.config(store, root)
    lines = ["state:", f"  backend: {kind.name}", *(f"  {k}: {_yaml(v)}" for k, v in options.items())]
    return "\n".join(lines)


def _yaml(text: str) -> str:
    """A YAML scalar: quoted when plain style would change its meaning."""
    if text and all(c.isalnum() or c in "/._-@:?=&%+~" for c in text) and text[0] not in "@%&?":
        return text
    return "'" + text.replace("'", "''") + "'"
