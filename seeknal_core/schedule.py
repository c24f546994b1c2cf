"""A schedule (cron expression or preset + IANA timezone) and its grid of ticks.

Ticks are integer epoch seconds.  They are computed by arithmetic: a day's ticks are
the cron's wall-clock times of day shifted by the day's UTC offset, and only a day
on which the offset changes is resolved time by time.  DST follows Dagster's
``cron_string_iterator`` exactly, because Dagster is the orchestrator whose
partitions must line up with ours:

* crons that fire every hour (hour field ``*``) skip wall times that do not exist
  and fire at both instants of an ambiguous wall time;
* other crons resolve a wall time as Dagster does, whose adjustments apply only to
  hours 1, 2 and 3 (``DAYLIGHT_SAVINGS_HOURS``).  An ambiguous wall time takes the later
  instant (after the fall-back), except that a cron with one fixed time of day (Dagster's
  daily, weekly and monthly schedules) keeps the earlier instant outside hours 1-3
  (a zone that falls back at midnight repeats 23:45: the first one fires).  A
  non-existent wall time in hours 1-3 moves to the hour's start plus the zone's DST
  amount (02:30 -> 03:00; 04:00 in Antarctica/Troll's two-hour shift); outside them it
  is read with the offset before the change (00:30 in a midnight gap -> 01:30).  Where
  Dagster's move lands on a wall time that does not exist either, the tick is the end
  of the gap; the Dagster adapter refuses such definitions.

croniter is used only to parse and expand the expression.
"""

from __future__ import annotations

import calendar
import datetime as dt
import operator
from collections.abc import Sequence
from functools import lru_cache
from itertools import accumulate, repeat

from .timeutil import UTC, get_zone

PRESETS = {
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "midnight": "0 0 * * *",
    "weekly": "0 0 * * 0",
    "monthly": "0 0 1 * *",
    "yearly": "0 0 1 1 *",
    "annually": "0 0 1 1 *",
}

DAY = 86_400
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_MAX_SEARCH_DAYS = 366 * 30  # a valid cron fires at least every 28 years (Feb 29 on a weekday)
_ONE_DAY = dt.timedelta(days=1)
_SECOND = dt.timedelta(seconds=1)
_DST_HOURS = frozenset({1, 2, 3})  # Dagster's DAYLIGHT_SAVINGS_HOURS: the only hours it adjusts


def normalise_expression(expression: str) -> str:
    """A preset (``@daily``, ``daily``, ``DAILY``) as its cron; a cron with single spaces."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"invalid schedule {expression!r}: use a preset like '@daily' or a 5-field cron")
    text = expression.strip()
    key = text.lstrip("@").lower()
    if key in PRESETS:
        return PRESETS[key]
    if text.startswith("@"):
        raise ValueError(
            f"unknown schedule preset {expression!r}: use one of "
            + ", ".join("@" + p for p in PRESETS if p != "midnight")
        )
    return " ".join(text.split())


#: croniter.expand of each preset's cron (tests/test_schedule_presets.py checks it): the presets
#: most projects use need no croniter import (~0.1 s)
_PRESET_EXPANSIONS = {
    "0 * * * *": ([[0], ["*"], ["*"], ["*"], ["*"]], {}),
    "0 0 * * *": ([[0], [0], ["*"], ["*"], ["*"]], {}),
    "0 0 * * 0": ([[0], [0], ["*"], ["*"], [0]], {}),
    "0 0 1 * *": ([[0], [0], [1], ["*"], ["*"]], {}),
    "0 0 1 1 *": ([[0], [0], [1], [1], ["*"]], {}),
}


@lru_cache(maxsize=512)
def _expand(cron: str):
    if cron in _PRESET_EXPANSIONS:
        return _PRESET_EXPANSIONS[cron]
    from croniter import croniter

    fields = cron.split(" ")
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron {cron!r}: expected 5 fields (minute hour day-of-month month "
            f"day-of-week), got {len(fields)}"
        )
    try:
        expanded, nth, *_ = croniter.expand(cron)
    except Exception as exc:  # croniter raises several unrelated types
        raise ValueError(f"invalid cron {cron!r}: {exc}") from None
    if len(expanded) != 5:
        raise ValueError(f"invalid cron {cron!r}: only 5-field expressions are supported")
    return expanded, nth


class Schedule:
    """A cron schedule in a timezone; produces the ticks that delimit intervals."""

    __slots__ = (
        "expression", "cron", "timezone", "_tz", "_times", "_hourly", "_months", "_doms",
        "_dows", "_nth", "_dom_star", "_dow_star", "_every_day", "_day_step", "_period", "_phase",
        "_one_time",
    )

    def __init__(self, expression: str, timezone: str = "UTC"):
        self.expression = expression
        self.cron = normalise_expression(expression)
        self.timezone = timezone or "UTC"
        self._tz = get_zone(self.timezone)
        (minutes, hours, doms, months, dows), nth = _expand(self.cron)
        minutes = list(range(60)) if minutes == ["*"] else sorted(int(m) for m in minutes)
        self._hourly = hours == ["*"]
        hours = list(range(24)) if self._hourly else sorted(int(h) for h in hours)
        self._times = [h * 3600 + m * 60 for h in hours for m in minutes]
        self._months = None if months == ["*"] else frozenset(int(m) for m in months)
        self._dom_star = doms == ["*"]
        self._doms = frozenset(doms) if not self._dom_star else frozenset()
        self._dow_star = dows == ["*"] and not nth
        self._dows = frozenset(0 if d == 7 else d for d in dows if d != "*")
        self._nth = {(0 if d == 7 else d): frozenset(n) for d, n in nth.items()}
        self._every_day = self._months is None and self._dom_star and self._dow_star
        self._one_time = _one_time_of_day(minutes, hours, doms, months, dows, nth)
        self._day_step = self._period = self._phase = None
        if self._every_day:  # fires every day at a fixed step: each run of days is one range
            gaps = {b - a for a, b in zip(self._times, self._times[1:])}
            gaps.add(self._times[0] + DAY - self._times[-1])
            if len(gaps) == 1:
                self._day_step = gaps.pop()
        if self._day_step is not None and self._tz is UTC:
            self._period = self._day_step
            self._phase = self._times[0] % self._period
        if not self._can_fire():
            raise ValueError(f"cron {self.cron!r} never fires: no month has such a day")

    def __repr__(self) -> str:
        return f"Schedule({self.expression!r}, timezone={self.timezone!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Schedule)
            and self.cron == other.cron
            and self.timezone == other.timezone
        )

    def __hash__(self) -> int:
        return hash((self.cron, self.timezone))

    @property
    def period(self) -> int | None:
        """Seconds between ticks when the grid is arithmetic in UTC, else None."""
        return self._period

    @property
    def midnight_aligned(self) -> bool:
        """True when every tick is at local midnight (daily or coarser)."""
        return self._times == [0]

    # -- which days fire ----------------------------------------------------------------
    def _can_fire(self) -> bool:
        if not self._dow_star or self._dom_star:
            return True  # every month holds every weekday (and its 1st..4th occurrence)
        months = self._months or range(1, 13)
        if "l" in self._doms:
            return True
        max_day = {m: 29 if m == 2 else calendar.monthrange(2001, m)[1] for m in months}
        return any(int(d) <= max_day[m] for m in months for d in self._doms)

    def _day_fires(self, day: dt.date) -> bool:
        if self._months is not None and day.month not in self._months:
            return False
        if self._dom_star and self._dow_star:
            return True
        dom_ok = dow_ok = False
        if not self._dom_star:
            dom_ok = day.day in self._doms or (
                "l" in self._doms and day.day == calendar.monthrange(day.year, day.month)[1]
            )
        if not self._dow_star:
            weekday = day.isoweekday() % 7
            if weekday in self._dows:
                wanted = self._nth.get(weekday)
                dow_ok = not wanted or ((day.day - 1) // 7 + 1) in wanted
        if self._dom_star:
            return dow_ok
        if self._dow_star:
            return dom_ok
        return dom_ok or dow_ok  # cron's rule: both restricted means either

    # -- wall time -> instant -------------------------------------------------------------
    def _resolve(self, naive: dt.datetime) -> list[int]:
        """The instants (epoch s) a wall time fires at on a day whose offset changes."""
        base, o0, o1 = _reading(self._tz, naive)
        if o0 == o1:
            return [base - o0]
        if o0 > o1:  # ambiguous: the wall time happens twice
            if self._hourly:
                return [base - o0, base - o1]
            return [base - o0] if self._one_time and naive.hour not in _DST_HOURS else [base - o1]
        if self._hourly:  # non-existent: hourly crons skip it
            return []
        if naive.hour not in _DST_HOURS:  # Dagster leaves it alone: read before the change
            return [base - o0]
        dst = (naive + dt.timedelta(hours=1)).replace(tzinfo=self._tz).dst() or dt.timedelta(0)
        moved = naive.replace(minute=0, second=0) + dst
        mbase, m0, m1 = _reading(self._tz, moved)
        if m0 == m1:
            return [mbase - m0]
        if m0 > m1:  # Dagster's fold applies to its fixed-time schedules only
            return [mbase - m1] if self._one_time and moved.hour in _DST_HOURS else [mbase - m0]
        return self._gap_end(naive, o1 - o0)

    def _gap_end(self, naive: dt.datetime, gap: int) -> list[int]:
        """The first instant after a gap that starts on the hour of ``naive``."""
        shifted = naive.replace(minute=0, second=0) + dt.timedelta(seconds=gap)
        base, o0, o1 = _reading(self._tz, shifted)
        if o0 < o1:
            return self._gap_end(shifted, o1 - o0)
        return [base - o1]

    def _day_ticks(self, ordinal: int, out: list[int], lo: int, hi: int, offset: int) -> None:
        """Append a day's ticks in (out[-1], hi] and >= lo; its offset is ``offset`` all day."""
        if not self._every_day and not self._day_fires(dt.date.fromordinal(ordinal)):
            return
        shift = (ordinal - _EPOCH_ORDINAL) * DAY - offset
        times = self._times
        floor = max(lo - 1, out[-1]) if out else lo - 1
        if shift + times[0] > floor and shift + times[-1] <= hi:
            out.extend([shift + w for w in times])
        else:
            out.extend([shift + w for w in times if floor < shift + w <= hi])

    def _steady_ticks(self, first: int, last: int, out: list[int], lo: int, hi: int, offset: int) -> None:
        """Append the ticks of days ``first..last`` (ordinals), whose UTC offset is ``offset``
        throughout.  A cron firing every day at a fixed step (hourly, every 15 minutes, daily)
        is one arithmetic range over all of them; any other goes day by day."""
        step = self._day_step
        if step is None:
            for ordinal in range(first, last + 1):
                self._day_ticks(ordinal, out, lo, hi, offset)
            return
        floor = max(lo - 1, out[-1]) if out else lo - 1
        begin = (first - _EPOCH_ORDINAL) * DAY - offset + self._times[0]
        if begin <= floor:  # the first tick after floor on this range
            begin += ((floor - begin) // step + 1) * step
        stop = min(hi, (last - _EPOCH_ORDINAL) * DAY - offset + self._times[-1])
        out.extend(range(begin, stop + 1, step))

    def _changing_day_ticks(self, ordinal: int, out: list[int], lo: int, hi: int) -> None:
        """Append the ticks of a day on which the UTC offset changes, time by time."""
        day = dt.date.fromordinal(ordinal)
        if not self._every_day and not self._day_fires(day):
            return
        midnight = dt.datetime(day.year, day.month, day.day)
        naive_midnight = (ordinal - _EPOCH_ORDINAL) * DAY
        tz = self._tz
        resolved = set()
        for w in self._times:
            wall = midnight + dt.timedelta(seconds=w)
            offset = tz.utcoffset(wall)
            if offset == tz.utcoffset(wall.replace(fold=1)):  # one reading: not at the change
                resolved.add(naive_midnight + w - offset // _SECOND)
            else:
                resolved.update(self._resolve(wall))
        for t in sorted(resolved):
            if lo <= t <= hi and (not out or t > out[-1]):
                out.append(t)

    # -- the grid -------------------------------------------------------------------------
    def ticks(self, lo: int, hi: int) -> list[int]:
        """Every tick t with lo <= t <= hi, ascending.

        The local days spanning [lo, hi] split into runs of days with one UTC offset, each
        expanded by arithmetic, and the days on which the offset changes, resolved time by
        time; the offset at each local midnight is read once per day (in C)."""
        if lo > hi:
            return []
        if self._period is not None:
            first = lo + (-(lo - self._phase)) % self._period
            return list(range(first, hi + 1, self._period))
        first_day = _local_ordinal(self._tz, lo) - 1
        last_day = _local_ordinal(self._tz, hi) + 1
        out: list[int] = []
        if self._tz is UTC:
            self._steady_ticks(first_day, last_day, out, lo, hi, 0)
            return out
        offsets = _midnight_offsets(self._tz, first_day, last_day + 1)
        k, days = 0, last_day - first_day + 1
        while k < days:
            if offsets[k] != offsets[k + 1]:
                self._changing_day_ticks(first_day + k, out, lo, hi)
                k += 1
                continue
            end = k  # the last day of this run of days with one offset
            while end + 1 < days and offsets[end + 1] == offsets[end + 2]:
                end += 1
            self._steady_ticks(first_day + k, first_day + end, out, lo, hi, offsets[k] // _SECOND)
            k = end + 1
        return out

    def estimate_ticks(self, lo: int, hi: int) -> int:
        """About how many ticks lie in [lo, hi], without listing them (exact on an
        arithmetic grid): a request can be sized before anything is expanded."""
        if hi < lo:
            return 0
        if self._period is not None:
            return (hi - lo) // self._period + 1
        days = (hi - lo) // DAY + 1
        if self._every_day:
            return days * len(self._times)
        first = _local_ordinal(self._tz, lo)
        sample = min(days, 4 * 366)  # whole leap cycles give each weekday and date its share
        fires = sum(self._day_fires(dt.date.fromordinal(first + k)) for k in range(sample))
        return days * len(self._times) * fires // sample

    def covering_ticks(self, lo: int, hi: int) -> Sequence[int]:
        """Ticks bounding every interval that overlaps [lo, hi), whole (none if hi <= lo);
        a ``range`` when the grid is arithmetic in UTC."""
        if hi <= lo:
            return []
        first, last = self.tick_at_or_before(lo), self.tick_at_or_after(hi)
        if self._period is not None:
            return range(first, last + 1, self._period)
        return self.ticks(first, last)

    def tick_at_or_before(self, t: int) -> int:
        if self._period is not None:
            return t - (t - self._phase) % self._period
        span = 2 * DAY
        while True:
            found = self.ticks(t - span, t)
            if found:
                return found[-1]
            if span > _MAX_SEARCH_DAYS * DAY:
                raise ValueError(f"cron {self.cron!r} has no tick before {t}")
            span *= 4

    def tick_at_or_after(self, t: int) -> int:
        if self._period is not None:
            return t + (-(t - self._phase)) % self._period
        span = 2 * DAY
        while True:
            found = self.ticks(t, t + span)
            if found:
                return found[0]
            if span > _MAX_SEARCH_DAYS * DAY:
                raise ValueError(f"cron {self.cron!r} has no tick after {t}")
            span *= 4

    def tick_after(self, t: int) -> int:
        return self.tick_at_or_after(t + 1)

    def tick_before(self, t: int) -> int:
        return self.tick_at_or_before(t - 1)

    def is_tick(self, t: int) -> bool:
        return self.tick_at_or_before(t) == t


def _one_time_of_day(minutes, hours, doms, months, dows, nth) -> bool:
    """True for the crons Dagster computes as daily, weekly or monthly schedules (one time of
    day, every month; numeric weekdays, or one day of month up to the 28th), whose DST rule
    differs from its generic croniter path."""
    if nth or len(minutes) != 1 or len(hours) != 1 or months != ["*"]:
        return False
    if doms == ["*"]:
        return dows == ["*"] or all(isinstance(d, int) for d in dows)
    return dows == ["*"] and len(doms) == 1 and isinstance(doms[0], int) and doms[0] <= 28


def _reading(tz: dt.tzinfo, naive: dt.datetime) -> tuple[int, int, int]:
    """A wall time as naive epoch seconds and its UTC offsets at fold 0 and fold 1."""
    base = int((naive - dt.datetime(1970, 1, 1)).total_seconds())
    o0 = int(naive.replace(tzinfo=tz, fold=0).utcoffset().total_seconds())
    o1 = int(naive.replace(tzinfo=tz, fold=1).utcoffset().total_seconds())
    return base, o0, o1


def _midnight_offsets(tz: dt.tzinfo, first: int, last: int) -> list[dt.timedelta]:
    """UTC offsets in force at local midnight of the days ``first..last`` (ordinals; the
    first instant if midnight is ambiguous), read in one pass in C."""
    first_midnight = dt.datetime.fromordinal(first)
    midnights = accumulate(repeat(_ONE_DAY, last - first), operator.add, initial=first_midnight)
    return list(map(tz.utcoffset, midnights))


def _local_ordinal(tz: dt.tzinfo, t: int) -> int:
    return dt.datetime.fromtimestamp(t, tz).toordinal()
