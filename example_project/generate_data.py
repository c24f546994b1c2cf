"""Generate the example project's synthetic e-commerce events, deterministically.

    python example_project/generate_data.py                  # ~13 weeks up to the last finished hour
    python example_project/generate_data.py --end 2024-04-01T00:00  # the same, ending at a fixed hour
    python example_project/generate_data.py --rows 20000 --days 10 --start 2024-03-01 --out /tmp/shop/data

Without ``--start`` the data is anchored on an end hour: ``--end``, else the environment's
``SEEKNAL_EXAMPLE_END`` (tests pin it), else the last finished UTC hour.  It starts on the
Sunday 13 to 14 weeks before (00:00 UTC) and draws ``--rows`` events over the 14 weeks from
there, keeping those before the end: a later end in the same week only adds the new hours
(the older rows are the same), so what a run already computed stays true.  Into the default
folder it also writes that Sunday as the example project's ``start:``, in the untracked
``seeknal_project.local.yml`` that seeknal reads over ``seeknal_project.yml`` (so the
partitions Dagster shows are the data's, and the checkout stays clean), and when the start
moves it removes the project's ``target/`` (warehouse and state computed from the previous data).

Writes, under ``--out`` (default: ``example_project/data``)::

    events/events_YYYY-MM.parquet   one file per calendar month, rows sorted by event_time
    products.csv                    the product dimension the purchase amounts come from
    manifest.json                   the parameters; an identical request is skipped

Everything is computed inside DuckDB from ``range()``: no network, no Python loop
over rows, one to two seconds for a million rows.  The pseudo-random columns come from a
32-bit integer hash written out in SQL (Chris Wellons' "lowbias32") rather than
DuckDB's ``hash()``, whose values are an implementation detail that may change
between releases; so the rows depend on the parameters and the seed only.  Two runs
with the same DuckDB write byte-identical files.

Columns of ``events``::

    event_id    BIGINT          1.. in event_time order
    event_time  TIMESTAMP       naive, UTC wall clock; traffic peaks around 19:00 UTC
    user_id     INTEGER         rows // 10 users; a few heavy users, a long tail
    event_type  VARCHAR         page_view, add_to_cart, checkout, purchase, refund
    product_id  INTEGER         1..200, skewed towards low ids
    amount      DECIMAL(10,2)   price x quantity for a purchase, minus the price for a
                                refund, 0.00 for everything else
    country     VARCHAR         fixed per user
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "data"
DEFAULT_ROWS = 1_000_000
PROJECT_FILE = Path(__file__).resolve().parent / "seeknal_project.yml"
LOCAL_FILE = "seeknal_project.local.yml"  # seeknal reads it over PROJECT_FILE; git ignores it
DEFAULT_DAYS = 91  # with --start: one quarter, exactly 13 weeks
ANCHORED_DAYS = 98  # without: the 14 weeks from a Sunday, cut at the end hour
END_ENV = "SEEKNAL_EXAMPLE_END"
SEED = 20240101
FORMAT_VERSION = 1  # bump when the generated data changes, so old data is rebuilt

N_PRODUCTS = 200
EVENT_TYPES = (  # (type, share in per mille): a purchase funnel
    ("page_view", 820), ("add_to_cart", 90), ("checkout", 45), ("purchase", 40), ("refund", 5),
)
COUNTRIES = (  # (ISO code, share in per mille)
    ("US", 340), ("GB", 120), ("DE", 100), ("FR", 80), ("CA", 70), ("IN", 70), ("JP", 60),
    ("BR", 60), ("AU", 50), ("NL", 50),
)
CATEGORIES = ("electronics", "home", "fashion", "beauty", "sports", "toys", "books", "garden")

EVENT_COLUMNS = {
    "event_id": "BIGINT",
    "event_time": "TIMESTAMP",
    "user_id": "INTEGER",
    "event_type": "VARCHAR",
    "product_id": "INTEGER",
    "amount": "DECIMAL(10,2)",
    "country": "VARCHAR",
}


# -- pseudo-random numbers in SQL -----------------------------------------------------------
def _lowbias32(x: str) -> list[str]:
    """Three projection layers hashing the UBIGINT column ``x`` (< 2**32) into [0, 2**32).

    lowbias32: x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16.
    Products of two 32-bit values fit in UBIGINT, so ``% 2**32`` wraps without overflow.
    """
    return [
        f"(xor({x}, {x} >> 16) * 2146121005) % 4294967296",
        f"(xor({x}, {x} >> 15) * 2221713035) % 4294967296",
        f"xor({x}, {x} >> 16)",
    ]


def _uniform_columns(source: str, key: str, names: list[str], salt: int) -> str:
    """A query over ``source`` adding one uniform [0, 1) DOUBLE per name, hashed from ``key``.

    Draw k of row ``key`` hashes ``(seed + key * len(names) + k) mod 2**32``: every
    (row, draw) pair gets its own input, so columns are independent.
    """
    width = len(names)
    offset = (SEED * 2654435761 + salt * 40503) % 2**32
    cols = ", ".join(
        f"CAST(({key} * {width} + {k} + {offset}) % 4294967296 AS UBIGINT) AS _h{k}"
        for k in range(width)
    )
    query = f"SELECT *, {cols} FROM {source}"
    for layer in range(3):
        exprs = ", ".join(f"{_lowbias32(f'_h{k}')[layer]} AS _h{k}" for k in range(width))
        query = f"SELECT * REPLACE ({exprs}) FROM ({query})"
    uniforms = ", ".join(f"_h{k} / 4294967296.0 AS {name}" for k, name in enumerate(names))
    drop = ", ".join(f"_h{k}" for k in range(width))
    return f"SELECT * EXCLUDE ({drop}), {uniforms} FROM ({query})"


def _pick(u: str, choices: tuple[tuple[str, int], ...]) -> str:
    """CASE choosing a label by cumulative per-mille share of the uniform ``u``."""
    total = sum(share for _, share in choices)
    whens, cumulative = [], 0
    for label, share in choices[:-1]:
        cumulative += share
        whens.append(f"WHEN {u} * {total} < {cumulative} THEN '{label}'")
    return f"CASE {' '.join(whens)} ELSE '{choices[-1][0]}' END"


def _sql_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_literal(v) for v in values) + "]"


def _literal(text: str | Path) -> str:
    """A SQL string literal (paths may contain quotes)."""
    value = text.as_posix() if isinstance(text, Path) else str(text)
    return "'" + value.replace("'", "''") + "'"


# -- generation -------------------------------------------------------------------------------
def _parameters(rows: int, days: int, start: dt.date, end: dt.datetime | None = None) -> dict:
    out = {"rows": rows, "days": days, "start": start.isoformat(), "seed": SEED,
           "format_version": FORMAT_VERSION}
    if end is not None:
        out["end"] = end.isoformat()
    return out


def anchor(end: dt.datetime | str | None = None) -> tuple[dt.date, dt.datetime]:
    """(first day, end hour) of anchored data: ``end``, else $SEEKNAL_EXAMPLE_END, else the
    last finished UTC hour; naive UTC, floored to the hour.  The first day is the Sunday on
    or before 13 weeks earlier, so the weekly node's first week (from Sunday 02:00) is whole."""
    import os

    end = end if end is not None else os.environ.get(END_ENV) or dt.datetime.now(dt.UTC)
    if isinstance(end, str):
        try:
            end = dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"end {end!r} is not an ISO date-time such as 2024-04-01T00:00") from None
    if end.tzinfo is not None:
        end = end.astimezone(dt.UTC).replace(tzinfo=None)
    end = end.replace(minute=0, second=0, microsecond=0)
    back = end.date() - dt.timedelta(days=91)
    return back - dt.timedelta(days=(back.weekday() + 1) % 7), end


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def _months(start: dt.date, days: int) -> list[dt.date]:
    first, last = start.replace(day=1), start + dt.timedelta(days=days - 1)
    months = []
    while first <= last:
        months.append(first)
        first = (first + dt.timedelta(days=32)).replace(day=1)
    return months


def is_current(out_dir: str | Path, rows: int, days: int, start: dt.date | str,
               end: dt.datetime | None = None) -> bool:
    """True when ``out_dir`` holds data generated with exactly these parameters."""
    out = Path(out_dir)
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("parameters") != _parameters(rows, days, _as_date(start), end):
        return False
    return all((out / name).is_file() for name in manifest.get("files", []))


def generate(
    out_dir: str | Path = DEFAULT_OUT,
    rows: int = DEFAULT_ROWS,
    days: int = DEFAULT_DAYS,
    start: dt.date | str | None = None,
    *,
    end: dt.datetime | str | None = None,
    force: bool = False,
) -> bool:
    """Write events, products and a manifest under ``out_dir``; False when skipped.

    ``start`` given: ``days`` whole days from it.  Otherwise anchored (see ``anchor``):
    the 14 weeks from a Sunday, keeping events before the end hour.  Skipped when
    ``out_dir`` already holds data for the same parameters (see ``manifest.json``),
    unless ``force``.  Older event files are removed first, so a smaller request does
    not leave stale months behind.
    """
    import duckdb

    if start is None:
        start, end = anchor(end)
        days = ANCHORED_DAYS
    else:
        start, end = _as_date(start), None
    if rows < 1 or days < 1:
        raise ValueError(f"rows and days must be positive, got rows={rows}, days={days}")
    out = Path(out_dir)
    if not force and is_current(out, rows, days, start, end):
        return False
    events_dir = out / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # no manifest while files are half-written
    for old in events_dir.glob("*.parquet"):
        old.unlink()

    n_users = max(10, rows // 10)
    day_ms = 86_400_000
    con = duckdb.connect()  # in memory; every result is ordered explicitly, whatever the threads

    products = _uniform_columns(f"range(1, {N_PRODUCTS} + 1) t(product_id)", "product_id",
                                ["u_category", "u_price"], salt=1)
    con.execute(f"""
        CREATE TABLE products AS
        SELECT product_id, category || '-' || lpad(CAST(product_id AS VARCHAR), 3, '0') AS product_name,
               category, price
        FROM (
            SELECT CAST(product_id AS INTEGER) AS product_id,
                   {_sql_list(CATEGORIES)}[1 + CAST(floor(u_category * {len(CATEGORIES)}) AS INTEGER)]
                       AS category,
                   -- prices 4.99 .. 299.99, most of them cheap
                   CAST(floor(4 + u_price * u_price * 296) + 0.99 AS DECIMAL(10,2)) AS price
            FROM ({products})
        )
        ORDER BY product_id
    """)
    users = _uniform_columns(f"range(1, {n_users} + 1) t(user_id)", "user_id", ["u_country"], salt=2)
    con.execute(f"""
        CREATE TABLE users AS
        SELECT CAST(user_id AS INTEGER) AS user_id, {_pick('u_country', COUNTRIES)} AS country
        FROM ({users})
    """)
    draws = ["u_day", "u_mix", "u_tod1", "u_tod2", "u_user", "u_type", "u_product", "u_qty"]
    raw = _uniform_columns(f"range({rows}) t(i)", "i", draws, salt=3)
    con.execute(f"""
        CREATE TABLE events AS
        WITH drawn AS (
            SELECT i,
                   -- day: uniform over the range; time of day: 20% flat background traffic,
                   -- 80% triangular around a peak at 19:12 UTC (evening in Europe, afternoon in the US)
                   TIMESTAMP '{start.isoformat()}'
                     + to_days(CAST(floor(u_day * {days}) AS INTEGER))
                     + to_milliseconds(CAST(floor(
                           CASE WHEN u_mix < 0.2 THEN u_tod1 ELSE ((u_tod1 + u_tod2) / 2 + 0.3) % 1 END
                           * {day_ms}) AS BIGINT)) AS event_time,
                   CAST(1 + floor({n_users} * pow(u_user, 1.5)) AS INTEGER) AS user_id,
                   {_pick('u_type', EVENT_TYPES)} AS event_type,
                   CAST(1 + floor({N_PRODUCTS} * pow(u_product, 1.5)) AS INTEGER) AS product_id,
                   1 + CAST(floor(u_qty * u_qty * u_qty * 3) AS INTEGER) AS quantity
            FROM ({raw})
        )
        -- stored in event_time order (ties by i); event_id is the row's position, from rowid
        -- below: one sort instead of the two a row_number() window plus ORDER BY would cost
        SELECT d.event_time, d.user_id, d.event_type, d.product_id,
               CAST(CASE d.event_type WHEN 'purchase' THEN p.price * d.quantity
                                      WHEN 'refund' THEN -p.price
                                      ELSE 0 END AS DECIMAL(10,2)) AS amount,
               u.country
        FROM drawn d
        JOIN products p USING (product_id)
        JOIN users u USING (user_id)
        {"" if end is None else f"WHERE d.event_time < TIMESTAMP '{end.isoformat(sep=' ')}'"}
        ORDER BY d.event_time, d.i
    """)

    # One file per month, 32k-row groups: a one-hour query reads one row group of one
    # file (pruned by event_time min/max); one file per day was ~3x slower to query.
    files = []
    span = days if end is None else ((end - dt.timedelta(microseconds=1)).date() - start).days + 1
    for month in _months(start, span):
        nxt = (month + dt.timedelta(days=32)).replace(day=1)
        name = f"events/events_{month:%Y-%m}.parquet"
        con.execute(f"""
            COPY (SELECT CAST(rowid + 1 AS BIGINT) AS event_id, * FROM events
                  WHERE event_time >= TIMESTAMP '{month}' AND event_time < TIMESTAMP '{nxt}'
                  ORDER BY rowid)
            TO {_literal(out / name)} (FORMAT PARQUET, COMPRESSION ZSTD, ROW_GROUP_SIZE 32768)
        """)
        files.append(name)
    con.execute(f"COPY (SELECT * FROM products ORDER BY product_id) TO {_literal(out / 'products.csv')}"
                " (FORMAT CSV, HEADER)")
    files.append("products.csv")
    con.close()

    manifest = {"parameters": _parameters(rows, days, start, end), "files": files,
                "end_exclusive": (end or start + dt.timedelta(days=days)).isoformat()}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out / "manifest.json")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help="number of events (default %(default)s)")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS,
                        help="days covered (default %(default)s)")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=None,
                        help="first day, YYYY-MM-DD, for --days whole days (default: anchored on --end)")
    parser.add_argument("--end", default=None,
                        help=f"end hour (UTC, exclusive) when there is no --start (default: ${END_ENV}, "
                             "else the last finished hour)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the data is current")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.days < 1:
        parser.error("--rows and --days must be positive")
    began = time.perf_counter()
    if args.start is None:
        try:
            first, end = anchor(args.end)
        except ValueError as exc:
            parser.error(str(exc))
        written = generate(args.out, args.rows, end=end, force=args.force)
        span = f"{_count(args.out):,} events, {first} 00:00 .. {end:%Y-%m-%d %H:%M} UTC"
    else:
        written = generate(args.out, args.rows, args.days, args.start, force=args.force)
        span = f"{args.rows:,} events, {args.start} .. {args.start + dt.timedelta(days=args.days - 1)}"
    if written:
        print(f"wrote {span} to {args.out} in {time.perf_counter() - began:.1f}s")
    else:
        print(f"{args.out} already holds {span} — skipped (use --force to regenerate)")
    if args.start is None and args.out.resolve() == DEFAULT_OUT:
        follow(PROJECT_FILE, first)
    return 0


def _count(out: Path) -> int:
    import duckdb

    glob = _literal(out / "events" / "*.parquet")
    return duckdb.sql(f"SELECT count(*) FROM read_parquet({glob})").fetchall()[0][0]


def follow(project_file: Path, first: dt.date) -> None:
    """Make the example project's `start:` the data's first day, in the untracked
    ``seeknal_project.local.yml`` beside ``project_file`` (read over it), so generating data
    never edits a tracked file; when the start moves, the project's target/ (computed from
    the previous data) is removed, so no interval is recorded for data that no longer exists."""
    import shutil

    local = project_file.with_name(LOCAL_FILE)
    line = f"start: {first.isoformat()}"
    try:
        if local.read_text().splitlines()[-1:] == [line]:
            return
    except OSError:
        pass
    tmp = local.with_suffix(".yml.tmp")
    tmp.write_text("# Written by generate_data.py: the first day of the generated data (not tracked).\n"
                   f"{line}\n")
    tmp.replace(local)
    target = project_file.parent / "target"
    if target.exists():
        shutil.rmtree(target)
        print(f"the data now starts on {first}: set start in {local.name}, removed {target} "
              "(computed from the previous data)")
    else:
        print(f"the data now starts on {first}: set start in {local.name}")


if __name__ == "__main__":
    sys.exit(main())
