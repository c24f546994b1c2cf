"""What the seeknal sensors share: JSON cursors, the newest materialisation per partition,
each node's partitions as the translator builds them, and the run tags of a
partition-range run."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from seeknal_core.project import Project

from ..translator import SeeknalTranslator

#: The run tags Dagster's single-run backfills use for a partition range (documented in
#: Dagster's "Partitioned assets > backfills"; tests compare them with Dagster's own).
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
ORIGIN_TAG = "seeknal/origin"
MAX_PARTITIONS_PER_TICK = 5_000


class NodePartitions:
    """Each node's partitions definition from the translator's ``get_partitions_def`` (the
    one place partitions are built from a node, so a sensor reads what the asset has),
    memoised for one tick; None for a node whose asset is unpartitioned."""

    def __init__(self, project: Project, translator: SeeknalTranslator | None = None):
        self.project, self.translator = project, translator or SeeknalTranslator()
        self._defs: dict[str, dg.TimeWindowPartitionsDefinition | None] = {}

    def __call__(self, name: str) -> dg.TimeWindowPartitionsDefinition | None:
        if name not in self._defs:
            node = self.project.nodes.get(name)
            self._defs[name] = None if node is None else self.translator.get_partitions_def(node)
        return self._defs[name]


def load_cursor(text: str | None) -> dict[str, Any]:
    """The JSON cursor, or an empty one: a lost or foreign cursor only costs a re-scan
    (every sensor skips what Dagster already shows)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def dump_cursor(cursor: Mapping[str, Any]) -> str:
    return json.dumps(cursor, sort_keys=True, separators=(",", ":"))


def latest_materialization_times(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: Iterable[str],
    *, after: float | None = None,
) -> dict[str, float]:
    """Timestamp of the newest materialisation of each partition (those with one)."""
    wanted = set(partitions)
    found: dict[str, float] = {}
    cursor = None
    while wanted - found.keys():
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=sorted(wanted - found.keys()),
                                  after_timestamp=after),
            limit=1000, cursor=cursor,
        )
        for record in result.records:
            if record.partition_key in wanted:
                found.setdefault(record.partition_key, record.timestamp)
        if not result.has_more:
            break
        cursor = result.cursor
    return found


def tag_value(value: str) -> str:
    """A run or event tag value Dagster accepts."""
    cleaned = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in value)
    return cleaned[:63] or "seeknal"
