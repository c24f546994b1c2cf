"""Loading a project folder: find it, read its YAML files, validate, build the graph."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import ProjectError
from .cache import LoadCache, open_cache
from .fields import _Ctx, _Defaults, _parse_source, _parse_transforms, _show
from .graph import Project
from .nodes import (
    DEFAULT_DATABASE,
    LOCAL_SETTINGS_FILE,
    NODE_NAME,
    ON_CHANGE,
    PROJECT_FIELDS,
    PROJECT_FILES,
    SOURCE_FIELDS,
    SOURCES_DIR,
    TRANSFORM_FIELDS,
    TRANSFORMS_DIR,
)
from .sql import DEFAULT_DIALECT


@lru_cache(maxsize=1)
def _loader() -> type:
    """The YAML loader class; pyyaml is imported on the first file the cache lacks."""
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        """Safe loader (libyaml when available) that rejects duplicate keys."""

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                    if key_node.value in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key '{key_node.value}'", key_node.start_mark)
                    seen.add(key_node.value)
            return super().construct_mapping(node, deep)

        def construct_yaml_timestamp(self, node):
            try:
                return super().construct_yaml_timestamp(node)
            except ValueError as exc:  # 2024-13-01 looks like a date but is not one
                raise yaml.constructor.ConstructorError(
                    None, None, f"invalid date '{node.value}': {exc}", node.start_mark) from None

    Loader.add_constructor("tag:yaml.org,2002:timestamp", Loader.construct_yaml_timestamp)
    return Loader


_FILE_CACHE: dict[Path, tuple[str, Any]] = {}
#: the most values one YAML document may hold once its aliases (``*name``) are expanded:
#: a few aliases of aliases (the "billion laughs") stand for billions of values, which
#: every walk of the data (validation, the load cache) would visit
MAX_VALUES = 1_000_000


def expanded_size(data: Any, limit: int = MAX_VALUES) -> int | None:
    """How many values ``data`` holds with every shared (aliased) part counted each time
    it appears; None when that passes ``limit`` or a part contains itself.  Each distinct
    object is visited once, so the check costs what the file's own size does."""
    sizes: dict[int, int | None] = {}  # id -> expanded size; None while being counted

    def size(value: Any) -> int:
        if not isinstance(value, dict | list):
            return 1
        key = id(value)
        if key in sizes:
            known = sizes[key]
            if known is None:  # a part that contains itself never ends
                raise OverflowError
            return known
        sizes[key] = None
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        total = 1
        for item in items:
            total += size(item)
            if total > limit:
                raise OverflowError
        sizes[key] = total
        return total

    try:
        return size(data)
    except (OverflowError, RecursionError):
        return None


def read_yaml(path: Path, root: Path | None = None, cache: LoadCache | None = None) -> Any:
    """Parse a YAML file; bad YAML is a ProjectError naming the file and line.

    Parsed files are kept by content, in memory and in ``cache``; with a cache, a file
    whose mtime, size and inode match an entry recorded well after its last write is
    not even read (see ``cache.RACY_NS``).  The returned data is shared with the
    caches: read-only.
    """
    if cache is not None:  # unchanged since a load well after its last write: no read
        key = cache.known_key(path)
        hit, data = cache.parsed(key) if key else (False, None)
        if hit:
            cache.remember_file(path, key)
            return data
    try:
        raw = path.read_bytes()
        key = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
        hit, data = cache.parsed(key) if cache is not None else (False, None)
        if cache is not None:
            cache.remember_file(path, key)
        cached = _FILE_CACHE.get(path)
        if hit or (cached and cached[0] == key):
            return data if hit else cached[1]
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{_show(path, root)}: cannot read file: {exc}") from None
    import yaml

    try:
        data = yaml.load(text, Loader=_loader())  # a safe loader (libyaml when available)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProjectError(f"{_show(path, root)}{line}: invalid YAML: {problem}") from None
    if expanded_size(data) is None:
        raise ProjectError(
            f"{_show(path, root)}: refused: its aliases (*name) expand to more than "
            f"{MAX_VALUES:,} values, or to a value that contains itself — write the values "
            "out, or use fewer nested aliases")
    if cache is not None:
        cache.remember(key, data)
    _FILE_CACHE[path] = (key, data)
    return data


def find_root(path: str | os.PathLike = ".") -> tuple[Path, Path | None]:
    """The project folder and its settings file (None when only ``seeknal/`` exists)."""
    root = Path(path).expanduser().resolve()
    if root.is_file() and root.name in PROJECT_FILES:
        return root.parent, root
    if not root.is_dir():
        raise ProjectError(f"project folder {root} does not exist — create it with "
                           "`seeknal init` or pass the right --project-path")
    for name in PROJECT_FILES:
        if (root / name).is_file():
            return root, root / name
    if (root / "seeknal").is_dir():
        return root, None
    raise ProjectError(
        f"{root} is not a seeknal project: no seeknal_project.yml and no seeknal/ folder — "
        "run `seeknal init` there, or create seeknal_project.yml and seeknal/transforms/"
    )


def node_files(root: Path) -> list[tuple[str, Path]]:
    """(kind, file) for every node YAML file, sources first, each folder sorted."""
    out = []
    for kind, folder in (("source", SOURCES_DIR), ("transform", TRANSFORMS_DIR)):
        found: list[tuple[tuple[str, ...], str]] = []
        _walk(str(root / folder), (), found)
        out += [(kind, Path(path)) for _, path in sorted(found)]
    return out


def _walk(folder: str, parts: tuple[str, ...], found: list[tuple[tuple[str, ...], str]]) -> None:
    """YAML files below ``folder`` as (path parts, path): os.scandir needs no stat per file."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir():
            _walk(entry.path, (*parts, entry.name), found)
        elif entry.name.endswith((".yml", ".yaml")) and entry.is_file():
            found.append(((*parts, entry.name), entry.path))


def declared_names(root: str | os.PathLike) -> set[str]:
    """Lower-cased names of every declared node, source and source table, unvalidated.

    For tools that write node files (the Flow API): unreadable files are skipped.
    """
    names: set[str] = set()
    for _, path in node_files(Path(root).resolve()):
        try:
            data = read_yaml(path)
        except ProjectError:
            continue
        if isinstance(data, dict):
            for key, spec in data.items():
                names.add(str(key).lower())
                if isinstance(spec, dict) and isinstance(spec.get("table"), str):
                    names.add(spec["table"].lower())
    return names


def _read_project_file(root: Path, config: Path | None, cache: LoadCache) -> dict:
    """The project's settings: its file's, then ``seeknal_project.local.yml``'s over them."""
    settings: dict = {}
    local = root / LOCAL_SETTINGS_FILE
    for path in (config, local if local.is_file() else None):
        if path is None:
            continue
        data = read_yaml(path, root, cache)
        if data is None:
            continue
        ctx = _Ctx(root, path)
        if not isinstance(data, dict):
            raise ctx.error("expected a mapping of settings (name, timezone, start, state, database)")
        ctx.check_fields(data, PROJECT_FIELDS)
        settings = {**settings, **data}
    return settings


def load_project(path: str | os.PathLike = ".") -> Project:
    """Load and validate the project at ``path`` (its folder or its seeknal_project.yml)."""
    root, config_path = find_root(path)
    cache = open_cache(root / "target")
    settings = _read_project_file(root, config_path, cache)
    ctx = _Ctx(root, config_path or root)
    name = ctx.text(settings, "name") or root.name
    timezone = ctx.timezone(settings, "UTC")
    start, end = ctx.bounds(settings, timezone, None, None)
    engine_config = ctx.engine_block(settings)
    dialect = ctx.dialect(settings, DEFAULT_DIALECT)
    on_change = ctx.choice(settings, "on_change", ON_CHANGE, "warn")
    state = settings.get("state")
    if state is not None and not isinstance(state, dict):
        raise ctx.error(f"expected a mapping such as {{backend: json, path: "
                        f"target/run_state.json}}, got {state!r}", "state")
    database = ctx.text(settings, "database") or DEFAULT_DATABASE

    specs: dict[str, tuple[str, dict, _Ctx]] = {}
    lower: dict[str, str] = {}
    for kind, file in node_files(root):
        data = read_yaml(file, root, cache)
        if data is None:
            continue
        fctx = _Ctx(root, file)
        if not isinstance(data, dict):
            raise fctx.error("expected a mapping of node name -> fields "
                             "(my_node: {sql: ...})")
        for key, spec in data.items():
            if not isinstance(key, str) or not NODE_NAME.match(key):
                raise fctx.error(f"invalid node name {key!r}: use letters, digits and "
                                 "underscores, starting with a letter or underscore")
            nctx = _Ctx(root, file, key)
            if not isinstance(spec, dict):
                hint = (" — nest the fields under the node name (my_node: {sql: ...})"
                        if key in TRANSFORM_FIELDS or key in SOURCE_FIELDS else "")
                raise nctx.error(f"expected a mapping of fields, got {spec!r}{hint}")
            if key.lower() in lower:
                other = specs[lower[key.lower()]][2]
                raise nctx.error(f"duplicate node name: '{lower[key.lower()]}' is already "
                                 f"defined in {_show(other.path, root)}")
            lower[key.lower()] = key
            specs[key] = (kind, spec, nctx)

    sources = {
        n: _parse_source(spec, c) for n, (k, spec, c) in specs.items() if k == "source"
    }
    transforms = {n: (spec, c) for n, (k, spec, c) in specs.items() if k == "transform"}
    defaults = _Defaults(timezone, start, end, engine_config["type"], dialect)
    nodes = _parse_transforms(transforms, sources, defaults)
    cache.save()
    return Project(
        name=name, root=root, nodes=nodes, sources=sources, timezone=timezone, start=start,
        state_config=state, database_path=root / database,
        description=ctx.text(settings, "description"), config_path=config_path, end=end,
        engine_config=engine_config, dialect=dialect, on_change=on_change,
    )


