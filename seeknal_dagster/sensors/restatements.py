"""``seeknal_restatements``: restated partitions show Failed, then are recomputed.

Display (``display="failed"``, the default): a new pending restatement becomes one run
per contiguous partition range (through Dagster's implicit asset job: the sensor targets
the assets), tagged ``seeknal/restatement`` (id), ``seeknal/reason``
and ``seeknal/actor``, whose asset step fails at once with ``restated: <reason>``
(assets.py).  Open-source Dagster cannot wipe one partition, but it draws a partition
whose latest planned run failed as Failed until its next materialisation: so the
restated partitions read Failed, with the reason as the failure's message, and
``AutomationCondition.execution_failed()`` matches them.  ``display="observation"`` runs
nothing (the reconcile sensor's observation on the asset stays the only record).

Recompute (``recompute=True``, for ``automation: schedules``; under automation
conditions the assets' own condition requests failed partitions): once the display runs
ended, one run request per contiguous range, tagged ``seeknal/recompute`` (id); a
restatement is resolved once a materialisation of every restated partition newer than
the request is seen.  Cursor: ``{"tracked": {id: {node, asset, ranges: [[first, last]],
requested_at, attempt, sent_at, reason, [shown]}}}``; a tracked restatement is never
requested again while a run for it is queued or in flight, and is retried (new run keys)
when its runs ended without the materialisation, up to three attempts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from seeknal_core.intervals import IntervalSet
from seeknal_core.project import Project
from seeknal_core.state import StateStore

from ..assets import ACTOR_TAG, REASON_TAG, RESTATEMENT_TAG, asset_keys
from ..partitions import keys_for_intervals
from ..translator import SeeknalTranslator
from .common import (
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    NodePartitions,
    latest_materialization_times,
)

ATTEMPT_TAG = "seeknal/restatement_attempt"
#: run tag naming the restatement a run recomputes (the display run carries RESTATEMENT_TAG)
RECOMPUTE_TAG = "seeknal/recompute"
#: display runs fail by design: Dagster must not retry them
_NO_RETRIES = {"dagster/max_retries": "0"}


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
) -> dg.RunRequest:
    """One recompute run for one contiguous range: a partition key, or the range tags
    Dagster's single-run backfills use (the asset reads the whole window at once)."""
    tags = {RECOMPUTE_TAG: restatement_id, ATTEMPT_TAG: str(attempt)}
    if reason:
        tags[REASON_TAG] = reason[:200]
    run_key = f"seeknal-restatement:{restatement_id}:{attempt}:{asset_key.to_user_string()}:{first}:{last}"
    return _ranged(dg.RunRequest(run_key=run_key, asset_selection=[asset_key], tags=tags),
                   first, last)


def display_run_request(asset_key: dg.AssetKey, restatement_id: str, first: str, last: str,
                        reason: str, actor: str) -> dg.RunRequest:
    """The run that shows one contiguous restated range Failed: its step fails with the
    reason (assets.py), and Dagster does not retry it."""
    tags = {RESTATEMENT_TAG: restatement_id, REASON_TAG: (reason or "no reason given")[:200],
            ACTOR_TAG: actor[:200], **_NO_RETRIES}
    run_key = f"seeknal-restated:{restatement_id}:{asset_key.to_user_string()}:{first}:{last}"
    return _ranged(dg.RunRequest(run_key=run_key, asset_selection=[asset_key], tags=tags),
                   first, last)


def _ranged(request: dg.RunRequest, first: str, last: str) -> dg.RunRequest:
    if first == last:
        return request.with_replaced_attrs(partition_key=first)
    return request.with_replaced_attrs(
        tags={**request.tags, PARTITION_RANGE_START_TAG: first, PARTITION_RANGE_END_TAG: last})


def restatement_tick(
    project: Project,
    store: StateStore,
    instance: dg.DagsterInstance,
    cursor: Mapping[str, Any],
    *,
    keys: Mapping[str, dg.AssetKey] | None = None,
    now: float | None = None,
    relaunch_after: float = 600.0,
    max_attempts: int = 3,
    display: str = "failed",
    recompute: bool = True,
    translator: SeeknalTranslator | None = None,
) -> RestatementResult:
    """One tick of the restatement sensor (see the module doc).

    A new pending restatement is shown (``display="failed"``: its display runs are
    requested); with ``recompute``, tracked restatements are followed up: recomputed once
    their display runs ended, resolved once every restated partition has a
    materialisation newer than the request, left alone while a run for them is queued
    or in flight (or was requested less than ``relaunch_after`` seconds ago and has not
    appeared yet), requested again, up to ``max_attempts``, when their runs ended without
    it.  Recomputes of nodes downstream of another pending restatement wait (upstream
    data is recomputed first).  ``translator``: the one the assets were built with (its
    ``get_partitions_def`` gives each node's partitions).
    """
    keys = keys or asset_keys(project, translator)
    pdef_of = NodePartitions(project, translator)
    now = time.time() if now is None else now
    tracked: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (cursor.get("tracked") or {}).items()}
    pending = {r.id: r for r in store.pending_restatements()
               if r.node in keys and pdef_of(r.node) is not None}
    requests: list[dg.RunRequest] = []
    resolved: list[str] = []
    messages: list[str] = []
    # upstream data is recomputed first: nodes downstream of a pending restatement wait
    blocked = {d for r in pending.values() for d in project.downstream(r.node)}

    for rid, entry in list(tracked.items()):
        node = project.nodes.get(entry["node"])
        pdef = pdef_of(entry["node"])
        if pdef is None:
            del tracked[rid]
            continue
        if rid not in pending and not recompute:
            del tracked[rid]  # recomputed (by the automation condition, the CLI, a click)
            continue
        if not recompute:
            continue
        asset_key = keys[node.name]
        partitions = _range_keys(pdef, entry["ranges"])
        if entry.get("shown") == "requested":  # display runs first, then the recompute
            shown = instance.get_runs(filters=dg.RunsFilter(tags={RESTATEMENT_TAG: rid}))
            if any(not r.is_finished for r in shown) or (
                    not shown and now - entry["sent_at"] < relaunch_after):
                continue  # the display runs have not ended (or not appeared yet)
            if node.name in blocked and rid in pending:
                continue
            entry.update(shown="done", sent_at=now)
            requests += [restatement_run_request(asset_key, rid, entry["attempt"], a, b,
                                                 entry.get("reason", ""))
                         for a, b in entry["ranges"]]
            messages.append(f"restatement {rid} of {node.name}: shown Failed; recompute requested")
            continue
        seen = latest_materialization_times(instance, asset_key, partitions, after=entry["requested_at"])
        runs = instance.get_runs(filters=dg.RunsFilter(tags={RECOMPUTE_TAG: rid}))
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
        requests += [restatement_run_request(asset_key, rid, entry["attempt"], a, b, entry.get("reason", ""))
                     for a, b in entry["ranges"]]

    for rid, restatement in pending.items():
        if rid in tracked:
            continue
        node = project.nodes[restatement.node]
        show = display == "failed"
        if not show and (not recompute or node.name in blocked):
            continue
        pdef = pdef_of(node.name)
        ranges = _ranges(pdef, keys_for_intervals(pdef, IntervalSet(restatement.intervals)))
        if not ranges:
            messages.append(f"restatement {rid} of {node.name}: no Dagster partition covers it")
            continue
        tracked[rid] = {
            "node": node.name, "asset": keys[node.name].to_user_string(), "ranges": ranges,
            "requested_at": restatement.requested_at.timestamp(), "attempt": 1, "sent_at": now,
            "reason": restatement.reason,
        }
        if show:
            tracked[rid]["shown"] = "requested"
            requests += [display_run_request(keys[node.name], rid, a, b, restatement.reason,
                                             restatement.actor) for a, b in ranges]
            messages.append(f"restatement {rid} of {node.name}: {len(ranges)} run(s) show "
                            f"{len(_range_keys(pdef, ranges))} partition(s) Failed until recomputed")
        else:
            requests += [restatement_run_request(keys[node.name], rid, 1, a, b, restatement.reason)
                         for a, b in ranges]
            messages.append(f"restatement {rid} of {node.name}: requested {len(ranges)} run(s)")
    return RestatementResult(requests, {"tracked": tracked}, resolved, messages)
