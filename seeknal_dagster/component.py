"""``SeeknalProjectComponent``: a seeknal project in a ``dg`` project, from one ``defs.yaml``.

.. code-block:: yaml

    type: seeknal_dagster.SeeknalProjectComponent
    attributes:
      project: "{{ context.project_root }}/seeknal_project"   # the seeknal project folder

Optional attributes cover what users customise (as dagster-dbt's ``DbtProjectComponent``
does): ``key_prefix`` and ``group_name`` (translation), ``nodes`` (which transforms),
``database``, ``resource_key`` (the DuckDB resource), ``pool``, ``sensors``/``checks``/``apply_job``
on or off, and ``automation`` (``conditions``, the default, or ``schedules``).  The
component builds its definitions through ``build_definitions``: one code path.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dagster as dg

from .assets import DUCKDB_RESOURCE_KEY, POOL
from .definitions import AUTOMATION, build_definitions
from .translator import SeeknalTranslator

_TEMPLATE = {"project": "{{ context.project_root }}/seeknal_project"}


class SeeknalProjectScaffolder(dg.Scaffolder):
    """``dg scaffold defs seeknal_dagster.SeeknalProjectComponent <name>``: a ``defs.yaml``
    pointing at ``<dg project>/seeknal_project`` (edit ``project`` if it lives elsewhere)."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        dg.scaffold_component(request, dict(_TEMPLATE))


@dg.scaffold_with(SeeknalProjectScaffolder)
@dataclass
class SeeknalProjectComponent(dg.Component, dg.Resolvable):
    """A seeknal project as partitioned assets, checks, sensors and automation."""

    project: str
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

    def project_path(self, context: dg.ComponentLoadContext) -> Path:
        """``project`` as written, relative paths read from the ``defs.yaml`` folder."""
        return (context.path / self.project).resolve()

    def get_translator(self) -> SeeknalTranslator:
        """Override in a subclass to customise keys, groups, metadata or automation."""
        return SeeknalTranslator(key_prefix=self.key_prefix or (), group_name=self.group_name)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return build_definitions(
            self.project_path(context), translator=self.get_translator(), database_path=self.database,
            resource_key=self.resource_key, pool=self.pool, sensors=self.sensors, checks=self.checks,
            automation=self.automation, nodes=self.nodes, apply_job=self.apply_job,
        )


__all__ = ["SeeknalProjectComponent", "SeeknalProjectScaffolder"]
