"""Validation of one YAML mapping at a time: every message names the file, the node and
the field, with a did-you-mean where one helps (``_Ctx``), and the transform and
source parsers built on it."""

from __future__ import annotations

import datetime as dt
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from ..engines import DEFAULT_ENGINE, ENGINES
from ..errors import ProjectError, did_you_mean
from ..lexer import LazyPattern
from ..schedule import Schedule
from ..templating import split_id
from ..timeutil import get_zone, to_utc
from .audits import KINDS as AUDIT_KINDS
from .audits import Audit
from .nodes import (
    ENGINE_FIELDS,
    FILE_FORMATS,
    INTERVAL_MATERIALIZATIONS,
    MATERIALIZATIONS,
    READY_KINDS,
    SOURCE_FIELDS,
    TRANSFORM_FIELDS,
    Ready,
    SourceNode,
    TransformNode,
)
from .sql import DEFAULT_DIALECT, analyse, output_columns, parse_error


@lru_cache(maxsize=256)
def _schedule(expression: str, timezone: str) -> Schedule:
    """Schedules are immutable: nodes with the same expression and zone share one."""
    return Schedule(expression, timezone)


@lru_cache(maxsize=1)
def sqlglot_dialects() -> tuple[str, ...]:
    """Names of sqlglot's SQL dialects (imports sqlglot, ~0.1 s: call only when needed)."""
    from sqlglot.dialects.dialect import Dialects

    return tuple(sorted(d.value for d in Dialects if d.value))



def _show(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return Path(os.path.relpath(path, root)).as_posix()
        except ValueError:
            pass
    return str(path)



class _Ctx:
    """Where a value came from, for error messages: file, node, and the project root."""

    def __init__(self, root: Path, path: Path, node: str | None = None):
        self.root, self.path, self.node = root, path, node

    def error(self, message: str, field_name: str | None = None) -> ProjectError:
        where = _show(self.path, self.root)
        if self.node is not None:
            where += f": node '{self.node}'"
        if field_name:
            where += f" field '{field_name}'"
        return ProjectError(f"{where}: {message}")

    def check_fields(self, spec: dict, allowed: tuple[str, ...]) -> None:
        for key in spec:
            if key not in allowed:
                raise self.error(
                    f"unknown field '{key}'" + (did_you_mean(key, allowed)
                                                or f" — allowed: {', '.join(allowed)}"))

    def text(self, spec: dict, key: str, required: bool = False,
             label: str | None = None) -> str | None:
        value = spec.get(key)
        if value is None:
            if required:
                raise self.error(f"missing '{key}'", None)
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"expected a non-empty string, got {value!r}", label or key)
        return value

    def timezone(self, spec: dict, default: str) -> str:
        value = self.text(spec, "timezone")
        if value is None:
            return default
        try:
            get_zone(value)
        except ValueError as exc:
            raise self.error(str(exc), "timezone") from None
        return value

    def start(self, spec: dict, timezone: str, key: str = "start") -> dt.datetime | None:
        value = spec.get(key)
        if value is None:
            return None
        try:
            return to_utc(value, timezone)
        except (ValueError, TypeError) as exc:
            raise self.error(f"{exc}", key) from None

    def bounds(self, spec: dict, timezone: str, start: dt.datetime | None,
               end: dt.datetime | None) -> tuple[dt.datetime | None, dt.datetime | None]:
        """``start``/``end`` from ``spec`` (defaults given); ``end`` must come after ``start``."""
        own_start, own_end = self.start(spec, timezone), self.start(spec, timezone, "end")
        start = own_start or start
        end = own_end or end
        if start is not None and end is not None and end <= start:
            blame = "end" if own_end is not None or own_start is None else "start"
            raise self.error(f"end {end.isoformat()} is not after start {start.isoformat()} "
                             "(UTC) — end is exclusive: set it later than start", blame)
        return start, end

    def choice(self, spec: dict, key: str, allowed: tuple[str, ...], default: str,
               label: str | None = None) -> str:
        value = self.text(spec, key, label=label)
        if value is None:
            return default
        if value not in allowed:
            raise self.error(f"unknown {label or key} '{value}'" + (
                did_you_mean(value, allowed) or f" — use one of {', '.join(allowed)}"), label or key)
        return value

    def dialect(self, spec: dict, default: str) -> str:
        value = self.text(spec, "dialect")
        if value is None or value == default or value == DEFAULT_DIALECT:
            return value or default
        names = sqlglot_dialects()  # imports sqlglot: only for a dialect other than the default
        if value.lower() not in names:
            raise self.error(f"unknown SQL dialect '{value}'" + (
                did_you_mean(value.lower(), names) or " — use a sqlglot dialect such as duckdb, "
                "spark, postgres or bigquery"), "dialect")
        return value.lower()

    def engine_block(self, spec: dict) -> dict:
        """The project's ``engine:`` block (``spark`` alone means ``{type: spark}``)."""
        value = spec.get("engine")
        if value is None:
            return {"type": DEFAULT_ENGINE}
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict):
            raise self.error(f"expected a mapping such as {{type: spark, master: 'local[2]'}}, "
                             f"got {value!r}", "engine")
        for key in value:
            if key not in ENGINE_FIELDS:
                raise self.error(f"unknown field '{key}'" + (
                    did_you_mean(key, ENGINE_FIELDS) or f" — allowed: {', '.join(ENGINE_FIELDS)}"),
                    "engine")
        block = dict(value)
        block["type"] = self.choice(value, "type", tuple(ENGINES), DEFAULT_ENGINE, label="engine.type")
        for key in ("master", "remote"):
            if key in value:
                self.text(value, key, label=f"engine.{key}")
        if "master" in value and "remote" in value:
            raise self.error("set either 'master' (a Spark cluster) or 'remote' (Spark "
                             "Connect), not both", "engine")
        conf = value.get("conf")
        if conf is not None and not isinstance(conf, dict):
            raise self.error(f"'conf' must be a mapping of Spark settings, got {conf!r}", "engine")
        if conf is not None:
            block["conf"] = {str(k): v for k, v in conf.items()}
        return block

    def integer(self, spec: dict, key: str, minimum: int) -> int | None:
        value = spec.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            rule = "a positive integer" if minimum > 0 else "an integer >= 0"
            raise self.error(f"must be {rule}, got {value!r}", key)
        return value

    def names(self, spec: dict, key: str) -> tuple[str, ...]:
        value = spec.get(key)
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
            raise self.error(f"expected a name or a list of names, got {value!r}", key)
        return tuple(items)


class _Defaults(NamedTuple):  # immutable like a frozen dataclass, ~0.4 ms less to create at start-up
    """Project settings a transform inherits unless it sets its own."""

    timezone: str
    start: dt.datetime | None
    end: dt.datetime | None
    engine: str
    dialect: str


def _parse_source(spec: dict, ctx: _Ctx) -> SourceNode:
    ctx.check_fields(spec, SOURCE_FIELDS)
    table, location = ctx.text(spec, "table"), ctx.text(spec, "path")
    fmt = ctx.text(spec, "format")
    if table and location:
        raise ctx.error("set either 'table' (a DuckDB table) or 'path' (files), not both")
    if location is None:
        if fmt:
            raise ctx.error("'format' applies to 'path' sources only", "format")
        table = table or ctx.node
    else:
        if fmt is None:
            suffix = location.lower().removesuffix(".gz").removesuffix(".zst")
            fmt = next((f for ext, f in FILE_FORMATS.items() if suffix.endswith(ext)), None)
            if fmt is None:
                raise ctx.error(f"cannot tell the file format of '{location}' — set "
                                "format: parquet or format: csv", "path")
        elif fmt not in ("parquet", "csv"):
            raise ctx.error(f"unknown format '{fmt}' — use parquet or csv", "format")
        if "://" not in location:
            location = os.path.normpath(os.path.join(ctx.root, location))
    time_column = ctx.text(spec, "time_column")
    return SourceNode(
        name=ctx.node, path=ctx.path, table=table, location=location, format=fmt,
        time_column=time_column, description=ctx.text(spec, "description"),
        ready=_ready(spec.get("ready"), time_column, ctx),
    )


_READY_EXAMPLE = ("use watermark, always, {watermark: event_time, strict: true}, "
                  "{sql: \"SELECT ...\"} or {python: \"pkg.module:function\"}")


def _ready(value: object, time_column: str | None, ctx: _Ctx) -> Ready | None:
    """A source's ``ready:`` (None: the default, see ``SourceNode.readiness``)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value not in ("watermark", "always"):
            raise ctx.error(f"unknown readiness '{value}'" + (
                did_you_mean(value, READY_KINDS) or f" — {_READY_EXAMPLE}"), "ready")
        if value == "always":
            return Ready("always")
        if not time_column:
            raise ctx.error("ready: watermark needs a time column — set time_column: or write "
                            "ready: {watermark: <column>}", "ready")
        return Ready("watermark", time_column)
    if not isinstance(value, dict) or not value:
        raise ctx.error(f"expected a readiness such as watermark, got {value!r} — {_READY_EXAMPLE}", "ready")
    kinds = [k for k in value if k in ("watermark", "sql", "python")]
    unknown = [k for k in value if k not in ("watermark", "sql", "python", "strict")]
    if unknown:
        raise ctx.error(f"unknown key '{unknown[0]}'" + (
            did_you_mean(unknown[0], ("watermark", "strict", "sql", "python")) or f" — {_READY_EXAMPLE}"),
            "ready")
    if len(kinds) != 1:
        raise ctx.error(f"give exactly one of watermark, sql or python, got {value!r}", "ready")
    kind = kinds[0]
    strict = value.get("strict", False)
    if "strict" in value and (kind != "watermark" or not isinstance(strict, bool)):
        raise ctx.error("strict: true|false goes with watermark only", "ready")
    text = value[kind]
    if kind == "watermark" and (text is None or text is True):
        text = time_column
    if not isinstance(text, str) or not text.strip():
        hint = {"watermark": "a column such as event_time", "sql": "a query returning one instant",
                "python": "pkg.module:function"}[kind]
        raise ctx.error(f"{kind}: expected {hint}, got {text!r}", "ready")
    if kind == "watermark":
        return Ready("watermark", text, strict=strict)
    if kind == "sql":
        return Ready("sql", query=text)
    module, colon, func = text.partition(":")
    if not colon or not module.strip() or not func.strip():
        raise ctx.error(f"python: expected pkg.module:function, got {text!r}", "ready")
    return Ready("python", target=text)


def _parse_transforms(
    specs: dict[str, tuple[dict, _Ctx]],
    sources: dict[str, SourceNode],
    defaults: _Defaults,
) -> dict[str, TransformNode]:
    by_name: dict[str, str] = {n.lower(): n for n in [*sources, *specs]}
    by_relation = dict(by_name)  # SQL may read a source by its table name too
    for s in sources.values():
        if s.table:
            by_relation.setdefault(s.table.lower(), s.name)
    known = sorted([*specs, *sources])

    def resolve(ref: str, ctx: _Ctx, what: str, field_name: str) -> str:
        kind, name = split_id(ref)
        target = by_name.get(name.lower())
        if target is None or (kind == "transform" and target not in specs) or (
                kind == "source" and target not in sources):
            raise ctx.error(f"{what} names no node or source{did_you_mean(name, known)}",
                            field_name)
        return target

    nodes = {}
    for name, (spec, ctx) in specs.items():
        ctx.check_fields(spec, TRANSFORM_FIELDS)
        sql = ctx.text(spec, "sql")
        if sql is None:
            raise ctx.error("missing 'sql': every transform needs a SQL query "
                            "(sql: | SELECT ...)")
        timezone = ctx.timezone(spec, defaults.timezone)
        schedule = None
        if spec.get("schedule") is not None:
            try:
                schedule = _schedule(spec["schedule"], timezone)
            except ValueError as exc:
                raise ctx.error(str(exc), "schedule") from None
        start, end = ctx.bounds(spec, timezone, defaults.start, defaults.end)

        deps = []
        for ref in ctx.names(spec, "depends_on"):
            deps.append(resolve(ref, ctx, f"'{ref}'", "depends_on"))
        refs, tables, inferred = analyse(sql)
        for ref in refs:
            deps.append(resolve(ref, ctx, f"ref('{ref}')", "sql"))
        if name in deps:
            raise ProjectError(f"dependency cycle: {name} -> {name} ({_show(ctx.path, ctx.root)}"
                               f") — a node cannot depend on itself; use {{{{ this }}}} to read "
                               "its own output")
        for table in tables:
            target = by_relation.get(table.lower())
            if target is not None and target != name:
                deps.append(target)

        materialization = ctx.text(spec, "materialization")
        if materialization is None:
            materialization = "incremental" if schedule else "table"
        elif materialization not in MATERIALIZATIONS:
            raise ctx.error(f"unknown materialization '{materialization}'"
                            + (did_you_mean(materialization, MATERIALIZATIONS)
                               or f" — use one of {', '.join(MATERIALIZATIONS)}"),
                            "materialization")
        if materialization in INTERVAL_MATERIALIZATIONS and schedule is None:
            raise ctx.error(f"materialization '{materialization}' needs a schedule "
                            "(schedule: '@daily') — or use materialization: table",
                            "materialization")

        time_column = ctx.text(spec, "time_column") or inferred
        if time_column is None and schedule is not None and materialization == "incremental":
            raise ctx.error(
                "a scheduled incremental node needs 'time_column' (the output column that "
                "places a row in an interval) — set time_column: <column>, or filter with "
                "<column> >= '{{ start }}' AND <column> < '{{ end }}'", "time_column")

        partition_column = partition_format = None
        tracking = spec.get("partition_tracking")
        if tracking is not None:
            if not isinstance(tracking, dict):
                raise ctx.error("expected {column: <name>, format: '%Y-%m-%d'}",
                                "partition_tracking")
            ctx.check_fields(tracking, ("column", "format"))
            partition_column = ctx.text(tracking, "column")
            if partition_column is None:
                raise ctx.error("missing 'column'", "partition_tracking")
            partition_format = ctx.text(tracking, "format") or "%Y-%m-%d"
            if "%" not in partition_format:
                raise ctx.error(f"format {partition_format!r} has no strftime code "
                                "(such as %Y-%m-%d)", "partition_tracking")

        meta = spec.get("meta") or {}
        if not isinstance(meta, dict):
            raise ctx.error(f"expected a mapping, got {meta!r}", "meta")
        engine = ctx.choice(spec, "engine", tuple(ENGINES), defaults.engine)
        if materialization not in ENGINES[engine].outputs:
            raise ctx.error(f"engine '{engine}' cannot write materialization '{materialization}': use "
                            f"one of {', '.join(ENGINES[engine].outputs)}", "materialization")
        nodes[name] = TransformNode(
            name=name, path=ctx.path, sql=sql, schedule=schedule, timezone=timezone,
            start=start, time_column=time_column, depends_on=tuple(sorted(set(deps))),
            batch_size=ctx.integer(spec, "batch_size", 1),
            lookback=ctx.integer(spec, "lookback", 0) or 0,
            partition_column=partition_column, partition_format=partition_format,
            materialization=materialization, end=end,
            engine=engine,
            dialect=ctx.dialect(spec, defaults.dialect), description=ctx.text(spec, "description"),
            tags=ctx.names(spec, "tags"), meta=meta, audits=_audits(spec.get("audits"), ctx, name, sql),
            verify=_verify_window(spec.get("verify"), ctx, schedule),
        )
    return nodes


_SHORT_DURATION = LazyPattern(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?\Z", re.IGNORECASE)
_ISO_DURATION = LazyPattern(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?\Z",
                            re.IGNORECASE)


def _verify_window(value: object, ctx: _Ctx, schedule: Schedule | None) -> int | None:
    """``verify:``: a duration (``7d``, ``36h``, ``2w`` or ISO 8601 ``P7D``, ``PT36H``) as
    seconds; months and years are not fixed lengths and are refused."""
    if value is None:
        return None
    if schedule is None:
        raise ctx.error("'verify' needs a schedule: only scheduled nodes have intervals to verify", "verify")
    text = str(value).strip()
    match = _SHORT_DURATION.match(text) or _ISO_DURATION.match(text)
    if not text or match is None or not any(match.groups()):
        raise ctx.error(f"invalid duration {value!r}: use 7d, 36h, 2w or ISO 8601 such as P7D or PT36H",
                        "verify")
    weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ctx.error(f"duration {value!r} is not positive: use 7d or P7D", "verify")
    return total


#: each kind's arguments: (required, optional) keys of its mapping form
_AUDIT_ARGS = {
    "accepted_values": (("column", "values"), ()),
    "accepted_range": (("column",), ("min", "max")),
    "row_count": ((), ("min", "max")),
}
_AUDIT_EXAMPLE = {
    "not_null": "not_null: [id, day]", "unique": "unique: [day]",
    "accepted_values": "accepted_values: {column: status, values: [a, b]}",
    "accepted_range": "accepted_range: {column: amount, min: 0}",
    "row_count": "row_count: {min: 1}", "sql": "name: my_check, sql: SELECT * FROM {{ this }} WHERE ...",
}


def _audits(value: object, ctx: _Ctx, node: str, sql: str) -> tuple[Audit, ...]:
    """``audits:``: a list of one-key mappings (``- not_null: [a]``) with optional ``name``
    and ``blocking``; every mistake is one line naming the audit, with a did-you-mean."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ctx.error(f"expected a list such as [{{not_null: [id]}}], got {value!r}", "audits")
    out: list[Audit] = []
    columns = None  # the SQL's output columns, computed once when an audit names one
    for n, item in enumerate(value, 1):
        label = f"audit #{n}"
        if isinstance(item, str) and item in AUDIT_KINDS:
            raise ctx.error(f"{label} '{item}' needs arguments — e.g. {_AUDIT_EXAMPLE[item]}", "audits")
        if not isinstance(item, dict):
            raise ctx.error(f"{label}: expected a mapping such as {{not_null: [id]}}, got {item!r}", "audits")
        kinds = [k for k in item if k in AUDIT_KINDS]
        unknown = [k for k in item if k not in AUDIT_KINDS and k not in ("name", "blocking")]
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ctx.error(f"{label}: 'name' must be a non-empty string, got {name!r}", "audits")
        if unknown:
            word = str(unknown[0])
            raise ctx.error(f"{label}: unknown audit '{word}'" + (
                did_you_mean(word, (*AUDIT_KINDS, "name", "blocking"))
                or f" — use one of {', '.join(AUDIT_KINDS)}"), "audits")
        if len(kinds) != 1:
            raise ctx.error(f"{label}: " + ("give one of " + ", ".join(AUDIT_KINDS) if not kinds else
                            f"one audit per item, got {' and '.join(kinds)}"), "audits")
        kind = kinds[0]
        label = f"audit '{name or kind}'"
        blocking = item.get("blocking", True)
        if not isinstance(blocking, bool):
            raise ctx.error(f"{label}: 'blocking' must be true or false, got {blocking!r}", "audits")
        args = item[kind]
        fields: dict = {}
        if kind in ("not_null", "unique"):
            cols = [args] if isinstance(args, str) else args
            if not isinstance(cols, list) or not cols or not all(isinstance(c, str) and c for c in cols):
                raise ctx.error(f"{label}: expected a column or a list of columns, got {args!r} — "
                                f"e.g. {_AUDIT_EXAMPLE[kind]}",
                                "audits")
            fields["columns"] = tuple(cols)
        elif kind == "sql":
            if not isinstance(args, str) or not args.strip():
                raise ctx.error(f"{label}: 'sql' must be a query returning the offending rows "
                                "(SELECT * FROM {{ this }} WHERE ...)", "audits")
            problem = parse_error(node, args)
            if problem:
                raise ctx.error(f"{label}: its SQL does not parse: {problem}", "audits")
            fields["sql"] = args
        else:
            required, optional = _AUDIT_ARGS[kind]
            if not isinstance(args, dict):
                raise ctx.error(f"{label}: expected a mapping — e.g. {_AUDIT_EXAMPLE[kind]}", "audits")
            for key in args:
                if key not in (*required, *optional):
                    raise ctx.error(f"{label}: unknown argument '{key}'" + (
                        did_you_mean(key, (*required, *optional))
                        or f" — use {', '.join((*required, *optional))}"), "audits")
            missing = [k for k in required if args.get(k) is None]
            if missing:
                raise ctx.error(f"{label}: missing argument '{missing[0]}' — e.g. {_AUDIT_EXAMPLE[kind]}",
                                "audits")
            if optional and all(args.get(k) is None for k in optional):
                raise ctx.error(f"{label}: missing argument 'min' or 'max' — e.g. {_AUDIT_EXAMPLE[kind]}",
                                "audits")
            if "column" in args:
                if not isinstance(args["column"], str) or not args["column"]:
                    raise ctx.error(f"{label}: 'column' must be a column name, got {args['column']!r}",
                                    "audits")
                fields["columns"] = (args["column"],)
            if kind == "accepted_values":
                values = args["values"]
                if not isinstance(values, list) or not values or any(
                        isinstance(v, dict | list) or v is None for v in values):
                    raise ctx.error(f"{label}: 'values' must be a non-empty list of values, got {values!r}",
                                    "audits")
                fields["values"] = tuple(values)
            for key in ("min", "max"):
                bound = args.get(key)
                if bound is None:
                    continue
                counted = isinstance(bound, int) and not isinstance(bound, bool) and bound >= 0
                if kind == "row_count" and not counted:
                    raise ctx.error(f"{label}: '{key}' must be a row count (an integer >= 0), got {bound!r}",
                                    "audits")
                if isinstance(bound, bool) or not isinstance(bound, int | float | str | dt.date):
                    raise ctx.error(f"{label}: '{key}' must be a number or a date, got {bound!r}", "audits")
                fields[key] = bound.isoformat() if isinstance(bound, dt.date) else bound
        for column in fields.get("columns", ()):
            if columns is None:
                columns = output_columns(sql) or ()
            if columns and column.lower() not in {c.lower() for c in columns}:
                raise ctx.error(f"{label}: the node's SQL has no output column '{column}'" + (
                    did_you_mean(column, columns) or f" — its columns: {', '.join(columns)}"), "audits")
        audit = Audit(name=name or kind, kind=kind, blocking=blocking, **fields)
        if any(a.name == audit.name for a in out):
            raise ctx.error(f"two audits are named '{audit.name}' — give one a `name:`", "audits")
        out.append(audit)
    return tuple(out)
