"""The runner's shared names: the interval pair, why an interval runs (``reasons``), the plan error."""

from __future__ import annotations

from ..errors import SeeknalError
from ..intervals import Pair
from ..reasons import Mode, Reason

#: how a skipped interval's reason starts when it only waits for upstream data (callers
#: such as the Dagster adapter retry those instead of failing)
WAITING_FOR_UPSTREAM = "waiting for upstream"

#: the most intervals one command plans, runs or prints (a larger request is refused up
#: front with its size, so absurd input cannot exhaust memory)
MAX_INTERVALS = 10_000_000


class PlanError(SeeknalError):
    """The request cannot be planned (bad range, unknown partition key, too large, ...)."""


__all__ = ["MAX_INTERVALS", "WAITING_FOR_UPSTREAM", "Mode", "Pair", "PlanError", "Reason"]
