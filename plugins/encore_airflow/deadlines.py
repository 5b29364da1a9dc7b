"""The nightly chain's deadline alert: when a day is due, and what happens when it is missed.

- :class:`RunDayEnd` is a deadline reference (registered by the Encore plugin) that
  evaluates to the end of the UTC day a run processes, whatever started the run: the ``day``
  of its conf when it names one (a manual run from the UI), else the end of its one-day data
  interval (scheduled runs, backfills, manual runs with a logical date). A run with
  neither (an asset-triggered run) gets no deadline.
- :func:`nightly_chain_deadline` is the alert of ``nightly_deadline``: due
  ``chain_due_hours`` (``config/deadlines.yaml``) after the run's day ends.
- :func:`record_missed_deadline` is its callback. The scheduler queues it on an executor
  (a Celery worker, or standalone's local executor) when the deadline passes and the run is
  not done; it logs an error naming the day and what is missing, and records the miss in
  ``monitoring.deadline_misses``. Airflow keeps its own record in its Deadlines view.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.definitions.deadline import BaseDeadlineReference, deadline_reference

if TYPE_CHECKING:
    from airflow.sdk.definitions.deadline import DeadlineAlert

log = logging.getLogger(__name__)

#: Import path of the callback (what the scheduler stores and the worker imports).
CALLBACK = "encore_airflow.deadlines.record_missed_deadline"


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def day_end(conf: Any, data_interval_start: Any, data_interval_end: Any) -> datetime | None:
    """The end of the UTC day a run processes, by :func:`encore_airflow.common.run_day`'s
    rule, or None for a run that names no day (no ``day`` in its conf, no data interval)."""
    from types import SimpleNamespace

    from encore_airflow.common import run_day
    from ml_tasks.utc_days import day_end as utc_day_end

    conf = conf if isinstance(conf, dict) else {}
    start, end = _as_utc(data_interval_start), _as_utc(data_interval_end)
    if not conf.get("day") and (start is None or end is None):
        return None
    day = run_day(
        {
            "dag_run": SimpleNamespace(conf=conf),
            "data_interval_start": start,
            "data_interval_end": end,
        }
    )
    return utc_day_end(day)


@deadline_reference()
class RunDayEnd(BaseDeadlineReference):
    """A deadline relative to the end of the UTC day the run processes."""

    required_kwargs = frozenset({"dag_id", "run_id"})

    def _evaluate_with(self, *, session: Any, **kwargs: Any) -> datetime | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        row = session.execute(
            select(DagRun.conf, DagRun.data_interval_start, DagRun.data_interval_end).where(
                DagRun.dag_id == kwargs["dag_id"], DagRun.run_id == kwargs["run_id"]
            )
        ).one_or_none()
        if row is None:
            return None
        try:
            return day_end(*row)
        except ValueError:  # a malformed 'day' or interval: the run fails on it; no deadline
            log.warning("run %s names no valid day; no deadline", kwargs["run_id"])
            return None


def nightly_chain_deadline() -> DeadlineAlert:
    """The deadline alert of ``nightly_deadline`` (reads ``config/deadlines.yaml``)."""
    from airflow.sdk.definitions.callback import SyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert

    from ml_tasks.deadlines import DeadlineConfig

    return DeadlineAlert(
        reference=RunDayEnd(),
        interval=DeadlineConfig.load().due_after_day_end,
        callback=SyncCallback(CALLBACK),
        name="nightly chain due",
    )


def run_of(context: dict[str, Any]) -> dict[str, Any]:
    """The facts of a deadline callback's context: run, type, day and deadline."""
    run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    end = day_end(run.get("conf"), run.get("data_interval_start"), run.get("data_interval_end"))
    return {
        "deadline_id": str(deadline["id"]) if deadline.get("id") else "",
        "dag_id": run.get("dag_id"),
        "run_id": run.get("dag_run_id") or run.get("run_id"),
        "run_type": run.get("run_type"),
        "day": (end - timedelta(days=1)).date() if end is not None else None,
        "deadline_time": _as_utc(deadline.get("deadline_time")),
    }


def record_missed_deadline(context: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
    """Deadline callback: log the miss and record it in ``monitoring.deadline_misses``."""
    from encore_airflow.hooks import WarehouseHook
    from ml_tasks.deadlines import record_miss

    facts = run_of(context or {})
    if not facts["deadline_id"] or facts["deadline_time"] is None:
        raise ValueError(f"deadline callback without a deadline in its context: {context!r}")
    stored = record_miss(**facts, dsn=WarehouseHook().get_dsn())
    log.error(
        "DEADLINE MISSED: the nightly chain of %s was due at %s and %s was still missing"
        " (%s run %s of %s)%s",
        facts["day"] or "an unknown day",
        facts["deadline_time"].isoformat(),
        stored["missing"],
        facts["run_type"],
        facts["run_id"],
        facts["dag_id"],
        "" if stored["new"] else "; already recorded",
    )
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in stored.items()}
