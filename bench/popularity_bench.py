"""Popularity scoring throughput: N tracks x 3 horizons, beside the bare I/O floor.

1. A real popularity champion: a small simulated world (800 users, 150 tracks, 56 days) is
   ingested and featurized, and ``train_popularity`` trains on its last day (small models).
2. The scoring day is widened to ``--tracks`` tracks: every real track's feature row of the
   day and its 30 days of activity rows are copied under new track ids (``<id>~<k>``).
   The day's feature-validation verdicts are inserted as bookkeeping, so the scorer accepts
   the day; nothing else is faked.
3. Timed: ``score_popularity`` end to end (read features and play sequences, predict 1, 7
   and 30 days with the chosen LightGBM/LSTM per horizon, write, swap). The floor, on the
   same rows: a binary COPY out of the day's feature rows and the 30 days of activity it
   reads, plus a binary COPY in of the scored rows.

Usage: ``python bench/popularity_bench.py [--tracks 100000]``.
"""

from __future__ import annotations

import argparse
import io
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

from ml_tasks import features, warehouse
from ml_tasks.ingest import ingest_day
from ml_tasks.popularity import PopularityConfig, score_popularity, train_popularity
from ml_tasks.simulate import simulate_world

START = date(2026, 1, 5)
DAYS = 56
log = logging.getLogger("popularity_bench")


def small_config() -> PopularityConfig:
    """Small models and a short window: the 56-day world barely holds a 30-day holdout."""
    return PopularityConfig.load().with_overrides(
        window={
            "holdout_days": 4,
            "lookback_days": 20,
            "min_history_days": 14,
            "min_train_dates": 5,
        },
        lightgbm={"n_estimators": 60, "num_leaves": 15},
        lstm={"units": 8, "dense_units": 8, "epochs": 3},
        gate={"require_validated_features": False},
    )


def build(dsn: str, workdir: Path) -> tuple[date, float]:
    """Simulate, ingest, featurize and train a champion; returns (last day, seconds)."""
    started = time.perf_counter()
    landing = workdir / "landing"
    simulate_world(
        landing,
        users=800,
        tracks=150,
        start=START,
        days=DAYS,
        seed=23,
        preview_share=0.0,
        bad_rate=0.0,
    )
    for offset in range(DAYS):
        ingest_day(START + timedelta(days=offset), run_id="bench", dsn=dsn, landing_root=landing)
    for offset in range(DAYS):
        features.build_day(START + timedelta(days=offset), run_id="bench", dsn=dsn)
    last = START + timedelta(days=DAYS - 1)
    trained = train_popularity(
        last, run_id="bench", dsn=dsn, artifacts=workdir / "artifacts", config=small_config()
    )
    if trained["status"] != "champion":
        raise SystemExit(f"the bench model was not promoted: {trained['gate']}")
    return last, time.perf_counter() - started


def _copies(conn, table: str, where: str, copies: int) -> int:
    """Insert ``copies`` copies of the rows of ``table`` matching ``where``, new track ids."""
    columns = [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
    ]
    select = [
        sql.SQL("t.track_id || '~' || k")
        if c == "track_id"
        else sql.SQL("t.{}").format(sql.Identifier(c))
        for c in columns
    ]
    cur = conn.execute(
        sql.SQL(
            "INSERT INTO {table} ({cols}) SELECT {select} FROM {table} t,"
            " generate_series(1, %s) k WHERE {where}"
        ).format(
            table=warehouse.qualified(table),
            cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
            select=sql.SQL(", ").join(select),
            where=sql.SQL(where),
        ),
        (copies,),
    )
    return cur.rowcount


def widen(dsn: str, day: date, tracks: int) -> int:
    """Copy the day's tracks (features and 30 days of activity) up to ``tracks`` tracks."""
    first = day - timedelta(days=29)
    with warehouse.connect(dsn) as conn:
        real = conn.execute(
            "SELECT count(*) FROM features.track_daily WHERE dt = %s", (day,)
        ).fetchone()[0]
        copies = max(0, -(-tracks // real) - 1)
        if copies:
            _copies(conn, "features.track_daily", f"t.dt = DATE '{day}'", copies)
            _copies(
                conn,
                "features.track_activity_daily",
                f"t.dt BETWEEN DATE '{first}' AND DATE '{day}'",
                copies,
            )
        for suite in ("features.user_daily", "features.track_daily"):
            # bookkeeping only: the scorer refuses feature days without a passing verdict
            conn.execute(
                "INSERT INTO monitoring.validation_results (suite, dt, run_id, success,"
                " evaluated, failed, failures) VALUES (%s, %s, 'bench', true, 0, 0, '[]')",
                (suite, day),
            )
        conn.execute("ANALYZE features.track_daily")
        conn.execute("ANALYZE features.track_activity_daily")
        return conn.execute(
            "SELECT count(*) FROM features.track_daily WHERE dt = %s", (day,)
        ).fetchone()[0]


def _copy_out(conn, query: sql.Composable) -> tuple[bytes, float]:
    buffer = io.BytesIO()
    started = time.perf_counter()
    with conn.cursor().copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query)) as copy:
        for chunk in copy:
            buffer.write(chunk)
    return buffer.getvalue(), time.perf_counter() - started


def floor(dsn: str, day: date) -> float:
    """Seconds of bare binary COPYs moving the rows the scorer reads and writes."""
    first = day - timedelta(days=29)
    with warehouse.connect(dsn) as conn:
        _, read_features = _copy_out(
            conn, sql.SQL(f"SELECT * FROM features.track_daily WHERE dt = DATE '{day}'")
        )
        _, read_activity = _copy_out(
            conn,
            sql.SQL(
                "SELECT track_id, dt, plays FROM features.track_activity_daily"
                f" WHERE dt BETWEEN DATE '{first}' AND DATE '{day}' AND plays > 0"
            ),
        )
        scored, _ = _copy_out(
            conn,
            sql.SQL("SELECT * FROM {}").format(
                warehouse.qualified(warehouse.partition_name("scores.track_popularity", day))
            ),
        )
        conn.execute("DROP TABLE IF EXISTS public.popularity_floor")
        conn.execute("CREATE TABLE public.popularity_floor (LIKE scores.track_popularity)")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor().copy("COPY public.popularity_floor FROM STDIN (FORMAT binary)") as c:
            c.write(scored)
        conn.commit()
        write = time.perf_counter() - started
        conn.execute("DROP TABLE public.popularity_floor")
        conn.commit()
    return read_features + read_activity + write


def run(dsn: str, tracks: int, workdir: Path) -> dict:
    day, setup = build(dsn, workdir)
    n = widen(dsn, day, tracks)
    started = time.perf_counter()
    result = score_popularity(day, run_id="bench", dsn=dsn)
    seconds = time.perf_counter() - started
    floor_seconds = floor(dsn, day)
    return {
        "tracks": n,
        "horizons": 3,
        "setup_seconds": round(setup, 1),
        "score_seconds": round(seconds, 2),
        "score_tracks_per_s": round(n / seconds),
        "floor_seconds": round(floor_seconds, 2),
        "floor_tracks_per_s": round(n / floor_seconds),
        "ratio": round(floor_seconds / seconds, 3),
        "result": result,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    db = Database(_admin_dsn())
    try:
        with tempfile.TemporaryDirectory(prefix="encore-popularity-bench-") as tmp:
            figures = run(db.dsn, args.tracks, Path(tmp))
    finally:
        db.drop()
    print(
        f"Popularity scoring of {figures['tracks']:,} tracks x 3 horizons"
        f" (setup {figures['setup_seconds']} s, not timed)"
    )
    print(
        f"  score_popularity end to end: {figures['score_seconds']:.2f} s,"
        f" {figures['score_tracks_per_s']:,} tracks/s"
    )
    print(
        f"  floor (binary COPY of the rows read and written): {figures['floor_seconds']:.2f} s,"
        f" {figures['floor_tracks_per_s']:,} tracks/s"
    )
    print(f"  floor / scoring: {figures['ratio']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
