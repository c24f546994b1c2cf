"""The adapter in dagster-dbt's shape, on real Dagster, DuckDB and the ``dg`` CLI: the
component's overridable ``execute``, ``translation`` and ``select``/``exclude`` in YAML,
the typed ``SeeknalResource``, a translator ``build_definitions`` leaves alone, column
lineage on specs (``seeknal plan``'s analysis; none for SQL it cannot analyse), the
written table's schema on materializations, ``dg scaffold``/``dg check`` output, sensors
that read the translator's partitions, and only names ``dagster`` exports."""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import os
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource
from test_dagster_assets import NODES, make_project, materializations, materialize
from test_dagster_assets import instance as instance  # fixture
from test_dagster_component import dg_cli, dg_project
from test_dagster_sensors import Daemon, statuses
from test_runner import open_all

import seeknal_dagster
from seeknal_core import changes, runner
from seeknal_core.project import load_project
from seeknal_dagster import SeeknalResource, SeeknalTranslator, build_definitions, partitions
from seeknal_dagster.audits import CheckTarget
from seeknal_dagster.translator import shown_snapshot

PACKAGE = Path(seeknal_dagster.__file__).parent

STAR = NODES + """
copy:
  sql: SELECT * FROM {{ ref('daily') }}
raw_copy:
  sql: SELECT * FROM raw
"""

RECORDING = '''\
from pathlib import Path

from seeknal_dagster import SeeknalProjectComponent


class Recording(SeeknalProjectComponent):
    """Writes each step's selection to a file around the default step."""

    def execute(self, context, seeknal, step):
        marker = Path(seeknal.project_dir) / "executed.txt"
        marker.write_text(marker.read_text() if marker.exists() else "")
        yield from step.run(context, seeknal)
        with marker.open("a") as out:
            out.write(",".join(step.selected(context)) + "\\n")
'''


@pytest.fixture(autouse=True)
def fresh_dg_module():
    """Each test's ``dg`` project is a fresh ``shop_dg`` package (not the previous test's)."""
    def purge():
        for name in [m for m in sys.modules if m == "shop_dg" or m.startswith("shop_dg.")]:
            del sys.modules[name]
    purge()
    yield
    purge()


def defs_yaml(root: Path, body: str, name: str = "warehouse") -> None:
    folder = root / "shop_dg" / "defs" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defs.yaml").write_text(textwrap.dedent(body))


def test_component_execute_override_runs_each_step(tmp_path: Path, monkeypatch, instance) -> None:
    root = dg_project(tmp_path / "shop")
    monkeypatch.syspath_prepend(str(root))
    (root / "shop_dg" / "components.py").write_text(RECORDING)
    defs_yaml(root, """\
        type: shop_dg.components.Recording
        attributes:
          project: "{{ context.project_root }}/seeknal_project"
        """)
    defs = dg.load_from_defs_folder(path_within_project=root)
    materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-01-23:00")
    materialize(defs, instance, "daily", partition="2024-01-01")
    assert (root / "seeknal_project" / "executed.txt").read_text() == "hourly\ndaily\n"
    assert len(instance.get_materialized_partitions(dg.AssetKey("daily"))) == 1


def test_translation_and_selection_in_yaml(tmp_path: Path, monkeypatch) -> None:
    root = dg_project(tmp_path / "shop")
    monkeypatch.syspath_prepend(str(root))
    defs_yaml(root, """\
        type: seeknal_dagster.SeeknalProjectComponent
        attributes:
          project: "{{ context.project_root }}/seeknal_project"
          select: ["tag:core", daily, summary]
          exclude: [summary]
          translation:
            group_name: "g_{{ node.name }}"
            tags: {team: data}
            metadata: {owner_note: "{{ node.kind }} {{ node.name }}"}
            key_prefix: [wh]
        """)
    graph = dg.load_from_defs_folder(path_within_project=root).resolve_asset_graph()
    keys = set(graph.get_all_asset_keys())
    assert keys == {dg.AssetKey(["wh", n]) for n in ("raw", "hourly", "daily")}
    daily = graph.get(dg.AssetKey(["wh", "daily"]))
    assert daily.group_name == "g_daily" and daily.tags["team"] == "data"
    assert daily.metadata["owner_note"] == "transform daily"
    assert daily.parent_keys == {dg.AssetKey(["wh", "hourly"])}  # deps follow translated keys
    assert graph.get(dg.AssetKey(["wh", "hourly"])).tags["core"] == ""  # the node's own tags stay

    defs_yaml(root, """\
        type: seeknal_dagster.SeeknalProjectComponent
        attributes:
          project: "{{ context.project_root }}/seeknal_project"
          select: ["tag:nope"]
        """)
    try:
        dg.load_from_defs_folder(path_within_project=root)
    except Exception as exc:  # noqa: BLE001 - Dagster wraps it; seeknal's line is the cause
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        assert "'tag:nope' matches no transform" in str(cause)
    else:
        raise AssertionError("a selection matching nothing loaded")


def test_typed_resource_and_a_users_duckdb_resource(tmp_path: Path, instance) -> None:
    root = make_project(tmp_path / "p")
    defs = build_definitions(root)
    assert isinstance(defs.resources["seeknal"], SeeknalResource)
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    assert all("seeknal" in a.required_resource_keys for a in assets)
    # a user's own DuckDBResource, nested in the typed resource, is what the assets write through
    moved = tmp_path / "elsewhere" / "warehouse.duckdb"
    moved.parent.mkdir()
    (root / "target" / "warehouse.duckdb").rename(moved)
    mine = DuckDBResource(database=str(moved))
    defs = build_definitions(root, duckdb=mine)
    assert defs.resources["seeknal"].duckdb is mine and defs.resources["duckdb"] is mine
    materialize(defs, instance, "hourly", partition="2024-01-01-05:00")
    import duckdb
    with duckdb.connect(str(moved), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM hourly").fetchone()[0] == 1
    assert not (root / "target" / "warehouse.duckdb").exists()


def test_build_definitions_leaves_the_translator_untouched(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    translator = SeeknalTranslator(key_prefix="x")
    before = dict(vars(translator))
    graph = build_definitions(root, translator=translator, automation="schedules").resolve_asset_graph()
    assert vars(translator) == before and translator.automation is True
    assert graph.get(dg.AssetKey(["x", "daily"])).automation_condition is None
    graph = build_definitions(root, translator=translator).resolve_asset_graph()
    assert graph.get(dg.AssetKey(["x", "daily"])).automation_condition is not None


def plan_lineage(root: Path, name: str) -> dict | None:
    """``seeknal plan``'s analysis of a node (its normalised SQL, its upstream transforms'
    output columns as the schema), as column -> {table: columns}."""
    project = load_project(root)
    schema = {}
    for upstream in project.upstream(name):
        node = project.nodes[upstream]
        outputs = changes.analyse(node.normalized_sql, node.dialect).known_outputs
        if outputs is not None:
            schema[upstream] = outputs
    node = project.nodes[name]
    return changes.column_lineage(changes.analyse(node.normalized_sql, node.dialect, schema))


def spec_lineage(graph, key: str) -> dict | None:
    value = graph.get(dg.AssetKey(key)).metadata.get("dagster/column_lineage")
    if value is None:
        return None
    out: dict = {}
    for column, deps in value.deps_by_column.items():
        for dep in deps:
            out.setdefault(column, {}).setdefault(dep.asset_key.path[-1], []).append(dep.column_name)
    return out


def test_column_lineage_is_plans_and_absent_when_sql_is_not_analysable(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", STAR)
    graph = build_definitions(root).resolve_asset_graph()
    daily = spec_lineage(graph, "daily")
    assert daily == {"day": {"hourly": ["hour"]}, "n": {"hourly": ["hour", "n"]},
                     "v": {"hourly": ["hour", "v"]}}
    assert daily == plan_lineage(root, "daily")
    assert spec_lineage(graph, "summary") == {"n": {"daily": ["n"]}}  # count(*) reads no column
    # `*` over a transform whose columns are known: expanded
    assert spec_lineage(graph, "copy") == plan_lineage(root, "copy") == {
        "day": {"daily": ["day"]}, "n": {"daily": ["n"]}, "v": {"daily": ["v"]}}
    # `sum(v) AS v` shadows the column it reads (sqlglot cannot qualify it); `*` over a source
    # whose columns no query states: no lineage rather than a guess
    assert plan_lineage(root, "hourly") is None and spec_lineage(graph, "hourly") is None
    assert plan_lineage(root, "raw_copy") is None and spec_lineage(graph, "raw_copy") is None


def test_warm_load_parses_no_sql(tmp_path: Path) -> None:
    """Lineage comes from the load cache on a warm load: sqlglot is not even imported.
    The cold load writes the cache as soon as its definitions are built: each process here
    ends like a code server that is killed (no exit handlers run)."""
    root = make_project(tmp_path / "p")
    code = ("import os, sys; from seeknal_dagster import build_definitions; "
            f"build_definitions({str(root)!r}).resolve_asset_graph(); print('sqlglot' in sys.modules); "
            "sys.stdout.flush(); os._exit(0)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cold = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    warm = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert cold.stdout.split() == ["True"], cold.stderr[-2000:]
    assert warm.stdout.split() == ["False"], warm.stderr[-2000:]


def test_materialization_carries_the_written_tables_schema(tmp_path: Path, instance) -> None:
    root = make_project(tmp_path / "p")
    defs = build_definitions(root)
    materialize(defs, instance, "hourly", first="2024-01-01-00:00", last="2024-01-01-23:00")
    result = materialize(defs, instance, "daily", partition="2024-01-01")
    [mat] = materializations(result, "daily")
    schema = mat.metadata["dagster/column_schema"].schema
    assert [(c.name, c.type) for c in schema.columns] == [("day", "TIMESTAMP"), ("n", "HUGEINT"),
                                                         ("v", "HUGEINT")]
    summary = materializations(materialize(defs, instance, "summary"), "summary")[0]
    assert [c.name for c in summary.metadata["dagster/column_schema"].schema.columns] == ["days", "n"]


def test_dg_scaffold_finds_the_seeknal_project_and_dg_check_loads_it(tmp_path: Path) -> None:
    root = dg_project(tmp_path / "shop")
    (root / "seeknal_project").rename(root / "warehouse")  # not where a template would guess
    scaffold = dg_cli(root, "scaffold", "defs", "seeknal_dagster.SeeknalProjectComponent", "shop")
    assert scaffold.returncode == 0, scaffold.stdout[-2000:] + scaffold.stderr[-2000:]
    text = (root / "shop_dg" / "defs" / "shop" / "defs.yaml").read_text()
    assert 'project: "{{ context.project_root }}/warehouse"' in text
    assert "# select:" in text and "# translation:" in text and "# automation:" in text
    check = dg_cli(root, "check", "defs")
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]


def test_dg_check_defs_ends_with_seeknals_line(tmp_path: Path) -> None:
    root = dg_project(tmp_path / "shop")
    defs_yaml(root, """\
        type: seeknal_dagster.SeeknalProjectComponent
        attributes:
          project: "{{ context.project_root }}/nowhere"
        """)
    check = dg_cli(root, "check", "defs")
    assert check.returncode != 0
    last = check.stdout.strip().splitlines()[-1]
    assert last.endswith("does not exist — create it with `seeknal init` or pass the right --project-path")
    assert "defs.yaml" in last and "nowhere" in last


@pytest.mark.parametrize(("sql", "schema", "shortcut"), [
    ("SELECT t, n FROM raw WHERE t >= TIMESTAMP '2024-01-01'", {}, True),
    ("SELECT CAST(date_trunc('day', hour) AS TIMESTAMP) AS day, sum(n) AS n FROM hourly "
     "WHERE hour >= TIMESTAMP '2024-01-01' GROUP BY ALL", {"hourly": ("hour", "n")}, True),
    ("SELECT h.a AS a, d.b + h.c AS x FROM h JOIN d ON h.k = d.k WHERE d.z > 1 GROUP BY 1, 2 "
     "HAVING count(*) > 1", {"h": ("a", "c", "k"), "d": ("b", "k", "z")}, True),
    ("SELECT a, b AS bb FROM h JOIN d USING (k) WHERE z > 1", {"h": ("a", "k"), "d": ("b", "k", "z")}, True),
    ("SELECT upper(name) AS name, amount * 2 AS amt FROM orders "
     "QUALIFY row_number() OVER (PARTITION BY id ORDER BY ts) = 1", {"orders": ("name", "amount", "id", "ts")}, True),
    ("SELECT * FROM daily", {"daily": ("day", "n")}, True),
    # derived tables, CTEs and UNION ALL branches: each column's projections pushed down
    ("SELECT CAST(date_trunc('hour', t) AS TIMESTAMP) AS t, sum(n) AS n FROM (SELECT t, n FROM a "
     "UNION ALL SELECT t, n FROM b) u WHERE t >= TIMESTAMP '2023-01-01' GROUP BY ALL",
     {"a": ("t", "n"), "b": ("t", "n")}, True),
    ("WITH c AS (SELECT x, y FROM s WHERE z > 1) SELECT u.t AS t, sum(u.n) AS n, c.x AS x FROM "
     "(SELECT t, n FROM a UNION ALL SELECT t, n FROM b) u JOIN c ON c.y = u.t WHERE u.t > 1 GROUP BY ALL",
     {"a": ("t", "n"), "b": ("t", "n"), "s": ("x", "y", "z")}, True),
    ("SELECT d.k AS k, d.total AS total FROM (SELECT k, sum(v) AS total, max(w) AS mw FROM f "
     "WHERE q = 1 GROUP BY k HAVING count(*) > 2) d WHERE d.mw > 0", {"f": ("k", "v", "w", "q")}, True),
    ("WITH c AS (SELECT a, b, k FROM t1 WHERE a > 0) SELECT c1.a AS a, c2.b AS b FROM c c1 "
     "JOIN c c2 ON c1.k = c2.k", {"t1": ("a", "b", "k")}, True),
    ("SELECT v.a AS a, v.r AS r FROM (SELECT a, row_number() OVER (PARTITION BY b ORDER BY c) AS r "
     "FROM t1) v WHERE v.r = 1", {"t1": ("a", "b", "c")}, True),
    ("SELECT a FROM (SELECT a, b FROM (SELECT a, b, c FROM t1 WHERE c > 1) i WHERE b > 2) o",
     {"t1": ("a", "b", "c")}, True),
    ("SELECT 1 AS one, count(*) AS n FROM (SELECT a FROM t1 WHERE b = 2) s", {"t1": ("a", "b")}, True),
    ("SELECT u.a AS a, sum(u.b) AS b FROM (SELECT a, b FROM t1 UNION ALL SELECT a, b FROM t2 "
     "WHERE c > 1) u GROUP BY 1", {"t1": ("a", "b"), "t2": ("a", "b", "c")}, True),
    ("SELECT a, b FROM (SELECT a, b FROM t1 UNION ALL SELECT x, y FROM t2 UNION ALL SELECT p, q FROM t3) u",
     {"t1": ("a", "b"), "t2": ("x", "y"), "t3": ("p", "q")}, True),
    ("SELECT x.k AS k, count(*) AS c FROM (SELECT k, v FROM a WHERE v > 1) x GROUP BY ALL "
     "HAVING sum(x.v) > 2", {"a": ("k", "v")}, True),
    ("SELECT s.a AS a FROM (SELECT a, b FROM t1) s, (SELECT c FROM t2) r WHERE s.b = r.c",
     {"t1": ("a", "b"), "t2": ("c",)}, True),
    # the reductions decide: UNION (distinct), DISTINCT, ORDER BY, subqueries in expressions
    ("SELECT u.a AS a FROM (SELECT a, b FROM t1 UNION SELECT a, b FROM t2) u", {"t1": ("a", "b"), "t2": ("a", "b")},
     False),
    ("SELECT u.a AS a, u.b AS b FROM (SELECT DISTINCT a, b FROM t1) u", {"t1": ("a", "b")}, False),
    ("SELECT s.a AS a FROM (SELECT a FROM t1 ORDER BY b LIMIT 5) s", {"t1": ("a", "b")}, False),
    ("SELECT s.a AS a FROM (SELECT a, b FROM t1) s WHERE EXISTS (SELECT 1 FROM t2 WHERE t2.c = s.b)",
     {"t1": ("a", "b"), "t2": ("c",)}, False),
])
def test_lineage_of_each_column_equals_its_reduction(sql: str, schema: dict, shortcut: bool) -> None:
    """Reading every column's lineage scope by scope (``changes.scoped_reads``) gives what
    reducing the query to each column gives, or declines (``shortcut`` False) and the
    reductions answer."""
    from sqlglot.optimizer.scope import traverse_scope

    query = changes.analyse(sql, "duckdb", schema)
    per_column = {column: {t: sorted(cols) for t, cols in sorted(changes.reads(query, [column]).items()) if cols}
                  for column in query.known_outputs}
    assert changes.column_lineage(query) == per_column
    assert (changes.scoped_reads(query.tree, traverse_scope(query.tree)) is not None) is shortcut


# -- partitions come from the translator only ---------------------------------------------
class FromSecondDay(SeeknalTranslator):
    """Partitions that begin a day after the project's start: what every sensor must follow."""

    def get_partitions_def(self, node):
        pdef = super().get_partitions_def(node)
        return pdef and partitions.partitions_def_for(node, start="2024-01-02")


def test_sensors_and_checks_read_the_translators_partitions(tmp_path: Path, instance) -> None:
    root = make_project(tmp_path / "p")
    defs = build_definitions(root, translator=FromSecondDay())
    assert defs.resolve_assets_def("hourly").partitions_def.get_first_partition_key() == "2024-01-02-00:00"
    project, store = open_all(root)
    utc = dt.UTC
    assert runner.run(project, store, nodes=["hourly"], start=dt.datetime(2024, 1, 1, tzinfo=utc),
                      end=dt.datetime(2024, 1, 3, tzinfo=utc), mode="backfill").ok  # 48 hours, CLI-style
    daemon = Daemon(defs, instance)
    reported = daemon.tick("seeknal_reconcile").asset_events
    assert sorted(e.partition for e in reported) == [f"2024-01-02-{h:02d}:00" for h in range(24)]
    [check] = [e for e in daemon.tick("seeknal_checks").asset_events if e.asset_key == dg.AssetKey("hourly")]
    assert check.passed, check.description  # the first day is no partition of this asset: not "only in seeknal"
    executed = dg.materialize(  # the same check in a run of its asset's step, alone
        list(defs.assets), instance=instance, resources=defs.resources,
        selection=dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("hourly"), "seeknal_in_sync")))
    [evaluation] = executed.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["in_sync_count"].value == 24, evaluation.description

    runner.restate(project, store, ["hourly"], dt.datetime(2024, 1, 1, 20, tzinfo=utc),
                   dt.datetime(2024, 1, 2, 2, tzinfo=utc), reason="late data")
    [show] = daemon.tick("seeknal_restatements").run_requests
    assert show.partition_key_range == dg.PartitionKeyRange("2024-01-02-00:00", "2024-01-02-01:00")
    daemon.launch(show, ok=False)
    failed = {k for k, v in statuses(defs, instance, dg.AssetKey("hourly")).items() if v == "FAILED"}
    assert failed == {"2024-01-02-00:00", "2024-01-02-01:00"}


def package_trees() -> dict[str, ast.Module]:
    return {p.relative_to(PACKAGE).as_posix(): ast.parse(p.read_text(), str(p))
            for p in sorted(PACKAGE.rglob("*.py"))}


def test_only_the_translator_builds_partitions_from_a_node() -> None:
    """``partitions_def_for`` (a node's schedule as partitions) is called by the translator's
    getter alone; sensors, checks and schedules read ``get_partitions_def`` or the specs."""
    users = {name for name, tree in package_trees().items() for n in ast.walk(tree)
             if (isinstance(n, ast.Name) and n.id == "partitions_def_for")
             or (isinstance(n, ast.Attribute) and n.attr == "partitions_def_for")
             or (isinstance(n, ast.alias) and n.name == "partitions_def_for")}
    assert users == {"translator.py"}, f"partitions_def_for used outside the translator: {sorted(users)}"


#: the one private Dagster name seeknal_dagster imports (audits.py says why)
PRIVATE = {("audits.py", "dagster._core.definitions.asset_checks.asset_check_evaluation",
            "AssetCheckEvaluationTargetMaterializationData")}


def dagster_names(tree: ast.Module) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(module, name) pairs a file takes from ``dagster*`` packages: imported, or read as an
    attribute of an imported module (``dg.X``, annotations included); and private imports."""
    used, private = set(), set()
    modules = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names:
                if a.name.split(".")[0].startswith("dagster"):
                    modules[a.asname or a.name] = a.name
                    if any(part.startswith("_") for part in a.name.split(".")):
                        private.add((a.name, ""))
        elif isinstance(n, ast.ImportFrom) and n.module and n.module.split(".")[0].startswith("dagster"):
            for a in n.names:
                if any(part.startswith("_") for part in n.module.split(".")):
                    private.add((n.module, a.name))
                else:
                    used.add((n.module, a.name))
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules:
            used.add((modules[n.value.id], n.attr))
    return used, private


def test_seeknal_dagster_names_only_what_dagster_exports() -> None:
    missing, private = [], set()
    for name, tree in package_trees().items():
        used, hidden = dagster_names(tree)
        private |= {(name, module, attr) for module, attr in hidden}
        for module, attr in sorted(used):
            exported = importlib.import_module(module)
            if attr.startswith("_") or attr not in dir(exported):
                missing.append(f"{name}: {module}.{attr}")
    assert not missing, f"names the dagster packages do not export: {missing}"
    assert private == PRIVATE, f"private Dagster imports: {sorted(private - PRIVATE)} (use the public API)"


def test_the_private_check_target_is_where_audits_py_takes_it_from() -> None:
    """Fails loudly when Dagster moves, renames or exports the evaluation target's class."""
    hint = typing.get_type_hints(dg.AssetCheckEvaluation)["target_materialization_data"]
    assert set(typing.get_args(hint)) == {CheckTarget, type(None)}, hint
    assert {"storage_id", "run_id", "timestamp"} <= set(typing.get_type_hints(CheckTarget))
    exported = [n for n in dir(dg) if getattr(dg, n) is CheckTarget]
    assert not exported, (f"dagster now exports the check target as dg.{exported[0]}: use it in "
                          "seeknal_dagster/audits.py and drop PRIVATE")

@pytest.mark.parametrize(("sql", "answered"), [
    ("SELECT t, n FROM raw WHERE t >= TIMESTAMP '2024-01-01' AND t < TIMESTAMP '2024-01-02'", True),
    ("SELECT CAST(date_trunc('day', hour) AS TIMESTAMP) AS day, sum(n) AS total FROM hourly "
     "WHERE hour >= TIMESTAMP '2024-01-01' GROUP BY date_trunc('day', hour)", True),
    ("SELECT h.a AS a, d.b + h.c AS x FROM h JOIN d ON h.k = d.k WHERE d.z > 1 GROUP BY h.a, d.b + h.c "
     "HAVING count(*) > 1", True),
    ("SELECT x.a AS a, x.b FROM t AS x WHERE x.c > 1", True),
    ("SELECT a, count(*) AS n FROM t GROUP BY a", True),
    ('SELECT "A", "Bb" AS c FROM "T"', True),
    ("SELECT A, b FROM T WHERE C > 1", True),
    ("SELECT 1 AS one, a FROM t", True),
    ("SELECT CAST(date_trunc('day', hour) AS TIMESTAMP) AS day, sum(v) AS total FROM hourly GROUP BY ALL", True),
    # declined by the shortcut: qualifying decides
    ("SELECT CAST(date_trunc('day', hour) AS TIMESTAMP) AS day, sum(n) AS n FROM hourly GROUP BY ALL", False),

    ("SELECT h.a AS a, d.b + h.c AS x FROM h JOIN d ON h.k = d.k GROUP BY 1, 2", False),
    ("SELECT a, b AS bb FROM h JOIN d USING (k) WHERE z > 1", False),
    ("SELECT upper(name) AS nm, amount * 2 AS amt FROM orders "
     "QUALIFY row_number() OVER (PARTITION BY id ORDER BY ts) = 1", False),
    ("SELECT a + 1 AS b, b + 1 AS c FROM t", False),
    ("SELECT a + 1 AS b FROM t WHERE b > 0", False),
    ("SELECT sum(v) AS v, day FROM hourly GROUP BY day", False),
    ("SELECT a FROM t ORDER BY a", False),
    ("SELECT a + 1 FROM t", False),
    ("SELECT a FROM t WHERE b IN (SELECT b FROM u)", False),
    ("SELECT s.f AS f FROM t", False),
    ("SELECT * FROM t", False),
])
def test_lineage_read_without_qualifying_is_the_qualified_one(sql: str, answered: bool) -> None:
    """The load's lineage shortcut (no ``qualify``) answers exactly as ``seeknal plan``'s
    analysis, or declines and the analysis answers."""
    schema = {"raw": ("t", "n"), "hourly": ("hour", "n", "v"), "h": ("a", "c", "k"), "d": ("b", "k", "z"),
              "orders": ("name", "amount", "id", "ts"), "t": ("a", "b", "c")}
    query = changes.analyse(sql, "duckdb", schema)
    assert changes.lineage(sql, "duckdb", schema) == (query.known_outputs, changes.column_lineage(query))
    assert (changes.unqualified_lineage(sql) is not None) is answered


def test_nodes_with_the_same_non_incremental_deps_share_one_automation_condition(tmp_path: Path) -> None:
    """One condition object per set of ignored deps (sources, tables), snapshotted once:
    the snapshot Dagster takes of the plain ``&``, trimmed to what the asset page reads
    (test_dagster_truth checks the page reads the same labels)."""
    nodes = NODES + textwrap.dedent("""\
    hourly2:
      schedule: "@hourly"
      sql: SELECT date_trunc('hour', ts) AS hour, count(*) AS n FROM raw
        WHERE ts >= TIMESTAMP '{{ start }}' AND ts < TIMESTAMP '{{ end }}' GROUP BY ALL
      time_column: hour
    daily2:
      schedule: "@daily"
      sql: SELECT CAST(date_trunc('day', hour) AS TIMESTAMP) AS day, sum(n) AS n
        FROM {{ ref('hourly2') }} WHERE hour >= TIMESTAMP '{{ start }}' AND hour < TIMESTAMP '{{ end }}'
        GROUP BY ALL
      time_column: day
    """)
    root = make_project(tmp_path / "p", nodes)
    graph = build_definitions(root).resolve_asset_graph()
    cond = {k: graph.get(dg.AssetKey(k)).automation_condition for k in ("daily", "daily2")}
    assert cond["daily"] is cond["daily2"]  # (the hourly ones add their own readiness of raw)
    plain = dg.AutomationCondition.missing() & dg.AutomationCondition.missing()
    rebuilt = type(plain)(operands=cond["daily"].operands)
    assert cond["daily"].get_snapshot() == shown_snapshot(rebuilt.get_snapshot())
    assert cond["daily"].get_snapshot() is cond["daily2"].get_snapshot()


def test_no_garbage_collection_runs_while_definitions_build(tmp_path: Path) -> None:
    """A build pauses CPython's automatic collections (each full one rescans every object
    the load made) and leaves the collector as it found it, on or off."""
    import gc

    root = make_project(tmp_path / "p")
    collections: list[int] = []
    seen: list[int] = []  # collections so far, at each spec the build asks for

    class Counting(SeeknalTranslator):
        def get_asset_spec(self, node, project):
            seen.append(len(collections))
            return super().get_asset_spec(node, project)

    def record(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    threshold = gc.get_threshold()
    gc.callbacks.append(record)
    try:
        gc.set_threshold(1)  # without the pause, nearly every allocation would collect
        build_definitions(root, translator=Counting())
        assert gc.isenabled()
        gc.disable()
        build_definitions(root)
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.set_threshold(*threshold)
        gc.callbacks.remove(record)
    assert len(seen) > 3 and len(set(seen)) == 1, seen
