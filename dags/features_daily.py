"""
### features_daily

Computes one UTC day of features, validates them, and loads them into Feast's online store.

Runs when `ingest_daily` announces a day (`encore_raw_day`), on that day; the midnight-UTC
cron timetable stays for backfills and as a fallback (a scheduled run stands aside once
the day was announced, see `docs/operations.md`).

1. **wait_for_raw_day** waits (reschedule mode) until the day is ingested and its raw
   validation passed after the latest ingest, so the DAG can run alone for any day.
2. **detect_fraud** scores the day's user behaviour with an Isolation Forest and replaces
   the day's rows of `monitoring.stream_anomalies` (flagged plays leave track features).
3. **build** runs the feature SQL (`sql/features/`): the day's activity tables (plus any
   stale or missing activity day of the 30-day window), then `features.user_daily` and
   `features.track_daily`, each day swapped in atomically (`encore features --date D`
   runs the same code).
4. **validate** runs the GX suites on the day's feature partitions (row counts against the
   raw populations, ranges, nulls, window order); nothing downstream reads a failed day.
5. **materialize** applies the Feast repo (idempotent) and materializes exactly the day's
   interval into the online store, then emits the `encore_features_day` asset with the
   day (`retrain_nightly`, `score_daily` and `monitor_daily` run on it).

Re-running a day, or backfilling a range in any order, leaves the same state.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from encore_airflow.assets import CHAIN_ROOT, FEATURES_DAY, RAW_DAY
from encore_airflow.common import Tag, daily_dag, run_day
from encore_airflow.operators import MaterializeDayOperator, ValidateDayOperator
from encore_airflow.sensors import RawDayReadySensor

with daily_dag(
    "features_daily",
    description="Build, validate and materialize one UTC day of features",
    doc_md=__doc__,
    tags=[Tag.FEATURES, Tag.DAILY],
    upstream=[RAW_DAY],
    day_description="UTC day to build (manual runs without a data interval)",
) as dag:
    wait_for_raw_day = RawDayReadySensor(task_id="wait_for_raw_day", yield_to=CHAIN_ROOT)

    @task
    def detect_fraud() -> dict:
        """Flag the day's stream-fraud user-days (see ml_tasks.fraud.detect_day)."""
        from encore_airflow.hooks import WarehouseHook
        from ml_tasks.fraud import detect_day

        context = get_current_context()
        return detect_day(run_day(context), run_id=context["run_id"], dsn=WarehouseHook().get_dsn())

    @task
    def build(flags: dict) -> dict:
        """Build the run's feature day (see ml_tasks.features.build_day)."""
        from encore_airflow.hooks import WarehouseHook
        from ml_tasks.features import build_day

        context = get_current_context()
        result = build_day(
            run_day(context), run_id=context["run_id"], dsn=WarehouseHook().get_dsn()
        )
        return {**result.to_dict(), "fraud": flags}

    validate = ValidateDayOperator(task_id="validate", layer="features")
    materialize = MaterializeDayOperator(task_id="materialize", announce=FEATURES_DAY)

    flags = detect_fraud()
    wait_for_raw_day >> flags
    build(flags) >> validate >> materialize
