"""The seed tutorial's Python API: a second way to write the same YAML nodes.

    project = Project(name="ecommerce").get_or_create()      # folder + seeknal_project.yml
    task = DuckDBTask().add_sql(
        "SELECT * FROM events WHERE event_time >= '__START__' AND event_time < '__END__'")
    flow = Flow(name="events_flow", input=FlowInput(kind="database", value="raw_events"),
                tasks=[task], output=FlowOutput())
    flow.set_interval_schedule(schedule="@daily")
    flow.save()                                   # seeknal/transforms/events_flow.yml
    Flow.load("events_flow").interval_schedule    # '@daily'

A saved flow is an ordinary transform: ``load_project`` reads it like any YAML node.
How a flow becomes one SQL query:

* The input is a dependency of the node.  A table input (``database``/``table``/
  ``source``) that the project does not declare gets a source file
  (``seeknal/sources/<value>.yml``, ``table: <value>``); a file input (``parquet``/``csv``)
  becomes the source ``<flow>_input``.
* ``__THIS__`` is the previous step's result; in the first step, the input.
* If the first step reads neither ``__THIS__`` nor the input by name, the first table
  it reads that the project does not declare is taken as the input's alias, so the
  tutorial's ``FROM events`` over ``raw_events`` works: the node's SQL starts with
  ``WITH events AS (SELECT * FROM {{ ref('raw_events') }})``.
* Several SQL steps are chained as CTEs ``__step1``, ``__step2``, ...; the last step
  is the node's result.

The original input and steps are kept under ``meta.flow`` so ``Flow.load`` gives back
the flow as written; a node edited by hand (or written in YAML) loads as a one-step
flow holding its SQL.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import project as _project
from .durable import atomic_write
from .errors import ProjectError
from .schedule import Schedule
from .timeutil import to_utc

RELATION_KINDS = ("database", "table", "source")
FILE_KINDS = ("parquet", "csv")
_THIS = re.compile(r"\b__THIS__\b")
_MODELLED = {
    "schedule", "timezone", "start", "time_column", "partition_tracking", "materialization",
    "description", "sql", "meta", "depends_on",
}
_CURRENT: FlowProject | None = None


@dataclass(frozen=True)
class FlowInput:
    """What a flow reads: a table/source name, or Parquet/CSV files (path or glob)."""

    kind: str = "source"
    value: str = ""

    def __post_init__(self) -> None:
        if self.kind not in RELATION_KINDS + FILE_KINDS:
            raise ProjectError(f"unknown FlowInput kind '{self.kind}'"
                               + (_project.did_you_mean(self.kind, RELATION_KINDS + FILE_KINDS)
                                  or " — use database, table, source, parquet or csv"))
        if not isinstance(self.value, str) or not self.value.strip():
            raise ProjectError(f"FlowInput(kind='{self.kind}') needs a value: "
                               + ("a table name" if self.kind in RELATION_KINDS else "a path"))
        if self.kind in RELATION_KINDS and not _project.NODE_NAME.match(self.value):
            raise ProjectError(f"FlowInput value '{self.value}' is not a table name: use "
                               "letters, digits and underscores")


@dataclass(frozen=True)
class FlowOutput:
    """Where a flow writes: its own table; ``kind`` overrides the materialization."""

    kind: str | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in _project.MATERIALIZATIONS:
            raise ProjectError(f"unknown FlowOutput kind '{self.kind}' — use one of "
                               + ", ".join(_project.MATERIALIZATIONS))


class DuckDBTask:
    """A list of SQL steps; each reads the previous one as ``__THIS__``."""

    def __init__(self, sql: str | None = None):
        self.sqls: list[str] = []
        if sql is not None:
            self.add_sql(sql)

    def add_sql(self, sql: str) -> DuckDBTask:
        if not isinstance(sql, str) or not sql.strip():
            raise ProjectError("DuckDBTask.add_sql needs a non-empty SQL string")
        self.sqls.append(sql)
        return self


class FlowProject:
    """A project folder, created on demand; ``get_or_create`` makes it the current one.

    Users know it as ``seeknal_core.flow.Project`` (the tutorial's name, an alias below);
    the name here keeps it apart from the loaded ``seeknal_core.project.Project``.
    """

    def __init__(self, name: str | None = None, path: str | os.PathLike | None = None,
                 timezone: str = "UTC", description: str | None = None):
        self.name = name
        self.root = Path(path if path is not None else os.getcwd()).expanduser().resolve()
        self.timezone = timezone
        self.description = description

    def __repr__(self) -> str:
        return f"Project(name={self.name!r}, path={str(self.root)!r})"

    def get_or_create(self) -> FlowProject:
        """Create the folder layout and seeknal_project.yml when missing; keep existing ones."""
        global _CURRENT
        for folder in (_project.TRANSFORMS_DIR, _project.SOURCES_DIR):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        config = next((self.root / f for f in _project.PROJECT_FILES
                       if (self.root / f).is_file()), None)
        if config is None:
            settings: dict[str, Any] = {"name": self.name or self.root.name}
            if self.description:
                settings["description"] = self.description
            settings.update(timezone=self.timezone, database=_project.DEFAULT_DATABASE,
                            state=dict(_project.DEFAULT_STATE))
            _atomic_write(self.root / _project.PROJECT_FILES[0], _dump(settings))
        else:  # an existing project keeps its settings (and its name)
            settings = _project.read_yaml(config, self.root) or {}
        self.name = settings.get("name") or self.root.name
        _CURRENT = self
        return self

    def load(self) -> _project.Project:
        """The validated project (see ``seeknal_core.project.load_project``)."""
        return _project.load_project(self.root)


def current_project() -> FlowProject | None:
    """The project set by the last ``Project.get_or_create()``."""
    return _CURRENT


def _root_of(project: FlowProject | str | os.PathLike | None) -> Path:
    if isinstance(project, FlowProject):
        return project.root
    if project is not None:
        return _project.find_root(project)[0]
    if _CURRENT is not None:
        return _CURRENT.root
    try:
        return _project.find_root(".")[0]
    except ProjectError:
        raise ProjectError(
            "no current project: call Project(name=..., path=...).get_or_create() first, "
            "or pass project=<folder>"
        ) from None


#: the tutorial's name for :class:`FlowProject`
Project = FlowProject


class Flow:
    """One transform node defined in Python: an input, SQL steps and a schedule."""

    def __init__(
        self,
        name: str,
        input: FlowInput | None = None,
        tasks: list[DuckDBTask | str] | None = None,
        output: FlowOutput | None = None,
        description: str | None = None,
        time_column: str | None = None,
    ):
        if not isinstance(name, str) or not _project.NODE_NAME.match(name):
            raise ProjectError(f"invalid flow name {name!r}: use letters, digits and "
                               "underscores, starting with a letter or underscore")
        self.name = name
        self.input = input
        self.tasks = list(tasks or [])
        self.output = output or FlowOutput()
        self.description = description
        self.time_column = time_column
        self.interval_schedule: str | None = None
        self.timezone: str | None = None
        self.start: dt.date | dt.datetime | str | None = None
        self.partition_column: str | None = None
        self.partition_format: str | None = None
        self._extra: dict[str, Any] = {}  # fields a loaded YAML node had that Flow does not model

    def __repr__(self) -> str:
        return f"Flow({self.name!r}, input={self.input!r}, schedule={self.interval_schedule!r})"

    def set_interval_schedule(
        self, schedule: str = "@daily", timezone: str | None = None,
        start: dt.date | dt.datetime | str | None = None,
    ) -> Flow:
        """Schedule the flow (cron or preset); timezone/start default to the project's."""
        try:
            Schedule(schedule, timezone or "UTC")
            if start is not None:
                to_utc(start, timezone or "UTC")
        except (ValueError, TypeError) as exc:
            raise ProjectError(f"flow '{self.name}': {exc}") from None
        self.interval_schedule, self.timezone = schedule, timezone
        if start is not None:
            self.start = start
        return self

    def set_partition_tracking(
        self, partition_column: str, partition_format: str = "%Y-%m-%d"
    ) -> Flow:
        """Record the output column holding a partition key in ``partition_format``."""
        self.partition_column, self.partition_format = partition_column, partition_format
        return self

    # -- SQL ------------------------------------------------------------------------------
    @property
    def steps(self) -> list[str]:
        out = []
        for task in self.tasks:
            sqls = [task] if isinstance(task, str) else task.sqls
            out += [s.strip().rstrip(";").rstrip() for s in sqls]
        return out

    def _input_name(self) -> str | None:
        if self.input is None:
            return None
        return self.input.value if self.input.kind in RELATION_KINDS else f"{self.name}_input"

    def compose_sql(self, declared: set[str] = frozenset()) -> str:
        """The node's SQL; ``declared`` holds lower-case names the project already defines."""
        steps = self.steps
        if not steps:
            raise ProjectError(f"flow '{self.name}' has no SQL: add DuckDBTask().add_sql(...)")
        source = self._input_name()
        previous = f"{{{{ ref('{source}') }}}}" if source else None
        ctes = []
        alias = _input_alias(steps[0], source, declared | {self.name.lower()})
        if alias:
            ctes.append(f"{_quote(alias)} AS (SELECT * FROM {previous})")
        final = ""
        for k, step in enumerate(steps, 1):
            if previous is None and _THIS.search(step):
                raise ProjectError(f"flow '{self.name}' step {k} reads __THIS__ but the flow "
                                   "has no input: set input=FlowInput(...)")
            body = _THIS.sub(lambda _m, p=previous: p, step) if previous else step
            if k < len(steps):
                ctes.append(f"__step{k} AS (\n{body}\n)")
                previous = f"__step{k}"
            else:
                final = body
        if ctes and _starts_with_with(final):
            ctes.append(f"__step{len(steps)} AS (\n{final}\n)")
            final = f"SELECT * FROM __step{len(steps)}"
        return ("WITH " + ",\n".join(ctes) + "\n" + final if ctes else final) + "\n"

    def to_spec(self, declared: set[str] = frozenset()) -> dict[str, Any]:
        """The YAML fields of the node this flow defines."""
        spec: dict[str, Any] = {}
        if self.description:
            spec["description"] = self.description
        if self.interval_schedule:
            spec["schedule"] = self.interval_schedule
        if self.timezone:
            spec["timezone"] = self.timezone
        if self.start is not None:
            spec["start"] = (self.start.isoformat() if isinstance(self.start, dt.datetime)
                             else self.start)
        if self.output.kind:
            spec["materialization"] = self.output.kind
        if self.time_column:
            spec["time_column"] = self.time_column
        if self.partition_column:
            spec["partition_tracking"] = {"column": self.partition_column,
                                          "format": self.partition_format or "%Y-%m-%d"}
        extra = dict(self._extra)
        meta = dict(extra.pop("meta", None) or {})
        depends = [*extra.pop("depends_on", ())]
        if self._input_name():
            depends.insert(0, self._input_name())
        if depends:
            spec["depends_on"] = list(dict.fromkeys(depends))
        spec.update(extra)
        spec["sql"] = self.compose_sql(declared)
        meta["flow"] = {
            "input": {"kind": self.input.kind, "value": self.input.value} if self.input else None,
            "steps": self.steps,
        }
        spec["meta"] = meta
        return spec

    # -- persistence ----------------------------------------------------------------------
    def save(self, project: FlowProject | str | os.PathLike | None = None) -> _project.TransformNode:
        """Write the node (and its input source when new); validate; roll back on error."""
        root = _root_of(project)
        declared = _project.declared_names(root)
        backups: list[tuple[Path, bytes | None]] = []
        try:
            source = self._input_name()
            if self.input is not None and self.input.kind in FILE_KINDS:
                spec = {"path": self.input.value, "format": self.input.kind}
                path = _declaring_file(root, source, "source") or (
                    root / _project.SOURCES_DIR / f"{source}.yml")
                backups.append(_write_node(path, source, spec))
            elif source is not None and source.lower() not in declared:
                path = root / _project.SOURCES_DIR / f"{source}.yml"
                backups.append(_write_node(path, source, {"table": source}))
            path = _declaring_file(root, self.name, "transform") or (
                root / _project.TRANSFORMS_DIR / f"{self.name}.yml")
            backups.append(_write_node(path, self.name, self.to_spec(declared)))
            return _project.load_project(root).node(self.name)
        except BaseException:
            for path, old in reversed(backups):
                if old is None:
                    path.unlink(missing_ok=True)
                else:
                    _atomic_write(path, old.decode("utf-8"))
            raise

    @classmethod
    def load(cls, name: str, project: FlowProject | str | os.PathLike | None = None) -> Flow:
        """The flow (or plain YAML node) ``name`` of the current project."""
        root = _root_of(project)
        node = _project.load_project(root).node(name)
        raw = _project.read_yaml(node.path)[node.name]
        meta = dict(raw.get("meta") or {})
        saved = meta.pop("flow", None)
        tracking = raw.get("partition_tracking") or {}
        flow = cls(node.name, description=raw.get("description"),
                   time_column=raw.get("time_column"),
                   output=FlowOutput(raw.get("materialization")))
        flow.interval_schedule, flow.timezone = raw.get("schedule"), raw.get("timezone")
        flow.start = raw.get("start")
        flow.partition_column = tracking.get("column")
        flow.partition_format = tracking.get("format")
        flow._extra = {k: v for k, v in raw.items() if k not in _MODELLED}
        if meta:
            flow._extra["meta"] = meta
        explicit = raw.get("depends_on") or []
        depends = [explicit] if isinstance(explicit, str) else list(explicit)
        if not flow._restore(saved, raw["sql"], depends, _project.declared_names(root)):
            # written or edited by hand: the node's SQL is the single step
            flow.input, flow.tasks = None, [DuckDBTask(raw["sql"])]
            if depends:
                flow._extra["depends_on"] = depends
        return flow

    def _restore(self, saved: Any, sql: str, depends: list[str], declared: set[str]) -> bool:
        """Rebuild input and steps from ``meta.flow``; True when they still give ``sql``."""
        if not isinstance(saved, dict) or not saved.get("steps"):
            return False
        try:
            self.input = FlowInput(**saved["input"]) if saved.get("input") else None
            self.tasks = [DuckDBTask(step) for step in saved["steps"]]
            rest = [d for d in depends if d != self._input_name()]
            if rest:
                self._extra["depends_on"] = rest
            return self.compose_sql(declared) == sql
        except (TypeError, ProjectError):
            return False


# -- helpers -----------------------------------------------------------------------------
def _input_alias(first_step: str, source: str | None, declared: set[str]) -> str | None:
    if source is None or _THIS.search(first_step):
        return None
    for table in _project.table_references(first_step):
        low = table.lower()
        if low == source.lower():
            return None
        if low not in declared:
            return table
    return None


def _starts_with_with(sql: str) -> bool:
    words = _project.strip_comments(sql).split(None, 1)
    return bool(words) and words[0].upper() == "WITH"


def _quote(name: str) -> str:
    return name if _project.NODE_NAME.match(name) else '"' + name.replace('"', '""') + '"'


def _declaring_file(root: Path, name: str, kind: str) -> Path | None:
    for file_kind, path in _project.node_files(root):
        if file_kind != kind:
            continue
        try:
            data = _project.read_yaml(path)
        except ProjectError:
            continue
        if isinstance(data, dict) and any(str(k).lower() == name.lower() for k in data):
            return path
    return None


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so saved SQL stays readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _dump(data: dict) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _write_node(path: Path, name: str, spec: dict) -> tuple[Path, bytes | None]:
    """Set node ``name`` in ``path`` (other nodes in the file are kept); returns a backup."""
    old = path.read_bytes() if path.exists() else None
    current = _project.read_yaml(path) if old is not None else None
    data: dict = {}
    for key, value in (current.items() if isinstance(current, dict) else ()):
        data[name if str(key).lower() == name.lower() else key] = (
            spec if str(key).lower() == name.lower() else value)
    data[name] = spec
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, _dump(data))
    return path, old


def _atomic_write(path: Path, text: str) -> None:
    atomic_write(path, text.encode("utf-8"))
