"""The example project's Dagster code location (loaded by the repository's workspace.yaml).

    dagster dev -w workspace.yaml
"""

from pathlib import Path

from seeknal_dagster import build_definitions

defs = build_definitions(Path(__file__).resolve().parent)
