"""Sensors that wait on the landing area."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from encore_airflow.assets import announced
from encore_airflow.common import run_day


class LandingDaySensor(BaseSensorOperator):
    """Waits until every dataset folder of the run's day holds a ``_SUCCESS`` marker.

    On timeout the failure names the folders still missing their marker.
    """

    def __init__(self, *, landing_root: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", timedelta(minutes=5))
        kwargs.setdefault("timeout", timedelta(hours=6))
        super().__init__(**kwargs)
        self.landing_root = landing_root

    def _missing(self, context: Any) -> list[str]:
        from pathlib import Path

        from ml_tasks.ingest import missing_markers

        root = Path(self.landing_root) if self.landing_root else None
        return [str(p) for p in missing_markers(run_day(context), root)]

    def poke(self, context: Any) -> bool:
        missing = self._missing(context)
        if missing:
            self.log.info("waiting for %d folder(s): %s", len(missing), ", ".join(missing))
        return not missing

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            missing = self._missing(context)
            raise AirflowSensorTimeout(
                f"landing day {run_day(context)} still incomplete after {self.timeout}s: "
                f"no _SUCCESS in {', '.join(missing) or '(now complete)'}"
            ) from exc


class DayReadySensor(BaseSensorOperator):
    """Waits until a warehouse check says the run's day is ready for this DAG.

    ``check`` names a function ``(day, dsn) -> (ready, why_not)`` in ``ml_tasks``. Lets a
    downstream DAG run alone for a day (a backfill, a manual run) without racing the DAG
    upstream of it. On timeout the failure says what is missing.

    ``yield_to`` (an asset, normally :data:`encore_airflow.assets.CHAIN_ROOT`) makes a
    *scheduled* (cron) run of an asset-scheduled DAG stand aside: once that asset carries an
    event announcing the run's day, the upstream chain is running that day and this DAG's
    asset-triggered run will process it, so the sensor skips (and with it the rest of the
    run) instead of processing the day a second time. Manual, backfill and asset-triggered
    runs never stand aside.
    """

    check: str = ""

    def __init__(
        self, *, check: str | None = None, yield_to: Asset | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", timedelta(minutes=2))
        kwargs.setdefault("timeout", timedelta(hours=8))
        if yield_to is not None:
            kwargs["inlets"] = [*kwargs.get("inlets", []), yield_to]
        super().__init__(**kwargs)
        self.check = check or self.check
        self.yield_to = yield_to

    def _state(self, context: Any) -> tuple[bool, str]:
        import importlib

        from encore_airflow.hooks import WarehouseHook

        module, name = self.check.split(":")
        func = getattr(importlib.import_module(module), name)
        return func(run_day(context), dsn=WarehouseHook().get_dsn())

    def _stand_aside(self, context: Any) -> str | None:
        """Why this run leaves its day to the asset-triggered run, or None to process it."""
        if self.yield_to is None:
            return None
        run_type = getattr(context.get("dag_run"), "run_type", None)
        if str(getattr(run_type, "value", run_type)) != "scheduled":
            return None
        day = run_day(context)
        since = pendulum.datetime(day.year, day.month, day.day, tz="UTC")
        if not announced(context["inlet_events"][self.yield_to].after(since), day):
            return None
        return (
            f"{self.yield_to.name} announced {day}: the asset-triggered run of this DAG "
            "processes that day, so this scheduled run stands aside"
        )

    def poke(self, context: Any) -> bool:
        why_aside = self._stand_aside(context)
        if why_aside:
            raise AirflowSkipException(why_aside)
        ready, why = self._state(context)
        if not ready:
            self.log.info("waiting: %s", why)
        return ready

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            _, why = self._state(context)
            raise AirflowSensorTimeout(
                f"day {run_day(context)} not ready after {self.timeout}s: {why or 'now ready'}"
            ) from exc


class RawDayReadySensor(DayReadySensor):
    """Waits until the day is ingested and passed validation after its latest ingest."""

    check = "ml_tasks.features:raw_day_ready"


class FeatureDayReadySensor(DayReadySensor):
    """Waits until the day's features are built and passed validation after that build."""

    check = "ml_tasks.features:feature_day_ready"
