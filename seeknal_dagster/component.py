"""``SeeknalProjectComponent``: a seeknal project in a ``dg`` project, from one ``defs.yaml``.

.. code-block:: yaml

    type: seeknal_dagster.SeeknalProjectComponent
    attributes:
      project: "{{ context.project_root }}/seeknal_project"   # the seeknal project folder

Optional attributes cover what users customise, as dagster-dbt's ``DbtProjectComponent``
does: ``translation`` (per-node asset attributes, templated with ``{{ node.name }}``,
``{{ node.tags }}``, ...), ``select``/``exclude`` (node names or ``tag:x``), ``key_prefix``,
``group_name``, ``database``, ``resource_key``, ``pool``, ``sensors``/``checks``/``apply_job``,
``automation`` and ``lineage``.  Subclasses override ``execute(context, seeknal, step)`` to wrap each
step, or ``get_translator``.  The component builds through ``build_definitions``: one
code path.
"""


import atexit
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import BaseModel

from seeknal_core.errors import SeeknalError
from seeknal_core.project import PROJECT_FILES, Project, SourceNode, TransformNode

from .assets import DUCKDB_RESOURCE_KEY, POOL, SeeknalStep, as_project
from .definitions import AUTOMATION, build_definitions
from .resource import SeeknalResource
from .translator import SeeknalTranslator

#: ``{{ node.* }}`` in ``translation``: what a template can read about a node
Translation = Callable[[TransformNode | SourceNode], Mapping[str, Any]]
_SKIP_DIRS = {".venv", "venv", "node_modules", "target", "__pycache__"}
_OPTIONAL = """\
  # optional (defaults shown or described):
  # select: [hourly_events, "tag:core"]      # node names or tags; default: every transform
  # exclude: ["tag:experimental"]
  # translation:                             # per node; {{ node.name }}, {{ node.tags }}, ...
  #   group_name: marts
  #   tags: {team: data}
  #   key_prefix: [warehouse]
  # key_prefix: [shop]
  # group_name: marts                        # default: the project's name
  # database: target/warehouse.duckdb        # default: the project's `database:`
  # resource_key: duckdb
  # pool: seeknal_duckdb
  # sensors: true
  # checks: true
  # apply_job: true
  # automation: conditions                   # or schedules, none
  # lineage: true                            # dagster/column_lineage from the SQL
"""


class SeeknalScaffoldParams(BaseModel):
    """``dg scaffold defs seeknal_dagster.SeeknalProjectComponent NAME --project PATH``."""

    project: str | None = None


def find_project_folder(start: Path, root: Path | None) -> Path | None:
    """The seeknal project a new ``defs.yaml`` points at: the nearest folder holding
    ``seeknal_project.yml`` from ``start`` up to the ``dg`` project root, else the
    shallowest one under that root."""
    stop = (root or start).resolve()
    here = start.resolve()
    while True:
        if any((here / f).is_file() for f in PROJECT_FILES):
            return here
        if here == stop or here.parent == here:
            break
        here = here.parent
    level = [stop]
    while level:
        found = sorted(d for d in level if any((d / f).is_file() for f in PROJECT_FILES))
        if found:
            return found[0]
        level = [c for d in level for c in sorted(d.iterdir())
                 if c.is_dir() and not c.name.startswith(".") and c.name not in _SKIP_DIRS]
    return None


class SeeknalProjectScaffolder(dg.Scaffolder[SeeknalScaffoldParams]):
    """Writes a ``defs.yaml`` that loads: ``project`` is the ``--project`` param or the
    seeknal project found from the target folder; the optional attributes as comments."""

    @classmethod
    def get_scaffold_params(cls) -> type[SeeknalScaffoldParams]:
        return SeeknalScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[SeeknalScaffoldParams]) -> None:
        root = Path(request.project_root or request.target_path).resolve()
        given = request.params.project if request.params else None
        folder = (root / given).resolve() if given else find_project_folder(request.target_path, root)
        if folder is None or not any((folder / f).is_file() for f in PROJECT_FILES):
            where = f"'{given}'" if given else f"{root} (no seeknal_project.yml found)"
            raise SeeknalError(f"no seeknal project at {where}: pass --project PATH (the folder with "
                               "seeknal_project.yml, relative to the dg project)")
        try:
            project = "{{ context.project_root }}/" + folder.relative_to(root).as_posix()
        except ValueError:
            project = folder.as_posix()
        text = (f"type: {request.type_name}\n\nattributes:\n  project: \"{project}\"\n" + _OPTIONAL)
        path = request.target_path / "defs.yaml"
        if request.append:
            with open(path, "a", encoding="utf-8") as out:
                out.write("---\n" + text)
        else:
            path.write_text(text, encoding="utf-8")


def _node_scope(node: TransformNode | SourceNode) -> dict[str, Any]:
    scope: dict[str, Any] = {"name": node.name, "tags": list(getattr(node, "tags", ()) or ()),
                             "description": node.description or "", "meta": dict(node.meta or {})
                             if isinstance(getattr(node, "meta", None), Mapping) else {}}
    if isinstance(node, TransformNode):
        scope.update(kind="transform", materialization=node.materialization, engine=node.engine,
                     schedule=node.schedule.cron if node.schedule else None, timezone=node.timezone)
    else:
        scope.update(kind="source")
    return scope


def _resolve_translation(context: dg.ResolutionContext, model: Any) -> Translation | None:
    """``translation`` resolved per node, with ``node`` in the template scope."""
    if model is None:
        return None
    if not isinstance(model, Mapping):
        raise SeeknalError("translation: expected a mapping of asset attributes (group_name, tags, ...)")

    def translate(node: TransformNode | SourceNode) -> Mapping[str, Any]:
        return context.with_scope(node=_node_scope(node)).resolve_value(dict(model)) or {}

    return translate


class ComponentTranslator(SeeknalTranslator):
    """``SeeknalTranslator`` plus the component's ``translation``: keys (``key``,
    ``key_prefix``) through ``get_asset_key`` so deps follow, the rest merged into the spec."""

    def __init__(self, translation: Translation | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.translation = translation
        self._resolved: dict[tuple[str, str], Mapping[str, Any]] = {}

    def attributes(self, node: TransformNode | SourceNode) -> Mapping[str, Any]:
        if self.translation is None:
            return {}
        key = (type(node).__name__, node.name)
        if key not in self._resolved:
            self._resolved[key] = self.translation(node)
        return self._resolved[key]

    def _key(self, node: TransformNode | SourceNode, base: dg.AssetKey) -> dg.AssetKey:
        attrs = self.attributes(node)
        key = attrs.get("key")
        key = (dg.AssetKey.from_user_string(key) if isinstance(key, str) else dg.AssetKey(list(key))
               ) if key else base
        prefix = attrs.get("key_prefix")
        if prefix:
            key = key.with_prefix([prefix] if isinstance(prefix, str) else list(prefix))
        return key

    def get_asset_key(self, node: TransformNode) -> dg.AssetKey:
        return self._key(node, super().get_asset_key(node))

    def get_source_asset_key(self, source: SourceNode) -> dg.AssetKey:
        return self._key(source, super().get_source_asset_key(source))

    def get_asset_spec(self, node: TransformNode | SourceNode, project: Project) -> dg.AssetSpec:
        spec = super().get_asset_spec(node, project)
        attrs = self.attributes(node)
        replace = {k: attrs[k] for k in ("group_name", "description", "owners", "code_version")
                   if attrs.get(k) is not None}
        merge = {k: attrs[k] for k in ("tags", "metadata", "kinds") if attrs.get(k)}
        if "kinds" in merge:
            merge["kinds"] = set(merge["kinds"])
        return spec.replace_attributes(**replace).merge_attributes(**merge) if replace or merge else spec


def select_nodes(project: Project, select: Sequence[str] | None, exclude: Sequence[str] | None
                 ) -> list[str] | None:
    """Transform names matching ``select`` (all when None) minus ``exclude``: each item a
    node name or ``tag:NAME``; an item matching nothing is an error naming it."""
    if select is None and not exclude:
        return None

    def matching(item: str) -> set[str]:
        if item.startswith("tag:"):
            tag = item[4:]
            found = {n for n, node in project.nodes.items() if tag in (node.tags or ())}
        else:
            found = {item} if item in project.nodes else set()
        if not found:
            raise SeeknalError(f"select/exclude: '{item}' matches no transform of project "
                               f"'{project.name}': use a node name or tag:NAME")
        return found

    chosen = set(project.nodes) if select is None else set().union(*(matching(i) for i in select))
    chosen -= set().union(*(matching(i) for i in exclude or ()))
    return project.topological_order(chosen)


@dg.scaffold_with(SeeknalProjectScaffolder)
@dataclass
class SeeknalProjectComponent(dg.Component, dg.Resolvable):
    """A seeknal project as partitioned assets, checks, sensors and automation."""

    project: str
    translation: Annotated[
        Translation | None,
        dg.Resolver(_resolve_translation, model_field_type=dict[str, Any] | None, inject_before_resolve=False,
                    description="Asset attributes per node (group_name, tags, metadata, owners, kinds, "
                                "description, key, key_prefix), templated with {{ node.name }} etc."),
    ] = None
    select: list[str] | None = None
    exclude: list[str] | None = None
    key_prefix: list[str] | None = None
    group_name: str | None = None
    nodes: list[str] | None = None
    database: str | None = None
    resource_key: str = DUCKDB_RESOURCE_KEY
    pool: str | None = POOL
    sensors: bool = True
    checks: bool = True
    apply_job: bool = True
    automation: Literal["conditions", "schedules", "none"] = AUTOMATION  # type: ignore[assignment]
    lineage: bool = True

    def project_path(self, context: dg.ComponentLoadContext) -> Path:
        """``project`` as written, relative paths read from the ``defs.yaml`` folder."""
        return (context.path / self.project).resolve()

    def get_translator(self) -> SeeknalTranslator:
        """Override in a subclass to customise keys, groups, metadata or automation."""
        return ComponentTranslator(self.translation, key_prefix=self.key_prefix or (),
                                   group_name=self.group_name, lineage=self.lineage)

    def execute(self, context: dg.AssetExecutionContext, seeknal: SeeknalResource,
                step: SeeknalStep) -> Iterator[Any]:
        """What each asset step runs (as ``DbtProjectComponent.execute``): override to add
        work around it; ``step.run(context, seeknal)`` computes the step's nodes."""
        yield from step.run(context, seeknal)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        try:
            project = as_project(self.project_path(context))
            nodes = select_nodes(project, self.select, self.exclude)
            if self.nodes is not None:
                nodes = [n for n in (nodes or project.topological_order()) if n in set(self.nodes)] \
                    if nodes is not None else list(self.nodes)
            return build_definitions(
                project, translator=self.get_translator(), database_path=self.database,
                resource_key=self.resource_key, pool=self.pool, sensors=self.sensors, checks=self.checks,
                automation=self.automation, nodes=nodes, apply_job=self.apply_job,
                execute=lambda ctx, *, seeknal, step: self.execute(ctx, seeknal, step),
            )
        except SeeknalError as exc:
            line = f"{context.path / 'defs.yaml'}: {exc}"
            if os.environ.get("DAGSTER_IS_DEFS_VALIDATION_CLI"):  # `dg check defs`, in this process
                # Dagster ends with its own summary after the trace: seeknal's line comes last
                atexit.register(print, line, flush=True)
            raise SeeknalError(line) from None


__all__ = ["ComponentTranslator", "SeeknalProjectComponent", "SeeknalProjectScaffolder", "select_nodes"]
