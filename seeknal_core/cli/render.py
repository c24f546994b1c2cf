"""Text and JSON shapes of the CLI's output: interval spans, annotations, tables.

Nothing here decides what is due or done; it only shows what the runner and the state
store answered, in the node's timezone (dates alone when the schedule ticks at midnight).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

import click

from .. import grid
from ..intervals import IntervalSet, Pair
from ..lexer import LazyPattern
from ..project import TransformNode
from ..reasons import Mode
from ..timeutil import UTC, format_local, from_epoch, get_zone, to_utc

MAX_RUNS_SHOWN = 3
#: a node with at most this many intervals to list gets one line per interval (`--each`/`--runs`)
SHORT_LIST = 24


# -- instants and spans ---------------------------------------------------------------------
def _instant(value: dt.datetime | int) -> dt.datetime:
    return from_epoch(value) if isinstance(value, int) else to_utc(value)


def local_text(value: dt.datetime | int, node: TransformNode) -> str:
    """An instant in the node's timezone: a date when the node ticks at midnight and the
    instant is a local midnight, else ``YYYY-MM-DD HH:MM``."""
    return _local_text(value, node.timezone, node.schedule is not None and node.schedule.midnight_aligned)


@lru_cache(maxsize=8192)
def _local_text(value: dt.datetime | int, timezone: str, dates: bool) -> str:
    """Memoised: thousands of nodes on one grid list the same instants."""
    instant = _instant(value)
    local = instant.astimezone(get_zone(timezone))
    return format_local(instant, timezone, date_only=dates and local.time() == dt.time(0))


def span(a: dt.datetime | int, b: dt.datetime | int, node: TransformNode) -> str:
    """``2024-01-01 to 2024-01-02`` (half-open, in the node's timezone)."""
    return f"{local_text(a, node)} to {local_text(b, node)}"


def spans_text(pairs: Iterable[Pair], node: TransformNode, limit: int = MAX_RUNS_SHOWN) -> str:
    """The runs of ``pairs`` as text, at most ``limit`` of them, then ``+N more ranges``."""
    merged = grid.fuse(pairs)
    text = ", ".join(span(a, b, node) for a, b in merged[:limit])
    if len(merged) > limit:
        text += f", +{len(merged) - limit} more range{'s' if len(merged) - limit > 1 else ''}"
    return text


def listed(runs_: Sequence[tuple[int, int, Any]], node: TransformNode,
           listing: str | None = None) -> Iterator[tuple[int, int, Any, int]]:
    """(start, end, tag, count) lines for runs of tagged intervals: one line per interval when
    the node has at most ``SHORT_LIST`` of them (or ``listing == "each"``), else one per run
    (``listing == "runs"`` forces that)."""
    sched = node.schedule
    assert sched is not None  # tagged runs are a scheduled node's
    counts = [grid.count(sched, a, b) for a, b, _tag in runs_]
    each = listing == "each" or (listing is None and sum(counts) <= SHORT_LIST)
    for (a, b, tag), count in zip(runs_, counts):
        if each and count > 1:
            yield from ((x, y, tag, 1) for x, y in grid.expand(sched, a, b))
        else:
            yield a, b, tag, count


def counted(count: int) -> str:
    """`` (31 intervals)`` after a folded run; nothing after a single interval."""
    return f" ({count:,} intervals)" if count > 1 else ""


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else many or word + 's'}"


def interval_dict(a: dt.datetime | int, b: dt.datetime | int, node: TransformNode, **extra: Any) -> dict:
    """The JSON shape of one interval: UTC ISO bounds, local ISO bounds, extras."""
    zone = get_zone(node.timezone)
    start, end = _instant(a), _instant(b)
    return {"start": start.isoformat(), "end": end.isoformat(),
            "local_start": start.astimezone(zone).isoformat(),
            "local_end": end.astimezone(zone).isoformat(), **extra}


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- what a plan will do ----------------------------------------------------------------------
def describe_due(due: Mapping[Pair, str], node: TransformNode, verb: str = "Processing") -> str:
    """``Processing 1 new interval (2024-01-04 to 2024-01-05)``; mixed reasons are counted
    (from the runs of a plan's ``Due``; a plain mapping is taken as runs first)."""
    from ..runner.due import Due

    if not isinstance(due, Due):
        due = Due.from_mapping(node.schedule, due)
    counts = due.reason_counts()
    total = len(due)
    where = spans_text(due.spans(), node)
    if len(counts) == 1:
        word = next(iter(counts)).word
        return f"{verb} {total} {word} interval{'' if total == 1 else 's'} ({where})"
    parts = ", ".join(f"{n} {r.word}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{verb} {plural(total, 'interval')}: {parts} ({where})"


# -- annotations from the audit log ----------------------------------------------------------
def annotated_runs(completed: IntervalSet, history: Sequence[Mapping[str, Any]]) -> list[tuple[Pair, str]]:
    """The completed set as (run, mode) pieces: the latest completion covering a piece
    gives its mode; parts no record covers (an imported state file) get ``""``."""
    by_mode: dict[str, IntervalSet] = {}
    for record in history:
        if record.get("event") != "complete" or not record.get("intervals"):
            continue
        try:
            done = IntervalSet([tuple(p) for p in record["intervals"]])
        except (TypeError, ValueError):
            continue
        for mode in by_mode:
            by_mode[mode] = by_mode[mode].difference(done)
        mode = str(record.get("mode") or "")
        by_mode[mode] = by_mode.get(mode, IntervalSet()).union(done)
    covered = IntervalSet()
    pieces: list[tuple[Pair, str]] = []
    for mode, members in by_mode.items():
        part = members.intersection(completed)
        covered = covered.union(part)
        pieces += [(p, mode) for p in part.pairs()]
    pieces += [(p, "") for p in completed.difference(covered).pairs()]
    return sorted(pieces)


def audit_warnings(history: Sequence[Mapping[str, Any]]) -> list[tuple[Pair, str]]:
    """The completed intervals whose latest completion came with a failed non-blocking
    audit: (interval, message) in time order, one per warning recorded (an interval two
    audits warned about comes twice).  A warning is recorded right after its completion,
    so a later completion (a re-run) clears it."""
    warned: dict[Pair, list[str]] = {}
    for record in history:
        event, pairs = record.get("event"), record.get("intervals") or ()
        try:
            members = IntervalSet([tuple(p) for p in pairs])
        except (TypeError, ValueError):
            continue
        if event == "complete" or (event == "fail"):
            for pair in [p for p in warned if members.overlaps((from_epoch(p[0]), from_epoch(p[1])))]:
                del warned[pair]
        elif event == "execution" and record.get("status") == "warning":
            for pair in members.pairs():
                warned.setdefault(pair, []).append(str(record.get("error") or "audit warning"))
    return sorted((pair, message) for pair, messages in warned.items() for message in messages)


#: audit failure runs printed per node; the rest are counted (``--json`` lists them all)
MAX_AUDIT_RUNS = 20
#: ``audit <name> failed: N rows`` (then maybe ``; samples: ...``): N is the offending-row count
_AUDIT_COUNT = LazyPattern(r"(audit .+? failed: )(\d+) rows?(?=$|; samples: )", re.S)


def audit_runs(failures: Iterable[tuple[Pair, Any, str]], node: TransformNode
               ) -> list[tuple[int, int, int, Any, str]]:
    """Audit failures (interval, tag, message) as runs (start, end, intervals, tag, message):
    contiguous intervals with the same tag whose messages differ only in the count of
    offending rows become one run stating the total (samples stay with ``--json`` and
    ``history``); a run of one interval keeps its own message.  ``row_count`` messages
    (rows written) join only when equal.  The one grouping for the summary of a run,
    ``seeknal audit`` and ``intervals show``."""
    keyed: dict[tuple[Any, str], list[tuple[Pair, int, str]]] = {}
    for pair, tag, message in failures:
        m = _AUDIT_COUNT.match(message)
        key, n = (m.group(1), int(m.group(2))) if m else (message, 0)
        keyed.setdefault((tag, key), []).append((pair, n, message))
    out: list[tuple[int, int, int, Any, str]] = []
    for (tag, key), items in keyed.items():
        items.sort(key=lambda item: item[0])
        groups: list[list[tuple[Pair, int, str]]] = []
        for item in items:
            if groups and item[0][0] == groups[-1][-1][0][1]:
                groups[-1].append(item)
            elif not groups or item[0] != groups[-1][-1][0]:  # an interval reported twice shows once
                groups.append([item])
        for group in groups:
            a, b = group[0][0][0], group[-1][0][1]
            count = (sum(grid.count(node.schedule, x, y) for (x, y), _, _ in group) if node.schedule
                     else len(group))
            if len(group) == 1:
                message = group[0][2]
            elif _AUDIT_COUNT.match(group[0][2]):
                message = f"{key}{plural(sum(n for _, n, _ in group), 'row')}"
            else:
                message = key
            out.append((a, b, count, tag, message))
    return sorted(out, key=lambda r: (r[0], r[1], str(r[3]), r[4]))


def capped(lines: list[str], hint: str, limit: int = MAX_AUDIT_RUNS, indent: str = "  ") -> list[str]:
    """At most ``limit`` lines, then ``... and N more runs (hint)``."""
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"{indent}... and {len(lines) - limit:,} more runs ({hint})"]


def annotation(mode: str) -> str:
    word = Mode(mode).shown if Mode.known(mode) else ""
    return f" ({word})" if word else ""


# -- tables -------------------------------------------------------------------------------------
def safe(text: object) -> str:
    """Text others wrote (a reason, an actor, an error) as it may reach a terminal:
    control characters (``\\x1b[31m``, newlines) and invisible format characters such as
    bidi overrides (``\\u202e``) are shown as escapes, so stored text can neither restyle
    the reader's terminal nor reorder what it shows.  The store keeps the text as given."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in value)


def _escape(char: str) -> str:
    import unicodedata

    if unicodedata.category(char) == "Zs":  # a no-break or other visible space
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return lines


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"
