"""Why an interval ran: the one vocabulary of the planner, the state's audit log and the CLI.

``Reason`` is why the planner made an interval due; ``Mode`` is how its computation is
recorded (the audit log's ``mode``, which ``intervals show`` annotates).  Each member is
one row holding everything said about it, so a new reason or mode is one line here.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """How an interval came to be computed, as the audit log records it; ``shown`` is the
    annotation ``intervals show`` puts after a completed interval ("" shows none)."""

    shown: str

    def __new__(cls, value: str, shown: str) -> Mode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.shown = shown
        return member

    RUN = "run", ""
    BACKFILL = "backfill", "backfilled"
    RESTATE = "restate", "restated"
    MANUAL = "manual", "manual"
    DAGSTER = "dagster", "dagster"

    @classmethod
    def known(cls, value: object) -> bool:
        return value in cls._value2member_map_

    @classmethod
    def of_plan(cls, mode: str) -> Mode:
        """The recorded mode of a plan's mode (``run`` for one the log does not know)."""
        return cls(mode) if cls.known(mode) else cls.RUN


#: what ``plan(mode=...)`` is asked for
PLAN_MODES = (Mode.RUN, Mode.BACKFILL, Mode.RESTATE)


class Reason(StrEnum):
    """Why an interval is due; declared from weakest to strongest (a stronger reason
    replaces a weaker one for the same interval).  The values are what JSON shows; ``word``
    is how a "Processing ..." line names it; ``records`` the ``Mode`` its completion is
    recorded with (None: the run's own)."""

    word: str
    records: Mode | None

    def __new__(cls, value: str, word: str, records: Mode | None = None) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.word = word
        member.records = records
        return member

    NEW = "new", "new"
    LOOKBACK = "lookback", "lookback"
    BACKFILL = "backfill", "missing", Mode.BACKFILL
    PARTITION = "partition", "partition", Mode.BACKFILL
    RESTATE = "restate", "restated", Mode.RESTATE
    RETRY = "retry", "failed"
    #: due by the clock, held back until a source's data is in (``runner/readiness``,
    #: ``NodePlan.waiting``): never run nor recorded, and it outranks every reason to run
    WAITING = "waiting", "waiting"

    @property
    def rank(self) -> int:
        """Position from weakest (0) to strongest."""
        return _RANKS[self]


_RANKS = {reason: rank for rank, reason in enumerate(Reason)}


def recorded_mode(reasons: set[Reason] | frozenset[Reason], plan_mode: str) -> Mode:
    """The mode a batch's completion records: that of its strongest reason that names one
    (a batch holding restated and new intervals records ``restate``), else the plan's."""
    named = [r for r in reasons if r.records is not None]
    return max(named, key=_RANKS.__getitem__).records if named else Mode.of_plan(plan_mode)
