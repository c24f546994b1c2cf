"""seeknal_core must stay framework-agnostic: nothing under it may import dagster."""

import ast
import pathlib
import subprocess
import sys

CORE = pathlib.Path(__file__).resolve().parents[1] / "seeknal_core"


def test_no_source_file_in_core_imports_dagster():
    offenders = []
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}:{node.lineno} {n}" for n in names if n.split(".")[0].startswith("dagster")]
    assert not offenders, "seeknal_core imports dagster:\n" + "\n".join(offenders)


def test_importing_core_loads_no_dagster_module():
    code = (
        "import sys, seeknal_core, seeknal_core.intervals, seeknal_core.schedule;"
        "bad=[m for m in sys.modules if m.startswith('dagster')];"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
