"""Ingest benchmark: ``encore ingest`` beside a bare COPY of the same rows, and peak memory.

What it measures, in one run on one machine:

1. A simulated day of >= 2M listening events (Parquet day, then a CSV day with the first
   day already loaded) through :func:`ml_tasks.ingest.ingest_day`: wall time and rows/s.
2. The floor: the same accepted listening rows (their contract columns, pre-rendered as CSV
   in memory) COPYed into an UNLOGGED table with no indexes; rows/s; the ratio ingest/floor.
3. A day ingested after ``--history-days`` earlier days of the small world are already in
   the warehouse: the cross-day duplicate check must not grow with the days kept.
4. Peak RSS of the ingest process for two day sizes at the same chunk size, and for the large
   day at a smaller chunk size: memory should follow the chunk, not the day.

Usage: ``make bench`` or ``python bench/ingest_bench.py [--users N] [--small-users N]``.
It creates (and drops) its own databases on ``WAREHOUSE_DSN``'s server, else the local
server at 127.0.0.1:5432, else the embedded one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg

from ml_tasks.benchmark import ScratchDatabase, admin_dsn

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_COLUMNS = (
    "event_id, user_id, track_id, played_at, ms_played, track_duration_ms, skipped,"
    " context_type, device_type, shared, liked"
)
FLOOR_TABLE = """CREATE UNLOGGED TABLE public.copy_floor (
    event_id text, user_id bigint, track_id text, played_at timestamptz, ms_played integer,
    track_duration_ms integer, skipped boolean, context_type text, device_type text,
    shared boolean, liked boolean)"""
START = date(2026, 10, 1)


def _admin_dsn() -> str:
    """The server to create scratch databases on (see :func:`ml_tasks.benchmark.admin_dsn`)."""
    return admin_dsn()


#: A throwaway, migrated database for one measurement (shared with ``encore bench``).
Database = ScratchDatabase


def simulate(out: Path, users: int, days: int) -> dict:
    from ml_tasks.simulate import simulate_world

    began = time.perf_counter()
    summary = simulate_world(
        out,
        users=users,
        tracks=20_000,
        start=START,
        days=days,
        seed=42,
        bad_rate=0.002,
        preview_share=0.0,
        bot_share=0.003,
    )
    rows = summary.to_dict()["rows"]
    return {"seconds": time.perf_counter() - began, "listening_events": rows["listening_events"]}


def ingest_in_subprocess(dsn: str, landing: Path, day: date, chunk_rows: int) -> dict:
    """Ingest one day in a child process; return its result, wall time and peak RSS.

    The child reads its own VmHWM: ru_maxrss survives exec on Linux and would report the
    parent's peak instead.
    """
    code = (
        "import json, sys, time; from datetime import date; from pathlib import Path;"
        "from ml_tasks.ingest import ingest_day;"
        f"t = time.perf_counter(); r = ingest_day(date.fromisoformat({day.isoformat()!r}),"
        f" dsn={dsn!r}, landing_root=Path({str(landing)!r}), chunk_rows={chunk_rows});"
        "wall = time.perf_counter() - t;"
        "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0];"
        "print(json.dumps({'wall': wall, 'result': r.to_dict(),"
        " 'peak_rss_mb': int(hwm.split()[1]) / 1024}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ingest failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ingest_history(dsn: str, landing: Path, days: int, chunk_rows: int) -> float:
    """Ingest the first ``days`` days of ``landing`` in one child process; its wall time."""
    code = (
        "import time; from datetime import date, timedelta; from pathlib import Path;"
        "from ml_tasks.ingest import ingest_day;"
        f"start = date.fromisoformat({START.isoformat()!r}); t = time.perf_counter();"
        f"[ingest_day(start + timedelta(days=i), dsn={dsn!r},"
        f" landing_root=Path({str(landing)!r}), chunk_rows={chunk_rows}) for i in range({days})];"
        "print(time.perf_counter() - t)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"history ingest failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def copy_floor(dsn: str, day: date) -> dict:
    """The floor: the day's accepted listening rows, already encoded in memory, COPYed into
    an UNLOGGED table without indexes. Measured in both formats ingestion uses.

    Beside it (``durable``), the least any load that keeps the day must do, bare: the same
    binary rows with their ``event_key`` COPYed into a *logged* table, then that table's
    one index (the raw partitions' ``event_key`` B-tree) built. Ingest keeps every
    accepted row crash-safe and indexed, so this part of its time is not optional."""
    out = {fmt: _copy_floor(dsn, day, fmt) for fmt in ("csv", "binary")}
    out["durable"] = _copy_floor(dsn, day, "binary", durable=True)
    return out


def _copy_floor(dsn: str, day: date, fmt: str, durable: bool = False) -> dict:
    low = f"{day.isoformat()} 00:00+00"
    high = f"{(day + timedelta(days=1)).isoformat()} 00:00+00"
    columns = f"{CONTRACT_COLUMNS}, event_key" if durable else CONTRACT_COLUMNS
    buf = io.BytesIO()
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = (
            f"COPY (SELECT {columns} FROM raw.listening_events"
            f" WHERE played_at >= '{low}' AND played_at < '{high}') TO STDOUT (FORMAT {fmt})"
        )
        with conn.cursor().copy(query) as copy:
            for block in copy:
                buf.write(block)
        data = buf.getbuffer()
        rows = conn.execute(
            "SELECT count(*) FROM raw.listening_events WHERE played_at >= %s AND played_at < %s",
            (low, high),
        ).fetchone()[0]
        conn.execute("DROP TABLE IF EXISTS public.copy_floor")
        if durable:
            conn.execute(
                FLOOR_TABLE.replace("UNLOGGED ", "").replace(
                    " liked boolean)", " liked boolean, event_key bigint)"
                )
            )
            conn.execute("SET maintenance_work_mem = '512MB'")  # as ingest sets it
            conn.execute("CHECKPOINT")  # both start from clean buffers, as a fresh load does
        else:
            conn.execute(FLOOR_TABLE)
        began = time.perf_counter()
        with conn.cursor().copy(
            f"COPY public.copy_floor ({columns}) FROM STDIN (FORMAT {fmt})"
        ) as copy:
            for start in range(0, len(data), 8 << 20):
                copy.write(data[start : start + (8 << 20)])
        if durable:
            conn.execute("CREATE INDEX ON public.copy_floor (event_key)")
        seconds = time.perf_counter() - began
        conn.execute("DROP TABLE public.copy_floor")
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "mb": len(data) / 2**20}


def _throughput(dsn: str, landing: Path, day: date, label: str, chunk_rows: int) -> dict:
    """Ingest ``day`` in a child process, then COPY its accepted rows bare: one table row."""
    ing = ingest_in_subprocess(dsn, landing, day, chunk_rows)
    floor = copy_floor(dsn, day)
    res = ing["result"]
    rows_le = res["datasets"]["listening_events"]["rows_read"]
    return {
        "label": label,
        "day": day.isoformat(),
        "rows_read": res["rows_read"],
        "listening_rows": rows_le,
        "ingest_seconds": ing["wall"],
        "ingest_rows_per_s": rows_le / ing["wall"],
        "floor_rows": floor["csv"]["rows"],
        "floor_csv_seconds": floor["csv"]["seconds"],
        "floor_binary_seconds": floor["binary"]["seconds"],
        "durable_seconds": floor["durable"]["seconds"],
        "ratio_csv": (rows_le / ing["wall"]) / floor["csv"]["rows_per_s"],
        "ratio_binary": (rows_le / ing["wall"]) / floor["binary"]["rows_per_s"],
        "peak_rss_mb": ing["peak_rss_mb"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Encore ingest benchmark")
    parser.add_argument(
        "--users",
        type=int,
        default=300_000,
        help="users of the large world (about 8.7 plays per user-day)",
    )
    parser.add_argument("--small-users", type=int, default=75_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument(
        "--history-days",
        type=int,
        default=30,
        help="days of the small world loaded before its last day is timed (0: skip)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the simulated data")
    args = parser.parse_args()

    admin = _admin_dsn()
    work = Path(tempfile.mkdtemp(prefix="encore-bench-"))
    report: dict = {"machine": {"cores": os.cpu_count()}, "chunk_rows": args.chunk_rows}
    try:
        print(
            f"simulating {args.users:,} users x 2 days and {args.small_users:,} users"
            f" x {args.history_days + 1} days"
            f" under {work} ...",
            flush=True,
        )
        large, small = work / "large", work / "small"
        report["simulate_large"] = simulate(large, args.users, 2)
        report["simulate_small"] = simulate(small, args.small_users, args.history_days + 1)

        db = Database(admin)
        try:
            runs = []
            for day, label in (
                (START, "parquet day (empty warehouse)"),
                (START + timedelta(days=1), "csv day (previous day loaded)"),
            ):
                runs.append(_throughput(db.dsn, large, day, label, args.chunk_rows))
        finally:
            db.drop()
        if args.history_days:
            db = Database(admin)
            try:
                print(f"loading {args.history_days} days of history ...", flush=True)
                report["history_seconds"] = ingest_history(
                    db.dsn, small, args.history_days, args.chunk_rows
                )
                day = START + timedelta(days=args.history_days)
                runs.append(
                    _throughput(
                        db.dsn, small, day, f"after {args.history_days} days kept", args.chunk_rows
                    )
                )
            finally:
                db.drop()
        report["throughput"] = runs

        memory = []
        for landing, label, chunk in (
            (small, "small day", args.chunk_rows),
            (large, "large day", args.chunk_rows),
            (large, "large day", args.chunk_rows // 4),
        ):
            db = Database(admin)
            try:
                ing = ingest_in_subprocess(db.dsn, landing, START, chunk)
            finally:
                db.drop()
            memory.append(
                {
                    "label": label,
                    "chunk_rows": chunk,
                    "listening_rows": ing["result"]["datasets"]["listening_events"]["rows_read"],
                    "peak_rss_mb": ing["peak_rss_mb"],
                    "seconds": ing["wall"],
                }
            )
        report["memory"] = memory
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print("\nIngest vs a bare COPY of the same listening rows (same run, same server)")
    print(
        f"{'day':<31}{'rows':>10}{'ingest s':>9}{'rows/s':>9}"
        f"{'CSV COPY s':>11}{'ratio':>6}{'bin COPY s':>11}{'ratio':>6}"
    )
    for r in report["throughput"]:
        print(
            f"{r['label']:<31}{r['listening_rows']:>10,}{r['ingest_seconds']:>9.1f}"
            f"{r['ingest_rows_per_s']:>9,.0f}{r['floor_csv_seconds']:>11.1f}"
            f"{r['ratio_csv']:>6.2f}{r['floor_binary_seconds']:>11.1f}{r['ratio_binary']:>6.2f}"
        )
    print(
        "ratio = ingest rows/s / bare COPY rows/s (target >= 0.50). Ingest includes reading,"
        " checking, duplicate checks, indexes, the day's users and tracks and the atomic swap."
    )
    print(
        "\nThe durable part alone: the same binary rows into a logged table, plus its event_key"
        " index (bare, same run)"
    )
    print(f"{'day':<31}{'durable s':>10}{'/ CSV floor':>12}{'/ bin floor':>12}{'/ ingest':>10}")
    for r in report["throughput"]:
        print(
            f"{r['label']:<31}{r['durable_seconds']:>10.1f}"
            f"{r['durable_seconds'] / r['floor_csv_seconds']:>12.2f}"
            f"{r['durable_seconds'] / r['floor_binary_seconds']:>12.2f}"
            f"{r['durable_seconds'] / r['ingest_seconds']:>10.2f}"
        )
    print(
        "A ratio of 0.5 leaves ingest 2x the floor's time: the durable part takes the share"
        " above of it before any reading, checking or duplicate detection."
    )
    print("\nPeak RSS of the ingest process")
    print(f"{'day':<12}{'listening rows':>16}{'chunk rows':>12}{'peak RSS MB':>13}{'s':>7}")
    for m in report["memory"]:
        print(
            f"{m['label']:<12}{m['listening_rows']:>16,}{m['chunk_rows']:>12,}"
            f"{m['peak_rss_mb']:>13.0f}{m['seconds']:>7.1f}"
        )
    small_rss, large_rss = report["memory"][0]["peak_rss_mb"], report["memory"][1]["peak_rss_mb"]
    size_ratio = report["memory"][1]["listening_rows"] / report["memory"][0]["listening_rows"]
    print(
        f"\nday {size_ratio:.1f}x larger -> peak RSS x{large_rss / small_rss:.2f};"
        f" chunk 4x smaller -> peak RSS x"
        f"{report['memory'][2]['peak_rss_mb'] / large_rss:.2f}"
    )
    out = ROOT / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ingest.json").write_text(json.dumps(report, indent=2))
    print(f"figures saved to {out / 'ingest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
