"""seeknal_dagster: a seeknal project as Dagster assets, checks, sensors and schedules.

Two entry points on one code path: the ``dg`` component ``SeeknalProjectComponent``
(``defs.yaml``: ``type: seeknal_dagster.SeeknalProjectComponent``) and the plain-Python
``build_definitions(project_path)``.  The pieces they are made of are exported for
projects that compose their own ``Definitions``.  seeknal_core never imports this
package, so the CLI stays free of Dagster.
"""

from .apply import APPLY_JOB, build_apply_job
from .assets import POOL, build_assets, build_source_specs
from .checks import CHECK_NAME, CHECKS_SENSOR, RECONCILE_SENSOR, RESTATEMENT_SENSOR
from .component import SeeknalProjectComponent
from .definitions import build_definitions
from .resource import SeeknalResource
from .schedules import build_jobs, build_schedules
from .sensors import build_sensors
from .translator import SeeknalTranslator, project_specs

__all__ = [
    "APPLY_JOB",
    "CHECKS_SENSOR",
    "CHECK_NAME",
    "POOL",
    "RECONCILE_SENSOR",
    "RESTATEMENT_SENSOR",
    "SeeknalProjectComponent",
    "SeeknalResource",
    "SeeknalTranslator",
    "build_apply_job",
    "build_assets",
    "build_definitions",
    "build_jobs",
    "build_schedules",
    "build_sensors",
    "build_source_specs",
    "project_specs",
]
