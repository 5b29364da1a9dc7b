"""Team policy shared by every Encore DAG: owner, retries, tags, schedule, the run's day."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import pendulum

if TYPE_CHECKING:
    from airflow.sdk import Asset
    from airflow.sdk.definitions.deadline import DeadlineAlert

log = logging.getLogger("airflow.task")

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


def run_day(context: Mapping[str, Any]) -> date:
    """The UTC day a run works on.

    In order: a ``day`` param or conf key (manual runs from the UI); else the run's data
    interval, which must be exactly one UTC day (scheduled runs, backfills, manual runs
    with a logical date); else, for an asset-triggered run (no data interval), the day its
    triggering asset events announce (see :func:`day_from_asset_events`).
    """
    params = context.get("params") or {}
    dag_run = context.get("dag_run")
    conf = (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}
    explicit = params.get("day") or conf.get("day")
    if explicit:
        return _parse_day(explicit, "'day'")
    start = context.get("data_interval_start")
    end = context.get("data_interval_end")
    if start is None or end is None:
        events = context.get("triggering_asset_events")
        if events:
            return day_from_asset_events(events, dag_id=getattr(dag_run, "dag_id", None))
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


def _parse_day(value: Any, what: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise RunDayError(f"{what} must be YYYY-MM-DD, got {value!r}") from exc


def day_from_asset_events(
    events: Mapping[Any, Iterable[Any]], *, dag_id: str | None = None
) -> date:
    """The day an asset-triggered run works on: the latest day every triggering asset announced.

    ``events`` maps each triggering asset to its events (Airflow's
    ``triggering_asset_events``); each event names its day in ``extra["day"]``.

    One run can consume several events with different days: Airflow batches into one run
    every event queued since the DAG's previous asset-triggered run (e.g. upstream days that
    finished while this DAG was at ``max_active_runs`` during an upstream backfill), and in
    an AND schedule an asset that waited for its partner can carry an older day than the
    partner's. A run processes one day, so it takes the **latest day announced by every
    asset that announced a day**: the newest complete set of inputs, which is what a
    nightly chain must keep current. The other days are not silently dropped: each is
    logged with the command that runs it alone (an upstream backfill calls for a
    downstream backfill of the same range anyway). The choice depends only on the run's
    events, so every task and every retry of the run picks the same day.

    Raises :class:`RunDayError` when no event names a day (e.g. an event created by hand
    without ``extra``), when a day is malformed, or when the assets share no day (the
    inputs would be from different days).
    """
    from encore_airflow.assets import DAY_KEY, event_day

    days: dict[str, set[date]] = {}
    undated: list[str] = []
    for asset, asset_events in events.items():
        name = str(getattr(asset, "name", asset))
        found = {
            _parse_day(value, f"{name} event extra '{DAY_KEY}'")
            for value in map(event_day, asset_events)
            if value
        }
        if found:
            days[name] = found
        else:
            undated.append(name)
    if not days:
        raise RunDayError(
            f"none of the triggering asset events ({', '.join(undated) or 'none'}) names a "
            f"day in extra['{DAY_KEY}']: trigger the run with the 'day' parameter (YYYY-MM-DD)"
        )
    if undated:
        log.warning("asset events of %s name no day; ignored", ", ".join(sorted(undated)))
    common = set.intersection(*days.values())
    if not common:
        announced = "; ".join(
            f"{name}: {', '.join(d.isoformat() for d in sorted(ds))}"
            for name, ds in sorted(days.items())
        )
        raise RunDayError(
            f"the triggering asset events announce no common day ({announced}): "
            "run the day that is complete with the 'day' parameter (YYYY-MM-DD)"
        )
    chosen = max(common)
    for other in sorted(set.union(*days.values()) - {chosen}):
        log.warning(
            "this run processes %s; its asset events also announced %s, which needs a run "
            'of its own: airflow dags trigger %s --conf \'{"day": "%s"}\'',
            chosen.isoformat(),
            other.isoformat(),
            dag_id or "<dag_id>",
            other.isoformat(),
        )
    return chosen


def daily_dag(
    dag_id: str,
    *,
    description: str,
    doc_md: str | None,
    tags: list[Tag],
    upstream: Sequence[Asset] = (),
    max_active_runs: int = 4,
    dagrun_timeout: timedelta = timedelta(hours=8),
    day_description: str = "UTC day to process (manual runs without a data interval)",
    deadline: DeadlineAlert | None = None,
):
    """A DAG that processes one UTC day per run, with the team's schedule and policy.

    Runs cover ``[D, D+1)`` (``CronDataIntervalTimetable`` at midnight UTC, made at D+1);
    a manual run may name its day with the ``day`` parameter (see :func:`run_day`).

    With ``upstream`` assets the DAG is also data-aware
    (``AssetOrTimeSchedule``): it runs when every one of them has a new event, on the day
    the events announce, and keeps the cron timetable, so scheduled runs, manual runs with
    a logical date and backfills still cover one UTC day each.

    ``deadline`` is an Airflow deadline alert on each run (see
    :mod:`encore_airflow.deadlines`).
    """
    from airflow.sdk import DAG, AssetOrTimeSchedule, CronDataIntervalTimetable, Param

    cron = CronDataIntervalTimetable("0 0 * * *", timezone="UTC")
    schedule = AssetOrTimeSchedule(timetable=cron, assets=list(upstream)) if upstream else cron
    return DAG(
        dag_id=dag_id,
        description=description,
        doc_md=doc_md,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=max_active_runs,
        default_args=DEFAULT_ARGS,
        tags=[str(t) for t in tags],
        params={
            "day": Param(None, type=["null", "string"], format="date", description=day_description)
        },
        dagrun_timeout=dagrun_timeout,
        deadline=deadline,
    )
