"""Input digests: what each interval of a node read, per source.

``execute`` records them with every completion and ``verify`` recomputes and compares them
later (late data); apart from ``verify``, a run imports none of that policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..engines import EngineError
from ..errors import ProjectError
from ..project import Project, SourceNode
from .common import Pair
from .plan import undeclared_time_tables

if TYPE_CHECKING:
    from ..engines.base import Digest


def digest_sources(project: Project, name: str) -> list[tuple[str, str]]:
    """(source, time column) of each source the node reads directly and can place in time:
    declared sources with a ``time_column``, and tables its SQL reads without declaring
    them, with the column of its own ``>= '{{ start }}'`` filter.  (Upstream nodes are
    covered by their own digests: a restatement there cascades here.)"""
    node = project.nodes[name]
    out: dict[str, str] = {}
    for dep in node.depends_on:
        source = project.sources.get(dep)
        if source is not None and source.time_column:
            out[dep] = source.time_column
    for table, column in undeclared_time_tables(project, node):
        out.setdefault(table, column)
    return sorted(out.items())


def source_node(project: Project, name: str) -> SourceNode:
    return project.sources.get(name) or SourceNode(name=name, table=name)


def read_digests(engine, project: Project, node_name: str, intervals: list[Pair]
                 ) -> tuple[dict[Pair, dict[str, Digest]], list[str]]:
    """Digests of the node's ``digest_sources`` over ``intervals`` through ``engine``, one
    grouped query per source: (interval -> source -> digest, a line per source that could
    not be read).  An engine without ``digests`` gives none."""
    compute = getattr(engine, "digests", None)
    out: dict[Pair, dict[str, Digest]] = {p: {} for p in intervals}
    problems: list[str] = []
    if compute is None or not intervals:
        return out, problems
    node = project.nodes[node_name]
    for source, column in digest_sources(project, node_name):
        try:
            found = compute(source_node(project, source), column, node.timezone, intervals)
        except (EngineError, ProjectError) as exc:
            problems.append(f"{source}: {' '.join(str(exc).split())}")
            continue
        for pair, digest in found.items():
            out[pair][source] = digest
    return out, problems


__all__ = ["digest_sources", "read_digests", "source_node"]
