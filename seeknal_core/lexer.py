"""SQL's lexemes: the one lexer of the core, and where a rendered query ends.

The project's scanners (table references, the time column, ``ref()``;
:mod:`.project.sql`), the fingerprint (:mod:`.project.fingerprint`) and rendering
(:func:`one_query`, for :mod:`.templating`) read the same text the same way.  It lives
below both templating and the project so that neither imports the other for it.
"""

from __future__ import annotations

import re
from typing import Any


class LazyPattern:
    """A regular expression compiled on its first use, for patterns most processes never use:
    the scanners run only when the load cache misses, others only on an error or an optional
    field, and compiling them at import cost every process ~5 ms."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._args = (pattern, flags)
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:
        if self._compiled is None:
            self._compiled = re.compile(*self._args)
        return getattr(self._compiled, name)


#: Every lexeme that could change meaning is one of its own (strings with their escapes and
#: dollar quotes, numbers, runs of operator characters); ``jinja`` blocks only in a template
#: (the scanners read SQL before rendering, the fingerprint and ``one_query`` after).  No two
#: kinds start alike (``-``/``/`` are operators unless a comment starts), so the order only
#: puts the commonest first.
_LEXEMES = (
    ("ws", r"\s+"),
    ("word", r"(?![eE]')[A-Za-z_][A-Za-z0-9_$]*"),  # the commonest first; not an E'' string's E
    ("comment", r"--[^\n]*|/\*.*?(?:\*/|\Z)"),
    ("jinja", r"\{\{.*?\}\}|\{%.*?%\}|\{\#.*?\#\}"),
    ("str", r"[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|\$(?P<tag>[A-Za-z_]\w*|)\$.*?\$(?P=tag)\$"),
    ("dq", r'"(?:[^"]|"")*"'),
    ("bq", r"`(?:[^`]|``)*`"),
    ("num", r"0[xX][0-9A-Fa-f_]+|0[bB][01_]+|(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?"),
    ("op", r"(?:[<>=!|&^~+*%:@#?]|-(?!-)|/(?!\*))+"),
    ("other", r"."),
)


def _lexer(*, templates: bool) -> LazyPattern:
    return LazyPattern("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in _LEXEMES
                                if templates or kind != "jinja"), re.DOTALL)


#: lexemes of a template (Jinja blocks are lexemes of their own)
TEMPLATE_LEXEMES = _lexer(templates=True)
#: lexemes of rendered SQL
SQL_LEXEMES = _lexer(templates=False)


def one_query(sql: str) -> str:
    """``sql`` as engines wrap it (``SELECT * FROM (<sql>) AS q``): without final ``;``
    (also ones followed by comments), and ending in a newline when its last line ends in
    a ``--`` comment, which would otherwise swallow the wrapper's closing parenthesis.
    Other SQL comes back unchanged."""
    if ";" not in sql and "--" not in sql:
        return sql
    while True:
        last = end = None
        for m in SQL_LEXEMES.finditer(sql):
            end = m
            if m.lastgroup not in ("ws", "comment"):
                last = m
        if last is None or last.group() != ";":
            break
        sql = sql[:last.start()] + sql[last.end():]
    if end is not None and end.lastgroup == "comment" and end.group().startswith("--"):
        sql += "\n"
    return sql
