"""Sensors that keep Dagster and the seeknal state store in agreement, one module each:

``seeknal_reconcile`` (reconcile.py)
    work done outside Dagster shows as materialised partitions; restated partitions show
    as not materialised until recomputed.  Runs by default (it only records events).
``seeknal_restatements`` (restatements.py)
    restated partitions show Failed (one failing run per asset and range, with the
    reason) until recomputed; under ``automation: schedules`` it also requests the
    recompute.  Runs by default.
``seeknal_automation`` (``build_automation_sensor``)
    Dagster's automation-condition sensor over seeknal's assets, running by default, so
    each finished interval is requested without a click.
``seeknal_checks`` (checks.py)
    the ``seeknal_in_sync`` check evaluations, runless.  Runs by default.
``seeknal_late_data`` (late_data.py)
    recent intervals whose source rows changed since they ran are restated (late data),
    every ``late_data_interval_seconds``.  Runs by default (it only records restatements).

The tick logic lives in plain functions (``reconcile_tick`` ...) that take a store and an
instance (and the translator, whose ``get_partitions_def`` gives each node's partitions),
so tests drive them directly; each tick returns what it did as its result.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from seeknal_core.project import Project

from ..assets import as_specs, state_store
from ..checks import CHECKS_SENSOR, RECONCILE_SENSOR, RESTATEMENT_SENSOR
from ..translator import ProjectSpecs, SeeknalTranslator
from .checks import checks_tick
from .common import MAX_PARTITIONS_PER_TICK, dump_cursor, latest_materialization_times, load_cursor
from .late_data import DEFAULT_WINDOW, LATE_DATA_SENSOR, late_data_tick
from .reconcile import reconcile_tick, wipe_restated
from .restatements import restatement_run_request, restatement_tick

AUTOMATION_SENSOR = "seeknal_automation"
#: how a pending restatement shows in Dagster: its partitions Failed, or only an observation
RESTATEMENT_DISPLAYS = ("failed", "observation")


def build_sensors(
    project: Project | ProjectSpecs | str | os.PathLike[str],
    *,
    translator: SeeknalTranslator | None = None,
    minimum_interval_seconds: int = 30,
    max_partitions_per_tick: int = MAX_PARTITIONS_PER_TICK,
    include_checks: bool = True,
    restatements_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    reconcile_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    late_data_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    late_data_interval_seconds: int = 3600,
    late_data_window_seconds: int = DEFAULT_WINDOW,
    restatement_display: str = "failed",
    recompute_restatements: bool = False,
) -> list[dg.SensorDefinition]:
    """The reconciliation, restatement and (with ``include_checks``) checks sensors.

    The restatement sensor targets the partitioned assets: its runs go through Dagster's
    implicit asset job (one job for every grid, no job of seeknal's own to build and
    snapshot at load).  ``restatement_display``: ``"failed"`` (restated partitions show
    Failed until recomputed) or ``"observation"`` (no failing runs);
    ``recompute_restatements``: the sensor also recomputes them (``automation:
    schedules``; under automation conditions the assets' condition does).
    """
    if restatement_display not in RESTATEMENT_DISPLAYS:
        raise ValueError(f"restatement_display={restatement_display!r}: use "
                         + " or ".join(repr(d) for d in RESTATEMENT_DISPLAYS))
    specs = as_specs(project, translator)
    project, keys = specs.project, specs.keys
    partitioned = [spec.key for spec in specs.specs.values()
                   if isinstance(spec.partitions_def, dg.TimeWindowPartitionsDefinition)]
    if not partitioned:
        return []

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
        """What the tick did goes to its log; only a tick that did nothing carries a skip
        reason (Dagster 1.13 files every tick without a run under "Skipped", so a reason
        would read "skipped: reported 2412 partition(s)")."""
        for line in done:
            context.log.info(line)
        if done or any(events.values()):
            return dg.SensorResult(cursor=dump_cursor(cursor), **events)
        return dg.SensorResult(cursor=dump_cursor(cursor), skip_reason=idle, **events)

    @sensor(RECONCILE_SENSOR, reconcile_status,
            "Reports intervals completed outside Dagster (seeknal CLI, manual completions) as "
            "materialisations of their partitions, and shows restated partitions as not "
            "materialised until recomputed.")
    def reconcile(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        r = tick(reconcile_tick, context, limit=max_partitions_per_tick, translator=specs.translator)
        done = list(r.messages)
        if r.events:
            done.append(f"reported {len(r.events)} partition(s) completed outside Dagster"
                        + ("" if r.done else "; more next tick"))
        return result(context, r.cursor, done, "no intervals completed outside Dagster",
                      asset_events=r.events)

    @sensor(RESTATEMENT_SENSOR, restatements_status,
            "Shows restated partitions Failed, with the reason, until recomputed (one failing "
            "run per asset and range, tagged seeknal/restatement)"
            + ("; requests their recompute and resolves them once re-materialised."
               if recompute_restatements else "; the automation condition recomputes them."),
            asset_selection=dg.AssetSelection.assets(*partitioned))
    def restatements(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        r = tick(restatement_tick, context, display=restatement_display,
                 recompute=recompute_restatements, translator=specs.translator)
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
            evaluations, cursor = tick(checks_tick, context, translator=specs.translator)
            if not evaluations:
                return dg.SkipReason("nothing changed")
            context.log.info(f"evaluated {len(evaluations)} seeknal_in_sync check(s)")
            return dg.SensorResult(asset_events=evaluations, cursor=dump_cursor(cursor))

        sensors.append(checks)
    return sensors


def build_automation_sensor(
    project: Project | ProjectSpecs | str | os.PathLike[str],
    *,
    translator: SeeknalTranslator | None = None,
    minimum_interval_seconds: int = 30,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    use_user_code_server: bool = False,
) -> dg.AutomationConditionSensorDefinition | None:
    """seeknal's own automation-condition sensor over the assets that carry a condition,
    running by default (Dagster's default one is stopped out of the box, so nothing
    would ever be requested).  Its requests of several partitions become backfills that
    follow each asset's backfill policy (a range in one run).  ``use_user_code_server``:
    evaluate in the code location (needed when a condition is a custom Python class the
    daemon cannot deserialise)."""
    specs = as_specs(project, translator)
    keys = [spec.key for spec in specs.specs.values() if spec.automation_condition is not None]
    if not keys:
        return None
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR, target=dg.AssetSelection.assets(*keys), default_status=default_status,
        minimum_interval_seconds=minimum_interval_seconds,
        **({"use_user_code_server": True} if use_user_code_server else {}),  # beta: warns when passed
        description="Requests each finished interval of seeknal's incremental assets once its upstream "
                    "intervals are complete, and recomputes restated (Failed) partitions.")


__all__ = [
    "AUTOMATION_SENSOR", "CHECKS_SENSOR", "LATE_DATA_SENSOR", "MAX_PARTITIONS_PER_TICK", "RECONCILE_SENSOR",
    "RESTATEMENT_DISPLAYS", "RESTATEMENT_SENSOR", "build_automation_sensor", "build_sensors", "checks_tick",
    "late_data_tick", "latest_materialization_times", "reconcile_tick", "restatement_run_request",
    "restatement_tick", "wipe_restated",
]
