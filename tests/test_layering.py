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


# -- the import order of docs/architecture.md -------------------------------------------------
ARCHITECTURE = CORE.parent / "docs" / "architecture.md"


def documented_layers() -> list[list[str]]:
    """The entries of each line of the module list in docs/architecture.md, top line first
    (``x/`` a package, ``x/y`` one module of it, ``x`` a module), up to ``seeknal_dagster``."""
    text = ARCHITECTURE.read_text()
    block = text.split("```\n", 2)[1]
    layers = []
    for line in block.splitlines():
        if line.startswith("seeknal_dagster"):
            break
        names = line.split("   ")[0].strip()
        if names:
            layers.append([name.strip() for name in names.split(",")])
    return layers


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(CORE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: pathlib.Path) -> set[str]:
    """The core modules a file imports at run time (at its top or inside a function;
    ``if TYPE_CHECKING:`` blocks left out), named relative to ``seeknal_core``."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(source: str, me: str, is_package: bool) -> set[str]:
    tree = ast.parse(source)
    package = me.split(".") if is_package else me.split(".")[:-1]
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                module = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").startswith("seeknal_core"):
                module = node.module.removeprefix("seeknal_core").lstrip(".")
            else:
                continue
            for alias in node.names:  # ``from . import grid`` imports a module
                sub = f"{module}.{alias.name}".lstrip(".")
                is_module = (CORE / (sub.replace(".", "/") + ".py")).exists() or (CORE / sub.replace(".", "/")).is_dir()
                out.add(sub if is_module else module)
        elif isinstance(node, ast.Import):
            out.update(a.name.removeprefix("seeknal_core").lstrip(".") for a in node.names
                       if a.name.startswith("seeknal_core"))
    return out - {me, ""}  # "": the package face (seeknal_core/__init__.py), a re-export


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    """The line of the most specific entry naming ``module``."""
    best: tuple[int, int] | None = None  # (specificity, line)
    for i, names in enumerate(layers):
        for name in names:
            if name.endswith("/"):
                hit = module == name[:-1] or module.startswith(name[:-1] + ".")
                score = 1
            else:
                dotted = name.replace("/", ".").removesuffix(".__init__")
                hit, score = module == dotted, 2
            if hit and (best is None or score > best[0]):
                best = (score, i)
    return None if best is None else best[1]


def core_files() -> list[pathlib.Path]:
    return [p for p in sorted(CORE.rglob("*.py")) if p != CORE / "__init__.py"]


def test_every_core_module_has_a_place_in_the_documented_order():
    layers = documented_layers()
    missing = [module_name(p) for p in core_files() if layer_of(module_name(p), layers) is None]
    assert not missing, f"place these modules in docs/architecture.md's module list: {missing}"


def test_imports_follow_the_documented_order():
    layers = documented_layers()
    wrong = []
    for path in core_files():
        me = module_name(path)
        for target in sorted(runtime_imports(path)):
            if layer_of(target, layers) > layer_of(me, layers):
                wrong.append(f"{me} imports {target}, listed below it")
    assert not wrong, "imports against docs/architecture.md's order:\n" + "\n".join(wrong)


def test_no_import_cycle_in_the_core():
    import graphlib

    graph = {module_name(p): runtime_imports(p) for p in core_files()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
        cycle = None
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_checks_see_an_upward_import_and_a_cycle():
    """What the checks above would say of templating importing the project again."""
    layers = documented_layers()
    assert layer_of("engines.base", layers) < layer_of("project", layers) < layer_of("engines.duckdb", layers)
    source = (CORE / "templating.py").read_text() + "\n\ndef later():\n    from .project import nodes\n"
    found = imports_in(source, "templating", False)
    assert "project.nodes" in found and layer_of("project.nodes", layers) > layer_of("templating", layers)
    import graphlib

    graph = {module_name(p): runtime_imports(p) for p in core_files()} | {"templating": found}
    try:
        graphlib.TopologicalSorter(graph).prepare()
        raise AssertionError("the cycle templating -> project.nodes -> ... -> templating was not found")
    except graphlib.CycleError:
        pass


# -- a name imported from another module is public ------------------------------------------------
STATE = CORE / "state"


def private_imports(source: str, path: pathlib.Path) -> list[str]:
    """Underscore names ``source`` (the file at ``path``) takes from other modules: ``from m import
    _x``, and ``m._x`` where ``m`` is a module it imported (``from . import m``, ``import a.m as m``)."""
    tree = ast.parse(source)
    modules: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            folder = path.parent
            for _ in range(node.level - 1):
                folder = folder.parent
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.name}:{node.lineno} from {'.' * node.level}{node.module or ''} "
                                 f"import {alias.name}")
                where = folder / (node.module or "").replace(".", "/") / alias.name if node.level else None
                if where is not None and (where.with_suffix(".py").exists() or where.is_dir()):
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(a.asname for a in node.names if a.asname)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_no_state_module_imports_a_private_name_of_another():
    """What one state module takes from another is public (named without an underscore), so the
    backends' shared helpers are a contract, not reach-ins."""
    found = [hit for path in sorted(STATE.glob("*.py")) for hit in private_imports(path.read_text(), path)]
    assert not found, "private names imported across modules (make them public):\n" + "\n".join(found)


def test_the_private_import_check_sees_both_forms():
    source = "from .common import _fmt, fmt_us\nfrom . import records\nx = records._entry\ny = records.entry\n"
    assert private_imports(source, STATE / "json_file.py") == [
        "json_file.py:1 from .common import _fmt", "json_file.py:3 records._entry"]
