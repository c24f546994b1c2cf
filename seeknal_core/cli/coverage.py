"""``intervals show`` on a terminal: each node's coverage over its range as one line of cells,
like Dagster's partition bar, so gaps are seen rather than read.

Each cell is a slice of time from the node's start to its last finished interval; it shows the
worst thing inside it: failed, then pending restatement, then missing, else completed.  The
glyphs differ as well as the colours, so the bar reads under ``NO_COLOR`` too.  rich is
imported here only, and only for a terminal.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..intervals import IntervalSet
from ..timeutil import to_epoch
from . import render

if TYPE_CHECKING:
    import datetime as dt

    from ..project import TransformNode
    from ..state import NodeState

Pair = tuple[int, int]
BAR_WIDTH = 60  # cells at most; "  2024-01-01 00:00 → 2024-04-01 00:00" fits beside them in 100 columns

#: category -> (glyph, rich style), in the order they win a cell
CELLS = {"failed": ("✗", "bold red"), "restating": ("▒", "yellow"), "missing": ("░", "grey50"),
         "completed": ("█", "green")}


def _overlaps(pairs: Sequence[Pair], ends: Sequence[int], lo: int, hi: int) -> bool:
    """Some member of sorted, disjoint ``pairs`` (``ends`` their ends) overlaps [lo, hi)."""
    i = bisect_right(ends, lo)
    return i < len(pairs) and pairs[i][0] < hi


def cells(lo: int, hi: int, width: int, completed: IntervalSet, failed: IntervalSet,
          restating: IntervalSet) -> list[str]:
    """The category of each of ``width`` equal slices of [lo, hi)."""
    done, bad, again = completed.pairs(), failed.pairs(), restating.pairs()
    done_starts = [a for a, _ in done]
    bad_ends, again_ends = [b for _, b in bad], [b for _, b in again]
    out = []
    for k in range(width):
        c0, c1 = lo + (hi - lo) * k // width, lo + (hi - lo) * (k + 1) // width
        c1 = max(c1, c0 + 1)
        i = bisect_right(done_starts, c0) - 1
        covered = i >= 0 and done[i][1] >= c1
        if _overlaps(bad, bad_ends, c0, c1):
            out.append("failed")
        elif _overlaps(again, again_ends, c0, c1):
            out.append("restating")
        else:
            out.append("completed" if covered else "missing")
    return out


def node_range(spec: TransformNode, completed: IntervalSet, now: dt.datetime) -> Pair | None:
    """[the start of the node's first whole interval, the end of its last finished one),
    widened to what is done (a New York daily or a weekly node's first interval begins
    after the start date: the slice before it is no interval, so not "missing")."""
    if spec.schedule is None:
        return None
    pairs = completed.pairs()
    starts = [spec.schedule.tick_at_or_after(to_epoch(spec.start))] if spec.start is not None else []
    lo = min(starts + [pairs[0][0]] if pairs else starts, default=None)
    if lo is None:
        return None
    hi = max([spec.schedule.tick_at_or_before(to_epoch(now))] + [p[1] for p in pairs[-1:]])
    return (lo, hi) if hi > lo else None


def print_with_bars(specs: Sequence[TransformNode], states: dict[str, NodeState],
                    reports: Sequence[Sequence[str]], now: dt.datetime) -> None:
    """The report lines of each node, a coverage bar under each header, then a legend."""
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False)
    for n, (spec, lines) in enumerate(zip(specs, reports)):
        if n:
            console.print()
        console.print(Text(lines[0]), soft_wrap=True)
        state = states.get(spec.name)
        completed = state.completed if state else IntervalSet()
        span = node_range(spec, completed, now)
        if span is not None:
            failed = IntervalSet([f.interval for f in state.failed] if state else [])
            restating = IntervalSet([iv for r in state.pending_restatements for iv in r.intervals]
                                    if state else [])
            ends = f"  {render.local_text(span[0], spec)} → {render.local_text(span[1], spec)}"
            width = max(10, min(BAR_WIDTH, console.width - 40))  # one width for every node: aligned
            bar = Text("  ")
            for category in cells(*span, width, completed, failed.difference(completed), restating):
                glyph, style = CELLS[category]
                bar.append(glyph, style=style)
            console.print(bar + Text(ends, style="dim"), no_wrap=True, overflow="crop")
        for line in lines[1:]:
            console.print(Text(line), soft_wrap=True)
    legend = Text("  ")
    for category, (glyph, style) in CELLS.items():
        legend.append(glyph, style=style)
        legend.append(f" {category}  ")
    legend.rstrip()
    console.print(legend)
