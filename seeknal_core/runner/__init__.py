"""The runner: the one door (``policy``: on_change, start inference, then plan and
execute), plan what is due (``plan``), execute it (``execute``), restate (``restate``).

``plan`` is pure bookkeeping over loaded state; ``execute`` writes through an engine and
records state after the data commits; ``restate`` records which intervals must be
recomputed, and why.  Every door (CLI, Dagster) goes through ``prepare`` or ``run``.
"""

from .common import MAX_INTERVALS, WAITING_FOR_UPSTREAM, Mode, Pair, PlanError, Reason
from .execute import FLUSH_SECONDS, WHOLE_TABLE, NodeResult, Progress, RunResult, execute
from .plan import CHANGED_NOTE, NodePlan, Plan, node_bounds, partition_interval, plan, time_sources
from .policy import DefinitionsChanged, Prepared, apply_on_change, changed_line, prepare, run, run_engines
from .readiness import Mark, ReadinessError, Waiting, hold_back, source_watermarks
from .restate import restate, restatement_impact

__all__ = [
    "CHANGED_NOTE", "FLUSH_SECONDS", "MAX_INTERVALS", "WAITING_FOR_UPSTREAM", "DefinitionsChanged", "Mode",
    "Mark", "NodePlan", "NodeResult", "Pair", "Plan", "PlanError", "Prepared", "Progress", "ReadinessError",
    "Reason", "RunResult", "WHOLE_TABLE", "Waiting", "apply_on_change", "changed_line", "execute",
    "hold_back", "node_bounds", "partition_interval", "plan",
    "prepare", "restate", "restatement_impact", "run", "run_engines", "source_watermarks", "time_sources",
]
