"""Feature benchmark: one feature day for N users, each step beside a bare COPY of its rows.

What it measures, in one run on one machine:

1. A simulated world of ``--users`` users over ``--days`` days is ingested (not timed) and
   its feature days built up to the day before the last (not timed).
2. The last day's build, step by step (:func:`ml_tasks.features.build_table_day`): wall
   time and output rows/s of each table.
3. The floor of each step: the same output rows, COPYed out in binary beforehand, COPYed
   into an empty copy of the table; the ratio floor time / step time.
4. Feast: materializing the day's user and track rows into the online store with Feast's
   own ``materialize`` and with Encore's bulk path, beside a bare COPY of the same online
   rows (see ``bench/materialize_bench.py`` for the synthetic version).

Usage: ``make bench`` or ``python bench/features_bench.py [--users N] [--days D]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_bench import Database, _admin_dsn

from ml_tasks import benchmark, features, warehouse

START = date(2026, 10, 1)
log = logging.getLogger("features_bench")


def build_world(dsn: str, landing: Path, users: int, days: int) -> None:
    """Simulate and ingest ``days`` days, then build every feature day but the last."""
    from ml_tasks.ingest import ingest_day
    from ml_tasks.simulate import simulate_world

    t0 = time.perf_counter()
    simulate_world(
        landing,
        users=users,
        tracks=max(200, users // 5),
        start=START,
        days=days,
        seed=3,
        preview_share=0.0,
    )
    t1 = time.perf_counter()
    for offset in range(days):
        ingest_day(START + timedelta(days=offset), run_id="bench", dsn=dsn, landing_root=landing)
    t2 = time.perf_counter()
    for offset in range(days - 1):
        features.build_day(START + timedelta(days=offset), run_id="bench", dsn=dsn)
    log.info(
        "world: simulated in %.0f s, ingested in %.0f s, %d feature days in %.0f s",
        t1 - t0,
        t2 - t1,
        days - 1,
        time.perf_counter() - t2,
    )


def copy_floor(dsn: str, table: str, day: date) -> float:
    """Seconds to COPY the day's rows of ``table`` (binary, from memory) into an empty copy."""
    partition = warehouse.partition_name(table, day)
    rows = sql.SQL("SELECT * FROM {}").format(warehouse.qualified(partition))
    return benchmark.copy_in_floor(dsn, [(rows, partition)])["seconds"]


def measure_build(dsn: str, day: date) -> list[dict]:
    """Time each feature table's build for ``day`` and its COPY floor."""
    out = []
    with warehouse.connect(dsn, autocommit=True) as conn:
        inputs = features._inputs_as_of(conn, day, day)[day]
        for table in features.ACTIVITY_TABLES + features.DAILY_TABLES:
            as_of = features._as_of(table, inputs) if table in features.ACTIVITY_TABLES else None
            started = time.perf_counter()
            rows = features.build_table_day(conn, table, day, "bench", as_of)
            seconds = time.perf_counter() - started
            out.append({"step": f"build {table.name}", "rows": rows, "seconds": seconds})
    for row in out:
        floor = copy_floor(dsn, row["step"].split()[-1], day)
        row["floor_seconds"] = floor
    return out


def measure_materialize(dsn: str, day: date) -> list[dict]:
    """Feast's materialize vs the bulk path (user views, empty online tables), beside a COPY."""
    from materialize_bench import USER_VIEWS, _floor, _truncate

    from ml_tasks import feature_store

    feature_store.apply(dsn=dsn)
    online_rows, floor_seconds = _floor(dsn, day)
    out = []
    for method in ("feast", "bulk"):
        _truncate(dsn)
        started = time.perf_counter()
        feature_store.materialize_day(day, dsn=dsn, views=USER_VIEWS, method=method)
        out.append(
            {
                "step": f"materialize user views ({method})",
                "rows": online_rows,
                "seconds": time.perf_counter() - started,
                "floor_seconds": floor_seconds,
            }
        )
    return out


def report(rows: list[dict], users: int) -> str:
    lines = [
        f"Feature day for {users:,} users (floor = bare binary COPY of the same output rows)",
        f"{'step':<44}{'rows':>10}{'s':>8}{'rows/s':>11}{'floor s':>9}{'ratio':>7}",
    ]
    for r in rows:
        rate = r["rows"] / r["seconds"] if r["seconds"] else float("inf")
        ratio = r["floor_seconds"] / r["seconds"] if r["seconds"] else float("nan")
        lines.append(
            f"{r['step']:<44}{r['rows']:>10,}{r['seconds']:>8.2f}{rate:>11,.0f}"
            f"{r['floor_seconds']:>9.2f}{ratio:>7.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=8, help="days of history (>= 2)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--skip-materialize", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its DSN)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("ml_tasks.ingest", "ml_tasks.simulate", "ml_tasks.features"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    db = Database(_admin_dsn())
    try:
        with tempfile.TemporaryDirectory(prefix="encore-feature-bench-") as tmp:
            build_world(db.dsn, Path(tmp) / "landing", args.users, args.days)
        day = START + timedelta(days=args.days - 1)
        rows = measure_build(db.dsn, day)
        if not args.skip_materialize:
            rows += measure_materialize(db.dsn, day)
    finally:
        if args.keep:
            print(f"kept database: {db.dsn}")
        else:
            db.drop()
    print(report(rows, args.users))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
