"""Relative times on the command line: ``--last 24h`` / ``--last P7D`` and "ended 3 hours ago".

pendulum parses the durations and words the differences; it costs ~40 ms to import, so it
is imported here, inside the functions, only when a command gives ``--last`` or shows
freshness.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

#: short forms: 90m, 24h, 7d, 2w, 30s, combined largest first (1d12h)
_SHORT = re.compile(r"(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", re.IGNORECASE)
_HINT = "use 24h, 7d, 90m, 2w or an ISO 8601 duration such as PT24H, P7D or P1M"


def iso_text(text: str) -> str:
    """``24h`` -> ``PT24H``, ``7d`` -> ``P7D``; ISO 8601 text is returned as given."""
    value = text.strip()
    match = _SHORT.fullmatch(value)
    if not value or match is None or not any(match.groups()):
        return value.upper()
    weeks, days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    date = f"{7 * weeks + days}D" if weeks or days else ""
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    return f"P{date}{'T' + time if time else ''}"


def parse_duration(text: str) -> Any:
    """A positive duration (a ``pendulum.Duration``); ``ValueError`` naming the text otherwise."""
    import pendulum

    try:
        duration = pendulum.parse(iso_text(text))
    except OverflowError:
        raise ValueError(f"duration {text!r} is longer than any date range (9,999 years)") from None
    except (ValueError, TypeError, pendulum.parsing.exceptions.ParserError):
        duration = None
    if not isinstance(duration, pendulum.Duration):
        raise ValueError(f"invalid duration {text!r}: {_HINT}")
    if duration.years <= 0 and duration.months <= 0 and duration.total_seconds() <= 0:
        raise ValueError(f"duration {text!r} is not positive: {_HINT}")
    return duration


def before(anchor: dt.datetime | dt.date, text: str) -> dt.datetime:
    """``anchor`` minus the duration ``text``: calendar years and months first (pendulum's
    month arithmetic: 2024-03-31 minus P1M is 2024-02-29), then the exact rest.  A naive
    anchor stays naive (wall time, read later in each node's timezone)."""
    import pendulum

    duration = parse_duration(text)
    if not isinstance(anchor, dt.datetime):
        anchor = dt.datetime(anchor.year, anchor.month, anchor.day)
    if duration.years or duration.months:
        shifted = pendulum.naive(anchor.year, anchor.month, anchor.day).subtract(
            years=duration.years, months=duration.months)
        anchor = anchor.replace(year=shifted.year, month=shifted.month, day=shifted.day)
    rest = dt.timedelta(weeks=duration.weeks, days=duration.remaining_days, hours=duration.hours,
                        minutes=duration.minutes, seconds=duration.remaining_seconds,
                        microseconds=duration.microseconds)
    return anchor - rest


def ago(instant: dt.datetime, now: dt.datetime) -> str:
    """``3 hours ago`` (``in 2 hours`` for a future instant), relative to ``now``."""
    import pendulum

    words = pendulum.instance(instant).diff_for_humans(pendulum.instance(now), absolute=True)
    return f"{words} ago" if instant <= now else f"in {words}"
