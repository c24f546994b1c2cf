"""Node types: a SQL transform and an external source, and the names they share.

A node knows its own definition (``fingerprint``, ``normalized_sql``); the graph of
nodes lives in :mod:`.graph`, and reading YAML into nodes in :mod:`.loader`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from ..engines import DEFAULT_ENGINE
from ..schedule import Schedule
from ..timeutil import to_utc
from .audits import Audit
from .fingerprint import token_digest
from .sql import DEFAULT_DIALECT, normalize_sql

PROJECT_FILES = ("seeknal_project.yml", "seeknal_project.yaml")
#: settings of this checkout only (generated, or machine-local; keep it out of version
#: control), read over the project file's: e.g. the example data generator's `start:`
LOCAL_SETTINGS_FILE = "seeknal_project.local.yml"
SOURCES_DIR = Path("seeknal") / "sources"
TRANSFORMS_DIR = Path("seeknal") / "transforms"
DEFAULT_DATABASE = "target/warehouse.duckdb"
DEFAULT_STATE = {"backend": "json", "path": "target/run_state.json"}
MATERIALIZATIONS = ("incremental", "table", "parquet")
INTERVAL_MATERIALIZATIONS = ("incremental", "parquet")

ENGINE_FIELDS = ("type", "master", "remote", "conf")
ON_CHANGE = ("warn", "fail", "apply")

PROJECT_FIELDS = (
    "name", "description", "timezone", "start", "end", "state", "database", "engine", "dialect",
    "on_change",
)
TRANSFORM_FIELDS = (
    "schedule", "timezone", "start", "end", "sql", "time_column", "depends_on", "batch_size",
    "lookback", "partition_tracking", "materialization", "engine", "dialect", "description",
    "tags", "meta", "audits", "verify",
)
SOURCE_FIELDS = ("table", "path", "format", "time_column", "description", "ready")
#: the kinds of ``ready:`` a source takes (``watermark`` is the default with a time column)
READY_KINDS = ("watermark", "always", "sql", "python")
FILE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}

#: a node name: letters, digits and underscores, not starting with a digit
NODE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _sha256(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()

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
    engine: str = DEFAULT_ENGINE
    dialect: str = DEFAULT_DIALECT
    end: dt.datetime | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    #: checks an interval's rows must pass before it is recorded complete (audits.py)
    audits: tuple[Audit, ...] = ()
    #: ``verify: 7d``: seconds before now whose completed intervals every run re-checks
    #: for late data first (runner/verify.py); None: not verified on runs
    verify: int | None = None
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
        setattr_(self, "audits", tuple(self.audits))
        if self.materialization is None:
            setattr_(self, "materialization", "incremental" if self.schedule else "table")

    def _fields(self) -> tuple[str, ...]:
        """What besides the SQL changes an interval's output (in fingerprint order)."""
        return (self.schedule.cron if self.schedule else "", self.timezone, self.time_column or "",
                self.materialization or "", self.partition_column or "", self.partition_format or "")

    @cached_property
    def normalized_sql(self) -> str:
        """The SQL as sqlglot prints it (comments, spacing and keyword case do not show):
        what state records with a fingerprint, so a change can be diffed and classified."""
        return normalize_sql(self.name, self.sql, self.dialect)

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the SQL's tokens and every field that changes an interval's output.

        The tokens are :mod:`.fingerprint`'s (comments, whitespace, keyword case and
        optional quotes ignored): one regex pass, no parse and no sqlglot, so thousands of
        nodes fingerprint in a fraction of a second; computed on first use, kept by the
        load cache.
        """
        return _sha256("tokens", token_digest(self.name, self.sql, self.dialect), *self._fields(),
                       self.engine, *self._audit_parts())

    def _audit_parts(self) -> tuple[str, ...]:
        """The audits, in the fingerprint only when there are some (a node without audits
        keeps the fingerprint it had before audits existed)."""
        if not self.audits:
            return ()
        import json

        return ("audits", json.dumps([a.spec() for a in self.audits], sort_keys=True, default=str))

    @cached_property
    def ast_fingerprint(self) -> str:
        """The fingerprint seeknal 0.2 stored: a hash of :attr:`normalized_sql` and the fields
        (parses the SQL: computed only when a stored fingerprint is not :attr:`fingerprint`)."""
        return _sha256(self.normalized_sql, *self._fields(), self.engine, *self._audit_parts())

    @cached_property
    def legacy_fingerprint(self) -> str:
        """The fingerprint seeknal 0.1 stored: a hash of the raw SQL text and the fields."""
        return _sha256(self.sql, *self._fields(), *((self.engine,) if self.engine != DEFAULT_ENGINE else ()))

    def fingerprint_matches(self, stored: str | None, definition: Mapping[str, Any] | None = None) -> bool:
        """Is ``stored`` (a fingerprint from state) this node's current definition?

        The one place that compares fingerprints.  ``None`` (never recorded) matches.
        Fingerprints of earlier versions count as equal while what they hashed is
        unchanged, so upgrading reports no change and the next run records the current
        form: :attr:`legacy_fingerprint` (raw SQL) and :attr:`ast_fingerprint` (sqlglot's
        printed SQL, parsed only on a mismatch).  With the ``definition`` recorded beside
        ``stored``, an edit the tokens see but the parsed SQL does not (``a b`` -> ``a AS b``,
        ``<>`` -> ``!=``) matches too: ``seeknal plan`` would call it unchanged.
        """
        if not stored or stored == self.fingerprint or stored == self.legacy_fingerprint:
            return True
        if stored == self.ast_fingerprint:
            return True
        return definition is not None and dict(definition) == self.definition

    @property
    def definition(self) -> dict[str, str | None]:
        """What the fingerprint covers, readable (stored in state to diff a change); the
        partition fields only when set."""
        out: dict[str, str | None] = {
            "sql": self.normalized_sql, "schedule": self.schedule.cron if self.schedule else None,
            "timezone": self.timezone, "time_column": self.time_column,
            "materialization": self.materialization, "engine": self.engine,
        }
        if self.partition_column or self.partition_format:
            out.update(partition_column=self.partition_column, partition_format=self.partition_format)
        if self.audits:  # only when set: definitions stored before audits existed stay equal
            out["audits"] = [a.spec() for a in self.audits]
        return out

    @property
    def id(self) -> str:
        return f"transform.{self.name}"

    @property
    def is_incremental(self) -> bool:
        """Scheduled and written interval by interval (``incremental`` or ``parquet``)."""
        return self.schedule is not None and self.materialization in INTERVAL_MATERIALIZATIONS


class Ready(NamedTuple):  # immutable like a frozen dataclass, ~0.4 ms less to create at start-up
    """When a source's data for an interval is in (``ready:``): ``watermark`` (a row at or
    after the interval's start; ``strict``: at or after its end, in ``column``), ``always``
    (the clock alone), ``sql`` (``query`` returns one instant: complete up to it) or
    ``python`` (``target`` is ``pkg.mod:func``, called with the source and the intervals,
    returning the ready ones)."""

    kind: str
    column: str | None = None
    strict: bool = False
    query: str | None = None
    target: str | None = None


class SourceNode(NamedTuple):  # immutable like a frozen dataclass, ~0.4 ms less to create at start-up
    """An external input: a table in the project database, or Parquet/CSV files."""

    name: str
    path: Path | None = None
    table: str | None = None
    location: str | None = None
    format: str | None = None
    time_column: str | None = None
    description: str | None = None
    ready: Ready | None = None

    @property
    def id(self) -> str:
        return f"source.{self.name}"

    @property
    def readiness(self) -> Ready:
        """``ready:`` as set, else the default: ``watermark`` on the time column, or
        ``always`` for a source without one."""
        if self.ready is not None:
            return self.ready
        return Ready("watermark", self.time_column) if self.time_column else Ready("always")

