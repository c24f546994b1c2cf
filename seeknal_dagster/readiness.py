"""Readiness in Dagster: each source's watermark as an observation on its external asset
(the ``seeknal_watermarks`` sensor), and the automation condition that only requests
partitions whose inputs are ready (``inputs_ready``).

The sensor asks each source once per tick through the runner's ``source_watermarks`` (the
CLI's rule and queries) and records an ``AssetObservation`` when a watermark moves, so the
UI shows it on the source and the condition reads it from the instance without opening any
engine: the automation tick stays a metadata read, and definition loads query nothing.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dagster as dg

from seeknal_core.engines import EnginePool
from seeknal_core.project import Project, TransformNode
from seeknal_core.runner.readiness import (
    Mark,
    ReadinessError,
    direct_sources,
    needs_database,
    ready_pairs,
    source_watermarks,
)
from seeknal_core.timeutil import from_epoch, to_epoch

if TYPE_CHECKING:
    from .translator import ProjectSpecs, SeeknalTranslator

WATERMARKS_SENSOR = "seeknal_watermarks"
#: observation metadata: the source's readiness instant (UTC ISO, or "none": no data yet)
WATERMARK_KEY = "seeknal/watermark"
READY_KEY = "seeknal/ready"
STRICT_KEY = "seeknal/strict"


def watermark_observations(project: Project, keys: dict[str, dg.AssetKey]) -> list[dg.AssetObservation]:
    """One observation per source whose readiness needs a query, its watermark now."""
    nodes = [n for n in project.nodes.values() if n.is_incremental]
    pool = EnginePool(project, database=needs_database(project, nodes))  # files only: no lock taken
    try:
        marks = source_watermarks(project, pool, nodes)
    finally:
        pool.close()
    return [dg.AssetObservation(asset_key=keys[name], metadata={
        WATERMARK_KEY: "none" if mark.instant is None else from_epoch(mark.instant).isoformat(),
        READY_KEY: mark.kind, STRICT_KEY: mark.strict}) for name, mark in marks.items()]


def build_watermarks_sensor(project: Project | ProjectSpecs | str | os.PathLike[str], *,
                            translator: SeeknalTranslator | None = None,
                            minimum_interval_seconds: int = 60,
                            default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING
                            ) -> dg.SensorDefinition | None:
    """``seeknal_watermarks``: each source's watermark, observed on a cadence (running by
    default; it only records observations, and only when a watermark moved)."""
    from .assets import as_specs

    specs = as_specs(project, translator)
    project, keys = specs.project, specs.keys
    nodes = [n for n in project.nodes.values() if n.is_incremental]
    if not any(direct_sources(project, n) for n in nodes):
        return None
    database = needs_database(project, nodes)

    @dg.sensor(name=WATERMARKS_SENSOR, minimum_interval_seconds=minimum_interval_seconds,
               default_status=default_status,
               description="Observes each seeknal source's watermark (its newest row, or its "
                           "ready: query) on its external asset; automation reads it.")
    def watermarks(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if database and _runs_in_flight(context.instance):
            # a table source is read through the project's DuckDB file: never take its
            # lock while a run may be opening it (one writer); the next idle tick asks
            return dg.SensorResult(skip_reason="a run is in progress: the DuckDB file is the run's",
                                   cursor=context.cursor)
        try:
            events = watermark_observations(project, keys)
        except ReadinessError as exc:  # e.g. the DuckDB file is locked by a run: next tick
            return dg.SensorResult(skip_reason=str(exc), cursor=context.cursor)
        seen = dict(_cursor(context.cursor))
        fresh = [e for e in events
                 if seen.get(e.asset_key.to_user_string()) != e.metadata[WATERMARK_KEY].value]
        for event in fresh:
            seen[event.asset_key.to_user_string()] = event.metadata[WATERMARK_KEY].value
        return dg.SensorResult(asset_events=fresh, cursor=_dump(seen))

    return watermarks


def _runs_in_flight(instance: dg.DagsterInstance) -> bool:
    statuses = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    return bool(instance.get_run_records(filters=dg.RunsFilter(statuses=statuses), limit=1))


def _cursor(text: str | None) -> dict:
    import json

    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _dump(value: dict) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def observed_mark(instance: dg.DagsterInstance, key: dg.AssetKey, source: str) -> Mark | None:
    """The source's watermark from its newest observation (None: never observed)."""
    records = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=key), limit=1).records
    if not records:
        return None
    observation = records[0].asset_observation
    meta = observation.metadata if observation is not None else {}
    if WATERMARK_KEY not in meta:
        return None
    text = meta[WATERMARK_KEY].value
    instant = None if text == "none" else to_epoch(dt.datetime.fromisoformat(text))
    strict = bool(meta[STRICT_KEY].value) if STRICT_KEY in meta else False
    return Mark(source, str(meta[READY_KEY].value), instant, strict)


class InputsReady(dg.AutomationCondition):
    """True for the partitions whose every direct source is ready (the runner's rule, over
    the watermarks ``seeknal_watermarks`` observed; a source never observed is not ready).
    Evaluated in the code location (a custom condition)."""

    def __init__(self, project: Project, node: TransformNode, sources: Sequence[tuple[str, dg.AssetKey]]):
        self._project, self._node, self._sources = project, node, tuple(sources)

    @property
    def name(self) -> str:
        return "inputs_ready"

    @property
    def description(self) -> str:
        return f"data of {', '.join(s for s, _ in self._sources)} is in"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        candidates = context.candidate_subset
        pdef = context.partitions_def
        if pdef is None or candidates.is_empty:  # unpartitioned: the runner holds back what waits
            return dg.AutomationResult(true_subset=candidates, context=context)
        pairs = {}
        for key in candidates.expensively_compute_partition_keys():
            window = pdef.time_window_for_partition_key(key)
            pairs[key] = (to_epoch(window.start), to_epoch(window.end))
        ready = set(pairs)
        instance = context.asset_graph_view.instance
        for name, asset_key in self._sources:
            source = self._project.sources[name]
            if source.readiness.kind == "python":
                good = ready_pairs(source, sorted(set(pairs.values())))
                ready = {k for k in ready if pairs[k] in good}
                continue
            mark = observed_mark(instance, asset_key, name)
            limit = None if mark is None else mark.limit(self._node)
            ready = {k for k in ready if limit is not None and pairs[k][1] <= limit}
        true_subset = context.asset_graph_view.get_subset_from_partition_keys(context.key, pdef, ready)
        return dg.AutomationResult(true_subset=true_subset, context=context)


def with_inputs_ready(condition: dg.AutomationCondition, node: TransformNode, project: Project,
                      translator: SeeknalTranslator) -> dg.AutomationCondition:
    """``condition & InputsReady`` for a node reading a source whose readiness needs a
    query or a callable; ``condition`` unchanged otherwise (a condition that stays
    serialisable, evaluated by the daemon)."""
    sources = [(s.name, translator.get_source_asset_key(s)) for s in direct_sources(project, node)]
    if not sources or not node.is_incremental:
        return condition
    return condition & InputsReady(project, node, sources)


__all__ = ["READY_KEY", "WATERMARKS_SENSOR", "WATERMARK_KEY", "InputsReady", "build_watermarks_sensor",
           "observed_mark", "with_inputs_ready", "watermark_observations"]
