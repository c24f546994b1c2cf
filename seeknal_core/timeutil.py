"""Turning user-supplied times into UTC instants, and back into wall-clock text.

Everything inside seeknal is a timezone-aware UTC ``datetime`` (or, on hot paths,
integer epoch seconds).  Naive values are read in the schedule's timezone, dates
mean midnight in that timezone, and ISO strings may carry an offset.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from .errors import SeeknalError

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = dt.timedelta(seconds=1)

TimeLike = dt.datetime | dt.date | str


class TimeRangeError(SeeknalError, ValueError):
    """A time outside what a ``datetime`` can hold (years 1 to 9999)."""


@lru_cache(maxsize=256)
def get_zone(name: str) -> dt.tzinfo:
    """An IANA timezone by name; ``ValueError`` naming it when it does not exist."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"invalid timezone {name!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'")
    if name.upper() == "UTC":
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # ~2.5 ms at import: UTC projects never need it

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown timezone {name!r}: use an IANA name such as 'UTC', 'America/New_York' "
            "or 'Europe/Berlin'"
        ) from None


def parse_datetime_text(text: str) -> dt.datetime | dt.date:
    """Parse an ISO date or date-time string; a bare date stays a ``date``."""
    value = text.strip()
    if not value:
        raise ValueError("empty date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[+HH:MM]")
    if len(value) == 10 and value[4] == "-" and value[7] == "-":
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    try:
        return dt.datetime.fromisoformat(value.replace(" ", "T", 1) if "T" not in value else value)
    except ValueError:
        raise ValueError(
            f"invalid date {text!r}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[+HH:MM]"
        ) from None


def to_utc(value: TimeLike, tz: dt.tzinfo | str = UTC) -> dt.datetime:
    """Any accepted time value as an aware UTC datetime (naive values are in ``tz``)."""
    if isinstance(tz, str):
        tz = get_zone(tz)
    if isinstance(value, str):
        value = parse_datetime_text(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=tz)
        return value.astimezone(UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=tz).astimezone(UTC)
    raise TypeError(f"expected a datetime, date or ISO string, got {type(value).__name__}: {value!r}")


def to_epoch(value: TimeLike, tz: dt.tzinfo | str = UTC) -> int:
    """Integer epoch seconds of a time value (sub-second parts are floored)."""
    return int((to_utc(value, tz) - EPOCH) // _SECOND)


def from_epoch(seconds: int) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=seconds)


def is_date_only(value: TimeLike) -> bool:
    """True for a ``date`` (not datetime) or a string holding only a date."""
    if isinstance(value, str):
        value = parse_datetime_text(value)
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


def inclusive_end(value: TimeLike) -> dt.datetime | dt.date:
    """The exclusive end a user meant: a date alone means through the end of that day.

    The CLI reads ``--start 2024-01-01 --end 2024-01-01`` as one day.  Naive results stay
    naive, to be read in each node's timezone.
    """
    if isinstance(value, str):
        value = parse_datetime_text(value)
    if not is_date_only(value):
        return value
    if value >= dt.date.max:
        raise TimeRangeError(f"end date {value.isoformat()} means through that day, which reaches past the "
                             "last representable instant: give an end before 9999-12-31")
    return value + dt.timedelta(days=1)


def end_bound(value: TimeLike, tz: dt.tzinfo | str = UTC) -> dt.datetime:
    """``inclusive_end`` as a UTC instant (naive values read in ``tz``)."""
    return to_utc(inclusive_end(value), tz)


def format_local(instant: dt.datetime, tz: dt.tzinfo | str = UTC, *, date_only: bool = False) -> str:
    """Wall-clock text of an instant in ``tz``: ``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM``."""
    if isinstance(tz, str):
        tz = get_zone(tz)
    local = instant.astimezone(tz)
    return local.strftime("%Y-%m-%d") if date_only else local.strftime("%Y-%m-%d %H:%M")
