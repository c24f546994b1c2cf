"""``build_definitions``: a seeknal project as one ``dagster.Definitions``.

Loading is cheap and side-effect free: the project's YAML is read and the partitions
are validated, but no database connection is opened and no state is read or written
until a run, sensor tick or check executes.  Step processes re-import the code location
and so rebuild the same definitions from the same files.
"""

from __future__ import annotations

import copy
import functools
import gc
import os
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from seeknal_core.engines import engine_kind
from seeknal_core.project import Project

from .apply import build_apply_job
from .assets import DUCKDB_RESOURCE_KEY, POOL, SPARK_RESOURCE_KEY, Execute, as_project, build_assets
from .readiness import build_watermarks_sensor
from .resource import SEEKNAL_RESOURCE_KEY, SeeknalResource
from .schedules import build_jobs, build_schedules
from .sensors import MAX_PARTITIONS_PER_TICK, build_automation_sensor, build_sensors
from .translator import SeeknalTranslator, project_specs

#: How incremental assets run by default: Dagster's declarative automation (each asset
#: requests its interval once it has closed and its upstream intervals are complete).
AUTOMATION = "conditions"


def collection_paused(build):
    """``build`` with CPython's automatic garbage collection paused while it runs.  A
    2,000-node load creates about a million objects that live on (specs, conditions,
    definitions), and each full collection during the build scans them all again: eight
    of them cost ~0.6 s of a 2,000-node cold load and ~0.3 s of a warm one.  Any garbage
    cycle the build leaves waits for the first collection after it (measured: a handful)."""

    @functools.wraps(build)
    def paused(*args, **kwargs):
        if not gc.isenabled():
            return build(*args, **kwargs)
        gc.disable()
        try:
            return build(*args, **kwargs)
        finally:
            gc.enable()

    return paused


@collection_paused
def build_definitions(
    project_path: str | os.PathLike[str] | Project,
    *,
    translator: SeeknalTranslator | None = None,
    database_path: str | os.PathLike[str] | None = None,
    resource_key: str = DUCKDB_RESOURCE_KEY,
    pool: str | None = POOL,
    sensors: bool = True,
    checks: bool = True,
    automation: str = AUTOMATION,
    nodes: Sequence[str] | None = None,
    sensor_interval_seconds: int = 30,
    max_partitions_per_tick: int = MAX_PARTITIONS_PER_TICK,
    upstream_retries: int = 3,
    upstream_retry_seconds: float = 60.0,
    schedule_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
    apply_job: bool = True,
    restatement_display: str = "failed",
    duckdb: DuckDBResource | None = None,
    execute: Execute | None = None,
) -> dg.Definitions:
    """Assets (sources as external assets), asset checks, sensors, jobs and schedules.

    ``automation``: ``"conditions"`` (default) gives each incremental asset an
    ``AutomationCondition`` (see ``SeeknalTranslator.get_automation_condition``);
    ``"schedules"`` instead defines one schedule per grid (``schedule_status``, stopped by
    default); ``"none"`` neither.  ``nodes``: only these transforms (and their sources).
    Under conditions, seeknal's own automation sensor (``seeknal_automation``) runs by
    default and a partition whose upstream intervals are not complete yet is not retried
    in the step (the condition requests it once they are).

    ``restatement_display``: ``"failed"`` (default) shows restated partitions Failed, with
    the reason, until recomputed (one failing run per asset and range, tagged
    ``seeknal/restatement``); ``"observation"`` only records the restatement on the asset.

    ``database_path`` overrides the project's ``database:`` (relative paths are read from
    the project folder, like the setting).  The assets take a typed ``SeeknalResource``
    (key ``seeknal``) and write through its ``DuckDBResource`` (``duckdb``: pass your own;
    it is also the definitions' ``resource_key`` resource, for your own assets), in the
    concurrency pool ``pool``.  ``execute(context, seeknal=, step=)`` wraps each step
    (``assets.run_step``).  The ``translator`` is never changed: ``automation`` applies to
    a copy.
    """
    if automation not in ("conditions", "schedules", "none"):
        raise ValueError(f"automation={automation!r}: use 'conditions', 'schedules' or 'none'")
    project = as_project(project_path)
    if database_path is not None:  # a copy: the sensors read the file the assets write
        project = project.with_database(project.root / Path(database_path))
    translator = translator or SeeknalTranslator()
    if translator.automation != (automation == "conditions"):
        translator = copy.copy(translator)
        translator.automation = automation == "conditions"
    specs = project_specs(project, translator, nodes=nodes)  # once: every builder below reads these
    schedules = automation == "schedules"
    jobs = build_jobs(specs) if schedules else []
    spark = _pyspark_resource(project)
    # None: no source declares readiness.  The automation conditions read its observations
    # (a source never observed is not ready), so it comes with them even when sensors=False
    watermarks = build_watermarks_sensor(specs)
    # one automation sensor, evaluated in the code location: the conditions hold custom
    # parts (``RestatedShownFailed``, readiness's ``InputsReady``) the daemon cannot deserialise
    automation_sensor = build_automation_sensor(
        specs, minimum_interval_seconds=sensor_interval_seconds,
        use_user_code_server=True) if translator.automation else None
    duckdb = duckdb or DuckDBResource(database=str(project.database_path))
    return dg.Definitions(
        assets=build_assets(
            specs, pool=pool, execute=execute,
            upstream_retries=0 if translator.automation else upstream_retries,
            upstream_retry_seconds=upstream_retry_seconds,
            spark_resource_key=SPARK_RESOURCE_KEY if spark is not None else None,
            in_sync_checks=checks,
        ),
        sensors=[*(build_sensors(
            specs, minimum_interval_seconds=sensor_interval_seconds,
            max_partitions_per_tick=max_partitions_per_tick, include_checks=checks,
            restatement_display=restatement_display, recompute_restatements=schedules,
        ) if sensors else []), *([watermarks] if watermarks and (sensors or translator.automation) else []),
            *([automation_sensor] if automation_sensor else [])],
        jobs=[*jobs, build_apply_job(project, pool=pool)] if apply_job else jobs,
        schedules=build_schedules(specs, jobs=jobs, default_status=schedule_status) if schedules else [],
        resources={SEEKNAL_RESOURCE_KEY: SeeknalResource(project_dir=str(project.root), duckdb=duckdb),
                   resource_key: duckdb,
                   **({SPARK_RESOURCE_KEY: spark} if spark is not None else {})},
    )


def _pyspark_resource(project: Project) -> dg.ConfigurableResource | None:
    """dagster-pyspark's lazy session resource, configured from the project's ``engine:``
    block (the CLI's session settings), when a node runs on Spark and the package is
    installed (``seeknal-dagster[dagster-spark]``); else Spark nodes start their own."""
    if not any(engine_kind(node.engine).session_resource == SPARK_RESOURCE_KEY
               for node in project.nodes.values()):
        return None
    try:
        from dagster_pyspark import LazyPySparkResource
    except ImportError:
        return None
    from seeknal_core.engines.spark import session_conf

    return LazyPySparkResource(spark_config=session_conf(project.engine_config))


__all__ = ["build_definitions"]
