"""The runner's shared vocabulary: the interval pair, the plan error, skip reasons."""

from __future__ import annotations

from ..errors import SeeknalError

Pair = tuple[int, int]  # an interval as (start, end) epoch seconds

#: how a skipped interval's reason starts when it only waits for upstream data (callers
#: such as the Dagster adapter retry those instead of failing)
WAITING_FOR_UPSTREAM = "waiting for upstream"


class PlanError(SeeknalError):
    """The request cannot be planned (bad range, unknown partition key, ...)."""
