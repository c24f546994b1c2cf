"""seeknal transforms as Dagster assets, computed through the core runner.

The specs (``translator.project_specs``) are grouped by what one Dagster step can share
(partitions definition, backfill policy, pool) into a few ``multi_asset``s with
``can_subset=True``, as dagster-dbt does: one decorator call per group instead of one per
node keeps loading a 2,000-node project fast, and a run selects exactly the assets it
needs.  A partitioned asset runs exactly the intervals of ``context.partition_time_window``
(one key or a range) and records them in the project's state store with origin
``dagster`` and the run id, so the CLI and Dagster share one truth.  Sources are
external assets.

Writes go through the typed ``SeeknalResource`` (resource.py; its nested
``DuckDBResource``) and are serialised by the ``seeknal_duckdb`` concurrency pool: DuckDB
allows one writing process per file.  The step body is ``SeeknalStep.run``; a component
(or ``build_assets(execute=...)``) may wrap it, as dagster-dbt's ``execute`` wraps ``dbt build``.
"""

import datetime as dt
import os
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from seeknal_core import grid, runner
from seeknal_core.engines import engine_kind, uses_database
from seeknal_core.errors import SeeknalError
from seeknal_core.intervals import Pair
from seeknal_core.project import Project, TransformNode, load_project
from seeknal_core.state import StateError, StateStore, open_store
from seeknal_core.timeutil import from_epoch, to_epoch

from .audits import audit_check_specs, audit_events
from .checks import in_sync_check_spec, in_sync_results
from .partitions import partitioned
from .resource import SeeknalResource
from .translator import RESTATEMENT_TAG, ProjectSpecs, SeeknalTranslator, project_specs, slug

#: Dagster concurrency pool every writing asset joins (``dagster instance concurrency set
#: seeknal_duckdb 1``): DuckDB lets one process at a time write a database file.
POOL = "seeknal_duckdb"
#: The pool of Spark nodes (the spark engine's ``EngineKind.pool``: they share no DuckDB
#: file, and each run holds a Spark session, so a cluster's capacity is set here).
SPARK_POOL = "seeknal_spark"
#: the dagster-pyspark resource Spark assets take their session from (the spark engine's
#: ``EngineKind.session_resource``; see definitions.py)
SPARK_RESOURCE_KEY = "pyspark"
#: Resource key of the ``DuckDBResource`` the assets write through.
DUCKDB_RESOURCE_KEY = "duckdb"
#: the event tag Dagster reads a materialisation's code version from (for staleness); set
#: on the materialisations the step logs itself, as Dagster sets it on its own
CODE_VERSION_TAG = "dagster/code_version"
REASON_TAG = "seeknal/reason"
ACTOR_TAG = "seeknal/actor"



def as_project(project: Project | str | os.PathLike[str]) -> Project:
    return project if isinstance(project, Project) else load_project(project)


def as_specs(project: Project | ProjectSpecs | str | os.PathLike[str],
             translator: SeeknalTranslator | None = None) -> ProjectSpecs:
    """The project's specs, built once: builders given ``ProjectSpecs`` reuse them."""
    if isinstance(project, ProjectSpecs):
        return project
    return project_specs(as_project(project), translator)


@contextmanager
def state_store(project: Project) -> Iterator[StateStore]:  # sensors and checks: no resource there
    """The project's store, opened for one run or tick and closed after (no fds leak into
    long-lived daemon processes)."""
    store = open_store(project.root, project.state_config)
    try:
        yield store
    finally:
        store.close()


def key_pairs(node: TransformNode, pdef: dg.TimeWindowPartitionsDefinition, keys: Sequence[str]
              ) -> list[tuple[Pair, str]]:
    """The run's partition keys (``context.partition_keys``: one key or a range), each with
    its interval as an epoch pair, read through Dagster's own key parsing."""
    out = []
    for key in keys:
        window = pdef.time_window_for_partition_key(key)
        [pair] = window_pairs(node, window.start, window.end)
        out.append((pair, key))
    return out


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
    return list(grid.expand(schedule, lo, hi))


def plan_intervals(node: TransformNode, pairs: Sequence[Pair]) -> dict[str, Any]:
    """The runner request that runs exactly ``pairs`` of one node, completed or not: an
    explicit re-materialisation re-runs completed intervals, and failed or restated
    intervals outside the window are left to their own runs (Dagster would not know they
    ran).  Without ``pairs`` (an unpartitioned asset): what is due, as ``seeknal run NODE``.
    The clock stays the real one: the policies (a change plan's reach) read it."""
    if not pairs:
        return {"nodes": [node.name]}
    return {"nodes": [node.name], "intervals": [(from_epoch(pairs[0][0]), from_epoch(pairs[-1][1]))]}


def engine_options(project: Project, node: TransformNode, seeknal: SeeknalResource,
                   session_resources: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """How the runner opens the node's engines from Dagster's resources (``open_engine``
    options, entered only when a node needs that engine): the ``SeeknalResource``'s DuckDB
    connection for a node that uses the project's DuckDB file, a session resource's
    session for an engine that computes in one (``EngineKind.session_resource``)."""
    options: dict[str, Any] = {}
    kind = engine_kind(node.engine)
    if uses_database(project, node):
        @contextmanager
        def connection() -> Iterator[dict]:
            with seeknal.connection() as con:
                yield {"connection": con}

        options[node.engine] = connection
    resource = (session_resources or {}).get(kind.session_resource or "")
    if resource is not None:
        options[node.engine] = lambda: nullcontext({"session": resource.spark_session})
    return options


def _iso(seconds: int) -> str:
    return from_epoch(seconds).isoformat()


def _listing(items: Sequence[tuple[Pair, str]], limit: int = 20) -> str:
    lines = [f"{_iso(p[0])} .. {_iso(p[1])}: {why}" if p != (0, 0) else why for p, why in items[:limit]]
    if len(items) > limit:
        lines.append(f"... and {len(items) - limit} more")
    return "\n".join(lines)


def _md(items: Sequence[tuple[Pair, str]]) -> str:
    return "```\n" + _listing(items) + "\n```"


def _execute(context: dg.AssetExecutionContext, project: Project, node: TransformNode,
             seeknal: SeeknalResource, pairs: list[Pair],
             session_resources: Mapping[str, Any] | None = None) -> runner.NodeResult:
    """Run one node in the run's window (or what is due, when unpartitioned) through the
    runner's one door, so the CLI's rules hold: ``on_change`` (``fail`` is this step's
    failure with the CLI's line, nothing written), start inference, lookback.  Engines
    open from the run's resources, and only once something is due."""
    try:
        with seeknal.state_store(project) as store:
            options = engine_options(project, node, seeknal, session_resources)
            result = runner.run(project, store, origin="dagster", run_id=context.run.run_id,
                                engine_options=options, **plan_intervals(node, pairs))
    except runner.DefinitionsChanged as exc:
        raise dg.Failure(description=str(exc)) from None
    except (SeeknalError, StateError) as exc:
        raise dg.Failure(description=f"seeknal could not run '{node.name}': {exc}") from None
    for note in result.notes:
        context.log.info(note)
    node_plan = result.plan.nodes[0] if result.plan else None
    for note in node_plan.notes if node_plan else ():
        context.log.warning(f"{node.name}: {note}")
    for waiting in node_plan.waiting if node_plan else ():  # not run, not failed: asked again next time
        context.log.info(f"{waiting.line(node.name, node.timezone)}: not run until its data is in")
    return result.nodes[0]


def run_node(
    context: dg.AssetExecutionContext,
    specs: ProjectSpecs,
    node: TransformNode,
    seeknal: SeeknalResource,
    *,
    spark_resource: Any = None,
    upstream_retries: int = 3,
    upstream_retry_seconds: float = 60.0,
) -> Generator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output,
               None, bool]:
    """Compute one node for the run's partitions and describe each partition on its own:
    its interval's start, end and rows; the run's totals are labelled ``run/...``.  The
    audits' verdicts follow, one per audit per partition (audits.py); a partition that
    failed, by its query or a blocking audit, is not materialized and fails the run.  The
    partitions are the run's own (``context.partition_keys``), never recomputed.  Returns
    whether some intervals wait for their sources' data (their partitions are skipped,
    not failed)."""
    project = specs.project
    spec = specs.specs[node.name]
    pdef = spec.partitions_def
    keyed: list[tuple[Pair, str]] = key_pairs(node, pdef, context.partition_keys) if pdef is not None else []
    pairs = [pair for pair, _ in keyed]
    outcome = _execute(context, project, node, seeknal, pairs,
                       {SPARK_RESOURCE_KEY: spark_resource} if spark_resource is not None else None)

    if outcome.failures or outcome.skipped:
        waiting = not outcome.failures and all(
            r.startswith(runner.WAITING_FOR_UPSTREAM) for _, r in outcome.skipped)
        if waiting and context.retry_number < upstream_retries:
            # another schedule (e.g. the hourly one at midnight) is still producing the
            # upstream intervals: try again shortly instead of failing the partition
            context.log.info(f"{len(outcome.skipped)} interval(s) wait for upstream data; retrying")
            raise dg.RetryRequested(max_retries=upstream_retries, seconds_to_wait=upstream_retry_seconds)
        if pdef is not None and outcome.done and len(pairs) > 1:
            # a range run fails as a whole in Dagster; the intervals that did complete are
            # reported so the UI matches the state store (the failed ones show Failed)
            rows = _interval_rows(outcome)
            for pair, key in subset(keyed, outcome.done):
                yield dg.AssetMaterialization(
                    asset_key=spec.key, partition=key,
                    metadata={**_partition_metadata(pair, rows.get(pair)), "seeknal/origin": "dagster",
                              "partial_run": True},
                    tags={CODE_VERSION_TAG: spec.code_version} if spec.code_version else None,
                )
        if node.audits:
            yield from audit_events(context, node, spec.key, outcome, keyed if pdef else None)
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

    if pdef is not None and len(outcome.done) < len(pairs):
        # intervals whose inputs are not ready waited (logged above): nothing materialised
        # for them, the step succeeds; the ready ones are reported one by one
        rows = _interval_rows(outcome)
        done = subset(keyed, outcome.done)
        for pair, key in done:
            yield dg.AssetMaterialization(
                asset_key=spec.key, partition=key,
                metadata={**_partition_metadata(pair, rows.get(pair)), "seeknal/origin": "dagster"})
        if node.audits:
            yield from audit_events(context, node, spec.key, outcome, done)
        return True
    metadata: dict[str, Any] = {"seeknal/origin": "dagster"}
    if outcome.columns:
        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(name, type) for name, type in outcome.columns])
    if pdef is None:
        metadata.update({"rows": outcome.rows, "dagster/row_count": outcome.rows,
                         "duration_seconds": dg.MetadataValue.float(round(outcome.seconds, 4))})
        yield dg.MaterializeResult(asset_key=spec.key, metadata=metadata)
        if node.audits:
            yield from audit_events(context, node, spec.key, outcome, None)
        return False
    metadata.update({
        "run/rows": outcome.rows,
        "run/intervals": len(outcome.done),
        "run/batches": outcome.batches,
        "run/duration_seconds": dg.MetadataValue.float(round(outcome.seconds, 4)),
        "run/interval_start": _iso(pairs[0][0]),
        "run/interval_end": _iso(pairs[-1][1]),
    })
    rows = _interval_rows(outcome)
    for pair, key in keyed:
        context.add_asset_metadata(_partition_metadata(pair, rows.get(pair)), asset_key=spec.key,
                                   partition_key=key)
    yield dg.MaterializeResult(asset_key=spec.key, metadata=metadata)
    if node.audits:  # after the materializations: each verdict names its partition's
        yield from audit_events(context, node, spec.key, outcome, keyed)
    return False


def restated_failure(tags: Mapping[str, str]) -> dg.Failure:
    """The planned partitions of a restatement's display run fail with its reason, before
    anything is computed: Dagster shows them Failed until their next materialisation."""
    reason = tags.get(REASON_TAG) or "no reason given"
    return dg.Failure(
        description=f"restated: {reason} (by {tags.get(ACTOR_TAG) or 'unknown'}; restatement "
                    f"{tags[RESTATEMENT_TAG]}); shown Failed until recomputed",
        metadata={"seeknal/restatement_id": tags[RESTATEMENT_TAG], "seeknal/reason": reason},
        allow_retries=False)


def subset(keyed: Sequence[tuple[Pair, str]], pairs: Sequence[Pair]) -> list[tuple[Pair, str]]:
    """The run's (interval, partition key) pairs for some of its intervals, in run order."""
    wanted = set(pairs)
    return [(pair, key) for pair, key in keyed if pair in wanted]


def _interval_rows(outcome: runner.NodeResult) -> dict[Pair, int]:
    """Rows written per completed interval (the runner counts them per interval)."""
    return {tuple(pair): int(rows) for pair, rows in outcome.interval_rows}


def _partition_metadata(pair: Pair, rows: int | None) -> dict[str, Any]:
    """One partition's own figures: its interval and the rows written for it."""
    meta: dict[str, Any] = {"interval_start": _iso(pair[0]), "interval_end": _iso(pair[1])}
    if rows is not None:
        meta.update({"rows": rows, "dagster/partition_row_count": rows})
    return meta


def asset_keys(project: Project | ProjectSpecs, translator: SeeknalTranslator | None = None
               ) -> dict[str, dg.AssetKey]:
    """Asset key of every transform and source, by node name."""
    if isinstance(project, ProjectSpecs):
        return project.keys
    translator = translator or SeeknalTranslator()
    keys = {n: translator.get_asset_key(node) for n, node in project.nodes.items()}
    keys.update({n: translator.get_source_asset_key(s) for n, s in project.sources.items()})
    return keys


def build_source_specs(
    project: Project | ProjectSpecs | str | os.PathLike[str], translator: SeeknalTranslator | None = None
) -> list[dg.AssetSpec]:
    """Sources as external assets: shown in the lineage, never materialised by Dagster."""
    return list(as_specs(project, translator).sources.values())


def _backfill_policy(node: TransformNode, file_only: bool) -> dg.BackfillPolicy | None:
    """Parquet nodes write one file per interval and share no database: a backfill fans
    out into one run per partition (or per batch_size) that can run in parallel."""
    if not partitioned(node):
        return None
    if file_only and not engine_kind(node.engine).run_per_range:  # Spark: one session start-up per range
        return dg.BackfillPolicy.multi_run(node.batch_size or 1)
    return dg.BackfillPolicy.multi_run(node.batch_size) if node.batch_size else dg.BackfillPolicy.single_run()


#: ``execute(context, seeknal=..., step=...)``: what a step runs; the default is ``step.run``.
Execute = Callable[..., Iterator[Any]]


@dataclass(frozen=True)
class SeeknalStep:
    """What one ``multi_asset`` step computes: the selected nodes of its group, upstream
    first, through the runner; a failed node stops only the nodes downstream of it."""

    specs: ProjectSpecs
    names: tuple[str, ...]
    pyspark: Any = None
    retry: Mapping[str, Any] = field(default_factory=dict)

    def selected(self, context: dg.AssetExecutionContext) -> list[str]:
        """The step's selected nodes, upstream first."""
        by_key = {self.specs.specs[n].key: n for n in self.names}
        return self.specs.project.topological_order([by_key[k] for k in context.selected_asset_keys])

    def run(self, context: dg.AssetExecutionContext, seeknal: SeeknalResource) -> Iterator[Any]:
        """The selected nodes, then the selected ``seeknal_in_sync`` checks of the step's
        nodes (after the nodes ran, also when some failed: their verdict is the truth the
        run leaves behind; when only checks are selected, nothing is materialised)."""
        project = self.specs.project
        selected = self.selected(context)
        failed: list[tuple[str, dg.Failure]] = []
        if RESTATEMENT_TAG in context.run.tags:  # a restatement's display run: fail, compute nothing
            failed.append(("", restated_failure(context.run.tags)))
            selected = []
        blocked: set[str] = set()
        for name in selected:
            if name in blocked:
                context.log.warning(f"{name}: not run, an upstream node failed or waits for data "
                                    "in this step")
                continue
            try:
                waited = yield from run_node(context, self.specs, project.nodes[name], seeknal,
                                             spark_resource=self.pyspark, **self.retry)
                if waited:  # waiting for its data: skipped, and so are its downstream
                    blocked.update(project.downstream(name))
            except dg.Failure as exc:
                failed.append((name, exc))
                blocked.update(project.downstream(name))
        if context.selected_asset_check_keys:
            with seeknal.state_store(project) as store:
                yield from in_sync_results(context, store, self.specs, self.names)
        if len(failed) == 1 and len(selected) <= 1:
            raise failed[0][1]
        if failed:
            raise dg.Failure(
                description="; ".join(exc.description or name for name, exc in failed),
                metadata=dict(failed[0][1].metadata or {}))


def run_step(context: dg.AssetExecutionContext, *, seeknal: SeeknalResource, step: SeeknalStep
             ) -> Iterator[Any]:
    """The default ``execute``: the step's nodes through the runner."""
    yield from step.run(context, seeknal)


def build_assets(
    project: Project | ProjectSpecs | str | os.PathLike[str],
    *,
    translator: SeeknalTranslator | None = None,
    pool: str | None = POOL,
    upstream_retries: int = 3,
    upstream_retry_seconds: float = 60.0,
    spark_resource_key: str | None = None,
    execute: Execute | None = None,
    in_sync_checks: bool = True,
) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """Source specs plus the transforms, as one subsettable ``multi_asset`` per group of
    nodes sharing a partitions definition, backfill policy and pool.  Each step takes the
    ``seeknal`` resource (a ``SeeknalResource``) and calls ``execute(context, seeknal=,
    step=)`` (default ``run_step``: ``step.run(context, seeknal)``).

    ``upstream_retries``/``upstream_retry_seconds``: how often and how long a partition
    whose upstream intervals are not complete yet (two schedules firing at the same
    tick) waits before it fails.  ``spark_resource_key`` (``"pyspark"``): Spark nodes take
    their session from that resource (a dagster-pyspark ``PySparkResource``) instead of
    starting one.  ``in_sync_checks``: each incremental node's ``seeknal_in_sync`` check
    (checks.py) is declared on its ``multi_asset`` and reported by its step.
    """
    if spark_resource_key not in (None, SPARK_RESOURCE_KEY):
        raise ValueError(f"spark_resource_key={spark_resource_key!r}: use {SPARK_RESOURCE_KEY!r} or None")
    specs = as_specs(project, translator)
    project = specs.project
    groups: dict[tuple, list[str]] = {}
    for name, spec in specs.specs.items():
        node = project.nodes[name]
        kind = engine_kind(node.engine)
        file_only = not uses_database(project, node)
        policy = _backfill_policy(node, file_only)
        node_pool = kind.pool or (None if file_only else pool)
        session = kind.session_resource == SPARK_RESOURCE_KEY
        groups.setdefault((spec.partitions_def, policy, node_pool, session), []).append(name)
    out: list[dg.AssetsDefinition | dg.AssetSpec] = list(specs.sources.values())
    taken: set[str] = set()
    retry = {"upstream_retries": upstream_retries, "upstream_retry_seconds": upstream_retry_seconds}
    for (pdef, policy, group_pool, session), names in groups.items():
        out.append(_group_asset(specs, names, pdef, policy, group_pool, taken,
                                session and spark_resource_key is not None, execute or run_step, retry,
                                in_sync_checks))
    return out


def _group_name(names: Sequence[str], taken: set[str]) -> str:
    base = "seeknal_" + slug(names[0]) + (f"_and_{len(names) - 1}_more" if len(names) > 1 else "")
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _group_asset(specs: ProjectSpecs, names: list[str], pdef, policy, pool: str | None, taken: set[str],
                 spark: bool, execute: Execute, retry: Mapping[str, Any], in_sync: bool
                 ) -> dg.AssetsDefinition:
    """One ``multi_asset`` over ``names``: its resources are typed parameters (``seeknal``,
    and ``pyspark`` for Spark nodes when dagster-pyspark provides the session)."""
    if spark:
        def compute(context: dg.AssetExecutionContext, seeknal: SeeknalResource,
                    pyspark: dg.ResourceParam[Any]) -> Iterator[Any]:
            step = SeeknalStep(specs, tuple(names), pyspark, retry)
            yield from execute(context, seeknal=seeknal, step=step)
    else:
        def compute(context: dg.AssetExecutionContext, seeknal: SeeknalResource) -> Iterator[Any]:
            yield from execute(context, seeknal=seeknal, step=SeeknalStep(specs, tuple(names), None, retry))

    check_specs = [c for n in names
                   for c in audit_check_specs(specs.project.nodes[n], specs.specs[n].key, pdef)]
    if in_sync and pdef is not None:  # incremental nodes: intervals to agree about
        check_specs += [in_sync_check_spec(specs.specs[n].key) for n in names]
    # backfill_policy is "beta" and partitioned checks a "preview" in 1.13: not worth a warning each
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.multi_asset(
            name=_group_name(names, taken),
            specs=[specs.specs[n].replace_attributes(skippable=True) for n in names],  # waiting: no output
            check_specs=check_specs or None,
            partitions_def=pdef,
            backfill_policy=policy,
            pool=pool,
            can_subset=True,
        )(compute)


__all__ = [
    "ACTOR_TAG", "CODE_VERSION_TAG", "DUCKDB_RESOURCE_KEY", "POOL", "REASON_TAG", "RESTATEMENT_TAG",
    "SPARK_POOL", "SPARK_RESOURCE_KEY", "SeeknalStep", "as_specs", "asset_keys", "build_assets",
    "build_source_specs", "engine_options", "key_pairs", "plan_intervals", "restated_failure", "run_node",
    "run_step", "state_store", "subset", "window_pairs",
]
