"""Render a node's SQL for one interval with Jinja2.

Variables (all in the node's timezone; ``end`` is exclusive)::

    start, end            '2024-01-01 00:00:00'          wall clock
    start_date, end_date  '2024-01-01'
    start_ts, end_ts      '2024-01-01T00:00:00-05:00'    ISO 8601 with offset
    ref('node')           '"node"', or relation_for('node') when given
    this                  the node's own relation (to read its previous output)

The seed tutorial's ``__START__``/``__END__`` placeholders mean ``{{ start }}`` and
``{{ end }}``.  Undefined variables are errors (StrictUndefined), so a typo names
itself instead of rendering as an empty string.  jinja2 is imported on first render:
it costs ~50 ms, which commands that only load the project should not pay.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, NoReturn

from .errors import ProjectError, SeeknalError, did_you_mean
from .lexer import LazyPattern, one_query
from .timeutil import get_zone, to_utc

if TYPE_CHECKING:
    import jinja2

    from .project import TransformNode

VARIABLES = ("start", "end", "start_date", "end_date", "start_ts", "end_ts", "ref", "this")
_UNDEFINED = LazyPattern(r"'([^']+)' is undefined")  # error messages only


#: the kinds a node id may name before its dot (``ref('transform.x')``)
_PREFIXES = ("transform", "source")


def split_id(name_or_id: str) -> tuple[str | None, str]:
    """``'transform.x'`` -> ``('transform', 'x')``; ``'x'`` -> ``(None, 'x')``."""
    kind, dot, rest = str(name_or_id).partition(".")
    if dot and kind in _PREFIXES:
        return kind, rest
    return None, str(name_or_id)


def quote_identifier(name: str) -> str:
    """A DuckDB quoted identifier: ``events`` -> ``"events"``."""
    return '"' + name.replace('"', '""') + '"'


def interval_variables(
    start: dt.datetime, end: dt.datetime, timezone: str = "UTC"
) -> dict[str, str]:
    """The interval's template variables; naive datetimes are read in ``timezone``."""
    tz = get_zone(timezone)
    values: dict[str, str] = {}
    for key, instant in (("start", start), ("end", end)):
        local = to_utc(instant, tz).astimezone(tz)
        values[key] = local.strftime("%Y-%m-%d %H:%M:%S")
        values[f"{key}_date"] = local.strftime("%Y-%m-%d")
        values[f"{key}_ts"] = local.isoformat(timespec="seconds")
    return values


#: the most characters (or items) one template value or a rendered query may hold
MAX_TEXT = 10_000_000
#: the largest exponent ``**`` takes (``2 ** 10 ** 9`` would compute for minutes)
MAX_EXPONENT = 4096


def _environment():
    """Jinja's sandbox (no attribute escapes; ``range()`` of at most 100,000 items) with
    repetition, ``+``, ``~`` and ``**`` refused past a size, so a template cannot take the
    machine's memory or minutes of time; ``render_bounded`` caps the output."""
    import jinja2
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import SandboxedEnvironment

    class BoundedCode(CodeGenerator):
        def visit_Concat(self, node, frame):  # ``a ~ b``: through the size check
            self.write("environment.concat((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class Bounded(SandboxedEnvironment):
        intercepted_binops = frozenset({"*", "+", "**"})
        code_generator_class = BoundedCode

        def call_binop(self, context, operator, left, right):
            if operator == "**":
                if isinstance(right, int) and abs(right) > MAX_EXPONENT and not (
                        isinstance(left, int | float) and abs(left) <= 1):
                    raise _TooLarge(f"{left!r} ** {right} is too large (exponents up to {MAX_EXPONENT})")
            elif operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_TEXT:
                        raise _TooLarge(f"repeating {len(seq):,} characters or items {n:,} times "
                                        f"is too large (at most {MAX_TEXT:,})")
            elif isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                _check_size(len(left) + len(right))
            return super().call_binop(context, operator, left, right)

        def concat(self, parts):
            texts = [str(p) for p in parts]
            _check_size(sum(map(len, texts)))
            return "".join(texts)

    return Bounded(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


class _TooLarge(Exception):
    """A template value past MAX_TEXT (or MAX_EXPONENT): refused before it is built."""


def _check_size(size: int) -> None:
    if size > MAX_TEXT:
        raise _TooLarge(f"a text of {size:,} characters is too large (at most {MAX_TEXT:,})")


def render_bounded(template, context: dict) -> str:
    """``template`` rendered, refusing output past MAX_TEXT as it streams."""
    if isinstance(template, _SimpleTemplate):
        return template.render(context)
    out, size = [], 0
    for piece in template.generate(context):
        size += len(piece)
        _check_size(size)
        out.append(piece)
    return "".join(out)


_ENV = None
#: ``{{ name }}`` and ``{{ ref('x') }}``: all that most SQL templates use
_SIMPLE_EXPR = re.compile(
    r"\{\{[ \t]*(?:(?P<var>[A-Za-z_][A-Za-z0-9_]*)"
    r"""|ref\([ \t]*(?P<q>['"])(?P<ref>[^'"{}]*)(?P=q)[ \t]*\))[ \t]*\}\}"""
)


class _SimpleTemplate:
    """A template that only substitutes variables and ``ref()`` calls, rendered without
    jinja2 (importing it costs ~50 ms of every process that runs SQL).  Its output is
    what Jinja would produce; anything else (blocks, filters, whitespace control, CR
    line ends) goes to Jinja, and so does an undefined variable, for Jinja's error."""

    def __init__(self, source: str, parts: list[tuple[str, str]]):
        self.source, self.parts = source, parts

    def render(self, context: dict) -> str:
        out = []
        for kind, value in self.parts:
            if kind == "text":
                out.append(value)
            elif kind == "ref":
                out.append(str(context["ref"](value)))
            elif value in context:
                out.append(str(context[value]))
            else:
                return render_bounded(_jinja_template(self.source), context)  # UndefinedError
        return "".join(out)


def _simple(text: str) -> _SimpleTemplate | None:
    parts: list[tuple[str, str]] = []
    at = 0
    for m in _SIMPLE_EXPR.finditer(text):
        parts.append(("text", text[at:m.start()]))
        parts.append(("ref", m.group("ref")) if m.group("q") else ("var", m.group("var")))
        at = m.end()
    parts.append(("text", text[at:]))
    literal = "".join(v for k, v in parts if k == "text")
    if "\r" in text or any(mark in literal for mark in ("{{", "}}", "{%", "%}", "{#", "#}")):
        return None
    return _SimpleTemplate(text, [p for p in parts if p != ("text", "")])


@lru_cache(maxsize=1024)
def _jinja_template(text: str):
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV.from_string(text)


@lru_cache(maxsize=1024)
def _template(sql: str):
    text = sql.replace("__START__", "{{ start }}").replace("__END__", "{{ end }}")
    return _simple(text) or _jinja_template(text)


def where(node: TransformNode) -> str:
    return f"node '{node.name}'" + (f" ({node.path})" if node.path else "")


def compile_sql(node: TransformNode) -> jinja2.Template | _SimpleTemplate:
    """The node's compiled template (cached per SQL text); syntax errors as ProjectError."""
    try:
        return _template(node.sql)
    except Exception as exc:
        import jinja2

        if not isinstance(exc, jinja2.TemplateSyntaxError):
            raise
        raise ProjectError(
            f"{where(node)}: SQL template error on line {exc.lineno}: {exc.message}"
        ) from None


#: fixed values for the template variables when SQL is rendered only to be parsed
PLACEHOLDERS = {
    "start": "2000-01-01 00:00:00", "end": "2000-01-02 00:00:00",
    "start_date": "2000-01-01", "end_date": "2000-01-02",
    "start_ts": "2000-01-01T00:00:00+00:00", "end_ts": "2000-01-02T00:00:00+00:00",
}


def placeholder_sql(name: str, sql: str) -> str:
    """``sql`` rendered with fixed interval values and ``ref(x)`` as ``"x"``, so it parses.

    For analysis (fingerprints, table references), never for execution; template
    errors are ProjectError.
    """
    context: dict[str, object] = {"ref": lambda ref: quote_identifier(split_id(str(ref))[1]),
                                  "this": quote_identifier(name), **PLACEHOLDERS}
    try:
        return render_bounded(_template(sql), context)
    except Exception as exc:  # noqa: BLE001 - whatever a template raises is its author's error
        raise ProjectError(f"node '{name}': SQL template error: {template_problem(exc)}") from None


def render_sql(
    node: TransformNode,
    start: dt.datetime | None,
    end: dt.datetime | None,
    relation_for: Callable[[str], str] | None = None,
) -> str:
    """The node's SQL for the interval ``[start, end)``.

    ``start``/``end`` may be None for a full refresh of an unscheduled node; using an
    interval variable then is an error.  ``relation_for(name)`` maps a dependency to
    the relation the engine exposes for it (default: the quoted name).
    """
    template = compile_sql(node)
    relation = relation_for or quote_identifier
    allowed = {d.lower(): d for d in node.depends_on}

    def ref(name: str) -> str:
        target = allowed.get(split_id(str(name))[1].lower())
        if target is None:
            raise ProjectError(
                f"{where(node)}: ref('{name}') is not one of its dependencies"
                + (did_you_mean(name, node.depends_on) or
                   " — list it in depends_on or use a literal ref('name')")
            )
        return relation(target)

    context: dict[str, object] = {"ref": ref, "this": relation(node.name)}
    if start is not None and end is not None:
        context.update(interval_variables(start, end, node.timezone))
    try:
        return one_query(render_bounded(template, context))
    except SeeknalError:  # ref() of a non-dependency, or what relation_for refuses
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a template raises is its author's error
        _raise_template_error(node, exc)


def _raise_template_error(node: TransformNode, exc: Exception) -> NoReturn:
    """Whatever rendering raised, as one ProjectError line naming the node and its file."""
    import jinja2

    if isinstance(exc, jinja2.UndefinedError):
        match = _UNDEFINED.search(str(exc))
        name = match.group(1) if match else str(exc)
        if name in VARIABLES:
            hint = " — the node has no interval here (set a schedule, or pass start and end)"
        else:
            hint = did_you_mean(name, VARIABLES) or f" — available: {', '.join(VARIABLES)}"
        raise ProjectError(f"{where(node)}: undefined template variable '{name}'{hint}") from None
    raise ProjectError(f"{where(node)}: SQL template error: {template_problem(exc)}") from None


def template_problem(exc: BaseException) -> str:
    """What went wrong in a template, as words for one line."""
    if isinstance(exc, RecursionError):
        return "a macro calls itself without end (recursion too deep)"
    if isinstance(exc, MemoryError):
        return "it needs more memory than there is"
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"\b\w+\.<locals>\.", "", text)  # render_sql.<locals>.ref() -> ref()
    if isinstance(exc, _TooLarge | OverflowError | ArithmeticError | TypeError | ValueError):
        return text
    import jinja2

    return text if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: {text}"
