"""The PostgreSQL state backend's SQL: schema migrations, PL/pgSQL functions, statements.

``{s}`` is replaced by the quoted schema name and ``{keep}`` by ``KEEP_RESOLVED``
(str.replace, so SQL braces stay as they are).

* ``MIGRATIONS`` change tables.  Each runs once, in one transaction, under an advisory
  lock, and is never edited once released: append a new one.
* ``FUNCTIONS`` is the current code of every function, re-created whole (after dropping
  the signatures it replaced) in the same transaction whenever a migration runs, so a
  function is written once here instead of once per migration that changes it.

Failure splitting (a new failure replaces the overlapped parts of older ones and keeps
their rest) lives in ``mark_failed`` below as well as in ``records.add_failure``: the server
must compute it from the rows it has locked, in the same statement, because sending the
split from Python would need the failed rows read first and the store lock held across
that client round trip, which the one-call-per-mutation design rules out.
"""

from __future__ import annotations

__all__ = ["FUNCTIONS", "MIGRATIONS", "SCHEMA_VERSION", "STATEMENTS"]

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
"""

#: node definitions (``set_fingerprint(..., definition=)``)
_MIGRATION_2 = r"""
ALTER TABLE {s}.nodes ADD COLUMN IF NOT EXISTS definition jsonb;
"""

#: the start ``seeknal run`` inferred for a node without ``start:`` (``set_inferred_start``)
_MIGRATION_3 = r"""
ALTER TABLE {s}.nodes ADD COLUMN IF NOT EXISTS inferred_start timestamptz;
"""

#: ``record_plan`` (``seeknal plan --apply`` as one transaction): no table changes; the
#: migration exists so that schemas of version 3 get the function (``FUNCTIONS`` are
#: re-created whole whenever a migration runs)
_MIGRATION_4 = r"""
COMMENT ON TABLE {s}.store IS 'seeknal state: the store-wide revision (one row)';
"""

#: input digests recorded with completions (``mark_complete(digests=)``): one row per node,
#: source and interval start; ``checksum`` is the engine's text (``duckdb2.0:<hex>``)
_MIGRATION_5 = r"""
CREATE TABLE IF NOT EXISTS {s}.digests (
    node text NOT NULL,
    source text NOT NULL,
    start_s bigint NOT NULL,
    n bigint NOT NULL,
    newest bigint,
    checksum text NOT NULL,
    PRIMARY KEY (node, source, start_s)
);
"""

#: ``remove_partition_keys`` left the store contract (no caller: partition keys are only ever
#: added, by completions): its function goes; ``partitions_removed`` audit records stay readable
_MIGRATION_6 = r"""
DROP FUNCTION IF EXISTS {s}.remove_partition_keys(text, text[]);
"""

MIGRATIONS: tuple[str, ...] = (_MIGRATION_1, _MIGRATION_2, _MIGRATION_3, _MIGRATION_4, _MIGRATION_5,
                               _MIGRATION_6)
SCHEMA_VERSION = len(MIGRATIONS)

FUNCTIONS = r"""
-- signatures that later versions replaced (CREATE OR REPLACE cannot change the arguments)
DROP FUNCTION IF EXISTS {s}.mark_complete(text, bigint[], text[], text, text, jsonb);
DROP FUNCTION IF EXISTS {s}.set_fingerprint(text, text);

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
    p_node text, p_done bigint[], p_keys text[], p_fingerprint text, p_by text, p_record jsonb,
    p_definition jsonb
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

    INSERT INTO {s}.nodes AS n (name, completed, partition_keys, fingerprint, last_run, revision,
                                definition)
    VALUES (p_node, v_done, p_keys, p_fingerprint, v_now, v_rev, p_definition)
    ON CONFLICT (name) DO UPDATE SET
        completed = n.completed + excluded.completed,
        partition_keys = CASE WHEN cardinality(excluded.partition_keys) = 0 THEN n.partition_keys
            ELSE ARRAY(SELECT k FROM unnest(n.partition_keys || excluded.partition_keys) AS k
                       GROUP BY k ORDER BY k COLLATE "C") END,
        fingerprint = coalesce(excluded.fingerprint, n.fingerprint),
        definition = coalesce(excluded.definition, n.definition),
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

CREATE OR REPLACE FUNCTION {s}.set_fingerprint(p_node text, p_fingerprint text, p_definition jsonb)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_rev bigint;
    v_now timestamptz;
    v_old text;
    v_old_definition jsonb;
BEGIN
    SELECT s.revision INTO v_rev FROM {s}.store AS s FOR UPDATE;
    SELECT n.fingerprint, n.definition INTO v_old, v_old_definition
    FROM {s}.nodes AS n WHERE n.name = p_node;
    IF v_old IS NOT DISTINCT FROM p_fingerprint
       AND (p_definition IS NULL OR p_definition = v_old_definition) THEN
        RETURN v_rev;
    END IF;
    v_rev := v_rev + 1;
    v_now := clock_timestamp();
    UPDATE {s}.store SET revision = v_rev, updated_at = v_now;
    INSERT INTO {s}.nodes AS n (name, fingerprint, definition, revision)
    VALUES (p_node, p_fingerprint, p_definition, v_rev)
    ON CONFLICT (name) DO UPDATE SET fingerprint = excluded.fingerprint,
        definition = coalesce(excluded.definition, n.definition), revision = excluded.revision;
    INSERT INTO {s}.audit (revision, node, event, at, record)
    VALUES (v_rev, p_node, 'fingerprint', v_now, jsonb_build_object(
        'revision', v_rev, 'at', {s}.fmt(v_now), 'event', 'fingerprint', 'node', p_node,
        'fingerprint', p_fingerprint, 'previous', v_old)
        || CASE WHEN p_definition IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('definition', p_definition) END);
    RETURN v_rev;
END
$$;

CREATE OR REPLACE FUNCTION {s}.set_inferred_start(p_node text, p_us bigint)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_rev bigint;
    v_now timestamptz;
BEGIN
    SELECT s.revision INTO v_rev FROM {s}.store AS s FOR UPDATE;
    v_rev := v_rev + 1;
    v_now := clock_timestamp();
    UPDATE {s}.store SET revision = v_rev, updated_at = v_now;
    INSERT INTO {s}.nodes AS n (name, inferred_start, revision)
    VALUES (p_node, {s}.ts(p_us), v_rev)
    ON CONFLICT (name) DO UPDATE SET inferred_start = excluded.inferred_start, revision = excluded.revision;
    INSERT INTO {s}.audit (revision, node, event, at, record)
    VALUES (v_rev, p_node, 'inferred_start', v_now, jsonb_build_object(
        'revision', v_rev, 'at', {s}.fmt(v_now), 'event', 'inferred_start', 'node', p_node,
        'inferred_start', {s}.fmt({s}.ts(p_us))));
    RETURN v_rev;
END
$$;

-- seeknal plan --apply: restate each group in order, then set each definition, in one
-- transaction (a crash leaves all or nothing); each step has its own revision and audit
-- records, exactly as the calls one by one.
-- p_groups: [{"reason", "items": <restate's p_items>}, ...];
-- p_definitions: [{"node", "fingerprint", "definition"}, ...]
-- returns {"revision": <the store's>, "at": [<each group's requested_at text>, ...]}
CREATE OR REPLACE FUNCTION {s}.record_plan(p_groups jsonb, p_actor text, p_definitions jsonb)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_group jsonb;
    v_def jsonb;
    v_at jsonb := '[]'::jsonb;
    v_rev bigint;
BEGIN
    PERFORM 1 FROM {s}.store FOR UPDATE;  -- the store lock first, as every mutation
    FOR v_group IN SELECT x.e FROM jsonb_array_elements(p_groups) WITH ORDINALITY AS x(e, o) ORDER BY x.o
    LOOP
        v_at := v_at || jsonb_build_array({s}.restate(v_group -> 'items', v_group ->> 'reason', p_actor));
    END LOOP;
    FOR v_def IN SELECT x.e FROM jsonb_array_elements(p_definitions) WITH ORDINALITY AS x(e, o) ORDER BY x.o
    LOOP
        PERFORM {s}.set_fingerprint(v_def ->> 'node', v_def ->> 'fingerprint',
                                    nullif(v_def -> 'definition', 'null'::jsonb));
    END LOOP;
    SELECT s.revision INTO v_rev FROM {s}.store AS s;
    RETURN jsonb_build_object('revision', v_rev, 'at', v_at);
END
$$;

-- p_items: [{"node", "bounds": [us, ...], "by", "record"}, ...]: one mark_complete each, in
-- order, in one transaction (so each node has its own revision, as the calls one by one)
CREATE OR REPLACE FUNCTION {s}.mark_complete_many(p_items jsonb)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_item jsonb;
    v_rev bigint;
BEGIN
    FOR v_item IN SELECT x.e FROM jsonb_array_elements(p_items) WITH ORDINALITY AS x(e, o) ORDER BY x.o
    LOOP
        v_rev := {s}.mark_complete(
            v_item ->> 'node',
            ARRAY(SELECT y.b::bigint FROM jsonb_array_elements_text(v_item -> 'bounds')
                  WITH ORDINALITY AS y(b, o) ORDER BY y.o),
            '{}'::text[], NULL, v_item ->> 'by', v_item -> 'record', NULL);
    END LOOP;
    RETURN v_rev;
END
$$;

"""

# -- statements ----------------------------------------------------------------------------------


_NODE_COLUMNS = """
    n.name, {s}.bounds(n.completed), n.partition_keys, n.fingerprint, {s}.us(n.last_run), n.revision,
    n.definition,
    (SELECT coalesce(jsonb_agg(jsonb_build_array({s}.us(lower(f.span)), {s}.us(upper(f.span)),
                                                 f.error, f.attempts, {s}.us(f.last_attempt))
                               ORDER BY lower(f.span)), '[]')
     FROM {s}.failed AS f WHERE f.node = n.name),
    (SELECT coalesce(jsonb_agg(r.item ORDER BY r.seq), '[]')
     FROM {s}.restatements AS r WHERE r.node = n.name),
    {s}.us(n.inferred_start)
"""

STATEMENTS = {
    "revision": "SELECT revision FROM {s}.store",
    "snapshot": "SELECT (SELECT revision FROM {s}.store), " + _NODE_COLUMNS
    + " FROM (VALUES (1)) AS one LEFT JOIN {s}.nodes AS n ON true ORDER BY n.seq",
    "node": "SELECT " + _NODE_COLUMNS + " FROM {s}.nodes AS n WHERE n.name = %s",
    "completed": "SELECT {s}.bounds(completed) FROM {s}.nodes WHERE name = %s",
    "pending_all": "SELECT r.node, r.item FROM {s}.restatements AS r JOIN {s}.nodes AS n ON n.name = r.node"
    " WHERE r.pending ORDER BY r.requested_at, n.seq, r.seq",
    "pending_node": "SELECT r.node, r.item FROM {s}.restatements AS r"
    " WHERE r.pending AND r.node = %s ORDER BY r.requested_at, r.seq",
    "mark_complete": "SELECT {s}.mark_complete(%s, %s::bigint[], %s::text[], %s, %s, %s::jsonb, %s::jsonb)",
    # the completion and its digests in one statement (one transaction): the data-modifying
    # WITH runs exactly once whether or not the function's result reads it
    "mark_complete_digests": "WITH d AS (INSERT INTO {s}.digests AS d (node, source, start_s, n, newest,"
    " checksum) SELECT %s, x.source, x.start_s, x.n, x.newest, x.checksum FROM unnest(%s::text[],"
    " %s::bigint[], %s::bigint[], %s::bigint[], %s::text[]) AS x(source, start_s, n, newest, checksum)"
    " ON CONFLICT (node, source, start_s) DO UPDATE SET n = excluded.n, newest = excluded.newest,"
    " checksum = excluded.checksum)"
    " SELECT {s}.mark_complete(%s, %s::bigint[], %s::text[], %s, %s, %s::jsonb, %s::jsonb)",
    "digests": "SELECT source, start_s, n, newest, checksum FROM {s}.digests WHERE node = %s"
    " ORDER BY source, start_s",
    "all_digests": "SELECT node, source, start_s, n, newest, checksum FROM {s}.digests"
    " ORDER BY node, source, start_s",
    "mark_complete_many": "SELECT {s}.mark_complete_many(%s::jsonb)",
    "mark_failed": "SELECT {s}.mark_failed(%s, %s::bigint[], %s, %s::jsonb)",
    "restate": "SELECT {s}.restate(%s::jsonb, %s, %s), (SELECT revision FROM {s}.store)",
    "record_plan": "SELECT {s}.record_plan(%s::jsonb, %s, %s::jsonb)",
    "resolve": "SELECT {s}.resolve_restatement(%s, %s)",
    "fingerprint": "SELECT {s}.set_fingerprint(%s, %s, %s::jsonb)",
    "inferred_start": "SELECT {s}.set_inferred_start(%s, %s)",
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

