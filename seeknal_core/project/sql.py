"""Reading SQL without running it: table references, ``ref()`` calls, the time column,
and the normalised text that change plans diff (fingerprints: :mod:`.fingerprint`).

Dependencies and the time column come from a small tokenizer, not from sqlglot: a
project loads on every command, and the tokenizer takes 0.07 ms a query where sqlglot
(with the Jinja rendering it needs) takes 1.6 ms plus 0.12 s to import (measured on
1,000 typical queries), so 3,000 nodes would cost 5 s instead of 0.2 s.  sqlglot
serves :func:`normalize_sql`, the definition state records and change plans diff; it runs
only when a definition is recorded or compared, never for a fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from typing import Any

from ..errors import ProjectError
from ..lexer import TEMPLATE_LEXEMES, LazyPattern

DEFAULT_DIALECT = "duckdb"

#: results worth keeping between processes (the load cache persists them):
#: "scan": query key -> [refs, tables, time column]; "normalized": key -> normalised SQL;
#: "tokens": key -> token digest
MEMO: dict[str, dict[str, Any]] = {"scan": {}, "normalized": {}, "tokens": {}, "parse_error": {},
                                   "lineage": {}}
#: keys of MEMO this process used (the cache keeps only these, so it does not grow)
USED: dict[str, set[str]] = {name: set() for name in MEMO}


def text_key(*parts: str) -> str:
    """The cache key of a text (and whatever it is read with)."""
    return hashlib.sha1("\x00".join(parts).encode(), usedforsecurity=False).hexdigest()


def analyse(sql: str) -> tuple[list[str], list[str], str | None]:
    """``ref()`` names, table references and the inferred time column of one query."""
    key = text_key(sql)
    USED["scan"].add(key)
    found = MEMO["scan"].get(key)
    if found is None:
        found = MEMO["scan"][key] = [ref_names(sql), table_references(sql), infer_time_column(sql)]
    refs, tables, column = found
    return list(refs), list(tables), column


_REF = LazyPattern(r"""\bref\s*\(\s*(['"])(.*?)\1\s*\)""")
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
    for m in TEMPLATE_LEXEMES.finditer(sql):
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
        return text[1:-1].replace("``", "`")
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
_START_VALUE = LazyPattern(
    rf"CAST\s*\(\s*{_START_LIT}\s+AS\s+\w+\s*\)(?:\s*::\s*\w+)?|{_START_LIT}", re.IGNORECASE
)
_COLUMN = (
    r"(?:CAST\s*\(\s*)?(?:(?:\"[^\"]+\"|\w+)\s*\.\s*)?"
    r"(?:\"(?P<quoted>[^\"]+)\"|(?P<bare>[A-Za-z_]\w*))"
    r"(?:\s+AS\s+\w+(?:\s*\([\d\s,]*\))?\s*\))?(?:\s*::\s*\w+)?"
)
_COLUMN_BEFORE = LazyPattern(rf"{_COLUMN}\s*(?:>=|>|\bBETWEEN)\s*\Z", re.IGNORECASE)
_COLUMN_AFTER = LazyPattern(rf"\s*(?:<=|<)\s*{_COLUMN}", re.IGNORECASE)


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


@lru_cache(maxsize=1)
def _sqlglot_build() -> str:
    """Which sqlglot is installed, without importing it (its output keys the memo)."""
    import importlib.util

    spec = importlib.util.find_spec("sqlglot")
    try:
        info = os.stat(spec.origin) if spec and spec.origin else None
    except OSError:
        info = None
    return f"{info.st_mtime_ns}:{info.st_size}" if info else "?"


def memoised(table: str, compute, name: str, sql: str, dialect: str, build: str) -> str:
    """``compute(name, sql, dialect)``, memoised in ``MEMO[table]`` (kept by the load cache)
    under the text and ``build`` (what else the result depends on)."""
    key = text_key(name, dialect, sql, build)
    USED[table].add(key)
    value = MEMO[table].get(key)
    if value is None:
        value = MEMO[table][key] = compute(name, sql, dialect)
    return value


def normalize_sql(name: str, sql: str, dialect: str = DEFAULT_DIALECT) -> str:
    """The node's SQL, Jinja rendered with placeholders, as sqlglot pretty-prints it."""
    return memoised("normalized", _normalize, name, sql, dialect, _sqlglot_build())


def _normalize(name: str, sql: str, dialect: str) -> str:
    """``sql`` rendered with placeholders and printed by sqlglot.

    Comments, whitespace, keyword case, layout and optional identifier quotes (every
    identifier is printed quoted) disappear, so they never change a fingerprint.  SQL
    that does not render or parse falls back to the raw text with whitespace collapsed:
    a fingerprint must never stop a project from loading, and sqlglot may fail on valid
    DuckDB SQL (its parser has many internal error types).
    """
    fallback = " ".join(sql.split())
    from ..templating import placeholder_sql

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



_NOT_NAME = {"END", "NULL", "TRUE", "FALSE", "DISTINCT", "ALL"}
_OUTPUT_END = {"FROM", "WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "QUALIFY", "WINDOW", "UNION",
               "EXCEPT", "INTERSECT", ";"}


def output_columns(sql: str) -> tuple[str, ...] | None:
    """The output column names of the query's outermost SELECT when its text states them
    all (each item a column or ``... AS name``), else ``None`` (``*``, an unnamed
    expression): a check that a column exists runs only when this is known."""
    toks = _tokens(sql)
    depth, at = 0, None
    for i, (kind, text) in enumerate(toks):
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        elif depth == 0 and kind == "word" and text.upper() == "SELECT":
            at = i + 1
            break
    if at is None:
        return None
    items: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for kind, text in toks[at:]:
        if depth == 0 and (text == ";" or (kind == "word" and text.upper() in _OUTPUT_END)):
            break
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        if depth == 0 and text == ",":
            items.append([])
            continue
        items[-1].append((kind, text))
    if items[0] and items[0][0][0] == "word" and items[0][0][1].upper() in ("DISTINCT", "ALL"):
        if len(items[0]) > 1 and items[0][1][1].upper() == "ON":
            return None
        items[0] = items[0][1:]
    names = []
    for item in items:
        level, star = 0, False
        for _, text in item:
            level += (text == "(") - (text == ")")
            star = star or (level == 0 and text == "*")
        name = _ident(*item[-1]) if item and not star else None
        if name is None or (item[-1][0] == "word" and item[-1][1].upper() in _NOT_NAME):
            return None
        before = item[-2] if len(item) > 1 else None
        plain = all(k in ("word", "dq", "bq") or t == "." for k, t in item)  # a, t.x, a b
        if not (plain or before[1] == ")" or before[0] == "str"
                or (before[0] == "word" and before[1].upper() == "AS")):
            return None
        names.append(name)
    return tuple(names)


def lineage(name: str, sql: str, dialect: str, schema: dict[str, list[str]]) -> list:
    """``[outputs, lineage]`` of a query (``changes.column_lineage``; either None when not
    known), read with ``schema`` (upstream table -> its output columns): memoised with the
    load cache under the text and the schema, so a warm load parses nothing."""
    import json

    build = _sqlglot_build() + json.dumps(schema, sort_keys=True, separators=(",", ":"))
    return memoised("lineage", lambda n, s, d: _lineage(n, s, d, schema), name, sql, dialect, build)


def _lineage(name: str, sql: str, dialect: str, schema: dict[str, list[str]]) -> list:
    from .. import changes
    from ..templating import placeholder_sql

    try:
        rendered = placeholder_sql(name, sql)
    except ProjectError:
        return [None, None]
    outputs, by_column = changes.lineage(rendered, dialect, schema)
    return [list(outputs) if outputs is not None else None, by_column]


def parse_error(name: str, sql: str) -> str | None:
    """DuckDB's parser's complaint about ``sql`` (Jinja rendered with placeholders; a
    custom audit's query), or ``None``: memoised with the load cache, so only a new or
    edited query pays for importing duckdb."""
    return memoised("parse_error", _parse_error, name, sql, "duckdb", "") or None


def _parse_error(name: str, sql: str, _dialect: str) -> str:
    from ..templating import placeholder_sql

    try:
        rendered = placeholder_sql(name, sql)
    except ProjectError as exc:
        return str(exc).split(": ", 1)[-1]
    import duckdb

    try:
        duckdb.connect(":memory:").extract_statements(rendered)
    except duckdb.Error as exc:
        return " ".join(str(exc).split())
    return ""
