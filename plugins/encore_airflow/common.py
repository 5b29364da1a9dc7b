"""Team policy shared by every Encore DAG: owner, retries, tags, the run's day."""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum
from typing import Any

import pendulum

OWNER = "encore-data-platform"
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")

DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}


class Tag(StrEnum):
    """The only tags a DAG may carry (checked by tests over the DagBag)."""

    INGEST = "ingest"
    FEATURES = "features"
    TRAINING = "training"
    SCORING = "scoring"
    MONITORING = "monitoring"
    DAILY = "daily"


class RunDayError(ValueError):
    """The run has no usable day (e.g. a manual run without a data interval or a 'day')."""


def run_day(context: dict[str, Any]) -> date:
    """The UTC day a run works on.

    A ``day`` param (manual runs from the UI) wins; otherwise the run's data interval,
    which must be exactly one UTC day.
    """
    params = context.get("params") or {}
    dag_run = context.get("dag_run")
    conf = (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}
    explicit = params.get("day") or conf.get("day")
    if explicit:
        try:
            return date.fromisoformat(str(explicit))
        except ValueError as exc:
            raise RunDayError(f"'day' must be YYYY-MM-DD, got {explicit!r}") from exc
    start = context.get("data_interval_start")
    end = context.get("data_interval_end")
    if start is None or end is None:
        raise RunDayError(
            "this run has no data interval (a manual run without a logical date): "
            "trigger it with the 'day' parameter (YYYY-MM-DD), or from the schedule or a backfill"
        )
    start_utc = pendulum.instance(start).in_timezone("UTC")
    end_utc = pendulum.instance(end).in_timezone("UTC")
    if end_utc - start_utc != timedelta(days=1) or start_utc.time() != pendulum.time(0, 0):
        raise RunDayError(
            f"data interval {start_utc.isoformat()} .. {end_utc.isoformat()} is not one UTC day"
        )
    return start_utc.date()


def daily_dag(
    dag_id: str,
    *,
    description: str,
    doc_md: str | None,
    tags: list[Tag],
    max_active_runs: int = 4,
    dagrun_timeout: timedelta = timedelta(hours=8),
    day_description: str = "UTC day to process (manual runs without a data interval)",
):
    """A DAG that processes one UTC day per run, with the team's schedule and policy.

    Runs cover ``[D, D+1)`` (``CronDataIntervalTimetable`` at midnight UTC, made at D+1);
    a manual run may name its day with the ``day`` parameter (see :func:`run_day`).
    """
    from airflow.sdk import DAG, Param
    from airflow.timetables.interval import CronDataIntervalTimetable

    return DAG(
        dag_id=dag_id,
        description=description,
        doc_md=doc_md,
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=max_active_runs,
        default_args=DEFAULT_ARGS,
        tags=[str(t) for t in tags],
        params={
            "day": Param(None, type=["null", "string"], format="date", description=day_description)
        },
        dagrun_timeout=dagrun_timeout,
    )
