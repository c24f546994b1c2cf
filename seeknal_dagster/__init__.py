"""seeknal_dagster: a seeknal project as Dagster assets, checks, sensors and schedules.

``build_definitions(project_path)`` is the entry point; the pieces it is made of are
exported for projects that compose their own ``Definitions``.  seeknal_core never
imports this package, so the CLI stays free of Dagster.
"""

from .assets import POOL, build_assets, build_source_specs
from .checks import CHECK_NAME, build_asset_checks
from .definitions import build_definitions
from .schedules import build_jobs, build_schedules
from .sensors import CHECKS_SENSOR, RECONCILE_SENSOR, RESTATEMENT_SENSOR, build_sensors
from .translator import SeeknalTranslator

__all__ = [
    "CHECKS_SENSOR",
    "CHECK_NAME",
    "POOL",
    "RECONCILE_SENSOR",
    "RESTATEMENT_SENSOR",
    "SeeknalTranslator",
    "build_asset_checks",
    "build_assets",
    "build_definitions",
    "build_jobs",
    "build_schedules",
    "build_sensors",
    "build_source_specs",
]
