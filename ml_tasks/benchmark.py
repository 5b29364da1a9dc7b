"""One night of Encore, timed stage by stage beside each stage's floor (``encore bench``).

:func:`run_night` builds a scratch database on a PostgreSQL server, simulates ``days`` days
of a world of ``users`` users, and treats the last day as *the night*:

- **Set-up (not timed as the night).** The days before the night are loaded with the
  functions the DAGs call (ingest, fraud flags, features), the clips delivered up to the
  day before are extracted, the Feast repo is applied and the day before is materialized
  (so the night's materialization updates yesterday's online rows, as every night does),
  and the churn scores of D-7, D-30 and D-90 that monitoring compares with outcomes are
  made. Each set-up step is reported with its wall time, marked as set-up.
- **Retraining (timed, reported apart).** Churn, popularity and (when the world has
  previews) genre are trained as of the day before the night, each in its own process.
- **The night (timed).** Each stage in DAG order, each in a fresh child process so that
  its peak RSS (``VmHWM``) is its own: ingest, validation, fraud flags, features, feature
  validation, materialization, churn scoring, interventions, popularity scoring, audio
  features, genre scoring, monitoring. Interpreter start-up and module imports are timed
  apart from the stage (``startup_seconds``).
- **Floors, same run, same rows.** After each stage: a bare binary ``COPY`` of the rows it
  wrote into an empty copy of the table (the rows COPYed out beforehand), a bare ``COPY``
  out of the rows it read, a bare decode of the same clips, a bare ``predict`` of the same
  matrix. ``ratio = floor seconds / stage seconds`` (1.0 = the stage runs at its floor).

:func:`write_report` turns one or more nights (one per size) into ``docs/performance.md``:
the tables, a linear fit of time against users per stage, peak memory against users, the
targets, a plot and a profile of the slowest stage. Nothing in it is typed by hand.

No Airflow import here: the CLI and the tests drive it directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

START = date(2026, 1, 5)
SEED = 2026
RUN_ID = "bench-night"
SETUP_RUN_ID = "bench-setup"
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
#: Tracks default to one per five users (20,000 for 100,000 users, as in the issue).
USERS_PER_TRACK = 5
#: The issue's targets.
CHAIN_TARGET_USERS = 100_000
CHAIN_TARGET_SECONDS = 300.0
RETRAIN_TARGET_SECONDS = 600.0
FLOOR_TARGET = 0.5
#: Past churn scores monitoring compares with outcomes (D - h), made during the set-up.
PAST_SCORE_HORIZONS = (7, 30, 90)

NIGHT = "night"
RETRAINING = "retraining"
SETUP = "setup"
SKIPPED = "skipped"


# --------------------------------------------------------------------------- results


@dataclass
class StageResult:
    """One timed step: a stage of the night, a retraining, or a set-up step.

    ``seconds`` is the wall time of the stage's own call (start-up and imports of its
    process are in ``startup_seconds``); ``floor_seconds`` the floor measured on the same
    rows in the same run; ``peak_rss_mb`` the process's high-water mark (VmHWM);
    ``cpu_seconds`` the CPU time of the stage's process and its children during the stage
    (for the rest of its wall time it waited: on PostgreSQL, the disk, other jobs).
    """

    stage: str
    kind: str
    seconds: float
    rows: int = 0
    unit: str = ""
    floor_seconds: float | None = None
    floor: str = ""
    io_bound: bool = False
    peak_rss_mb: float | None = None
    startup_seconds: float = 0.0
    cpu_seconds: float | None = None
    detail: dict = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float | None:
        return self.rows / self.seconds if self.seconds > 0 and self.rows else None

    @property
    def ratio(self) -> float | None:
        """Floor seconds / stage seconds: 1.0 means the stage runs at its floor."""
        if self.floor_seconds is None or self.seconds <= 0:
            return None
        return self.floor_seconds / self.seconds

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> StageResult:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class NightRun:
    """The results of one :func:`run_night` and the world it ran on."""

    users: int
    tracks: int
    days: int
    results: list[StageResult]
    started_at: str = ""
    training: str = ""
    load_average: tuple[float, float, float] | None = None

    def of_kind(self, kind: str) -> list[StageResult]:
        return [r for r in self.results if r.kind == kind]

    def stage(self, name: str) -> StageResult | None:
        return next((r for r in self.results if r.stage == name and r.kind != SETUP), None)

    @property
    def chain_seconds(self) -> float:
        return sum(r.seconds for r in self.of_kind(NIGHT))

    @property
    def chain_startup_seconds(self) -> float:
        return sum(r.startup_seconds for r in self.of_kind(NIGHT))

    @property
    def retraining_seconds(self) -> float:
        return sum(r.seconds for r in self.of_kind(RETRAINING))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["results"] = [r.to_dict() for r in self.results]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> NightRun:
        data = dict(data)
        data["results"] = [StageResult.from_dict(r) for r in data["results"]]
        if data.get("load_average") is not None:
            data["load_average"] = tuple(data["load_average"])
        return cls(**data)


# --------------------------------------------------------------------------- the server


def admin_dsn(dsn: str | None = None) -> str:
    """The server to create scratch databases on: ``dsn``, ``WAREHOUSE_DSN``, the local
    server at 127.0.0.1:5432, else the embedded one."""
    import psycopg

    from ml_tasks import warehouse
    from ml_tasks.settings import get_settings

    if dsn:
        return dsn
    settings = get_settings()
    if settings.warehouse_dsn:
        return settings.warehouse_dsn
    try:
        with psycopg.connect(LOCAL_SERVER, connect_timeout=3):
            return LOCAL_SERVER
    except psycopg.OperationalError:
        return warehouse.embedded_dsn(settings, "postgres")


class ScratchDatabase:
    """A throwaway, migrated database on ``admin``'s server (dropped by :meth:`drop`)."""

    def __init__(self, admin: str, prefix: str = "encore_bench"):
        import psycopg
        from psycopg import sql

        from ml_tasks import warehouse

        self.admin = admin
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.dsn = warehouse.with_database(admin, self.name)
        warehouse.ensure_migrated(self.dsn)

    def drop(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )


# --------------------------------------------------------------------------- memory


def peak_rss_mb() -> float | None:
    """This process's peak resident set size (``VmHWM``) in MB, where Linux reports it.

    Read from /proc: ``ru_maxrss`` survives ``exec`` and would report a parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- floors


def _copy_out(conn, query) -> tuple[bytes, int, float]:
    """Binary COPY of ``query`` into memory: (data, rows, seconds)."""
    import io

    from psycopg import sql

    buffer = io.BytesIO()
    started = time.perf_counter()
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query)) as copy:
            for block in copy:
                buffer.write(block)
        rows = cur.rowcount
    return buffer.getvalue(), max(rows, 0), time.perf_counter() - started


def copy_out_floor(dsn: str, queries: Sequence) -> dict:
    """Seconds of bare binary COPYs out of ``queries`` (the rows a stage reads)."""
    from ml_tasks import warehouse

    seconds = rows = size = 0
    with warehouse.connect(dsn) as conn:
        for query in queries:
            data, n, s = _copy_out(conn, _composable(query))
            seconds, rows, size = seconds + s, rows + n, size + len(data)
            del data
        conn.commit()
    return {"seconds": seconds, "rows": rows, "mb": size / 2**20}


def copy_in_floor(dsn: str, sources: Sequence[tuple[Any, str]]) -> dict:
    """Seconds of bare binary COPYs of rows into empty copies of their tables.

    ``sources``: (query selecting the rows a stage wrote, table whose shape to copy). The
    rows are COPYed out into memory first; only the COPY into the new, index-free (logged)
    table is timed.
    """
    from psycopg import sql

    from ml_tasks import warehouse

    seconds = rows = size = 0
    with warehouse.connect(dsn) as conn:
        for query, like in sources:
            data, n, _ = _copy_out(conn, _composable(query))
            conn.execute("DROP TABLE IF EXISTS public.bench_copy_floor")
            conn.execute(
                sql.SQL("CREATE TABLE public.bench_copy_floor (LIKE {} INCLUDING DEFAULTS)").format(
                    warehouse.qualified(like)
                )
            )
            conn.commit()
            started = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy("COPY public.bench_copy_floor FROM STDIN (FORMAT binary)") as copy,
            ):
                for at in range(0, len(data), 8 << 20):
                    copy.write(data[at : at + (8 << 20)])
            conn.commit()
            seconds += time.perf_counter() - started
            rows, size = rows + n, size + len(data)
            del data
            conn.execute("DROP TABLE public.bench_copy_floor")
            conn.commit()
    return {"seconds": seconds, "rows": rows, "mb": size / 2**20}


def _composable(query):
    from psycopg import sql

    return sql.SQL(query) if isinstance(query, str) else query


def _partition(parent: str, day: date):
    from psycopg import sql

    from ml_tasks import warehouse

    return sql.SQL("SELECT * FROM {}").format(
        warehouse.qualified(warehouse.partition_name(parent, day))
    )


def _day_rows(table: str, column: str, day: date, columns: str = "*") -> str:
    from ml_tasks import warehouse

    low, high = warehouse.day_bounds(day)
    return (
        f"SELECT {columns} FROM {table}"
        f" WHERE {column} >= '{low}'::timestamptz AND {column} < '{high}'::timestamptz"
    )


def decode_floor(paths: Sequence[str], workers: int) -> float:
    """Seconds to decode ``paths`` with soundfile on ``workers`` processes (page cache warm,
    workers started and soundfile imported before the clock starts)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    if not paths:
        return 0.0
    size = max(1, min(16, -(-len(paths) // (workers * 2))))
    chunks = [list(paths[i : i + size]) for i in range(0, len(paths), size)]
    _decode_chunk(chunks[0][:1])  # page cache and import, for the single-process case too
    if workers <= 1:
        started = time.perf_counter()
        for chunk in chunks:
            _decode_chunk(chunk)
        return time.perf_counter() - started
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_decode_chunk, [chunks[0][:1]] * workers))
        started = time.perf_counter()
        list(pool.map(_decode_chunk, chunks))
        return time.perf_counter() - started


def _decode_chunk(paths: list[str]) -> int:
    import soundfile

    return sum(len(soundfile.read(p, dtype="float32")[0]) for p in paths)


# --------------------------------------------------------------------------- training


#: Model settings per training profile, as overrides of the shipped YAML files. Every
#: profile relaxes only the promotion gate (validated training days, ECE, the first-model
#: bar): the bench needs a champion to score with, and the gate's checks cost nothing.
TRAINING_PROFILES: dict[str, dict[str, dict]] = {
    # the shipped windows and models: needs about 89 days of history
    "shipped": {
        "churn": {"gate": {"require_validated_features": False, "max_ece": 1.0}},
        "popularity": {"gate": {"require_validated_features": False, "max_naive_ratio": 1e9}},
        "genre": {"gate": {"min_accuracy": 0.0}},
    },
    # shorter windows (7-day split labels), the shipped model sizes: about 53 days
    "short": {
        "churn": {
            "window": {
                "split_horizon": 7,
                "holdout_days": 5,
                "calibration_days": 5,
                "lookback_days": 20,
                "stride_days": 1,
                "min_history_days": 5,
            },
            "gate": {"horizon": 7, "require_validated_features": False, "max_ece": 1.0},
            "calibration": {"min_rows": 100, "min_positives": 10},
        },
        "popularity": {
            "window": {
                "holdout_days": 4,
                "lookback_days": 20,
                "min_history_days": 14,
                "min_train_dates": 5,
            },
            "gate": {"require_validated_features": False, "max_naive_ratio": 1e9},
        },
        "genre": {"gate": {"min_accuracy": 0.0}},
    },
    # the smallest windows and models, one family each (tests): about 45 days
    "tiny": {
        "churn": {
            "window": {
                "split_horizon": 7,
                "holdout_days": 2,
                "calibration_days": 2,
                "lookback_days": 3,
                "stride_days": 1,
                "min_history_days": 1,
            },
            "families": ("lightgbm",),
            "gbm": {"n_estimators": 20},
            "gate": {"horizon": 7, "require_validated_features": False, "max_ece": 1.0},
            "calibration": {"min_rows": 50, "min_positives": 5},
        },
        "popularity": {
            "window": {
                "holdout_days": 2,
                "lookback_days": 6,
                "min_history_days": 1,
                "min_train_dates": 3,
            },
            "families": ("lightgbm",),
            "blend": False,
            "lightgbm": {"n_estimators": 20, "num_leaves": 7},
            "gate": {"require_validated_features": False, "max_naive_ratio": 1e9},
        },
        "genre": {"cnn": {"enabled": False}, "gate": {"min_accuracy": 0.0}},
    },
}


#: Small churn models on the short profile's windows, for a 56-day world (which can only
#: know 7-day labels): the tests' churn world and ``bench/scoring_bench.py`` train with it.
SMALL_CHURN: dict[str, dict] = {
    "window": TRAINING_PROFILES["short"]["churn"]["window"],
    "gbm": {"n_estimators": 60},
    "gate": {"horizon": 7, "require_validated_features": False},
    "calibration": TRAINING_PROFILES["short"]["churn"]["calibration"],
}


def training_config(family: str, profile: str):
    """The config of ``family`` (churn, popularity, genre) under a training profile."""
    overrides = TRAINING_PROFILES[profile][family]
    if family == "churn":
        from ml_tasks.churn import ChurnConfig

        return ChurnConfig.load().with_overrides(**overrides)
    if family == "popularity":
        from ml_tasks.popularity import PopularityConfig

        return PopularityConfig.load().with_overrides(**overrides)
    from dataclasses import replace

    from ml_tasks.genre import GenreConfig

    config = GenreConfig.load()
    return replace(
        config, **{key: replace(getattr(config, key), **value) for key, value in overrides.items()}
    )


def profile_fits(profile: str, days: int) -> bool:
    """Whether ``days`` simulated days hold the history ``profile`` trains on (the
    training day is the day before the night, the first feature day the first day)."""
    from ml_tasks.churn import NotEnoughHistory as ChurnShort
    from ml_tasks.churn import plan_splits as churn_splits
    from ml_tasks.popularity import NotEnoughHistory as PopularityShort
    from ml_tasks.popularity import plan_splits as popularity_splits

    train_day = START + timedelta(days=days - 2)
    try:
        churn_splits(train_day, training_config("churn", profile), START)
        popularity_splits(train_day, training_config("popularity", profile), START)
    except (ChurnShort, PopularityShort):
        return False
    return True


def pick_training(days: int, requested: str = "auto") -> str:
    """The training profile for a world of ``days`` days: the shipped one when the history
    allows it, else shorter windows; raises ValueError when even those do not fit."""
    if requested != "auto":
        if requested not in TRAINING_PROFILES:
            raise ValueError(f"unknown training profile {requested!r}")
        if not profile_fits(requested, days):
            raise ValueError(f"{days} days are too few to train with the {requested} profile")
        return requested
    for name in ("shipped", "short"):
        if profile_fits(name, days):
            return name
    least = next(d for d in range(2, 400) if profile_fits("short", d))
    raise ValueError(
        f"--days {days} is too short to train the models the night scores with: the churn"
        f" labels need 7 days plus 30 days of dormancy; use --days {least} or more"
        f" ({next(d for d in range(2, 400) if profile_fits('shipped', d))} for the shipped"
        " training windows)"
    )


# --------------------------------------------------------------------------- stages


@dataclass
class Context:
    """What a stage needs; JSON-serializable (child processes receive it)."""

    dsn: str
    landing: str
    artifacts: str
    night: str
    start: str
    training: str
    workers: int
    past_days: list[str] = field(default_factory=list)

    @property
    def day(self) -> date:
        return date.fromisoformat(self.night)

    @property
    def train_day(self) -> date:
        return self.day - timedelta(days=1)

    def env(self) -> dict[str, str]:
        """Environment of a child process: the scratch warehouse, landing and artifacts."""
        env = dict(os.environ)
        env.update(
            WAREHOUSE_DSN=self.dsn,
            ENCORE_LANDING_ROOT=self.landing,
            ENCORE_ARTIFACTS=self.artifacts,
            GX_ANALYTICS_ENABLED="False",
        )
        return env


@dataclass(frozen=True)
class Stage:
    """A step: what it imports (timed apart), what it runs, whether it is I/O-bound."""

    name: str
    kind: str
    #: returns ``{"rows": int, or a function counting them once the clock has stopped,
    #: "detail": dict}``
    run: Callable[[Context], dict]
    imports: tuple[str, ...] = ()
    io_bound: bool = False
    unit: str = "rows"


def _ingest(ctx: Context) -> dict:
    from ml_tasks.ingest import ingest_day

    result = ingest_day(ctx.day, run_id=RUN_ID, dsn=ctx.dsn, landing_root=Path(ctx.landing))
    return {"rows": result.rows_read, "detail": result.to_dict()}


def _validation(ctx: Context) -> dict:
    from ml_tasks import validation

    report = validation.validate_day(
        ctx.day, run_id=RUN_ID, dsn=ctx.dsn, artifacts=Path(ctx.artifacts), raise_on_failure=False
    )
    return {
        "rows": lambda: _count(
            ctx.dsn, [validation.batch_query(ds, ctx.day) for ds in _datasets()]
        ),
        "detail": {"success": report.success, "failed": report.failed_suites},
    }


def _fraud(ctx: Context) -> dict:
    from ml_tasks import fraud

    result = fraud.detect_day(ctx.day, run_id=RUN_ID, dsn=ctx.dsn)
    return {"rows": result["scored"], "detail": result}


def _features(ctx: Context) -> dict:
    from ml_tasks import features

    result = features.build_day(ctx.day, run_id=RUN_ID, dsn=ctx.dsn)
    return {"rows": sum(result.rows.values()), "detail": result.to_dict()}


def _feature_validation(ctx: Context) -> dict:
    from ml_tasks import feature_validation, features

    report = feature_validation.validate_features(
        ctx.day, run_id=RUN_ID, dsn=ctx.dsn, artifacts=Path(ctx.artifacts), raise_on_failure=False
    )
    return {
        "rows": lambda: _count(
            ctx.dsn, [_partition(t.name, ctx.day) for t in features.DAILY_TABLES]
        ),
        "detail": {"success": report.success, "failed": report.failed_suites},
    }


def _materialization(ctx: Context) -> dict:
    from ml_tasks import feature_store

    result = feature_store.materialize_day(ctx.day, dsn=ctx.dsn, method="bulk")
    return {"rows": result["online_rows"], "detail": result}


def _churn_scoring(ctx: Context) -> dict:
    """``score_churn`` up to its commit: the chunks, as ``score_daily``'s mapped tasks."""
    from ml_tasks import registry, scoring
    from ml_tasks.settings import get_settings

    day = ctx.day
    scoring.features_ready(ctx.dsn, day)
    record = registry.champion(scoring.CHURN_MODEL, scoring.day_end(day), dsn=ctx.dsn)
    if record is None:
        raise scoring.NoChampion(f"no churn model was champion when {day} closed")
    model = registry.load_churn_model(record)
    config = scoring.ScoringConfig.load()
    scoring.prepare_stage(day, dsn=ctx.dsn)
    chunks = scoring.user_id_chunks(ctx.dsn, day, get_settings().score_chunk_users)
    total = 0
    for lo, hi in chunks:
        total += scoring.score_churn_chunk(
            day, lo, hi, run_id=RUN_ID, dsn=ctx.dsn, model=model, record=record, config=config
        )
    return {"rows": total, "detail": {"chunks": len(chunks), "model_version": record.version}}


def _interventions(ctx: Context) -> dict:
    """``score_churn``'s commit: the day's intervention plan, then both days swapped in."""
    from ml_tasks import scoring

    result = scoring.commit_churn(ctx.day, run_id=RUN_ID, dsn=ctx.dsn)
    return {"rows": result["users"], "detail": result}


def _popularity_scoring(ctx: Context) -> dict:
    from ml_tasks.popularity import score_popularity

    result = score_popularity(ctx.day, run_id=RUN_ID, dsn=ctx.dsn)
    return {"rows": result["tracks"], "detail": result}


def _audio(ctx: Context) -> dict:
    from ml_tasks import audio

    result = audio.extract_day(
        ctx.day,
        run_id=RUN_ID,
        dsn=ctx.dsn,
        landing_root=Path(ctx.landing),
        artifacts=Path(ctx.artifacts),
        workers=ctx.workers,
    )
    return {"rows": result["extracted"] + result["rejected"], "detail": result}


def _genre_scoring(ctx: Context) -> dict:
    from ml_tasks import genre

    result = genre.score_genres(
        ctx.day,
        run_id=RUN_ID,
        dsn=ctx.dsn,
        artifacts=Path(ctx.artifacts),
        landing_root=Path(ctx.landing),
    )
    return {"rows": result["tracks"], "detail": result}


def _monitoring(ctx: Context) -> dict:
    from ml_tasks import monitoring

    result = monitoring.monitor_day(
        ctx.day, run_id=RUN_ID, dsn=ctx.dsn, artifacts=Path(ctx.artifacts)
    )
    return {
        "rows": lambda: _count(ctx.dsn, [_partition("features.user_daily", ctx.day)]),
        "detail": result,
    }


def _train(family: str) -> Callable[[Context], dict]:
    def run(ctx: Context) -> dict:
        config = training_config(family, ctx.training)
        kwargs: dict[str, Any] = {
            "run_id": f"bench-train-{family}",
            "dsn": ctx.dsn,
            "artifacts": Path(ctx.artifacts),
            "config": config,
            "promote_at": _champion_from(ctx),
        }
        if family == "churn":
            from ml_tasks.churn import train_churn as train
        elif family == "popularity":
            from ml_tasks.popularity import train_popularity as train
        else:
            from ml_tasks.genre import train_genre as train

            kwargs["landing_root"] = Path(ctx.landing)
        result = train(ctx.train_day, **kwargs)
        return {"rows": lambda: _training_rows(ctx.dsn, family, result), "detail": result}

    return run


def _training_rows(dsn: str, family: str, result: dict) -> int:
    """Rows the model was fitted on (``ml.training_runs.rows_train``)."""
    from ml_tasks import warehouse

    with warehouse.connect(dsn) as conn:
        row = conn.execute(
            "SELECT rows_train FROM ml.training_runs WHERE run_id = %s AND model_name = %s",
            (f"bench-train-{family}", result.get("model", family)),
        ).fetchone()
    return int(row[0]) if row and row[0] else 0


def _datasets():
    from ml_tasks import contract

    return contract.DATASETS


def _count(dsn: str, queries: Sequence) -> int:
    from psycopg import sql

    from ml_tasks import warehouse

    total = 0
    with warehouse.connect(dsn) as conn:
        for query in queries:
            total += conn.execute(
                sql.SQL("SELECT count(*) FROM ({}) q").format(_composable(query))
            ).fetchone()[0]
    return int(total)


_GX = ("great_expectations",)
#: training reads its examples through Feast and draws its model card with matplotlib
_TRAINING_LIBS = ("ml_tasks.feature_store", "feast", "matplotlib.pyplot")
#: librosa loads its submodules lazily, on first use: import them before the clock starts
_AUDIO_LIBS = (
    "ml_tasks.audio",
    "librosa",
    "librosa.core",
    "librosa.feature",
    "librosa.beat",
    "librosa.onset",
    "scipy.stats",
    "pandas",
)
_CHURN_LIBS = ("xgboost", "lightgbm", "catboost", "ml_tasks.churn")

#: The night's stages in the order the DAGs run them.
NIGHT_STAGES: tuple[Stage, ...] = (
    Stage("ingest", NIGHT, _ingest, ("ml_tasks.ingest",), io_bound=True, unit="landing rows"),
    Stage(
        "validation", NIGHT, _validation, ("ml_tasks.validation", *_GX), io_bound=True, unit="rows"
    ),
    Stage("fraud flags", NIGHT, _fraud, ("ml_tasks.fraud", "sklearn.ensemble"), unit="users"),
    Stage("features", NIGHT, _features, ("ml_tasks.features",), unit="feature rows"),
    Stage(
        "feature validation",
        NIGHT,
        _feature_validation,
        ("ml_tasks.feature_validation", *_GX),
        io_bound=True,
        unit="feature rows",
    ),
    Stage(
        "materialization",
        NIGHT,
        _materialization,
        ("ml_tasks.feature_store", "feast", "pandas"),
        io_bound=True,
        unit="online rows",
    ),
    Stage("churn scoring", NIGHT, _churn_scoring, ("ml_tasks.scoring", *_CHURN_LIBS), unit="users"),
    Stage(
        "interventions",
        NIGHT,
        _interventions,
        ("ml_tasks.scoring", "ml_tasks.interventions"),
        io_bound=True,
        unit="users",
    ),
    Stage(
        "popularity scoring",
        NIGHT,
        _popularity_scoring,
        ("ml_tasks.popularity", "lightgbm"),
        unit="tracks",
    ),
    Stage("audio features", NIGHT, _audio, _AUDIO_LIBS, unit="clips"),
    Stage("genre scoring", NIGHT, _genre_scoring, ("ml_tasks.genre", "lightgbm"), unit="tracks"),
    Stage(
        "monitoring",
        NIGHT,
        _monitoring,
        (
            "ml_tasks.monitoring",
            "sklearn.metrics",
            "sklearn.ensemble",
            "matplotlib.pyplot",
            *_CHURN_LIBS,
        ),
        unit="users",
    ),
)

RETRAIN_STAGES: tuple[Stage, ...] = (
    Stage(
        "train churn",
        RETRAINING,
        _train("churn"),
        (*_CHURN_LIBS, *_TRAINING_LIBS),
        unit="training rows",
    ),
    Stage(
        "train popularity",
        RETRAINING,
        _train("popularity"),
        ("ml_tasks.popularity", "lightgbm", *_TRAINING_LIBS),
        unit="training rows",
    ),
    Stage(
        "train genre", RETRAINING, _train("genre"), ("ml_tasks.genre", "lightgbm"), unit="tracks"
    ),
)

STAGES = {s.name: s for s in (*NIGHT_STAGES, *RETRAIN_STAGES)}


def _imports_for(stage: Stage, ctx: Context) -> tuple[str, ...]:
    """Modules to import before the clock starts (TensorFlow when the profile uses it)."""
    extra: tuple[str, ...] = ()
    families = TRAINING_PROFILES[ctx.training]
    tf_popularity = "lstm" in families["popularity"].get("families", ("lightgbm", "lstm"))
    tf_genre = families["genre"].get("cnn", {}).get("enabled", True)
    if (stage.name in ("popularity scoring", "train popularity") and tf_popularity) or (
        stage.name in ("genre scoring", "train genre") and tf_genre
    ):
        extra = ("tensorflow",)
    return (*stage.imports, *extra)


# --------------------------------------------------------------------------- executing


def execute(stage_name: str, ctx: Context, *, profile: bool = False) -> dict:
    """Import the stage's modules, then run and time it in this process.

    Returns ``{seconds, startup_seconds, rows, detail, peak_rss_mb[, profile]}``. The peak
    RSS is this process's high-water mark after the stage (reset to the current RSS first
    where Linux allows it, so an in-process run reports the stage's own peak over what the
    process already held).
    """
    import importlib

    stage = STAGES[stage_name]
    began = time.perf_counter()
    for module in _imports_for(stage, ctx):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    startup = time.perf_counter() - began
    reset_peak_rss()
    cpu = _cpu_seconds()
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    started = time.perf_counter()
    out = stage.run(ctx)
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    peak = peak_rss_mb()
    if profiler is not None:
        profiler.stop()
    rows = out["rows"]() if callable(out["rows"]) else out["rows"]  # counted off the clock
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "startup_seconds": startup,
        "rows": int(rows),
        "detail": out.get("detail", {}),
        "peak_rss_mb": peak,
    }
    if profiler is not None:
        result["profile"] = {
            "tree": profiler.output_text(unicode=False, color=False, show_all=False),
            "flat": profiler.output_text(unicode=False, color=False, flat=True),
        }
    return result


def _cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children so far."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def child_main() -> None:
    """Entry point of a stage's child process: ``argv[1]`` is a JSON spec file."""
    spec_path = Path(sys.argv[1])
    spec = json.loads(spec_path.read_text())
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    ctx = Context(**spec["ctx"])
    if spec.get("floor") is not None:
        result = execute_floor(spec["stage"], ctx, spec["floor"])
    else:
        result = execute(spec["stage"], ctx, profile=spec.get("profile", False))
    Path(spec["out"]).write_text(json.dumps(result, default=str))


_CHILD = "from ml_tasks.benchmark import child_main; child_main()"


def run_stage(
    stage_name: str,
    ctx: Context,
    *,
    isolate: bool,
    profile: bool = False,
    floor: dict | None = None,
) -> dict:
    """Run a stage (or, given the stage's ``detail`` as ``floor``, its floor) in a fresh
    child process (``isolate``) or in this one."""
    if not isolate:
        if floor is not None:
            return execute_floor(stage_name, ctx, floor)
        return execute(stage_name, ctx, profile=profile)
    with tempfile.TemporaryDirectory(prefix="encore-bench-stage-") as tmp:
        spec = Path(tmp) / "spec.json"
        out = Path(tmp) / "out.json"
        spec.write_text(
            json.dumps(
                {
                    "stage": stage_name,
                    "ctx": asdict(ctx),
                    "out": str(out),
                    "profile": profile,
                    "floor": floor,
                },
                default=str,
            )
        )
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(spec)],
            env=ctx.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"stage {stage_name!r} failed:\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


# --------------------------------------------------------------------------- floors per stage


#: Floors that load a model (``predict``) run in a fresh process, as the stage did: a
#: process that already holds TensorFlow or other libraries' threads predicts differently.
_MODEL_FLOORS = ("churn scoring", "popularity scoring", "genre scoring", "monitoring")


def execute_floor(stage_name: str, ctx: Context, detail: dict) -> dict:
    """Measure the floor of ``stage_name`` on the rows it just read and wrote, in this
    process: ``{seconds, what, parts}``."""
    parts = _FLOORS[stage_name](ctx, detail)
    return {
        "seconds": sum(p["seconds"] for p in parts.values()),
        "what": " + ".join(parts),
        "parts": parts,
    }


def _floor_ingest(ctx: Context, detail: dict) -> dict:
    sources = []
    for ds in _datasets():
        if ds.is_event:
            sources.append((_partition(ds.raw_table, ctx.day), ds.raw_table))
        else:
            sources.append(
                (f"SELECT * FROM {ds.raw_table} WHERE dt = DATE '{ctx.night}'", ds.raw_table)
            )
    return {"COPY in of the day's raw rows": copy_in_floor(ctx.dsn, sources)}


def _floor_validation(ctx: Context, detail: dict) -> dict:
    from ml_tasks import validation

    queries = [validation.batch_query(ds, ctx.day) for ds in _datasets()]
    return {"COPY out of the validated rows": copy_out_floor(ctx.dsn, queries)}


_FRAUD_INPUT = "user_id, track_id, played_at, ms_played, skipped, liked, shared"


def _floor_fraud(ctx: Context, detail: dict) -> dict:
    read = copy_out_floor(
        ctx.dsn, [_day_rows("raw.listening_events", "played_at", ctx.day, _FRAUD_INPUT)]
    )
    write = copy_in_floor(
        ctx.dsn,
        [
            (
                f"SELECT * FROM monitoring.stream_anomalies WHERE dt = DATE '{ctx.night}'",
                "monitoring.stream_anomalies",
            )
        ],
    )
    return {"COPY out of the day's plays": read, "COPY in of the flags": write}


def _floor_features(ctx: Context, detail: dict) -> dict:
    from ml_tasks import features

    tables = [t.name for t in (*features.ACTIVITY_TABLES, *features.DAILY_TABLES)]
    sources = [(_partition(t, ctx.day), t) for t in tables]
    return {"COPY in of the feature rows": copy_in_floor(ctx.dsn, sources)}


def _floor_feature_validation(ctx: Context, detail: dict) -> dict:
    from ml_tasks import features

    queries = [_partition(t.name, ctx.day) for t in features.DAILY_TABLES]
    return {"COPY out of the feature rows": copy_out_floor(ctx.dsn, queries)}


def _floor_materialization(ctx: Context, detail: dict) -> dict:
    from ml_tasks import feature_store

    sources = []
    for view in detail.get("views", {}):
        table = feature_store.online_table(view)
        sources.append((_day_rows(table, "event_ts", ctx.day), table))
    return {"COPY in of the online rows": copy_in_floor(ctx.dsn, sources)}


def _scorer_columns(ctx: Context) -> tuple[list[str], Any, Any]:
    from ml_tasks import registry, scoring

    record = registry.champion(scoring.CHURN_MODEL, scoring.day_end(ctx.day), dsn=ctx.dsn)
    model = registry.load_churn_model(record)
    columns = list(dict.fromkeys([*scoring.CONTEXT_COLUMNS, *model.feature_names]))
    return columns, model, record


def _floor_churn_scoring(ctx: Context, detail: dict) -> dict:
    import numpy as np
    from psycopg import sql

    from ml_tasks import scoring, warehouse

    columns, model, _ = _scorer_columns(ctx)
    partition = warehouse.partition_name("features.user_daily", ctx.day)
    read = copy_out_floor(
        ctx.dsn,
        [
            sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), warehouse.qualified(partition)
            )
        ],
    )
    with warehouse.connect(ctx.dsn) as conn:
        frame = scoring.read_features(
            conn, partition, columns, np.iinfo(np.int64).min, np.iinfo(np.int64).max
        )
    values = frame[model.feature_names]
    model.predict(values.head(10))  # one-time set-up of the libraries, not the floor
    started = time.perf_counter()
    model.predict(values)
    predict = {"seconds": time.perf_counter() - started, "rows": len(values)}
    del frame, values
    # the chunks' rows wait in the day's stage table until the commit swaps it in
    stage = f"{warehouse.partition_name(scoring.CHURN_TABLE, ctx.day)}_stage"
    write = copy_in_floor(
        ctx.dsn,
        [(sql.SQL("SELECT * FROM {}").format(warehouse.qualified(stage)), scoring.CHURN_TABLE)],
    )
    return {
        "COPY out of the feature columns": read,
        "predict of the same matrix": predict,
        "COPY in of the scores": write,
    }


def _floor_interventions(ctx: Context, detail: dict) -> dict:
    from psycopg import sql

    from ml_tasks import scoring, warehouse

    partition = warehouse.qualified(warehouse.partition_name(scoring.CHURN_TABLE, ctx.day))
    read = copy_out_floor(
        ctx.dsn,
        [
            sql.SQL(
                "SELECT user_id, p_churn_30d AS p_churn, plan, is_paying, segment FROM {}"
            ).format(partition)
        ],
    )
    write = copy_in_floor(
        ctx.dsn,
        [(_partition(scoring.INTERVENTIONS_TABLE, ctx.day), scoring.INTERVENTIONS_TABLE)],
    )
    return {"COPY out of the staged scores": read, "COPY in of the plan": write}


def _floor_popularity(ctx: Context, detail: dict) -> dict:
    from ml_tasks import registry, scoring
    from ml_tasks.popularity import MODEL_NAME, build_examples, load_popularity_model

    day = ctx.day
    first = day - timedelta(days=29)
    read = copy_out_floor(
        ctx.dsn,
        [
            f"SELECT * FROM features.track_daily WHERE dt = DATE '{day}'",
            "SELECT track_id, dt, plays FROM features.track_activity_daily"
            f" WHERE dt BETWEEN DATE '{first}' AND DATE '{day}' AND plays > 0",
        ],
    )
    record = registry.champion(MODEL_NAME, scoring.day_end(day), dsn=ctx.dsn)
    model = load_popularity_model(record)
    frame = build_examples(
        [day],
        as_of=day,
        dsn=ctx.dsn,
        horizons=(1, 7, 30),
        sequence_days=model.sequence_days,
        source="warehouse",
        with_targets=False,
    )
    model.predict(frame.head(10))  # one-time set-up (TensorFlow traces its graph)
    started = time.perf_counter()
    model.predict(frame)
    predict = {"seconds": time.perf_counter() - started, "rows": len(frame)}
    write = copy_in_floor(
        ctx.dsn, [(_partition("scores.track_popularity", day), "scores.track_popularity")]
    )
    return {
        "COPY out of features and plays": read,
        "predict of the same matrix": predict,
        "COPY in of the forecasts": write,
    }


def _floor_audio(ctx: Context, detail: dict) -> dict:
    from ml_tasks import audio, warehouse

    with warehouse.connect(ctx.dsn) as conn:
        rows = conn.execute(
            "SELECT preview_path FROM features.track_audio WHERE dt = %s", (ctx.day,)
        ).fetchall()
    paths = [str(p) for (preview,) in rows if (p := audio.resolve_clip(Path(ctx.landing), preview))]
    seconds = decode_floor(paths, ctx.workers)
    return {
        f"soundfile decode of the same clips ({ctx.workers} processes)": {
            "seconds": seconds,
            "rows": len(paths),
        }
    }


def _floor_genre(ctx: Context, detail: dict) -> dict:
    from ml_tasks import genre, registry, scoring

    record = registry.champion(genre.MODEL_NAME, scoring.day_end(ctx.day), dsn=ctx.dsn)
    model = registry.load_model(record)
    frame = genre.load_tracks(ctx.dsn, ctx.day, labelled=False)
    mels = None
    if model.needs_audio and len(frame):
        mels = genre.load_logmels(
            frame, artifacts=Path(ctx.artifacts), landing_root=Path(ctx.landing)
        )
        keep = [m is not None for m in mels]
        frame = frame[keep].reset_index(drop=True)
        mels = [m for m in mels if m is not None]
    if len(frame):
        model.predict_proba(frame.head(2), mels[:2] if mels is not None else None)
    started = time.perf_counter()
    if len(frame):
        model.predict_proba(frame, mels)
    return {
        "predict of the same matrix": {
            "seconds": time.perf_counter() - started,
            "rows": len(frame),
        }
    }


def _floor_monitoring(ctx: Context, detail: dict) -> dict:
    """What monitoring reads from the warehouse, bare: the day's features and 30-day scores,
    the past scores, and the day's plays and flags when it computed the fraud flags (it
    reuses the fraud stage's when they are current); the drift reference is cached per
    model (a set-up step) and the day's scores are score_daily's, so nothing is
    predicted."""
    from psycopg import sql

    from ml_tasks import monitoring, registry, scoring

    computed_flags = (detail.get("fraud") or {}).get("computed", True)
    parts = _floor_fraud(ctx, detail) if computed_flags else {}
    record = registry.champion(scoring.CHURN_MODEL, scoring.day_end(ctx.day), dsn=ctx.dsn)
    model = registry.load_churn_model(record)
    cols = sql.SQL(", ").join(map(sql.Identifier, model.feature_names))
    queries = [
        sql.SQL("SELECT {} FROM features.user_daily WHERE dt = {}").format(
            cols, sql.Literal(ctx.day)
        ),
        sql.SQL("SELECT p_churn_30d FROM scores.churn WHERE dt = {}").format(sql.Literal(ctx.day)),
    ]
    for h in monitoring.HORIZONS:
        queries.append(
            sql.SQL("SELECT user_id, {} , model_version FROM scores.churn WHERE dt = {}").format(
                sql.Identifier(f"p_churn_{h}d"), sql.Literal(ctx.day - timedelta(days=h))
            )
        )
    parts["COPY out of the day's features and scores, past scores"] = copy_out_floor(
        ctx.dsn, queries
    )
    return parts


_FLOORS: dict[str, Callable[[Context, dict], dict]] = {
    "ingest": _floor_ingest,
    "validation": _floor_validation,
    "fraud flags": _floor_fraud,
    "features": _floor_features,
    "feature validation": _floor_feature_validation,
    "materialization": _floor_materialization,
    "churn scoring": _floor_churn_scoring,
    "interventions": _floor_interventions,
    "popularity scoring": _floor_popularity,
    "audio features": _floor_audio,
    "genre scoring": _floor_genre,
    "monitoring": _floor_monitoring,
}


# --------------------------------------------------------------------------- set-up


@contextlib.contextmanager
def _setup_step(results: list[StageResult], name: str, rows: int = 0, unit: str = "") -> Iterator:
    """Time a set-up step and record it (kind ``setup``)."""
    log.info("set-up: %s ...", name)
    started = time.perf_counter()
    info: dict = {}
    yield info
    seconds = time.perf_counter() - started
    results.append(
        StageResult(
            stage=name,
            kind=SETUP,
            seconds=seconds,
            rows=int(info.get("rows", rows)),
            unit=info.get("unit", unit),
            detail=info.get("detail", {}),
        )
    )
    log.info("set-up: %s in %.1f s", name, seconds)


def _history(ctx: Context, days: list[date]) -> dict:
    """Ingest, flag fraud and build features for ``days``, as the nightly DAGs would.

    Set-up only, so the three steps run as a pipeline, one thread each: day d+2 is
    ingested while day d+1's fraud flags and day d's features are computed. Each step still
    sees its day's inputs complete (features read raw rows and flags as of their day), so
    the warehouse ends up as if the days had run one after the other.
    """
    from ml_tasks import features, fraud
    from ml_tasks.ingest import ingest_day

    totals = {"rows": 0}

    def ingest(day: date) -> None:
        result = ingest_day(day, run_id=SETUP_RUN_ID, dsn=ctx.dsn, landing_root=Path(ctx.landing))
        totals["rows"] += result.rows_read

    def flags(day: date) -> None:
        fraud.detect_day(day, run_id=SETUP_RUN_ID, dsn=ctx.dsn)

    def build(day: date) -> None:
        features.build_day(day, run_id=SETUP_RUN_ID, dsn=ctx.dsn)
        done = days.index(day) + 1
        if done % 10 == 0 or done == len(days):
            log.info("set-up: history %d/%d days (%s)", done, len(days), day)

    pipeline(days, [ingest, flags, build])
    return {"rows": totals["rows"], "unit": "landing rows", "detail": {"days": len(days)}}


def pipeline(items: Sequence, steps: Sequence[Callable[[Any], None]]) -> None:
    """Run every item through ``steps`` in order, each step in its own thread: item i+1
    enters step k while item i is in step k+1. Raises the first failure."""
    import queue
    import threading

    stop = object()
    queues: list[queue.Queue] = [queue.Queue(maxsize=1) for _ in steps]
    failures: list[BaseException] = []

    def feed() -> None:
        for item in items:
            queues[0].put(item)
        queues[0].put(stop)

    def work(k: int) -> None:
        while (item := queues[k].get()) is not stop:
            if failures:
                continue  # drain: upstream threads must not block on a full queue
            try:
                steps[k](item)
            except BaseException as exc:
                failures.append(exc)
                continue
            if k + 1 < len(steps):
                queues[k + 1].put(item)
        if k + 1 < len(steps):
            queues[k + 1].put(stop)

    threads = [threading.Thread(target=feed, daemon=True)]
    threads += [threading.Thread(target=work, args=(k,), daemon=True) for k in range(len(steps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def _force_champion(ctx: Context, family: str, detail: dict) -> bool:
    """Promote a trained model the (relaxed) gate kept as candidate: the night needs one."""
    from ml_tasks import registry

    if detail.get("status") == "champion" or not detail.get("version"):
        return False
    name = detail.get("model", family)
    at = _champion_from(ctx)
    registry.promote(name, detail["version"], run_id=f"bench-train-{family}", at=at, dsn=ctx.dsn)
    log.warning("set-up: %s %s kept as candidate by its gate; promoted for the bench", name, at)
    return True


def _champion_from(ctx: Context) -> datetime:
    """When the bench's champions start to serve: the first past day the set-up scores
    (so that it and the night share one model), else the night (the training day's end)."""
    first = date.fromisoformat(min(ctx.past_days)) if ctx.past_days else ctx.day
    return datetime(first.year, first.month, first.day, tzinfo=UTC)


def _past_days(night: date, first: date) -> list[date]:
    """The days before the night whose churn scores monitoring compares with outcomes."""
    return [
        night - timedelta(days=h) for h in PAST_SCORE_HORIZONS if night - timedelta(days=h) >= first
    ]


# --------------------------------------------------------------------------- the night


def default_tracks(users: int) -> int:
    """Tracks of a world of ``users`` users: one per five (20,000 for 100,000 users)."""
    return max(50, users // USERS_PER_TRACK)


def run_night(
    users: int,
    days: int,
    tracks: int | None = None,
    *,
    seed: int = SEED,
    admin: str | None = None,
    training: str = "auto",
    preview_share: float = 0.5,
    workers: int | None = None,
    isolate: bool = True,
    profile: bool = False,
    past_scores: bool = True,
    keep: bool = False,
    workdir: Path | None = None,
) -> list[StageResult]:
    """Simulate ``days`` days of ``users`` users (``tracks`` tracks, default users / 5) and
    time one night; see the module docstring.

    ``admin``: the server to create the scratch database on (default :func:`admin_dsn`).
    ``training``: ``auto`` (the shipped windows when ``days`` allow, else shorter ones),
    ``shipped``, ``short`` or ``tiny``. ``isolate``: each stage in its own process (peak
    RSS per stage); in-process runs are for tests. ``profile``: profile the slowest stage
    of the night again with pyinstrument (its result gets ``detail["profile"]``).
    ``past_scores``: score D-7, D-30 and D-90 in the set-up (monitoring's realized
    performance then has scores to judge). ``keep``: keep the database and the simulated
    files (their place is logged).
    """
    from ml_tasks import audio

    if users < 1 or days < 2:
        raise ValueError("need at least 1 user and 2 days")
    tracks = tracks or default_tracks(users)
    profile_name = pick_training(days, training)
    workers = workers or audio.default_workers()
    night = START + timedelta(days=days - 1)
    history = [START + timedelta(days=i) for i in range(days - 1)]
    work = Path(workdir or tempfile.mkdtemp(prefix="encore-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: list[StageResult] = []
    db = ScratchDatabase(admin or admin_dsn())
    log.info(
        "bench: %d users, %d tracks, %d days (night %s), training profile %s, database %s",
        users,
        tracks,
        days,
        night,
        profile_name,
        db.name,
    )
    past = _past_days(night, START + timedelta(days=29)) if past_scores else []
    ctx = Context(
        dsn=db.dsn,
        landing=str(work / "landing"),
        artifacts=str(work / "artifacts"),
        night=night.isoformat(),
        start=START.isoformat(),
        training=profile_name,
        workers=workers,
        past_days=[d.isoformat() for d in past],
    )
    try:
        _setup(ctx, results, users, tracks, days, seed, preview_share, history)
        _retrain(ctx, results, isolate)
        _setup_after_training(ctx, results, past)
        _night(ctx, results, isolate)
        if profile:
            _profile_slowest(ctx, results, isolate)
    finally:
        if keep:
            log.warning("bench: kept database %s and %s", db.dsn, work)
        else:
            db.drop()
            if workdir is None:
                shutil.rmtree(work, ignore_errors=True)
    return results


def _setup(
    ctx: Context,
    results: list[StageResult],
    users: int,
    tracks: int,
    days: int,
    seed: int,
    preview_share: float,
    history: list[date],
) -> None:
    """Simulate the world, load its history, extract the clips delivered so far."""
    from ml_tasks import audio
    from ml_tasks.simulate import simulate_world

    with _setup_step(results, "simulate") as info:
        summary = simulate_world(
            Path(ctx.landing),
            users=users,
            tracks=tracks,
            start=START,
            days=days,
            seed=seed,
            bad_rate=0.002,
            bot_share=0.003,
            preview_share=preview_share,
        ).to_dict()
        info.update(
            rows=sum(summary["rows"].values()),
            unit="landing rows",
            detail={"rows": summary["rows"], "audio_files": summary.get("audio_files")},
        )
    with _setup_step(results, "history: ingest, fraud flags, features") as info:
        info.update(_history(ctx, history))
    if preview_share > 0:
        with _setup_step(results, "history: audio features") as info:
            done = audio.extract_day(
                ctx.train_day,
                run_id=SETUP_RUN_ID,
                dsn=ctx.dsn,
                landing_root=Path(ctx.landing),
                artifacts=Path(ctx.artifacts),
                workers=ctx.workers,
            )
            info.update(rows=done["extracted"], unit="clips", detail=done)


def _retrain(ctx: Context, results: list[StageResult], isolate: bool) -> None:
    for stage in RETRAIN_STAGES:
        if stage.name == "train genre" and not _has_audio(ctx):
            results.append(_skipped(stage, "the world has no preview clips"))
            continue
        log.info("retraining: %s ...", stage.name)
        out = run_stage(stage.name, ctx, isolate=isolate)
        family = stage.name.split()[-1]
        forced = _force_champion(ctx, family, out["detail"])
        out["detail"]["promoted_by_bench"] = forced
        results.append(_result(stage, out))
        log.info("retraining: %s in %.1f s", stage.name, out["seconds"])


def _setup_after_training(ctx: Context, results: list[StageResult], past: list[date]) -> None:
    from ml_tasks import feature_store, feature_validation, scoring

    with _setup_step(results, "feast apply, materialize the day before") as info:
        feature_store.apply(dsn=ctx.dsn)
        done = feature_store.materialize_day(ctx.train_day, dsn=ctx.dsn)
        info.update(rows=done["online_rows"], unit="online rows")
    if past:
        with _setup_step(results, "past churn scores for monitoring") as info:
            rows = 0
            for day in past:
                feature_validation.validate_features(
                    day, run_id=SETUP_RUN_ID, dsn=ctx.dsn, artifacts=Path(ctx.artifacts)
                )
                rows += scoring.score_churn(day, run_id=SETUP_RUN_ID, dsn=ctx.dsn)["users"]
            info.update(rows=rows, unit="users", detail={"days": [d.isoformat() for d in past]})
    with _setup_step(results, "drift reference of the churn champion") as info:
        # drawn once per model version, the first night it is monitored: not a nightly cost
        from ml_tasks import monitoring, registry

        record = registry.champion(scoring.CHURN_MODEL, scoring.day_end(ctx.day), dsn=ctx.dsn)
        if record is not None:
            reference = monitoring.reference_sample(
                record,
                registry.load_churn_model(record),
                dsn=ctx.dsn,
                config=monitoring.MonitoringConfig.load(),
            )
            info.update(rows=len(reference), unit="reference rows")


def _has_audio(ctx: Context) -> bool:
    from ml_tasks import warehouse

    with warehouse.connect(ctx.dsn) as conn:
        return bool(conn.execute("SELECT EXISTS (SELECT FROM features.track_audio)").fetchone()[0])


def _has_champion(ctx: Context, name: str) -> bool:
    from ml_tasks import registry, scoring

    return registry.champion(name, scoring.day_end(ctx.day), dsn=ctx.dsn) is not None


def _skipped(stage: Stage, why: str) -> StageResult:
    return StageResult(stage=stage.name, kind=SKIPPED, seconds=0.0, detail={"reason": why})


def _result(stage: Stage, out: dict) -> StageResult:
    return StageResult(
        stage=stage.name,
        kind=stage.kind,
        seconds=out["seconds"],
        rows=out["rows"],
        unit=stage.unit,
        io_bound=stage.io_bound,
        peak_rss_mb=out.get("peak_rss_mb"),
        startup_seconds=out.get("startup_seconds", 0.0),
        cpu_seconds=out.get("cpu_seconds"),
        detail=out.get("detail", {}),
    )


def _night(ctx: Context, results: list[StageResult], isolate: bool) -> None:
    for stage in NIGHT_STAGES:
        if stage.name == "audio features" and not _has_audio(ctx):
            results.append(_skipped(stage, "the world has no preview clips"))
            continue
        if stage.name == "genre scoring" and not _has_champion(ctx, "genre"):
            results.append(_skipped(stage, "no genre champion"))
            continue
        log.info("night: %s ...", stage.name)
        out = run_stage(stage.name, ctx, isolate=isolate)
        result = _result(stage, out)
        if stage.name == "audio features" and out["rows"] == 0:
            # the DAG still runs (and costs what it costs); there is nothing to decode
            result.floor = "none: no new or changed clips on the night"
            results.append(result)
            log.info("night: %s: no clips in %.2f s", stage.name, result.seconds)
            continue
        floor_started = time.perf_counter()
        floor = run_stage(
            stage.name, ctx, isolate=isolate and stage.name in _MODEL_FLOORS, floor=result.detail
        )
        result.floor_seconds, result.floor = floor["seconds"], floor["what"]
        result.detail["floor_parts"] = floor["parts"]
        results.append(result)
        log.info(
            "night: %s: %d %s in %.2f s (start-up %.1f s), floor %.2f s (ratio %.2f),"
            " peak RSS %.0f MB; floor measured in %.1f s",
            stage.name,
            result.rows,
            result.unit,
            result.seconds,
            result.startup_seconds,
            result.floor_seconds,
            result.ratio or 0.0,
            result.peak_rss_mb or 0.0,
            time.perf_counter() - floor_started,
        )


def _profile_slowest(ctx: Context, results: list[StageResult], isolate: bool) -> None:
    """Run the night's slowest stage again under pyinstrument (after restoring what it
    found before the night, where running it twice would not do the same work)."""
    from psycopg import sql

    from ml_tasks import feature_store, warehouse

    night = [r for r in results if r.kind == NIGHT]
    if not night:
        return
    slowest = max(night, key=lambda r: r.seconds)
    log.info("profiling %s (%.1f s) with pyinstrument ...", slowest.stage, slowest.seconds)
    if slowest.stage == "materialization":
        with warehouse.connect(ctx.dsn) as conn:
            for view in slowest.detail.get("views", {}):
                table = warehouse.qualified(feature_store.online_table(view))
                conn.execute(sql.SQL("TRUNCATE {}").format(table))
            conn.commit()
        feature_store.materialize_day(ctx.train_day, dsn=ctx.dsn)
    elif slowest.stage == "interventions":
        run_stage("churn scoring", ctx, isolate=isolate)
    elif slowest.stage == "audio features":
        with warehouse.connect(ctx.dsn) as conn:
            conn.execute("DELETE FROM features.track_audio WHERE dt = %s", (ctx.day,))
            conn.commit()
    out = run_stage(slowest.stage, ctx, isolate=isolate, profile=True)
    slowest.detail["profile"] = {**out.get("profile", {}), "seconds": out["seconds"]}


# --------------------------------------------------------------------------- analysis


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict | None:
    """Least squares ``y = a + b x`` with R^2, and the exponent of ``y ~ x^k`` (log-log)."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    exponent = None
    if all(x > 0 for x in xs) and all(y > 0 for y in ys):
        lx = [math.log(x) for x in xs]
        ly = [math.log(y) for y in ys]
        mlx, mly = sum(lx) / n, sum(ly) / n
        exponent = sum((a - mlx) * (b - mly) for a, b in zip(lx, ly, strict=True)) / sum(
            (a - mlx) ** 2 for a in lx
        )
    return {"intercept": intercept, "slope": slope, "r2": r2, "exponent": exponent, "n": n}


def growth_verdict(fit: dict | None) -> str:
    """Whether time grows linearly in users, judged from a fit over the sizes."""
    if fit is None:
        return "needs two sizes or more"
    if fit["n"] < 3:
        return "two sizes: no verdict"
    k = fit["exponent"]
    if k is not None and k > 1.15:
        return f"faster than linear (time ~ N^{k:.2f})"
    if fit["r2"] >= 0.95:
        return "linear" if k is None or k >= 0.8 else f"linear, fixed costs dominate (N^{k:.2f})"
    return f"not linear (R^2 {fit['r2']:.2f})"


def chunk_users(stage: str) -> int | None:
    """Users per chunk past which ``stage``'s peak memory should stay flat (None: the
    stage does not chunk by users)."""
    from ml_tasks import feature_store
    from ml_tasks.settings import get_settings

    settings = get_settings()
    return {
        "ingest": max(1, settings.ingest_chunk_rows // 9),  # ~8.7 plays per user-day
        "churn scoring": settings.score_chunk_users,
        "interventions": settings.score_chunk_users,
        "materialization": feature_store.MATERIALIZE_CHUNK_ROWS,
    }.get(stage)


def memory_verdict(sizes: list[int], rss: list[float], chunk: int | None) -> dict:
    """Peak RSS growth over the sizes past ``chunk`` (all sizes when None)."""
    pairs = [(n, r) for n, r in zip(sizes, rss, strict=True) if r and (chunk is None or n >= chunk)]
    if len(pairs) < 2:
        return {"verdict": "one size past the chunk: no verdict", "ratio": None, "sizes": pairs}
    (n0, r0), (n1, r1) = pairs[0], pairs[-1]
    ratio = r1 / r0
    flat = ratio <= 1.2
    return {
        "verdict": "flat" if flat else f"grows x{ratio:.2f} for x{n1 / n0:.1f} users",
        "ratio": ratio,
        "flat": flat,
        "from": n0,
        "to": n1,
    }


def predicted_seconds(runs: list[NightRun], stage: str, users: int) -> float | None:
    """A stage's time at ``users`` from the linear fit over the runs (None without one)."""
    pts = [(r.users, s.seconds) for r in runs if (s := r.stage(stage)) and s.kind != SKIPPED]
    fit = linear_fit([p[0] for p in pts], [p[1] for p in pts])
    if fit is None:
        return None
    return max(0.0, fit["intercept"] + fit["slope"] * users)


# --------------------------------------------------------------------------- text


def _fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _fmt_mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def stage_rows(run: NightRun) -> list[list[str]]:
    """The table of one night: night stages, then retraining, then set-up, then skipped."""
    rows = []
    for r in run.results:
        if r.kind == SKIPPED:
            rows.append([r.stage, "skipped", "-", "", "-", "-", "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                r.stage,
                {NIGHT: "night", RETRAINING: "retraining", SETUP: "set-up"}[r.kind],
                f"{r.rows:,}" if r.rows else "-",
                r.unit,
                _fmt_s(r.seconds),
                _fmt_s(r.cpu_seconds),
                _fmt_rate(r.rows_per_s),
                _fmt_s(r.floor_seconds),
                _fmt_ratio(r.ratio) + (" (I/O)" if r.io_bound and r.ratio is not None else ""),
                _fmt_mb(r.peak_rss_mb),
                _fmt_s(r.startup_seconds) if r.kind != SETUP else "-",
            ]
        )
    return rows


HEADERS = [
    "stage",
    "kind",
    "rows",
    "unit",
    "wall s",
    "CPU s",
    "rows/s",
    "floor s",
    "floor/stage",
    "peak RSS MB",
    "start-up s",
]


def format_table(run: NightRun) -> str:
    """A plain-text table of one night (what ``encore bench`` prints)."""
    rows = [HEADERS, *stage_rows(run)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    lines = [
        f"{run.users:,} users, {run.tracks:,} tracks, {run.days} days (training: {run.training})"
    ]
    for k, row in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i in (0, 1, 3) else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(
        f"night chain: {run.chain_seconds:,.1f} s (+ {run.chain_startup_seconds:,.1f} s of"
        f" process start-up and imports); retraining: {run.retraining_seconds:,.1f} s"
    )
    return "\n".join(lines)


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def machine() -> dict:
    """What the figures were measured on."""
    info = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        total = next(line for line in meminfo if line.startswith("MemTotal:"))
        info["memory_gib"] = round(int(total.split()[1]) / 2**20, 1)
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as cpuinfo:
        info["cpu"] = next(
            line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
        )
    return info


# --------------------------------------------------------------------------- the report


def critical_path(seconds: dict[str, float], scoring_workers: int = 1) -> float:
    """The night's wall time when every DAG that may run in parallel does (the DAGs'
    dependencies), with churn scoring fanned out over ``scoring_workers`` workers."""

    def s(name: str) -> float:
        return seconds.get(name, 0.0)

    head = s("ingest") + s("validation")
    features = s("fraud flags") + s("features") + s("feature validation") + s("materialization")
    audio = s("audio features")
    churn = s("churn scoring") / max(1, scoring_workers) + s("interventions")
    scoring = max(churn, s("popularity scoring"), s("genre scoring"), s("monitoring"))
    return head + max(features, audio) + scoring


def _sizes(runs: list[NightRun]) -> list[int]:
    return sorted({r.users for r in runs})


def _series(runs: list[NightRun], stage: str, attr: str) -> list[tuple[int, float]]:
    out = []
    for run in sorted(runs, key=lambda r: r.users):
        result = run.stage(stage)
        if result is not None and result.kind != SKIPPED:
            value = getattr(result, attr)
            if value is not None:
                out.append((run.users, float(value)))
    return out


def _stage_names(runs: list[NightRun], kind: str) -> list[str]:
    names: list[str] = []
    for run in runs:
        for r in run.of_kind(kind):
            if r.stage not in names:
                names.append(r.stage)
    return names


def plot(runs: list[NightRun], path: Path) -> Path:
    """Time per stage (and the chain) against users, and peak RSS against users."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    colors = plt.get_cmap("tab20").colors
    stages = _stage_names(runs, NIGHT) + _stage_names(runs, RETRAINING)
    for i, stage in enumerate(stages):
        style = dict(
            ls="--" if stage.startswith("train ") else "-",
            marker="^" if stage.startswith("train ") else "o",
            color=colors[i % len(colors)],
            label=stage,
        )
        pts = _series(runs, stage, "seconds")
        if pts:
            left.plot([p[0] for p in pts], [p[1] for p in pts], **style)
        mem = _series(runs, stage, "peak_rss_mb")
        if mem:
            right.plot([p[0] for p in mem], [p[1] for p in mem], **style)
    chain = sorted((r.users, r.chain_seconds) for r in runs)
    left.plot([c[0] for c in chain], [c[1] for c in chain], "k-", lw=2.5, marker="s", label="night")
    left.axhline(CHAIN_TARGET_SECONDS, color="red", lw=1, ls=":", label="5 min target")
    left.set(xscale="log", yscale="log", xlabel="users", ylabel="wall seconds")
    left.set_title("Time per stage against users")
    right.set(xscale="log", xlabel="users", ylabel="peak RSS (MB)")
    right.set_title("Peak RSS of each stage's process")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def _chain_at(runs: list[NightRun], users: int) -> tuple[float | None, float | None, str]:
    """(chain seconds, retraining seconds, how) at ``users``: measured, else predicted."""
    run = next((r for r in runs if r.users == users), None)
    if run is not None:
        return run.chain_seconds, run.retraining_seconds or None, "measured"
    names = _stage_names(runs, NIGHT)
    chain = [predicted_seconds(runs, s, users) for s in names]
    train = [predicted_seconds(runs, s, users) for s in _stage_names(runs, RETRAINING)]
    if not names or any(c is None for c in chain):
        return None, None, "not measured"
    retrain = sum(t for t in train if t is not None) if train else None
    return sum(c for c in chain if c is not None), retrain, "predicted from the linear fit"


def _without_banner(text: str) -> list[str]:
    """pyinstrument's text output without its logo and header lines."""
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith("Profile at ")), -1)
    return [line for line in lines[at + 1 :] if line.strip()]


def _profile_section(runs: list[NightRun]) -> list[str]:
    profiled = [
        (run, r) for run in runs for r in run.of_kind(NIGHT) if (r.detail or {}).get("profile")
    ]
    if not profiled:
        return ["No stage was profiled in this run (`encore bench --profile`)."]
    run, result = max(profiled, key=lambda p: p[0].users)
    prof = result.detail["profile"]
    flat = [line for line in _without_banner(prof.get("flat", "")) if line.strip()]
    tree = _without_banner(prof.get("tree", ""))
    lines = [
        f"The slowest stage of the night at {run.users:,} users was **{result.stage}**"
        f" ({result.seconds:,.1f} s). It was run again under pyinstrument (wall-clock"
        f" sampling, so time waiting on PostgreSQL shows up in the Python frame that waits):"
        f" {prof.get('seconds', 0):,.1f} s under the profiler.",
        "",
        "Functions by own time (top 20):",
        "",
        "```",
        *flat[:20],
        "```",
        "",
        "Call tree (pyinstrument's condensed view, first 70 lines):",
        "",
        "```",
        *tree[:70],
        "```",
    ]
    return lines


def _past_one_machine(runs: list[NightRun]) -> list[str]:
    biggest = max(runs, key=lambda r: r.users)
    seconds = {r.stage: r.seconds for r in biggest.of_kind(NIGHT)}
    total = sum(seconds.values())
    cpu = sum(r.cpu_seconds or 0.0 for r in biggest.of_kind(NIGHT))
    waiting = {
        r.stage: max(0.0, r.seconds - (r.cpu_seconds or 0.0)) for r in biggest.of_kind(NIGHT)
    }
    top_wait = sorted(waiting.items(), key=lambda kv: -kv[1])[:3]
    chunk = chunk_users("churn scoring") or 100_000
    fanout = max(1, -(-biggest.users // chunk))
    lines = [
        "What the measurements predict, from the largest night measured"
        f" ({biggest.users:,} users) and the linear fits over"
        f" {', '.join(f'{n:,}' for n in _sizes(runs))} users:",
        "",
        f"- **Where the night's time goes.** Of {total:,.0f} s of wall time, the tasks'"
        f" own processes used {cpu:,.0f} s of CPU; for the other"
        f" {max(0.0, total - cpu):,.0f} s ({max(0.0, total - cpu) / total:.0%}) they waited,"
        " mostly on PostgreSQL doing the work they asked for (most waiting: "
        + ", ".join(f"{k} {v:,.0f} s" for k, v in top_wait)
        + "). More workers divide the first part; the second needs a bigger warehouse or"
        " the work moved out of it.",
        f"- **More Celery workers.** The DAGs allow ingest, then features and audio side by"
        f" side, then churn, popularity and genre scoring and monitoring side by side. With a"
        f" worker free for each, the night takes its critical path:"
        f" {critical_path(seconds):,.0f} s instead of {total:,.0f} s run one after another."
        " On this machine's 2 cores the parallel tasks share the same cores and the same"
        " PostgreSQL, so the gain needs the workers on other machines.",
        f"- **Scoring fan-out.** `score_daily` maps churn scoring over user-id ranges of"
        f" {chunk:,} users ({fanout} chunk(s) at {biggest.users:,} users). Churn scoring took"
        f" {seconds.get('churn scoring', 0):,.1f} s; over {max(2, fanout)} workers the critical"
        f" path becomes {critical_path(seconds, max(2, fanout)):,.0f} s. The commit"
        f" (interventions, {seconds.get('interventions', 0):,.1f} s) stays one task: its"
        " budget allocation needs every user's best option.",
    ]
    rows = []
    for n in (1_000_000, 10_000_000):
        pred = {s: predicted_seconds(runs, s, n) for s in _stage_names(runs, NIGHT)}
        if any(v is None for v in pred.values()):
            continue
        p = {k: float(v or 0.0) for k, v in pred.items()}
        k = max(1, -(-n // chunk))
        wait_share = {
            r.stage: max(0.0, 1 - (r.cpu_seconds or 0.0) / r.seconds) if r.seconds else 0.0
            for r in biggest.of_kind(NIGHT)
        }
        rows.append(
            [
                f"{n:,}",
                f"{sum(p.values()):,.0f}",
                f"{sum(v * wait_share.get(s, 0.0) for s, v in p.items()):,.0f}",
                f"{p.get('features', 0):,.0f}",
                f"{p.get('materialization', 0):,.0f}",
                f"{p.get('churn scoring', 0):,.0f}",
                f"{critical_path(p, k):,.0f} ({k} scoring workers)",
            ]
        )
    if rows:
        lines += [
            "",
            "Linear extrapolation (seconds; the fits assume PostgreSQL keeps its per-row cost,"
            " which it will not once a day no longer fits in memory):",
            "",
            *_md_table(
                [
                    "users",
                    "night, one machine",
                    "of it waiting (mostly PostgreSQL)",
                    "features",
                    "materialization",
                    "churn scoring",
                    "critical path, parallel DAGs",
                ],
                rows,
            ),
        ]
    feat = predicted_seconds(runs, "features", 10_000_000)
    mat = predicted_seconds(runs, "materialization", 10_000_000)
    lines += [
        "",
        "- **Feast's Spark or Ray offline store.** Feature SQL and the training sets'"
        " point-in-time joins run inside the one PostgreSQL; workers do not help them."
        + (
            f" At 10M users the features alone would take {feat / 60:,.0f} min on it."
            if feat is not None
            else ""
        )
        + " That is where the offline store (and the feature SQL) move to Spark or Ray,"
        " which scale with the cluster instead of one server's cores.",
        "- **Redis online store.** Materialization rewrites every online row of the day in"
        " PostgreSQL: one row per entity and feature, each a WAL-logged heap update, after"
        " a join of the whole day against the online table"
        + (f"; at 10M users it would take {mat / 60:,.0f} min" if mat is not None else "")
        + ". Feast's Redis online store writes one hash per entity, on as many Redis"
        " shards as the cluster has.",
        "- **The floors are per server.** A stage at its floor is bounded by what one"
        " PostgreSQL COPYs per second; past that, only more servers (partitioned warehouses,"
        " or the offline store elsewhere) make the night shorter.",
    ]
    return lines


def training_note(days: int, profile: str) -> str:
    """How much history the retraining had: training dates per model against the
    profile's full window, and the row caps."""
    from ml_tasks.churn import NotEnoughHistory as ChurnShort
    from ml_tasks.churn import plan_splits as churn_splits
    from ml_tasks.popularity import NotEnoughHistory as PopularityShort
    from ml_tasks.popularity import plan_splits as popularity_splits

    if profile not in TRAINING_PROFILES:
        return ""
    day = START + timedelta(days=days - 2)
    churn = training_config("churn", profile)
    popularity = training_config("popularity", profile)
    try:
        splits = churn_splits(day, churn, START)
        horizons = popularity_splits(day, popularity, START)
    except (ChurnShort, PopularityShort):  # a profile that does not fit: nothing to say
        return ""
    w = churn.window
    full = -(-w.lookback_days // w.stride_days)
    return (
        f"With {days} days, churn trains on {len(splits.train)} scoring date(s) (the"
        f" window allows {full}), calibrates on {len(splits.calibration)} and holds out"
        f" {len(splits.holdout)}, at most {w.max_train_rows:,} training rows; popularity"
        " trains on "
        + ", ".join(f"{len(v.train)} dates for {h} d" for h, v in sorted(horizons.items()))
        + f", at most {popularity.window.max_train_rows:,} rows per horizon."
    )


def plot_path_for(out: Path) -> Path:
    """The plot written beside report ``out``: ``performance.md`` -> ``performance_stages.png``."""
    return Path(out).with_name(f"{Path(out).stem}_stages.png")


def write_report(
    runs: list[NightRun], out: Path, *, plot_path: Path | None = None, command: str = ""
) -> Path:
    """Write ``out`` (markdown) and the plot beside it from measured nights."""
    if not runs:
        raise ValueError("no nights to report")
    runs = sorted(runs, key=lambda r: r.users)
    out = Path(out)
    plot_path = Path(plot_path or plot_path_for(out))
    plot(runs, plot_path)
    sizes = _sizes(runs)
    info = machine()
    when = max(r.started_at for r in runs) or datetime.now(UTC).isoformat()
    lines = [
        "# Performance: one night of Encore, stage by stage",
        "",
        "Generated by `encore bench` (`ml_tasks/benchmark.py`) from the figures it measured;"
        " do not edit by hand, run it again" + (f": `{command}`." if command else "."),
        "",
        "## Machine and run",
        "",
        f"- {info.get('cores')} cores ({info.get('cpu', info.get('processor'))}),"
        f" {info.get('memory_gib', '?')} GiB of memory, {info.get('platform')},"
        f" Python {info.get('python')}.",
        f"- Measured {when[:16].replace('T', ' ')} UTC; sizes:"
        f" {', '.join(f'{n:,}' for n in sizes)} users"
        f" ({', '.join(f'{r.tracks:,}' for r in runs)} tracks), {runs[0].days} simulated days"
        f" each, training profile `{runs[0].training}`.",
    ]
    for run in runs:
        if run.load_average:
            lines.append(
                f"- Load average after the {run.users:,}-user night:"
                f" {', '.join(f'{x:.1f}' for x in run.load_average)} (1, 5, 15 min): the"
                " machine is shared, so wall times carry other jobs' load."
            )
    lines += [
        "",
        "## How it is measured",
        "",
        "- **Set-up (not part of the night):** simulate the world; load every day but the"
        " last with the functions the DAGs call (ingest, fraud flags, features); extract the"
        " clips delivered so far; apply Feast and materialize the day before the night (so the"
        " night's materialization updates yesterday's online rows); score churn for D-7, D-30"
        " and D-90 so monitoring has past scores to compare with outcomes. The champions are"
        " registered as of the first of those days. The set-up's steps and wall times are in"
        " each night's table, marked `set-up`.",
        "- **Retraining (reported apart):** churn, popularity and genre trained as of the day"
        " before the night, each in its own process. The bench relaxes only the promotion"
        " gate (validated days, ECE, the first-model bar) so that a champion always exists;"
        " the training work is the profile's. " + training_note(runs[0].days, runs[0].training),
        "- **The night:** each stage in DAG order in a fresh process. *wall s* is the stage's"
        " own call; *start-up s* is the process start and imports, apart. *peak RSS* is the"
        " process's VmHWM. Churn scoring is `score_churn` up to its commit (the chunks);"
        " *interventions* is its commit (the plan, then both partitions swapped in).",
        "- **Floors, same run, same rows, after the stage:** a bare binary COPY of the rows"
        " the stage wrote into an empty, index-free copy of the table (COPYed out beforehand,"
        " only the COPY in timed); a bare binary COPY out of the rows it read; a bare"
        " soundfile decode of the same clips on as many processes; a bare `predict` of the"
        " same matrix. *floor/stage* = floor seconds / stage seconds (1.0 = at the floor);"
        " `(I/O)` marks the I/O-bound stages the 50 % target applies to.",
        "",
        "## Targets",
        "",
    ]
    chain, retrain, how = _chain_at(runs, CHAIN_TARGET_USERS)
    at_target = next((r for r in runs if r.users == CHAIN_TARGET_USERS), None)
    if chain is None:
        chain_line = "not measured (no 100,000-user night)."
    elif at_target is None:
        chain_line = f"{chain:,.0f} s ({how}): {_verdict(chain <= CHAIN_TARGET_SECONDS)}."
    else:
        total = chain + at_target.chain_startup_seconds
        chain_line = (
            f"{chain:,.0f} s of stage work ({how}, {at_target.days} simulated days),"
            f" {total:,.0f} s with each stage's process start-up and imports:"
            f" {_verdict(chain <= CHAIN_TARGET_SECONDS)} on the work,"
            f" {_verdict(total <= CHAIN_TARGET_SECONDS)} with the start-ups."
        )
    profile = at_target.training if at_target is not None else None
    if retrain is None:
        retrain_line = "not measured."
    elif profile and profile != "shipped":
        retrain_line = (
            f"{retrain:,.0f} s ({how}) with the `{profile}` training profile, not the shipped"
            " windows and models: **not judged** (the shipped profile needs `--days 92`)."
        )
    else:
        retrain_line = f"{retrain:,.0f} s ({how}): {_verdict(retrain <= RETRAIN_TARGET_SECONDS)}."
    lines += [
        f"- Nightly chain for {CHAIN_TARGET_USERS:,} users (retraining excluded) within"
        f" {CHAIN_TARGET_SECONDS / 60:.0f} min: {chain_line}",
        f"- Retraining for {CHAIN_TARGET_USERS:,} users within"
        f" {RETRAIN_TARGET_SECONDS / 60:.0f} min: {retrain_line}",
    ]
    io_rows = []
    io_ok = True
    for stage in _stage_names(runs, NIGHT):
        ratios = _series(runs, stage, "ratio")
        first = next((r.stage(stage) for r in runs if r.stage(stage)), None)
        if first is None or not first.io_bound:
            continue
        met = all(v >= FLOOR_TARGET for _, v in ratios) if ratios else None
        io_ok = io_ok and bool(met)
        io_rows.append([stage, *[_fmt_ratio(dict(ratios).get(n)) for n in sizes], _verdict(met)])
    lines.append(
        f"- Every I/O-bound stage at >= {FLOOR_TARGET:.0%} of its floor: {_verdict(io_ok)}"
        " (floor/stage per size):"
    )
    lines += ["", *_md_table(["I/O-bound stage", *[f"{n:,}" for n in sizes], "target"], io_rows)]

    growth_rows = []
    for stage in [*_stage_names(runs, NIGHT), "night (sum)", *_stage_names(runs, RETRAINING)]:
        if stage == "night (sum)":
            pts = [(r.users, r.chain_seconds) for r in runs]
        else:
            pts = _series(runs, stage, "seconds")
        fit = linear_fit([p[0] for p in pts], [p[1] for p in pts])
        by = dict(pts)
        growth_rows.append(
            [
                stage,
                *[_fmt_s(by.get(n)) for n in sizes],
                "-" if fit is None else f"{fit['slope'] * 100_000:,.1f}",
                "-" if fit is None else f"{fit['r2']:.3f}",
                "-" if fit is None or fit["exponent"] is None else f"{fit['exponent']:.2f}",
                growth_verdict(fit),
            ]
        )
    lines += [
        "",
        "## Time against users",
        "",
        "Wall seconds per stage at each size; a least-squares line `s = a + b N` (b in"
        " seconds per 100,000 users, R^2) and the exponent k of `s ~ N^k` (1 = linear).",
        "",
        *_md_table(
            [
                "stage",
                *[f"{n:,} s" for n in sizes],
                "b (s / 100k users)",
                "R^2",
                "k",
                "growth",
            ],
            growth_rows,
        ),
        "",
        f"![time and memory per stage against users]({plot_path.name})",
        "",
        "## Peak memory against users",
        "",
        "Peak RSS (MB) of each stage's process. A stage that works in chunks should stay"
        " flat once the day is larger than one chunk (ingest: rows per batch; scoring and"
        " interventions: users per chunk; materialization: rows per COPY); the others are"
        " judged over every size.",
        "",
    ]
    mem_rows = []
    for stage in [*_stage_names(runs, NIGHT), *_stage_names(runs, RETRAINING)]:
        pts = _series(runs, stage, "peak_rss_mb")
        chunk = chunk_users(stage)
        verdict = memory_verdict([p[0] for p in pts], [p[1] for p in pts], chunk)
        by = dict(pts)
        mem_rows.append(
            [
                stage,
                *[_fmt_mb(by.get(n)) for n in sizes],
                "-" if chunk is None else f"{chunk:,} users",
                verdict["verdict"],
            ]
        )
    lines += _md_table(
        ["stage", *[f"{n:,} MB" for n in sizes], "chunk", "past the chunk"], mem_rows
    )
    for run in runs:
        lines += [
            "",
            f"## The night at {run.users:,} users",
            "",
            f"{run.tracks:,} tracks, {run.days} days simulated, training profile"
            f" `{run.training}`. Night chain {run.chain_seconds:,.1f} s"
            f" (+ {run.chain_startup_seconds:,.1f} s of process start-up and imports, which"
            f" an Airflow task pays too); retraining {run.retraining_seconds:,.1f} s.",
            "",
            *_md_table(HEADERS, stage_rows(run)),
        ]
        floors = [
            f"- {r.stage}: {r.floor}" for r in run.of_kind(NIGHT) if r.floor and run is runs[-1]
        ]
        if floors:
            lines += ["", "What each floor is:", "", *floors]
        skipped = [f"- {r.stage}: {r.detail.get('reason')}" for r in run.of_kind(SKIPPED)]
        if skipped:
            lines += ["", "Not run:", "", *skipped]
    lines += ["", "## Profile of the slowest stage", "", *_profile_section(runs)]
    lines += ["", "## Past one machine", "", *_past_one_machine(runs), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out
