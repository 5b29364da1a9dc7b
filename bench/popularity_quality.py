"""Popularity quality report: the issue's bar on a simulated world with a fixed seed.

Simulates ``--users`` users and ``--tracks`` tracks over ``--days`` days (seed 31, 1% bot
accounts, a fifth of the catalogue released during the window). It ingests every day,
flags stream fraud and builds features, then trains the popularity models with the
shipped ``config/popularity.yaml`` as of the last day and prints, per horizon, the holdout
WAPE (sum |y - y_hat| / sum y, y = plays in (D, D+H] net of fraud-flagged plays) of the
global LightGBM model, the LSTM, their blend, the model kept, and the naive baseline (the
plays of the last H days), plus the same figures on new releases (tracks released less
than 14 days before the scoring date).

Quality bar (issue 5): 7-day WAPE <= 0.85 x the naive baseline's.

Usage: ``python bench/popularity_quality.py [--users 2000] [--tracks 500] [--days 100]``
(a few minutes; ``--keep-db NAME`` keeps the built world as database NAME and
``--reuse-db NAME`` trains on such a database without rebuilding it).
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

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_bench import _admin_dsn

from ml_tasks import features, fraud, training_inputs, warehouse
from ml_tasks.ingest import ingest_day
from ml_tasks.simulate import simulate_world

START = date(2026, 1, 5)
SEED = 31
log = logging.getLogger("popularity_quality")


def build_world(dsn: str, users: int, tracks: int, days: int, workdir: Path) -> float:
    """Simulate, ingest, flag fraud and build features for every day; returns seconds."""
    landing = workdir / "landing"
    t0 = time.perf_counter()
    simulate_world(
        landing,
        users=users,
        tracks=tracks,
        start=START,
        days=days,
        seed=SEED,
        preview_share=0.0,
        bad_rate=0.0,
    )
    for offset in range(days):
        day = START + timedelta(days=offset)
        ingest_day(day, run_id="quality", dsn=dsn, landing_root=landing)
        fraud.detect_day(day, run_id="quality", dsn=dsn)
        features.build_day(day, run_id="quality", dsn=dsn)
    return time.perf_counter() - t0


def _create_db(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = warehouse.with_database(admin, name)
    warehouse.ensure_migrated(dsn)
    return dsn


def _drop_db(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def last_day(dsn: str) -> date:
    with warehouse.connect(dsn) as conn:
        return conn.execute("SELECT max(dt) FROM features.track_activity_daily").fetchone()[0]


def run(dsn: str, workdir: Path, world_seconds: float | None) -> dict:
    from ml_tasks.popularity import train_popularity

    day = last_day(dsn)
    # A quality run always trains: on a reused database, forget the inputs earlier runs
    # were trained on (or train_popularity would reuse their model and evaluate nothing).
    with warehouse.connect(dsn) as conn:
        conn.execute(
            "UPDATE ml.model_registry SET metrics = metrics - %s WHERE model_name = 'popularity'",
            (training_inputs.METRICS_KEY,),
        )
    t0 = time.perf_counter()
    trained = train_popularity(day, run_id="quality", dsn=dsn, artifacts=workdir / "artifacts")
    seconds = time.perf_counter() - t0
    return {
        "world_seconds": None if world_seconds is None else round(world_seconds, 1),
        "train_seconds": round(seconds, 1),
        **trained,
    }


def _fmt(v) -> str:
    return "   –  " if v is None else f"{v:6.3f}"


def print_report(report: dict, users: int, tracks: int, days: int) -> None:
    ev = report["evaluation"]
    print(
        f"Popularity quality on a simulated world ({users:,} users, {tracks:,} tracks,"
        f" {days} days, seed {SEED})"
    )
    print(
        f"  model {report['version']}, {report['status']}; trained in"
        f" {report['train_seconds']} s (fit seconds {report['fit_seconds']})"
        + (f"; world built in {report['world_seconds']} s" if report["world_seconds"] else "")
    )
    for h, r in (report.get("rows") or {}).items():
        if "lstm_epochs" in r:
            print(
                f"  {h:>3}d LSTM: {r['lstm_fit']:,} rows fitted of {r['train']:,},"
                f" {r['lstm_validation']:,} held out for early stopping,"
                f" {r['lstm_epochs']} epochs"
            )
    print("  holdout WAPE      lightgbm   lstm  blend  chosen  naive  chosen/naive  rows")
    for h, m in ev.items():
        c = m["candidates"]
        print(
            f"  {h:>3}d            {_fmt(c.get('lightgbm'))} {_fmt(c.get('lstm'))}"
            f" {_fmt(c.get('blend'))} {_fmt(m['wape'])} {_fmt(m['naive_wape'])}"
            f"     {m['ratio_to_naive']:.3f}    {m['rows']} ({m['chosen']})"
        )
    print("  new releases (< 14 days old on the scoring date)")
    for h, m in ev.items():
        n = m.get("new_releases") or {}
        if n.get("rows"):
            print(
                f"  {h:>3}d  chosen {_fmt(n.get('wape'))}  naive {_fmt(n.get('naive_wape'))}"
                f"  rows {n['rows']}"
            )
    print(f"  gate: {'passed' if report['gate']['passed'] else 'not passed'}")
    for reason in report["gate"]["reasons"]:
        print(f"    - {reason[:160]}")
    seven = ev.get("7") or {}
    ratio = seven.get("ratio_to_naive")
    print(
        f"  bar: 7-day WAPE / naive = {ratio:.3f} (<= 0.85:"
        f" {'met' if ratio is not None and ratio <= 0.85 else 'NOT met'})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--tracks", type=int, default=500)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--keep-db", help="keep the built world as this database")
    parser.add_argument("--reuse-db", help="train on this already built database")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    admin = _admin_dsn()
    with tempfile.TemporaryDirectory(prefix="encore-popularity-quality-") as tmp:
        work = Path(tmp)
        if args.reuse_db:
            dsn = warehouse.with_database(admin, args.reuse_db)
            warehouse.ensure_migrated(dsn)
            report = run(dsn, work, None)
        else:
            name = args.keep_db or f"encore_bench_pop_{int(time.time())}"
            dsn = _create_db(admin, name)
            try:
                built = build_world(dsn, args.users, args.tracks, args.days, work)
                report = run(dsn, work, built)
            finally:
                if not args.keep_db:
                    _drop_db(admin, name)
    print_report(report, args.users, args.tracks, args.days)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
