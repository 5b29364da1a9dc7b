"""A longer simulated world for churn tests: long enough for dormancy (30-day silences) and
30-day labels, small enough to build in about a minute.

Used through the ``churn_world`` fixture of tests/test_churn.py and tests/test_labels.py.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from ml_tasks import benchmark, warehouse

CHURN_WORLD_START = date(2026, 1, 5)
CHURN_WORLD_DAYS = 56
CHURN_WORLD_USERS = 800


@dataclass(frozen=True)
class ChurnWorld:
    template: str
    truth: Path
    start: date
    days: int
    build_seconds: float

    @property
    def last_day(self) -> date:
        return self.start + timedelta(days=self.days - 1)


def build_churn_world(pg_admin: str, template_db: str, base: Path) -> ChurnWorld:
    """Simulate, ingest and featurize the world into a new template database."""
    from ml_tasks import features
    from ml_tasks.ingest import ingest_day
    from ml_tasks.simulate import simulate_world

    started = time.perf_counter()
    landing = base / "landing"
    simulate_world(
        landing,
        users=CHURN_WORLD_USERS,
        tracks=150,
        start=CHURN_WORLD_START,
        days=CHURN_WORLD_DAYS,
        seed=23,
        preview_share=0.0,
        bad_rate=0.0,
    )
    name = f"encore_churnw_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    dsn = warehouse.with_database(pg_admin, name)
    for offset in range(CHURN_WORLD_DAYS):
        ingest_day(
            CHURN_WORLD_START + timedelta(days=offset), run_id="w", dsn=dsn, landing_root=landing
        )
    for offset in range(CHURN_WORLD_DAYS):
        features.build_day(CHURN_WORLD_START + timedelta(days=offset), run_id="w", dsn=dsn)
    return ChurnWorld(
        name,
        Path(f"{landing}_truth"),
        CHURN_WORLD_START,
        CHURN_WORLD_DAYS,
        time.perf_counter() - started,
    )


def clone(pg_admin: str, template: str) -> tuple[str, str]:
    """A private copy of a template database: (name, dsn)."""
    name = f"encore_cw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return name, warehouse.with_database(pg_admin, name)


def drop(pg_admin: str, name: str) -> None:
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


#: Small models and the benchmark's short windows: the 56-day world can only know 7-day
#: labels (shared with ``bench/scoring_bench.py``).
SMALL_CHURN = benchmark.SMALL_CHURN
#: Popularity for the same world: LightGBM alone, small.
SMALL_POPULARITY = {
    "families": ["lightgbm"],
    "blend": False,
    "lightgbm": {"n_estimators": 60},
    "gate": {"require_validated_features": False},
}


def small_churn_config(**gate):
    """:data:`SMALL_CHURN` over the shipped configuration (``gate`` overrides added)."""
    from ml_tasks.churn import ChurnConfig

    sections = {**SMALL_CHURN, "gate": {**SMALL_CHURN["gate"], **gate}}
    return ChurnConfig.load().with_overrides(**sections)


def small_config_dir(dest: Path) -> Path:
    """A copy of ``config/`` with :data:`SMALL_CHURN` and :data:`SMALL_POPULARITY` written
    in, for runs that read their configuration themselves (``ENCORE_CONFIG_DIR``)."""
    import shutil

    import yaml

    from ml_tasks.settings import get_settings

    shutil.copytree(get_settings().config_dir, dest)
    for name, overrides in (("churn.yaml", SMALL_CHURN), ("popularity.yaml", SMALL_POPULARITY)):
        path = dest / name
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for key, value in overrides.items():
            if isinstance(value, dict):
                doc[key] = {**doc.get(key, {}), **value}
            else:
                doc[key] = value
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return dest


def scored_copy(pg_admin: str, world: ChurnWorld, artifacts: Path) -> dict:
    """Clone the churn world, train a champion on its last day, validate and score that day.

    Returns ``{name, dsn, day, trained, result, landing}``; drop ``name`` when done.
    """
    from ml_tasks import feature_validation, scoring
    from ml_tasks.churn import train_churn

    name, dsn = clone(pg_admin, world.template)
    day = world.last_day
    trained = train_churn(
        day, run_id="train", dsn=dsn, artifacts=artifacts, config=small_churn_config()
    )
    assert trained["status"] == "champion", trained["gate"]
    feature_validation.validate_features(day, run_id="fv", dsn=dsn, artifacts=artifacts)
    result = scoring.score_day(day, run_id="score-1", dsn=dsn)
    landing = Path(str(world.truth).removesuffix("_truth"))
    return {
        "name": name,
        "dsn": dsn,
        "day": day,
        "trained": trained,
        "result": result,
        "landing": landing,
    }
