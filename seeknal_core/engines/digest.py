"""What every engine's ``digests`` shares: interval bounds in the time column's own terms,
the grouping unit, and folding the grouped rows into one digest per interval.

Rows are grouped by the largest unit of time that divides every interval bound (a day for
daily intervals, also across DST, since naive columns are compared in wall-clock terms; an
hour for hourly ones), so one grouped query serves any grid and yields few rows; counts,
maxima and XORs of those groups add up to the intervals' exactly.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections.abc import Iterable, Sequence

from ..timeutil import from_epoch, get_zone
from .base import Digest, Pair


class Buckets:
    """The intervals, sorted, with their bounds in the column's terms (epoch seconds: true
    instants for zone-aware columns, the zone's wall clock read as UTC for naive ones) and
    ``unit`` seconds, which divides every bound."""

    def __init__(self, intervals: Sequence[Pair], aware: bool, timezone: str):
        zone = get_zone(timezone)
        utc = aware or from_epoch(0).astimezone(zone).utcoffset() == dt.timedelta(0) and str(zone) in (
            "UTC", "Etc/UTC", "GMT", "Etc/GMT", "Z")

        def wall(t: int) -> int:
            if utc:  # instants, or wall clock that is UTC's
                return t
            return int(from_epoch(t).astimezone(zone).replace(tzinfo=dt.UTC).timestamp())

        self.ordered = sorted(intervals)
        self.bounds = [(wall(a), wall(b)) for a, b in self.ordered]
        unit = 0
        for a, b in self.bounds:
            unit = math.gcd(unit, a, b)
        self.unit = max(unit, 1)
        self.lo_us, self.hi_us = self.bounds[0][0] * 1_000_000, self.bounds[-1][1] * 1_000_000
        self.unit_us = self.unit * 1_000_000

    def fold(self, groups: Iterable[tuple[int, int, int, int]], kind: str) -> dict[Pair, Digest]:
        """``(group, rows, newest us, xor of row hashes)`` rows -> a digest per interval (an
        empty one as ``(0, None, "")``); checksums as ``<kind>:<16 hex digits>``."""
        starts = [a for a, _ in self.bounds]
        summed: dict[int, list[int]] = {}
        for k, count, newest, checksum in groups:
            at = int(k) * self.unit
            i = bisect.bisect_right(starts, at) - 1
            if i < 0 or at >= self.bounds[i][1]:
                continue  # between two intervals that are not contiguous
            acc = summed.setdefault(i, [0, int(newest), 0])
            acc[0] += int(count)
            acc[1] = max(acc[1], int(newest))
            acc[2] ^= int(checksum) & 0xFFFF_FFFF_FFFF_FFFF  # Spark's hashes are signed
        out: dict[Pair, Digest] = {p: (0, None, "") for p in self.ordered}
        for i, (count, newest, checksum) in summed.items():
            out[self.ordered[i]] = (count, newest, f"{kind}:{checksum:016x}")
        return out
