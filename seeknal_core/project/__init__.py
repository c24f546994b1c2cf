"""A seeknal project: its settings, its nodes (sources and SQL transforms) and their DAG.

Layout::

    seeknal_project.yml         name, timezone, start, end, state, database, engine,
                                dialect, on_change (all optional)
    seeknal/sources/*.yml       external inputs: a DuckDB table or Parquet/CSV files
    seeknal/transforms/*.yml    SQL transforms, several per file, keyed by node name

Modules: ``sql`` (table references, ``ref()``, time column, normalised SQL),
``fingerprint`` (the token digest fingerprints hash),
``nodes`` (TransformNode, SourceNode), ``graph`` (Project and its topological order),
``fields`` (validation of one mapping, one-line errors), ``loader`` (files and YAML).
Loading validates everything a user can get wrong and reports it as one
``ProjectError`` line naming the file, the node and the field.  Nothing here imports
duckdb, jinja2 or sqlglot while loading: the CLI loads projects for quick commands
(``seeknal intervals``) that must stay cheap.
"""

from ..errors import ProjectError, did_you_mean
from ..templating import split_id
from .graph import Project
from .loader import declared_names, find_root, load_project, node_files, read_yaml
from .nodes import (
    DEFAULT_DATABASE,
    DEFAULT_STATE,
    INTERVAL_MATERIALIZATIONS,
    MATERIALIZATIONS,
    NODE_NAME,
    ON_CHANGE,
    PROJECT_FILES,
    READY_KINDS,
    SOURCES_DIR,
    TRANSFORMS_DIR,
    Ready,
    SourceNode,
    TransformNode,
)
from .sql import (
    DEFAULT_DIALECT,
    infer_time_column,
    normalize_sql,
    ref_names,
    strip_comments,
    table_references,
)

__all__ = [
    "DEFAULT_DATABASE", "DEFAULT_DIALECT", "DEFAULT_STATE", "INTERVAL_MATERIALIZATIONS",
    "MATERIALIZATIONS", "NODE_NAME", "ON_CHANGE", "PROJECT_FILES", "READY_KINDS", "Ready", "SOURCES_DIR",
    "TRANSFORMS_DIR", "Project",
    "ProjectError", "SourceNode", "TransformNode", "declared_names", "did_you_mean", "find_root",
    "infer_time_column", "load_project", "node_files", "normalize_sql", "read_yaml", "ref_names",
    "split_id", "strip_comments", "table_references",
]
