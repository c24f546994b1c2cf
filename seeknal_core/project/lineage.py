"""Column lineage of a project's transforms, as ``seeknal plan`` reads it (``changes.analyse``
over each node's SQL with its upstream transforms' output columns as the schema), memoised
in the load cache (``sql.lineage``) so a warm load parses no SQL."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from .graph import Project
from .sql import lineage

_BY_PROJECT: WeakKeyDictionary[Project, dict[str, list]] = WeakKeyDictionary()


def _analysed(project: Project, name: str) -> list:
    """``[outputs, lineage]`` of one transform, upstream transforms first."""
    done = _BY_PROJECT.setdefault(project, {})
    if name not in done:
        for upstream in project.upstream(name):  # topological: depth never exceeds the DAG's
            if upstream not in done:
                _analysed(project, upstream)
        schema = {u.lower(): done[u][0] for u in project.upstream(name) if done[u][0] is not None}
        node = project.nodes[name]
        done[name] = lineage(node.name, node.sql, node.dialect, schema)
    return done[name]


def column_lineage(project: Project, name: str) -> dict[str, dict[str, list[str]]] | None:
    """Output column -> {table read: [its columns]} of transform ``name``, or None when its
    SQL cannot be analysed exactly (see ``changes.column_lineage``)."""
    return _analysed(project, name)[1]


__all__ = ["column_lineage"]
