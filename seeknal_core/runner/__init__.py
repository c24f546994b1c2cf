"""The runner: plan what is due (``plan``), execute it (``execute``), restate (``restate``).

``plan`` is pure bookkeeping; ``execute`` writes through an engine and records state
after the data commits; ``restate`` records which intervals must be recomputed, and why.
"""

from ..intervals import coalesce
from .common import MAX_INTERVALS, WAITING_FOR_UPSTREAM, Mode, Pair, PlanError, Reason
from .execute import FLUSH_SECONDS, NodeResult, Progress, RunResult, execute, needs_database, run
from .plan import NodePlan, Plan, node_bounds, partition_interval, plan, time_sources
from .restate import restate, restatement_impact

__all__ = [
    "FLUSH_SECONDS", "MAX_INTERVALS", "WAITING_FOR_UPSTREAM", "Mode", "NodePlan", "NodeResult", "Pair",
    "Plan", "PlanError", "Reason",
    "Progress", "RunResult", "node_bounds", "time_sources",
    "coalesce", "execute", "needs_database", "partition_interval", "plan", "restate",
    "restatement_impact", "run",
]
