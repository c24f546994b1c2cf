"""Audits: checks a node's rows must pass before an interval counts as complete.

An audit is part of a node's definition (``audits:`` in its YAML).  It renders as a
DuckDB-dialect query returning the *offending* rows of a relation: the rows one batch
wrote (before commit) or the rows of a run of completed intervals (``seeknal audit``).
Zero offending rows is a pass.  Engines run these queries; the runner decides what a
failure does (``blocking``: roll back and fail the interval; else a warning).

Nothing here imports duckdb, sqlglot or jinja2: nodes carry their audits through cold
project loads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .nodes import TransformNode

#: the built-in kinds, and ``sql`` for a custom query
KINDS = ("not_null", "unique", "accepted_values", "accepted_range", "row_count", "sql")
#: kinds whose violations are a predicate over single rows (counted in one aggregate pass)
ROW_KINDS = ("not_null", "accepted_values", "accepted_range")
#: up to this many offending rows are fetched as samples of a failure
SAMPLES = 5
#: the column of an audited relation naming each row's interval (its start), when the
#: relation holds several intervals (a coalesced batch, or a run in ``seeknal audit``)
INTERVAL_COLUMN = "_seeknal_interval"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: object) -> str:
    """A YAML scalar as a DuckDB literal (strings quoted; dates as strings, cast by DuckDB)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


class Audit(NamedTuple):  # immutable like a frozen dataclass, ~0.4 ms less to create at start-up
    """One audit of a node.

    ``name`` defaults to the kind (``name:`` overrides; two audits of a node may not share
    one).  Arguments by kind: ``columns`` (not_null, unique: the combination is unique
    within the interval; accepted_values and accepted_range: the one column), ``values``
    (accepted_values), ``min``/``max`` (accepted_range: inclusive column bounds; row_count:
    inclusive bounds on the rows an interval wrote), ``sql`` (a custom query returning the
    offending rows; ``{{ this }}`` is the audited rows, ``{{ start }}``/``{{ end }}`` render
    as in node SQL).  NULLs pass accepted_values and accepted_range (use not_null).
    """

    name: str
    kind: str
    blocking: bool = True
    columns: tuple[str, ...] = ()
    values: tuple = ()
    min: int | float | str | None = None
    max: int | float | str | None = None
    sql: str | None = None

    # -- what it checks --------------------------------------------------------------------
    @property
    def column(self) -> str | None:
        """The one column of accepted_values and accepted_range."""
        return self.columns[0] if self.columns else None

    def predicate(self) -> str | None:
        """For row-wise kinds (``ROW_KINDS``): true exactly for an offending row."""
        if self.kind == "not_null":
            return " OR ".join(f"{_q(c)} IS NULL" for c in self.columns)
        if self.kind == "accepted_values":
            values = ", ".join(literal(v) for v in self.values)
            return f"{_q(self.columns[0])} NOT IN ({values})"
        if self.kind == "accepted_range":
            col = _q(self.columns[0])
            terms = [f"{col} < {literal(self.min)}" if self.min is not None else "",
                     f"{col} > {literal(self.max)}" if self.max is not None else ""]
            return " OR ".join(t for t in terms if t)
        return None

    def failing_counts(self, counts: Sequence[int]) -> list[int]:
        """``row_count``: the indexes of the intervals whose row counts are out of bounds."""
        return [i for i, n in enumerate(counts)
                if (self.min is not None and n < float(self.min))
                or (self.max is not None and n > float(self.max))]

    def query(self, relation: str, *, node: TransformNode | None = None,
              start: dt.datetime | None = None, end: dt.datetime | None = None,
              interval_column: str | None = None) -> str:
        """A DuckDB query returning the offending rows of ``relation`` (SQL after FROM:
        a quoted name or a parenthesised query).

        ``interval_column`` names the relation's column that tells each row's interval
        when it holds several (``unique`` is then checked within each interval).
        ``row_count`` returns one row ``(rows)`` when the relation's count is out of
        bounds (several intervals: use :meth:`failing_counts` on per-interval counts).
        A custom ``sql`` audit is rendered with ``node``'s templating: ``{{ this }}`` is
        ``relation``, ``{{ start }}``/``{{ end }}`` the interval (``start``, ``end``).
        """
        if self.kind in ROW_KINDS:
            return f"SELECT * FROM {relation} AS t WHERE {self.predicate()}"
        if self.kind == "unique":
            keys = ", ".join(_q(c) for c in (*self.columns, *((interval_column,) if interval_column else ())))
            return (f"SELECT * EXCLUDE (_seeknal_n) FROM (SELECT *, count(*) OVER (PARTITION BY {keys}) "
                    f"AS _seeknal_n FROM {relation} AS t) AS t WHERE _seeknal_n > 1")
        if self.kind == "row_count":
            bounds = [f"count(*) < {literal(self.min)}" if self.min is not None else "",
                      f"count(*) > {literal(self.max)}" if self.max is not None else ""]
            return (f"SELECT count(*) AS rows FROM {relation} AS t "
                    f"HAVING {' OR '.join(b for b in bounds if b)}")
        return self.render_sql(relation, node, start, end)

    def render_sql(self, relation: str, node: TransformNode | None,
                   start: dt.datetime | None, end: dt.datetime | None) -> str:
        """A custom audit's SQL rendered like its node's (``{{ this }}`` is ``relation``)."""
        import dataclasses

        from ..templating import quote_identifier, render_sql

        if node is None:
            raise ValueError(f"audit '{self.name}': a custom audit renders with its node")
        own = dataclasses.replace(node, sql=self.sql or "", audits=())
        return render_sql(own, start, end,
                          relation_for=lambda name: relation if name == node.name else quote_identifier(name))

    def duplicates_sql(self, relation: str, interval_column: str | None = None) -> str:
        """``unique``: one aggregate over ``relation`` counting the rows whose key repeats."""
        keys = ", ".join(_q(c) for c in (*self.columns, *((interval_column,) if interval_column else ())))
        return (f"SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {relation} AS t "
                f"GROUP BY {keys} HAVING count(*) > 1)")

    # -- how it is reported ----------------------------------------------------------------
    def failure(self, rows: int, samples: Sequence[dict] = ()) -> str:
        """``audit <name> failed: N rows`` (what errors, warnings and restatements say);
        ``row_count`` says what was written (its ``rows`` count failing intervals)."""
        if self.kind == "row_count" and samples:
            return (f"audit {self.name} failed: {samples[0].get('rows')} rows written, "
                    f"expected {self.bounds_text()}")
        return f"audit {self.name} failed: {rows} {'row' if rows == 1 else 'rows'}"

    def bounds_text(self) -> str:
        if self.min is not None and self.max is not None:
            return f"{self.min} to {self.max}"
        return f">= {self.min}" if self.min is not None else f"<= {self.max}"

    def spec(self) -> dict:
        """The audit as its YAML would state it (canonical): what ``definition`` records."""
        out: dict = {"name": self.name, "kind": self.kind, "blocking": self.blocking}
        if self.columns:
            out["columns"] = list(self.columns)
        if self.values:
            out["values"] = list(self.values)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.sql is not None:
            out["sql"] = " ".join(self.sql.split())
        return out


def aggregate_sql(audits: Sequence[Audit], relation: str, interval_column: str | None = None) -> str | None:
    """One query, one row: the offending-row count of every row-wise and ``unique`` audit
    in ``audits`` (one column each, in order); ``None`` when none is of those kinds.

    One scan of ``relation``: with a ``unique`` audit, grouped by its key (and
    ``interval_column``), the row-wise counts summed over the groups and the duplicates
    counted from the groups holding more than one row; every further ``unique`` audit is
    one more GROUP BY subquery.  Samples are fetched only for the audits that fail
    (:meth:`Audit.query` with ``LIMIT``)."""
    checked = [a for a in audits if a.kind in ROW_KINDS or a.kind == "unique"]
    first = next((a for a in checked if a.kind == "unique"), None)
    if first is None:
        if not checked:
            return None
        terms = ", ".join(f"count(*) FILTER (WHERE {a.predicate()})" for a in checked)
        return f"SELECT {terms} FROM {relation} AS t"
    inner, outer = ["count(*) AS _seeknal_n"], []
    for k, a in enumerate(checked):
        if a is first:
            outer.append("coalesce(sum(_seeknal_n) FILTER (WHERE _seeknal_n > 1), 0)")
        elif a.kind == "unique":
            outer.append(f"({a.duplicates_sql(relation, interval_column)})")
        else:
            inner.append(f"count(*) FILTER (WHERE {a.predicate()}) AS _seeknal_r{k}")
            outer.append(f"coalesce(sum(_seeknal_r{k}), 0)")
    keys = ", ".join(_q(c) for c in (*first.columns, *((interval_column,) if interval_column else ())))
    return (f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM {relation} AS t "
            f"GROUP BY {keys}) AS g")


class AuditResult(NamedTuple):  # immutable like a frozen dataclass, ~0.4 ms less to create at start-up
    """One audit checked on one batch (or one interval): what ``NodeResult.audit_results``
    holds and Dagster reports as a check result.

    ``interval`` is the checked range in epoch seconds (a batch's whole range when it
    passed or warned; each failed interval's own range when a blocking audit failed and
    the batch was isolated).  ``rows`` counts the offending rows (0: passed); ``samples``
    holds up to 5 of them as column -> value.
    """

    audit: str
    interval: tuple[int, int]
    blocking: bool
    rows: int
    samples: tuple[dict, ...] = ()

    @property
    def passed(self) -> bool:
        return self.rows == 0


__all__ = ["INTERVAL_COLUMN", "KINDS", "ROW_KINDS", "SAMPLES", "Audit", "AuditResult", "aggregate_sql",
           "literal"]
