"""
### ingest_daily

Loads one UTC day of landing data into the warehouse, then validates it.

1. **wait_for_landing** waits (reschedule mode) for a `_SUCCESS` marker in every dataset
   folder of the day; on timeout it names the folders still missing one.
2. **ingest** checks every row against the landing contract, COPYs accepted rows into
   `raw.*`, rejected rows with their reasons into `quarantine.rejected_rows`, and swaps the
   day in atomically (`encore ingest --date D` runs the same code).
3. **validate** runs the Great Expectations suites on the day's partitions and emits the
   `encore_raw_day` asset with `{"day": "YYYY-MM-DD"}`: `features_daily` and
   `audio_features` run on it for that day.

Each run covers its data interval, one UTC day (`CronDataIntervalTimetable` at midnight
UTC: the head of the chain runs on time only). A manual run without a logical date takes
the day from the `day` parameter. Re-running a day, or backfilling a range, leaves the same
state, and announces each day again downstream.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from encore_airflow.assets import RAW_DAY
from encore_airflow.common import Tag, daily_dag, run_day
from encore_airflow.operators import ValidateDayOperator
from encore_airflow.sensors import LandingDaySensor

with daily_dag(
    "ingest_daily",
    description="Load and validate one UTC day of landing data",
    doc_md=__doc__,
    tags=[Tag.INGEST, Tag.DAILY],
    day_description="UTC day to ingest (manual runs without a data interval)",
) as dag:
    wait_for_landing = LandingDaySensor(task_id="wait_for_landing")

    @task
    def ingest() -> dict:
        """Ingest the run's day (see ml_tasks.ingest.ingest_day)."""
        from airflow.sdk.exceptions import AirflowFailException

        from encore_airflow.hooks import WarehouseHook
        from ml_tasks.ingest import IngestError, ingest_day

        context = get_current_context()
        try:
            result = ingest_day(
                run_day(context), run_id=context["run_id"], dsn=WarehouseHook().get_dsn()
            )
        except IngestError as exc:  # bad landing data: retrying cannot help
            raise AirflowFailException(str(exc)) from exc
        return result.to_dict()

    validate = ValidateDayOperator(task_id="validate", layer="raw", announce=RAW_DAY)

    wait_for_landing >> ingest() >> validate
