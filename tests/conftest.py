"""Test fixtures: a real PostgreSQL per test, an isolated Airflow home, tmp landing roots.

Warehouse: the server at 127.0.0.1:5432 when it answers (``ENCORE_TEST_ADMIN_DSN``
overrides), otherwise an embedded ``pgserver`` in a temporary folder. Each test gets its
own fresh database, cloned from a template that was migrated once per test run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

# Airflow reads its configuration at import time: set it up before anything imports airflow.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="encore-tests-"))
_AIRFLOW_HOME = _SESSION_TMP / "airflow"
_AIRFLOW_HOME.mkdir()
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "GX_ANALYTICS_ENABLED": "False",
        "ENCORE_ENV": "ci",
        "ENCORE_ARTIFACTS": str(_SESSION_TMP / "artifacts"),
        "ENCORE_LANDING_ROOT": str(_SESSION_TMP / "landing"),
    }
)
os.environ.pop("AIRFLOW_CONN_WAREHOUSE", None)
for extra in (ROOT / "plugins", TESTS):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from ml_tasks import warehouse  # noqa: E402

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[str]:
    """An admin DSN on a real PostgreSQL server."""
    candidate = os.environ.get("ENCORE_TEST_ADMIN_DSN", LOCAL_SERVER)
    try:
        with psycopg.connect(candidate, connect_timeout=3):
            pass
        yield candidate
        return
    except psycopg.OperationalError:
        pass
    import pgserver

    pgdata = _SESSION_TMP / "pg"
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    yield server.get_uri("postgres")
    server.cleanup()


@pytest.fixture(scope="session")
def template_db(pg_admin: str) -> Iterator[str]:
    """A database migrated once per test run, cloned for each test."""
    name = f"encore_tpl_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with warehouse.connect(warehouse.with_database(pg_admin, name), autocommit=True) as conn:
        warehouse.migrate(conn)
    yield name
    _drop(pg_admin, name)


def _drop(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def warehouse_dsn(
    pg_admin: str, template_db: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh, migrated database for this test; ``WAREHOUSE_DSN`` points at it."""
    name = f"encore_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    dsn = warehouse.with_database(pg_admin, name)
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    yield dsn
    _drop(pg_admin, name)


@dataclass(frozen=True)
class World:
    """A small simulated world, ingested and featurized, kept as a template database."""

    template: str
    landing: Path
    truth: Path
    start: date
    days: int

    @property
    def last_day(self) -> date:
        return self.start + timedelta(days=self.days - 1)


WORLD_START = date(2026, 10, 1)
WORLD_DAYS = 10


@pytest.fixture(scope="session")
def world(pg_admin: str, template_db: str, tmp_path_factory) -> Iterator[World]:
    """800 users, 200 tracks, 10 days: ingested and with features built for every day."""
    from ml_tasks import features
    from ml_tasks.ingest import ingest_day
    from ml_tasks.simulate import simulate_world

    base = tmp_path_factory.mktemp("world")
    landing = base / "landing"
    simulate_world(
        landing,
        users=800,
        tracks=200,
        start=WORLD_START,
        days=WORLD_DAYS,
        seed=11,
        preview_share=0.0,
    )
    name = f"encore_world_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    dsn = warehouse.with_database(pg_admin, name)
    for offset in range(WORLD_DAYS):
        day = WORLD_START + timedelta(days=offset)
        ingest_day(day, run_id="world", dsn=dsn, landing_root=landing)
    for offset in range(WORLD_DAYS):
        features.build_day(WORLD_START + timedelta(days=offset), run_id="world", dsn=dsn)
    yield World(name, landing, Path(f"{landing}_truth"), WORLD_START, WORLD_DAYS)
    _drop(pg_admin, name)


@pytest.fixture
def world_dsn(pg_admin: str, world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private copy of the simulated world's database; ``WAREHOUSE_DSN`` points at it."""
    name = f"encore_w_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(world.template)
            )
        )
    dsn = warehouse.with_database(pg_admin, name)
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    yield dsn
    _drop(pg_admin, name)


@pytest.fixture(scope="session")
def churn_world(pg_admin: str, template_db: str, tmp_path_factory):
    """A longer world (800 users, 56 days) for churn labels, training and scoring."""
    from churn_world import build_churn_world

    world = build_churn_world(pg_admin, template_db, tmp_path_factory.mktemp("churnw"))
    yield world
    _drop(pg_admin, world.template)


@pytest.fixture(scope="session")
def scored(pg_admin: str, churn_world, tmp_path_factory):
    """A copy of the churn world with a champion trained on its last day and that day scored.

    Tests may add rows (other days, other runs) but must not change the scored day.
    """
    from churn_world import drop, scored_copy

    world = scored_copy(pg_admin, churn_world, tmp_path_factory.mktemp("scored-artifacts"))
    yield world
    drop(pg_admin, world["name"])


@pytest.fixture
def empty_db(pg_admin: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database with no migrations applied."""
    name = f"encore_e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = warehouse.with_database(pg_admin, name)
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    yield dsn
    _drop(pg_admin, name)


@pytest.fixture
def landing_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "landing"
    root.mkdir()
    monkeypatch.setenv("ENCORE_LANDING_ROOT", str(root))
    return root


@pytest.fixture
def browser() -> Iterator:
    """Headless Chromium (see ``browser_session``)."""
    from browser_session import chromium

    with chromium() as driver:
        yield driver


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's metadata DB (SQLite), migrated once per test run."""
    env = dict(os.environ)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout}\n{result.stderr}")
    return _AIRFLOW_HOME


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)
