"""Restatements: which intervals a restatement reaches (downstream included), and
recording it with its reason."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..intervals import IntervalSet
from ..project import Project
from ..timeutil import TimeLike, from_epoch, to_epoch
from .common import Pair, PlanError
from .plan import grid_pairs, node_bounds, overlapping_pairs, range_bounds

if TYPE_CHECKING:
    from ..state import StateStore

def restatement_impact(
    project: Project,
    nodes: Iterable[str] | None,
    start: TimeLike,
    end: TimeLike,
    *,
    now: TimeLike | None = None,
    store: StateStore | None = None,
) -> dict[str, list[Pair]]:
    """Intervals to restate per node: the selected nodes' intervals overlapping
    ``[start, end)`` (naive bounds in each node's timezone), then, downstream, every interval
    overlapping a restated upstream one.  Only finished intervals (``end <= now``) count and,
    given a ``store``, only completed ones: there is nothing to redo in the others."""
    range_bounds(start, end, "UTC")
    now_s = to_epoch(now) if now is not None else int(time.time())
    selected = project.topological_order(nodes) if nodes else [
        n for n in project.topological_order() if project.nodes[n].is_incremental]
    states = store.load() if store is not None else {}

    def done(name: str, pairs: list[Pair]) -> list[Pair]:
        if store is None:
            return pairs
        completed = states[name].completed if name in states else IntervalSet()
        return [p for p in pairs if completed.overlaps((from_epoch(p[0]), from_epoch(p[1])))]

    impact: dict[str, list[Pair]] = {}
    for name in selected:
        node = project.nodes[name]
        if not node.is_incremental:
            raise PlanError(f"node '{name}' has no schedule: it is rebuilt whole on every run "
                            "and has no intervals to restate")
        lo, hi = range_bounds(start, end, node.timezone)
        _, limit = node_bounds(node, now_s)
        # intervals ending by ``limit`` are those overlapping [lo, min(hi, limit)): only they are listed
        overlapping = overlapping_pairs(node.schedule, lo, min(hi, limit))
        impact[name] = done(name, [p for p in overlapping if p[1] <= limit])
    for name in project.topological_order():
        node = project.nodes[name]
        upstream = [u for u in project.upstream(name) if impact.get(u)]
        if name in impact or not node.is_incremental or not upstream:
            continue
        _, limit = node_bounds(node, now_s)
        span = IntervalSet.from_pairs(p for u in upstream for p in impact[u])
        impact[name] = done(name, grid_pairs(node.schedule, span, limit))
    return {n: pairs for n, pairs in impact.items() if pairs}


def restate(
    project: Project,
    store: StateStore,
    nodes: Iterable[str] | None,
    start: TimeLike,
    end: TimeLike,
    reason: str,
    *,
    actor: str | None = None,
    now: TimeLike | None = None,
) -> dict[str, list[Pair]]:
    """Mark intervals (and their downstream intervals) for re-processing, with a reason."""
    if not reason or not reason.strip():
        raise PlanError("a restatement needs a reason: pass --reason \"why the data is wrong\"")
    selected = [project.node(n).name for n in nodes] if nodes else None
    impact = restatement_impact(project, selected, start, end, now=now, store=store)
    direct = {n: v for n, v in impact.items() if selected is None or n in selected}
    cascade = {n: v for n, v in impact.items() if n not in direct}
    if direct:
        store.restate({n: IntervalSet.from_pairs(v) for n, v in direct.items()}, reason, actor)
    if cascade:
        store.restate(
            {n: IntervalSet.from_pairs(v) for n, v in cascade.items()},
            f"{reason} (downstream of {', '.join(sorted(direct))})", actor,
        )
    return impact
