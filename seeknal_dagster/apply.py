"""``seeknal_apply_changes``: ``seeknal plan --apply`` as a Dagster job.

A Dagster-only team acts on a changed definition from the launchpad: the job computes
the ``ChangePlan`` (what each changed node and its readers must restate), logs it per
node, records it in the state store (restatements, new fingerprints and definitions)
and, unless ``run`` is false, recomputes the restated intervals through the runner's one
door, as the assets and the CLI do (DuckDB through the ``SeeknalResource``, in the ``seeknal_duckdb`` pool),
recorded with origin ``dagster`` and the run id.  The asset's code version is the same
fingerprint, so the UI marks the assets whose definition the job records.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field

from seeknal_core.engines import ENGINES
from seeknal_core.errors import SeeknalError
from seeknal_core.project import Project
from seeknal_core.runner import changes, policy
from seeknal_core.state import StateError
from seeknal_core.timeutil import from_epoch

from .assets import POOL
from .resource import SeeknalResource

APPLY_JOB = "seeknal_apply_changes"


class ApplyChangesConfig(dg.Config):
    """The launchpad's settings (the CLI's ``--reason``, ``--from``, ``--no-run``)."""

    reason: str | None = None  # default: a one-line summary of the changes
    from_: str | None = Field(default=None, alias="from")
    run: bool = True  # false: only record; the next runs recompute
    now: str | None = None  # plan as of this instant (ISO); default: now


def _log_plan(context: dg.OpExecutionContext, plan: changes.ChangePlan) -> None:
    for entry in plan.nodes:
        if entry.status == "unchanged" and not entry.restate:
            continue
        spans = (f"from {from_epoch(entry.restate[0][0]).isoformat()} to "
                 f"{from_epoch(entry.restate[-1][1]).isoformat()}" if entry.restate else "")
        why = entry.category or (f"reads {', '.join(entry.upstream)}" if entry.upstream else "new")
        context.log.info(f"{entry.node}: {entry.status}, {why}; "
                         f"restate {len(entry.restate)} interval(s) {spans}")


def _database_options(seeknal: SeeknalResource) -> dict[str, Any]:
    """``open_engine`` options of every engine that reads the project's DuckDB file: the
    resource's connection (entered only when the run opens that engine)."""

    @contextmanager
    def connection() -> Iterator[dict]:
        with seeknal.connection() as con:
            yield {"connection": con}

    return {name: connection for name, kind in ENGINES.items() if kind.reads_database}


def build_apply_job(project: Project, *, pool: str | None = POOL) -> dg.JobDefinition:
    """The job for ``project``: one op, no assets (it changes state, not one asset)."""

    @dg.op(name="seeknal_apply_changes_op", pool=pool)
    def apply_op(context: dg.OpExecutionContext, config: ApplyChangesConfig,
                 seeknal: SeeknalResource) -> None:
        try:
            with seeknal.state_store(project) as store:
                plan = changes.change_plan(project, store, since=config.from_, now=config.now)
                _log_plan(context, plan)
                if not plan.changed:
                    context.log.info("No definition changed: nothing recorded.")
                    return
                options: dict[str, Any] = {"now": plan.now}
                result = policy.apply_changes(
                    project, store, plan, reason=config.reason, run=config.run,
                    engine_options=_database_options(seeknal), origin="dagster",
                    run_id=context.run_id, options=options)
        except (SeeknalError, StateError) as exc:
            raise dg.Failure(description=f"seeknal could not apply the changes: {exc}") from None
        context.log.info(f"Recorded: reason {result.reason!r}; definitions of {', '.join(result.recorded)}")
        done = result.run
        if done is not None:
            context.log.info(f"Recomputed {done.intervals} interval(s), {done.rows} row(s)")
            if not done.ok or done.stopped:
                raise dg.Failure(description=f"restatements recorded, but {done.failed} interval(s) failed "
                                             f"to recompute{': ' + done.stopped if done.stopped else ''}; "
                                             "the failures are in this run's log")

    @dg.job(name=APPLY_JOB, description="seeknal plan --apply: record what changed definitions restate "
                                        "and recompute it (config: reason, from, run).")
    def apply_job() -> None:
        apply_op()

    return apply_job


__all__ = ["APPLY_JOB", "ApplyChangesConfig", "build_apply_job"]
