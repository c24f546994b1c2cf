"""Late data: digests of what each interval read, and verifying them later.

When a batch runs, ``execute`` records with its completion a digest of every source the
node reads directly that has a time column (``digests.digest_sources``): per interval, the rows,
the newest time and an order-independent checksum, from ONE grouped query per source per
batch (``Engine.digests``).  The digest is taken just before the batch's write, so rows
landing in between make the stored digest older than the data (verification restates
that interval once: the safe direction), never newer.

``verify`` recomputes the digests of completed intervals in a range, again one grouped
query per source, compares them with the stored ones and restates exactly the intervals
whose inputs changed (and, like any restatement, what depends on them downstream), with
a reason naming the source, the change and the interval.  Intervals completed before
digests were recorded are reported as unverifiable and never restated.  A node's
``verify: 7d`` makes every run verify that window first (``policy.prepare``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..engines import EnginePool
from ..intervals import IntervalSet
from ..project import Project
from ..timeutil import TimeLike, from_epoch, get_zone, to_epoch
from .common import Pair
from .digests import digest_sources, read_digests
from .plan import grid_pairs, node_bounds, overlapping_pairs, range_bounds

if TYPE_CHECKING:
    from ..engines.base import Digest
    from ..state import StateStore

#: at most this many changed intervals are named in one restatement's reason
REASON_ITEMS = 5


def describe_change(source: str, old: Digest, new: Digest) -> str | None:
    """``raw_events +3 rows`` / ``raw_events -1 rows`` / ``raw_events rows changed``, or None
    when the digests agree.  Checksums of different kinds (another DuckDB version) are not
    compared: then only the count and the newest time tell."""
    if old[0] != new[0]:
        diff = new[0] - old[0]
        return f"{source} {diff:+d} row{'' if abs(diff) == 1 else 's'}"
    kind_old, kind_new = old[2].partition(":")[0], new[2].partition(":")[0]
    if old[1] != new[1] or (kind_old == kind_new and old[2] != new[2]):
        return f"{source} rows changed"
    return None


def interval_label(node, pair: Pair) -> str:
    """``2024-01-03`` for an interval starting at local midnight, else ``2024-01-03 09:00``."""
    local = from_epoch(pair[0]).astimezone(get_zone(node.timezone))
    if (local.hour, local.minute) == (0, 0):
        return local.date().isoformat()
    return local.strftime("%Y-%m-%d %H:%M")


@dataclass(eq=False, repr=False)  # never compared or printed: fewer methods to generate at start-up
class Verification:
    """What ``verify`` found (and, unless a dry run, restated)."""

    #: intervals compared per node
    checked: dict[str, int] = field(default_factory=dict)
    #: per node, each interval whose inputs changed with what changed (``raw_events +3 rows``)
    changed: dict[str, list[tuple[Pair, list[str]]]] = field(default_factory=dict)
    #: completed intervals without digests (completed before digests were recorded)
    unverifiable: dict[str, list[Pair]] = field(default_factory=dict)
    #: every interval restated (or, dry, to restate), downstream included
    restated: dict[str, list[Pair]] = field(default_factory=dict)
    #: the restatement reason per directly changed node
    reasons: dict[str, str] = field(default_factory=dict)
    #: sources that could not be read (``node: source: error``)
    problems: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.restated.values())

    def summary(self) -> str:
        """One line: what was restated (or not), for notes and sensor ticks."""
        checked = sum(self.checked.values())
        if not self.restated:
            text = f"late data: none in {checked} verified interval{'' if checked == 1 else 's'}"
        else:
            verb = "would restate" if self.dry_run else "restated"
            text = f"late data: {verb} " + ", ".join(
                f"{len(p)} interval{'' if len(p) == 1 else 's'} of {n}" for n, p in self.restated.items())
            text += " (" + "; ".join(self.reasons.values()) + ")"
        unverifiable = sum(len(v) for v in self.unverifiable.values())
        if unverifiable:
            text += f"; {unverifiable} unverifiable (completed before digests were recorded)"
        return text


def verify(
    project: Project,
    store: StateStore,
    nodes: Iterable[str] | None = None,
    *,
    start: TimeLike | None = None,
    end: TimeLike | None = None,
    windows: Mapping[str, int] | None = None,
    now: TimeLike | None = None,
    engines: EnginePool | None = None,
    dry_run: bool = False,
    actor: str | None = None,
) -> Verification:
    """Recompute the digests of the selected nodes' completed intervals in ``[start, end)``
    (naive bounds in each node's timezone; default: everything completed up to now) or, per
    node, the ``windows`` seconds before now, and restate the changed intervals and their
    downstream intervals (nothing recorded on a dry run).  One grouped query per source
    and node grid; ``engines`` is the door's pool (else one is opened and closed here)."""
    now_s = to_epoch(now) if now is not None else int(time.time())
    names = None if nodes is None else list(nodes)
    selected = [n for n in project.topological_order(names) if project.nodes[n].is_incremental
                and (windows is None or n in windows) and digest_sources(project, n)]
    result = Verification(dry_run=dry_run)
    if not selected:
        return result
    states = store.load()
    pool = engines if engines is not None else EnginePool(project)
    try:
        for name in selected:
            node = project.nodes[name]
            completed = states[name].completed if name in states else IntervalSet()
            if not completed:
                continue
            _, limit = node_bounds(node, now_s)
            if windows is not None:
                lo, hi = limit - windows[name], limit
            else:
                lo, hi = range_bounds(start, end, node.timezone)
                first = completed.pairs()[0][0]
                lo = first if lo is None else max(lo, first)
                hi = limit if hi is None else min(hi, limit)
            if lo >= hi:
                continue
            pairs = [p for p in overlapping_pairs(node.schedule, lo, hi)
                     if p[1] <= limit and completed.covers(*p)]
            stored = store.digests(name)
            recorded = [p for p in pairs if any(p[0] in per for per in stored.values())]
            have = set(recorded)
            missing = [p for p in pairs if p not in have]
            if missing:
                result.unverifiable[name] = missing
            if not recorded:
                continue
            result.checked[name] = len(recorded)
            fresh, problems = read_digests(pool.get(node.engine), project, name, recorded)
            result.problems += [f"{name}: {p}" for p in problems]
            changes: list[tuple[Pair, list[str]]] = []
            for pair in recorded:
                what = []
                for source, per in stored.items():
                    old, new = per.get(pair[0]), fresh[pair].get(source)
                    if old is None or new is None:
                        continue
                    change = describe_change(source, old, new)
                    if change:
                        what.append(f"{change} in {interval_label(node, pair)}")
                if what:
                    changes.append((pair, what))
            if changes:
                result.changed[name] = changes
                items = [w for _, ws in changes for w in ws]
                more = len(items) - REASON_ITEMS
                result.reasons[name] = ("late data: " + ", ".join(items[:REASON_ITEMS])
                                        + (f" and {more} more" if more > 0 else ""))
    finally:
        if engines is None:
            pool.close()
    if not result.changed:
        return result
    result.restated = _cascade(project, states, result.changed, now_s)
    if not dry_run:
        groups = [({n: IntervalSet.from_pairs(p for p, _ in ch)}, result.reasons[n])
                  for n, ch in result.changed.items()]
        own = {n: {p for p, _ in ch} for n, ch in result.changed.items()}
        downstream = {n: IntervalSet.from_pairs(q for q in p if q not in own.get(n, ()))
                      for n, p in result.restated.items()}
        downstream = {n: v for n, v in downstream.items() if v}
        if downstream:
            groups.append((downstream, f"late data upstream (downstream of {', '.join(result.changed)})"))
        store.record_plan(groups, {}, actor)
    return result


def _cascade(project: Project, states, changed: Mapping[str, list[tuple[Pair, list[str]]]],
             now_s: int) -> dict[str, list[Pair]]:
    """The changed intervals and, downstream, every completed interval overlapping a
    restated upstream one (as ``restate.restatement_impact`` spreads a restatement)."""
    impact = {n: [p for p, _ in ch] for n, ch in changed.items()}
    for name in project.topological_order():
        node = project.nodes[name]
        upstream = [u for u in project.upstream(name) if impact.get(u)]
        if not node.is_incremental or not upstream:
            continue
        _, limit = node_bounds(node, now_s)
        span = IntervalSet.from_pairs(p for u in upstream for p in impact[u])
        completed = states[name].completed if name in states else IntervalSet()
        pairs = [p for p in grid_pairs(node.schedule, span, limit)
                 if completed.overlaps((from_epoch(p[0]), from_epoch(p[1])))]
        if pairs:
            impact[name] = sorted(set(impact.get(name, [])) | set(pairs))
    return {n: p for n, p in impact.items() if p}


def verify_windows(project: Project, store: StateStore, nodes: Iterable[str] | None,
                   engines: EnginePool, *, now: TimeLike | None = None) -> list[str]:
    """``verify:`` on ``seeknal run``: each selected node that sets it verifies that window
    first; the run-level notes (one line when something was restated)."""
    windows = {n: project.nodes[n].verify for n in project.topological_order(nodes)
               if project.nodes[n].verify}
    if not windows:
        return []
    found = verify(project, store, list(windows), windows=windows, now=now, engines=engines)
    notes = [found.summary()] if found.restated else []
    notes += [f"late data: cannot verify {p}" for p in found.problems]
    return notes


__all__ = ["Verification", "describe_change", "verify", "verify_windows"]
