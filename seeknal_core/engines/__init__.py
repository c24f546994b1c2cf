"""Engines: the contract (base.py), their capabilities (``EngineKind``, below) and their
implementations, one module each, opened by name.

``open_engine("duckdb", project)`` imports an implementation only when its kind is
opened, so a DuckDB-only run never imports pyspark (and the CLI's cheap commands import
neither).  What the rest of seeknal needs to know about an engine before opening one
(the Dagster pool and kinds of its nodes, whether they use the project's DuckDB file,
where other engines read its output) is its ``EngineKind`` here, readable without
importing the engine: a Dagster load never imports pyspark.

A new engine is one module (a class with the ``Engine`` protocol) and one
``register(EngineKind(...))`` line: see docs/architecture.md, "Adding an engine".
This module imports nothing of the project at run time, so project validation reads the
engine names from it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from importlib import import_module
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ProjectError
from .base import BatchError, Engine, EngineError, QueryError, ResourceError

if TYPE_CHECKING:
    from ..project import Project, TransformNode

#: where a node's output lives, which says how any engine reads it:
#: a table named after the node in the project's DuckDB file
DATABASE = "database"
#: Parquet files ``target/data/<node>/*.parquet``, one per interval (or the whole table)
FILES = "files"
#: a Parquet dataset ``target/data/<node>/``, Hive-partitioned by ``seeknal_interval=<key>/``
#: per interval (an unscheduled node: plain ``*.parquet`` files in the folder)
DATASET = "dataset"
LAYOUTS = (DATABASE, FILES, DATASET)


class EngineKind(NamedTuple):  # immutable like a frozen dataclass, ~0.4 ms less to create at start-up
    """What an engine can do, known without importing it.

    ``outputs`` maps a node's materialization to the layout of what it writes (a
    materialization missing from it is refused at load); ``reads_database``: it reads
    table sources and ``database`` outputs through the project's DuckDB file, so its nodes
    that do use that file (``uses_database``) share its single-writer lock.  ``pool``: the
    Dagster concurrency pool of every node it runs (None: the DuckDB file's pool when the
    node uses the file, else none, so they run in parallel); ``dagster_kinds``: the kinds
    Dagster shows; ``session_resource``: the Dagster resource whose session it computes in
    (handed to the engine as ``session=``); ``run_per_range``: starting it costs seconds,
    so a Dagster backfill gives it one run per range rather than one per partition;
    ``syntax``: "module:function" returning why one rendered query does not parse (None
    when it does), without a session or a database, so a plan refuses broken SQL before it
    records anything (None: the engine has no parser that cheap; its SQL is checked when run).
    """

    name: str
    target: str  # "module:Class", imported by ``open_engine``
    outputs: Mapping[str, str] = MappingProxyType({})
    reads_database: bool = False
    pool: str | None = None
    dagster_kinds: tuple[str, ...] = ("sql",)
    session_resource: str | None = None
    run_per_range: bool = False
    syntax: str | None = None


#: engine name (what ``engine:`` selects) -> its capabilities; the first is the default
ENGINES: dict[str, EngineKind] = {}


def register(kind: EngineKind) -> EngineKind:
    """Make an engine selectable by ``engine: <name>`` (its module imported on first use)."""
    unknown = [layout for layout in kind.outputs.values() if layout not in LAYOUTS]
    if unknown:
        raise ValueError(f"engine {kind.name!r}: unknown output layout {unknown[0]!r}: use one of "
                         f"{', '.join(LAYOUTS)}")
    ENGINES[kind.name] = kind
    return kind


register(EngineKind("duckdb", "seeknal_core.engines.duckdb:DuckDBEngine",
                    outputs={"incremental": DATABASE, "table": DATABASE, "parquet": FILES},
                    reads_database=True, dagster_kinds=("duckdb", "sql"),
                    syntax="seeknal_core.engines.duckdb:syntax_error"))
register(EngineKind("spark", "seeknal_core.engines.spark:SparkEngine",
                    outputs={"incremental": DATASET, "table": DATASET, "parquet": DATASET},
                    pool="seeknal_spark", dagster_kinds=("spark", "sql"), session_resource="pyspark",
                    run_per_range=True))

#: what a node or project without ``engine:`` runs on
DEFAULT_ENGINE = "duckdb"


def engine_kind(name: str) -> EngineKind:
    """The capabilities of the engine ``name``; unknown names are a project error."""
    kind = ENGINES.get(name)
    if kind is None:
        raise ProjectError(f"unknown engine {name!r}: use one of {', '.join(sorted(ENGINES))}")
    return kind


def _imported(target: str) -> Any:
    """What a "module:name" target of an ``EngineKind`` names, its module imported now."""
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)


def syntax_error(node: TransformNode, sql: str) -> str | None:
    """Why ``sql`` (the node's rendered query) does not parse in its engine, or None (also
    when the engine offers no cheap parser: ``EngineKind.syntax``)."""
    target = engine_kind(node.engine).syntax
    if target is None:
        return None
    return _imported(target)(sql)


def output_layout(node: TransformNode) -> str:
    """Where the node's output lives (``DATABASE``, ``FILES`` or ``DATASET``)."""
    return engine_kind(node.engine).outputs[node.materialization]


def uses_database(project: Project, node: TransformNode) -> bool:
    """Whether running the node reads or writes the project's DuckDB file: it writes a
    ``database`` output, or its engine reads through the file and it reads a table source
    or another node's ``database`` output.  Nodes that do not never contend for the file's
    single-writer lock, so parallel workers run them side by side."""
    kind = engine_kind(node.engine)
    if not kind.reads_database:
        return False
    if kind.outputs[node.materialization] == DATABASE:
        return True
    for dep in node.depends_on:
        source = project.sources.get(dep)
        if source is not None and not source.location:
            return True
        other = project.nodes.get(dep)
        if other is not None and output_layout(other) == DATABASE:
            return True
    return False


def open_engine(kind: str, project: Project, **options: Any) -> Engine:
    """A new engine of ``kind`` for ``project``; the caller closes it.  ``options`` go to
    the implementation (``connection=``, ``in_memory=`` for an engine that reads the
    project database; ``session=`` for one with a ``session_resource``)."""
    engine = _imported(engine_kind(kind).target)(project, **options)
    _OPEN.add(engine)
    return engine


#: what a door hands in per engine name: a context manager giving ``open_engine``'s
#: options (Dagster: the DuckDBResource's connection), entered when a node first needs it
EngineOptions = Mapping[str, Callable[[], AbstractContextManager[dict]]]


class EnginePool:
    """The engines of one run, by name: those handed in, else opened when a node first
    needs its engine (with the door's ``options``, when it gave some); ``close`` closes
    only what the pool opened.  A run whose nodes do not use the project's DuckDB file
    opens it in memory (``in_memory=True``): no lock to share with other workers."""

    def __init__(self, project: Project, given: Engine | Mapping[str, Engine] | None = None,
                 options: EngineOptions | None = None, *, database: bool = True):
        self.project = project
        self.database = database
        given = {} if given is None else given
        self._by_name: dict[str, Engine] = dict(given) if isinstance(given, Mapping) else {given.name: given}
        self._options = dict(options or {})
        self._opened: list[Engine] = []
        self._stack = ExitStack()

    def for_node(self, node: TransformNode) -> Engine:
        return self.get(node.engine)

    def project_own(self, name: str) -> bool:
        """Whether engine ``name`` reads the project's own database file (not an engine
        or a connection the door handed in, nor an in-memory one)."""
        opened = self._by_name.get(name)
        return (name not in self._options and self.database
                and (opened is None or opened in self._opened))

    def get(self, name: str) -> Engine:
        engine = self._by_name.get(name)
        if engine is None:
            kind = engine_kind(name)
            options: dict[str, Any] = {}
            if name in self._options:
                options = dict(self._stack.enter_context(self._options[name]()))
            elif kind.reads_database and not self.database:
                options = {"in_memory": True}
            engine = open_engine(name, self.project, **options)
            self._by_name[name] = engine
            self._opened.append(engine)
        return engine

    def close(self) -> None:
        try:
            for engine in reversed(self._opened):
                engine.close()
        finally:
            self._opened.clear()
            self._stack.close()


#: engines opened here and not yet garbage: what Ctrl-C interrupts
_OPEN: weakref.WeakSet = weakref.WeakSet()


def interrupt_open_engines() -> bool:
    """Ask every open engine to stop its running write (``interrupt()``, where it has one);
    whether one was running (it then raises ``KeyboardInterrupt`` itself, once rolled back).

    Called when SIGINT arrives (``cli/interrupt.py``), from a thread too: a query that runs
    in C with the GIL released never lets Python's own SIGINT handler run until it ends."""
    stopped = False
    for engine in list(_OPEN):
        stop = getattr(engine, "interrupt", None)
        if stop is not None and stop():
            stopped = True
    return stopped


__all__ = ["DATABASE", "DATASET", "DEFAULT_ENGINE", "ENGINES", "FILES", "LAYOUTS", "BatchError", "Engine",
           "EngineError", "EngineKind", "EngineOptions", "EnginePool", "QueryError", "ResourceError",
           "engine_kind", "interrupt_open_engines", "open_engine", "output_layout", "register",
           "uses_database"]
