"""The PostgreSQL state backend: one schema shared by every machine and worker of a project.

Select it in ``seeknal_project.yml`` with ``state: {backend: postgres, dsn: ...}`` or with
``$SEEKNAL_STATE_DSN``.  psycopg 3 is imported when a store is created, so importing
``seeknal_core.state`` stays cheap for JSON users.

Schema (created and migrated by the store; ``schema_version`` lists applied migrations)::

    store         one row: revision (the store-wide counter), updated_at
    nodes         name, completed tstzmultirange, partition_keys text[], fingerprint,
                  last_run, revision (of the node's latest change), seq (creation order)
    failed        node, span tstzrange, error, attempts, last_attempt
    restatements  seq, id, node, span tstzmultirange, pending, requested_at, item jsonb
    audit         id, revision, node, event, at, record jsonb   (index on revision)

Completed intervals are a ``tstzmultirange``: PostgreSQL keeps ranges merged
(overlapping and touching ``[start, end)`` ranges fuse) at microsecond precision, so a
completion is ``completed + new`` and a restatement ``completed - removed``, computed by
the server, and ``SELECT name, completed FROM seeknal.nodes`` reads like the JSON file.
Intervals travel as ``bigint[]`` of microsecond bounds (fast to send and parse).

Every mutation is one call of a PL/pgSQL function in its own transaction: one round
trip.  The function first locks the ``store`` row (``UPDATE ... RETURNING`` of the
revision, or ``SELECT ... FOR UPDATE`` when the change may turn out to be a no-op), so
mutations are serialised store-wide exactly like the JSON file's lock: revisions are
strictly increasing and gap-free (a failed transaction rolls its increment back), and
no update is ever lost.  The lock is held only while the function runs and commits,
never across a client round trip.  Audit records are JSON objects identical to the JSON
backend's ``run_log.jsonl`` lines; ``changes_since`` reads them through the revision
index.  Reads are single statements, so each sees one consistent snapshot.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from ..intervals import IntervalSet
from .base import Change, FailedInterval, NodeState, Restatement, StateError
from .common import StoreBase, _dt, _fmt, _parse_us, _pending_item, _resync, _rows
from .json_store import (
    KEEP_RESOLVED,
    _change,
    _parse_rows,
    _restatement,
    canonical_record,
    check_export,
    export_header,
)

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_VERSION", "PostgresStateStore"]

DEFAULT_SCHEMA = "seeknal"
#: Oldest server version with multiranges (``tstzmultirange``, ``range_agg``).
MIN_SERVER_VERSION = 140000
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# -- schema migrations ------------------------------------------------------------------------
# ``{s}`` is replaced by the quoted schema name (str.replace, so SQL braces stay as they are).
# Each entry runs once, in one transaction, under an advisory lock; never edit a released one:
# append a new migration instead.

_MIGRATION_1 = r"""
CREATE TABLE IF NOT EXISTS {s}.store (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    revision bigint NOT NULL CHECK (revision >= 0),
    updated_at timestamptz
);
INSERT INTO {s}.store (id, revision) VALUES (true, 0) ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS {s}.nodes (
    name text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    completed tstzmultirange NOT NULL DEFAULT '{}',
    partition_keys text[] NOT NULL DEFAULT '{}',
    fingerprint text,
    last_run timestamptz,
    revision bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS {s}.failed (
    node text NOT NULL REFERENCES {s}.nodes (name) ON DELETE CASCADE,
    span tstzrange NOT NULL CHECK (NOT isempty(span)),
    error text NOT NULL,
    attempts integer NOT NULL,
    last_attempt timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS failed_node_idx ON {s}.failed (node);

CREATE TABLE IF NOT EXISTS {s}.restatements (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    node text NOT NULL REFERENCES {s}.nodes (name) ON DELETE CASCADE,
    span tstzmultirange NOT NULL,
    pending boolean NOT NULL,
    requested_at timestamptz NOT NULL,
    item jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS restatements_node_idx ON {s}.restatements (node, seq);
CREATE INDEX IF NOT EXISTS restatements_pending_idx ON {s}.restatements (requested_at) WHERE pending;

CREATE TABLE IF NOT EXISTS {s}.audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    revision bigint NOT NULL,
    node text NOT NULL,
    event text NOT NULL,
    at timestamptz,
    record jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_revision_idx ON {s}.audit (revision);
CREATE INDEX IF NOT EXISTS audit_node_idx ON {s}.audit (node, revision, id);

-- Helpers.  ts/us/fmt are single expressions of immutable (fmt: stable) built-ins and not
-- STRICT, so the planner inlines them; the ones with a FROM clause are PL/pgSQL, whose plans
-- are cached per session (a SQL-language function's body would be planned on every call).

-- microseconds since the epoch <-> timestamptz, exact over the whole datetime range
CREATE OR REPLACE FUNCTION {s}.ts(us bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT timezone('UTC', timestamp 'epoch' + (us / 1000000) * interval '1 second'
                                             + (us % 1000000) * interval '1 microsecond')
$$;

CREATE OR REPLACE FUNCTION {s}.us(t timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (extract(epoch FROM timezone('UTC', t)) * 1000000)::bigint $$;

-- the JSON backend's time text: 2024-01-01T00:00:00Z, microseconds only when set
CREATE OR REPLACE FUNCTION {s}.fmt(t timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT to_char(timezone('UTC', t), 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN {s}.us(t) % 1000000 = 0 THEN '' ELSE to_char(timezone('UTC', t), '.US') END
        || 'Z'
$$;

-- flat [start0, end0, start1, end1, ...] microsecond bounds <-> tstzmultirange
CREATE OR REPLACE FUNCTION {s}.mr(b bigint[]) RETURNS tstzmultirange
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
    RETURN (SELECT coalesce(range_agg(tstzrange({s}.ts(b[i]), {s}.ts(b[i + 1]), '[)')),
                            '{}'::tstzmultirange)
            FROM generate_series(1, coalesce(array_length(b, 1), 0) - 1, 2) AS i);
END
$$;

CREATE OR REPLACE FUNCTION {s}.bounds(m tstzmultirange) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
    RETURN (SELECT coalesce(array_agg(v.x ORDER BY u.o, v.k), '{}')
            FROM unnest(m) WITH ORDINALITY AS u(r, o),
                 LATERAL (VALUES (1, {s}.us(lower(u.r))), (2, {s}.us(upper(u.r)))) AS v(k, x));
END
$$;

CREATE OR REPLACE FUNCTION {s}.fmt_rows(m tstzmultirange) RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
AS $$
BEGIN
    RETURN (SELECT coalesce(jsonb_agg(jsonb_build_array({s}.fmt(lower(u.r)), {s}.fmt(upper(u.r)))
                                      ORDER BY u.o), '[]')
            FROM unnest(m) WITH ORDINALITY AS u(r, o));
END
$$;

-- keep pending restatements and the latest resolved ones (the audit keeps the rest)
CREATE OR REPLACE FUNCTION {s}.prune(p_node text) RETURNS void
LANGUAGE sql
AS $$
    DELETE FROM {s}.restatements
    WHERE node = p_node AND NOT pending AND seq < (
        SELECT seq FROM {s}.restatements WHERE node = p_node AND NOT pending
        ORDER BY seq DESC OFFSET {keep} - 1 LIMIT 1)
$$;

CREATE OR REPLACE FUNCTION {s}.mark_complete(
    p_node text, p_done bigint[], p_keys text[], p_fingerprint text, p_by text, p_record jsonb
) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_rev bigint;
    v_now timestamptz;
    v_at text;
    v_done tstzmultirange := {s}.mr(p_done);
    v_completed tstzmultirange;
    v_resolved jsonb;
BEGIN
    UPDATE {s}.store SET revision = revision + 1, updated_at = clock_timestamp()
    RETURNING revision, updated_at INTO v_rev, v_now;  -- the row lock serialises writers
    v_at := {s}.fmt(v_now);

    INSERT INTO {s}.nodes AS n (name, completed, partition_keys, fingerprint, last_run, revision)
    VALUES (p_node, v_done, p_keys, p_fingerprint, v_now, v_rev)
    ON CONFLICT (name) DO UPDATE SET
        completed = n.completed + excluded.completed,
        partition_keys = CASE WHEN cardinality(excluded.partition_keys) = 0 THEN n.partition_keys
            ELSE ARRAY(SELECT k FROM unnest(n.partition_keys || excluded.partition_keys) AS k
                       GROUP BY k ORDER BY k COLLATE "C") END,
        fingerprint = coalesce(excluded.fingerprint, n.fingerprint),
        last_run = excluded.last_run,
        revision = excluded.revision
    RETURNING n.completed INTO v_completed;

    -- failed intervals lose what is now completed; the rest keeps its count
    IF NOT isempty(v_done) THEN
        WITH hit AS (
            DELETE FROM {s}.failed AS f WHERE f.node = p_node AND f.span && v_done RETURNING f.*
        )
        INSERT INTO {s}.failed (node, span, error, attempts, last_attempt)
        SELECT h.node, r, h.error, h.attempts, h.last_attempt
        FROM hit AS h, unnest(multirange(h.span) - v_done) AS r;
    END IF;

    -- pending restatements of this node that are completed again are resolved by this run
    WITH res AS (
        UPDATE {s}.restatements AS r
        SET pending = false,
            item = r.item || jsonb_build_object('status', 'resolved', 'resolved_at', v_at,
                                                'resolved_by', p_by)
        WHERE r.node = p_node AND r.pending AND v_completed @> r.span
        RETURNING r.seq, r.id, r.item
    )
    SELECT jsonb_agg(jsonb_build_object('id', res.id, 'item', res.item) ORDER BY res.seq)
    INTO v_resolved FROM res;

    INSERT INTO {s}.audit (revision, node, event, at, record)
    VALUES (v_rev, p_node, 'complete', v_now,
            jsonb_build_object('revision', v_rev, 'at', v_at) || p_record
            || CASE WHEN v_resolved IS NULL THEN '{}'::jsonb ELSE jsonb_build_object(
                   'resolved_restatements',
                   (SELECT jsonb_agg(x.e -> 'id' ORDER BY x.o)
                    FROM jsonb_array_elements(v_resolved) WITH ORDINALITY AS x(e, o))) END);
    IF v_resolved IS NOT NULL THEN
        INSERT INTO {s}.audit (revision, node, event, at, record)
        SELECT v_rev, p_node, 'resolve', v_now, jsonb_build_object(
            'revision', v_rev, 'at', v_at, 'event', 'resolve', 'node', p_node,
            'intervals', x.e -> 'item' -> 'intervals', 'restatement_id', x.e -> 'id',
            'resolved_by', p_by, 'reason', x.e -> 'item' -> 'reason')
        FROM jsonb_array_elements(v_resolved) WITH ORDINALITY AS x(e, o)
        ORDER BY x.o;
        PERFORM {s}.prune(p_node);
    END IF;
    RETURN v_rev;
END
$$;

CREATE OR REPLACE FUNCTION {s}.mark_failed(
    p_node text, p_spans bigint[], p_error text, p_record jsonb
) RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_rev bigint;
    v_now timestamptz;
    v_span tstzrange;
    v_count integer;
    v_attempts integer := 0;
BEGIN
    UPDATE {s}.store SET revision = revision + 1, updated_at = clock_timestamp()
    RETURNING revision, updated_at INTO v_rev, v_now;  -- the row lock serialises writers
    INSERT INTO {s}.nodes AS n (name, last_run, revision) VALUES (p_node, v_now, v_rev)
    ON CONFLICT (name) DO UPDATE SET last_run = excluded.last_run, revision = excluded.revision;

    FOR i IN 1 .. coalesce(array_length(p_spans, 1), 0) - 1 BY 2 LOOP
        v_span := tstzrange({s}.ts(p_spans[i]), {s}.ts(p_spans[i + 1]), '[)');
        SELECT coalesce(max(f.attempts), 0) + 1 INTO v_count
        FROM {s}.failed AS f WHERE f.node = p_node AND f.span && v_span;
        v_attempts := greatest(v_attempts, v_count);
        -- overlapped failures are replaced; their parts outside this interval stay as they were
        WITH hit AS (
            DELETE FROM {s}.failed AS f WHERE f.node = p_node AND f.span && v_span RETURNING f.*
        )
        INSERT INTO {s}.failed (node, span, error, attempts, last_attempt)
        SELECT h.node, r, h.error, h.attempts, h.last_attempt
        FROM hit AS h, unnest(multirange(h.span) - multirange(v_span)) AS r;
        INSERT INTO {s}.failed (node, span, error, attempts, last_attempt)
        VALUES (p_node, v_span, p_error, v_count, v_now);
    END LOOP;

    INSERT INTO {s}.audit (revision, node, event, at, record)
    VALUES (v_rev, p_node, 'fail', v_now,
            jsonb_build_object('revision', v_rev, 'at', {s}.fmt(v_now)) || p_record
            || jsonb_build_object('attempts', v_attempts));
    RETURN v_rev;
END
$$;

-- p_items: [{"node", "id", "rows": [[start, end], ...], "bounds": [us, ...]}, ...]
CREATE OR REPLACE FUNCTION {s}.restate(p_items jsonb, p_reason text, p_actor text)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    v_rev bigint;
    v_now timestamptz;
    v_at text;
    v_item jsonb;
    v_node text;
    v_change tstzmultirange;
    v_old tstzmultirange;
BEGIN
    UPDATE {s}.store SET revision = revision + 1, updated_at = clock_timestamp()
    RETURNING revision, updated_at INTO v_rev, v_now;  -- the row lock serialises writers
    v_at := {s}.fmt(v_now);
    FOR v_item IN SELECT x.e FROM jsonb_array_elements(p_items) WITH ORDINALITY AS x(e, o) ORDER BY x.o
    LOOP
        v_node := v_item ->> 'node';
        v_change := {s}.mr(ARRAY(
            SELECT y.b::bigint FROM jsonb_array_elements_text(v_item -> 'bounds') WITH ORDINALITY AS y(b, o)
            ORDER BY y.o));
        INSERT INTO {s}.nodes AS n (name, revision) VALUES (v_node, v_rev)
        ON CONFLICT (name) DO UPDATE SET revision = excluded.revision
        RETURNING n.completed INTO v_old;
        UPDATE {s}.nodes SET completed = completed - v_change WHERE name = v_node;
        INSERT INTO {s}.restatements (id, node, span, pending, requested_at, item)
        VALUES (v_item ->> 'id', v_node, v_change, true, v_now, jsonb_build_object(
            'id', v_item -> 'id', 'intervals', v_item -> 'rows', 'reason', p_reason,
            'actor', p_actor, 'requested_at', v_at, 'status', 'pending',
            'resolved_at', NULL, 'resolved_by', NULL));
        INSERT INTO {s}.audit (revision, node, event, at, record)
        VALUES (v_rev, v_node, 'restate', v_now, jsonb_build_object(
            'revision', v_rev, 'at', v_at, 'event', 'restate', 'node', v_node,
            'intervals', v_item -> 'rows', 'reason', p_reason, 'actor', p_actor,
            'restatement_id', v_item -> 'id', 'removed', {s}.fmt_rows(v_old * v_change)));
    END LOOP;
    RETURN v_at;
END
$$;

-- {"node", "item"} of the restatement (resolved now or before), NULL when unknown
CREATE OR REPLACE FUNCTION {s}.resolve_restatement(p_id text, p_by text)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_rev bigint;
    v_now timestamptz;
    v_at text;
    v_node text;
    v_pending boolean;
    v_item jsonb;
BEGIN
    SELECT s.revision + 1 INTO v_rev FROM {s}.store AS s FOR UPDATE;
    SELECT r.node, r.pending, r.item INTO v_node, v_pending, v_item
    FROM {s}.restatements AS r WHERE r.id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF NOT v_pending THEN
        RETURN jsonb_build_object('node', v_node, 'item', v_item);
    END IF;
    v_now := clock_timestamp();
    v_at := {s}.fmt(v_now);
    UPDATE {s}.store SET revision = v_rev, updated_at = v_now;
    UPDATE {s}.nodes SET revision = v_rev WHERE name = v_node;
    UPDATE {s}.restatements AS r
    SET pending = false,
        item = r.item || jsonb_build_object('status', 'resolved', 'resolved_at', v_at, 'resolved_by', p_by)
    WHERE r.id = p_id
    RETURNING r.item INTO v_item;
    PERFORM {s}.prune(v_node);
    INSERT INTO {s}.audit (revision, node, event, at, record)
    VALUES (v_rev, v_node, 'resolve', v_now, jsonb_build_object(
        'revision', v_rev, 'at', v_at, 'event', 'resolve', 'node', v_node,
        'intervals', v_item -> 'intervals', 'restatement_id', p_id, 'resolved_by', p_by,
        'reason', v_item -> 'reason'));
    RETURN jsonb_build_object('node', v_node, 'item', v_item);
END
$$;

CREATE OR REPLACE FUNCTION {s}.remove_partition_keys(p_node text, p_keys text[])
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_rev bigint;
    v_now timestamptz;
    v_present text[];
BEGIN
    SELECT s.revision INTO v_rev FROM {s}.store AS s FOR UPDATE;
    SELECT ARRAY(SELECT k FROM unnest(n.partition_keys) AS k WHERE k = ANY (p_keys)
                 GROUP BY k ORDER BY k COLLATE "C")
    INTO v_present FROM {s}.nodes AS n WHERE n.name = p_node;
    IF coalesce(cardinality(v_present), 0) = 0 THEN
        RETURN v_rev;
    END IF;
    v_rev := v_rev + 1;
    v_now := clock_timestamp();
    UPDATE {s}.store SET revision = v_rev, updated_at = v_now;
    UPDATE {s}.nodes AS n
    SET partition_keys = ARRAY(SELECT k FROM unnest(n.partition_keys) AS k WHERE NOT (k = ANY (p_keys))
                               GROUP BY k ORDER BY k COLLATE "C"),
        revision = v_rev
    WHERE n.name = p_node;
    INSERT INTO {s}.audit (revision, node, event, at, record)
    VALUES (v_rev, p_node, 'partitions_removed', v_now, jsonb_build_object(
        'revision', v_rev, 'at', {s}.fmt(v_now), 'event', 'partitions_removed', 'node', p_node,
        'partition_keys', to_jsonb(v_present)));
    RETURN v_rev;
END
$$;

CREATE OR REPLACE FUNCTION {s}.set_fingerprint(p_node text, p_fingerprint text)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_rev bigint;
    v_now timestamptz;
    v_old text;
BEGIN
    SELECT s.revision INTO v_rev FROM {s}.store AS s FOR UPDATE;
    SELECT n.fingerprint INTO v_old FROM {s}.nodes AS n WHERE n.name = p_node;
    IF v_old IS NOT DISTINCT FROM p_fingerprint THEN
        RETURN v_rev;
    END IF;
    v_rev := v_rev + 1;
    v_now := clock_timestamp();
    UPDATE {s}.store SET revision = v_rev, updated_at = v_now;
    INSERT INTO {s}.nodes AS n (name, fingerprint, revision) VALUES (p_node, p_fingerprint, v_rev)
    ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint, revision = excluded.revision;
    INSERT INTO {s}.audit (revision, node, event, at, record)
    VALUES (v_rev, p_node, 'fingerprint', v_now, jsonb_build_object(
        'revision', v_rev, 'at', {s}.fmt(v_now), 'event', 'fingerprint', 'node', p_node,
        'fingerprint', p_fingerprint, 'previous', v_old));
    RETURN v_rev;
END
$$;
"""

MIGRATIONS: tuple[str, ...] = (_MIGRATION_1,)
SCHEMA_VERSION = len(MIGRATIONS)

# -- statements ----------------------------------------------------------------------------------

_NODE_COLUMNS = """
    n.name, {s}.bounds(n.completed), n.partition_keys, n.fingerprint, {s}.us(n.last_run), n.revision,
    (SELECT coalesce(jsonb_agg(jsonb_build_array({s}.us(lower(f.span)), {s}.us(upper(f.span)),
                                                 f.error, f.attempts, {s}.us(f.last_attempt))
                               ORDER BY lower(f.span)), '[]')
     FROM {s}.failed AS f WHERE f.node = n.name),
    (SELECT coalesce(jsonb_agg(r.item ORDER BY r.seq), '[]')
     FROM {s}.restatements AS r WHERE r.node = n.name)
"""

_SQL = {
    "revision": "SELECT revision FROM {s}.store",
    "snapshot": "SELECT (SELECT revision FROM {s}.store), " + _NODE_COLUMNS
    + " FROM (VALUES (1)) AS one LEFT JOIN {s}.nodes AS n ON true ORDER BY n.seq",
    "node": "SELECT " + _NODE_COLUMNS + " FROM {s}.nodes AS n WHERE n.name = %s",
    "completed": "SELECT {s}.bounds(completed) FROM {s}.nodes WHERE name = %s",
    "pending_all": "SELECT r.node, r.item FROM {s}.restatements AS r JOIN {s}.nodes AS n ON n.name = r.node"
    " WHERE r.pending ORDER BY r.requested_at, n.seq, r.seq",
    "pending_node": "SELECT r.node, r.item FROM {s}.restatements AS r"
    " WHERE r.pending AND r.node = %s ORDER BY r.requested_at, r.seq",
    "mark_complete": "SELECT {s}.mark_complete(%s, %s::bigint[], %s::text[], %s, %s, %s::jsonb)",
    "mark_failed": "SELECT {s}.mark_failed(%s, %s::bigint[], %s, %s::jsonb)",
    "restate": "SELECT {s}.restate(%s::jsonb, %s, %s), (SELECT revision FROM {s}.store)",
    "resolve": "SELECT {s}.resolve_restatement(%s, %s)",
    "remove_keys": "SELECT {s}.remove_partition_keys(%s, %s::text[])",
    "fingerprint": "SELECT {s}.set_fingerprint(%s, %s)",
    "execution": "INSERT INTO {s}.audit (revision, node, event, at, record)"
    " SELECT s.revision, %s, 'execution', t.now,"
    " jsonb_build_object('revision', s.revision, 'at', {s}.fmt(t.now)) || %s::jsonb"
    " FROM {s}.store AS s, (SELECT clock_timestamp() AS now) AS t",
    "changes": "SELECT s.revision, a.record FROM {s}.store AS s LEFT JOIN {s}.audit AS a"
    " ON a.revision > %s AND a.revision <= s.revision AND a.event <> 'execution'"
    " ORDER BY a.revision, a.id",
    "history": "SELECT record FROM {s}.audit WHERE node = %s ORDER BY revision, id",
    "history_tail": "SELECT record FROM (SELECT record, revision, id FROM {s}.audit WHERE node = %s"
    " ORDER BY revision DESC, id DESC LIMIT %s) AS t ORDER BY revision, id",
    "audit": "SELECT record FROM {s}.audit ORDER BY revision, id",
}


def _flat(value: IntervalSet) -> list[int]:
    """An IntervalSet as flat microsecond bounds ``[s0, e0, s1, e1, ...]``."""
    out: list[int] = []
    for s, e in zip(value._starts, value._ends):
        out += (s, e)
    return out


def _from_flat(bounds: list[int]) -> IntervalSet:
    return IntervalSet._from_arrays(list(bounds[0::2]), list(bounds[1::2]))


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


class PostgresStateStore(StoreBase):
    """State in a PostgreSQL schema (see the module doc); thread-safe, fork-aware.

    ``dsn`` is a libpq connection string or URL (``postgresql://user@host:5432/db``);
    an empty one uses libpq's defaults and ``PG*`` environment variables.  Keep the
    password out of it: libpq reads ``$PGPASSWORD`` and ``~/.pgpass``.  The connection
    opens on first use and stays open until ``close()``.  A writer waits at most
    ``lock_timeout`` seconds for another writer's transaction.
    """

    def __init__(
        self,
        dsn: str = "",
        *,
        schema: str = DEFAULT_SCHEMA,
        connect_timeout: float = 10.0,
        lock_timeout: float = 60.0,
    ) -> None:
        if not isinstance(schema, str) or not _IDENT.match(schema):
            raise StateError(
                f"invalid PostgreSQL state schema {schema!r}: use letters, digits and "
                "underscores (at most 63), starting with a letter or underscore"
            )
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise StateError(
                "the postgres state backend needs psycopg 3: "
                "pip install 'seeknal-dagster[postgres]' (or psycopg[binary])"
            ) from None
        self._pg = psycopg
        self.dsn = str(dsn or "")
        self.schema = schema
        self.connect_timeout = connect_timeout
        self.lock_timeout = lock_timeout
        try:
            params = conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError as exc:
            raise StateError(
                f"invalid PostgreSQL DSN for the state store: {_redact(str(exc), self.dsn)}; "
                "use postgresql://user@host:5432/dbname (state: dsn: or $SEEKNAL_STATE_DSN)"
            ) from None
        self._password = params.get("password") or None
        host = params.get("host") or os.environ.get("PGHOST") or "localhost"
        port = params.get("port") or os.environ.get("PGPORT") or "5432"
        dbname = params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user") or ""
        self.where = f"{host}:{port}/{dbname}"
        self._params = params
        q = f'"{schema}"'
        self._sql = {k: v.replace("{s}", q) for k, v in _SQL.items()}
        self._q = q
        self._conn: Any = None
        self._pid = 0
        self._mutex = threading.RLock()

    def __repr__(self) -> str:
        return f"PostgresStateStore({self.where!r}, schema={self.schema!r})"

    # -- connection ---------------------------------------------------------------------------

    def connect(self) -> PostgresStateStore:
        """Connect and create or upgrade the schema now (otherwise done on first use)."""
        with self._mutex:
            self._connection()
        return self

    def close(self) -> None:
        """Close the connection (the store stays usable: the next call reconnects)."""
        with self._mutex:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing a broken connection: nothing to do
                    pass

    def _connection(self) -> Any:
        conn = self._conn
        if conn is not None and self._pid == os.getpid() and not conn.closed and not conn.broken:
            return conn
        # A forked child must not use (or close) its parent's connection: psycopg does not
        # close a connection from another process when it is garbage-collected.
        self._conn = None
        extra: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in self._params:
            extra["connect_timeout"] = max(1, int(self.connect_timeout))
        if "application_name" not in self._params:
            extra["application_name"] = "seeknal"
        try:
            conn = self._pg.connect(self.dsn, **extra)
        except self._pg.Error as exc:
            raise StateError(
                f"cannot connect to the PostgreSQL state store {self.where}: "
                f"{_redact(str(exc), self._password)}; check the server is running and the dsn in "
                "seeknal_project.yml (state: dsn:) or $SEEKNAL_STATE_DSN"
            ) from None
        try:
            # Small OLTP statements: JIT compilation (on by default since PostgreSQL 12) costs
            # far more than it saves when estimates are off (200 ms for a load() of a few rows).
            # A SET, not a startup option, so that PgBouncer accepts the connection.  A writer
            # waits for the store lock at most lock_timeout, like the JSON file's lock.
            conn.execute(f"SET jit = off; SET lock_timeout = {max(1, round(self.lock_timeout * 1000))}")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _migrate(self, conn: Any) -> None:
        """Create or upgrade the schema: one transaction under an advisory lock."""
        if conn.info.server_version < MIN_SERVER_VERSION:
            raise StateError(
                f"the PostgreSQL state store {self.where} runs PostgreSQL "
                f"{conn.info.server_version // 10000}; seeknal needs 14 or newer (multiranges)"
            )
        q = self._q
        try:
            if self._version(conn) == SCHEMA_VERSION:
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                             [f"seeknal.state.migrate:{self.schema}"])
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {q}.schema_version (version integer PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                current = self._version(conn)
                if current > SCHEMA_VERSION:
                    raise self._newer(current)
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    script = MIGRATIONS[version - 1].replace("{s}", q).replace("{keep}", str(KEEP_RESOLVED))
                    conn.execute(script)
                    conn.execute(f"INSERT INTO {q}.schema_version (version) VALUES (%s)", [version])
        except self._pg.Error as exc:
            raise StateError(
                f"cannot create or upgrade the state schema {self.schema!r} in {self.where}: "
                f"{_redact(str(exc), self._password)}; grant the user CREATE on the database, or "
                "let an administrator run seeknal once"
            ) from None

    def _version(self, conn: Any) -> int:
        found = conn.execute("SELECT to_regclass(%s)", [f"{self._q}.schema_version"]).fetchone()[0]
        if found is None:
            return 0
        query = f"SELECT coalesce(max(version), 0) FROM {self._q}.schema_version"
        current = conn.execute(query).fetchone()[0]
        if current > SCHEMA_VERSION:
            raise self._newer(current)
        return current

    def _newer(self, version: int) -> StateError:
        return StateError(
            f"the state schema {self.schema!r} in {self.where} has version {version}, written by a "
            f"newer seeknal (this one knows {SCHEMA_VERSION}); upgrade seeknal (nothing was changed)"
        )

    def _run(self, key: str, params: Any = None, *, write: bool = False) -> list[tuple]:
        """Execute one statement (autocommit: one transaction) and fetch its rows."""
        pg = self._pg
        with self._mutex:
            for attempt in (1, 2):
                conn = self._connection()
                try:
                    cur = conn.execute(self._sql[key], params)
                    return cur.fetchall() if cur.description is not None else []
                except pg.errors.LockNotAvailable:
                    raise StateError(
                        f"timed out after {self.lock_timeout:g}s waiting for the state lock in "
                        f"{self.where} (schema {self.schema}): another seeknal process is writing; "
                        "retry when it ends (nothing was changed)"
                    ) from None
                except pg.OperationalError as exc:
                    lost = conn.closed or conn.broken
                    if lost:
                        self._conn = None
                        if not write and attempt == 1:
                            continue  # a read is safe to retry on a fresh connection
                    raise self._failed(exc, lost=lost, write=write) from None
                except (pg.errors.InsufficientPrivilege, pg.errors.ReadOnlySqlTransaction,
                        pg.errors.UndefinedTable, pg.errors.UndefinedFunction,
                        pg.errors.InvalidSchemaName) as exc:
                    raise self._failed(exc, lost=False, write=write) from None
        raise AssertionError("unreachable")

    def _failed(self, exc: Exception, *, lost: bool, write: bool) -> StateError:
        reason = _redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                         self._password)
        if lost and write:
            fix = ("the connection was lost mid-write, so the change may or may not be recorded: "
                   "rerun (re-runs are idempotent)")
        elif write:
            fix = "nothing was changed; fix the cause and rerun"
        else:
            fix = "check the server and the user's privileges on the schema"
        return StateError(
            f"PostgreSQL state store {self.where} (schema {self.schema}): {reason}; {fix}")

    # -- reads --------------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The store revision: +1 on every mutation, never reused."""
        return self._run("revision")[0][0]

    def load(self) -> dict[str, NodeState]:
        """A snapshot of every node."""
        return self._snapshot()[1]

    def _snapshot(self) -> tuple[int, dict[str, NodeState]]:
        rows = self._run("snapshot")
        revision = rows[0][0]
        return revision, {row[1]: _node_state(row[1:]) for row in rows if row[1] is not None}

    def node(self, name: str) -> NodeState:
        """One node's state; an unknown node is simply empty."""
        rows = self._run("node", [name])
        return _node_state(rows[0]) if rows else NodeState(name)

    def completed(self, name: str) -> IntervalSet:
        """The node's completed intervals, merged (a copy)."""
        rows = self._run("completed", [name])
        return _from_flat(rows[0][0]) if rows else IntervalSet()

    def pending_restatements(self, node: str | None = None) -> list[Restatement]:
        """Restatements not yet resolved, oldest first, for one node or all."""
        rows = self._run("pending_all") if node is None else self._run("pending_node", [node])
        return [_restatement(name, item) for name, item in rows]

    # -- mutations (argument checks and audit records: ``StoreBase``) --------------------------

    def _where(self) -> str:
        return f"{self.where} (schema {self.schema})"

    def _apply_complete(
        self, node: str, done: IntervalSet, keys: list[str], fingerprint: str | None, by: str,
        record: dict[str, Any],
    ) -> int:
        return self._run("mark_complete", [node, _flat(done), keys, fingerprint, by, self._json(record)],
                         write=True)[0][0]

    def _apply_failed(
        self, node: str, pairs: list[tuple[int, int]], message: str, record: dict[str, Any]
    ) -> int:
        flat = [x for pair in pairs for x in pair]
        return self._run("mark_failed", [node, flat, message, self._json(record)], write=True)[0][0]

    def _apply_restate(
        self, wanted: dict[str, IntervalSet], reason: str, actor: str
    ) -> list[Restatement]:
        items = [
            {"node": name, "id": uuid.uuid4().hex[:12], "rows": _rows(change._starts, change._ends),
             "bounds": _flat(change)}
            for name, change in wanted.items()
        ]
        at = self._run("restate", [self._json(items), reason, actor], write=True)[0][0]
        return [
            _restatement(item["node"], _pending_item(item["id"], item["rows"], reason, actor, at))
            for item in items
        ]

    def _apply_resolve(self, restatement_id: str, by: str) -> Restatement | None:
        found = self._run("resolve", [str(restatement_id), by], write=True)[0][0]
        return None if found is None else _restatement(found["node"], found["item"])

    def _apply_remove_keys(self, node: str, keys: list[str]) -> int:
        return self._run("remove_keys", [node, keys], write=True)[0][0]

    def _apply_fingerprint(self, node: str, fingerprint: str) -> int:
        return self._run("fingerprint", [node, fingerprint], write=True)[0][0]

    def _apply_execution(self, node: str, record: dict[str, Any]) -> None:
        self._run("execution", [node, self._json(record)], write=True)

    # -- journal ------------------------------------------------------------------------------

    def changes_since(self, revision: int) -> list[Change]:
        """Changes with a revision above ``revision``, oldest first (see ``StateStore``).

        Served by the audit table's revision index.  When the audit does not hold every
        revision asked for (rows deleted) or ``revision`` is ahead of the store (it was
        replaced), every node is returned as one ``resync`` change.
        """
        revision = max(int(revision), 0)
        rows = self._run("changes", [revision])
        current = rows[0][0]
        if revision == current:
            return []
        if revision > current:
            return self._resync()
        records = [record for _, record in rows if record is not None]
        if len({r["revision"] for r in records}) != current - revision:
            return self._resync()
        return [_change(canonical_record(r)) for r in records]

    def _resync(self) -> list[Change]:
        return _resync(*self._snapshot())

    def history(self, node: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Audit records of one node, oldest first (the last ``limit`` when given)."""
        if limit is None:
            rows = self._run("history", [node])
        elif limit <= 0:
            return []
        else:
            rows = self._run("history_tail", [node, int(limit)])
        return [canonical_record(record) for (record,) in rows]

    # -- export / import ----------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """Everything the store holds, in the backend-neutral form ``import_`` accepts."""
        with self._mutex:
            conn = self._connection()
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    rows = conn.execute(self._sql["snapshot"]).fetchall()
                    audit = [canonical_record(r) for (r,) in conn.execute(self._sql["audit"])]
            except self._pg.OperationalError as exc:
                self._conn = None
                raise self._failed(exc, lost=True, write=False) from None
        nodes = {}
        for row in rows:
            if row[1] is None:
                continue
            name, bounds, keys, fingerprint, last_run, node_revision, failed, items = row[1:]
            nodes[name] = {
                "completed_intervals": _rows(bounds[0::2], bounds[1::2]),
                "failed_intervals": [
                    {"start": _fmt(s), "end": _fmt(e), "error": err, "attempts": n,
                     "last_attempt": _fmt(la)}
                    for s, e, err, n, la in failed
                ],
                "restatements": items,
                "partition_keys": sorted(set(keys)),
                "fingerprint": fingerprint,
                "last_run": None if last_run is None else _fmt(last_run),
                "revision": node_revision,
            }
        return {**export_header(), "revision": rows[0][0], "nodes": nodes, "audit": audit}

    def import_(self, data: Mapping[str, Any]) -> int:
        """Load an ``export()`` into this store, which must be empty; returns its revision.

        Revision numbers, audit records and restatement ids are kept as they are, so a
        sensor cursor taken on the old store stays valid on this one.
        """
        data = check_export(data)
        pg = self._pg
        q = self._q
        with self._mutex:
            conn = self._connection()
            try:
                with conn.transaction():
                    current = conn.execute(f"SELECT revision FROM {q}.store FOR UPDATE").fetchone()[0]
                    used = conn.execute(
                        f"SELECT EXISTS (SELECT FROM {q}.nodes) OR EXISTS (SELECT FROM {q}.audit)"
                    ).fetchone()[0]
                    if current or used:
                        raise StateError(
                            f"the PostgreSQL state store {self.where} (schema {self.schema}) already "
                            f"holds state (revision {current}): import only into an empty store — use "
                            "another schema or database"
                        )
                    self._insert(conn, data)
                    conn.execute(f"UPDATE {q}.store SET revision = %s, updated_at = now()",
                                 [data["revision"]])
            except pg.OperationalError as exc:
                self._conn = None
                raise self._failed(exc, lost=True, write=True) from None
            except pg.Error as exc:  # bad data or privileges: the transaction rolled back
                raise self._failed(exc, lost=False, write=True) from None
        return data["revision"]

    def _insert(self, conn: Any, data: Mapping[str, Any]) -> None:
        q = self._q
        nodes, failed, restatements = [], [], []
        for name, raw in data["nodes"].items():
            starts, ends, _ = _parse_rows(raw.get("completed_intervals") or [], {})
            last_run = raw.get("last_run")
            nodes.append((name, _flat(IntervalSet._from_arrays(starts, ends)),
                          sorted(set(raw.get("partition_keys") or [])), raw.get("fingerprint"),
                          None if last_run is None else _parse_us(last_run), int(raw.get("revision", 0))))
            for f in raw.get("failed_intervals") or []:
                failed.append((name, _parse_us(f["start"]), _parse_us(f["end"]), str(f.get("error", "")),
                               int(f.get("attempts", 1)), _parse_us(f["last_attempt"])))
            for item in raw.get("restatements") or []:
                r = _restatement(name, item)  # validates
                span = IntervalSet(r.intervals)
                restatements.append((r.id, name, _flat(span), r.pending, _parse_us(item["requested_at"]),
                                     self._json(dict(item))))
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {q}.nodes (name, completed, partition_keys, fingerprint, last_run, revision)"
                f" VALUES (%s, {q}.mr(%s::bigint[]), %s::text[], %s, {q}.ts(%s), %s)", nodes)
            cur.executemany(
                f"INSERT INTO {q}.failed (node, span, error, attempts, last_attempt)"
                f" VALUES (%s, tstzrange({q}.ts(%s), {q}.ts(%s), '[)'), %s, %s, {q}.ts(%s))", failed)
            cur.executemany(
                f"INSERT INTO {q}.restatements (id, node, span, pending, requested_at, item)"
                f" VALUES (%s, %s, {q}.mr(%s::bigint[]), %s, {q}.ts(%s), %s::jsonb)", restatements)
            with cur.copy(f"COPY {q}.audit (revision, node, event, at, record) FROM STDIN") as copy:
                copy.set_types(["int8", "text", "text", "timestamptz", "jsonb"])
                for record in data["audit"]:
                    at = record.get("at")
                    try:
                        when = None if at is None else _dt(_parse_us(at))
                    except (TypeError, ValueError):
                        when = None
                    copy.write_row((record["revision"], str(record.get("node", "")),
                                    str(record.get("event", "")), when, record))

    def _json(self, value: Any) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(value)



def _node_state(row: tuple) -> NodeState:
    name, bounds, keys, fingerprint, last_run, revision, failed, items = row
    return NodeState(
        name=name,
        completed=_from_flat(bounds),
        failed=[FailedInterval(_dt(s), _dt(e), err, n, _dt(la)) for s, e, err, n, la in failed],
        restatements=[_restatement(name, item) for item in items],
        partition_keys=set(keys),
        fingerprint=fingerprint,
        last_run=None if last_run is None else _dt(last_run),
        revision=revision,
    )
