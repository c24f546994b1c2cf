"""How long a Dagster code location takes to load the definitions of an N-model SQL
project: seeknal-dagster (`seeknal_dagster.build_definitions(project_path)`) versus
dagster-dbt (`@dbt_assets(manifest=...)` over a prepared target/manifest.json).

Both projects have the same shape: N models in `--layers` layers of N/layers models; a
model in layer 0 reads the one source (`raw.events` / `raw`), a model in layer k reads
the model in the same column of layer k-1 (so N/layers parallel chains, `--layers` deep).
Every model is a plain SELECT, daily partitioned from 2023-01-01 (UTC) on both sides,
over DuckDB.  One file per model on both sides.

Each measurement is a fresh `python` process that imports dagster and the integration,
builds the Definitions, resolves the repository (asset graph) and serialises the
repository snapshot a code server sends to the webserver (`RepositorySnap.from_def`,
deferred job snapshots, as `dagster api grpc` does), then prints one line.  From the
parent: `ready` (spawn to that line: what a code server waits for), `exit` (to the
process's exit: adds interpreter teardown, and seeknal's load-cache write), and the
child's CPU time at `ready`; inside it each phase is timed too.  seeknal is loaded
with its defaults (asset checks, sensors, automation conditions, the apply job) and
"assets only" (all four off: what the dagster-dbt definitions hold), each cold (no
`target/project_cache.json`) and warm; dagster-dbt keeps no cache on disk.  The two venvs (seeknal's from
`make setup`, and one with dagster-dbt) have the same Python and dagster, but a bare
`import dagster` is timed in each and subtracted from that venv's loads.

Trials alternate the order of the two sides (odd trials: seeknal first; even: dbt
first); the 1-minute load average (/proc/loadavg) is read after each timed process.

Not timed in the loads: generating the projects, `dbt parse` (dagster-dbt loads a
prepared manifest in production), one untimed warm-up load of each kind (so .pyc files
and the OS page cache are warm for both sides).  `dbt parse` and its seeknal peer,
`seeknal prepare` (which writes the load cache a warm load reads), are each timed once,
and a last table sets a fresh checkout's first load on both sides side by side: seeknal
cold, `dbt parse` plus dagster-dbt's load.

``--audits K`` gives every model K column tests on both sides (seeknal audits ``not_null``
on ``n`` / ``t``..., dbt ``not_null`` data tests on the same columns), so seeknal's checks per
audit and dagster-dbt's checks per test are compared like for like.  seeknal's defaults
include column lineage (``dagster/column_lineage`` from the load cache on a warm load).

Copied from ../shared/bench (README there) into the repository.  dagster-dbt needs its own
venv (it would change packages in the project's):

    python3.11 -m venv dbtvenv && dbtvenv/bin/pip install "dagster==1.13.27" "dagster-dbt==0.29.27" \
        "dbt-core==1.12.0" "dbt-core-experimental-parser==2.0.0a4" "dbt-duckdb~=1.11.0"

Usage:
  python bench/dagster_load_vs_dbt.py --seeknal-python P/.venv/bin/python \
      --dbt-python DBTVENV/bin/python --work DIR [--sizes 200,2000] [--trials 5] [--json F]
  ... --attribute 2000 --trials 3   # what each seeknal default costs at load (warm)
  ... --report-only --json F        # the tables again from a saved run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

START = "2023-01-01"

# -- project generators ---------------------------------------------------------------------


def model_name(layer: int, col: int) -> str:
    return f"m_l{layer:02d}_c{col:04d}"


def upstream_of(layer: int, col: int) -> str | None:
    return None if layer == 0 else model_name(layer - 1, col)


def shape(n: int, layers: int) -> list[tuple[int, int]]:
    assert n % layers == 0, (n, layers)
    width = n // layers
    return [(layer, col) for layer in range(layers) for col in range(width)]


AUDIT_COLUMNS = ("n", "t")


def make_seeknal(root: Path, n: int, layers: int, audits: int = 0) -> Path:
    if root.exists():
        shutil.rmtree(root)
    (root / "seeknal" / "transforms").mkdir(parents=True)
    (root / "seeknal" / "sources").mkdir(parents=True)
    (root / "seeknal_project.yml").write_text(
        f"name: bench\ntimezone: UTC\nstart: {START}\ndatabase: target/warehouse.duckdb\n")
    (root / "seeknal" / "sources" / "raw.yml").write_text(
        "raw:\n  table: raw\n  time_column: t\n")
    for layer, col in shape(n, layers):
        name = model_name(layer, col)
        up = upstream_of(layer, col)
        frm = "raw" if up is None else f"{{{{ ref('{up}') }}}}"
        (root / "seeknal" / "transforms" / f"{name}.yml").write_text(
            f"{name}:\n"
            f'  schedule: "@daily"\n'
            f"  time_column: t\n"
            f"  sql: |\n"
            f"    SELECT t, n FROM {frm}\n"
            f"    WHERE t >= TIMESTAMP '{{{{ start }}}}' AND t < TIMESTAMP '{{{{ end }}}}'\n"
            + ("  audits:\n" + "".join(f"    - not_null: [{c}]\n" for c in AUDIT_COLUMNS[:audits])
               if audits else ""))
    return root


def make_dbt(root: Path, n: int, layers: int, audits: int = 0) -> Path:
    if root.exists():
        shutil.rmtree(root)
    (root / "models").mkdir(parents=True)
    (root / "dbt_project.yml").write_text(
        "name: bench\nversion: '1.0'\nprofile: bench\nconfig-version: 2\n"
        "model-paths: [models]\n"
        "models:\n  bench:\n    +materialized: incremental\n    +incremental_strategy: delete+insert\n"
        "    +unique_key: t\n")
    (root / "profiles.yml").write_text(
        "bench:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        "      path: target/warehouse.duckdb\n      threads: 1\n")
    (root / "models" / "sources.yml").write_text(
        "version: 2\nsources:\n  - name: raw\n    schema: main\n    tables:\n"
        "      - name: events\n")
    for layer, col in shape(n, layers):
        name = model_name(layer, col)
        up = upstream_of(layer, col)
        frm = "{{ source('raw', 'events') }}" if up is None else f"{{{{ ref('{up}') }}}}"
        # the partition's window comes in as vars (dagster-dbt's documented pattern)
        (root / "models" / f"{name}.sql").write_text(
            f"select t, n from {frm}\n"
            "where t >= timestamp '{{ var(\"min_date\", \"2023-01-01\") }}'"
            " and t < timestamp '{{ var(\"max_date\", \"2023-01-02\") }}'\n")
    if audits:
        lines = ["version: 2", "models:"]
        for layer, col in shape(n, layers):
            lines += [f"  - name: {model_name(layer, col)}", "    columns:"]
            lines += [f"      - name: {c}\n        data_tests: [not_null]" for c in AUDIT_COLUMNS[:audits]]
        (root / "models" / "schema.yml").write_text("\n".join(lines) + "\n")
    return root


def dbt_parse(dbt_python: str, root: Path) -> float:
    dbt = Path(dbt_python).parent / "dbt"
    t = time.perf_counter()
    proc = subprocess.run([str(dbt), "parse", "--profiles-dir", str(root), "--project-dir", str(root),
                           "--no-partial-parse", "--quiet"],
                          capture_output=True, text=True, cwd=root, env=_env(dbt_python), check=False)
    elapsed = time.perf_counter() - t
    if proc.returncode or not (root / "target" / "manifest.json").exists():
        raise SystemExit(f"dbt parse failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def seeknal_prepare(seeknal_python: str, root: Path) -> float:
    """``seeknal prepare`` on a project without a load cache: seeknal's ``dbt parse``."""
    (root / "target" / "project_cache.json").unlink(missing_ok=True)
    t = time.perf_counter()
    proc = subprocess.run([seeknal_python, "-m", "seeknal_core.cli", "prepare", "-p", str(root)],
                          capture_output=True, text=True, cwd=root, env=_env(seeknal_python), check=False)
    elapsed = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"seeknal prepare failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


# -- loaders (run in fresh processes) ----------------------------------------------------------

COMMON = r"""
import json, sys, time
T0 = time.perf_counter()
import dagster as dg
T1 = time.perf_counter()
"""

TAIL = r"""
T3 = time.perf_counter()
repo = defs.get_repository_def()
graph = repo.asset_graph
keys = graph.get_all_asset_keys()
materializable = [k for k in keys if graph.get(k).is_materializable]
partitioned = [k for k in materializable if graph.get(k).partitions_def is not None]
edges = sum(len(graph.get(k).parent_keys) for k in materializable)
T4 = time.perf_counter()
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
snap = serialize_value(RepositorySnap.from_def(repo, defer_snapshots=True))
T5 = time.perf_counter()
pdefs = {str(graph.get(k).partitions_def) for k in partitioned}
print(json.dumps({
    "import_dagster": T1 - T0, "import_integration": T2 - T1, "build": T3 - T2,
    "resolve": T4 - T3, "snapshot": T5 - T4, "in_process": T5 - T0,
    "keys": len(keys), "materializable": len(materializable), "partitioned": len(partitioned),
    "edges": edges, "pdefs": sorted(pdefs), "snapshot_bytes": len(snap),
    "jobs": len(repo.get_all_jobs()), "sensors": len(repo.sensor_defs),
    "checks": len(list(graph.asset_check_keys)), "cpu_ready": time.process_time(),
    "module": getattr(sys.modules.get("seeknal_dagster"), "__file__", None),
}), flush=True)
"""

SEEKNAL = COMMON + r"""
import seeknal_dagster
T2 = time.perf_counter()
if sys.argv[2] == "assets-only":
    defs = seeknal_dagster.build_definitions(sys.argv[1], sensors=False, checks=False,
                                             automation="none", apply_job=False)
elif sys.argv[2] == "default":
    defs = seeknal_dagster.build_definitions(sys.argv[1])
elif sys.argv[2] == "no-lineage":
    defs = seeknal_dagster.build_definitions(sys.argv[1], translator=seeknal_dagster.SeeknalTranslator(lineage=False))
else:  # keyword arguments as JSON (--attribute)
    defs = seeknal_dagster.build_definitions(sys.argv[1], **json.loads(sys.argv[2]))
""" + TAIL

DBT = COMMON + r"""
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets
T2 = time.perf_counter()
project = DbtProject(project_dir=sys.argv[1], profiles_dir=sys.argv[1])

@dbt_assets(manifest=project.manifest_path, project=project,
            partitions_def=dg.DailyPartitionsDefinition(start_date="2023-01-01"))
def bench_dbt_assets(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    window = context.partition_time_window
    dbt_vars = {"min_date": window.start.isoformat(), "max_date": window.end.isoformat()}
    yield from dbt.cli(["build", "--vars", json.dumps(dbt_vars)], context=context).stream()

defs = dg.Definitions(assets=[bench_dbt_assets], resources={"dbt": DbtCliResource(project_dir=project)})
""" + TAIL

BARE = "import dagster, json, time\nprint(json.dumps({'cpu_ready': time.process_time()}), flush=True)"


#: this checkout: the seeknal side imports seeknal_dagster from here, not from wherever
#: the venv's editable install points
REPO = Path(__file__).resolve().parent.parent
SEEKNAL_PYTHON: list[str] = []


def _env(python: str | None = None) -> dict:
    """The environment of an activated venv: its bin/ first on PATH (DbtCliResource looks
    for the `dbt` executable there at load); the seeknal venv also imports this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DAGSTER_HOME")}
    if python is not None and python in SEEKNAL_PYTHON:
        env["PYTHONPATH"] = str(REPO)
    if python:
        env["PATH"] = str(Path(python).parent) + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = str(Path(python).parent.parent)
    env["DAGSTER_DISABLE_TELEMETRY"] = "yes"
    env["DO_NOT_TRACK"] = "1"
    return env


def loadavg1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def timed(python: str, code: str, args: list[str], cwd: Path) -> dict:
    """One fresh process.  ``ready``: from spawning it to reading the one line it prints
    once the definitions are loaded and the snapshot serialised (what a code server
    waits for before it serves); ``wall``: to its exit (adds interpreter teardown)."""
    la0 = loadavg1()
    with open(cwd / ".stderr", "w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen([python, "-c", code, *args], stdout=subprocess.PIPE, stderr=err,
                                text=True, cwd=cwd, env=_env(python))
        line = proc.stdout.readline()
        ready = time.perf_counter() - t
        rest = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        rc = os.waitstatus_to_exitcode(status)
        proc.returncode = rc
        la1 = loadavg1()
        if rc or not line.strip():
            err.seek(0)
            raise SystemExit(f"{python} {args} failed ({rc}):\n{line}{rest}\n{err.read()[-4000:]}")
    return {"ready": ready, "wall": wall, "cpu_exit": usage.ru_utime + usage.ru_stime,
            "load_before": la0, "load_after": la1, **json.loads(line)}


# -- the benchmark -----------------------------------------------------------------------------


def run_size(n: int, args, work: Path) -> dict:
    sk = make_seeknal(work / f"seeknal_{n}", n, args.layers, args.audits)
    db = make_dbt(work / f"dbt_{n}", n, args.layers, args.audits)
    parse_s = dbt_parse(args.dbt_python, db)
    manifest = json.loads((db / "target" / "manifest.json").read_text())
    models = [k for k in manifest["nodes"] if k.startswith("model.")]
    assert len(models) == n, len(models)
    cache = sk / "target" / "project_cache.json"
    (sk / "target").mkdir(exist_ok=True)
    prepare_s = seeknal_prepare(args.seeknal_python, sk)

    def seeknal(mode: str, cold: bool) -> dict:
        if cold:
            cache.unlink(missing_ok=True)
        return timed(args.seeknal_python, SEEKNAL, [str(sk), mode], work)

    def dbt() -> dict:
        return timed(args.dbt_python, DBT, [str(db)], work)

    # warm-up, untimed: .pyc and page cache for both venvs, the seeknal load cache
    timed(args.seeknal_python, BARE, [], work)
    timed(args.dbt_python, BARE, [], work)
    check_s = seeknal("default", True)
    check_a = seeknal("assets-only", False)
    check_d = dbt()
    shape_check(n, check_s, check_a, check_d)

    rows: dict[str, list[dict]] = {k: [] for k in (
        "bare_seeknal_venv", "bare_dbt_venv", "seeknal_cold", "seeknal_warm",
        "seeknal_assets_only_cold", "seeknal_assets_only_warm", "dbt")}
    seeknal_side = [
        ("bare_seeknal_venv", lambda: timed(args.seeknal_python, BARE, [], work)),
        ("seeknal_cold", lambda: seeknal("default", True)),
        ("seeknal_warm", lambda: seeknal("default", False)),
        ("seeknal_assets_only_cold", lambda: seeknal("assets-only", True)),
        ("seeknal_assets_only_warm", lambda: seeknal("assets-only", False)),
    ]
    dbt_side = [
        ("bare_dbt_venv", lambda: timed(args.dbt_python, BARE, [], work)),
        ("dbt", dbt),
    ]
    for trial in range(args.trials):
        order = seeknal_side + dbt_side if trial % 2 == 0 else dbt_side + seeknal_side
        for label, fn in order:
            rows[label].append(fn())
        print(f"  N={n} trial {trial + 1}/{args.trials} ({'seeknal' if trial % 2 == 0 else 'dbt'} first), "
              f"ready s: " + ", ".join(f"{k} {v[-1]['ready']:.2f}" for k, v in rows.items())
              + f"; load avg {loadavg1():.2f}", file=sys.stderr, flush=True)
    return {"n": n, "dbt_parse_s": parse_s, "seeknal_prepare_s": prepare_s, "trials": rows,
            "counts": {"seeknal": {k: check_s[k] for k in COUNT_KEYS},
                       "seeknal_assets_only": {k: check_a[k] for k in COUNT_KEYS},
                       "dbt": {k: check_d[k] for k in COUNT_KEYS}}}


COUNT_KEYS = ("keys", "materializable", "partitioned", "edges", "pdefs", "jobs", "sensors", "checks",
              "snapshot_bytes")


def shape_check(n: int, s: dict, a: dict, d: dict) -> None:
    """Same graph on both sides: N daily-partitioned materializable models, N edges."""
    assert s["module"].startswith(str(REPO)), (s["module"], REPO)  # this checkout's adapter
    for label, r in (("seeknal", s), ("seeknal assets-only", a), ("dbt", d)):
        assert r["materializable"] == n, (label, r)
        assert r["partitioned"] == n, (label, r)
        assert r["edges"] == n, (label, r)
        assert len(r["pdefs"]) == 1, (label, r)  # one partitions definition for all models


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


LOADS = ("seeknal_cold", "seeknal_warm", "seeknal_assets_only_cold", "seeknal_assets_only_warm", "dbt")
METRICS = ("ready", "cpu_ready", "wall")


def summarise(res: dict) -> dict:
    """Medians per kind of load; 'over_bare' subtracts the median bare import of the same
    venv; 'over_bare_paired' is the median of per-trial differences (same trial's bare)."""
    t = res["trials"]
    out: dict = {"n": res["n"], "dbt_parse_s": res["dbt_parse_s"],
                 "seeknal_prepare_s": res.get("seeknal_prepare_s")}
    for label in ("bare_seeknal_venv", "bare_dbt_venv"):
        out[label] = {m: med(t[label], m) for m in METRICS}
    for label in LOADS:
        bare_label = "bare_dbt_venv" if label == "dbt" else "bare_seeknal_venv"
        out[label] = {m: med(t[label], m) for m in METRICS}
        for m in METRICS:
            out[label][m + "_over_bare"] = out[label][m] - out[bare_label][m]
            out[label][m + "_over_bare_paired"] = statistics.median(
                r[m] - b[m] for r, b in zip(t[label], t[bare_label]))
        out[label]["phases"] = {p: med(t[label], p) for p in (
            "import_dagster", "import_integration", "build", "resolve", "snapshot", "in_process")}
    loads = [r["load_after"] for rows in t.values() for r in rows] + \
        [r["load_before"] for rows in t.values() for r in rows]
    out["loadavg_1m"] = {"min": min(loads), "median": statistics.median(loads), "max": max(loads)}
    return out


def report(summaries: list[dict]) -> str:
    """Markdown tables: seconds (median of trials), over the venv's bare import, and ratios."""
    lines = ["| N | load | ready s | over bare s | CPU s | CPU over bare s | exit s | 1-min load avg |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        la = s["loadavg_1m"]
        for label in ("bare_seeknal_venv", "bare_dbt_venv", *LOADS):
            r = s[label]
            ob = f"{r['ready_over_bare']:+.2f}" if "ready_over_bare" in r else ""
            cb = f"{r['cpu_ready_over_bare']:+.2f}" if "cpu_ready_over_bare" in r else ""
            lines.append(f"| {s['n']:,} | {label} | {r['ready']:.2f} | {ob} | {r['cpu_ready']:.2f} | {cb} "
                         f"| {r['wall']:.2f} | {la['min']:.2f}-{la['max']:.2f} (med {la['median']:.2f}) |")
    lines += ["", "| N | seeknal / dagster-dbt | ready | ready over bare | CPU | CPU over bare |",
              "|---|---|---|---|---|---|"]
    for s in summaries:
        d = s["dbt"]
        for label in LOADS[:-1]:
            r = s[label]
            lines.append(f"| {s['n']:,} | {label} | {r['ready'] / d['ready']:.2f} "
                         f"| {r['ready_over_bare'] / d['ready_over_bare']:.2f} "
                         f"| {r['cpu_ready'] / d['cpu_ready']:.2f} "
                         f"| {r['cpu_ready_over_bare'] / d['cpu_ready_over_bare']:.2f} |")
    lines += ["", "| N | fresh checkout: seeknal cold load s | `dbt parse` + dagster-dbt load s | ratio "
              "| `seeknal prepare` s | `dbt parse` s | ratio |", "|---|---|---|---|---|---|---|"]
    for s in summaries:  # each prepare step timed once, wall; the loads are the medians above
        cold, fresh_dbt = s["seeknal_cold"]["ready"], s["dbt_parse_s"] + s["dbt"]["ready"]
        prep = s.get("seeknal_prepare_s")
        lines.append(f"| {s['n']:,} | {cold:.2f} | {fresh_dbt:.2f} | {cold / fresh_dbt:.2f} | "
                     + (f"{prep:.2f} | {s['dbt_parse_s']:.2f} | {prep / s['dbt_parse_s']:.2f} |"
                        if prep is not None else f"| {s['dbt_parse_s']:.2f} | |"))
    if len(summaries) == 2:
        a, b = summaries
        lines += ["", f"| growth {a['n']:,} -> {b['n']:,} | ready | ready over bare | CPU over bare |",
                  "|---|---|---|---|"]
        for label in LOADS:
            lines.append(f"| {label} | {b[label]['ready'] / a[label]['ready']:.2f}x "
                         f"| {b[label]['ready_over_bare'] / a[label]['ready_over_bare']:.2f}x "
                         f"| {b[label]['cpu_ready_over_bare'] / a[label]['cpu_ready_over_bare']:.2f}x |")
    lines += ["", "| N | load | import dagster | import integration | build | resolve | snapshot | in process |",
              "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        for label in LOADS:
            p = s[label]["phases"]
            lines.append(f"| {s['n']:,} | {label} | " + " | ".join(f"{p[k]:.2f}" for k in (
                "import_dagster", "import_integration", "build", "resolve", "snapshot", "in_process")) + " |")
    return "\n".join(lines)


ATTRIBUTE = [  # each turns one default off: what that part costs at load
    ("default", "default"),
    ("checks=False", json.dumps({"checks": False})),
    ("sensors=False", json.dumps({"sensors": False})),
    ("automation='none'", json.dumps({"automation": "none"})),
    ("apply_job=False", json.dumps({"apply_job": False})),
    ("lineage off", "no-lineage"),
    ("assets only (all four off)", "assets-only"),
]


def attribute(n: int, args) -> str:
    """seeknal's warm load with one default turned off at a time, alternating variants
    trial by trial; medians of `ready` and of the in-process snapshot phase."""
    sk = make_seeknal(args.work / f"seeknal_{n}", n, args.layers, args.audits)
    (sk / "target").mkdir(exist_ok=True)
    time.sleep(2.5)  # past seeknal's racy-mtime window, so the warm cache trusts the files
    timed(args.seeknal_python, SEEKNAL, [str(sk), "default"], args.work)  # writes the cache
    rows: dict[str, list[dict]] = {label: [] for label, _ in ATTRIBUTE}
    for trial in range(args.trials):
        order = ATTRIBUTE if trial % 2 == 0 else ATTRIBUTE[::-1]
        for label, mode in order:
            rows[label].append(timed(args.seeknal_python, SEEKNAL, [str(sk), mode], args.work))
    base = med(rows["default"], "ready")
    lines = [f"| seeknal at N={n:,}, warm | ready s | saved vs default s | build s | snapshot s "
             "| snapshot MB | 1-min load avg |", "|---|---|---|---|---|---|---|"]
    for label, _ in ATTRIBUTE:
        r = rows[label]
        la = [x["load_after"] for x in r]
        lines.append(f"| {label} | {med(r, 'ready'):.2f} | {base - med(r, 'ready'):+.2f} | {med(r, 'build'):.2f} "
                     f"| {med(r, 'snapshot'):.2f} | {r[0]['snapshot_bytes'] / 1e6:.1f} "
                     f"| {min(la):.2f}-{max(la):.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeknal-python")
    p.add_argument("--dbt-python")
    p.add_argument("--work", type=Path)
    p.add_argument("--sizes", default="200,2000")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--layers", type=int, default=10)
    p.add_argument("--audits", type=int, default=0, choices=range(len(AUDIT_COLUMNS) + 1),
                   help="column tests per model on both sides (seeknal audits / dbt data tests)")
    p.add_argument("--json", type=Path, help="write raw trials and the summary here")
    p.add_argument("--report-only", action="store_true", help="print the tables of an earlier --json")
    p.add_argument("--attribute", type=int, metavar="N",
                   help="instead: what each of seeknal's defaults (checks, sensors, automation, "
                        "apply job) costs at load, at N models")
    args = p.parse_args()
    if args.report_only:
        print(report([summarise(r) for r in json.loads(args.json.read_text())]))
        return
    if not (args.seeknal_python and args.dbt_python and args.work):
        p.error("--seeknal-python, --dbt-python and --work are required")
    # absolute, not resolved: a venv's python is a symlink out of the venv
    args.seeknal_python, args.dbt_python = map(os.path.abspath, (args.seeknal_python, args.dbt_python))
    args.work = Path(os.path.abspath(args.work))
    SEEKNAL_PYTHON.append(args.seeknal_python)
    if args.attribute:
        args.work.mkdir(parents=True, exist_ok=True)
        print(attribute(args.attribute, args))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(x) for x in args.sizes.split(",")):
        res = run_size(n, args, args.work)
        res["summary"] = summarise(res)
        results.append(res)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print(report([r["summary"] for r in results]))


if __name__ == "__main__":
    main()
