"""The nightly chain's deadline: when a day is due, what of it is done, and the misses.

Day D's chain is **done** when ``score_daily`` has handled D for churn and for popularity
(a ``scores.scoring_runs`` row of D for each family, scored or skipped for want of a
champion) and ``monitor_daily`` has written D's report (``monitoring.reports``). It is
**due** ``chain_due_hours`` after D ends (``config/deadlines.yaml``): by default at
06:00 UTC on D + 1.

The ``nightly_deadline`` DAG waits for :func:`chain_day_complete`; an Airflow deadline on
its run fires when the day is due and not done, and its callback records the miss here
(:func:`record_miss`, ``monitoring.deadline_misses``). Nothing in this module imports
Airflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ml_tasks.utc_days import day_end
from ml_tasks.yaml_config import load_flat

log = logging.getLogger(__name__)

#: Model families ``score_daily`` handles every day (one ``scores.scoring_runs`` row each).
SCORED_FAMILIES = ("churn", "popularity")


@dataclass(frozen=True)
class DeadlineConfig:
    """When the nightly chain is due (``config/deadlines.yaml``)."""

    chain_due_hours: float = 6.0
    watch_hours: float = 20.0

    @classmethod
    def load(cls, path: Path | None = None) -> DeadlineConfig:
        config = load_flat(cls, "deadlines.yaml", path)
        if not 0 < config.chain_due_hours < config.watch_hours <= 47:
            raise ValueError(
                "deadlines.yaml: need 0 < chain_due_hours < watch_hours <= 47 "
                f"(got {config.chain_due_hours} and {config.watch_hours})"
            )
        return config

    @property
    def due_after_day_end(self) -> timedelta:
        """How long after its day ends a day's chain is due."""
        return timedelta(hours=self.chain_due_hours)

    def due(self, day: date) -> datetime:
        """When ``day``'s chain is due (UTC)."""
        return day_end(day) + self.due_after_day_end


def chain_missing(day: date, dsn: str | None = None) -> list[str]:
    """What of ``day``'s chain is not done yet (empty when it is done)."""
    from ml_tasks import warehouse

    with warehouse.connect(warehouse.ensure_migrated(dsn)) as conn:
        scored = {
            name
            for (name,) in conn.execute(
                "SELECT DISTINCT model_name FROM scores.scoring_runs"
                " WHERE dt = %s AND model_name = ANY(%s)",
                (day, list(SCORED_FAMILIES)),
            ).fetchall()
        }
        reported = conn.execute("SELECT 1 FROM monitoring.reports WHERE dt = %s", (day,)).fetchone()
    missing = [f"{name} scores" for name in SCORED_FAMILIES if name not in scored]
    if reported is None:
        missing.append("the monitoring report")
    return missing


def chain_day_complete(day: date, dsn: str | None = None) -> tuple[bool, str]:
    """Whether ``day``'s nightly chain is done. Returns (done, what is missing)."""
    missing = chain_missing(day, dsn)
    if missing:
        return False, f"{day}: no {', no '.join(missing)} yet"
    return True, ""


def record_miss(
    *,
    deadline_id: str,
    dag_id: str,
    run_id: str,
    run_type: str | None,
    day: date | None,
    deadline_time: datetime,
    dsn: str | None = None,
) -> dict[str, Any]:
    """Record a missed deadline in ``monitoring.deadline_misses`` (once per deadline).

    Returns the row as stored, with ``new`` telling whether this call wrote it: Airflow may
    deliver a callback twice (a worker lost mid-callback), and the second delivery changes
    nothing.
    """
    from ml_tasks import warehouse

    target = warehouse.ensure_migrated(dsn)
    missing = chain_missing(day, target) if day is not None else []
    what = ", ".join(missing) if missing else ("nothing" if day is not None else "unknown")
    with warehouse.connect(target) as conn, conn.transaction():
        inserted = conn.execute(
            "INSERT INTO monitoring.deadline_misses (deadline_id, dag_id, run_id, run_type,"
            " dt, deadline_time, missing, recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (deadline_id) DO NOTHING RETURNING 1",
            (
                deadline_id,
                dag_id,
                run_id,
                run_type,
                day,
                deadline_time,
                what,
                datetime.now(UTC),
            ),
        ).fetchone()
        row = conn.execute(
            "SELECT deadline_id, dag_id, run_id, run_type, dt, deadline_time, missing,"
            " recorded_at FROM monitoring.deadline_misses WHERE deadline_id = %s",
            (deadline_id,),
        ).fetchone()
    keys = ("deadline_id", "dag_id", "run_id", "run_type", "day", "deadline_time", "missing")
    stored = dict(zip((*keys, "recorded_at"), row, strict=True))
    stored["new"] = inserted is not None
    return stored


def chain_status(
    day: date,
    dsn: str | None = None,
    *,
    config: DeadlineConfig | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """``day``'s chain as ``encore deadline`` shows it: due, done, overdue, missing, misses."""
    from ml_tasks import warehouse

    config = config or DeadlineConfig.load()
    target = warehouse.ensure_migrated(dsn)
    missing = chain_missing(day, target)
    due = config.due(day)
    with warehouse.connect(target) as conn:
        misses = conn.execute(
            "SELECT dag_id, run_id, run_type, deadline_time, missing, recorded_at"
            " FROM monitoring.deadline_misses WHERE dt = %s ORDER BY deadline_time, run_id",
            (day,),
        ).fetchall()
    keys = ("dag_id", "run_id", "run_type", "deadline_time", "missing", "recorded_at")
    return {
        "day": day.isoformat(),
        "due": due.isoformat(),
        "done": not missing,
        "overdue": bool(missing) and (now or datetime.now(UTC)) >= due,
        "missing": missing,
        "misses": [dict(zip(keys, row, strict=True)) for row in misses],
    }
