"""Engines: the contract (base.py) and its implementations, one module each, opened by name.

``open_engine("duckdb", project)`` imports an implementation only when its kind is
opened, so a DuckDB-only run never imports pyspark (and the CLI's cheap commands import
neither).  A new engine is one module here and one line in ``ENGINES``.
"""

from __future__ import annotations

import weakref
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..errors import ProjectError
from .base import BatchError, Engine, EngineError, QueryError, ResourceError

if TYPE_CHECKING:
    from ..project import Project

#: engine kind (what ``engine:`` selects) -> "module:class", imported on first use
ENGINES: dict[str, str] = {
    "duckdb": "seeknal_core.engines.duckdb:DuckDBEngine",
    "spark": "seeknal_core.engines.spark:SparkEngine",
}


def open_engine(kind: str, project: Project, **options: Any) -> Engine:
    """A new engine of ``kind`` for ``project``; the caller closes it.  ``options`` go to
    the implementation (DuckDB: ``connection=``, ``in_memory=``)."""
    target = ENGINES.get(kind)
    if target is None:
        raise ProjectError(f"unknown engine {kind!r}: use one of {', '.join(sorted(ENGINES))}")
    module, _, name = target.partition(":")
    engine = getattr(import_module(module), name)(project, **options)
    _OPEN.add(engine)
    return engine


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


__all__ = ["ENGINES", "BatchError", "Engine", "EngineError", "QueryError", "ResourceError",
           "interrupt_open_engines", "open_engine"]
