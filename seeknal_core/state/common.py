"""What every state backend shares: argument checks, normalisation, audit records.

``StoreBase`` implements the public mutations of ``StateStore`` once: it checks and
normalises the arguments and builds the audit record, then calls the backend's
``_apply_*`` hook, which applies the change atomically (and adds what only the commit
knows: ``revision``, ``at`` and computed fields such as ``attempts``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Self

from ..intervals import Interval, IntervalSet, seconds_to_micros
from ..timeutil import EPOCH, UTC
from .base import MODES, Change, IntervalsLike, NodeState, Restatement, StateError, default_actor

_US = dt.timedelta(microseconds=1)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
#: the instants a datetime can hold, in microseconds since the epoch
_MIN_US = (dt.datetime.min - _NAIVE_EPOCH) // _US
_MAX_US = (dt.datetime.max - _NAIVE_EPOCH) // _US


# -- time text <-> integer microseconds, interval arguments ---------------------------------


def fmt_us(us: int) -> str:
    """Canonical UTC text of an instant: ``2024-01-01T00:00:00Z`` (microseconds when set)."""
    return (_NAIVE_EPOCH + dt.timedelta(microseconds=us)).isoformat() + "Z"


def parse_us(text: object, *, closed_end: bool = False) -> int:
    """Microseconds since the epoch of an ISO string; naive means UTC.

    ``closed_end`` applies the legacy rule: an end one tick before a whole second that
    is itself the 59th second (``23:59:59``, ``10:59:59.999999``) meant "through the end
    of that minute", so it becomes the next whole second.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected an ISO time string, got {text!r}")
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    us = (value - EPOCH) // _US
    if closed_end and value.second == 59 and value.microsecond in (0, 999_000, 999_999):
        us += 1_000_000 - value.microsecond
    if not _MIN_US <= us <= _MAX_US:  # a closed end of 9999-12-31T23:59:59 means year 10000
        raise ValueError(f"{text!r} reaches past the last representable instant (9999-12-31)")
    return us


def fmt_dt(value: dt.datetime) -> str:
    """``fmt_us`` of an aware datetime (exports write NodeState's datetimes as stored text)."""
    return fmt_us((value - EPOCH) // _US)


def now_us() -> int:
    """The clock in microseconds: what stores stamp ``at``, ``updated_at`` and ``last_run`` with."""
    return (dt.datetime.now(UTC) - EPOCH) // _US


def dt_of_us(us: int) -> dt.datetime:
    """The aware UTC datetime of microseconds since the epoch (stored bounds -> ``NodeState``)."""
    return EPOCH + dt.timedelta(microseconds=us)


def parse_dt_or_none(text: object) -> dt.datetime | None:
    """A stored optional time text (``last_run``, ``resolved_at``) as a datetime, None kept."""
    return None if text is None else dt_of_us(parse_us(text))


def format_rows(starts: list[int], ends: list[int]) -> list[list[str]]:
    """Microsecond bounds as the ``[[start, end], ...]`` text rows both stores write."""
    return [[fmt_us(s), fmt_us(e)] for s, e in zip(starts, ends)]


def merge_pairs(pairs: list[tuple[int, int]], *, touching: bool) -> list[tuple[int, int]]:
    """Sort and merge overlapping pairs (and touching ones when ``touching``)."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(pairs):
        if out and (s < out[-1][1] or (touching and s == out[-1][1])):
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _as_set(value: IntervalsLike) -> IntervalSet:
    """An ``intervals`` argument as a merged IntervalSet."""
    return value if isinstance(value, IntervalSet) else IntervalSet(_pair_list(value))


def _as_pairs(value: IntervalsLike) -> list[tuple[int, int]]:
    """Intervals as microsecond pairs, keeping touching ones apart (failures are per interval)."""
    items = list(value) if isinstance(value, IntervalSet) else _pair_list(value)
    pairs = []
    for item in items:
        iv = item if isinstance(item, Interval) else Interval(*item)
        pairs.append(((iv.start - EPOCH) // _US, (iv.end - EPOCH) // _US))
    return merge_pairs(pairs, touching=False)


def _pair_list(value: Iterable[tuple[dt.datetime, dt.datetime]]) -> list[tuple[Any, Any]]:
    """The ``(start, end)`` pairs of an ``intervals`` argument that is not an IntervalSet;
    one bare pair (an ``Interval`` too) is refused rather than read as two intervals."""
    items = list(value)
    if not all(isinstance(item, (tuple, list)) and len(item) == 2 for item in items):
        raise TypeError(f"intervals must be an IntervalSet or a list of (start, end) pairs, got {value!r}"
                        + (": wrap one interval in a list" if len(items) == 2 else ""))
    return items


def check_node_name(node: object) -> str:
    """A node name as every mutation and an imported export must have it: non-empty text."""
    if not isinstance(node, str) or not node.strip():
        raise ValueError(f"node name must be a non-empty string, got {node!r}")
    return node


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


# -- records --------------------------------------------------------------------------------


def event_record(event: str, node: str, **fields: Any) -> dict[str, Any]:
    """An audit record without ``revision`` and ``at`` (added when the change commits)."""
    return {"event": event, "node": node, **fields}


def pending_item(
    restatement_id: str, rows: list[list[str]], reason: str, actor: str, at: str
) -> dict[str, Any]:
    """A new restatement as both backends store it."""
    return {
        "id": restatement_id, "intervals": rows, "reason": reason, "actor": actor,
        "requested_at": at, "status": "pending", "resolved_at": None, "resolved_by": None,
    }


def resync_changes(revision: int, nodes: Mapping[str, NodeState]) -> list[Change]:
    """Every node as one ``resync`` change holding its whole completed set."""
    return [
        Change(revision, name, "resync", state.completed, details={"event": "resync"})
        for name, state in nodes.items()
    ]


class Completion(NamedTuple):
    """One node's part of a ``mark_complete``/``mark_complete_many``, checked and normalised."""

    node: str
    done: IntervalSet
    keys: list[str]
    fingerprint: str | None
    definition: dict[str, Any] | None
    by: str  # who resolves the restatements this completes
    record: dict[str, Any]  # the audit record, without revision and at
    #: source -> interval start (epoch seconds) -> [rows, newest (epoch us) or None, checksum]
    digests: dict[str, dict[int, tuple]] | None = None


def _completion(
    node: str, intervals: IntervalsLike, origin: str, run_id: str | None, rows: int | None,
    duration: float | None, partition_keys: Iterable[str], fingerprint: str | None,
    definition: Mapping[str, Any] | None,
    interval_rows: Iterable[tuple[tuple[int, int], int]] | None = None,
    digests: Mapping[str, Mapping[int, Sequence[Any]]] | None = None,
) -> Completion:
    check_node_name(node)
    _check_mode(origin)
    done = _as_set(intervals)
    keys = sorted({str(k) for k in partition_keys})
    if not done and not keys:
        raise ValueError("mark_complete needs intervals or partition_keys")
    record = event_record(
        "complete", node, intervals=format_rows(*done.micros()), mode=origin,
        status="success", rows=rows, duration=duration, error=None, run_id=run_id,
    )
    if keys:
        record["partition_keys"] = keys
    if fingerprint is not None:
        record["fingerprint"] = fingerprint
    if interval_rows is not None:
        record["interval_rows"] = [[fmt_us(seconds_to_micros(a)), fmt_us(seconds_to_micros(b)), int(n)]
                                   for (a, b), n in interval_rows]
    by = origin if run_id is None else f"{origin}:{run_id}"
    return Completion(node, done, keys, fingerprint, _check_definition(definition), by, record,
                      check_digests(digests))


def encode_digest(value: Sequence[Any]) -> str:
    """A digest as the stores write it: ``"rows newest checksum"`` (``-`` for none), a string
    because JSON writes and reads a short string per interval ~15x faster than a list."""
    count, newest, checksum = value
    return f"{count} {'-' if newest is None else newest} {checksum or '-'}"


def decode_digest(text: str) -> tuple[int, int | None, str]:
    """``encode_digest``'s inverse; ``ValueError`` on anything else."""
    count, newest, checksum = str(text).split(" ")
    return int(count), None if newest == "-" else int(newest), "" if checksum == "-" else checksum


def check_digests(digests: Mapping[str, Mapping[int, Sequence[Any]]] | None
                  ) -> dict[str, dict[int, tuple]] | None:
    """Digests checked: source -> interval start (epoch seconds) -> ``(rows, newest (epoch
    microseconds) or None, checksum text)``."""
    if not digests:
        return None
    out: dict[str, dict[int, tuple]] = {}
    for source, per_start in digests.items():
        if not isinstance(source, str) or not source:
            raise ValueError(f"digest source must be a non-empty name, got {source!r}")
        rows: dict[int, tuple] = {}
        for start, value in per_start.items():
            count, newest, checksum = value if len(value) == 3 else (None, None, None)
            if isinstance(start, bool) or not isinstance(start, int) or isinstance(count, bool) \
                    or not isinstance(count, int) or not (newest is None or isinstance(newest, int)) \
                    or not isinstance(checksum, str):
                raise ValueError(f"digest of {source!r} at {start!r} must be (rows, newest us or None, "
                                 f"checksum text), got {value!r}")
            if " " in checksum:
                raise ValueError(f"digest checksum of {source!r} at {start} has a space: {checksum!r}")
            rows[start] = (count, newest, checksum)
        out[source] = rows
    return out


def _check_definition(definition: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A plain JSON copy of a node definition (both backends store it as JSON)."""
    if definition is None:
        return None
    if not isinstance(definition, Mapping):
        raise ValueError(f"definition must be a mapping, got {type(definition).__name__}")
    try:
        return json.loads(json.dumps(dict(definition), ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"definition must be JSON-serialisable: {exc}") from None


def _restatement_request(nodes: Mapping[str, IntervalsLike], reason: str
                         ) -> tuple[dict[str, IntervalSet], str]:
    """A ``restate`` call's arguments, checked: (node -> intervals, reason)."""
    if not isinstance(reason, str) or not reason.strip():
        raise StateError("a restatement needs a reason: say why the data must be recomputed")
    if not nodes:
        raise StateError("a restatement needs at least one node and its intervals")
    wanted: dict[str, IntervalSet] = {}
    for name, intervals in nodes.items():
        check_node_name(name)
        wanted[name] = _as_set(intervals)
        if not wanted[name]:
            raise StateError(f"restatement of node {name!r} has no intervals")
    return wanted, reason.strip()


def _fingerprint_request(node: str, fingerprint: str, definition: Mapping[str, Any] | None
                         ) -> tuple[str, str, dict[str, Any] | None]:
    """A ``set_fingerprint`` call's arguments, checked."""
    check_node_name(node)
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ValueError("fingerprint must be a non-empty string")
    return node, fingerprint, _check_definition(definition)


# -- the public mutations -------------------------------------------------------------------


class StoreBase:
    """The ``StateStore`` mutations, checked once; backends implement the ``_apply_*`` hooks."""

    def close(self) -> None:
        """Release what the store keeps open (it stays usable)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing useful to do
            pass

    def _where(self) -> str:
        """The store, as error messages name it."""
        raise NotImplementedError

    def fingerprints(self) -> dict[str, str | None]:
        """Each recorded node's fingerprint: what ``seeknal run`` compares before it plans
        (a backend may answer without building every node's state)."""
        return {name: state.fingerprint for name, state in self.load().items()}

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
    ) -> int:
        """Record intervals as done (call after the data is committed); returns the revision.

        Also clears those intervals from the failed list, resolves this node's pending
        restatements that are now fully completed, and adds ``partition_keys``;
        ``fingerprint`` and ``definition``, when given, replace the stored ones;
        ``interval_rows`` (``((start_s, end_s), rows)`` per interval) goes into the audit record;
        ``digests`` (source -> interval start in epoch seconds -> (rows, newest epoch us or
        None, checksum)) replace the stored digests of those sources at those starts, in the
        same commit (``digests()`` returns them; not in the audit record: they are large).
        """
        item = _completion(node, intervals, origin, run_id, rows, duration, partition_keys,
                           fingerprint, definition, interval_rows, digests)
        return self._apply_complete([item])

    def mark_complete_many(
        self,
        nodes: Mapping[str, IntervalsLike],
        *,
        origin: str = "run",
        run_id: str | None = None,
    ) -> int:
        """``mark_complete`` of every node in ``nodes``, as one atomic change; returns the revision.

        One lock and one write instead of one per node (marking 3,000 nodes by hand was
        quadratic), yet each node still gets its own revision, in the mapping's order,
        and the same audit records as the same ``mark_complete`` calls made one by one:
        ``changes_since`` and ``history`` cannot tell the two apart.
        """
        if not nodes:
            raise ValueError("mark_complete_many needs at least one node")
        items = [_completion(name, intervals, origin, run_id, None, None, (), None, None)
                 for name, intervals in nodes.items()]
        return self._apply_complete(items)

    def _apply_complete(self, items: list[Completion]) -> int:
        """Apply each completion at its own revision, in order (one commit); returns the last.

        Per item: add ``done`` and ``keys``, resolve what is covered (by ``by``); ``record``
        gains ``resolved_restatements`` when any were."""
        raise NotImplementedError

    def mark_failed(
        self,
        node: str,
        intervals: IntervalsLike,
        error: str,
        *,
        origin: str = "run",
        run_id: str | None = None,
        duration: float | None = None,
    ) -> int:
        """Record a failed attempt per interval (attempts += 1); returns the revision.

        Completed intervals stay completed: a failed re-run leaves the old data in place.
        """
        check_node_name(node)
        _check_mode(origin)
        pairs = _as_pairs(intervals)
        if not pairs:
            raise ValueError("mark_failed needs at least one interval")
        message = str(error)
        record = event_record(
            "fail", node, intervals=[[fmt_us(s), fmt_us(e)] for s, e in pairs], mode=origin,
            status="failed", rows=None, duration=duration, error=message, run_id=run_id,
        )
        return self._apply_failed(node, pairs, message, record)

    def _apply_failed(
        self, node: str, pairs: list[tuple[int, int]], message: str, record: dict[str, Any]
    ) -> int:
        """Record the failures; ``record`` gains ``attempts`` (the highest count)."""
        raise NotImplementedError

    def restate(
        self, nodes: Mapping[str, IntervalsLike], reason: str, actor: str | None = None
    ) -> list[Restatement]:
        """Mark intervals for re-processing: remove them from completed, record the request.

        ``nodes`` maps each node to its own intervals; the caller computes the downstream
        cascade.  One revision for the whole request, one audit record per node.
        """
        wanted, why = _restatement_request(nodes, reason)
        return self._apply_restate(wanted, why, actor or default_actor())

    def _apply_restate(
        self, wanted: dict[str, IntervalSet], reason: str, actor: str
    ) -> list[Restatement]:
        raise NotImplementedError

    def record_plan(
        self,
        restatements: Sequence[tuple[Mapping[str, IntervalsLike], str]],
        definitions: Mapping[str, tuple[str, Mapping[str, Any] | None]],
        actor: str | None = None,
    ) -> int:
        """``restate`` of each (nodes, reason) group, then ``set_fingerprint`` of each node, as
        one atomic change (``seeknal plan --apply``): each step has its own revision and the
        audit records of the call it stands for, so journals and history cannot tell the
        difference, but a crash can no longer leave restated readers beside an unrecorded
        definition, or a recorded definition without its restatements.  Checked whole
        before anything is written; returns the revision (unchanged when nothing was to do)."""
        groups = [_restatement_request(nodes, reason) for nodes, reason in restatements]
        defs = [_fingerprint_request(node, fingerprint, definition)
                for node, (fingerprint, definition) in definitions.items()]
        return self._apply_plan(groups, actor or default_actor(), defs)

    def _apply_plan(
        self, groups: list[tuple[dict[str, IntervalSet], str]], actor: str,
        definitions: list[tuple[str, str, dict[str, Any] | None]],
    ) -> int:
        """Apply the restatement groups, then the definitions, in one commit: one revision per
        group and per definition that changes anything (as ``_apply_restate``/``_apply_fingerprint``)."""
        raise NotImplementedError

    def resolve_restatement(self, restatement_id: str, *, by: str | None = None) -> Restatement:
        """Close a restatement (e.g. once Dagster has re-materialised it); idempotent."""
        found = self._apply_resolve(restatement_id, by or default_actor())
        if found is None:
            raise StateError(
                f"no restatement {restatement_id!r} in {self._where()}; "
                "`pending_restatements()` lists the open ones"
            )
        return found

    def _apply_resolve(self, restatement_id: str, by: str) -> Restatement | None:
        """The restatement, resolved now or before; None when there is no such id."""
        raise NotImplementedError

    def set_fingerprint(
        self, node: str, fingerprint: str, *, definition: Mapping[str, Any] | None = None
    ) -> int:
        """Store the node's definition hash and, when given, the definition it hashes.

        A no-op (same revision) when the fingerprint is unchanged and ``definition`` is
        None or equal to the stored one.  The ``fingerprint`` audit record carries the
        definition when given, so ``history`` shows what each version of a node was.
        """
        return self._apply_fingerprint(*_fingerprint_request(node, fingerprint, definition))

    def _apply_fingerprint(self, node: str, fingerprint: str, definition: dict[str, Any] | None) -> int:
        raise NotImplementedError

    def set_inferred_start(self, node: str, epoch_seconds: int) -> int:
        """Record the start inferred for a node without ``start:`` (its sources' earliest
        time), so later runs plan from it without querying; returns the revision."""
        check_node_name(node)
        if isinstance(epoch_seconds, bool) or not isinstance(epoch_seconds, int):
            raise ValueError(f"inferred start must be epoch seconds (int), got {epoch_seconds!r}")
        return self._apply_inferred_start(node, epoch_seconds)

    def _apply_inferred_start(self, node: str, epoch_seconds: int) -> int:
        raise NotImplementedError

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
    ) -> None:
        """Audit-only record of an execution that changes no state (skipped, cancelled...)."""
        check_node_name(node)
        _check_mode(mode)
        ivs = _as_set(intervals)
        self._apply_execution(node, event_record(
            "execution", node, intervals=format_rows(*ivs.micros()), mode=mode, status=status,
            rows=rows, duration=duration, error=error, run_id=run_id,
        ))

    def _apply_execution(self, node: str, record: dict[str, Any]) -> None:
        """Append ``record`` at the current revision (no state changes)."""
        raise NotImplementedError
