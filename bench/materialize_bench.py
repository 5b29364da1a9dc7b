"""Online-store load benchmark: Feast's materialize vs Encore's bulk path vs a bare COPY.

What it measures, in one run on one machine, for one feature day of ``features.user_daily``
with N synthetic users (every user view: user_engagement, user_mix, user_account):

1. The floor: the same online rows (entity_key, feature_name, value, value_text, event_ts,
   already encoded in memory) COPYed (binary) into an UNLOGGED copy of the online table
   with no indexes.
2. ``FeatureStore.materialize`` over the day (``materialize_day(method="feast")``): Feast's
   PostgreSQL online store writes with ``executemany`` upserts, one row per entity and
   feature (feast #4309).
3. ``materialize_day(method="bulk")`` into the emptied online tables, then the same day
   again (a retry: nothing changes, nothing is rewritten).
4. The nightly case: the next day (new values for every user) over the loaded tables, by
   the bulk path and by Feast (from the same starting state): every online row an update.

The online tables written by Feast and by the bulk path are checked to be identical. Online
rows/s and the time ratio to the floor are printed side by side.

Usage: ``python bench/materialize_bench.py [--users N] [--dsn DSN] [--keep]``. It creates a
scratch database on the server of ``--dsn`` (default: the warehouse, ``resolve_dsn()``),
runs there and drops it (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from datetime import date, timedelta

import psycopg
from psycopg import sql

from ml_tasks import feature_store as fst
from ml_tasks import warehouse

USER_VIEWS = ["user_engagement", "user_mix", "user_account"]
DAY = date(2026, 10, 1)


def _expr(name: str, typ: str, nullable: bool) -> str:
    """A plausible SQL expression for one user_daily column of user ``g``."""
    if name == "user_id":
        return "g"
    if name == "dt":
        return "{day}::date"
    if name == "feature_ts":
        return "({day}::date + 1)::timestamptz - interval '1 microsecond'"
    if name == "plan":
        return "(ARRAY['free', 'free', 'premium', 'family', 'student'])[1 + (g * 7919) % 5]"
    if name == "is_paying":
        return "(g * 7919) % 5 > 1"
    if typ == "text":
        return "'bench'"
    if typ == "boolean":
        return "random() < 0.5"
    if typ.startswith("timestamp"):
        return "now()"
    if typ == "integer":
        scale = 5000 if "plays" in name else 400 if "tenure" in name else 60
        value = f"floor(random() * random() * {scale})::int"
    elif "hours" in name or "minutes" in name:
        value = "round((random() * random() * 40)::numeric, 3)::float8"
    elif "trend" in name:
        value = "(random() - 0.5) * 4"
    else:  # rates and shares
        value = "random()"
    return f"CASE WHEN random() < 0.15 THEN NULL ELSE {value} END" if nullable else value


def fill_day(conn: psycopg.Connection, users: int, day: date) -> None:
    """Replace feature day ``day`` of ``features.user_daily`` with ``users`` synthetic rows."""
    cols = conn.execute(
        "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns"
        " WHERE table_schema = 'features' AND table_name = 'user_daily'"
        " ORDER BY ordinal_position"
    ).fetchall()
    warehouse.create_day_stage(
        conn, "features.user_daily", "features.user_daily_stage", "feature_ts", day
    )
    exprs = sql.SQL(", ".join(_expr(*c) for c in cols)).format(day=sql.Literal(day))
    conn.execute(
        sql.SQL(
            "INSERT INTO features.user_daily_stage SELECT {} FROM generate_series(1, {}) g"
        ).format(exprs, sql.Literal(users))
    )
    warehouse.swap_day_partition(conn, "features.user_daily", "features.user_daily_stage", day)
    conn.commit()


def _truncate(dsn: str) -> None:
    with warehouse.connect(dsn) as conn:
        for view in USER_VIEWS:
            conn.execute(sql.SQL("TRUNCATE {}").format(warehouse.qualified(fst.online_table(view))))
        conn.commit()


def _floor(dsn: str, day: date) -> tuple[int, float]:
    """Encode the day's online rows in memory, then time only their COPY."""
    import pyarrow as pa

    store = fst.get_store(dsn)
    fvs = [store.get_feature_view(v) for v in USER_VIEWS]
    columns = ["user_id", "feature_ts"]
    for fv in fvs:
        columns += [f.name for f in fv.features]
    low, high = warehouse.day_bounds(day)
    with warehouse.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT {} FROM features.user_daily WHERE feature_ts >= %s AND feature_ts < %s"
            ).format(sql.SQL(", ").join(map(sql.Identifier, columns))),
            (low, high),
        ).fetchall()
        chunk = fst._rows_to_arrow(rows, columns)
        del rows
        online = pa.concat_tables([fst.online_rows(fv, chunk) for fv in fvs])
        conn.execute("DROP TABLE IF EXISTS public.online_copy_floor")
        conn.execute(
            sql.SQL(
                "CREATE UNLOGGED TABLE public.online_copy_floor (LIKE {} INCLUDING DEFAULTS)"
            ).format(warehouse.qualified(fst.online_table(USER_VIEWS[0])))
        )
        conn.commit()
        started = time.perf_counter()
        copied = warehouse.copy_arrow(conn, "public.online_copy_floor", online, binary=True)
        conn.commit()
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE public.online_copy_floor")
        conn.commit()
    return copied, seconds


def _checksums(dsn: str) -> dict[str, str]:
    with warehouse.connect(dsn) as conn:
        return {v: warehouse.table_checksum(conn, fst.online_table(v))[1] for v in USER_VIEWS}


def run(dsn: str, users: int, day: date = DAY) -> list[dict]:
    """Fill ``day`` with ``users`` users in the database at ``dsn`` (replacing that feature
    day and the user views' online tables), time the three loads, print and return them."""
    warehouse.ensure_migrated(dsn)
    fst.apply(dsn)
    t0 = time.perf_counter()
    with warehouse.connect(dsn) as conn:
        fill_day(conn, users, day)
    print(f"filled {users:,} users for {day} in {time.perf_counter() - t0:.1f} s")

    results: list[dict] = []

    def record(method: str, out: dict) -> None:
        results.append(
            {"method": method, "online_rows": out["online_rows"], "seconds": out["seconds"]}
        )

    copied, floor_s = _floor(dsn, day)
    results.append({"method": "floor: bare COPY", "online_rows": copied, "seconds": floor_s})

    _truncate(dsn)
    record(
        "feast, empty tables", fst.materialize_day(day, dsn=dsn, views=USER_VIEWS, method="feast")
    )
    feast_sums = _checksums(dsn)
    _truncate(dsn)
    record("bulk, empty tables", fst.materialize_day(day, dsn=dsn, views=USER_VIEWS))
    identical = _checksums(dsn) == feast_sums
    record("bulk, same day again", fst.materialize_day(day, dsn=dsn, views=USER_VIEWS))

    # The nightly case: yesterday's values are online and every one of them changes.
    nxt = day + timedelta(days=1)
    with warehouse.connect(dsn) as conn:
        fill_day(conn, users, nxt)
    record("bulk, next day (updates)", fst.materialize_day(nxt, dsn=dsn, views=USER_VIEWS))
    next_sums = _checksums(dsn)
    _truncate(dsn)
    fst.materialize_day(day, dsn=dsn, views=USER_VIEWS)
    record(
        "feast, next day (updates)",
        fst.materialize_day(nxt, dsn=dsn, views=USER_VIEWS, method="feast"),
    )
    identical = identical and _checksums(dsn) == next_sums

    for r in results:
        r["users"] = users
        r["rows_per_s"] = round(r["online_rows"] / r["seconds"]) if r["seconds"] else None
        r["x_floor"] = round(r["seconds"] / floor_s, 2)
        r["seconds"] = round(r["seconds"], 3)
    print(f"\n{users:,} users, {copied:,} online rows ({len(USER_VIEWS)} views)")
    print(f"{'method':<26}{'seconds':>10}{'rows/s':>12}{'x floor':>9}")
    for r in results:
        print(f"{r['method']:<26}{r['seconds']:>10.2f}{r['rows_per_s']:>12,}{r['x_floor']:>9.2f}")
    print(f"online tables identical after feast and bulk: {identical}")
    if not identical:
        raise SystemExit("bulk and feast online tables differ")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--dsn", help="server to create the scratch database on")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = warehouse.resolve_dsn(dsn=args.dsn)
    name = f"encore_bench_{uuid.uuid4().hex[:8]}"
    with warehouse.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        results = run(warehouse.with_database(server, name), args.users)
        if args.json:
            print(json.dumps(results, indent=2))
    finally:
        fst._STORES.clear()
        if not args.keep:
            with warehouse.connect(server, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


if __name__ == "__main__":
    main()
