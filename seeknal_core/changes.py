"""What a SQL edit changes: a readable diff, the category, column-level lineage.

Everything here works on plain SQL text (a node's ``normalized_sql``: Jinja already
rendered with placeholders by the project) and needs no project, state or database.
SQL that sqlglot cannot parse is compared as text and any edit to it counts as breaking.

A change is *non-breaking* when it only adds output columns: every existing column's
definition, the filters, joins and grouping are the same.  That is decided by
*reduction*: the query cut down to one output column (CTEs and subqueries pruned of what
that column does not use) is that column's definition; cut down to none, it is the
query's row set.  Two versions of a column are the same when their reductions are.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

#: in a column set: every column (``SELECT *`` or a change that reaches every row)
ALL = "*"

_CLAUSES = (("with", "CTEs"), ("from", "source"), ("joins", "join"), ("where", "filter"),
            ("group", "grouping"), ("having", "having"), ("qualify", "qualify"),
            ("distinct", "distinct"), ("order", "order"), ("limit", "limit"))


#: the keys sqlglot's parser records a node's place in the SQL text under
_POSITION = frozenset({"line", "col", "start", "end"})


@lru_cache(maxsize=4096)
def _parse(sql: str, dialect: str) -> exp.Query | None:
    """The query's tree, without the source positions of its nodes: nothing here reads
    them, and every copy of the tree (qualifying, a reduction per column) would copy them
    (2.6x the cost of a copy without)."""
    try:
        tree = sqlglot.parse_one(sql, read=dialect)
    except SqlglotError:
        return None
    if not isinstance(tree, exp.Query):
        return None
    for node in tree.walk():
        meta = node._meta
        if meta is not None and meta.keys() <= _POSITION:
            node._meta = None
    return tree


def _flat(sql: str, dialect: str) -> str:
    tree = _parse(sql, dialect)
    return " ".join(sql.split()) if tree is None else tree.sql(dialect=dialect, comments=False)


def pretty(sql: str, dialect: str = "duckdb") -> str:
    """The query pretty-printed from its AST (one clause per line), or its text."""
    tree = _parse(sql, dialect)
    return sql.strip() if tree is None else tree.sql(dialect=dialect, pretty=True, comments=False)


def diff(old: str, new: str, dialect: str = "duckdb") -> list[str]:
    """Unified diff lines of the pretty-printed queries; empty when they are the same."""
    lines = difflib.unified_diff(pretty(old, dialect).splitlines(), pretty(new, dialect).splitlines(),
                                 "recorded", "current", n=2, lineterm="")
    return [line for line in lines if not line.startswith(("---", "+++"))]


# -- one analysed query ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """A parsed, qualified query: its normal text, its tree and its output column names.

    ``tree`` is None when the SQL could not be parsed or qualified: then nothing is known
    about its columns and every question about them is answered conservatively.
    """

    text: str
    tree: exp.Query | None
    outputs: tuple[str, ...] = ()
    dialect: str = "duckdb"

    @property
    def known_outputs(self) -> tuple[str, ...] | None:
        """The output columns, or None when a ``*`` hides some of them."""
        return None if self.tree is None or ALL in self.outputs else self.outputs


def analyse(sql: str, dialect: str = "duckdb",
            schema: Mapping[str, Iterable[str]] | None = None, *, text: str | None = None) -> Query:
    """Parse and qualify ``sql``; ``schema`` (table -> column names) resolves ``*`` and
    unqualified columns of joins when the tables it names are known.  ``text``: the
    query's text as the caller wants it kept (default: sqlglot's one-line print)."""
    from sqlglot.optimizer.qualify import qualify

    text = _flat(sql, dialect) if text is None else text
    tree = _parse(sql, dialect)
    if tree is None:
        return Query(text, None, (), dialect)
    mapping = {t.lower(): {c.lower(): "UNKNOWN" for c in cols} for t, cols in (schema or {}).items()}
    try:
        tree = qualify(tree.copy(), schema=mapping or None, dialect=dialect, quote_identifiers=False,
                       validate_qualify_columns=False, identify=False)
    except SqlglotError:
        return Query(text, None, (), dialect)
    outputs = tuple(ALL if n == "*" else n.lower() for n in tree.named_selects)
    return Query(text, tree, outputs, dialect)


def _reducible(tree: exp.Query) -> bool:
    """Projections can be dropped without changing the others (not DISTINCT, not a UNION)."""
    return isinstance(tree, exp.Select) and not tree.args.get("distinct")


def reduce(query: Query, keep: Iterable[str]) -> exp.Query | None:
    """The query cut down to the output columns ``keep`` (none: only its row set), with
    CTEs and subqueries pruned of what those columns do not use."""
    from sqlglot.optimizer.pushdown_projections import pushdown_projections

    if query.tree is None:
        return None
    tree = query.tree.copy()
    if not _reducible(tree):
        return tree
    keys = group_all_keys(tree)
    if keys is not None:  # its keys are projections: name them
        tree.set("group", exp.Group(expressions=[p.unalias().copy() for p in keys]))
    wanted = {k.lower() for k in keep}
    kept = [p for p in tree.expressions
            if (ALL if isinstance(p, exp.Star) or p.is_star else p.alias_or_name.lower()) in wanted]
    tree.set("expressions", kept or [exp.alias_(exp.Literal.number(1), "_seeknal_rows")])
    try:
        return pushdown_projections(tree)
    except SqlglotError:
        return tree


def group_all_keys(select: exp.Select) -> list[exp.Expression] | None:
    """The projections a ``GROUP BY ALL`` groups by: those without an aggregate (DuckDB's
    rule); None when the query does not group by ``ALL``.  A reduction to some columns
    keeps these keys, so the rows it describes stay the query's rows (dropping
    ``date_trunc('day', t) AS day`` must not drop its grouping)."""
    group = select.args.get("group")
    if group is None or not group.args.get("all"):
        return None
    return [p for p in select.expressions if p.find(exp.AggFunc) is None]


def _plain_grouping(select: exp.Select) -> bool:
    """No grouping, or grouping by expressions or ``ALL``: not positional, rollup, cube or
    grouping sets (a reduction would change what they group by)."""
    group = select.args.get("group")
    return group is None or not (any(v for k, v in group.args.items() if k not in ("expressions", "all"))
                                 or any(isinstance(e, exp.Literal) for e in group.expressions))


def _text(tree: exp.Expression | None) -> str | None:
    return None if tree is None else tree.sql(comments=False)


# -- what one edit changes -------------------------------------------------------------------------
@dataclass(frozen=True)
class SqlChange:
    """The difference between the SQL a node's intervals were computed with and its SQL now.

    ``rows``: the row set may differ (filters, joins, grouping, sources), so every column
    is affected; ``modified``: existing columns whose definition changed; ``parts``: what
    changed, in words (``filter``, ``columns``, ...), for summaries.
    """

    changed: bool
    rows: bool = False
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()

    @property
    def breaking(self) -> bool:
        return self.rows or bool(self.removed) or bool(self.modified)

    @property
    def affected_columns(self) -> frozenset[str]:
        """Columns whose values downstream readers see change (``ALL``: every column)."""
        if self.rows:
            return frozenset({ALL})
        return frozenset(self.modified) | frozenset(self.removed)


def classify(old_sql: str, new_sql: str, dialect: str = "duckdb",
             schema: Mapping[str, Iterable[str]] | None = None) -> SqlChange:
    """Compare two versions of a node's SQL (see the module docstring for the rule)."""
    old, new = analyse(old_sql, dialect, schema), analyse(new_sql, dialect, schema)
    if old.text == new.text:
        return SqlChange(changed=False)
    if old.tree is None or new.tree is None:
        return SqlChange(changed=True, rows=True, parts=("SQL",))
    added = tuple(c for c in new.outputs if c not in old.outputs)
    removed = tuple(c for c in old.outputs if c not in new.outputs)
    common = [c for c in old.outputs if c in new.outputs]
    if not (_reducible(old.tree) and _reducible(new.tree)):
        rows = True
        modified = tuple(common)
    else:
        rows = _text(reduce(old, ())) != _text(reduce(new, ()))
        modified = tuple(c for c in common if _text(reduce(old, (c,))) != _text(reduce(new, (c,))))
    parts = [word for key, word in _CLAUSES
             if _text(old.tree.args.get(key) or None) != _text(new.tree.args.get(key) or None)
             and not (key == "joins" and _joins(old.tree) == _joins(new.tree))]
    if [_text(e) for e in old.tree.expressions] != [_text(e) for e in new.tree.expressions]:
        parts.append("columns")
    return SqlChange(changed=True, rows=rows, added=added, removed=removed, modified=modified,
                     parts=tuple(parts) or ("SQL",))


def _joins(tree: exp.Expression) -> list[str]:
    return [j.sql(comments=False) for j in tree.args.get("joins") or ()]


# -- column-level lineage --------------------------------------------------------------------------
def reads(query: Query, keep: Iterable[str] | None = None) -> dict[str, set[str]] | None:
    """Table -> columns read (``ALL`` for ``*``) by the query, or by its reduction to the
    output columns ``keep``; None when the query could not be analysed.  An unqualified
    column in a scope over several tables counts as read from each of them."""
    from sqlglot.optimizer.scope import traverse_scope

    tree = query.tree if keep is None else reduce(query, keep)
    if tree is None:
        return None
    found: dict[str, set[str]] = {}
    try:
        scopes = traverse_scope(tree)
    except SqlglotError:
        return None
    for scope in scopes:
        tables = {alias: src.name.lower() for alias, src in scope.sources.items()
                  if isinstance(src, exp.Table)}
        for name in tables.values():
            found.setdefault(name, set())
        for column in scope.columns:
            owners = [tables[column.table]] if column.table in tables else (
                [] if column.table else list(tables.values()))
            for owner in owners:
                found[owner].add(ALL if isinstance(column.this, exp.Star) else column.name.lower())
        if isinstance(scope.expression, exp.Select):
            for projection in scope.expression.expressions:
                if isinstance(projection, exp.Star):
                    for name in tables.values():
                        found[name].add(ALL)
    return found


def column_lineage(query: Query) -> dict[str, dict[str, list[str]]] | None:
    """Each output column -> the upstream columns, per table, its values are computed from
    (its reduction's reads: the expression and the filters, joins and grouping that choose
    its rows), or None when that is not known exactly: unparsed SQL, a ``*`` in the output
    or in what a column reads, or an unqualified column over several tables."""
    from sqlglot.optimizer.scope import traverse_scope

    outputs = query.known_outputs
    if not outputs:
        return None
    try:
        scopes = traverse_scope(query.tree)
    except SqlglotError:
        return None
    if any(not c.table and len(s.sources) > 1 for s in scopes for c in s.columns):
        return None  # an unqualified column over several sources: ``reads`` counts it from each
    single = scoped_reads(query.tree, scopes)
    return _by_column(outputs, lambda col: single[col] if single is not None else reads(query, [col]))


def _by_column(outputs: Iterable[str], read_of) -> dict[str, dict[str, list[str]]] | None:
    out: dict[str, dict[str, list[str]]] = {}
    for column in outputs:
        read = read_of(column)
        if read is None or any(ALL in cols for cols in read.values()):
            return None
        out[column] = {table: sorted(cols) for table, cols in sorted(read.items()) if cols}
    return out


def lineage(sql: str, dialect: str = "duckdb", schema: Mapping[str, Iterable[str]] | None = None
            ) -> tuple[tuple[str, ...] | None, dict[str, dict[str, list[str]]] | None]:
    """``(analyse(...).known_outputs, column_lineage(analyse(...)))``: the common query (one
    SELECT over named tables, every column it reads attributable without qualifying) is read
    from its parse tree alone; qualifying it (``analyse``) would cost twice the parse."""
    quick = unqualified_lineage(sql, dialect)
    if quick is not None:
        return quick
    query = analyse(sql, dialect, schema, text=sql)
    return query.known_outputs, column_lineage(query)


def unqualified_lineage(sql: str, dialect: str = "duckdb"
                        ) -> tuple[tuple[str, ...], dict[str, dict[str, list[str]]] | None] | None:
    """``lineage`` of a query whose qualified tree would only add table names to its
    columns, or None (not that case: ask ``analyse``).  Declined: CTEs, subqueries, set
    operations, ``*``, unnamed outputs, table functions, ``USING``/``NATURAL`` joins,
    positional or rollup grouping, an unqualified column over several tables, under
    a qualifier that is not a table of the query or that the scope cannot attribute (in
    HAVING or QUALIFY), and a column named like an output that is not that column
    (qualifying would expand the alias)."""
    from sqlglot.optimizer.scope import traverse_scope

    tree = _parse(sql, dialect)
    if not isinstance(tree, exp.Select) or tree.args.get("with") or tree.find(exp.Subquery, exp.SetOperation):
        return None  # more than one scope: found here without walking the scopes
    if any(j.args.get("using") or j.args.get("method") for j in tree.args.get("joins") or ()):
        return None
    projections = tree.expressions
    if not projections or any(not isinstance(p, (exp.Column, exp.Alias)) or p.is_star or not p.alias_or_name
                              for p in projections):
        return None
    try:
        scopes = traverse_scope(tree)
    except SqlglotError:
        return None
    if len(scopes) != 1:
        return None
    sources = scopes[0].sources
    if not sources or not all(isinstance(s, exp.Table) and isinstance(s.this, exp.Identifier)
                              for s in sources.values()):
        return None
    if {id(c) for c in tree.find_all(exp.Column)} != {id(c) for c in scopes[0].columns}:
        return None  # the scope leaves out unqualified columns it cannot attribute (HAVING, QUALIFY)
    renamed = {p.alias.lower() for p in projections if isinstance(p, exp.Alias) and not (
        isinstance(p.this, exp.Column) and not p.this.table and p.this.name.lower() == p.alias.lower())}
    for column in scopes[0].columns:
        if isinstance(column.this, exp.Star):
            return None
        if column.table:
            if column.table not in sources:
                return None
        elif len(sources) > 1 or column.name.lower() in renamed:
            return None
    single = scoped_reads(tree, scopes)
    if single is None:
        return None
    outputs = tuple(p.alias_or_name.lower() for p in projections)
    return outputs, _by_column(outputs, single.get)


def scoped_reads(tree: exp.Query, scopes: list) -> dict[str, dict[str, set[str]]] | None:
    """``reads(query, [column])`` for every output column at once, without a reduction per
    column: the reduction keeps that projection and every clause that chooses rows, and
    pushes down into derived tables, CTEs and ``UNION ALL`` branches only the projections
    it reads (their own row-choosing clauses stay).  So a column reads its projection's
    columns plus the columns outside every projection of its scope, and through a derived
    source the same of the projections it names, scope by scope.  None: not a query of
    that shape (DISTINCT, ``UNION``/``INTERSECT``/``EXCEPT``, ORDER BY, positional or
    rollup grouping, subqueries in expressions, table functions, ``*``, a column
    whose source is not a selected table or derived table): the reductions decide.  Tests
    hold it equal to the reductions on both kinds."""
    from sqlglot.optimizer.scope import Scope

    root = scopes[-1]
    if not isinstance(tree, exp.Select) or root.expression is not tree:
        return None
    if any(s.subquery_scopes or s.udtf_scopes for s in scopes):
        return None
    memo: dict[tuple[int, frozenset[str]], dict[str, set[str]] | None] = {}

    def merge(into: dict[str, set[str]], found: dict[str, set[str]] | None) -> bool:
        if found is None:
            return False
        for table, cols in found.items():
            into.setdefault(table, set()).update(cols)
        return True

    def scope_reads(scope, keep: frozenset[str]) -> dict[str, set[str]] | None:
        key = (id(scope), keep)
        if key not in memo:
            memo[key] = None  # a scope reached from itself is not that shape
            memo[key] = _reads_of(scope, keep)
        return memo[key]

    def _reads_of(scope, keep: frozenset[str]) -> dict[str, set[str]] | None:
        node = scope.expression
        if isinstance(node, exp.SetOperation):
            if not isinstance(node, exp.Union) or node.args.get("distinct") or any(
                    node.args.get(k) for k in ("order", "limit", "offset")):
                return None
            positions = [i for i, name in enumerate(node.named_selects) if name.lower() in keep]
            found: dict[str, set[str]] = {}
            for branch in scope.set_operation_scopes:
                names = branch.expression.named_selects
                if len(names) != len(node.named_selects) or not merge(
                        found, scope_reads(branch, frozenset(names[i].lower() for i in positions))):
                    return None
            return found
        if not isinstance(node, exp.Select) or not _reducible(node) or node.args.get("order"):
            return None  # ORDER BY may name an output alias: the reduction decides
        if not _plain_grouping(node):
            return None
        # ``GROUP BY ALL``: the reduction names its keys, so their columns choose rows
        keys = {id(p) for p in group_all_keys(node) or ()}
        selected = {alias: source for alias, (_, source) in scope.selected_sources.items()}
        tables = {a: src.name.lower() for a, src in selected.items() if isinstance(src, exp.Table)}
        found = {name: set() for name in tables.values()}
        need: dict[str, set[str]] = {alias: set() for alias in selected if alias not in tables}
        in_projection: set[int] = set()
        kept = []
        for projection in node.expressions:
            if isinstance(projection, exp.Star) or projection.is_star:
                return None
            columns = list(projection.find_all(exp.Column))
            in_projection.update(id(c) for c in columns)
            if projection.alias_or_name.lower() in keep or id(projection) in keys:
                kept += columns
        for column in kept + [c for c in scope.columns if id(c) not in in_projection]:
            owner = column.table or (next(iter(selected)) if len(selected) == 1 else None)
            if isinstance(column.this, exp.Star) or owner not in selected:
                return None
            if owner in tables:
                found[tables[owner]].add(column.name.lower())
            else:
                need[owner].add(column.name.lower())
        for alias, names in need.items():
            if not isinstance(selected[alias], Scope) or not merge(
                    found, scope_reads(selected[alias], frozenset(names))):
                return None
        return found

    out: dict[str, dict[str, set[str]]] = {}
    for projection in tree.expressions:
        name = projection.alias_or_name.lower()
        read = scope_reads(root, frozenset({name}))
        if read is None:
            return None
        out[name] = read
    return out


@dataclass(frozen=True)
class Effect:
    """How a node's output changes: every row (``rows``) or these columns (``ALL``: any)."""

    rows: bool
    columns: frozenset[str] = field(default_factory=frozenset)


def effect_of(change: SqlChange) -> Effect | None:
    """What a node's own SQL change means for its readers; None for additions only."""
    if not change.breaking:
        return None
    return Effect(change.rows, change.affected_columns)


def _hits(read: Mapping[str, set[str]] | None, upstream: Mapping[str, Effect]) -> bool:
    if read is None:
        return True
    for table, effect in upstream.items():
        columns = read.get(table.lower())
        if columns is None:
            continue
        if effect.rows or ALL in effect.columns or ALL in columns or columns & effect.columns:
            return True
    return False


def propagate(query: Query, upstream: Mapping[str, Effect]) -> Effect | None:
    """The effect on a node (its ``query``) of changes to tables it reads, or None when it
    reads none of the changed columns.  A changed column used in its filters, joins or
    grouping, or upstream rows that changed, change every one of its rows."""
    if not upstream:
        return None
    if query.tree is None:
        return Effect(True, frozenset({ALL}))
    everything = reads(query)
    if not _hits(everything, upstream):
        return None
    if any(e.rows for t, e in upstream.items() if t.lower() in (everything or {})) or \
            _hits(reads(query, ()), upstream):
        return Effect(True, frozenset({ALL}))
    columns: set[str] = set()
    for name in query.outputs:
        if _hits(reads(query, (name,)), upstream):
            if name == ALL:  # SELECT * passes the changed columns through by name
                columns.update(c for t, e in upstream.items() for c in e.columns)
            else:
                columns.add(name)
    return Effect(False, frozenset(columns)) if columns else None
