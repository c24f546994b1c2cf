"""The PostgreSQL state backend: one schema shared by every machine and worker of a project.

Select it in ``seeknal_project.yml`` with ``state: {backend: postgres, dsn: ...}`` or with
``$SEEKNAL_STATE_DSN``.  psycopg 3 is imported when a store is created, so importing
``seeknal_core.state`` stays cheap for JSON users.

Schema (created and migrated by the store; ``schema_version`` lists applied migrations;
the SQL text is in ``postgres_sql.py``)::

    store         one row: revision (the store-wide counter), updated_at
    nodes         name, completed tstzmultirange, partition_keys text[], fingerprint,
                  last_run, revision (of the node's latest change), seq (creation order),
                  definition jsonb
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
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..intervals import IntervalSet
from .base import Change, FailedInterval, NodeState, Restatement, StateError
from .common import (
    Completion,
    StoreBase,
    decode_digest,
    dt_of_us,
    encode_digest,
    fmt_us,
    format_rows,
    parse_us,
    pending_item,
    resync_changes,
)
from .postgres_sql import FUNCTIONS, MIGRATIONS, SCHEMA_VERSION, STATEMENTS
from .records import (
    KEEP_RESOLVED,
    canonical_record,
    check_export,
    export_header,
    parse_change,
    parse_restatement,
    parse_rows,
)

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_VERSION", "PostgresStateStore", "has_password", "redact_dsn"]

DEFAULT_SCHEMA = "seeknal"
#: Oldest server version with multiranges (``tstzmultirange``, ``range_agg``).
MIN_SERVER_VERSION = 140000
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _flat(value: IntervalSet) -> list[int]:
    """An IntervalSet as flat microsecond bounds ``[s0, e0, s1, e1, ...]``."""
    out: list[int] = []
    for s, e in zip(*value.micros()):
        out += (s, e)
    return out


def _from_flat(bounds: list[int]) -> IntervalSet:
    return IntervalSet.from_micros(bounds[0::2], bounds[1::2], merged=True)


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password (URL or ``key=value`` form): what may be printed or written
    into ``seeknal_project.yml``."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            netloc = f"{userinfo.split(':', 1)[0]}@{host}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                           if k != "password"])
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params.pop("password", None)
    return make_conninfo(**params)


def has_password(dsn: str) -> bool:
    """Whether ``dsn`` carries a password (``redact_dsn`` leaves it out of what it prints)."""
    return bool(dsn) and redact_dsn(dsn) != dsn


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
        self._sql = {k: v.replace("{s}", q) for k, v in STATEMENTS.items()}
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
                    conn.execute(MIGRATIONS[version - 1].replace("{s}", q))
                    conn.execute(f"INSERT INTO {q}.schema_version (version) VALUES (%s)", [version])
                if current < SCHEMA_VERSION:  # the functions of this version, whole
                    conn.execute(FUNCTIONS.replace("{s}", q).replace("{keep}", str(KEEP_RESOLVED)))
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
        return [parse_restatement(name, item) for name, item in rows]

    # -- mutations (argument checks and audit records: ``StoreBase``) --------------------------

    def _where(self) -> str:
        return f"{self.where} (schema {self.schema})"

    def _apply_complete(self, items: list[Completion]) -> int:
        if len(items) > 1:
            batch = [{"node": i.node, "bounds": _flat(i.done), "by": i.by, "record": i.record}
                     for i in items]
            return self._run("mark_complete_many", [self._json(batch)], write=True)[0][0]
        [i] = items
        definition = None if i.definition is None else self._json(i.definition)
        params = [i.node, _flat(i.done), i.keys, i.fingerprint, i.by, self._json(i.record), definition]
        if i.digests:
            rows = [(source, start, *value) for source, per in i.digests.items()
                    for start, value in per.items()]
            columns = [list(c) for c in zip(*rows)]
            return self._run("mark_complete_digests", [i.node, *columns, *params], write=True)[0][0]
        return self._run("mark_complete", params, write=True)[0][0]

    def digests(self, node: str) -> dict[str, dict[int, tuple[int, int | None, str]]]:
        """The node's input digests (the ``digests`` table, migration 5)."""
        out: dict[str, dict[int, tuple[int, int | None, str]]] = {}
        for source, start, n, newest, checksum in self._run("digests", [node]):
            out.setdefault(source, {})[start] = (n, newest, checksum)
        return out

    def _apply_failed(
        self, node: str, pairs: list[tuple[int, int]], message: str, record: dict[str, Any]
    ) -> int:
        flat = [x for pair in pairs for x in pair]
        return self._run("mark_failed", [node, flat, message, self._json(record)], write=True)[0][0]

    def _apply_restate(
        self, wanted: dict[str, IntervalSet], reason: str, actor: str
    ) -> list[Restatement]:
        items = _restate_items(wanted)
        at = self._run("restate", [self._json(items), reason, actor], write=True)[0][0]
        return [
            parse_restatement(item["node"], pending_item(item["id"], item["rows"], reason, actor, at))
            for item in items
        ]

    def _apply_plan(
        self, groups: list[tuple[dict[str, IntervalSet], str]], actor: str,
        definitions: list[tuple[str, str, dict[str, Any] | None]],
    ) -> int:
        batch = [{"reason": reason, "items": _restate_items(wanted)} for wanted, reason in groups]
        defs = [{"node": node, "fingerprint": fingerprint, "definition": definition}
                for node, fingerprint, definition in definitions]
        done = self._run("record_plan", [self._json(batch), actor, self._json(defs)], write=True)[0][0]
        return done["revision"]

    def _apply_resolve(self, restatement_id: str, by: str) -> Restatement | None:
        found = self._run("resolve", [str(restatement_id), by], write=True)[0][0]
        return None if found is None else parse_restatement(found["node"], found["item"])

    def _apply_fingerprint(self, node: str, fingerprint: str, definition: dict[str, Any] | None) -> int:
        params = [node, fingerprint, None if definition is None else self._json(definition)]
        return self._run("fingerprint", params, write=True)[0][0]

    def _apply_inferred_start(self, node: str, epoch_seconds: int) -> int:
        return self._run("inferred_start", [node, epoch_seconds * 1_000_000], write=True)[0][0]

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
        return [parse_change(canonical_record(r)) for r in records]

    def _resync(self) -> list[Change]:
        return resync_changes(*self._snapshot())

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
                    digests: dict[str, dict[str, dict[str, str]]] = {}  # as the JSON store writes them
                    for node, source, start, n, newest, checksum in conn.execute(self._sql["all_digests"]):
                        digests.setdefault(node, {}).setdefault(source, {})[str(start)] = encode_digest(
                            (n, newest, checksum))
            except self._pg.OperationalError as exc:
                self._conn = None
                raise self._failed(exc, lost=True, write=False) from None
        nodes = {}
        for row in rows:
            if row[1] is None:
                continue
            name, bounds, keys, fingerprint, last_run, node_revision, definition, failed, items, inferred = (
                row[1:])
            nodes[name] = {
                "completed_intervals": format_rows(bounds[0::2], bounds[1::2]),
                "failed_intervals": [
                    {"start": fmt_us(s), "end": fmt_us(e), "error": err, "attempts": n,
                     "last_attempt": fmt_us(la)}
                    for s, e, err, n, la in failed
                ],
                "restatements": items,
                "partition_keys": sorted(set(keys)),
                "fingerprint": fingerprint,
                "last_run": None if last_run is None else fmt_us(last_run),
                "revision": node_revision,
                "definition": definition,
                **({} if inferred is None else {"inferred_start": fmt_us(inferred)}),
                **({"digests": digests[name]} if name in digests else {}),
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
            starts, ends, _ = parse_rows(raw.get("completed_intervals") or [], {})
            last_run = raw.get("last_run")
            definition, inferred = raw.get("definition"), raw.get("inferred_start")
            nodes.append((name, _flat(IntervalSet.from_micros(starts, ends, merged=True)),
                          sorted(set(raw.get("partition_keys") or [])), raw.get("fingerprint"),
                          None if last_run is None else parse_us(last_run), int(raw.get("revision", 0)),
                          None if definition is None else self._json(dict(definition)),
                          None if inferred is None else parse_us(inferred)))
            for f in raw.get("failed_intervals") or []:
                failed.append((name, parse_us(f["start"]), parse_us(f["end"]), str(f.get("error", "")),
                               int(f.get("attempts", 1)), parse_us(f["last_attempt"])))
            for item in raw.get("restatements") or []:
                r = parse_restatement(name, item)  # validates
                span = IntervalSet(r.intervals)
                restatements.append((r.id, name, _flat(span), r.pending, parse_us(item["requested_at"]),
                                     self._json(dict(item))))
        digests = [(name, source, int(start), *decode_digest(value)) for name, raw in data["nodes"].items()
                   for source, per in (raw.get("digests") or {}).items() for start, value in per.items()]
        with conn.cursor() as cur:
            if digests:
                copy_sql = f"COPY {q}.digests (node, source, start_s, n, newest, checksum) FROM STDIN"
                with cur.copy(copy_sql) as copy:
                    copy.set_types(["text", "text", "int8", "int8", "int8", "text"])
                    for row in digests:
                        copy.write_row(row)
            cur.executemany(
                f"INSERT INTO {q}.nodes (name, completed, partition_keys, fingerprint, last_run, revision,"
                f" definition, inferred_start) VALUES (%s, {q}.mr(%s::bigint[]), %s::text[], %s,"
                f" {q}.ts(%s), %s, %s::jsonb, {q}.ts(%s))",
                nodes)
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
                        when = None if at is None else dt_of_us(parse_us(at))
                    except (TypeError, ValueError):
                        when = None
                    copy.write_row((record["revision"], str(record.get("node", "")),
                                    str(record.get("event", "")), when, record))

    def _json(self, value: Any) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(value)



def _restate_items(wanted: dict[str, IntervalSet]) -> list[dict[str, Any]]:
    """The ``restate`` function's items: per node a new id, its rows and flat bounds."""
    return [{"node": name, "id": uuid.uuid4().hex[:12], "rows": format_rows(*change.micros()),
             "bounds": _flat(change)} for name, change in wanted.items()]


def _node_state(row: tuple) -> NodeState:
    name, bounds, keys, fingerprint, last_run, revision, definition, failed, items, inferred = row
    return NodeState(
        name=name,
        completed=_from_flat(bounds),
        failed=[FailedInterval(dt_of_us(s), dt_of_us(e), err, n, dt_of_us(la))
                for s, e, err, n, la in failed],
        restatements=[parse_restatement(name, item) for item in items],
        partition_keys=set(keys),
        fingerprint=fingerprint,
        last_run=None if last_run is None else dt_of_us(last_run),
        revision=revision,
        definition=definition,
        inferred_start=None if inferred is None else dt_of_us(inferred),
    )
