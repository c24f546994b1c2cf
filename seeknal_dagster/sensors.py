"""Sensors that keep Dagster and the seeknal state store in agreement.

``seeknal_reconcile``
    Intervals completed outside Dagster (``seeknal run``, manual completions) become
    runless ``AssetMaterialization``s of their partitions.  Cursor:
    ``{"revision": R, "group": G, "offset": N}`` — every state change up to revision R is
    handled, and of the change group with revision G (the next one, or a ``resync``)
    the first N partitions are.  At most ``max_partitions_per_tick`` are reported per
    tick, so a large first backlog drains in bounded chunks.
``seeknal_restatements``
    Pending restatements become run requests, one per contiguous partition range, and
    are resolved once a materialisation of every restated partition newer than the
    request is seen.  Cursor: ``{"tracked": {id: {node, asset, ranges: [[first, last]],
    requested_at, attempt, sent_at, reason}}}``; a tracked restatement is never requested
    again while a run for it is queued or in flight, and is retried (new run keys) when
    its runs ended without the materialisation, up to three attempts.
``seeknal_checks``
    Emits the ``seeknal_in_sync`` check evaluations (see checks.py) when a node's state
    revision or its asset's latest materialisation changes.  Cursor:
    ``{"seen": {node: [state_revision, materialization_storage_id]}}``.

The tick logic lives in plain functions (``reconcile_tick`` ...) that take a store and an
instance, so tests and other tools drive exactly what the daemon runs.
"""

import itertools
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from seeknal_core.intervals import IntervalSet
from seeknal_core.project import Project
from seeknal_core.state import Change, StateStore

from .assets import RESTATEMENT_TAG, as_project, asset_keys, state_store
from .checks import check_evaluation, sync_status
from .partitions import keys_for_intervals, partitions_def_for
from .schedules import build_jobs, job_names
from .translator import SeeknalTranslator

RECONCILE_SENSOR = "seeknal_reconcile"
RESTATEMENT_SENSOR = "seeknal_restatements"
CHECKS_SENSOR = "seeknal_checks"
ATTEMPT_TAG = "seeknal/restatement_attempt"
ORIGIN_TAG = "seeknal/origin"
MAX_PARTITIONS_PER_TICK = 5_000


def _load_cursor(text: str | None) -> dict[str, Any]:
    """The JSON cursor, or an empty one: a lost or foreign cursor only costs a re-scan
    (every sensor skips what Dagster already shows)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _dump(cursor: Mapping[str, Any]) -> str:
    return json.dumps(cursor, sort_keys=True, separators=(",", ":"))


def latest_materialization_times(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: Iterable[str],
    *, after: float | None = None,
) -> dict[str, float]:
    """Timestamp of the newest materialisation of each partition (those with one)."""
    wanted = set(partitions)
    found: dict[str, float] = {}
    cursor = None
    while wanted - found.keys():
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=sorted(wanted - found.keys()),
                                  after_timestamp=after),
            limit=1000, cursor=cursor,
        )
        for record in result.records:
            if record.partition_key in wanted:
                found.setdefault(record.partition_key, record.timestamp)
        if not result.has_more:
            break
        cursor = result.cursor
    return found


# -- reconciliation ---------------------------------------------------------------------------
@dataclass
class ReconcileResult:
    events: list[dg.AssetMaterialization]
    cursor: dict[str, Any]
    done: bool  # the journal is drained


class _Reconciler:
    """Per-tick caches: materialised partitions per asset, restatements per node."""

    def __init__(self, project: Project, store: StateStore, instance: dg.DagsterInstance,
                 keys: Mapping[str, dg.AssetKey]):
        self.project, self.store, self.instance, self.keys = project, store, instance, keys
        self._materialized: dict[str, set[str]] = {}
        self._restated: dict[str, list[tuple[float, set[str]]]] = {}

    def tracked(self, node: str) -> bool:
        n = self.project.nodes.get(node)
        return n is not None and n.is_incremental

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
            pdef = partitions_def_for(self.project.nodes[change.node])
            out += [(change.node, key, change) for key in keys_for_intervals(pdef, change.intervals)]
        return out

    @staticmethod
    def _reportable(change: Change) -> bool:
        return change.kind == "resync" or (change.kind == "complete" and change.origin != "dagster")

    def restated_before(self, node: str, key: str, at: float) -> float | None:
        """When the newest restatement covering ``key`` requested before ``at`` was made."""
        if node not in self._restated:
            pdef = partitions_def_for(self.project.nodes[node])
            self._restated[node] = [
                (r.requested_at.timestamp(), set(keys_for_intervals(pdef, IntervalSet(r.intervals))))
                for r in self.store.node(node).restatements
            ]
        times = [t for t, keys in self._restated[node] if key in keys and t <= at]
        return max(times) if times else None

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
) -> ReconcileResult:
    """One tick of the reconciliation sensor (see the module doc for the cursor).

    A partition is reported when the completion came from outside Dagster and Dagster
    does not show it materialised — or shows only a materialisation older than a
    restatement of it (the CLI recomputed restated data).
    """
    keys = keys or asset_keys(project, SeeknalTranslator())
    revision = int(cursor.get("revision", 0))
    resume_group, resume_at = int(cursor.get("group", -1)), int(cursor.get("offset", 0))
    rec = _Reconciler(project, store, instance, keys)
    events: list[dg.AssetMaterialization] = []
    seen: set[tuple[str, str]] = set()  # never twice in one tick, whatever the journal says
    for group_revision, group_iter in itertools.groupby(store.changes_since(revision),
                                                        key=lambda c: c.revision):
        group = list(group_iter)
        for change in group:  # restated in this batch: a later completion is news again
            if change.kind == "restate" and rec.tracked(change.node):
                pdef = partitions_def_for(project.nodes[change.node])
                rec.materialized(change.node).difference_update(keys_for_intervals(pdef, change.intervals))
        items = rec.items(group)
        i = resume_at if group_revision == resume_group else 0
        candidates: dict[str, dict[str, float]] = {}
        chosen: list[tuple[str, str, Change]] = []
        while i < len(items) and len(events) + len(chosen) < limit:
            node, key, change = items[i]
            i += 1
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
                events.append(_materialization(keys[node], key, change))
        if i < len(items):  # the budget ran out inside this group: resume here next tick
            return ReconcileResult(events, {"revision": revision, "group": group_revision, "offset": i},
                                   done=False)
        revision = group_revision  # a resync group carries the store's current revision
    return ReconcileResult(events, {"revision": revision}, done=True)


def _materialization(key: dg.AssetKey, partition: str, change: Change) -> dg.AssetMaterialization:
    origin = change.origin if change.kind == "complete" and change.origin else "seeknal"
    metadata: dict[str, Any] = {"seeknal/origin": origin, "seeknal/revision": change.revision}
    if change.run_id:
        metadata["seeknal/run_id"] = change.run_id
    if change.at is not None:
        metadata["seeknal/completed_at"] = change.at.isoformat()
    return dg.AssetMaterialization(
        asset_key=key, partition=partition, metadata=metadata, tags={ORIGIN_TAG: _tag(origin)},
        description=f"Completed outside Dagster (seeknal {origin}); reported by {RECONCILE_SENSOR}",
    )


def _tag(value: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in value)
    return cleaned[:63] or "seeknal"


# -- restatements -----------------------------------------------------------------------------
@dataclass
class RestatementResult:
    run_requests: list[dg.RunRequest]
    cursor: dict[str, Any]
    resolved: list[str]  # restatement ids resolved this tick
    messages: list[str]


def _ranges(pdef: dg.PartitionsDefinition, keys: Iterable[str]) -> list[list[str]]:
    """Partition keys as contiguous [first, last] ranges, in partition order."""
    index = {k: i for i, k in enumerate(pdef.get_partition_keys())}
    ordered = sorted((index[k], k) for k in set(keys) if k in index)
    ranges: list[list[str]] = []
    last = None
    for i, key in ordered:
        if ranges and last == i - 1:
            ranges[-1][1] = key
        else:
            ranges.append([key, key])
        last = i
    return ranges


def _range_keys(pdef: dg.PartitionsDefinition, ranges: Sequence[Sequence[str]]) -> list[str]:
    return [k for a, b in ranges for k in pdef.get_partition_keys_in_range(dg.PartitionKeyRange(a, b))]


def restatement_run_request(
    asset_key: dg.AssetKey, restatement_id: str, attempt: int, first: str, last: str, reason: str = "",
    job_name: str | None = None,
) -> dg.RunRequest:
    """One run for one contiguous range: a partition key, or the range tags Dagster's
    single-run backfills use (the asset reads the whole window at once)."""
    tags = {RESTATEMENT_TAG: restatement_id, ATTEMPT_TAG: str(attempt)}
    if reason:
        tags["seeknal/reason"] = reason[:200]
    run_key = f"seeknal-restatement:{restatement_id}:{attempt}:{asset_key.to_user_string()}:{first}:{last}"
    if first == last:
        return dg.RunRequest(run_key=run_key, job_name=job_name, asset_selection=[asset_key],
                             partition_key=first, tags=tags)
    tags.update({ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last})
    return dg.RunRequest(run_key=run_key, job_name=job_name, asset_selection=[asset_key], tags=tags)


def restatement_tick(
    project: Project,
    store: StateStore,
    instance: dg.DagsterInstance,
    cursor: Mapping[str, Any],
    *,
    keys: Mapping[str, dg.AssetKey] | None = None,
    jobs: Mapping[str, str] | None = None,
    now: float | None = None,
    relaunch_after: float = 600.0,
    max_attempts: int = 3,
) -> RestatementResult:
    """One tick of the restatement sensor.

    Tracked restatements are followed up first: resolved once every restated partition
    has a materialisation newer than the request; left alone while a run for them is
    queued or in flight (or was requested less than ``relaunch_after`` seconds ago and
    has not appeared yet); requested again, up to ``max_attempts``, when their runs
    ended without it.  New pending restatements are requested unless an upstream node
    still has one pending (its data must be recomputed first).
    """
    keys = keys or asset_keys(project, SeeknalTranslator())
    jobs = jobs if jobs is not None else job_names(project)
    now = time.time() if now is None else now
    tracked: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (cursor.get("tracked") or {}).items()}
    pending = {r.id: r for r in store.pending_restatements()
               if r.node in project.nodes and project.nodes[r.node].is_incremental}
    requests: list[dg.RunRequest] = []
    resolved: list[str] = []
    messages: list[str] = []

    for rid, entry in list(tracked.items()):
        node = project.nodes.get(entry["node"])
        if node is None or not node.is_incremental:
            del tracked[rid]
            continue
        pdef = partitions_def_for(node)
        asset_key = keys[node.name]
        partitions = _range_keys(pdef, entry["ranges"])
        seen = latest_materialization_times(instance, asset_key, partitions, after=entry["requested_at"])
        runs = instance.get_runs(filters=dg.RunsFilter(tags={RESTATEMENT_TAG: rid}))
        if len(seen) == len(set(partitions)):
            if rid in pending:
                by = next((f"dagster:{r.run_id}" for r in runs if r.is_success), "dagster")
                store.resolve_restatement(rid, by=by)
            resolved.append(rid)
            messages.append(f"restatement {rid} of {node.name}: re-materialised, resolved")
            del tracked[rid]
            continue
        if rid not in pending:  # resolved outside Dagster (e.g. `seeknal run`)
            messages.append(f"restatement {rid} of {node.name}: resolved outside Dagster")
            del tracked[rid]
            continue
        current = [r for r in runs if r.tags.get(ATTEMPT_TAG) == str(entry["attempt"])]
        if any(not r.is_finished for r in current):
            continue  # queued or running
        if not current:
            if now - entry["sent_at"] < relaunch_after:
                continue  # requested, not launched yet
            # never launched (sensor restarted before the daemon submitted): same run keys
        elif entry["attempt"] >= max_attempts:
            if not entry.get("gave_up"):
                entry["gave_up"] = True
                messages.append(f"restatement {rid} of {node.name}: {max_attempts} runs ended "
                                "without re-materialising it; re-materialise by hand")
            continue
        else:
            entry["attempt"] += 1
        entry["sent_at"] = now
        requests += [restatement_run_request(asset_key, rid, entry["attempt"], a, b, entry.get("reason", ""),
                                             jobs.get(node.name)) for a, b in entry["ranges"]]

    waiting = {r.node for r in pending.values()}
    for rid, restatement in pending.items():
        if rid in tracked:
            continue
        node = project.nodes[restatement.node]
        if _upstream_closure(project, node.name) & waiting:
            continue  # upstream data is being recomputed first
        pdef = partitions_def_for(node)
        ranges = _ranges(pdef, keys_for_intervals(pdef, IntervalSet(restatement.intervals)))
        if not ranges:
            messages.append(f"restatement {rid} of {node.name}: no Dagster partition covers it")
            continue
        tracked[rid] = {
            "node": node.name, "asset": keys[node.name].to_user_string(), "ranges": ranges,
            "requested_at": restatement.requested_at.timestamp(), "attempt": 1, "sent_at": now,
            "reason": restatement.reason,
        }
        requests += [restatement_run_request(keys[node.name], rid, 1, a, b, restatement.reason,
                                             jobs.get(node.name)) for a, b in ranges]
        messages.append(f"restatement {rid} of {node.name}: requested {len(ranges)} run(s)")
    return RestatementResult(requests, {"tracked": tracked}, resolved, messages)


def _upstream_closure(project: Project, name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(project.upstream(name))
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(project.upstream(n))
    return seen


# -- checks -----------------------------------------------------------------------------------
def checks_tick(
    project: Project,
    store: StateStore,
    instance: dg.DagsterInstance,
    cursor: Mapping[str, Any],
    *,
    keys: Mapping[str, dg.AssetKey] | None = None,
) -> tuple[list[dg.AssetCheckEvaluation], dict[str, Any]]:
    """Evaluate ``seeknal_in_sync`` for each node whose inputs changed since the last tick."""
    keys = keys or asset_keys(project, SeeknalTranslator())
    seen: dict[str, Any] = dict(cursor.get("seen") or {})
    names = [n for n in project.topological_order() if project.nodes[n].is_incremental]
    states = store.load()
    records = {r.asset_entry.asset_key: r.asset_entry
               for r in instance.get_asset_records([keys[n] for n in names])}
    evaluations = []
    for name in names:
        entry = records.get(keys[name])
        signature = [states[name].revision if name in states else 0,
                     (entry.last_materialization_storage_id if entry else None) or 0]
        if seen.get(name) == signature:
            continue
        evaluations.append(check_evaluation(sync_status(store, instance, project.nodes[name], keys[name]),
                                            keys[name]))
        seen[name] = signature
    return evaluations, {"seen": seen}


# -- sensor definitions -----------------------------------------------------------------------
def build_sensors(
    project: Project | str | os.PathLike[str],
    *,
    translator: SeeknalTranslator | None = None,
    minimum_interval_seconds: int = 30,
    max_partitions_per_tick: int = MAX_PARTITIONS_PER_TICK,
    include_checks: bool = True,
    jobs: Sequence[UnresolvedAssetJobDefinition] | None = None,
    restatements_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    reconcile_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
) -> list[dg.SensorDefinition]:
    """The reconciliation, restatement and (with ``include_checks``) checks sensors.

    The two passive sensors (they only record events) run by default; the restatement
    sensor launches runs, so it starts stopped, as Dagster's own schedules do.  It
    targets the partitioned jobs (``schedules.build_jobs``; pass the same ``jobs`` the
    schedules use), one per grid, as a sensor cannot target assets of different grids.
    """
    project = as_project(project)
    translator = translator or SeeknalTranslator()
    keys = asset_keys(project, translator)
    node_jobs = job_names(project)
    if not node_jobs:
        return []
    jobs = list(jobs) if jobs is not None else build_jobs(project, translator=translator)

    def sensor(name: str, default_status: dg.DefaultSensorStatus, description: str, **options: Any):
        """``dg.sensor`` with the interval every seeknal sensor shares."""
        return dg.sensor(name=name, minimum_interval_seconds=minimum_interval_seconds,
                         default_status=default_status, description=description, **options)

    def tick(tick_function, context: dg.SensorEvaluationContext, **options: Any):
        """One tick as the daemon runs it: on a freshly opened store, from the sensor's cursor."""
        with state_store(project) as store:
            return tick_function(project, store, context.instance, _load_cursor(context.cursor),
                                 keys=keys, **options)

    @sensor(RECONCILE_SENSOR, reconcile_status,
            "Reports intervals completed outside Dagster (seeknal CLI, manual "
            "completions) as materialisations of their partitions.")
    def reconcile(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        result = tick(reconcile_tick, context, limit=max_partitions_per_tick)
        if not result.events:
            context.update_cursor(_dump(result.cursor))
            return dg.SkipReason("no intervals completed outside Dagster")
        context.log.info(f"reporting {len(result.events)} partition(s) completed outside Dagster"
                         + ("" if result.done else "; more next tick"))
        return dg.SensorResult(asset_events=result.events, cursor=_dump(result.cursor))

    @sensor(RESTATEMENT_SENSOR, restatements_status,
            "Turns pending seeknal restatements into runs of the restated partitions "
            "and resolves them once re-materialised.", jobs=jobs)
    def restatements(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        result = tick(restatement_tick, context, jobs=node_jobs)
        for message in result.messages:
            context.log.info(message)
        if not result.run_requests:
            return dg.SensorResult(skip_reason=dg.SkipReason("no restatement to request"),
                                   cursor=_dump(result.cursor))
        return dg.SensorResult(run_requests=result.run_requests, cursor=_dump(result.cursor))

    sensors = [reconcile, restatements]
    if include_checks:
        @sensor(CHECKS_SENSOR, reconcile_status,
                "Evaluates the seeknal_in_sync asset checks whenever state or "
                "materialisations change.")
        def checks(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
            evaluations, cursor = tick(checks_tick, context)
            if not evaluations:
                return dg.SkipReason("nothing changed")
            return dg.SensorResult(asset_events=evaluations, cursor=_dump(cursor))

        sensors.append(checks)
    return sensors


__all__ = [
    "CHECKS_SENSOR", "MAX_PARTITIONS_PER_TICK", "RECONCILE_SENSOR", "RESTATEMENT_SENSOR",
    "build_sensors", "checks_tick", "latest_materialization_times", "reconcile_tick",
    "restatement_run_request", "restatement_tick",
]
