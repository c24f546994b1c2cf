"""``seeknal_checks``: the ``seeknal_in_sync`` check follows the truth without a run.

Emits the check's evaluations (see checks.py) when a node's state revision, its asset's
latest materialisation or its definition changes.  Cursor: ``{"seen": {node:
[state_revision, materialization_storage_id, fingerprint]}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from seeknal_core.project import Project
from seeknal_core.state import StateStore

from ..assets import asset_keys
from ..checks import check_evaluation, sync_status
from ..translator import SeeknalTranslator
from .common import NodePartitions


def checks_tick(
    project: Project,
    store: StateStore,
    instance: dg.DagsterInstance,
    cursor: Mapping[str, Any],
    *,
    keys: Mapping[str, dg.AssetKey] | None = None,
    translator: SeeknalTranslator | None = None,
) -> tuple[list[dg.AssetCheckEvaluation], dict[str, Any]]:
    """Evaluate ``seeknal_in_sync`` for each node whose inputs changed since the last tick
    (each partitioned asset's, as ``translator`` builds its partitions)."""
    keys = keys or asset_keys(project, translator)
    pdef_of = NodePartitions(project, translator)
    seen: dict[str, Any] = dict(cursor.get("seen") or {})
    names = [n for n in project.topological_order() if n in keys and pdef_of(n) is not None]
    states = store.load()
    records = {r.asset_entry.asset_key: r.asset_entry
               for r in instance.get_asset_records([keys[n] for n in names])}
    evaluations = []
    for name in names:
        entry = records.get(keys[name])
        signature = [states[name].revision if name in states else 0,
                     (entry.last_materialization_storage_id if entry else None) or 0,
                     project.nodes[name].fingerprint]
        if seen.get(name) == signature:
            continue
        status = sync_status(store, instance, project.nodes[name], keys[name], partitions_def=pdef_of(name))
        evaluations.append(check_evaluation(status, keys[name]))
        seen[name] = signature
    return evaluations, {"seen": seen}


