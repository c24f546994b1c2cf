"""``seeknal init``: a small project that ``seeknal run`` can run at once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from ..project import PROJECT_FILES
from .common import CliError

START = dt.datetime(2024, 1, 1)
DAYS = 31
EVENT_TYPES = ("view", "view", "view", "cart", "purchase")

PROJECT_YML = """\
# seeknal project settings; see `seeknal --help`.
name: {name}
timezone: UTC
start: 2024-01-01            # the first interval every scheduled node tracks
"""

SOURCE_YML = """\
# An external input: a CSV file (Parquet and DuckDB tables work too).
raw_events:
  path: data/events.csv
  time_column: event_time
"""

TRANSFORM_YML = """\
# A daily node: each run computes only the days not done yet.
# {{ start }} and {{ end }} are the interval's bounds (end exclusive).
events_flow:
  schedule: "@daily"
  time_column: day
  sql: |
    SELECT CAST(event_time AS DATE) AS day, event_type,
           count(*) AS events, sum(amount) AS amount
    FROM raw_events
    WHERE event_time >= '{{ start }}' AND event_time < '{{ end }}'
    GROUP BY ALL
"""


def events_csv(days: int = DAYS) -> str:
    """One event every 30 minutes from 2024-01-01, deterministic."""
    lines = ["event_time,user_id,event_type,amount"]
    for i in range(days * 48):
        at = START + dt.timedelta(minutes=30 * i)
        kind = EVENT_TYPES[(i * 7) % len(EVENT_TYPES)]
        amount = f"{(i * 37) % 90 + 10}.00" if kind == "purchase" else "0.00"
        lines.append(f"{at:%Y-%m-%d %H:%M:%S},{1000 + (i * 13) % 50},{kind},{amount}")
    return "\n".join(lines) + "\n"


@click.command("init", short_help="Create a small working project.")
@click.argument("path", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--project-path", "-p", "option_path", type=click.Path(file_okay=False, path_type=Path),
              help="Where to create the project (same as PATH).")
@click.option("--name", help="Project name (default: the folder's name).")
def init_command(path: Path | None, option_path: Path | None, name: str | None) -> int:
    """Create a small working project in PATH (default: the current folder)."""
    if path and option_path and path.resolve() != option_path.resolve():
        raise click.UsageError("give the folder once: PATH or --project-path")
    root = (path or option_path or Path(".")).resolve()
    existing = [f for f in PROJECT_FILES if (root / f).exists()] + (
        ["seeknal/"] if (root / "seeknal").exists() else [])
    if existing:
        raise CliError(f"{root} already holds a project ({', '.join(existing)}): choose an empty "
                       "folder or a new path")
    files = {
        "seeknal_project.yml": PROJECT_YML.format(name=name or root.name or "seeknal_project"),
        "seeknal/sources/raw_events.yml": SOURCE_YML,
        "seeknal/transforms/events_flow.yml": TRANSFORM_YML,
        "data/events.csv": events_csv(),
    }
    if not (root / ".gitignore").exists():
        files[".gitignore"] = "target/\n"
    for rel in files:
        target = root / rel
        if target.exists():
            raise CliError(f"{target} already exists: choose an empty folder")
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    click.echo(f"Created a seeknal project in {root}:")
    for rel in files:
        click.echo(f"  {rel}")
    shown = path or option_path
    where = f" --project-path {shown}" if shown else ""
    click.echo(f"Next: seeknal run{where}   then: seeknal intervals show{where}")
    return 0
