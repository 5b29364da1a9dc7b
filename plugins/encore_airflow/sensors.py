"""Sensors that wait on the landing area."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout

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
    """

    check: str = ""

    def __init__(self, *, check: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", timedelta(minutes=2))
        kwargs.setdefault("timeout", timedelta(hours=8))
        super().__init__(**kwargs)
        self.check = check or self.check

    def _state(self, context: Any) -> tuple[bool, str]:
        import importlib

        from encore_airflow.hooks import WarehouseHook

        module, name = self.check.split(":")
        func = getattr(importlib.import_module(module), name)
        return func(run_day(context), dsn=WarehouseHook().get_dsn())

    def poke(self, context: Any) -> bool:
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
