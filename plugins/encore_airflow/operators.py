"""Operators the DAGs share: one UTC day of validation or materialization.

Each resolves the run's day (:func:`encore_airflow.common.run_day`) and the warehouse
(:class:`encore_airflow.hooks.WarehouseHook`), calls the ``ml_tasks`` function that does
the work, and, when given ``announce``, attaches the day to that asset's event (declare
the asset in ``outlets`` too). Heavy imports happen in ``execute``, never at parse time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from airflow.sdk import Asset, BaseOperator

from encore_airflow.assets import announce as announce_day
from encore_airflow.common import run_day


class EncoreDayOperator(BaseOperator):
    """Base: ``work(day, run_id, dsn)`` for the run's day, then announce the day."""

    def __init__(self, *, announce: Asset | None = None, **kwargs: Any) -> None:
        if announce is not None:
            outlets = list(kwargs.pop("outlets", None) or [])
            if announce not in outlets:
                outlets.append(announce)
            kwargs["outlets"] = outlets
        super().__init__(**kwargs)
        self.announce = announce

    def work(self, day: date, run_id: str, dsn: str) -> dict:
        raise NotImplementedError

    def execute(self, context: Any) -> dict:
        from encore_airflow.hooks import WarehouseHook

        day = run_day(context)
        result = self.work(day, context["run_id"], WarehouseHook().get_dsn())
        if self.announce is not None:
            announce_day(context, self.announce, day)
        return {"day": day.isoformat(), **result}


class ValidateDayOperator(EncoreDayOperator):
    """Great Expectations suites on the day's partitions: ``raw`` (the landing contract's
    suites) or ``features``. A failed expectation fails the task at once with the readable
    summary (the data is wrong: a retry cannot help)."""

    template_fields: Sequence[str] = ()

    def __init__(self, *, layer: str, **kwargs: Any) -> None:
        if layer not in ("raw", "features"):
            raise ValueError(f"layer must be 'raw' or 'features', got {layer!r}")
        super().__init__(**kwargs)
        self.layer = layer

    def work(self, day: date, run_id: str, dsn: str) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from ml_tasks.validation import ValidationFailed

        try:
            if self.layer == "raw":
                from ml_tasks.validation import validate_day

                report = validate_day(day, run_id=run_id, dsn=dsn)
                return {"success": report.success}
            from ml_tasks.feature_validation import validate_features

            report = validate_features(day, run_id=run_id, dsn=dsn)
            return {"success": report.success, "validated": [r.suite for r in report.reports]}
        except ValidationFailed as exc:
            raise AirflowFailException(str(exc)) from exc


class MaterializeDayOperator(EncoreDayOperator):
    """Apply the Feast repository, then load exactly the day into the online store."""

    def work(self, day: date, run_id: str, dsn: str) -> dict:
        from ml_tasks import feature_store

        feature_store.apply(dsn=dsn)
        return {"materialized": feature_store.materialize_day(day, dsn=dsn)}
