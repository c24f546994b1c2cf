"""``seeknal_reconcile``: Dagster shows what seeknal knows, whoever did the work.

* Intervals completed outside Dagster (``seeknal run``, manual completions) become
  runless ``AssetMaterialization``s of their partitions, each with its own interval's
  rows and the CLI run's duration (from the ``complete`` audit records).  Cursor:
  ``{"revision": R, "group": G, "offset": N}`` — every state change up to revision R is
  handled, and of the change group with revision G (the next one, or a ``resync``) the
  first N partitions are.  At most ``limit`` partitions are reported per tick, so a large
  first backlog drains in bounded chunks.
* A pending restatement (CLI, Python API or Dagster) turns its partitions
  not-materialised: an ``AssetObservation`` on the asset names reason, actor and time,
  then ``wipe_asset_partitions`` removes the restated partitions' materialisations that
  predate the restatement.  Open-source Dagster 1.13's event logs (sqlite, PostgreSQL)
  raise ``NotImplementedError`` for a partition wipe; there the restatement sensor's
  failing run shows the partitions Failed (restatements.py), and the failing
  ``seeknal_in_sync`` check lists them.  It never touches another partition, another asset, a
  materialisation newer than the restatement, or the asset's observations and checks
  (those are not partition events).  Cursor key ``"wiped"``: restatement ids done.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from seeknal_core.intervals import IntervalSet
from seeknal_core.project import Project
from seeknal_core.state import Change, StateStore
from seeknal_core.timeutil import from_epoch, to_epoch

from ..assets import CODE_VERSION_TAG, asset_keys
from ..checks import RECONCILE_SENSOR
from ..partitions import keys_for_intervals
from ..translator import SeeknalTranslator
from .common import (
    MAX_PARTITIONS_PER_TICK,
    ORIGIN_TAG,
    NodePartitions,
    latest_materialization_times,
    tag_value,
)

#: the provenance tags Dagster writes on the materialisations it runs (dagster's
#: ``data_version`` module; Dagster reads them back to decide staleness)
DATA_VERSION_TAG = "dagster/data_version"
INPUT_DATA_VERSION_TAG = "dagster/input_data_version"
INPUT_EVENT_TAG = "dagster/input_event_pointer"


@dataclass
class ReconcileResult:
    events: list[dg.AssetMaterialization]
    cursor: dict[str, Any]
    done: bool  # the journal is drained
    messages: list[str] = field(default_factory=list)  # restatements shown in Dagster


class _Reconciler:
    """Per-tick caches: partitions per node, materialised partitions per asset, restatements
    per node."""

    def __init__(self, project: Project, store: StateStore, instance: dg.DagsterInstance,
                 keys: Mapping[str, dg.AssetKey], partitions: NodePartitions):
        self.project, self.store, self.instance, self.keys = project, store, instance, keys
        self.pdef = partitions
        self._materialized: dict[str, set[str]] = {}
        self._restated: dict[str, list[tuple[float, set[str]]]] = {}
        self._pending: dict[str, list[tuple[float, set[str]]]] = {}
        self._rows: dict[tuple[int, str], dict[str, int]] = {}
        self._provenance: dict[str, dict[str, str]] = {}

    def tracked(self, node: str) -> bool:
        return node in self.keys and self.pdef(node) is not None

    def materialized(self, node: str) -> set[str]:
        if node not in self._materialized:
            self._materialized[node] = set(self.instance.get_materialized_partitions(self.keys[node]))
        return self._materialized[node]

    def items(self, changes: Sequence[Change]) -> list[tuple[str, str, Change]]:
        """(node, partition, change) to consider, in journal then partition order."""
        out = []
        for change in changes:
            if not self.tracked(change.node) or not self._reportable(change):
                continue
            out += [(change.node, key, change) for key in keys_for_intervals(self.pdef(change.node),
                                                                              change.intervals)]
        return out

    @staticmethod
    def _reportable(change: Change) -> bool:
        return change.kind == "resync" or (change.kind == "complete" and change.origin != "dagster")

    def restated_before(self, node: str, key: str, at: float) -> float | None:
        """When the newest restatement covering ``key`` requested before ``at`` was made."""
        if node not in self._restated:
            pdef = self.pdef(node)
            self._restated[node] = [
                (r.requested_at.timestamp(), set(keys_for_intervals(pdef, IntervalSet(r.intervals))))
                for r in self.store.node(node).restatements
            ]
        times = [t for t, keys in self._restated[node] if key in keys and t <= at]
        return max(times) if times else None

    def restated_after(self, node: str, key: str, change: Change) -> bool:
        """A pending restatement of ``key`` was requested after this completion."""
        if node not in self._pending:
            pdef = self.pdef(node)
            self._pending[node] = [
                (r.requested_at.timestamp(), set(keys_for_intervals(pdef, IntervalSet(r.intervals))))
                for r in self.store.node(node).pending_restatements]
        at = change.at.timestamp() if change.at is not None else float("inf")
        return any(key in keys and t > at for t, keys in self._pending[node])

    def rows(self, change: Change) -> dict[str, int]:
        """Rows per partition of one completion record (parsed once per change)."""
        cache_key = (change.revision, change.node)
        if cache_key not in self._rows:
            self._rows[cache_key] = _rows_by_key(self.pdef(change.node), change)
        return self._rows[cache_key]

    def provenance(self, node: str) -> dict[str, str]:
        """The input tags Dagster writes on a materialisation it runs (each dependency's
        current data version and latest event), as of this report: without them Dagster
        reads a reported partition as stale ("has a new dependency")."""
        if node not in self._provenance:
            tags: dict[str, str] = {}
            for dep in self.project.nodes[node].depends_on:
                if dep not in self.keys:
                    continue
                key = self.keys[dep]
                record = self.instance.get_latest_data_version_record(key, dep in self.project.sources)
                event = record and (record.event_log_entry.asset_materialization
                                    or record.event_log_entry.asset_observation)
                version = (event.tags or {}).get(DATA_VERSION_TAG) if event else None
                tags[f"{INPUT_DATA_VERSION_TAG}/{key.to_user_string()}"] = version or "INITIAL"
                tags[f"{INPUT_EVENT_TAG}/{key.to_user_string()}"] = (
                    str(record.storage_id) if record else "NULL")
            self._provenance[node] = tags
        return self._provenance[node]

    def code_version(self, change: Change) -> str | None:
        """The definition the interval was computed with: the fingerprint its completion
        recorded (a resync: the node's stored one)."""
        value = change.details.get("fingerprint")
        if isinstance(value, str) and value:
            return value
        return self.store.node(change.node).fingerprint if change.kind == "resync" else None

    def stale(self, node: str, candidates: dict[str, float]) -> set[str]:
        """Candidates whose newest Dagster materialisation predates their restatement."""
        if not candidates:
            return set()
        latest = latest_materialization_times(self.instance, self.keys[node], candidates)
        return {k for k, restated_at in candidates.items() if latest.get(k, 0.0) < restated_at}


def reconcile_tick(
    project: Project,
    store: StateStore,
    instance: dg.DagsterInstance,
    cursor: Mapping[str, Any],
    *,
    keys: Mapping[str, dg.AssetKey] | None = None,
    limit: int = MAX_PARTITIONS_PER_TICK,
    translator: SeeknalTranslator | None = None,
) -> ReconcileResult:
    """One tick of the reconciliation sensor (see the module doc for the cursor).

    A partition is reported when the completion came from outside Dagster and Dagster
    does not show it materialised — or shows only a materialisation older than a
    restatement of it (the CLI recomputed restated data).  ``translator``: the one the
    assets were built with (its ``get_partitions_def`` gives each node's partitions).
    """
    keys = keys or asset_keys(project, translator)
    partitions = NodePartitions(project, translator)
    wiped, messages = wipe_restated(project, store, instance, keys, cursor.get("wiped") or (),
                                    partitions=partitions)
    revision = int(cursor.get("revision", 0))
    resume_group, resume_at = int(cursor.get("group", -1)), int(cursor.get("offset", 0))
    rec = _Reconciler(project, store, instance, keys, partitions)
    events: list[dg.AssetMaterialization] = []
    seen: set[tuple[str, str]] = set()  # never twice in one tick, whatever the journal says
    for group_revision, group_iter in itertools.groupby(store.changes_since(revision),
                                                        key=lambda c: c.revision):
        group = list(group_iter)
        for change in group:  # restated in this batch: a later completion is news again
            if change.kind == "restate" and rec.tracked(change.node):
                rec.materialized(change.node).difference_update(
                    keys_for_intervals(rec.pdef(change.node), change.intervals))
        items = rec.items(group)
        i = resume_at if group_revision == resume_group else 0
        candidates: dict[str, dict[str, float]] = {}
        chosen: list[tuple[str, str, Change]] = []
        while i < len(items) and len(events) + len(chosen) < limit:
            node, key, change = items[i]
            i += 1
            if rec.restated_after(node, key, change):
                continue  # restated since: shown missing until recomputed
            if key not in rec.materialized(node):
                rec.materialized(node).add(key)
                chosen.append((node, key, change))
            elif change.kind == "complete" and change.at is not None:
                restated_at = rec.restated_before(node, key, change.at.timestamp())
                if restated_at is not None:
                    candidates.setdefault(node, {})[key] = restated_at
                    chosen.append((node, key, change))
        stale = {node: rec.stale(node, c) for node, c in candidates.items()}
        for node, key, change in chosen:
            if (key not in candidates.get(node, ()) or key in stale[node]) and (node, key) not in seen:
                seen.add((node, key))
                events.append(_materialization(keys[node], key, change, rec.rows(change),
                                               rec.code_version(change), rec.provenance(node)))
        if i < len(items):  # the budget ran out inside this group: resume here next tick
            return ReconcileResult(events, _cursor(wiped, revision=revision, group=group_revision, offset=i),
                                   done=False, messages=messages)
        revision = group_revision  # a resync group carries the store's current revision
    return ReconcileResult(events, _cursor(wiped, revision=revision), done=True, messages=messages)


def _cursor(wiped: list[str], **position: int) -> dict[str, Any]:
    return {**position, "wiped": wiped} if wiped else position


def _materialization(key: dg.AssetKey, partition: str, change: Change,
                     rows: Mapping[str, int], code_version: str | None = None,
                     provenance: Mapping[str, str] | None = None) -> dg.AssetMaterialization:
    """One partition completed outside Dagster, with the code version (``dagster/code_version``,
    the tag Dagster reads for staleness) its interval was computed with and its inputs'
    provenance, so Dagster marks it changed exactly when the definition changes."""
    origin = change.origin if change.kind == "complete" and change.origin else "seeknal"
    metadata: dict[str, Any] = {"seeknal/origin": origin, "seeknal/revision": change.revision}
    if partition in rows:
        metadata.update({"rows": rows[partition], "dagster/partition_row_count": rows[partition]})
    duration = change.details.get("duration")
    if isinstance(duration, int | float):
        metadata["run/duration_seconds"] = dg.MetadataValue.float(round(float(duration), 4))
    if isinstance(change.details.get("rows"), int):
        metadata["run/rows"] = change.details["rows"]
    if change.run_id:
        metadata["seeknal/run_id"] = change.run_id
    if change.at is not None:
        metadata["seeknal/completed_at"] = change.at.isoformat()
    tags = {ORIGIN_TAG: tag_value(origin)}
    if code_version:
        tags[CODE_VERSION_TAG] = code_version
        tags.update(provenance or {})
    return dg.AssetMaterialization(
        asset_key=key, partition=partition, metadata=metadata, tags=tags,
        description=f"Completed outside Dagster (seeknal {origin}); reported by {RECONCILE_SENSOR}",
    )


def _rows_by_key(pdef: dg.PartitionsDefinition, change: Change) -> dict[str, int]:
    """Rows per partition from the record's ``interval_rows`` ([[start, end, rows], ...])."""
    items = [r for r in change.details.get("interval_rows") or ()
             if isinstance(r, list | tuple) and len(r) == 3]
    if not items:
        return {}
    keys = keys_for_intervals(pdef, [(_parse(a), _parse(b)) for a, b, _ in items])
    return {k: int(r[2]) for k, r in zip(keys, items)}


def _parse(text: str):
    return from_epoch(to_epoch(text))


# -- restated partitions: not materialised until recomputed ----------------------------------
def wipe_restated(
    project: Project, store: StateStore, instance: dg.DagsterInstance, keys: Mapping[str, dg.AssetKey],
    done: Sequence[str] = (), *, translator: SeeknalTranslator | None = None,
    partitions: NodePartitions | None = None,
) -> tuple[list[str], list[str]]:
    """Observe then wipe each pending restatement not yet handled; (ids handled, messages)."""
    pdef_of = partitions or NodePartitions(project, translator)
    handled, messages = [], []
    pending = [r for r in store.pending_restatements() if r.node in keys and pdef_of(r.node) is not None]
    for restatement in pending:
        handled.append(restatement.id)
        if restatement.id in done:
            continue
        pdef = pdef_of(restatement.node)
        asset_key = keys[restatement.node]
        partitions = keys_for_intervals(pdef, IntervalSet(restatement.intervals))
        at = restatement.requested_at.timestamp()
        latest = latest_materialization_times(instance, asset_key, partitions)
        stale = [k for k in partitions if k in latest and latest[k] < at]
        instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=asset_key,
            description=f"Restated by {restatement.actor} at {restatement.requested_at.isoformat()}: "
                        f"{restatement.reason or 'no reason given'} "
                        f"({len(partitions)} partition(s) to recompute)",
            metadata={"seeknal/restatement_id": restatement.id, "seeknal/reason": restatement.reason or "",
                      "seeknal/actor": restatement.actor,
                      "seeknal/requested_at": restatement.requested_at.isoformat(),
                      "seeknal/restated_partitions": dg.MetadataValue.json(partitions[:100]),
                      "seeknal/restated_count": len(partitions)},
            tags={ORIGIN_TAG: "restatement"},
        ))
        try:
            if stale:
                instance.wipe_asset_partitions(asset_key, stale)
        except NotImplementedError:  # open-source event logs (1.13) cannot wipe one partition
            messages.append(f"restatement {restatement.id} of {restatement.node}: recorded on the asset; "
                            "this instance's event log cannot wipe partitions: the seeknal_restatements "
                            f"sensor shows the {len(partitions)} restated partition(s) Failed")
            continue
        messages.append(f"restatement {restatement.id} of {restatement.node}: {len(stale)} partition(s) "
                        "shown as not materialised until recomputed")
    return handled, messages
