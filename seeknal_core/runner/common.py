"""The runner's shared vocabulary: the interval pair, reasons and modes, the plan error."""

from __future__ import annotations

from enum import StrEnum

from ..errors import SeeknalError
from ..intervals import Pair

#: how a skipped interval's reason starts when it only waits for upstream data (callers
#: such as the Dagster adapter retry those instead of failing)
WAITING_FOR_UPSTREAM = "waiting for upstream"

#: the most intervals one command plans, runs or prints (a larger request is refused up
#: front with its size, so absurd input cannot exhaust memory)
MAX_INTERVALS = 10_000_000


class Reason(StrEnum):
    """Why an interval is due; declared from weakest to strongest (a stronger reason
    replaces a weaker one for the same interval).  The values are what JSON shows."""

    NEW = "new"
    LOOKBACK = "lookback"
    BACKFILL = "backfill"
    PARTITION = "partition"
    RESTATE = "restate"
    RETRY = "retry"


class Mode(StrEnum):
    """What a plan was asked for (``plan(mode=...)``)."""

    RUN = "run"
    BACKFILL = "backfill"
    RESTATE = "restate"


class PlanError(SeeknalError):
    """The request cannot be planned (bad range, unknown partition key, too large, ...)."""


__all__ = ["MAX_INTERVALS", "WAITING_FOR_UPSTREAM", "Mode", "Pair", "PlanError", "Reason"]
