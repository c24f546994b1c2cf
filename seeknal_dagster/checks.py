"""Asset checks that fail, naming the partitions, while Dagster and seeknal disagree.

Restated partitions show Failed in Dagster (see sensors/restatements.py), but drift
between the two sides (complete in seeknal only, materialised in Dagster only, a
restatement not yet recomputed, a definition change not yet applied) would otherwise stay
invisible.  One unpartitioned check per incremental node,
``seeknal_in_sync``, compares the whole asset:

* in the asset's own step: its spec is declared on the node's ``multi_asset``
  (assets.py), beside the audits' specs, so a run that materialises the node reports the
  verdict after the node ran, also when it failed, and the check alone (executed from the
  UI) runs the step without materialising anything (the ``multi_asset`` is subsettable);
  no op or definition of its own (a 2,000-node load pays nothing extra for the checks but
  their specs), and
* runlessly: the ``seeknal_checks`` sensor emits ``AssetCheckEvaluation``s whenever the
  node's state revision or the asset's latest materialisation changes, so the check's
  status follows the truth without launching anything.

Unpartitioned, because partitioned asset checks are a preview feature in Dagster 1.13
and one verdict per asset ("3 partitions out of sync: ...") is what a reader needs.
"""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import dagster as dg

from seeknal_core.intervals import IntervalSet
from seeknal_core.project import TransformNode
from seeknal_core.state import StateStore

from .partitions import keys_for_intervals
from .translator import ProjectSpecs, SeeknalTranslator

CHECK_NAME = "seeknal_in_sync"
RECONCILE_SENSOR = "seeknal_reconcile"
RESTATEMENT_SENSOR = "seeknal_restatements"
CHECKS_SENSOR = "seeknal_checks"
_SHOW = 50  # partition keys listed per category


@dataclass
class SyncStatus:
    """How Dagster's partitions and seeknal's completed intervals of one node compare."""

    node: str
    restated: list[str] = field(default_factory=list)  # pending restatement
    only_seeknal: list[str] = field(default_factory=list)  # complete, not materialised
    only_dagster: list[str] = field(default_factory=list)  # materialised, not complete
    in_sync: int = 0  # partitions both sides agree are done
    #: the node's definition differs from the one its intervals were computed with
    definition_changed: bool = False
    #: whether the restatement / reconcile sensors run on this instance (the advice says so)
    sensors: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not (self.restated or self.only_seeknal or self.only_dagster or self.definition_changed)

    def description(self) -> str:
        if self.passed:
            return (f"In sync: {self.in_sync} partition(s) materialised in Dagster and "
                    "complete in seeknal, no pending restatement")
        parts = []
        if self.definition_changed:
            parts.append("the definition changed since its intervals were computed (Dagster shows the "
                         "partitions computed with the older one as changed): run the seeknal_apply_changes "
                         "job or `seeknal plan --apply` to restate what the change affects")
        if self.restated:
            parts.append(f"{len(self.restated)} restated partition(s) waiting to be re-materialised "
                         f"({_short(self.restated)}); " + self._advice(RESTATEMENT_SENSOR, self.restated))
        if self.only_seeknal:
            parts.append(f"{len(self.only_seeknal)} partition(s) complete in seeknal but not "
                         f"materialised in Dagster ({_short(self.only_seeknal)}); "
                         + self._advice(RECONCILE_SENSOR, self.only_seeknal))
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
            "definition_changed": dg.MetadataValue.bool(self.definition_changed),
        }


    def _advice(self, sensor: str, keys: list[str]) -> str:
        """What happens next, true for this instance: the sensor acts, or how to act."""
        what = "shows them Failed until recomputed" if sensor == RESTATEMENT_SENSOR else "reports them"
        if self.sensors.get(sensor):
            return f"the {sensor} sensor {what}"
        span = keys[0] if len(keys) == 1 else f"{keys[0]} ... {keys[-1]}"
        return (f"the {sensor} sensor, which {what}, is stopped on this instance: start it "
                f"(Automation > {sensor} > Start, or `dagster sensor start {sensor}`) or "
                f"materialize partitions {span}")


def running_sensors(instance: dg.DagsterInstance,
                    names: Iterable[str] = (RESTATEMENT_SENSOR, RECONCILE_SENSOR)) -> dict[str, bool]:
    """Which of the named sensors run on the instance: a stored state wins, else the
    sensor's default (both run by default)."""
    running = dict.fromkeys(names, True)
    if instance.schedule_storage is None:  # an instance without sensors: the defaults hold
        return running
    for state in instance.all_instigator_state():
        if state.instigator_name in running:
            running[state.instigator_name] = str(getattr(state.status, "value", state.status)) in (
                "RUNNING", "DECLARED_IN_CODE")
    return running


def _short(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f", ... {len(keys) - n} more" if len(keys) > n else "")


def sync_status(
    store: StateStore, instance: dg.DagsterInstance, node: TransformNode, asset_key: dg.AssetKey,
    partitions_def: dg.TimeWindowPartitionsDefinition | None = None,
) -> SyncStatus:
    """Compare one node's state with the instance's materialised partitions
    (``partitions_def``: the asset's; default the default translator's)."""
    pdef = partitions_def or SeeknalTranslator().get_partitions_def(node)
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
        definition_changed=state.fingerprint is not None and state.fingerprint != node.fingerprint,
        sensors=running_sensors(instance) if (restated or completed - materialized) else {},
    )


def check_evaluation(status: SyncStatus, asset_key: dg.AssetKey) -> dg.AssetCheckEvaluation:
    """The status as a runless check evaluation (what the checks sensor emits)."""
    return dg.AssetCheckEvaluation(
        asset_key=asset_key, check_name=CHECK_NAME, passed=status.passed,
        severity=dg.AssetCheckSeverity.ERROR, description=status.description(),
        metadata=status.metadata(),
    )


def in_sync_check_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    """The check's spec, declared on the node's ``multi_asset``: non-blocking (a
    disagreement is news, not a reason to stop downstream) and unpartitioned."""
    return dg.AssetCheckSpec(
        CHECK_NAME, asset=asset_key, blocking=False,
        description="Fails, naming the partitions, while Dagster and seeknal disagree, a restatement "
                    "is pending or a definition change is not applied (seeknal_apply_changes).",
    )


def in_sync_results(context: dg.AssetExecutionContext, store: StateStore, specs: ProjectSpecs,
                    names: Sequence[str]) -> Iterator[dg.AssetCheckResult]:
    """The selected ``seeknal_in_sync`` checks of the step's nodes ``names``, as results:
    what the step yields after its nodes ran (or alone, when only checks are selected)."""
    selected = {k.asset_key for k in context.selected_asset_check_keys if k.name == CHECK_NAME}
    for name in names:
        spec = specs.specs[name]
        if spec.key not in selected:
            continue
        status = sync_status(store, context.instance, specs.project.nodes[name], spec.key,
                             partitions_def=spec.partitions_def)
        yield dg.AssetCheckResult(
            asset_key=spec.key, check_name=CHECK_NAME, passed=status.passed,
            severity=dg.AssetCheckSeverity.ERROR, description=status.description(),
            metadata=status.metadata(),
        )


__all__ = ["CHECKS_SENSOR", "CHECK_NAME", "RECONCILE_SENSOR", "RESTATEMENT_SENSOR", "SyncStatus",
           "check_evaluation", "in_sync_check_spec", "in_sync_results", "running_sensors", "sync_status"]
