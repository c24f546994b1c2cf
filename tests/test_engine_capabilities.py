"""Engines own their capabilities (``seeknal_core.engines.EngineKind``): nothing else tests
an engine's name, the Dagster adapter opens engines only through ``open_engine``, and the
capabilities are read without importing an engine (Dagster loads stay fast)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from seeknal_core import engines
from seeknal_core.errors import ProjectError

ROOT = Path(__file__).resolve().parents[1]
#: where the engine-name tests used to be
FILES = ["seeknal_core/runner/execute.py", "seeknal_core/runner/policy.py", "seeknal_core/engines/duckdb.py",
         "seeknal_core/project/nodes.py", "seeknal_dagster/assets.py", "seeknal_dagster/definitions.py",
         "seeknal_dagster/apply.py", "seeknal_dagster/translator.py"]
#: a comparison with an engine's name: ``node.engine == "spark"``, ``kind != 'duckdb'``,
#: ``x in ("duckdb", ...)``, or ``.engine`` compared with anything but the registry's names
NAME_TEST = re.compile(r"""([!=]=|\bin\b)\s*\(?\s*["'](duckdb|spark)["']|["'](duckdb|spark)["']\s*([!=]=|\bin\b)"""
                       r"""|\.engine\s*[!=]=(?!\s*(?:self\.name|DEFAULT_ENGINE)\b)""")


def test_no_engine_name_is_tested_outside_the_registry():
    found = []
    for name in FILES:
        for number, line in enumerate((ROOT / name).read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if NAME_TEST.search(code):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_dagster_adapter_constructs_no_engine_itself():
    for path in (ROOT / "seeknal_dagster").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\b(DuckDBEngine|SparkEngine)\b", text), path


def test_capabilities_are_read_without_importing_an_engine():
    code = ("import sys; from seeknal_core.engines import ENGINES; "
            "print(ENGINES['spark'].pool, ENGINES['spark'].dagster_kinds, ENGINES['duckdb'].reads_database); "
            "print(sorted(m for m in sys.modules if m in ('duckdb', 'pyspark') or m.startswith('seeknal_core.engines.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["seeknal_spark ('spark', 'sql') True", "['seeknal_core.engines.base']"]


def test_an_engine_is_one_registry_line_and_unknown_names_say_which_exist(tmp_path, monkeypatch):
    from engine_hive import HIVE

    from seeknal_core.project import load_project

    (tmp_path / "seeknal" / "transforms").mkdir(parents=True)
    (tmp_path / "seeknal_project.yml").write_text("name: t\nstart: 2024-01-01\n")
    node = ("n:\n  schedule: '@daily'\n  engine: hive\n  time_column: day\n"
            "  sql: SELECT current_date AS day WHERE current_date >= '{{ start }}'\n")
    (tmp_path / "seeknal" / "transforms" / "n.yml").write_text(node)
    with pytest.raises(ProjectError, match=r"unknown engine 'hive' — (did you mean|use one of)"):
        load_project(tmp_path)
    monkeypatch.setitem(engines.ENGINES, HIVE.name, HIVE)
    (tmp_path / "target" / "project_cache.json").unlink(missing_ok=True)
    project = load_project(tmp_path)
    assert engines.output_layout(project.nodes["n"]) == engines.DATASET
    with pytest.raises(ValueError, match="unknown output layout 'sqlite'"):
        engines.register(engines.EngineKind("x", "m:C", outputs={"table": "sqlite"}))
