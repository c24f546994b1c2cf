"""The loaded project: settings, nodes, and the dependency graph between transforms."""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterable
from functools import cached_property
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from ..engines import DEFAULT_ENGINE
from ..errors import ProjectError, did_you_mean
from ..templating import split_id
from .nodes import DEFAULT_DATABASE, DEFAULT_STATE, SourceNode, TransformNode
from .sql import DEFAULT_DIALECT


class Project:
    """A loaded, validated project and its dependency graph (transforms only)."""

    def __init__(
        self,
        *,
        name: str,
        root: Path,
        nodes: dict[str, TransformNode],
        sources: dict[str, SourceNode] | None = None,
        timezone: str = "UTC",
        start: dt.datetime | None = None,
        state_config: dict | None = None,
        database_path: Path | None = None,
        description: str | None = None,
        config_path: Path | None = None,
        end: dt.datetime | None = None,
        engine_config: dict | None = None,
        dialect: str = DEFAULT_DIALECT,
        on_change: str = "warn",
    ):
        self.name = name
        self.root = Path(root).resolve()
        self.timezone = timezone
        self.start = start
        self.state_config = dict(DEFAULT_STATE if state_config is None else state_config)
        self.database_path = Path(database_path or self.root / DEFAULT_DATABASE).resolve()
        self.target_dir = self.root / "target"
        self.description = description
        self.config_path = config_path
        self.end = end
        self.engine_config = dict(engine_config or {"type": DEFAULT_ENGINE})
        self.dialect = dialect
        self.on_change = on_change
        self.nodes = dict(sorted(nodes.items()))
        self.sources = dict(sorted((sources or {}).items()))
        self._upstream = {
            n: [d for d in node.depends_on if d in self.nodes] for n, node in self.nodes.items()
        }
        self._order = _topological(self._upstream, self.nodes)
        self._rank = {n: i for i, n in enumerate(self._order)}
        self._downstream: dict[str, list[str]] = {n: [] for n in [*self.nodes, *self.sources]}
        for n in self._order:
            for dep in self.nodes[n].depends_on:
                self._downstream.setdefault(dep, []).append(n)

    def __repr__(self) -> str:
        return (f"Project({self.name!r}, root={str(self.root)!r}, nodes={len(self.nodes)}, "
                f"sources={len(self.sources)})")

    @cached_property
    def relation_names(self) -> frozenset[str]:
        """Lower-case names the SQL of a node can read as part of the project: transforms,
        sources and the sources' tables (computed once: start inference asks per node)."""
        names = {n.lower() for n in (*self.sources, *self.nodes)}
        names.update(s.table.lower() for s in self.sources.values() if s.table)
        return frozenset(names)

    def with_nodes(self, nodes: dict[str, TransformNode]) -> Project:
        """A copy with the same settings whose transforms are ``nodes`` (graph rebuilt)."""
        return Project(
            name=self.name, root=self.root, nodes=nodes, sources=self.sources,
            timezone=self.timezone, start=self.start, state_config=self.state_config,
            database_path=self.database_path, description=self.description,
            config_path=self.config_path, end=self.end, engine_config=self.engine_config,
            dialect=self.dialect, on_change=self.on_change,
        )

    def with_database(self, path: str | Path) -> Project:
        """A copy whose DuckDB file is ``path`` (a door's ``database_path`` override), so
        everything that reads the file through the project reads that one."""
        copy = self.with_nodes(self.nodes)
        copy.database_path = Path(path).resolve()
        return copy

    def _lookup(self, name_or_id: str) -> TransformNode | SourceNode | None:
        kind, name = split_id(name_or_id)
        tables = {"transform": (self.nodes,), "source": (self.sources,)}.get(
            kind, (self.nodes, self.sources))
        for table in tables:
            if name in table:
                return table[name]
            for key, value in table.items():
                if key.lower() == name.lower():
                    return value
        return None

    def resolve(self, name_or_id: str) -> TransformNode | SourceNode:
        """A transform or source by name or id (``transform.x`` / ``source.x``)."""
        found = self._lookup(name_or_id)
        if found is None:
            known = [*self.nodes, *self.sources]
            raise ProjectError(f"unknown node '{name_or_id}'" + (
                did_you_mean(split_id(name_or_id)[1], known)
                or (f" — known: {', '.join(known[:12])}" if known else
                    " — the project defines no nodes")))
        return found

    def node(self, name_or_id: str) -> TransformNode:
        """A transform by name or ``transform.`` id; ProjectError naming the closest match."""
        found = self._lookup(name_or_id)
        if isinstance(found, SourceNode):
            raise ProjectError(f"'{name_or_id}' is a source, not a transform: sources are "
                               "read by transforms and never run themselves")
        if found is None:
            known = list(self.nodes)
            hint = did_you_mean(split_id(name_or_id)[1], known) or (
                f" — transforms: {', '.join(known[:12])}" if known
                else " — the project defines no transforms (add seeknal/transforms/*.yml)")
            raise ProjectError(f"unknown node '{name_or_id}'{hint}")
        return found

    def source(self, name_or_id: str) -> SourceNode:
        found = self._lookup(name_or_id)
        if not isinstance(found, SourceNode):
            raise ProjectError(f"unknown source '{name_or_id}'"
                               + did_you_mean(split_id(name_or_id)[1], self.sources))
        return found

    def topological_order(self, names: Iterable[str] | None = None) -> list[str]:
        """Transform names, upstream first; ties broken by name, so the order is stable."""
        if names is None:
            return list(self._order)
        wanted = {self.node(n).name for n in names}
        return sorted(wanted, key=self._rank.__getitem__)

    def upstream(self, name: str) -> list[str]:
        """Direct transform upstreams of a transform, in topological order."""
        return sorted(self._upstream[self.node(name).name], key=self._rank.__getitem__)

    def downstream(self, name: str, transitive: bool = True) -> list[str]:
        """Transforms that read ``name`` (a transform or source), in topological order."""
        start = self.resolve(name).name
        seen: set[str] = set()
        stack = list(self._downstream.get(start, ()))
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                if transitive:
                    stack.extend(self._downstream.get(n, ()))
        return sorted(seen, key=self._rank.__getitem__)




def _topological(upstream: dict[str, list[str]], nodes: dict[str, TransformNode]) -> list[str]:
    """graphlib's order with a name-ordered frontier (stable across loads); a cycle is a
    ProjectError naming it."""
    sorter = TopologicalSorter(upstream)
    try:
        sorter.prepare()
    except CycleError as exc:
        cycle = _canonical_cycle(exc.args[1])
        where = nodes[cycle[0]].path
        raise ProjectError(
            f"dependency cycle: {' -> '.join(cycle)}"
            + (f" (starting in {where})" if where else "")
            + " — remove one of these references"
        ) from None
    ready = list(sorter.get_ready())
    heapq.heapify(ready)
    order = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        sorter.done(n)
        for child in sorter.get_ready():
            heapq.heappush(ready, child)
    return order


def _canonical_cycle(found: list[str]) -> list[str]:
    """graphlib's cycle ``[a, b, ..., a]`` (each node upstream of the next, so in data-flow
    order: b reads a) rotated to start at its smallest name."""
    cycle = list(found[:-1])
    k = cycle.index(min(cycle))
    cycle = cycle[k:] + cycle[:k]
    return cycle + [cycle[0]]
