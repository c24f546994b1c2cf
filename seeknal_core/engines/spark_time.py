"""DuckDB's time functions as Spark SQL with DuckDB's results, for the transpiler
(spark_sql.py): ``timezone(zone, x)`` and ``x AT TIME ZONE zone``, ``time_bucket(width,
x[, origin | offset])`` with a fixed width, and ``date_trunc`` of a naive value.

DuckDB picks an overload by the argument's type, so each rewrite first infers whether a
value is naive (TIMESTAMP, Spark's TIMESTAMP_NTZ), an instant (TIMESTAMPTZ, Spark's
TIMESTAMP) or a DATE: from casts, literals and functions, and for columns from the
engine's view of the node's inputs (``columns``: name -> kind) and the query's own
aliases.  A value whose kind cannot be told, or a form Spark cannot express, raises
``Untranslatable`` naming it.  The Spark SQL relies on the session time zone being UTC,
which SparkEngine sets on every session.

Semantics kept exactly:

- ``timezone(z, instant)`` is the instant's wall clock in ``z``, naive:
  ``CAST(from_utc_timestamp(x, z) AS TIMESTAMP_NTZ)``.
- ``timezone(z, naive)`` is the instant that wall clock names in ``z``:
  ``to_utc_timestamp(x, z)``, except where the wall clock happens twice (the hour after
  a DST fall-back): DuckDB (ICU) takes the later instant, Java the earlier, so the later
  is chosen when it exists (the same wall clock a day later, shifted back a day).  A
  skipped wall clock (spring-forward) moves forward on both.  Fixed-offset zones (UTC)
  need no such care.
- ``time_bucket`` with a width of weeks or less is floor arithmetic in microseconds from
  the origin (default 2000-01-03 00:00, DuckDB's; an INTERVAL third argument offsets it),
  for naive values and instants alike (DuckDB buckets instants in UTC); a DATE stays a DATE.
- Spark's ``date_trunc`` returns an instant; DuckDB's keeps a naive value naive.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sqlglot import exp

NAIVE, INSTANT, DATE = "naive", "instant", "date"

_NAIVE_TYPES = {"TIMESTAMP", "TIMESTAMPNTZ", "DATETIME", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"}
_INSTANT_TYPES = {"TIMESTAMPTZ", "TIMESTAMPLTZ"}
_NOW = {"now", "get_current_timestamp", "transaction_timestamp"}
_SAME_KIND = (exp.Min, exp.Max, exp.AnyValue, exp.First, exp.Last, exp.Paren)
_MICROS = {"MICROSECOND": 1, "MILLISECOND": 1_000, "SECOND": 1_000_000, "MINUTE": 60_000_000,
           "HOUR": 3_600_000_000, "DAY": 86_400_000_000, "WEEK": 604_800_000_000}
_UNIT = re.compile(r"^\s*(-?\d+)\s*([a-z]+?)s?\s*$", re.IGNORECASE)
_FIXED_ZONE = re.compile(r"^(etc/)?(utc|gmt|uct|zulu|gmt[+-]\d{1,2})$", re.IGNORECASE)
#: DuckDB's origin for buckets of weeks or less (a Monday)
DEFAULT_ORIGIN = "2000-01-03 00:00:00"


class Untranslatable(Exception):
    """A DuckDB construct with no equivalent here; the message names it."""


def rewrite(tree: exp.Expression, columns: Mapping[str, str]) -> exp.Expression:
    """``tree`` (parsed as DuckDB SQL) with its time functions in Spark terms."""
    kinds = _Kinds(tree, columns)
    targets = [n for n in tree.walk() if _is_timezone(n) or isinstance(n, (exp.DateBin, exp.TimestampTrunc,
                                                                          exp.DateTrunc))]
    before = {id(n): kinds.of(_argument(n)) for n in targets}  # DuckDB's types, before any rewrite
    for node in sorted(targets, key=_depth, reverse=True):  # innermost first
        new = _translate(node, before[id(node)])
        if new is not node:
            if node is tree:
                tree = new
            else:
                node.replace(new)
    return tree


def _is_timezone(node: exp.Expression) -> bool:
    if isinstance(node, exp.AtTimeZone):
        return True
    return isinstance(node, exp.Anonymous) and node.name.lower() == "timezone" and len(node.expressions) == 2


def _argument(node: exp.Expression) -> exp.Expression:
    """The value whose kind picks the overload."""
    if isinstance(node, exp.Anonymous):
        return node.expressions[1]
    if isinstance(node, exp.DateBin):
        return node.expression
    return node.this


def _depth(node: exp.Expression) -> int:
    depth = 0
    while node.parent is not None:
        node, depth = node.parent, depth + 1
    return depth


class _Kinds:
    """NAIVE / INSTANT / DATE / None for expressions of a DuckDB query."""

    def __init__(self, tree: exp.Expression, columns: Mapping[str, str]):
        sources = {k.lower(): v for k, v in columns.items()}
        self.columns = dict(sources)
        aliases = list(tree.find_all(exp.Alias))
        for _ in range(4):  # the query's own columns, by name (an alias may use another)
            seen: dict[str, str | None] = {}
            for alias in aliases:
                name, kind = alias.alias.lower(), self.of(alias.this)
                seen[name] = kind if seen.get(name, kind) == kind else None
            merged = dict(sources)
            for name, kind in seen.items():  # one name with two kinds is nobody's
                merged[name] = kind if sources.get(name, kind) == kind else None
            if merged == self.columns:
                break
            self.columns = merged

    def of(self, e: exp.Expression | None) -> str | None:
        if e is None:
            return None
        if isinstance(e, exp.Column):
            return self.columns.get(e.name.lower())
        if isinstance(e, (exp.Cast, exp.TryCast)):
            name = e.to.this.name
            return NAIVE if name in _NAIVE_TYPES else INSTANT if name in _INSTANT_TYPES else (
                DATE if name == "DATE" else None)
        if _is_timezone(e):
            inner = self.of(_argument(e))
            return None if inner is None else NAIVE if inner == INSTANT else INSTANT
        if isinstance(e, exp.DateBin):
            return self.of(e.expression)
        if isinstance(e, (exp.TimestampTrunc, exp.DateTrunc)):
            inner = self.of(e.this)
            return NAIVE if inner == DATE else inner
        if isinstance(e, (exp.Add, exp.Sub)):
            for side, other in ((e.this, e.expression), (e.expression, e.this)):
                if isinstance(other, exp.Interval):
                    inner = self.of(side)
                    return NAIVE if inner == DATE else inner
            return None
        if isinstance(e, exp.CurrentTimestamp) or (isinstance(e, exp.Anonymous) and e.name.lower() in _NOW):
            return INSTANT
        if isinstance(e, exp.CurrentDate):
            return DATE
        if isinstance(e, _SAME_KIND):
            return self.of(e.this)
        if isinstance(e, exp.Coalesce):
            return next((k for k in map(self.of, [e.this, *e.expressions]) if k), None)
        return None


def _call(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _cast(e: exp.Expression, to: str) -> exp.Expression:
    return exp.Cast(this=e, to=exp.DataType.build(to))


def _day() -> exp.Expression:
    return exp.Interval(this=exp.Literal.string("1"), unit=exp.var("DAY"))


def _translate(node: exp.Expression, kind: str | None) -> exp.Expression:
    if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)):
        # DuckDB keeps a naive value naive (a DATE becomes a naive TIMESTAMP); Spark's
        # date_trunc always returns an instant
        parent = node.parent
        cast = isinstance(parent, (exp.Cast, exp.TryCast)) and parent.to.this.name == "TIMESTAMPNTZ"
        wrap = kind in (NAIVE, DATE) and not cast
        return _cast(node.copy(), "TIMESTAMPNTZ") if wrap else node
    if isinstance(node, exp.DateBin):
        return _time_bucket(node, kind)
    zone, value = ((node.expressions[0], node.expressions[1]) if isinstance(node, exp.Anonymous)
                   else (node.args["zone"], node.this))
    if kind is None:
        raise Untranslatable(f"timezone(...) of `{value.sql('duckdb')}`: cannot tell whether it is a "
                             f"TIMESTAMP or a TIMESTAMPTZ, and the result differs (CAST it to one)")
    if kind == INSTANT:
        return _cast(_call("FROM_UTC_TIMESTAMP", value.copy(), zone.copy()), "TIMESTAMPNTZ")
    return _wall_to_instant(value, zone)


def _wall_to_instant(value: exp.Expression, zone: exp.Expression) -> exp.Expression:
    """DuckDB's ``timezone(zone, naive)``: the later instant for a repeated wall clock."""
    wall = _cast(value.copy(), "TIMESTAMPNTZ")
    first = _call("TO_UTC_TIMESTAMP", wall, zone.copy())
    if zone.is_string and _FIXED_ZONE.match(zone.name):
        return first
    later = exp.Sub(this=_call("TO_UTC_TIMESTAMP", exp.Add(this=wall.copy(), expression=_day()), zone.copy()),
                    expression=_day())
    same_wall = exp.EQ(this=_cast(_call("FROM_UTC_TIMESTAMP", later.copy(), zone.copy()), "TIMESTAMPNTZ"),
                       expression=wall.copy())
    return exp.case().when(exp.and_(exp.GT(this=later, expression=first.copy()), same_wall),
                           later.copy()).else_(first)


def interval_micros(interval: exp.Expression) -> int | None:
    """A fixed-length INTERVAL literal in microseconds (None for months, years, or not a literal)."""
    if not isinstance(interval, exp.Interval) or not isinstance(interval.this, exp.Literal):
        return None
    unit = interval.args.get("unit")
    text = f"{interval.this.name} {unit.name if unit is not None else ''}"
    m = _UNIT.match(text)
    if m is None:
        return None
    factor = _MICROS.get(m.group(2).upper())
    return None if factor is None else int(m.group(1)) * factor


def _time_bucket(node: exp.DateBin, kind: str | None) -> exp.Expression:
    width = interval_micros(node.this)
    if width is None or width <= 0:
        raise Untranslatable(f"time_bucket(...) with a width of {node.this.sql('duckdb')}: only fixed widths "
                             f"(weeks, days, hours, minutes, seconds) translate to Spark")
    if node.args.get("zone") is not None:
        raise Untranslatable("time_bucket(...) with a time zone argument")
    third, offset = node.args.get("origin") or node.args.get("unit"), 0
    if third is None or isinstance(third, exp.Interval):
        if third is not None:
            offset = interval_micros(third)
            if offset is None:
                raise Untranslatable(f"time_bucket(...) with an offset of {third.sql('duckdb')}: only fixed "
                                     f"offsets translate to Spark")
        origin: exp.Expression = _cast(exp.Literal.string(DEFAULT_ORIGIN), "TIMESTAMPNTZ")
    elif isinstance(third, (exp.Var, exp.Literal)):
        raise Untranslatable("time_bucket(...) with a time zone argument")
    else:
        origin = third.copy()
    value = node.expression
    since = _call("TIMESTAMPDIFF", exp.var("MICROSECOND"), origin, value.copy())
    if offset:
        since = exp.Sub(this=since, expression=exp.Literal.number(offset))
    back = _call("PMOD", since, exp.Literal.number(width))
    bucket = _call("TIMESTAMPADD", exp.var("MICROSECOND"), exp.Neg(this=exp.Paren(this=back)), value.copy())
    return _cast(bucket, "DATE") if kind == DATE else bucket
