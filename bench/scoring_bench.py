"""Scoring benchmark: ``score_churn`` for N users beside the bare I/O floor and ``to_sql``.

What it measures, in one run on one machine (issue 4, "Performance"):

1. Setup (timed apart, not part of the figures): a small simulated world (800 users,
   56 days, fixed seed) is ingested and featurized, and a churn model is trained on its
   last day with a small configuration until it is champion.
2. A large scoring day after the world's last day: N synthetic users in
   ``features.user_daily``, each row a copy of a real feature row of the world (so the
   ranges, nulls and plan/is_paying pairs are realistic) with its float features jittered.
3. End to end: :func:`ml_tasks.scoring.score_churn` over the day in user-id chunks (read
   features, predict 3 horizons, tiers, segments, tags, reasons, interventions, write,
   swap), in a child process that reports its wall time and peak RSS (VmHWM).
4. The floor, side by side: reading the same feature columns (a binary COPY into memory,
   and Encore's ``read_arrow``), plus COPYing the day's ``scores.churn`` and
   ``scores.interventions`` rows (COPYed out in binary beforehand) into empty copies of
   the tables. Ratio: scoring rows/s / floor rows/s (target >= 0.5).
5. ``DataFrame.to_sql`` writing a sample of the same ``scores.churn`` rows into an empty
   copy of the table (extrapolated to N by its rows/s). Ratio: scoring rows/s / to_sql
   rows/s (target >= 20).
6. Peak memory: the same scoring at a second, smaller size with the same chunk size.

Usage: ``python bench/scoring_bench.py [--users 1000000] [--small-users 250000]
[--chunk-users 100000] [--profile] [--keep]``, or :func:`run` from a driver. It creates
(and drops, unless ``--keep``) its own database on ``WAREHOUSE_DSN``'s server, else the
local server at 127.0.0.1:5432, else the embedded one. The machine is shared: treat the
figures as indicative (a few runs differ by 10-20 %).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_bench import Database, _admin_dsn

from ml_tasks import benchmark, registry, scoring, warehouse

ROOT = Path(__file__).resolve().parent.parent
START = date(2026, 1, 5)
WORLD_USERS = 800
WORLD_DAYS = 56
WORLD_SEED = 23
TO_SQL_SAMPLE = 50_000
log = logging.getLogger("scoring_bench")


def bench_churn_config():
    """Small models on the short profile's windows (the 56-day world only knows 7-day
    labels): ``benchmark.SMALL_CHURN``, as the tests' ``small_churn_config``."""
    from ml_tasks.churn import ChurnConfig

    return ChurnConfig.load().with_overrides(**benchmark.SMALL_CHURN)


# --------------------------------------------------------------------------- setup


def build_champion(dsn: str, work: Path) -> dict:
    """Simulate, ingest and featurize the small world, then train a champion on its last day."""
    from ml_tasks import features
    from ml_tasks.churn import train_churn
    from ml_tasks.ingest import ingest_day
    from ml_tasks.simulate import simulate_world

    t0 = time.perf_counter()
    landing = work / "landing"
    simulate_world(
        landing,
        users=WORLD_USERS,
        tracks=150,
        start=START,
        days=WORLD_DAYS,
        seed=WORLD_SEED,
        preview_share=0.0,
        bad_rate=0.0,
    )
    days = [START + timedelta(days=i) for i in range(WORLD_DAYS)]
    for day in days:
        ingest_day(day, run_id="bench", dsn=dsn, landing_root=landing)
    for day in days:
        features.build_day(day, run_id="bench", dsn=dsn)
    t1 = time.perf_counter()
    trained = train_churn(
        days[-1],
        run_id="bench-train",
        dsn=dsn,
        artifacts=work / "artifacts",
        config=bench_churn_config(),
    )
    assert trained["status"] == "champion", trained["gate"]
    return {
        "world_seconds": t1 - t0,
        "train_seconds": time.perf_counter() - t1,
        "version": trained["version"],
        "chosen": trained["chosen"],
        "last_day": days[-1],
    }


def _fill_expr(name: str, typ: str) -> str:
    """The value of one ``features.user_daily`` column for synthetic user ``g`` whose row is a
    copy of the world's row ``s``: identifiers and lineage are new, float features jittered
    (shares and rates kept in [0, 1]), everything else (ints, plan, is_paying, nulls) kept."""
    if name == "dt":
        return "{day}::date"
    if name == "user_id":
        return "g"
    if name == "feature_ts":
        return "({day}::date + 1)::timestamptz - interval '1 microsecond'"
    if name == "run_id":
        return "'bench'"
    if name == "computed_at":
        return "now()"
    col = f"s.{name}"
    if typ != "double precision":
        return col
    if "trend" in name:
        return f"{col} + (random() - 0.5) * 0.2"
    if "share" in name or "rate" in name:
        return f"least(1.0, {col} * (0.85 + 0.3 * random()))"
    return f"{col} * (0.85 + 0.3 * random())"


def fill_scoring_day(dsn: str, day: date, users: int) -> float:
    """Replace feature day ``day`` with ``users`` synthetic users, through a stage table and
    the warehouse's partition swap; then mark the day built and validated. Returns seconds.

    The build_log and validation_results rows are bookkeeping for the benchmark only: they
    make :func:`ml_tasks.features.feature_day_ready` (which ``score_churn`` checks) accept a
    day that was not built by the feature SQL nor checked by Great Expectations.
    """
    started = time.perf_counter()
    parent = "features.user_daily"
    stage = f"{warehouse.partition_name(parent, day)}_bench_stage"
    with warehouse.connect(dsn) as conn:
        cols = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'features' AND table_name = 'user_daily'"
            " ORDER BY ordinal_position"
        ).fetchall()
        source = conn.execute(
            "SELECT count(*) FROM features.user_daily WHERE dt < %s", (day,)
        ).fetchone()[0]
        warehouse.create_day_stage(conn, parent, stage, "feature_ts", day)
        conn.execute("SELECT setseed(0.42)")
        conn.execute(
            sql.SQL(
                "INSERT INTO {stage} ({cols}) SELECT {exprs} FROM generate_series(1, {n}) g"
                " JOIN (SELECT row_number() OVER (ORDER BY dt, user_id) - 1 AS k, *"
                "       FROM features.user_daily WHERE dt < {day}) s"
                " ON s.k = (g::bigint * 7919) % {source}"
            ).format(
                stage=warehouse.qualified(stage),
                cols=sql.SQL(", ").join(sql.Identifier(c) for c, _ in cols),
                exprs=sql.SQL(", ".join(_fill_expr(c, t) for c, t in cols)).format(
                    day=sql.Literal(day)
                ),
                n=sql.Literal(users),
                day=sql.Literal(day),
                source=sql.Literal(source),
            )
        )
        warehouse.swap_day_partition(conn, parent, stage, day)
        conn.execute(
            sql.SQL("ANALYZE {}").format(warehouse.qualified(warehouse.partition_name(parent, day)))
        )
        for table in ("features.user_daily", "features.track_daily"):
            conn.execute(
                "INSERT INTO features.build_log (table_name, dt, run_id, rows, seconds, built_at)"
                " VALUES (%s, %s, 'bench', %s, 0, now()) ON CONFLICT (table_name, dt) DO UPDATE"
                " SET run_id = excluded.run_id, rows = excluded.rows, built_at = excluded.built_at",
                (table, day, users if table == parent else 0),
            )
        conn.commit()
        for suite in ("features.user_daily", "features.track_daily"):
            conn.execute(
                "INSERT INTO monitoring.validation_results"
                " (suite, dt, run_id, success, evaluated, failed, failures)"
                " VALUES (%s, %s, 'bench', true, 0, 0, '[]') ON CONFLICT (suite, dt, run_id)"
                " DO UPDATE SET success = true, validated_at = now()",
                (suite, day),
            )
        conn.commit()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- scoring


def _child(args: dict) -> None:
    """Score one day in this (child) process; print the result, wall time and peak RSS."""
    import cProfile
    import pstats

    logging.basicConfig(level=logging.WARNING)
    day = date.fromisoformat(args["day"])
    profiler = cProfile.Profile() if args.get("profile") else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    result = scoring.score_churn(
        day, run_id=args["run_id"], dsn=args["dsn"], chunk_users=args["chunk_users"]
    )
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - started
    with open("/proc/self/status") as fh:
        hwm = next(line for line in fh if line.startswith("VmHWM"))
    if profiler:
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats(15)
        stats.sort_stats("tottime").print_stats(12)
    print(json.dumps({"wall": wall, "result": result, "peak_rss_mb": int(hwm.split()[1]) / 1024}))


def score_in_subprocess(
    dsn: str, day: date, chunk_users: int, run_id: str, *, profile: bool = False
) -> dict:
    """Score ``day`` in a child process. The child reads its own VmHWM (ru_maxrss survives
    exec on Linux and would report the parent's peak)."""
    payload = json.dumps(
        {
            "dsn": dsn,
            "day": day.isoformat(),
            "chunk_users": chunk_users,
            "run_id": run_id,
            "profile": profile,
        }
    )
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", payload],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scoring failed:\n{proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    out = json.loads(lines[-1])
    out["profile"] = "\n".join(lines[:-1])
    return out


# --------------------------------------------------------------------------- floor


def scorer_columns(dsn: str, day: date) -> list[str]:
    """The feature columns ``score_churn`` reads for ``day`` (context + the model's inputs)."""
    record = registry.champion(scoring.CHURN_MODEL, scoring.day_end(day), dsn=dsn)
    model = registry.load_churn_model(record)
    return list(dict.fromkeys([*scoring.CONTEXT_COLUMNS, *model.feature_names]))


def measure_floor(dsn: str, day: date) -> dict:
    """The bare I/O of the scoring day: read the feature columns the scorer reads, and COPY
    the day's churn and intervention rows (encoded in memory first) into empty tables."""
    partition = warehouse.partition_name("features.user_daily", day)
    select = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, scorer_columns(dsn, day))),
        warehouse.qualified(partition),
    )
    out: dict = {}
    read = benchmark.copy_out_floor(dsn, [select])
    out["read_binary_seconds"], out["read_binary_mb"] = read["seconds"], read["mb"]
    with warehouse.connect(dsn) as conn:
        t0 = time.perf_counter()
        table = warehouse.read_arrow(conn, select)
        out["read_arrow_seconds"] = time.perf_counter() - t0
        out["feature_rows"] = table.num_rows
        del table
    for parent in (scoring.CHURN_TABLE, scoring.INTERVENTIONS_TABLE):
        rows = sql.SQL("SELECT * FROM {}").format(
            warehouse.qualified(warehouse.partition_name(parent, day))
        )
        written = benchmark.copy_in_floor(dsn, [(rows, parent)])
        key = parent.split(".")[1]
        out[f"write_{key}_seconds"] = written["seconds"]
        out[f"write_{key}_rows"] = written["rows"]
        out[f"write_{key}_mb"] = written["mb"]
    out["read_seconds"] = min(out["read_binary_seconds"], out["read_arrow_seconds"])
    out["predict_seconds"] = measure_predict(dsn, day)
    out["seconds"] = (
        out["read_seconds"] + out["write_churn_seconds"] + out["write_interventions_seconds"]
    )
    out["rows_per_s"] = out["feature_rows"] / out["seconds"]
    return out


def measure_predict(dsn: str, day: date, chunk_users: int = 100_000) -> float:
    """Seconds of the champion's bare ``predict`` (3 horizons, calibrated) over the day's
    feature rows, chunk by chunk; reading the chunks is not timed. Not part of the I/O
    floor: it says how much of the scoring time the model's own arithmetic takes."""
    record = registry.champion(scoring.CHURN_MODEL, scoring.day_end(day), dsn=dsn)
    model = registry.load_churn_model(record)
    partition = warehouse.partition_name("features.user_daily", day)
    columns = list(dict.fromkeys([*scoring.CONTEXT_COLUMNS, *model.feature_names]))
    seconds = 0.0
    with warehouse.connect(dsn) as conn:
        ranges = scoring._id_ranges(conn, partition, chunk_users)
        for k, (lo, hi) in enumerate(ranges):
            values = scoring.read_features(conn, partition, columns, lo, hi)[model.feature_names]
            if k == 0:
                model.predict(values.head(10))  # the libraries' one-time set-up
            started = time.perf_counter()
            model.predict(values)
            seconds += time.perf_counter() - started
            del values
    return seconds


# --------------------------------------------------------------------------- to_sql


def measure_to_sql(
    dsn: str, day: date, sample: int, methods=(None, "multi"), tables=(scoring.CHURN_TABLE,)
) -> list[dict]:
    """``DataFrame.to_sql`` of ``sample`` rows of the day's output of each table into an empty
    copy of it (SQLAlchemy + psycopg), per pandas insert method (None = executemany)."""
    import pandas as pd
    from sqlalchemy import Text, create_engine
    from sqlalchemy.dialects.postgresql import ARRAY, JSONB

    engine = create_engine(warehouse.sqlalchemy_url(dsn))
    out = []
    try:
        for parent in tables:
            with warehouse.connect(dsn) as conn:
                cur = conn.execute(
                    sql.SQL("SELECT * FROM {} ORDER BY user_id LIMIT %s").format(
                        warehouse.qualified(warehouse.partition_name(parent, day))
                    ),
                    (sample,),
                )
                frame = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
            # numeric columns read back as Decimal objects: floats, as a scoring frame has them
            for column in ("value_at_risk", "cost", "expected_net_value"):
                if column in frame.columns:
                    frame[column] = frame[column].astype(float)
            dtypes = (
                {"tags": ARRAY(Text), "reasons": JSONB} if parent == scoring.CHURN_TABLE else {}
            )
            # a multi-row INSERT binds every value: keep a statement under 65535 parameters
            chunk = 60_000 // len(frame.columns)
            for method in methods:
                with warehouse.connect(dsn) as conn:
                    conn.execute("DROP TABLE IF EXISTS public.scoring_to_sql")
                    conn.execute(
                        sql.SQL(
                            "CREATE TABLE public.scoring_to_sql (LIKE {} INCLUDING DEFAULTS)"
                        ).format(warehouse.qualified(parent))
                    )
                    conn.commit()
                t0 = time.perf_counter()
                frame.to_sql(
                    "scoring_to_sql",
                    engine,
                    schema="public",
                    if_exists="append",
                    index=False,
                    dtype=dtypes,
                    method=method,
                    chunksize=chunk if method == "multi" else None,
                )
                seconds = time.perf_counter() - t0
                with warehouse.connect(dsn) as conn:
                    written = conn.execute("SELECT count(*) FROM public.scoring_to_sql").fetchone()
                assert written[0] == len(frame), (written, len(frame))
                out.append(
                    {
                        "table": parent,
                        "method": method or "None",
                        "rows": len(frame),
                        "seconds": seconds,
                        "rows_per_s": len(frame) / seconds,
                    }
                )
    finally:
        engine.dispose()
        with warehouse.connect(dsn) as conn:
            conn.execute("DROP TABLE IF EXISTS public.scoring_to_sql")
            conn.commit()
    return out


# --------------------------------------------------------------------------- driver


class _Reused:
    """A database kept by an earlier run (``--reuse``)."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.name = dsn.rsplit("/", 1)[-1]


def _reused_setup() -> dict:
    last = START + timedelta(days=WORLD_DAYS - 1)
    return {
        "world_seconds": 0.0,
        "train_seconds": 0.0,
        "version": "(reused)",
        "chosen": "?",
        "last_day": last,
    }


def run(
    users: int = 1_000_000,
    chunk_users: int = 100_000,
    small_users: int | None = 250_000,
    *,
    to_sql_sample: int = TO_SQL_SAMPLE,
    profile: bool = False,
    keep: bool = False,
    admin: str | None = None,
    reuse: str | None = None,
) -> dict:
    """Run the benchmark; print the table and return the figures as dicts.

    ``reuse``: the DSN of a database kept by an earlier run (``--keep``): its world and
    champion are used as they are (and the database is not dropped).
    """
    admin = admin or _admin_dsn()
    work = Path(tempfile.mkdtemp(prefix="encore-scoring-bench-"))
    db = _Reused(reuse) if reuse else Database(admin)
    report: dict = {
        "machine": {"cores": os.cpu_count()},
        "users": users,
        "chunk_users": chunk_users,
        "database": db.name,
    }
    try:
        print(f"setup: {WORLD_USERS} users x {WORLD_DAYS} days world, champion ...", flush=True)
        setup = _reused_setup() if reuse else build_champion(db.dsn, work)
        day = setup["last_day"] + timedelta(days=1)
        print(
            f"setup: world in {setup['world_seconds']:.0f} s, champion {setup['version']}"
            f" ({setup['chosen']}) trained in {setup['train_seconds']:.0f} s",
            flush=True,
        )
        fill_s = fill_scoring_day(db.dsn, day, users)
        print(f"setup: {users:,} synthetic users on {day} in {fill_s:.0f} s", flush=True)
        report["setup"] = {**setup, "last_day": setup["last_day"].isoformat(), "fill_s": fill_s}

        print("scoring ...", flush=True)
        big = score_in_subprocess(db.dsn, day, chunk_users, "bench-score")
        rows = big["result"]["users"]
        assert rows == users, (rows, users)
        scoring_s = big["wall"]
        report["scoring"] = {
            "rows": rows,
            "seconds": scoring_s,
            "rows_per_s": rows / scoring_s,
            "peak_rss_mb": big["peak_rss_mb"],
            "result": big["result"],
        }
        print("floor ...", flush=True)
        floor = measure_floor(db.dsn, day)
        floor["ratio"] = report["scoring"]["rows_per_s"] / floor["rows_per_s"]
        report["floor"] = floor
        print("to_sql ...", flush=True)
        to_sql = measure_to_sql(
            db.dsn,
            day,
            min(to_sql_sample, users),
            tables=(scoring.CHURN_TABLE, scoring.INTERVENTIONS_TABLE),
        )
        for t in to_sql:
            t["extrapolated_seconds"] = users / t["rows_per_s"]
        report["to_sql"] = to_sql
        # speed ratio per method: the scores.churn rows alone (what the target names),
        # and both tables' rows (everything score_churn writes)
        report["to_sql_ratio"] = {
            (m := t["method"]): {
                "churn_only": report["scoring"]["rows_per_s"] / t["rows_per_s"],
                "both_tables": sum(u["extrapolated_seconds"] for u in to_sql if u["method"] == m)
                / scoring_s,
            }
            for t in to_sql
            if t["table"] == scoring.CHURN_TABLE
        }

        memory = [{"users": users, "peak_rss_mb": big["peak_rss_mb"], "seconds": scoring_s}]
        if small_users:
            print(f"memory: scoring {small_users:,} users ...", flush=True)
            small_day = day + timedelta(days=1)
            fill_scoring_day(db.dsn, small_day, small_users)
            small = score_in_subprocess(db.dsn, small_day, chunk_users, "bench-small")
            memory.insert(
                0,
                {
                    "users": small_users,
                    "peak_rss_mb": small["peak_rss_mb"],
                    "seconds": small["wall"],
                },
            )
        report["memory"] = memory
        if profile:
            print("profiling (cProfile) ...", flush=True)
            prof = score_in_subprocess(db.dsn, day, chunk_users, "bench-profile", profile=True)
            report["profile"] = {"seconds": prof["wall"], "text": prof["profile"]}
    finally:
        if keep or reuse:
            print(f"kept database {db.name} ({db.dsn}) and {work}")
        else:
            db.drop()
            shutil.rmtree(work, ignore_errors=True)
    print_report(report)
    return report


def print_report(report: dict) -> None:
    s, f, n = report["scoring"], report["floor"], report["users"]
    if "profile" in report:
        print("\ncProfile of score_churn (child process, same day again):")
        print(report["profile"]["text"])
    print(
        f"\nChurn scoring of {n:,} users, chunks of {report['chunk_users']:,} users"
        f" ({report['machine']['cores']} shared cores: figures are noisy, +-15 %)"
    )
    print(f"{'step':<60}{'rows':>11}{'seconds':>9}{'rows/s':>10}")

    def line(label: str, rows: int, seconds: float) -> None:
        print(f"{label:<60}{rows:>11,}{seconds:>9.2f}{rows / seconds:>10,.0f}")

    line("score_churn end to end", s["rows"], s["seconds"])
    line("floor: read feature columns (binary COPY)", f["feature_rows"], f["read_binary_seconds"])
    line("  (same read via warehouse.read_arrow)", f["feature_rows"], f["read_arrow_seconds"])
    line("floor: COPY scores.churn rows (binary)", f["write_churn_rows"], f["write_churn_seconds"])
    line(
        "floor: COPY scores.interventions rows (binary)",
        f["write_interventions_rows"],
        f["write_interventions_seconds"],
    )
    line("floor total (fastest read + both COPYs)", f["feature_rows"], f["seconds"])
    for t in report["to_sql"]:
        line(f"to_sql {t['table']} method={t['method']} (sample)", t["rows"], t["seconds"])
    line("bare predict of the same features (3 horizons)", f["feature_rows"], f["predict_seconds"])
    print(
        f"\nscoring / floor rows/s: {f['ratio']:.2f} (target >= 0.50);"
        f" scoring is {f['seconds'] / s['seconds']:.0%} I/O floor time"
    )
    print(
        f"the model's bare predict takes {f['predict_seconds'] / f['seconds']:.2f}x the I/O"
        f" floor: with nothing else to do, scoring could reach at most"
        f" {f['seconds'] / (f['seconds'] + f['predict_seconds']):.2f} of the floor serially,"
        f" {min(1.0, f['seconds'] / max(f['predict_seconds'], 1e-9)):.2f} overlapped"
    )
    copy_rows_s = f["write_churn_rows"] / f["write_churn_seconds"]
    for t in report["to_sql"]:
        if t["table"] == scoring.CHURN_TABLE:
            print(
                f"bare binary COPY of the scores.churn rows / to_sql method={t['method']}:"
                f" {copy_rows_s / t['rows_per_s']:.1f}x (the most any COPY-based writer"
                " of these rows gains over to_sql here)"
            )
    for method, r in report["to_sql_ratio"].items():
        seconds = {
            t["table"]: t["extrapolated_seconds"] for t in report["to_sql"] if t["method"] == method
        }
        print(
            f"to_sql method={method}, extrapolated from its sample rows/s to {n:,} users:"
            f" scores.churn {seconds[scoring.CHURN_TABLE]:,.0f} s,"
            f" + scores.interventions {seconds[scoring.INTERVENTIONS_TABLE]:,.0f} s;"
            f" scoring is {r['churn_only']:.1f}x faster than to_sql of the churn rows alone,"
            f" {r['both_tables']:.1f}x than to_sql of both tables' rows (target >= 20x)"
        )
    print("peak RSS of the scoring process (same chunk size):")
    for m in report["memory"]:
        print(f"  {m['users']:>11,} users: {m['peak_rss_mb']:>7,.0f} MB ({m['seconds']:.1f} s)")
    if len(report["memory"]) == 2:
        a, b = report["memory"]
        print(
            f"  {b['users'] / a['users']:.1f}x the users -> peak RSS"
            f" x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--small-users", type=int, default=250_000, help="0: skip")
    parser.add_argument("--chunk-users", type=int, default=100_000)
    parser.add_argument("--to-sql-sample", type=int, default=TO_SQL_SAMPLE)
    parser.add_argument("--profile", action="store_true", help="cProfile one more scoring run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--reuse", metavar="DSN", help="a database kept by --keep")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return 0
    logging.basicConfig(level=logging.WARNING)
    report = run(
        args.users,
        args.chunk_users,
        args.small_users or None,
        to_sql_sample=args.to_sql_sample,
        profile=args.profile,
        keep=args.keep,
        reuse=args.reuse,
    )
    out = ROOT / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    report.pop("profile", None)
    (out / "scoring.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"figures saved to {out / 'scoring.json'}")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
