"""``seeknal_late_data``: verify recent intervals' inputs on a cadence and restate the ones
whose source rows changed since they ran (``seeknal intervals verify``, in the runner).

Each tick verifies, per node, its ``verify:`` window (default ``DEFAULT_WINDOW``) and
records the restatements in the state store, nothing else: the reconciliation sensor then
shows the restated partitions as not materialised and the restatement sensor (or
automation) recomputes them.  Runs by default: it launches nothing.  The tick's reason
says what it did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from seeknal_core.project import Project
from seeknal_core.runner.digests import digest_sources
from seeknal_core.runner.verify import Verification, verify
from seeknal_core.state import StateStore

LATE_DATA_SENSOR = "seeknal_late_data"
#: seconds verified before now for nodes without ``verify:``
DEFAULT_WINDOW = 7 * 86400


@dataclass
class LateDataResult:
    verification: Verification
    cursor: dict[str, Any]
    messages: list[str]


def late_data_tick(
    project: Project,
    store: StateStore,
    instance: dg.DagsterInstance,
    cursor: Mapping[str, Any],
    *,
    keys: Mapping[str, dg.AssetKey] | None = None,
    window: int = DEFAULT_WINDOW,
    now: float | None = None,
) -> LateDataResult:
    """One tick: verify each scheduled node's window (its ``verify:`` or ``window``
    seconds) and restate what changed, with the runner's reasons."""
    names = [n for n in project.topological_order() if project.nodes[n].is_incremental
             and (keys is None or n in keys) and digest_sources(project, n)]
    windows = {n: project.nodes[n].verify or window for n in names}
    found = verify(project, store, names, windows=windows, now=now, actor="dagster:seeknal_late_data")
    messages = [found.summary()] if found.restated else []
    messages += [f"cannot verify {p}" for p in found.problems]
    checked = sum(found.checked.values())
    return LateDataResult(found, {"verified": checked, "restated": found.count}, messages)


__all__ = ["DEFAULT_WINDOW", "LATE_DATA_SENSOR", "LateDataResult", "late_data_tick"]
