"""One SQL for both engines: a node's SQL, written in its ``dialect:`` (DuckDB's by
default), transpiled by sqlglot to Spark SQL once per node, before any variable is
rendered.

Jinja expressions (``{{ start }}``, ``{{ ref('x') }}``) are swapped for sentinel
identifiers, the text is transpiled, and the expressions are put back, so the
template still renders per interval exactly as on DuckDB.  SQL with Jinja blocks
(``{% if %}``) cannot be parsed before rendering; it is rendered first and then
transpiled, per interval.  DuckDB's time functions whose result depends on their
argument's type (``timezone()``, ``time_bucket()``, ``date_trunc``) are rewritten by
spark_time.py, told the kinds of the input columns (``columns``: name -> "naive",
"instant" or "date", from the engine's view of the node's inputs).  A construct that
cannot be expressed in Spark SQL is one ``ProjectError`` line naming the node and the
construct.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache

from ..errors import ProjectError
from ..project import TransformNode
from ..templating import render_sql
from .spark_time import Untranslatable, rewrite

_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_SENTINEL = "__seeknal_jinja_{}__"
_SENTINEL_BACK = re.compile(r"__seeknal_jinja_(\d+)__")
_BLOCKS = ("{%", "{#")


def spark_identifier(name: str) -> str:
    """A Spark SQL quoted identifier: ``events`` -> ```events```."""
    return "`" + name.replace("`", "``") + "`"


#: constructs sqlglot carries over unchanged although Spark SQL has no such thing
_NO_SPARK_JOIN = ("ASOF", "POSITIONAL")
_NO_SPARK_FUNCTION = {"epoch", "strptime", "list_reduce", "list_transform"}
#: what only spark_time.py translates, and only from DuckDB's dialect
_TIME_FUNCTION = {"timezone"}

Columns = tuple[tuple[str, str], ...]


def _untranslatable(tree, dialect: str) -> str | None:
    """The first construct in a parsed query that Spark SQL cannot run, by name."""
    from sqlglot import exp

    refused = _NO_SPARK_FUNCTION if dialect == "duckdb" else _NO_SPARK_FUNCTION | _TIME_FUNCTION
    for found in tree.walk():
        if isinstance(found, exp.Join) and str(found.args.get("method") or "").upper() in _NO_SPARK_JOIN:
            return f"{str(found.args['method']).upper()} JOIN"
        if type(found).__name__ == "Columns":
            return "COLUMNS(...)"
        if isinstance(found, exp.DateBin) and dialect != "duckdb":
            return "time_bucket(...) (Spark has no DATE_BIN)"
        if isinstance(found, exp.Anonymous) and str(found.name).lower() in refused:
            return f"{str(found.name).lower()}(...)"
    return None


def transpile(subject: str, sql: str, dialect: str, columns: Columns = ()) -> str:
    """``sql`` (rendered, no Jinja) from ``dialect`` to Spark SQL; what cannot be is one
    ``ProjectError`` line starting with ``subject`` (``node 'daily'``)."""
    import sqlglot
    from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError

    if dialect == "spark":
        return sql
    try:
        trees = [t for t in sqlglot.parse(sql, read=dialect) if t is not None]
        construct = next((c for c in (_untranslatable(t, dialect) for t in trees) if c), None)
        if construct is None:
            if dialect == "duckdb":
                trees = [rewrite(t, dict(columns)) for t in trees]
            return ";\n".join(t.sql(dialect="spark", unsupported_level=ErrorLevel.RAISE) for t in trees)
    except Untranslatable as exc:
        construct = str(exc)
    except UnsupportedError as exc:
        construct = " ".join(str(exc).split())
    except ParseError as exc:
        first = " ".join((exc.errors[0]["description"] if exc.errors else str(exc)).split())
        raise ProjectError(
            f"{subject}: its SQL does not parse as {dialect} SQL, so it cannot be transpiled "
            f"to Spark SQL: {first} — fix the SQL, or set `dialect:` to the one it is written in"
        ) from None
    raise ProjectError(
        f"{subject}: its SQL does not transpile from {dialect} to Spark SQL: {construct} — "
        f"rewrite that part, or write the node in Spark SQL with `dialect: spark`")


@lru_cache(maxsize=1024)
def spark_template(name: str, sql: str, dialect: str, columns: Columns = ()) -> str | None:
    """The node's template with its SQL in Spark's dialect (Jinja expressions intact), or
    None when the template has Jinja blocks and must be rendered before transpiling.
    ``columns``: the kinds of its input columns, ``(("event_time", "naive"), ...)``."""
    text = sql.replace("__START__", "{{ start }}").replace("__END__", "{{ end }}")
    if any(mark in text for mark in _BLOCKS):
        return None
    expressions: list[str] = []

    def hide(m: re.Match) -> str:
        expressions.append(m.group())
        return _SENTINEL.format(len(expressions) - 1)

    spark = transpile(f"node '{name}'", _EXPRESSION.sub(hide, text), dialect, columns)
    return _SENTINEL_BACK.sub(lambda m: expressions[int(m.group(1))], spark)


def render_spark_sql(node: TransformNode, start, end, columns: Columns = ()) -> str:
    """The node's SQL for ``[start, end)`` in Spark SQL, with ``ref()`` and ``this`` as
    Spark identifiers (the engine registers a temp view per relation): the transpiled
    template (cached) rendered, or, with Jinja blocks, rendered and then transpiled."""
    template = spark_template(node.name, node.sql, node.dialect, columns)
    if template is None:
        rendered = render_sql(node, start, end, relation_for=spark_identifier_for_duckdb_parse)
        return transpile(f"node '{node.name}'", rendered, node.dialect, columns)
    return render_sql(replace(node, sql=template), start, end, relation_for=spark_identifier)


def spark_identifier_for_duckdb_parse(name: str) -> str:
    """``ref()`` in SQL that is rendered before transpiling: a double-quoted identifier,
    which every source dialect reads and sqlglot turns into Spark's backticks."""
    return '"' + name.replace('"', '""') + '"'
