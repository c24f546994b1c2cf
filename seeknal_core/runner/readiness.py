"""Per-source readiness: hold planned intervals back until their inputs are in.

Planning says what the clock has made due (``end <= now``); readiness, applied by the
runner's one door between planning and execution, keeps back the intervals whose data
has not landed.  A source's ``ready:`` (``project.nodes.Ready``) decides:

* ``watermark`` (the default with a ``time_column``): ready once the source holds a row at
  or after the interval's start; ``strict``: at or after its end;
* ``sql``: the query returns one instant, complete up to it (ready when ``end <= instant``);
* ``python``: ``callable(source, intervals)`` returns the ready ones;
* ``always``: the clock alone.

An interval of a node waits when a source the node reads directly is not ready for it, or
when an upstream node of the same plan holds back an interval it overlaps (so the
downstream interval waits instead of being skipped and recorded failed).  Waiting
intervals are neither run nor recorded: the next command asks again.  Each source is
queried once per command (``Watermarks``), whatever the number of intervals or nodes,
and a ``watermark`` whose files have not changed since the last command is not queried
again (``watermark_cache``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from ..engines import EngineError, EnginePool, engine_kind
from ..errors import ProjectError, SeeknalError
from ..intervals import IntervalSet
from ..reasons import Reason
from ..timeutil import from_epoch, get_zone, to_epoch
from .common import Pair
from .due import Due
from .watermark_cache import WatermarkCache, now_ns, source_files

if TYPE_CHECKING:
    from ..project import Project, SourceNode, TransformNode
    from .plan import Plan


class ReadinessError(SeeknalError):
    """A source's readiness could not be decided (its query or callable failed): nothing ran."""


class Mark(NamedTuple):  # immutable like a frozen dataclass, ~0.4 ms less to create at start-up
    """What one source's readiness query found: its kind and instant (epoch seconds; the
    newest row for ``watermark``, "complete up to" for ``sql``; None: no data yet)."""

    source: str
    kind: str
    instant: int | None = None
    strict: bool = False

    def limit(self, node: TransformNode) -> int | None:
        """The tick up to which the node's intervals are ready (None: none is)."""
        schedule = node.schedule
        assert schedule is not None
        if self.instant is None:
            return None
        if self.kind == "watermark" and not self.strict:  # a row at or after the start
            return schedule.tick_after(schedule.tick_at_or_before(self.instant))
        return schedule.tick_at_or_before(self.instant)  # strict / sql: up to the end

    def text(self, timezone: str) -> str:
        """``data up to 2024-01-04 12:00`` in the node's zone (``no data yet``)."""
        if self.kind == "python":
            return ""
        if self.instant is None:
            return "no data yet"
        local = from_epoch(self.instant).astimezone(get_zone(timezone))
        verb = "complete up to" if self.kind == "sql" else "data up to"
        return f"{verb} {local:%Y-%m-%d %H:%M}"


class Waiting:  # a plain class: a dataclass costs every process ~0.1 ms to create
    """A node's intervals held back for one source (``due``: them, as runs)."""

    def __init__(self, source: str, mark: Mark, due: Due) -> None:
        self.source, self.mark, self.due = source, mark, due

    @property
    def count(self) -> int:
        return len(self.due)

    def line(self, node: str, timezone: str) -> str:
        """``daily_counts: 2 intervals waiting for raw_events (data up to 2024-01-04 12:00)``."""
        n = self.count
        detail = self.mark.text(timezone)
        return (f"{node}: {n} interval{'' if n == 1 else 's'} waiting for {self.source}"
                + (f" ({detail})" if detail else ""))

    def to_dict(self, timezone: str) -> dict:
        instant = self.mark.instant
        return {"source": self.source, "reason": Reason.WAITING, "count": self.count, "ready": self.mark.kind,
                "watermark": None if instant is None else from_epoch(instant).isoformat(),
                "local_watermark": None if instant is None
                else from_epoch(instant).astimezone(get_zone(timezone)).isoformat()}


class Watermarks:  # a plain class: a dataclass costs every process ~0.1 ms to create
    """Each source's readiness, asked once per command and kept (``marks``), through the
    engine of the node that reads it (``sql`` readiness runs in that engine's SQL).
    ``queries`` counts the queries made."""

    def __init__(self, project: Project, engines: EnginePool) -> None:
        self.project, self.engines = project, engines
        self.marks: dict[tuple[str, str, str], Mark] = {}
        self.queries = 0
        self.cache: WatermarkCache | None = None

    def mark(self, source: SourceNode, node: TransformNode) -> Mark:
        ready = source.readiness
        key = (source.name, node.engine, node.timezone)  # naive times read in the node's zone
        found = self.marks.get(key)
        if found is not None:
            return found
        files = self._files(source, node) if ready.kind == "watermark" else None
        cache_key = "|".join((node.engine, source.name, source.location or source.table or "",
                              ready.column or "", node.timezone))
        if files is not None:
            hit, instant = self._cache().get(cache_key, files)
            if hit:
                found = self.marks[key] = Mark(source.name, ready.kind, instant, ready.strict)
                return found
        taken = now_ns()
        engine = self.engines.get(node.engine)
        self.queries += 1
        try:
            if ready.kind == "watermark":
                instant = engine.latest(source, ready.column, node.timezone)
            else:
                instant = engine.instant(ready.query, node.timezone)
        except ProjectError:  # the project itself is wrong (a source no engine of the node can read)
            raise
        except (EngineError, SeeknalError) as exc:
            raise ReadinessError(
                f"source '{source.name}': readiness query failed: {exc} — fix the source or its "
                "ready: setting, or pass --ignore-readiness") from None
        if files is not None:
            self._cache().put(cache_key, files, instant, taken)
        found = self.marks[key] = Mark(source.name, ready.kind, instant, ready.strict)
        return found

    def _files(self, source: SourceNode, node: TransformNode) -> list[str] | None:
        """The files holding a watermark source's rows, when a stat can vouch for them."""
        if source.location is None and not (engine_kind(node.engine).reads_database
                                            and self.engines.project_own(node.engine)):
            return None
        return source_files(source.location, self.project.database_path)

    def _cache(self) -> WatermarkCache:
        if self.cache is None:
            self.cache = WatermarkCache(self.project.target_dir)
        return self.cache

    def save(self) -> None:
        """Keep what was asked for the next command (``target/readiness_cache.json``)."""
        if self.cache is not None:
            self.cache.save()


def direct_sources(project: Project, node: TransformNode) -> list[SourceNode]:
    """The declared sources a node reads directly whose readiness is not ``always``."""
    out = []
    for name in node.depends_on:
        source = project.sources.get(name)
        if source is not None and source.readiness.kind != "always":
            out.append(source)
    return out


def needs_database(project: Project, nodes: Iterable[TransformNode]) -> bool:
    """Whether a readiness query of these nodes reads the project's DuckDB file (a table
    source or a ``sql`` readiness): else engines open in memory (a dry run creates no file)."""
    return any(source.location is None or source.readiness.kind == "sql"
               for node in nodes for source in direct_sources(project, node))


def hold_back(project: Project, the_plan: Plan, engines: EnginePool) -> Watermarks:
    """Move every planned interval whose inputs are not ready from ``NodePlan.due`` to
    ``NodePlan.waiting`` (in place).  Raises ``ReadinessError`` when a source's readiness
    cannot be decided; queries nothing when nothing is due."""
    marks = Watermarks(project, engines)
    by_name = {node_plan.node: node_plan for node_plan in the_plan.nodes}
    python_ready = _python_ready(project, the_plan)
    for node_plan in the_plan.nodes:  # dependency order: upstream holds are known first
        if node_plan.full_refresh or not node_plan.due:
            continue
        node = project.nodes[node_plan.node]
        for source in direct_sources(project, node):
            if not node_plan.due:
                break
            if source.readiness.kind == "python":
                mark = Mark(source.name, "python")
                ready = python_ready[source.name]
                kept, held = _split(node_plan.due, lambda pair, ready=ready: pair in ready)
            else:
                mark = marks.mark(source, node)
                kept, held = _split_at(node_plan.due, mark.limit(node))
            if held:
                node_plan.due = kept
                node_plan.waiting.append(Waiting(source.name, mark, held))
        for upstream in node.depends_on:  # an upstream interval held back holds these back
            held_up = by_name.get(upstream)
            if held_up is None or not held_up.waiting or not node_plan.due:
                continue
            spans = IntervalSet.from_pairs(
                pair for waiting in held_up.waiting for pair in waiting.due.spans())
            kept, held = _split(node_plan.due, lambda pair, spans=spans: not spans.overlaps(
                (from_epoch(pair[0]), from_epoch(pair[1]))))
            if held:
                node_plan.due = kept
                node_plan.waiting.append(Waiting(held_up.waiting[0].source, held_up.waiting[0].mark, held))
    marks.save()
    return marks


def _split_at(due: Due, limit: int | None) -> tuple[Due, Due]:
    """(intervals ending by the tick ``limit``, the rest): by runs, nothing listed."""
    if limit is None:
        return Due(due.schedule), due
    kept = due.ending_by(limit)
    rest = [(max(a, limit), b, reason) for a, b, reason, _ in due.runs if b > limit]
    return kept, (Due.merged(due.schedule, rest) if rest else Due(due.schedule))


def _split(due: Due, ready) -> tuple[Due, Due]:
    """(the intervals ``ready(pair)`` accepts, the rest), interval by interval."""
    kept: dict[Pair, str] = {}
    held: dict[Pair, str] = {}
    for pair, reason in due.items():
        (kept if ready(pair) else held)[pair] = reason
    return Due.from_mapping(due.schedule, kept), Due.from_mapping(due.schedule, held)


def _python_ready(project: Project, the_plan: Plan) -> dict[str, set[Pair]]:
    """Per ``ready: {python: ...}`` source read by a planned node: the ready intervals,
    from one call of its callable with every planned interval of those nodes."""
    asked: dict[str, set[Pair]] = {}
    for node_plan in the_plan.nodes:
        if node_plan.full_refresh or not node_plan.due:
            continue
        for source in direct_sources(project, project.nodes[node_plan.node]):
            if source.readiness.kind == "python":
                asked.setdefault(source.name, set()).update(node_plan.due)
    return {name: ready_pairs(project.sources[name], sorted(pairs)) for name, pairs in asked.items()}


def load_callable(source: SourceNode):
    """The function a ``ready: {python: "pkg.mod:func"}`` names."""
    target = source.readiness.target or ""
    module, _, attr = target.partition(":")
    try:
        func = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ReadinessError(f"source '{source.name}': ready: python '{target}' cannot be loaded: "
                             f"{exc} — check the module is importable and defines {attr}") from None
    if not callable(func):
        raise ReadinessError(f"source '{source.name}': ready: python '{target}' is not callable")
    return func


def _pair(item: Iterable) -> Pair:
    a, b = item
    return (a if isinstance(a, int) else to_epoch(a)), (b if isinstance(b, int) else to_epoch(b))


def source_watermarks(project: Project, engines: EnginePool, nodes: Iterable[TransformNode]
                      ) -> dict[str, Mark]:
    """Each source the nodes read (``watermark``/``sql`` readiness), asked once:
    ``intervals show``'s watermark per source."""
    marks = Watermarks(project, engines)
    out: dict[str, Mark] = {}
    for node in nodes:
        for source in direct_sources(project, node):
            if source.name not in out and source.readiness.kind != "python":
                out[source.name] = marks.mark(source, node)
    marks.save()
    return out


def ready_pairs(source: SourceNode, pairs: list[Pair]) -> set[Pair]:
    """The ready ones of ``pairs`` by a ``python`` readiness: one call of its callable."""
    func = load_callable(source)
    try:
        answer = func(source, [(from_epoch(a), from_epoch(b)) for a, b in pairs])
        return {_pair(item) for item in (answer or ())}
    except Exception as exc:  # the user's code: any failure is theirs, said in one line
        raise ReadinessError(f"source '{source.name}': ready: python '{source.readiness.target}' failed: "
                             f"{type(exc).__name__}: {exc}") from None


__all__ = ["Mark", "ReadinessError", "Waiting", "Watermarks", "direct_sources", "hold_back", "needs_database",
           "load_callable", "ready_pairs", "source_watermarks"]
