"""One schedule per distinct partitions definition: each node runs when its interval closes.

Nodes on the same grid (cron, timezone, first tick) share a partitioned asset job, and the
job's schedule is ``build_schedule_from_partitioned_job``: at each tick it requests the
partition that just ended (``end_offset=0``), so a daily node runs its day at midnight in
its timezone, a ``0 2 * * 0`` node its week on Sunday 02:00.  Assets on one grid that
depend on each other run in one run, upstream first; a node over another grid (daily over
hourly) retries briefly when its upstream interval is still being computed.
"""

from __future__ import annotations

import os
import re

import dagster as dg

from seeknal_core.project import Project
from seeknal_core.schedule import PRESETS

from .assets import as_project, asset_keys
from .partitions import partitions_def_for
from .translator import SeeknalTranslator

_PRESET_NAMES: dict[str, str] = {}
for _name, _cron in PRESETS.items():  # first name wins: daily, not midnight
    _PRESET_NAMES.setdefault(_cron, _name)
_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(text: str) -> str:
    return _SLUG.sub("_", text.lower()).strip("_")


def _job_name(pdef: dg.TimeWindowPartitionsDefinition, taken: set[str]) -> str:
    """``seeknal_daily_utc``, ``seeknal_0_2_x_x_0_utc``: readable, unique, valid names."""
    cron = _PRESET_NAMES.get(pdef.cron_schedule) or _slug(pdef.cron_schedule.replace("*", "x"))
    base = f"seeknal_{cron}_{_slug(pdef.timezone)}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def job_names(project: Project) -> dict[str, str]:
    """Name of the partitioned job each incremental node belongs to (one per grid)."""
    by_pdef: dict[dg.TimeWindowPartitionsDefinition, str] = {}
    taken: set[str] = set()
    out = {}
    for name in project.topological_order():
        node = project.nodes[name]
        if node.is_incremental:
            pdef = partitions_def_for(node)
            if pdef not in by_pdef:
                by_pdef[pdef] = _job_name(pdef, taken)
            out[name] = by_pdef[pdef]
    return out


def build_jobs(
    project: Project | str | os.PathLike[str], *, translator: SeeknalTranslator | None = None
) -> list[dg.UnresolvedAssetJobDefinition]:
    """One partitioned asset job per distinct partitions definition, in dependency order."""
    project = as_project(project)
    translator = translator or SeeknalTranslator()
    keys = asset_keys(project, translator)
    members: dict[str, list[str]] = {}
    for node, job in job_names(project).items():
        members.setdefault(job, []).append(node)
    jobs = []
    for job, nodes in members.items():
        pdef = partitions_def_for(project.nodes[nodes[0]])
        jobs.append(dg.define_asset_job(
            job, selection=dg.AssetSelection.assets(*(keys[n] for n in nodes)),
            description=f"seeknal nodes on '{pdef.cron_schedule}' ({pdef.timezone}): " + ", ".join(nodes),
        ))
    return jobs


def build_schedules(
    project: Project | str | os.PathLike[str],
    *,
    translator: SeeknalTranslator | None = None,
    jobs: list[dg.UnresolvedAssetJobDefinition] | None = None,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> list[dg.ScheduleDefinition | dg.UnresolvedPartitionedAssetScheduleDefinition]:
    """A schedule per partitioned job (``build_jobs``); stopped by default, as in Dagster."""
    jobs = jobs if jobs is not None else build_jobs(project, translator=translator)
    return [
        dg.build_schedule_from_partitioned_job(
            job, name=f"{job.name}_schedule", default_status=default_status)
        for job in jobs
    ]


__all__ = ["build_jobs", "build_schedules", "job_names"]
