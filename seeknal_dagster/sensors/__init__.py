"""Sensors that keep Dagster and the seeknal state store in agreement, one module each:

``seeknal_reconcile`` (reconcile.py)
    work done outside Dagster shows as materialised partitions; restated partitions show
    as not materialised until recomputed.  Runs by default (it only records events).
``seeknal_restatements`` (restatements.py)
    pending restatements become runs of the restated partitions.  Stopped by default
    (it launches runs), as Dagster's own schedules are.
``seeknal_checks`` (checks.py)
    the ``seeknal_in_sync`` check evaluations, runless.  Runs by default.
``seeknal_late_data`` (late_data.py)
    recent intervals whose source rows changed since they ran are restated (late data),
    every ``late_data_interval_seconds``.  Runs by default (it only records restatements).

The tick logic lives in plain functions (``reconcile_tick`` ...) that take a store and an
instance, so tests drive them directly; each tick returns what it did as its result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import dagster as dg

from seeknal_core.project import Project

from ..assets import as_specs, state_store
from ..checks import CHECKS_SENSOR, RECONCILE_SENSOR, RESTATEMENT_SENSOR
from ..schedules import build_jobs, job_names
from ..translator import ProjectSpecs, SeeknalTranslator
from .checks import checks_tick
from .common import MAX_PARTITIONS_PER_TICK, dump_cursor, latest_materialization_times, load_cursor
from .late_data import DEFAULT_WINDOW, LATE_DATA_SENSOR, late_data_tick
from .reconcile import reconcile_tick, wipe_restated
from .restatements import restatement_run_request, restatement_tick


def build_sensors(
    project: Project | ProjectSpecs | str | os.PathLike[str],
    *,
    translator: SeeknalTranslator | None = None,
    minimum_interval_seconds: int = 30,
    max_partitions_per_tick: int = MAX_PARTITIONS_PER_TICK,
    include_checks: bool = True,
    jobs: Sequence[dg.UnresolvedAssetJobDefinition] | None = None,
    restatements_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
    reconcile_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    late_data_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    late_data_interval_seconds: int = 3600,
    late_data_window_seconds: int = DEFAULT_WINDOW,
) -> list[dg.SensorDefinition]:
    """The reconciliation, restatement and (with ``include_checks``) checks sensors.

    The restatement sensor targets the partitioned jobs (``schedules.build_jobs``; pass
    the same ``jobs`` the schedules use), one per grid, as a sensor cannot target assets
    of different grids.
    """
    specs = as_specs(project, translator)
    project, keys = specs.project, specs.keys
    node_jobs = job_names(specs)
    if not node_jobs:
        return []
    jobs = list(jobs) if jobs is not None else build_jobs(specs)

    def sensor(name: str, default_status: dg.DefaultSensorStatus, description: str, **options: Any):
        """``dg.sensor`` with the interval every seeknal sensor shares."""
        return dg.sensor(name=name, minimum_interval_seconds=minimum_interval_seconds,
                         default_status=default_status, description=description, **options)

    def tick(tick_function, context: dg.SensorEvaluationContext, **options: Any):
        """One tick as the daemon runs it: on a freshly opened store, from the sensor's cursor."""
        with state_store(project) as store:
            return tick_function(project, store, context.instance, load_cursor(context.cursor),
                                 keys=keys, **options)

    def result(context: dg.SensorEvaluationContext, cursor, done: list[str], idle: str,
               **events: Any) -> dg.SensorResult:
        """The tick's result says what it did (Dagster shows it as the tick's reason)."""
        for line in done:
            context.log.info(line)
        summary = "; ".join(done) if done else idle
        if events.get("run_requests"):
            return dg.SensorResult(cursor=dump_cursor(cursor), **events)
        return dg.SensorResult(cursor=dump_cursor(cursor), skip_reason=summary[:1000], **events)

    @sensor(RECONCILE_SENSOR, reconcile_status,
            "Reports intervals completed outside Dagster (seeknal CLI, manual completions) as "
            "materialisations of their partitions, and shows restated partitions as not "
            "materialised until recomputed.")
    def reconcile(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        r = tick(reconcile_tick, context, limit=max_partitions_per_tick)
        done = list(r.messages)
        if r.events:
            done.append(f"reported {len(r.events)} partition(s) completed outside Dagster"
                        + ("" if r.done else "; more next tick"))
        return result(context, r.cursor, done, "no intervals completed outside Dagster",
                      asset_events=r.events)

    @sensor(RESTATEMENT_SENSOR, restatements_status,
            "Turns pending seeknal restatements into runs of the restated partitions "
            "and resolves them once re-materialised.", jobs=jobs)
    def restatements(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        r = tick(restatement_tick, context, jobs=node_jobs)
        return result(context, r.cursor, r.messages, "no restatement to request", run_requests=r.run_requests)

    @dg.sensor(name=LATE_DATA_SENSOR, minimum_interval_seconds=late_data_interval_seconds,
               default_status=late_data_status,
               description="Verifies recent intervals' input digests (each node's `verify:` window, "
               "default 7 days) and restates those whose source rows changed since they ran.")
    def late_data(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        r = tick(late_data_tick, context, window=late_data_window_seconds)
        return result(context, r.cursor, r.messages, r.verification.summary())

    sensors = [reconcile, restatements, late_data]
    if include_checks:
        @sensor(CHECKS_SENSOR, reconcile_status,
                "Evaluates the seeknal_in_sync asset checks whenever state or "
                "materialisations change.")
        def checks(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
            evaluations, cursor = tick(checks_tick, context)
            if not evaluations:
                return dg.SkipReason("nothing changed")
            return dg.SensorResult(asset_events=evaluations, cursor=dump_cursor(cursor),
                                   skip_reason=f"evaluated {len(evaluations)} seeknal_in_sync check(s)")

        sensors.append(checks)
    return sensors


__all__ = [
    "CHECKS_SENSOR", "LATE_DATA_SENSOR", "MAX_PARTITIONS_PER_TICK", "RECONCILE_SENSOR", "RESTATEMENT_SENSOR",
    "build_sensors", "checks_tick", "late_data_tick", "latest_materialization_times", "reconcile_tick",
    "restatement_run_request", "restatement_tick", "wipe_restated",
]
