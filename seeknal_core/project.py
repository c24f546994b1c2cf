"""A seeknal project: its settings, its nodes (sources and SQL transforms) and their DAG.

Layout::

    seeknal_project.yml         name, timezone, start, state, database (all optional)
    seeknal/sources/*.yml       external inputs: a DuckDB table or Parquet/CSV files
    seeknal/transforms/*.yml    SQL transforms, several per file, keyed by node name

Loading validates everything a user can get wrong and reports it as one
``ProjectError`` line naming the file, the node and the field.  Nothing here imports
duckdb or jinja2: the CLI loads projects for quick commands (``seeknal intervals``)
that must stay cheap.  Dependencies are read from the SQL with a small tokenizer.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import ProjectError
from .schedule import Schedule
from .timeutil import get_zone, to_utc

PROJECT_FILES = ("seeknal_project.yml", "seeknal_project.yaml")
SOURCES_DIR = Path("seeknal") / "sources"
TRANSFORMS_DIR = Path("seeknal") / "transforms"
DEFAULT_DATABASE = "target/warehouse.duckdb"
DEFAULT_STATE = {"backend": "json", "path": "target/run_state.json"}
MATERIALIZATIONS = ("incremental", "table", "parquet")
INTERVAL_MATERIALIZATIONS = ("incremental", "parquet")

ENGINES = ("duckdb", "spark")
ENGINE_FIELDS = ("type", "master", "remote", "conf")
ON_CHANGE = ("warn", "fail", "apply")
DEFAULT_DIALECT = "duckdb"

PROJECT_FIELDS = (
    "name", "description", "timezone", "start", "end", "state", "database", "engine", "dialect",
    "on_change",
)
TRANSFORM_FIELDS = (
    "schedule", "timezone", "start", "end", "sql", "time_column", "depends_on", "batch_size",
    "lookback", "partition_tracking", "materialization", "engine", "dialect", "description",
    "tags", "meta",
)
SOURCE_FIELDS = ("table", "path", "format", "time_column", "description")
FILE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PREFIXES = {"transform": "transform", "source": "source"}


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` — did you mean 'x'?`` for the closest candidate, or an empty string."""
    match = difflib.get_close_matches(str(word), sorted(candidates), n=1, cutoff=0.6)
    return f" — did you mean '{match[0]}'?" if match else ""


@lru_cache(maxsize=1)
def sqlglot_dialects() -> tuple[str, ...]:
    """Names of sqlglot's SQL dialects (imports sqlglot, ~0.1 s: call only when needed)."""
    from sqlglot.dialects.dialect import Dialects

    return tuple(sorted(d.value for d in Dialects if d.value))


def split_id(name_or_id: str) -> tuple[str | None, str]:
    """``'transform.x'`` -> ``('transform', 'x')``; ``'x'`` -> ``(None, 'x')``."""
    kind, dot, rest = str(name_or_id).partition(".")
    if dot and kind in _PREFIXES:
        return kind, rest
    return None, str(name_or_id)


# --------------------------------------------------------------------------------------
# SQL scanning: no parser, no duckdb; enough to find tables, refs and the time filter.
# --------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<jinja>\{\{.*?\}\}|\{%.*?%\}|\{\#.*?\#\})
    | (?P<str>'(?:[^']|'')*')
    | (?P<dq>"(?:[^"]|"")*")
    | (?P<bq>`[^`]*`)
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<punct>[(),.;])
    | (?P<other>.)
    """,
    re.DOTALL | re.VERBOSE,
)
_REF = re.compile(r"""\bref\s*\(\s*(['"])(.*?)\1\s*\)""")
_SPECIAL_FROM = {"EXTRACT", "TRIM", "SUBSTRING", "SUBSTR", "POSITION", "OVERLAY"}
_NOT_ALIAS = {
    "WHERE", "JOIN", "LEFT", "RIGHT", "INNER", "OUTER", "FULL", "CROSS", "NATURAL", "ON",
    "USING", "GROUP", "ORDER", "LIMIT", "HAVING", "UNION", "EXCEPT", "INTERSECT", "WINDOW",
    "QUALIFY", "OFFSET", "POSITIONAL", "ASOF", "ANTI", "SEMI", "SAMPLE", "TABLESAMPLE",
    "PIVOT", "UNPIVOT", "SELECT", "FROM", "WITH", "LATERAL", "FETCH", "VALUES", "AS",
}


_END_FROM = {
    "WHERE", "GROUP", "ORDER", "HAVING", "LIMIT", "QUALIFY", "WINDOW", "UNION", "EXCEPT",
    "INTERSECT", "SELECT", "OFFSET", "FETCH", ";",
}


@lru_cache(maxsize=4096)
def _scan(sql: str) -> tuple[list[tuple[str, str]], str]:
    """One pass: significant tokens as (kind, text), and the text with comments blanked.

    Cached per SQL text, so reloading an unchanged project does not rescan.
    """
    tokens, text = [], []
    for m in _TOKEN.finditer(sql):
        kind, value = m.lastgroup, m.group()
        if kind == "comment":
            text.append(" ")
            continue
        text.append(value)
        if kind != "ws":
            tokens.append((kind, value))
    return tokens, "".join(text)


def _tokens(sql: str) -> list[tuple[str, str]]:
    return _scan(sql)[0]


def strip_comments(sql: str) -> str:
    """The SQL with ``--`` and ``/* */`` comments blanked; string literals kept."""
    return _scan(sql)[1]


def _ident(kind: str, text: str) -> str | None:
    if kind == "word":
        return text
    if kind == "dq":
        return text[1:-1].replace('""', '"')
    if kind == "bq":
        return text[1:-1]
    return None


def ref_names(sql: str) -> list[str]:
    """Arguments of ``ref('...')`` calls in Jinja blocks (also inside strings; not in comments)."""
    return [m.group(2) for kind, text in _tokens(sql)
            if kind == "jinja" or (kind == "str" and "{" in text)
            for m in _REF.finditer(text)]


def _cte_scopes(toks: list[tuple[str, str]]) -> dict[str, int]:
    """CTE name (lower case) -> token index where its body ends (visible after that)."""
    scopes: dict[str, int] = {}
    for i, (kind, text) in enumerate(toks):
        if text.upper() != "AS" or kind != "word" or i == 0:
            continue
        name = _ident(*toks[i - 1])
        j = i + 1
        while j < len(toks) and toks[j][1].upper() in ("NOT", "MATERIALIZED"):
            j += 1
        if name is None or j >= len(toks) or toks[j][1] != "(":
            continue
        depth = 0
        for k in range(j, len(toks)):
            depth += {"(": 1, ")": -1}.get(toks[k][1], 0)
            if depth == 0:
                scopes.setdefault(name.lower(), k)
                break
    return scopes


def table_references(sql: str) -> list[str]:
    """Table names read after FROM / JOIN and in FROM's comma lists, in order.

    String literals, comments and Jinja blocks are skipped, quoted names unquoted,
    ``schema.table`` reduced to ``table``; table functions (``read_parquet(...)``)
    and names of CTEs defined earlier in the query are left out.
    """
    return list(_table_references(sql))


@lru_cache(maxsize=4096)
def _table_references(sql: str) -> tuple[str, ...]:
    toks = _tokens(sql)
    ctes = _cte_scopes(toks)
    found: list[str] = []
    n = len(toks)

    def table_ref(i: int) -> int:
        while i < n and toks[i][0] == "word" and toks[i][1].upper() in ("LATERAL", "ONLY"):
            i += 1
        if i >= n or toks[i][1] == "(":
            return i  # a subquery: the main loop scans inside it
        if toks[i][0] in ("jinja", "str"):
            i += 1
        elif _ident(*toks[i]) is not None:
            parts, start = [_ident(*toks[i])], i
            i += 1
            while i + 1 < n and toks[i][1] == "." and _ident(*toks[i + 1]) is not None:
                parts.append(_ident(*toks[i + 1]))
                i += 2
            if i < n and toks[i][1] == "(":
                return i  # a table function
            name = parts[-1]
            if not (name.lower() in ctes and start > ctes[name.lower()]):
                found.append(name)
        else:
            return i
        if i < n and toks[i][1].upper() == "AS":
            i += 1
        if i < n and _ident(*toks[i]) is not None and toks[i][1].upper() not in _NOT_ALIAS:
            i += 1
            if i < n and toks[i][1] == "(":  # column aliases: t(a, b)
                while i < n and toks[i][1] != ")":
                    i += 1
                i += 1
        return i

    # ``(`` openers (True: EXTRACT(x FROM y) and friends) and depths of open FROM clauses
    parens: list[bool] = []
    from_depths: list[int] = []
    i = 0
    while i < n:
        kind, text = toks[i]
        upper = text.upper() if kind == "word" else text
        depth = len(parens)
        if upper == "(":
            parens.append(i > 0 and toks[i - 1][1].upper() in _SPECIAL_FROM)
        elif upper == ")" and parens:
            parens.pop()
            while from_depths and from_depths[-1] >= depth:
                from_depths.pop()
        elif upper in ("FROM", "JOIN") and not (parens and parens[-1]):
            if upper == "FROM":
                if from_depths and from_depths[-1] == depth:
                    from_depths.pop()
                from_depths.append(depth)
            i = max(table_ref(i + 1), i + 1)
            continue
        elif from_depths and from_depths[-1] == depth:
            if upper == ",":
                i = max(table_ref(i + 1), i + 1)
                continue
            if upper in _END_FROM:
                from_depths.pop()
        i += 1
    return tuple(found)


_START_VAR = r"(?:\{\{-?\s*start(?:_date|_ts)?\s*-?\}\}|__START__)"
_START_LIT = rf"(?:(?:TIMESTAMPTZ|TIMESTAMP|DATE)\s+)?'?{_START_VAR}'?(?:\s*::\s*\w+)?"
_START_VALUE = re.compile(
    rf"CAST\s*\(\s*{_START_LIT}\s+AS\s+\w+\s*\)(?:\s*::\s*\w+)?|{_START_LIT}", re.IGNORECASE
)
_COLUMN = (
    r"(?:CAST\s*\(\s*)?(?:(?:\"[^\"]+\"|\w+)\s*\.\s*)?"
    r"(?:\"(?P<quoted>[^\"]+)\"|(?P<bare>[A-Za-z_]\w*))"
    r"(?:\s+AS\s+\w+(?:\s*\([\d\s,]*\))?\s*\))?(?:\s*::\s*\w+)?"
)
_COLUMN_BEFORE = re.compile(rf"{_COLUMN}\s*(?:>=|>|\bBETWEEN)\s*\Z", re.IGNORECASE)
_COLUMN_AFTER = re.compile(rf"\s*(?:<=|<)\s*{_COLUMN}", re.IGNORECASE)


@lru_cache(maxsize=4096)
def infer_time_column(sql: str) -> str | None:
    """The column the SQL compares with the interval start, when there is exactly one.

    Recognises ``date >= '{{ start }}'``, ``e.event_time >= '__START__'``,
    ``CAST(ts AS DATE) >= '{{ start_date }}'``, ``ts >= TIMESTAMP '{{ start_ts }}'``,
    ``'{{ start }}' <= ts`` and ``ts BETWEEN '{{ start }}' AND ...``.
    """
    text = strip_comments(sql)
    columns: list[str] = []
    for m in _START_VALUE.finditer(text):
        before = _COLUMN_BEFORE.search(text[max(0, m.start() - 200):m.start()])
        after = _COLUMN_AFTER.match(text, m.end())
        for hit in (before, after):
            if hit:
                name = hit.group("quoted") or hit.group("bare")
                if name.lower() not in (c.lower() for c in columns):
                    columns.append(name)
    return columns[0] if len(columns) == 1 else None


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


@lru_cache(maxsize=4096)
def normalize_sql(name: str, sql: str, dialect: str = DEFAULT_DIALECT) -> str:
    """The node's SQL, Jinja rendered with placeholders, as sqlglot pretty-prints it.

    Comments, whitespace, keyword case, layout and optional identifier quotes (every
    identifier is printed quoted) disappear, so they never change a fingerprint.  SQL
    that does not render or parse falls back to the raw text with whitespace collapsed:
    a fingerprint must never stop a project from loading, and sqlglot may fail on valid
    DuckDB SQL (its parser has many internal error types).
    """
    fallback = " ".join(sql.split())
    from .templating import placeholder_sql

    try:
        rendered = placeholder_sql(name, sql)
    except ProjectError:
        return fallback
    import sqlglot

    try:
        trees = [t for t in sqlglot.parse(rendered, read=dialect) if t is not None]
        text = ";\n".join(t.sql(dialect=dialect, pretty=True, comments=False, identify=True) for t in trees)
    except Exception:  # noqa: BLE001 - any parser failure means: use the fallback
        return fallback
    return text or fallback


# --------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TransformNode:
    """A SQL transform: one output table (named after the node), optionally scheduled.

    ``depends_on`` holds every upstream name (transforms and sources), resolved from
    ``ref()``, the ``depends_on`` field and table names in the SQL.  ``fingerprint``
    changes when anything that changes the output of an interval changes.
    """

    name: str
    sql: str
    path: Path | None = None
    schedule: Schedule | None = None
    timezone: str = "UTC"
    start: dt.datetime | None = None
    time_column: str | None = None
    depends_on: tuple[str, ...] = ()
    batch_size: int | None = None
    lookback: int = 0
    partition_column: str | None = None
    partition_format: str | None = None
    materialization: str | None = None
    engine: str = "duckdb"
    dialect: str = DEFAULT_DIALECT
    end: dt.datetime | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        if isinstance(self.schedule, str):
            setattr_(self, "schedule", Schedule(self.schedule, self.timezone))
        for bound in ("start", "end"):
            if getattr(self, bound) is not None:
                setattr_(self, bound, to_utc(getattr(self, bound), self.timezone))
        setattr_(self, "depends_on", tuple(self.depends_on))
        setattr_(self, "tags", tuple(self.tags))
        if self.materialization is None:
            setattr_(self, "materialization", "incremental" if self.schedule else "table")

    def _fields(self) -> tuple[str, ...]:
        """What besides the SQL changes an interval's output (in fingerprint order)."""
        return (self.schedule.cron if self.schedule else "", self.timezone, self.time_column or "",
                self.materialization or "", self.partition_column or "", self.partition_format or "")

    @cached_property
    def normalized_sql(self) -> str:
        """The SQL as sqlglot prints it (comments, spacing and keyword case do not show)."""
        return normalize_sql(self.name, self.sql, self.dialect)

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the normalised SQL and every field that changes an interval's output.

        Computed on first use (it renders and parses the SQL); read-only commands that
        never compare definitions do not pay for it.
        """
        return _sha256(self.normalized_sql, *self._fields(), self.engine)

    @cached_property
    def legacy_fingerprint(self) -> str:
        """The fingerprint seeknal 0.1 stored: a hash of the raw SQL text and the fields."""
        return _sha256(self.sql, *self._fields(), *((self.engine,) if self.engine != "duckdb" else ()))

    def fingerprint_matches(self, stored: str | None) -> bool:
        """Is ``stored`` (a fingerprint from state) this node's current definition?

        The one place that compares fingerprints.  State written before fingerprints
        were normalised holds :attr:`legacy_fingerprint`; it counts as equal while the
        raw SQL and fields are unchanged, so upgrading reports no change.  The next run
        records the new fingerprint.  ``None`` (never recorded) matches.
        """
        if not stored:
            return True
        return stored == self.legacy_fingerprint or stored == self.fingerprint

    @property
    def definition(self) -> dict[str, str | None]:
        """What the fingerprint covers, readable (stored in state to diff a change)."""
        return {
            "sql": self.normalized_sql, "schedule": self.schedule.cron if self.schedule else None,
            "timezone": self.timezone, "time_column": self.time_column,
            "materialization": self.materialization, "engine": self.engine,
        }

    @property
    def id(self) -> str:
        return f"transform.{self.name}"

    @property
    def is_incremental(self) -> bool:
        """Scheduled and written interval by interval (``incremental`` or ``parquet``)."""
        return self.schedule is not None and self.materialization in INTERVAL_MATERIALIZATIONS


@dataclass(frozen=True, kw_only=True)
class SourceNode:
    """An external input: a table in the project database, or Parquet/CSV files."""

    name: str
    path: Path | None = None
    table: str | None = None
    location: str | None = None
    format: str | None = None
    time_column: str | None = None
    description: str | None = None

    @property
    def id(self) -> str:
        return f"source.{self.name}"


# --------------------------------------------------------------------------------------
# Project
# --------------------------------------------------------------------------------------
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
        self.engine_config = dict(engine_config or {"type": "duckdb"})
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

    def with_nodes(self, nodes: dict[str, TransformNode]) -> Project:
        """A copy with the same settings whose transforms are ``nodes`` (graph rebuilt)."""
        return Project(
            name=self.name, root=self.root, nodes=nodes, sources=self.sources,
            timezone=self.timezone, start=self.start, state_config=self.state_config,
            database_path=self.database_path, description=self.description,
            config_path=self.config_path, end=self.end, engine_config=self.engine_config,
            dialect=self.dialect, on_change=self.on_change,
        )

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
    """Kahn's algorithm with a name-ordered frontier; a cycle is a ProjectError naming it."""
    import heapq

    remaining = {n: len(set(deps)) for n, deps in upstream.items()}
    children: dict[str, list[str]] = {n: [] for n in upstream}
    for n, deps in upstream.items():
        for d in set(deps):
            children[d].append(n)
    ready = [n for n, k in remaining.items() if k == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        n = heapq.heappop(ready)
        order.append(n)
        for c in children[n]:
            remaining[c] -= 1
            if remaining[c] == 0:
                heapq.heappush(ready, c)
    if len(order) < len(upstream):
        cycle = _find_cycle({n: d for n, d in upstream.items() if remaining[n] > 0})
        where = nodes[cycle[0]].path
        raise ProjectError(
            f"dependency cycle: {' -> '.join(cycle)}"
            + (f" (starting in {where})" if where else "")
            + " — remove one of these references"
        )
    return order


def _find_cycle(graph: dict[str, list[str]]) -> list[str]:
    """One cycle as ``[a, b, ..., a]`` in data-flow order (b reads a), smallest name first.

    Every node in ``graph`` has an upstream in ``graph`` (Kahn left them all), so
    following the smallest upstream from any node must come back round.
    """
    path: list[str] = []
    index: dict[str, int] = {}
    n = min(graph)
    while n not in index:
        index[n] = len(path)
        path.append(n)
        n = min(d for d in graph[n] if d in graph)
    cycle = path[index[n]:][::-1]
    k = cycle.index(min(cycle))
    cycle = cycle[k:] + cycle[:k]
    return cycle + [cycle[0]]


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader (libyaml when available) that rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key_node.value}'", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:  # 2024-13-01 looks like a date but is not one
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid date '{node.value}': {exc}", node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


_FILE_CACHE: dict[Path, tuple[str, Any]] = {}


def read_yaml(path: Path, root: Path | None = None) -> Any:
    """Parse a YAML file; bad YAML is a ProjectError naming the file and line.

    Parsed files are cached by content (reading is cheap, parsing is not; mtimes are
    too coarse to trust).  The returned data is shared with the cache: read-only.
    """
    try:
        text = path.read_text(encoding="utf-8")
        cached = _FILE_CACHE.get(path)
        if cached and cached[0] == text:
            return cached[1]
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{_show(path, root)}: cannot read file: {exc}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a safe loader (libyaml when available)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProjectError(f"{_show(path, root)}{line}: invalid YAML: {problem}") from None
    _FILE_CACHE[path] = (text, data)
    return data


def _show(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return Path(os.path.relpath(path, root)).as_posix()
        except ValueError:
            pass
    return str(path)


def find_root(path: str | os.PathLike = ".") -> tuple[Path, Path | None]:
    """The project folder and its settings file (None when only ``seeknal/`` exists)."""
    root = Path(path).expanduser().resolve()
    if root.is_file() and root.name in PROJECT_FILES:
        return root.parent, root
    if not root.is_dir():
        raise ProjectError(f"project folder {root} does not exist — create it with "
                           "`seeknal init` or pass the right --project-path")
    for name in PROJECT_FILES:
        if (root / name).is_file():
            return root, root / name
    if (root / "seeknal").is_dir():
        return root, None
    raise ProjectError(
        f"{root} is not a seeknal project: no seeknal_project.yml and no seeknal/ folder — "
        "run `seeknal init` there, or create seeknal_project.yml and seeknal/transforms/"
    )


def node_files(root: Path) -> list[tuple[str, Path]]:
    """(kind, file) for every node YAML file, sources first, each folder sorted."""
    out = []
    for kind, folder in (("source", SOURCES_DIR), ("transform", TRANSFORMS_DIR)):
        base = root / folder
        if base.is_dir():
            files = [p for p in base.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file()]
            out += [(kind, p) for p in sorted(files)]
    return out


def declared_names(root: str | os.PathLike) -> set[str]:
    """Lower-cased names of every declared node, source and source table, unvalidated.

    For tools that write node files (the Flow API): unreadable files are skipped.
    """
    names: set[str] = set()
    for _, path in node_files(Path(root).resolve()):
        try:
            data = read_yaml(path)
        except ProjectError:
            continue
        if isinstance(data, dict):
            for key, spec in data.items():
                names.add(str(key).lower())
                if isinstance(spec, dict) and isinstance(spec.get("table"), str):
                    names.add(spec["table"].lower())
    return names


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
            return {"type": "duckdb"}
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
        block["type"] = self.choice(value, "type", ENGINES, "duckdb", label="engine.type")
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


def _read_project_file(root: Path, config: Path | None) -> dict:
    if config is None:
        return {}
    data = read_yaml(config, root)
    if data is None:
        return {}
    ctx = _Ctx(root, config)
    if not isinstance(data, dict):
        raise ctx.error("expected a mapping of settings (name, timezone, start, state, database)")
    ctx.check_fields(data, PROJECT_FIELDS)
    return data


def load_project(path: str | os.PathLike = ".") -> Project:
    """Load and validate the project at ``path`` (its folder or its seeknal_project.yml)."""
    root, config_path = find_root(path)
    settings = _read_project_file(root, config_path)
    ctx = _Ctx(root, config_path or root)
    name = ctx.text(settings, "name") or root.name
    timezone = ctx.timezone(settings, "UTC")
    start, end = ctx.bounds(settings, timezone, None, None)
    engine_config = ctx.engine_block(settings)
    dialect = ctx.dialect(settings, DEFAULT_DIALECT)
    on_change = ctx.choice(settings, "on_change", ON_CHANGE, "warn")
    state = settings.get("state")
    if state is not None and not isinstance(state, dict):
        raise ctx.error(f"expected a mapping such as {{backend: json, path: "
                        f"target/run_state.json}}, got {state!r}", "state")
    database = ctx.text(settings, "database") or DEFAULT_DATABASE

    specs: dict[str, tuple[str, dict, _Ctx]] = {}
    lower: dict[str, str] = {}
    for kind, file in node_files(root):
        data = read_yaml(file, root)
        if data is None:
            continue
        fctx = _Ctx(root, file)
        if not isinstance(data, dict):
            raise fctx.error("expected a mapping of node name -> fields "
                             "(my_node: {sql: ...})")
        for key, spec in data.items():
            if not isinstance(key, str) or not _NAME.match(key):
                raise fctx.error(f"invalid node name {key!r}: use letters, digits and "
                                 "underscores, starting with a letter or underscore")
            nctx = _Ctx(root, file, key)
            if not isinstance(spec, dict):
                hint = (" — nest the fields under the node name (my_node: {sql: ...})"
                        if key in TRANSFORM_FIELDS or key in SOURCE_FIELDS else "")
                raise nctx.error(f"expected a mapping of fields, got {spec!r}{hint}")
            if key.lower() in lower:
                other = specs[lower[key.lower()]][2]
                raise nctx.error(f"duplicate node name: '{lower[key.lower()]}' is already "
                                 f"defined in {_show(other.path, root)}")
            lower[key.lower()] = key
            specs[key] = (kind, spec, nctx)

    sources = {
        n: _parse_source(spec, c) for n, (k, spec, c) in specs.items() if k == "source"
    }
    transforms = {n: (spec, c) for n, (k, spec, c) in specs.items() if k == "transform"}
    defaults = _Defaults(timezone, start, end, engine_config["type"], dialect)
    nodes = _parse_transforms(transforms, sources, defaults)
    return Project(
        name=name, root=root, nodes=nodes, sources=sources, timezone=timezone, start=start,
        state_config=state, database_path=root / database,
        description=ctx.text(settings, "description"), config_path=config_path, end=end,
        engine_config=engine_config, dialect=dialect, on_change=on_change,
    )


@dataclass(frozen=True)
class _Defaults:
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
    return SourceNode(
        name=ctx.node, path=ctx.path, table=table, location=location, format=fmt,
        time_column=ctx.text(spec, "time_column"), description=ctx.text(spec, "description"),
    )


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
                schedule = Schedule(spec["schedule"], timezone)
            except ValueError as exc:
                raise ctx.error(str(exc), "schedule") from None
        start, end = ctx.bounds(spec, timezone, defaults.start, defaults.end)

        deps = []
        for ref in ctx.names(spec, "depends_on"):
            deps.append(resolve(ref, ctx, f"'{ref}'", "depends_on"))
        for ref in ref_names(sql):
            deps.append(resolve(ref, ctx, f"ref('{ref}')", "sql"))
        if name in deps:
            raise ProjectError(f"dependency cycle: {name} -> {name} ({_show(ctx.path, ctx.root)}"
                               f") — a node cannot depend on itself; use {{{{ this }}}} to read "
                               "its own output")
        for table in table_references(sql):
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

        time_column = ctx.text(spec, "time_column") or infer_time_column(sql)
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
        nodes[name] = TransformNode(
            name=name, path=ctx.path, sql=sql, schedule=schedule, timezone=timezone,
            start=start, time_column=time_column, depends_on=tuple(sorted(set(deps))),
            batch_size=ctx.integer(spec, "batch_size", 1),
            lookback=ctx.integer(spec, "lookback", 0) or 0,
            partition_column=partition_column, partition_format=partition_format,
            materialization=materialization, end=end,
            engine=ctx.choice(spec, "engine", ENGINES, defaults.engine),
            dialect=ctx.dialect(spec, defaults.dialect), description=ctx.text(spec, "description"),
            tags=ctx.names(spec, "tags"), meta=meta,
        )
    return nodes
