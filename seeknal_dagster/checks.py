"""Asset checks that fail, naming the partitions, while Dagster and seeknal disagree.

Open-source Dagster cannot un-mark a materialised partition, so a restated interval
(recompute pending) or drift between the two sides (complete in seeknal only, or
materialised in Dagster only) would stay invisible.  One unpartitioned check per
incremental node, ``seeknal_in_sync``, compares the whole asset:

* as a regular ``@asset_check`` (executable from the UI, and run with the asset's
  materialisations), and
* runlessly: the ``seeknal_checks`` sensor emits ``AssetCheckEvaluation``s whenever the
  node's state revision or the asset's latest materialisation changes, so the check's
  status follows the truth without launching anything.

Unpartitioned, because partitioned asset checks are a preview feature in Dagster 1.13
and one verdict per asset ("3 partitions out of sync: ...") is what a reader needs.
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from seeknal_core.intervals import IntervalSet
from seeknal_core.project import Project, TransformNode
from seeknal_core.state import StateStore

from .assets import as_project, asset_keys, state_store
from .partitions import keys_for_intervals, partitions_def_for
from .translator import SeeknalTranslator

CHECK_NAME = "seeknal_in_sync"
_SHOW = 50  # partition keys listed per category


@dataclass
class SyncStatus:
    """How Dagster's partitions and seeknal's completed intervals of one node compare."""

    node: str
    restated: list[str] = field(default_factory=list)  # pending restatement
    only_seeknal: list[str] = field(default_factory=list)  # complete, not materialised
    only_dagster: list[str] = field(default_factory=list)  # materialised, not complete
    in_sync: int = 0  # partitions both sides agree are done

    @property
    def passed(self) -> bool:
        return not (self.restated or self.only_seeknal or self.only_dagster)

    def description(self) -> str:
        if self.passed:
            return (f"In sync: {self.in_sync} partition(s) materialised in Dagster and "
                    "complete in seeknal, no pending restatement")
        parts = []
        if self.restated:
            parts.append(f"{len(self.restated)} restated partition(s) waiting to be re-materialised "
                         f"({_short(self.restated)}); the seeknal_restatements sensor requests them")
        if self.only_seeknal:
            parts.append(f"{len(self.only_seeknal)} partition(s) complete in seeknal but not "
                         f"materialised in Dagster ({_short(self.only_seeknal)}); the seeknal_reconcile "
                         "sensor reports them")
        if self.only_dagster:
            parts.append(f"{len(self.only_dagster)} partition(s) materialised in Dagster but not "
                         f"complete in seeknal ({_short(self.only_dagster)}); re-materialise them")
        return "Out of sync: " + "; ".join(parts)

    def metadata(self) -> dict[str, dg.MetadataValue]:
        return {
            "restated_partitions": dg.MetadataValue.json(self.restated[:_SHOW]),
            "only_in_seeknal": dg.MetadataValue.json(self.only_seeknal[:_SHOW]),
            "only_in_dagster": dg.MetadataValue.json(self.only_dagster[:_SHOW]),
            "restated_count": dg.MetadataValue.int(len(self.restated)),
            "only_in_seeknal_count": dg.MetadataValue.int(len(self.only_seeknal)),
            "only_in_dagster_count": dg.MetadataValue.int(len(self.only_dagster)),
            "in_sync_count": dg.MetadataValue.int(self.in_sync),
        }


def _short(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... {len(keys) - n} more" if len(keys) > n else "")


def sync_status(
    store: StateStore, instance: dg.DagsterInstance, node: TransformNode, asset_key: dg.AssetKey
) -> SyncStatus:
    """Compare one node's state with the instance's materialised partitions."""
    pdef = partitions_def_for(node)
    state = store.node(node.name)
    completed = set(keys_for_intervals(pdef, state.completed))
    restated = set(keys_for_intervals(
        pdef, IntervalSet(i for r in state.pending_restatements for i in r.intervals)))
    materialized = set(instance.get_materialized_partitions(asset_key))
    if materialized - completed - restated:  # ignore keys the definition no longer has
        materialized &= set(pdef.get_partition_keys())
    order = {k: i for i, k in enumerate(pdef.get_partition_keys())} if (
        materialized ^ completed or restated) else {}
    def ordered(keys: Iterable[str]) -> list[str]:
        return sorted(keys, key=lambda k: order.get(k, -1))

    return SyncStatus(
        node=node.name,
        restated=ordered(restated),
        only_seeknal=ordered(completed - materialized - restated),
        only_dagster=ordered(materialized - completed - restated),
        in_sync=len(completed & materialized),
    )


def check_evaluation(status: SyncStatus, asset_key: dg.AssetKey) -> dg.AssetCheckEvaluation:
    """The status as a runless check evaluation (what the checks sensor emits)."""
    return dg.AssetCheckEvaluation(
        asset_key=asset_key, check_name=CHECK_NAME, passed=status.passed,
        severity=dg.AssetCheckSeverity.ERROR, description=status.description(),
        metadata=status.metadata(),
    )


def build_asset_checks(
    project: Project | str | os.PathLike[str], *, translator: SeeknalTranslator | None = None
) -> list[dg.AssetChecksDefinition]:
    """One ``seeknal_in_sync`` check per incremental node (full-refresh nodes have no
    intervals to disagree about)."""
    project = as_project(project)
    translator = translator or SeeknalTranslator()
    keys = asset_keys(project, translator)
    return [_build_check(project, project.nodes[name], keys[name])
            for name in project.topological_order() if project.nodes[name].is_incremental]


def _build_check(project: Project, node: TransformNode, key: dg.AssetKey) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key, name=CHECK_NAME, blocking=False,
        description="Fails, naming the partitions, while Dagster's materialised partitions and "
                    "seeknal's completed intervals disagree or a restatement is pending.",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        with state_store(project) as store:
            status = sync_status(store, context.instance, node, key)
        return dg.AssetCheckResult(
            passed=status.passed, severity=dg.AssetCheckSeverity.ERROR,
            description=status.description(), metadata=status.metadata(),
        )

    return _check


__all__ = ["CHECK_NAME", "SyncStatus", "build_asset_checks", "check_evaluation", "sync_status"]
