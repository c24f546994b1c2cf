"""The engine contract: what the runner needs from whatever computes a node's SQL.

The runner plans intervals and records state; an engine only turns a node's rendered
SQL into rows for a contiguous run of intervals, replacing exactly those intervals'
rows (re-running an interval never duplicates data).  The runner talks to engines only
through this protocol and the three error classes below, so it never imports duckdb or
pyspark and a new engine plugs in here.

Intervals cross this boundary as integer epoch seconds ``(start, end)``, half-open, one
batch's intervals contiguous (each interval's ``end`` is the next one's ``start``), as
everywhere inside the core; engines build datetimes or literals from them at their own edge.

A write is stage -> audit -> commit: ``stage`` computes a batch and holds its rows where
only the engine sees them (DuckDB: inside the open transaction; Spark: under a staging
directory), ``Staged.check`` runs the node's audits on exactly those rows, and only
``Staged.commit`` makes them visible (or ``rollback`` discards them, leaving the
previous rows of those intervals in place).  ``write_intervals`` is stage + commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..errors import SeeknalError

if TYPE_CHECKING:
    from ..project import SourceNode, TransformNode
    from ..project.audits import Audit

Pair = tuple[int, int]

#: what a source held in one interval: (rows, newest time as epoch microseconds of the
#: column's value (naive values as written) or None when empty, checksum text
#: ``<kind>:<16 hex digits>``: an order-independent XOR of per-row hashes, comparable only
#: with checksums of the same kind; "" when empty)
Digest = tuple[int, int | None, str]


class EngineError(SeeknalError):
    """Something an engine could not do; subclasses tell the runner how to react."""


class QueryError(EngineError):
    """The SQL itself is wrong (syntax, unknown column or table): every interval of the
    batch would fail the same way, so the runner fails the batch once, without splitting."""


class BatchError(EngineError):
    """The query failed on this batch's data (a cast, a constraint): the runner splits
    the batch to isolate the failing intervals and lets the good ones complete."""


class ResourceError(EngineError):
    """The machine, not the SQL (disk full, database locked, lost connection): nothing
    later in the run can succeed, so the runner stops at once and records one failure."""


#: one audit's outcome on some rows: (offending rows, up to 5 of them as column -> value)
Outcome = tuple[int, tuple[dict, ...]]


@runtime_checkable
class Staged(Protocol):
    """A batch computed but not yet visible: its rows replace the intervals' old rows only
    on ``commit``.  Exactly one of ``commit``/``rollback`` is called, on the same thread,
    before the engine stages anything else (an engine stages one batch at a time).

    ``relation`` is SQL naming the staged rows (a quoted name or a parenthesised query,
    usable after FROM in the engine's own SQL), valid until commit/rollback; ``rows`` the
    rows staged per interval, in the order given to ``stage``."""

    relation: str
    rows: list[int]

    def check(self, audits: Sequence[Audit]) -> list[Outcome]:
        """Run ``audits`` on the staged rows (nothing else): one ``Outcome`` per audit, in
        order.  ``unique`` and ``row_count`` hold within each interval, not across the
        batch.  Engines should count cheaply (the built-ins in one aggregate pass:
        ``audits.aggregate_sql``) and fetch samples only for failures.  A custom audit's
        SQL that fails raises ``QueryError`` naming the audit; the staging stays open."""
        ...

    def commit(self) -> None:
        """Publish the staged rows atomically: the intervals' old rows (and partition keys)
        are replaced.  Raises ``ResourceError`` (nothing published) or ``BatchError``."""
        ...

    def rollback(self) -> None:
        """Discard the staged rows; the intervals keep what they had.  Never raises."""
        ...


@runtime_checkable
class Engine(Protocol):
    """One engine instance serves one run; the runner closes what it opened.

    An engine whose SQL is not DuckDB's also has ``render_sql(node, start, end) -> str``
    (Spark's transpiles once per node); the runner then passes what it renders as ``sql``.
    Optional too: ``output_columns(node) -> [(name, type), ...]``, the written output's
    schema (``NodeResult.columns``: Dagster's ``dagster/column_schema``)."""

    #: ``"duckdb"`` or ``"spark"``: what ``engine:`` in a project or node selects
    name: str

    def write_intervals(
        self,
        node: TransformNode,
        sql: str,
        intervals: Sequence[Pair],
        partition_keys: Sequence[str] = (),
    ) -> list[int]:
        """Replace the node's rows for the contiguous ``intervals`` with ``sql``'s rows
        that fall inside them, atomically; return the rows written per interval, in the
        order given.  Raises ``QueryError``, ``BatchError`` or ``ResourceError``."""
        ...

    def stage(
        self,
        node: TransformNode,
        sql: str,
        intervals: Sequence[Pair],
        partition_keys: Sequence[str] = (),
    ) -> Staged:
        """Compute ``sql``'s rows inside the contiguous ``intervals`` and hold them unpublished
        (see ``Staged``).  Raises ``QueryError``, ``BatchError`` or ``ResourceError`` with
        nothing staged.  On DuckDB the staged rows sit in the node's table inside an open
        transaction; on Spark under a staging directory, published as the intervals'
        directories by ``commit``."""
        ...

    def audit_intervals(self, node: TransformNode, audits: Sequence[Audit],
                        intervals: Sequence[Pair]) -> list[dict[Pair, Outcome]]:
        """``seeknal audit``: check completed, contiguous ``intervals`` of the node's
        published rows without recomputing them, one query per audit over the whole run
        (not per interval).  Per audit, in order: the failing intervals with their outcome
        (passing intervals are absent)."""
        ...

    def replace_table(self, node: TransformNode, sql: str) -> int:
        """Full refresh of an unscheduled node; returns its row count.  An engine that can
        audit table nodes also has ``stage_replace(node, sql) -> Staged`` (the new table
        unpublished, no intervals, ``rows == [total]``: its audits see the whole table) and
        ``audit_table(node, audits) -> list[Outcome] | None`` (``seeknal audit`` over the
        published table; ``None`` before its first build); without them the runner refuses
        a table node's audits in one line."""
        ...

    def earliest(self, source: SourceNode, column: str, timezone: str | None = None) -> int | None:
        """The smallest value of ``column`` in ``source`` as epoch seconds (``None`` when
        it is empty): one cheap query, used to infer a node's start when it sets none.
        Naive values are wall clock in ``timezone`` (the node's; default the project's)."""
        ...

    def latest(self, source: SourceNode, column: str, timezone: str | None = None) -> int | None:
        """The largest value of ``column`` in ``source`` as epoch seconds (``None`` when
        empty), like ``earliest``: the source's watermark for readiness, one query."""
        ...

    def instant(self, sql: str, timezone: str | None = None) -> int | None:
        """The one value ``sql`` returns (a timestamp or date) as epoch seconds, ``None``
        for NULL: a ``ready: {sql: ...}`` readiness query, run in this engine's SQL."""
        ...

    def close(self) -> None: ...

    # Optional: ``digests(source, column, timezone, intervals) -> {Pair: Digest}`` — the
    # rows of ``source`` in each interval (``column`` in ``[start, end)``, naive values
    # read in ``timezone``) summarised by ONE grouped query; every interval is in the
    # answer (an empty one as ``(0, None, "")``).  An engine without it records no digests
    # and its nodes' intervals are unverifiable (``seeknal intervals verify``).



def publish(staged: Staged) -> list[int]:
    """``stage`` then ``commit`` with no audit (``Engine.write_intervals``): the staged rows
    are published, or rolled back if publishing fails; rows per interval."""
    try:
        staged.commit()
    except BaseException:
        staged.rollback()
        raise
    return staged.rows


__all__ = ["BatchError", "Digest", "Engine", "EngineError", "Outcome", "Pair", "QueryError", "ResourceError",
           "publish",
           "Staged"]
