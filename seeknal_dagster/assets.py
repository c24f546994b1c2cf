"""One Dagster asset per seeknal transform, computed through the core runner.

A partitioned asset runs exactly the intervals of ``context.partition_time_window`` (one
key or a range) and records them in the project's state store with origin ``dagster``
and the run id, so the CLI and Dagster share one truth.  Sources are external assets.

Writes go through ``dagster_duckdb.DuckDBResource`` and are serialised by the
``seeknal_duckdb`` concurrency pool: DuckDB allows one writing process per file.
"""

import datetime as dt
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from seeknal_core import runner
from seeknal_core.errors import SeeknalError
from seeknal_core.project import Project, TransformNode, load_project
from seeknal_core.state import StateError, StateStore, open_store
from seeknal_core.timeutil import from_epoch, to_epoch

from .partitions import keys_for_intervals, partitions_def_for
from .translator import SeeknalTranslator, group_name_for

#: Dagster concurrency pool every writing asset joins (``dagster instance concurrency set
#: seeknal_duckdb 1``): DuckDB lets one process at a time write a database file.
POOL = "seeknal_duckdb"
#: The pool of Spark nodes (their own: they share no DuckDB file, and each run holds a
#: Spark session, so a cluster's capacity is set here, not by DuckDB's one writer).
SPARK_POOL = "seeknal_spark"
#: Resource key of the ``DuckDBResource`` the assets write through.
DUCKDB_RESOURCE_KEY = "duckdb"
#: Run tag naming the restatement a run re-computes (set by the restatement sensor).
RESTATEMENT_TAG = "seeknal/restatement"
#: What a skipped interval's reason starts with when only upstream data is missing.

Pair = tuple[int, int]


def as_project(project: Project | str | os.PathLike[str]) -> Project:
    return project if isinstance(project, Project) else load_project(project)


@contextmanager
def state_store(project: Project) -> Iterator[StateStore]:
    """The project's store, opened for one run or tick and closed after (no fds leak into
    long-lived daemon processes)."""
    store = open_store(project.root, project.state_config)
    try:
        yield store
    finally:
        store.close()


def window_pairs(node: TransformNode, start: dt.datetime, end: dt.datetime) -> list[Pair]:
    """The node's intervals in a partition window, as epoch pairs.

    Dagster's windows and seeknal's grid are the same ticks (tests compare them across
    DST), so a window edge that is not a tick means the definitions drifted apart.
    """
    schedule = node.schedule
    assert schedule is not None
    lo, hi = to_epoch(start), to_epoch(end)
    if not (schedule.is_tick(lo) and schedule.is_tick(hi)):
        raise dg.Failure(
            f"node '{node.name}': partition window {start.isoformat()} .. {end.isoformat()} is "
            f"not on the schedule {schedule.cron!r} ({node.timezone}) — reload the code location"
        )
    ticks = schedule.ticks(lo, hi)
    return list(zip(ticks, ticks[1:]))


def plan_intervals(
    project: Project, store: StateStore, node: TransformNode, pairs: Sequence[Pair]
) -> runner.Plan:
    """A plan that runs exactly ``pairs`` of one node, completed or not: an explicit
    re-materialisation re-runs completed intervals, and failed or restated intervals
    outside the window are left to their own runs (Dagster would not know they ran)."""
    return runner.plan(project, store, nodes=[node.name], now=from_epoch(pairs[-1][1]),
                       intervals=[(from_epoch(pairs[0][0]), from_epoch(pairs[-1][1]))])


def _iso(seconds: int) -> str:
    return from_epoch(seconds).isoformat()


def _listing(items: Sequence[tuple[Pair, str]], limit: int = 20) -> str:
    lines = [f"{_iso(p[0])} .. {_iso(p[1])}: {why}" if p != (0, 0) else why for p, why in items[:limit]]
    if len(items) > limit:
        lines.append(f"... and {len(items) - limit} more")
    return "\n".join(lines)


def run_node(
    context: dg.AssetExecutionContext,
    project: Project,
    node: TransformNode,
    duckdb_resource: Any,
    *,
    upstream_retries: int = 3,
    upstream_retry_seconds: float = 60.0,
) -> dg.MaterializeResult:
    """Compute one node for the run's partitions (or fully, when unpartitioned)."""
    from seeknal_core.engines.duckdb import DuckDBEngine

    partitioned = node.is_incremental
    pairs: list[Pair] = []
    database = str(getattr(duckdb_resource, "database", "") or "")
    if database and database != ":memory:" and "://" not in database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)  # duckdb.connect does not
    try:
        with state_store(project) as store:
            if partitioned:
                window = context.partition_time_window
                pairs = window_pairs(node, window.start, window.end)
                the_plan = plan_intervals(project, store, node, pairs)
            else:
                the_plan = runner.plan(project, store, nodes=[node.name])
            for note in the_plan.nodes[0].notes:
                context.log.warning(f"{node.name}: {note}")
            if runner.needs_database(project, node):
                with duckdb_resource.get_connection() as con:
                    result = runner.execute(
                        the_plan, project, store, engine=DuckDBEngine(project, connection=con),
                        origin="dagster", run_id=context.run.run_id,
                    )
            else:  # parquet files only: no shared database, so partitions run in parallel
                result = runner.execute(the_plan, project, store, origin="dagster",
                                        run_id=context.run.run_id)
    except (SeeknalError, StateError) as exc:
        raise dg.Failure(description=f"seeknal could not run '{node.name}': {exc}") from None
    outcome = result.nodes[0]

    if outcome.failures or outcome.skipped:
        waiting = not outcome.failures and all(
            r.startswith(runner.WAITING_FOR_UPSTREAM) for _, r in outcome.skipped)
        if waiting and context.retry_number < upstream_retries:
            # another schedule (e.g. the hourly one at midnight) is still producing the
            # upstream intervals: try again shortly instead of failing the partition
            context.log.info(f"{len(outcome.skipped)} interval(s) wait for upstream data; retrying")
            raise dg.RetryRequested(max_retries=upstream_retries, seconds_to_wait=upstream_retry_seconds)
        if partitioned and outcome.done and len(pairs) > 1:
            # a range run fails as a whole in Dagster; the intervals that did complete are
            # reported so the UI matches the state store
            pdef = partitions_def_for(node)
            for key in keys_for_intervals(pdef, [(from_epoch(a), from_epoch(b)) for a, b in outcome.done]):
                context.log_event(dg.AssetMaterialization(
                    asset_key=context.asset_key, partition=key,
                    metadata={"seeknal/origin": "dagster", "partial_run": True},
                ))
        first = (outcome.failures or outcome.skipped)[0]
        details: dict[str, Any] = {"completed_intervals": len(outcome.done)}
        if outcome.failures:
            details["failed_intervals"] = dg.MetadataValue.md(_md(outcome.failures))
        if outcome.skipped:
            details["skipped_intervals"] = dg.MetadataValue.md(_md(outcome.skipped))
        raise dg.Failure(
            description=f"node '{node.name}': {len(outcome.failures)} interval(s) failed, "
                        f"{len(outcome.skipped)} skipped, {len(outcome.done)} completed; first: "
                        + _listing([first]),
            metadata=details,
        )

    metadata: dict[str, Any] = {
        "rows": outcome.rows,
        "duration_seconds": dg.MetadataValue.float(round(outcome.seconds, 4)),
        "seeknal/origin": "dagster",
    }
    if partitioned:
        metadata.update({
            "intervals": len(outcome.done),
            "interval_start": _iso(pairs[0][0]),
            "interval_end": _iso(pairs[-1][1]),
            "batches": outcome.batches,
        })
        if len(pairs) == 1:
            metadata["dagster/partition_row_count"] = outcome.rows
    else:
        metadata["dagster/row_count"] = outcome.rows
    return dg.MaterializeResult(metadata=metadata)


def _md(items: Sequence[tuple[Pair, str]]) -> str:
    return "```\n" + _listing(items) + "\n```"


def asset_keys(project: Project, translator: SeeknalTranslator) -> dict[str, dg.AssetKey]:
    """Asset key of every transform and source, by node name."""
    keys = {n: translator.get_asset_key(node) for n, node in project.nodes.items()}
    keys.update({n: translator.get_source_asset_key(s) for n, s in project.sources.items()})
    return keys


def build_source_specs(
    project: Project | str | os.PathLike[str], translator: SeeknalTranslator | None = None
) -> list[dg.AssetSpec]:
    """Sources as external assets: shown in the lineage, never materialised by Dagster."""
    project = as_project(project)
    translator = translator or SeeknalTranslator()
    default_group = group_name_for(project)
    return [
        dg.AssetSpec(
            key=translator.get_source_asset_key(source),
            description=translator.get_description(source),
            metadata=translator.get_metadata(source),
            group_name=translator.get_group_name(source) or default_group,
            tags=translator.get_tags(source),
            kinds=translator.get_kinds(source),
            owners=translator.get_owners(source),
        )
        for source in project.sources.values()
    ]


def build_node_asset(
    project: Project,
    node: TransformNode,
    *,
    translator: SeeknalTranslator | None = None,
    resource_key: str = DUCKDB_RESOURCE_KEY,
    pool: str | None = POOL,
    upstream_retries: int = 3,
    upstream_retry_seconds: float = 60.0,
    keys: dict[str, dg.AssetKey] | None = None,
) -> dg.AssetsDefinition:
    """The asset of one transform: partitioned by its schedule, or a full refresh.

    ``keys``: every node's asset key (``asset_keys``), computed once by ``build_assets``."""
    translator = translator or SeeknalTranslator()
    keys = keys or asset_keys(project, translator)
    pdef = partitions_def_for(node) if node.is_incremental else None
    deps = []
    for name in node.depends_on:
        upstream = project.nodes.get(name)
        mapping = None
        if pdef is not None and upstream is not None and upstream.is_incremental:
            # a daily asset over an hourly one depends on its 24 hours
            mapping = dg.TimeWindowPartitionMapping()
        deps.append(dg.AssetDep(keys[name], partition_mapping=mapping))
    policy = None
    file_only = not runner.needs_database(project, node)
    if pdef is not None:
        # parquet nodes write one file per interval and share no database: a backfill
        # fans out into one run per partition (or per batch_size) that can run in parallel
        # (Spark nodes: one run per range, so one session start-up serves many intervals)
        policy = (dg.BackfillPolicy.multi_run(node.batch_size or 1) if file_only and node.engine != "spark"
                  else dg.BackfillPolicy.multi_run(node.batch_size) if node.batch_size
                  else dg.BackfillPolicy.single_run())

    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return run_node(
            context, project, node, getattr(context.resources, resource_key),
            upstream_retries=upstream_retries, upstream_retry_seconds=upstream_retry_seconds,
        )

    with warnings.catch_warnings():  # backfill_policy is "beta" in 1.13: not worth a warning per node
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(
            key=keys[node.name],
            deps=deps,
            partitions_def=pdef,
            backfill_policy=policy,
            pool=SPARK_POOL if node.engine == "spark" else None if file_only else pool,
            group_name=translator.get_group_name(node) or group_name_for(project),
            description=translator.get_description(node),
            metadata=translator.get_metadata(node),
            tags=translator.get_tags(node),
            kinds=translator.get_kinds(node),
            owners=translator.get_owners(node),
            code_version=translator.get_code_version(node),
            required_resource_keys={resource_key},
        )(_asset)


def build_assets(
    project: Project | str | os.PathLike[str],
    *,
    translator: SeeknalTranslator | None = None,
    resource_key: str = DUCKDB_RESOURCE_KEY,
    pool: str | None = POOL,
    upstream_retries: int = 3,
    upstream_retry_seconds: float = 60.0,
) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """Source specs plus one asset per transform, in dependency order.

    ``upstream_retries``/``upstream_retry_seconds``: how often and how long a partition
    whose upstream intervals are not complete yet (two schedules firing at the same
    tick) waits before it fails.
    """
    project = as_project(project)
    translator = translator or SeeknalTranslator()
    out: list[dg.AssetsDefinition | dg.AssetSpec] = list(build_source_specs(project, translator))
    keys = asset_keys(project, translator)
    for name in project.topological_order():
        out.append(build_node_asset(
            project, project.nodes[name], translator=translator, resource_key=resource_key, pool=pool,
            upstream_retries=upstream_retries, upstream_retry_seconds=upstream_retry_seconds, keys=keys,
        ))
    return out


__all__ = [
    "DUCKDB_RESOURCE_KEY", "POOL", "RESTATEMENT_TAG", "asset_keys", "build_assets",
    "build_node_asset", "build_source_specs", "plan_intervals", "run_node", "state_store",
    "window_pairs",
]
