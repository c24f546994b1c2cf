"""One job, and optionally one schedule, per distinct partitions definition.

Nodes on the same grid (cron, timezone, first tick) share a partitioned asset job.  The
job's schedule is ``build_schedule_from_partitioned_job``: at each tick it requests the
partition that just ended (``end_offset=0``), so a daily node runs its day at midnight in
its timezone, a ``0 2 * * 0`` node its week on Sunday 02:00.  Schedules are the
alternative to the assets' automation conditions (the default, see translator.py); the
restatement sensor targets the jobs either way.

Jobs and schedules are annotated with this module's ``AssetJob``/``AssetJobSchedule``:
what ``dg.define_asset_job`` and ``dg.build_schedule_from_partitioned_job`` return are
resolved against the assets when ``Definitions`` load, and ``dagster`` does not export
their classes (seeknal names only what ``dagster`` exports, tests/test_dagster_adapter_shape.py).
"""

from __future__ import annotations

import os
from typing import Any, TypeAlias

import dagster as dg

from seeknal_core.project import Project
from seeknal_core.schedule import PRESETS

from .assets import as_specs
from .translator import ProjectSpecs, SeeknalTranslator, slug

_PRESET_NAMES: dict[str, str] = {}
for _name, _cron in PRESETS.items():  # first name wins: daily, not midnight
    _PRESET_NAMES.setdefault(_cron, _name)
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]

#: a partitioned asset job, as ``dg.define_asset_job`` returns it (resolved at load)
AssetJob: TypeAlias = Any
#: its schedule, as ``dg.build_schedule_from_partitioned_job`` returns it (resolved at load)
AssetJobSchedule: TypeAlias = Any


def cron_label(cron: str) -> str:
    """A name a person reads: ``daily``, ``hourly_at_15``, ``weekly_sun_0200``,
    ``monthly_1st_0600``; other crons spelled out field by field."""
    if cron in _PRESET_NAMES:
        return _PRESET_NAMES[cron]
    fields = cron.split()
    if len(fields) == 5 and fields[0].isdigit():
        minute, hour, dom, month, dow = fields
        if (hour, dom, month, dow) == ("*", "*", "*", "*"):
            return f"hourly_at_{int(minute):02d}"
        if hour.isdigit() and month == "*":
            at = f"{int(hour):02d}{int(minute):02d}"
            if (dom, dow) == ("*", "*"):
                return f"daily_{at}"
            if dom == "*" and dow.isdigit() and int(dow) < len(_DAYS):
                return f"weekly_{_DAYS[int(dow)]}_{at}"
            if dow == "*" and dom.isdigit():
                return f"monthly_day{int(dom)}_{at}"
    return slug(cron.replace("*", "x").replace("/", " every ").replace(",", " and "))


def job_names(project: Project | ProjectSpecs) -> dict[str, str]:
    """Name of the partitioned job each incremental node belongs to (one per grid):
    ``seeknal_daily_utc``, ``seeknal_weekly_sun_0200_utc``."""
    specs = as_specs(project)
    by_pdef: dict[dg.PartitionsDefinition, str] = {}
    taken: set[str] = set()
    out = {}
    for name, spec in specs.specs.items():
        pdef = spec.partitions_def
        if not isinstance(pdef, dg.TimeWindowPartitionsDefinition):
            continue
        if pdef not in by_pdef:
            base = f"seeknal_{cron_label(pdef.cron_schedule)}_{slug(pdef.timezone)}"
            job, n = base, 2
            while job in taken:
                job, n = f"{base}_{n}", n + 1
            taken.add(job)
            by_pdef[pdef] = job
        out[name] = by_pdef[pdef]
    return out


def build_jobs(
    project: Project | ProjectSpecs | str | os.PathLike[str], *, translator: SeeknalTranslator | None = None
) -> list[AssetJob]:
    """One partitioned asset job per distinct partitions definition, in dependency order."""
    specs = as_specs(project, translator)
    members: dict[str, list[str]] = {}
    for node, job in job_names(specs).items():
        members.setdefault(job, []).append(node)
    jobs = []
    for job, nodes in members.items():
        pdef = specs.specs[nodes[0]].partitions_def
        jobs.append(dg.define_asset_job(
            job, selection=dg.AssetSelection.assets(*(specs.specs[n].key for n in nodes)),
            description=f"seeknal nodes on '{pdef.cron_schedule}' ({pdef.timezone}): " + ", ".join(nodes),
        ))
    return jobs


def build_schedules(
    project: Project | ProjectSpecs | str | os.PathLike[str],
    *,
    translator: SeeknalTranslator | None = None,
    jobs: list[AssetJob] | None = None,
    default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> list[AssetJobSchedule]:
    """A schedule per partitioned job (``build_jobs``), named like it; stopped by default."""
    jobs = jobs if jobs is not None else build_jobs(project, translator=translator)
    return [dg.build_schedule_from_partitioned_job(job, name=job.name, default_status=default_status)
            for job in jobs]


__all__ = ["AssetJob", "AssetJobSchedule", "build_jobs", "build_schedules", "cron_label", "job_names"]
