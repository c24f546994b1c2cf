"""The state-store contract: what every backend records, answers and raises.

Backends (the JSON file and PostgreSQL) implement ``StateStore``; the runner, the CLI
and the Dagster adapter only ever talk to this protocol, so they work unchanged
whichever backend a project configures.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..errors import SeeknalError
from ..intervals import Interval, IntervalSet
from ..reasons import Mode

#: How an interval came to be computed (``reasons.Mode``); the audit log keeps it so a CLI
#: can annotate completed intervals ``(backfilled)``, ``(restated)`` or ``(manual)``.
MODES = tuple(Mode)

#: ``Change.kind`` values.  ``resync`` means "the journal does not reach back to the
#: revision you asked about; here is the node's whole completed set instead";
#: ``partitions_removed`` is only in journals written before ``remove_partition_keys`` left
#: the contract (docs/architecture.md, State).
CHANGE_KINDS = (
    "complete",
    "fail",
    "restate",
    "resolve",
    "partitions_removed",
    "fingerprint",
    "resync",
)

#: What ``intervals`` arguments take: an IntervalSet (what the runner passes) or ``(start,
#: end)`` pairs of aware datetimes (an ``Interval`` is one; a bound is read as ``Interval``
#: reads it).  One interval is a list of one pair: a bare pair is refused, not guessed at.
#: Time text with the seed format's closed ends is read from stored files only (``records.parse_rows``).
IntervalsLike = IntervalSet | Iterable[tuple[dt.datetime, dt.datetime]]


class StateError(SeeknalError):
    """A state problem the user must act on; the message is one line naming file and fix."""


def default_actor() -> str:
    """Who is acting: ``$SEEKNAL_ACTOR`` (set it in CI and Dagster) or the login name."""
    actor = os.environ.get("SEEKNAL_ACTOR", "").strip()
    if actor:
        return actor
    try:
        import getpass  # only a command that records an actor needs it

        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no passwd entry (containers): still record something
        return "unknown"


class FailedInterval(NamedTuple):  # immutable like a frozen dataclass, ~0.4 ms less to create at start-up
    """An interval whose last attempt failed; ``attempts`` counts consecutive failures."""

    start: dt.datetime
    end: dt.datetime
    error: str
    attempts: int
    last_attempt: dt.datetime

    @property
    def interval(self) -> Interval:
        return Interval(self.start, self.end)


class Restatement(NamedTuple):  # immutable like a frozen dataclass, ~0.4 ms less to create at start-up
    """A request to re-process intervals of one node, and how it was resolved."""

    id: str
    node: str
    intervals: list[Interval]
    reason: str
    actor: str
    requested_at: dt.datetime
    status: str = "pending"  # "pending" | "resolved"
    resolved_at: dt.datetime | None = None
    resolved_by: str | None = None

    @property
    def pending(self) -> bool:
        return self.status == "pending"


class Change(NamedTuple):  # immutable like a frozen dataclass, ~0.4 ms less to create at start-up
    """One entry of the change journal: what happened to a node at a store revision.

    ``origin`` is the execution mode for completions/failures, the actor for
    restatements and ``resolved_by`` for resolutions; ``details`` is the raw audit
    record (reason, restatement id, rows, ...).
    """

    revision: int
    node: str
    kind: str
    intervals: IntervalSet
    origin: str | None = None
    run_id: str | None = None
    at: dt.datetime | None = None
    details: Mapping[str, Any] = MappingProxyType({})


@dataclass
class NodeState:
    """Everything the store knows about one node (a snapshot; mutating it changes nothing)."""

    name: str
    completed: IntervalSet = field(default_factory=IntervalSet)
    failed: list[FailedInterval] = field(default_factory=list)
    restatements: list[Restatement] = field(default_factory=list)
    partition_keys: set[str] = field(default_factory=set)
    fingerprint: str | None = None
    last_run: dt.datetime | None = None
    revision: int = 0  # store revision of the node's latest change
    #: What the fingerprint was computed from (normalised SQL, schedule, ...), as stored by
    #: ``set_fingerprint``/``mark_complete``, so a change can be shown, not only detected.
    definition: dict[str, Any] | None = None
    #: The start ``seeknal run`` inferred from the node's sources (it has no ``start:``).
    inferred_start: dt.datetime | None = None

    @property
    def pending_restatements(self) -> list[Restatement]:
        return [r for r in self.restatements if r.pending]

    @property
    def failed_intervals(self) -> IntervalSet:
        """Failed intervals not completed since (the ones a runner retries first)."""
        if not self.failed:
            return IntervalSet()
        return IntervalSet(f.interval for f in self.failed).difference(self.completed)


@runtime_checkable
class StateStore(Protocol):
    """What the runner, CLI and Dagster adapter need from a state backend.

    Every mutation is atomic, bumps ``revision`` by one and writes audit records;
    ``intervals`` arguments are ``IntervalsLike``.  ``export()`` and
    ``import_()`` move a whole store (state and audit history) between backends.
    """

    @property
    def revision(self) -> int: ...

    def load(self) -> dict[str, NodeState]: ...

    def fingerprints(self) -> dict[str, str | None]: ...

    def node(self, name: str) -> NodeState: ...

    def completed(self, name: str) -> IntervalSet: ...

    def mark_complete(
        self,
        node: str,
        intervals: IntervalsLike,
        *,
        origin: str = "run",
        run_id: str | None = None,
        rows: int | None = None,
        duration: float | None = None,
        partition_keys: Iterable[str] = (),
        fingerprint: str | None = None,
        interval_rows: Iterable[tuple[tuple[int, int], int]] | None = None,
        definition: Mapping[str, Any] | None = None,
        digests: Mapping[str, Mapping[int, Sequence[Any]]] | None = None,
    ) -> int: ...

    def digests(self, node: str) -> dict[str, dict[int, tuple[int, int | None, str]]]:
        """The node's input digests recorded with its completions: source -> interval start
        (epoch seconds) -> (rows, newest time in epoch microseconds or None, checksum).  An
        interval completed before digests existed has none (``seeknal intervals verify``
        reports it as unverifiable)."""
        ...

    def mark_complete_many(
        self,
        nodes: Mapping[str, IntervalsLike],
        *,
        origin: str = "run",
        run_id: str | None = None,
    ) -> int:
        """``mark_complete`` of several nodes in one atomic change (one lock, one write):
        each node gets its own revision and records, exactly as the same calls in order."""
        ...

    def mark_failed(
        self,
        node: str,
        intervals: IntervalsLike,
        error: str,
        *,
        origin: str = "run",
        run_id: str | None = None,
        duration: float | None = None,
    ) -> int: ...

    def restate(
        self, nodes: Mapping[str, IntervalsLike], reason: str, actor: str | None = None
    ) -> list[Restatement]: ...

    def record_plan(
        self,
        restatements: Sequence[tuple[Mapping[str, IntervalsLike], str]],
        definitions: Mapping[str, tuple[str, Mapping[str, Any] | None]],
        actor: str | None = None,
    ) -> int:
        """Apply a change plan as one atomic change: ``restate(nodes, reason, actor)`` of each
        group in order, then ``set_fingerprint`` of each node (``definitions``: node ->
        (fingerprint, definition)).  Each step keeps its own revision and audit records, as
        the same calls one by one, but a crash leaves all of them or none; returns the revision."""
        ...

    def resolve_restatement(self, restatement_id: str, *, by: str | None = None) -> Restatement: ...

    def pending_restatements(self, node: str | None = None) -> list[Restatement]: ...

    def set_fingerprint(
        self, node: str, fingerprint: str, *, definition: Mapping[str, Any] | None = None
    ) -> int: ...

    def set_inferred_start(self, node: str, epoch_seconds: int) -> int: ...

    def record_execution(
        self,
        node: str,
        intervals: IntervalsLike = (),
        *,
        mode: str = "run",
        status: str,
        rows: int | None = None,
        duration: float | None = None,
        error: str | None = None,
        run_id: str | None = None,
    ) -> None: ...

    def changes_since(self, revision: int) -> list[Change]: ...

    def history(self, node: str, *, limit: int | None = None) -> list[dict[str, Any]]: ...

    def export(self) -> dict[str, Any]:
        """Everything the store holds, backend-neutral: ``format``, ``version``, ``revision``,
        ``nodes`` (per node: ``completed_intervals``, ``failed_intervals``, ``restatements``,
        ``partition_keys``, ``fingerprint``, ``definition``, ``last_run``, ``revision``; times as
        ``2024-01-01T00:00:00Z`` text) and ``audit`` (every audit record, oldest first)."""
        ...

    def import_(self, data: Mapping[str, Any]) -> int:
        """Load an ``export()`` into this store, which must be empty (revision 0, no audit);
        revisions and audit records are kept as they are.  Returns the store revision."""
        ...

    def close(self) -> None:
        """Release the store's file descriptors or connection (long-lived daemons open a
        store per run or tick)."""
        ...
