"""A node's audits as asset checks on its asset, with one result per partition.

Each audit is an ``AssetCheckSpec`` named after it, declared on the node's
``multi_asset`` (so the asset step reports it), ``blocking`` as the audit says.  The
runner audits every batch before it commits and isolates a blocking failure down to its
intervals, so the step knows each partition's verdict: the specs of a partitioned node
carry its partitions definition (Dagster 1.13's partitioned asset checks, a preview) and
the step reports one ``AssetCheckEvaluation`` per audit per partition, also when one run
covers a range of partitions (Dagster's ``AssetCheckResult`` only knows a run's single
partition key).  A passing or warning audit reports on the partition's new
materialization; a blocking failure reports on the partition's latest materialization,
if any (the interval was rolled back, so that is what the table still holds), and the
partition is not materialized: its run fails, which Dagster shows as a failed partition.

Specs are built from the audits' own fields: no SQL is parsed or rendered at load.
"""

from __future__ import annotations

import json
import re
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import dagster as dg

# -- the one name seeknal takes from a private Dagster module ---------------------------------
# An evaluation's target (``dg.AssetCheckEvaluation(target_materialization_data=...)``, a
# documented argument): Dagster counts a verdict only when it is about the partition's
# latest materialization.  ``dg.AssetCheckResult`` fills it, but only for a run's single
# partition key; the evaluations of each partition of a range must build it themselves,
# and ``dagster`` 1.13 exports neither its class nor a public way to build one.  Only
# ``check_target`` uses it.  tests/test_dagster_adapter_shape.py fails when Dagster moves
# or renames it, changes the argument's type, or exports it (then use ``dg.<name>``).
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as CheckTarget,
)

from seeknal_core.errors import ProjectError
from seeknal_core.intervals import Pair
from seeknal_core.project import TransformNode
from seeknal_core.project.audits import Audit, AuditResult
from seeknal_core.runner import WHOLE_TABLE, NodeResult
from seeknal_core.timeutil import from_epoch

_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_SLUG = re.compile(r"[^A-Za-z0-9_]+")


def check_name(audit: str) -> str:
    """The check's name: the audit's, when Dagster accepts it as a name part."""
    return audit if _NAME.match(audit) else (_SLUG.sub("_", audit).strip("_") or "audit")


def _describe(audit: Audit) -> str:
    """What the audit checks and what its failure does, in the check's description."""
    cols = ", ".join(audit.columns)
    what = {
        "not_null": f"no NULL in {cols}",
        "unique": f"({cols}) unique within each interval",
        "accepted_values": f"{audit.column} in {list(audit.values)}",
        "accepted_range": f"{audit.column} {audit.bounds_text()}" if audit.column else "",
        "row_count": f"rows written per interval {audit.bounds_text()}",
        "sql": "no row returned by: " + " ".join((audit.sql or "").split()),
    }.get(audit.kind, audit.kind)
    effect = ("Blocking: a partition that fails it is not materialized and fails its run."
              if audit.blocking else "Warning: a partition that fails it still materializes.")
    return f"seeknal audit {audit.kind}: {what}, on the rows each interval wrote. {effect}"


def audit_check_specs(node: TransformNode, key: dg.AssetKey,
                      partitions_def: dg.PartitionsDefinition | None) -> list[dg.AssetCheckSpec]:
    """One check spec per audit of the node (none without audits)."""
    names: dict[str, str] = {}
    for audit in node.audits:
        other = names.setdefault(check_name(audit.name), audit.name)
        if other != audit.name:
            raise ProjectError(f"node '{node.name}': audits '{other}' and '{audit.name}' would both be the "
                               f"Dagster check '{check_name(audit.name)}' — rename one (letters, digits, _)")
    return [dg.AssetCheckSpec(check_name(a.name), asset=key, blocking=a.blocking,
                              partitions_def=partitions_def, description=_describe(a))
            for a in node.audits]


def audit_events(context: dg.AssetExecutionContext, node: TransformNode, key: dg.AssetKey,
                 outcome: NodeResult, window: Sequence[tuple[Pair, str]] | None
                 ) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """The run's audit verdicts as check evaluations, to yield after the node's
    materializations (they name them as their targets).

    ``window``: the run's intervals with their partition keys, or None when the node is
    unpartitioned.  A completed interval reports every audit's last verdict on it; a
    failed one only the audits that failed it (the others' rows were rolled back with it:
    their checks show as not executed in a failed run).  Unselected checks report nothing.
    """
    selected = _selected(context).get(key, ())
    audits = {check_name(a.name): a for a in node.audits if check_name(a.name) in selected}
    if not audits:
        return
    failed = {tuple(p) for p, _ in outcome.failures}
    verdicts: list[tuple[str | None, AuditResult]] = []
    if window is None:
        last: dict[str, AuditResult] = {}
        for result in outcome.audit_results:
            last[check_name(result.audit)] = result
        verdicts = [(None, r) for name, r in last.items() if name in audits and (not failed or not r.passed)]
    else:
        done = {tuple(p) for p in outcome.done}
        keyed = [(tuple(p), k) for p, k in window if tuple(p) in done or tuple(p) in failed]
        for (pair, partition), results in zip(keyed, _covering(keyed, outcome.audit_results)):
            verdicts += [(partition, r) for name, r in results.items()
                         if name in audits and (pair not in failed or not r.passed)]
    targets = _latest_materializations(context.instance, key, [p for p, _ in verdicts])
    for partition, result in verdicts:
        name = check_name(result.audit)
        yield dg.AssetCheckEvaluation(
            asset_key=key, check_name=name, passed=result.passed, partition=partition,
            blocking=result.blocking, target_materialization_data=targets.get(partition),
            severity=dg.AssetCheckSeverity.ERROR if result.blocking else dg.AssetCheckSeverity.WARN,
            description=(f"passed on {_span(result.interval)}" if result.passed else
                         f"{audits[name].failure(result.rows, result.samples)} in {_span(result.interval)}"
                         + ("" if result.blocking else " (warning: the interval completed)")),
            metadata=_metadata(result),
        )
    outputs = _output_names(context.assets_def)
    for name in audits:  # the check outputs, as AssetCheckResult emits them (downstream steps wait on them)
        yield dg.Output(None, output_name=outputs[dg.AssetCheckKey(key, name)])


_OUTPUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SELECTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _selected(context: dg.AssetExecutionContext) -> dict[dg.AssetKey, set[str]]:
    """The step's selected checks by asset, built once per step (not once per node)."""
    by_asset = _SELECTED.get(context)
    if by_asset is None:
        by_asset = _SELECTED[context] = {}
        for check_key in context.selected_asset_check_keys:
            by_asset.setdefault(check_key.asset_key, set()).add(check_key.name)
    return by_asset


def _output_names(assets_def: dg.AssetsDefinition) -> dict[dg.AssetCheckKey, str]:
    """Each check's output name in the step's definition, built once per step (a group's
    definition holds every check of its nodes)."""
    names = _OUTPUTS.get(assets_def)
    if names is None:
        names = _OUTPUTS[assets_def] = {spec.key: output for output, spec
                                        in assets_def.node_check_specs_by_output_name.items()}
    return names


def _covering(keyed: Sequence[tuple[Pair, str]], results: Iterable[AuditResult]
              ) -> list[dict[str, AuditResult]]:
    """Per interval (sorted, disjoint), each audit's last result whose range covers it."""
    starts = [p[0] for p, _ in keyed]
    out: list[dict[str, AuditResult]] = [{} for _ in keyed]
    for result in results:
        lo, hi = result.interval
        i = bisect_left(starts, lo)
        while i < len(keyed) and keyed[i][0][1] <= hi:
            out[i][check_name(result.audit)] = result
            i += 1
    return out


def _latest_materializations(instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Sequence[str | None]
                             ) -> dict[str | None, CheckTarget]:
    """The latest materialization of each partition (what its check result is about):
    one query for the run's own (the newest), one more per partition not among them."""
    wanted = list(dict.fromkeys(partitions))
    if not wanted:
        return {}
    if wanted == [None]:
        records = instance.fetch_materializations(key, limit=1).records
        return {None: check_target(records[0])} if records else {}
    found: dict[str | None, Any] = {}
    for record in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=wanted), limit=len(wanted)).records:
        found.setdefault(record.partition_key, record)
    for partition in wanted:
        if partition not in found:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
            if records:
                found[partition] = records[0]
    return {p: check_target(r) for p, r in found.items()}


def check_target(record: dg.EventLogRecord) -> CheckTarget:
    """A check evaluation's target: the materialization ``record`` (what
    ``dg.AssetCheckResult`` fills in for a single-partition run)."""
    return CheckTarget(storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)


def _span(interval: Pair) -> str:
    if interval == WHOLE_TABLE:  # a table node's audits see its whole table
        return "the whole table"
    return f"{from_epoch(interval[0]).isoformat()} .. {from_epoch(interval[1]).isoformat()}"


def _metadata(result: AuditResult) -> dict[str, Any]:
    meta: dict[str, Any] = {"offending_rows": dg.MetadataValue.int(result.rows)}
    if result.interval != WHOLE_TABLE:  # a table node's audits have no interval
        meta["interval_start"] = from_epoch(result.interval[0]).isoformat()
        meta["interval_end"] = from_epoch(result.interval[1]).isoformat()
    meta["blocking"] = dg.MetadataValue.bool(result.blocking)
    if result.samples:  # dates and decimals as text
        meta["sample_rows"] = dg.MetadataValue.json(json.loads(json.dumps(list(result.samples), default=str)))
    return meta


__all__ = ["CheckTarget", "audit_check_specs", "audit_events", "check_name", "check_target"]
