"""The one place Encore reads its environment.

Every other module asks :func:`get_settings` for configuration; nothing else touches
``os.environ``. Settings are read afresh on each call (cheap), so tests and the CLI can
change the environment between calls.

Environment variables:

``WAREHOUSE_DSN``
    libpq connection string or URL of the warehouse. Unset: an embedded PostgreSQL
    (the ``pgserver`` package) with its data under ``$ENCORE_HOME/var/pgdata``.
``ENCORE_LANDING_ROOT``
    Root of the landing area (see DATA_CONTRACT.md). Default ``$ENCORE_HOME/var/landing``.
``ENCORE_ARTIFACTS``
    Model files, reports and Data Docs. Default ``$ENCORE_HOME/var/artifacts``.
``ENCORE_ENV``
    ``local`` (default), ``ci``, ``staging`` or ``prod``: selects defaults, never code paths.
``ENCORE_HOME``
    Project root (holds ``sql/`` and ``var/``). Default: the checkout this package lives in.
``ENCORE_CONFIG_DIR``
    The versioned YAML configuration (models, gates, interventions, monitoring).
    Default ``$ENCORE_HOME/config``: point it at a copy to change a setting without
    touching the checkout.
``ENCORE_INGEST_CHUNK_ROWS``
    Rows per batch while ingesting (bounds memory). Default 100000.
``ENCORE_QUARANTINE_TOLERANCE``
    Largest share of a day's rows that may be quarantined before validation fails. Default 0.05.
``ARROW_DEFAULT_MEMORY_POOL``, ``NUMPY_MADVISE_HUGEPAGE``
    pyarrow's and numpy's own switches. Unset, ingestion takes Arrow buffers from pyarrow's
    jemalloc pool and numpy arrays without transparent huge pages (:mod:`ml_tasks.allocation`);
    set, the library's choice is left alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent

VALID_ENVS = ("local", "ci", "staging", "prod")


class SettingsError(ValueError):
    """A setting in the environment has an unusable value."""


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one process."""

    home: Path
    warehouse_dsn: str | None
    landing_root: Path
    artifacts: Path
    env: str
    ingest_chunk_rows: int
    quarantine_tolerance: float
    score_chunk_users: int = 100_000
    config_dir_override: Path | None = None
    #: ARROW_DEFAULT_MEMORY_POOL and NUMPY_MADVISE_HUGEPAGE as set (None: unset)
    arrow_memory_pool: str | None = None
    numpy_madvise_hugepage: str | None = None

    @property
    def var_dir(self) -> Path:
        """Local state: embedded database, Airflow home, default landing and artifacts."""
        return self.home / "var"

    @property
    def embedded_pgdata(self) -> Path:
        return self.var_dir / "pgdata"

    @property
    def sql_dir(self) -> Path:
        return self.home / "sql"

    @property
    def migrations_dir(self) -> Path:
        return self.sql_dir / "migrations"

    @property
    def config_dir(self) -> Path:
        """Versioned YAML configuration (models, gates, interventions): ``config/``, or
        ``ENCORE_CONFIG_DIR``."""
        return self.config_dir_override or self.home / "config"

    @property
    def uses_embedded_warehouse(self) -> bool:
        return not self.warehouse_dsn


def _int_env(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float_env(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def get_settings() -> Settings:
    """Read the environment into a :class:`Settings`."""
    home = Path(os.environ.get("ENCORE_HOME") or _PACKAGE_ROOT).resolve()
    env = os.environ.get("ENCORE_ENV", "local") or "local"
    if env not in VALID_ENVS:
        raise SettingsError(f"ENCORE_ENV must be one of {', '.join(VALID_ENVS)}, got {env!r}")
    var = home / "var"
    landing = Path(os.environ.get("ENCORE_LANDING_ROOT") or var / "landing")
    artifacts = Path(os.environ.get("ENCORE_ARTIFACTS") or var / "artifacts")
    config_dir = os.environ.get("ENCORE_CONFIG_DIR") or None
    if config_dir is not None and not Path(config_dir).is_dir():
        raise SettingsError(f"ENCORE_CONFIG_DIR {config_dir!r} is not a directory")
    return Settings(
        home=home,
        warehouse_dsn=os.environ.get("WAREHOUSE_DSN") or None,
        landing_root=landing.resolve(),
        artifacts=artifacts.resolve(),
        env=env,
        ingest_chunk_rows=_int_env("ENCORE_INGEST_CHUNK_ROWS", 100_000, minimum=1000),
        quarantine_tolerance=_float_env("ENCORE_QUARANTINE_TOLERANCE", 0.05, 0.0, 1.0),
        score_chunk_users=_int_env("ENCORE_SCORE_CHUNK_USERS", 100_000, minimum=100),
        config_dir_override=Path(config_dir).resolve() if config_dir else None,
        arrow_memory_pool=os.environ.get("ARROW_DEFAULT_MEMORY_POOL") or None,
        numpy_madvise_hugepage=os.environ.get("NUMPY_MADVISE_HUGEPAGE") or None,
    )
