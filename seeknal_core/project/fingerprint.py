"""The SQL half of a node's fingerprint: a digest of its tokens.

Why a lexer of our own and not sqlglot's tokenizer: a fingerprint is computed for every
node when Dagster loads a project without a load cache (a fresh clone, ``dg dev``), and
importing sqlglot costs 0.25 s and its tokenizer 0.3 ms a query, a third of the 1 s budget
of a 200-node load; this one regular expression needs no import and 0.05 ms a query.
It only has to decide *sameness*, never meaning, so it must be safe in one direction:
two texts with equal digests are the same query.  Hence every lexeme of SQL that could
change meaning is a token of its own (strings with their escapes, dollar quotes,
numbers, runs of operator characters), and tokens that touch with no space between them
where a space would split them differently (``1e5`` / ``1 e5``) are marked as touching.
What does not count: whitespace, comments, the case of keywords and function names, and
optional identifier quotes (``"b"`` is ``b``).  Identifiers and literals keep their case.
An edit the lexer sees but a parser would not (``a b`` -> ``a AS b``) changes the digest;
``TransformNode.fingerprint_matches`` then compares the recorded, parsed definition.
"""

from __future__ import annotations

from ..errors import ProjectError
from ..lexer import SQL_LEXEMES
from .sql import DEFAULT_DIALECT, memoised, text_key

#: bump when the digest of some SQL would change: part of the load cache's key
VERSION = "tokens-1"

#: words whose case never matters (SQL syntax and common type names; a function name is
#: any word before ``(``).  A word missing here only makes a case edit count as a change.
KEYWORDS = frozenset("""
    ALL AND ANTI ANY ARRAY AS ASC ASOF AT BETWEEN BIGINT BLOB BOOL BOOLEAN BY CASE CAST
    CROSS CUBE CURRENT DATE DAY DECIMAL DESC DISTINCT DOUBLE ELSE END ESCAPE EXCEPT
    EXCLUDE EXISTS EXTRACT FALSE FILTER FIRST FLOAT FOLLOWING FOR FROM FULL GLOB GROUP
    GROUPING HAVING HOUR HUGEINT ILIKE IN INNER INT INTEGER INTERSECT INTERVAL INTO IS
    ISNULL JOIN LAST LATERAL LEFT LIKE LIMIT MATERIALIZED MINUTE MONTH NATURAL NOT NOTNULL
    NULL NULLS NUMERIC OFFSET ON OR ORDER OUTER OVER PARTITION PIVOT POSITIONAL PRECEDING
    QUALIFY RANGE REAL RECURSIVE REPLACE RIGHT ROLLUP ROW ROWS SAMPLE SECOND SELECT SEMI
    SETS SMALLINT SOME STRING STRUCT TABLE TABLESAMPLE TEXT THEN TIES TIME TIMESTAMP
    TIMESTAMPTZ TINYINT TO TRUE UBIGINT UINTEGER UNBOUNDED UNION UNPIVOT USING VALUES
    VARCHAR WEEK WHEN WHERE WINDOW WITH WITHIN YEAR ZONE
""".split())


def token_digest(name: str, sql: str, dialect: str = DEFAULT_DIALECT) -> str:
    """A digest of the node's SQL (Jinja rendered with placeholders) as tokens; memoised,
    and kept by the load cache."""
    return memoised("tokens", _digest, name, sql, dialect, VERSION)


def _digest(name: str, sql: str, dialect: str) -> str:
    """See :func:`token_digest`; SQL that does not render is hashed as its raw text with
    whitespace collapsed (a fingerprint never stops a project from loading)."""
    from ..templating import placeholder_sql

    try:
        text = placeholder_sql(name, sql)
    except ProjectError:
        return text_key("raw", " ".join(sql.split()))
    return text_key(VERSION, *tokens(text))


_WORDS = ("id", "kw", "num")


def tokens(text: str) -> list[str]:
    """The tokens of ``text`` as ``kind:length:text`` (unambiguous when joined), trailing
    semicolons left out; ``~`` before a token that touches the previous one where a
    space would change how they read."""
    lexemes = [(m.lastgroup, m.group()) for m in SQL_LEXEMES.finditer(text)]
    out: list[str] = []
    previous, touching = "", False
    for i, (kind, value) in enumerate(lexemes):
        if kind in ("ws", "comment"):
            touching = False
            continue
        if kind == "word":
            upper = value.upper()
            if upper in KEYWORDS or _next(lexemes, i) == "(":
                kind, value = "kw", upper
            else:
                kind = "id"
        elif kind == "dq":
            kind, value = "id", value[1:-1].replace('""', '"')
        elif kind == "bq":
            kind, value = "id", value[1:-1].replace("``", "`")
        glue = "~" if touching and previous in _WORDS and kind in (*_WORDS, "str") else ""
        out.append(f"{glue}{kind}:{len(value)}:{value}")
        previous, touching = kind, True
    while out and out[-1] == "other:1:;":
        out.pop()
    return out


def _next(lexemes: list[tuple[str, str]], i: int) -> str:
    """The next significant lexeme after ``i`` (spaces and comments skipped)."""
    for kind, value in lexemes[i + 1:]:
        if kind not in ("ws", "comment"):
            return value
    return ""
