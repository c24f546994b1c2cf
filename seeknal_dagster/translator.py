"""How seeknal nodes become Dagster asset specs: keys, groups, descriptions, metadata, tags.

Modelled on dagster-dbt's ``DagsterDbtTranslator``: subclass ``SeeknalTranslator`` and
override a method to change one aspect everywhere (assets, sources, checks, sensors and
schedules all ask the same translator, so a custom key is used consistently).

A node can also carry Dagster settings in its YAML without any Python, under
``meta: {dagster: {...}}`` (``asset_key``, ``group``, ``owners``), as dbt's
``meta.dagster`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from seeknal_core.project import Project, SourceNode, TransformNode

_GROUP = re.compile(r"[^A-Za-z0-9_]+")
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,63}$")


def _dagster_meta(node: TransformNode | SourceNode) -> Mapping[str, Any]:
    meta = getattr(node, "meta", None) or {}
    value = meta.get("dagster") if isinstance(meta, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def group_name_for(project: Project) -> str:
    """The project name as a valid Dagster group name (letters, digits, underscores)."""
    return _GROUP.sub("_", project.name).strip("_") or "seeknal"


class SeeknalTranslator:
    """Maps seeknal transforms and sources to Dagster asset properties.

    ``key_prefix`` prefixes every key (transforms and sources), ``group_name`` replaces
    the default group (the project name).
    """

    def __init__(self, *, key_prefix: str | Sequence[str] = (), group_name: str | None = None):
        self.key_prefix = [key_prefix] if isinstance(key_prefix, str) else list(key_prefix)
        self.group_name = group_name

    # -- keys -------------------------------------------------------------------------------
    def get_asset_key(self, node: TransformNode) -> dg.AssetKey:
        """``meta.dagster.asset_key`` (a list or ``a/b``) or the node's name, prefixed."""
        custom = _dagster_meta(node).get("asset_key")
        if isinstance(custom, str) and custom:
            return dg.AssetKey.from_user_string(custom)
        if isinstance(custom, list) and custom:
            return dg.AssetKey([str(part) for part in custom])
        return dg.AssetKey([*self.key_prefix, node.name])

    def get_source_asset_key(self, source: SourceNode) -> dg.AssetKey:
        """External input: the source's name, prefixed like the transforms."""
        return dg.AssetKey([*self.key_prefix, source.name])

    # -- presentation -----------------------------------------------------------------------
    def get_group_name(self, node: TransformNode | SourceNode) -> str | None:
        """``meta.dagster.group``, else the translator's ``group_name``; None: the project's."""
        return _dagster_meta(node).get("group") or self.group_name

    def get_description(self, node: TransformNode | SourceNode) -> str | None:
        if isinstance(node, SourceNode):
            where = node.location or f"table {node.table}"
            return (node.description or f"seeknal source '{node.name}'") + f"\n\nReads {where}."
        text = node.description or f"seeknal transform '{node.name}'"
        return f"{text}\n\n```sql\n{node.sql.strip()}\n```"

    def get_metadata(self, node: TransformNode | SourceNode) -> Mapping[str, Any]:
        """What a reader of the asset page wants to know without opening the YAML."""
        if isinstance(node, SourceNode):
            meta: dict[str, Any] = {"seeknal/kind": "source"}
            if node.location:
                meta["seeknal/location"] = node.location
                meta["seeknal/format"] = node.format or ""
            else:
                meta["dagster/table_name"] = node.table or node.name
            if node.time_column:
                meta["seeknal/time_column"] = node.time_column
            return meta
        meta = {
            "seeknal/kind": "transform",
            "seeknal/materialization": node.materialization,
            "dagster/table_name": node.name,
        }
        if node.schedule is not None:
            meta["seeknal/schedule"] = node.schedule.cron
            meta["seeknal/timezone"] = node.timezone
        if node.start is not None:
            meta["seeknal/start"] = node.start.isoformat()
        if node.time_column:
            meta["seeknal/time_column"] = node.time_column
        if node.batch_size:
            meta["seeknal/batch_size"] = node.batch_size
        if node.lookback:
            meta["seeknal/lookback"] = node.lookback
        if node.partition_column:
            meta["seeknal/partition_column"] = node.partition_column
        if node.path is not None:
            meta["seeknal/path"] = str(node.path)
        return meta

    def get_tags(self, node: TransformNode | SourceNode) -> Mapping[str, str]:
        """seeknal tags as valueless Dagster tags (as dagster-dbt maps dbt tags)."""
        return {t: "" for t in getattr(node, "tags", ()) if _TAG_KEY.match(t)}

    def get_owners(self, node: TransformNode | SourceNode) -> Sequence[str] | None:
        owners = _dagster_meta(node).get("owners")
        if isinstance(owners, str):
            return [owners]
        return list(owners) if owners else None

    def get_kinds(self, node: TransformNode | SourceNode) -> set[str]:
        if isinstance(node, SourceNode):
            return {node.format or "duckdb"}
        return {"duckdb", "sql"}

    def get_code_version(self, node: TransformNode) -> str:
        """The node's fingerprint (SQL + schedule): Dagster marks the asset changed with it."""
        return node.fingerprint[:16]


__all__ = ["SeeknalTranslator", "group_name_for"]
