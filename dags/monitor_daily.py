"""
### monitor_daily

Monitors one UTC day of the nightly chain.

Runs when both `features_daily` (`encore_features_day`) and `retrain_nightly`
(`encore_models`) have announced the day: drift is measured for the churn champion of the
day's close, on the day's features. The midnight-UTC cron timetable stays for backfills
and as a fallback.

1. **wait_for_features** waits until the day's features are built and validated.
2. **monitor** (`encore monitor --date D` runs the same code) does four things for the day:
   - reports the day's stream-fraud flags (computing them only when `features_daily` left
     none, or they predate the day's latest ingest or the detector's configuration);
   - measures the drift (PSI) of every input of the churn champion, and of its 30-day
     score, against the model's training window;
   - measures the realized performance (AUC, Brier, calibration) of the churn scores made
     7, 30 and 90 days earlier whose labels are now known;
   - writes the daily HTML report under `$ENCORE_ARTIFACTS/reports/`.

   Results land in `monitoring.drift`, `monitoring.realized_performance` and
   `monitoring.reports`, the day's rows replaced in one transaction.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from encore_airflow.assets import CHAIN_ROOT, FEATURES_DAY, MODELS
from encore_airflow.common import Tag, daily_dag, run_day
from encore_airflow.sensors import FeatureDayReadySensor

with daily_dag(
    "monitor_daily",
    description="Fraud flags, drift, realized performance and the daily report",
    doc_md=__doc__,
    tags=[Tag.MONITORING, Tag.DAILY],
    upstream=[FEATURES_DAY, MODELS],
    day_description="UTC day to monitor (manual runs without a data interval)",
) as dag:
    wait_for_features = FeatureDayReadySensor(task_id="wait_for_features", yield_to=CHAIN_ROOT)

    @task
    def monitor() -> dict:
        """Monitor the run's day (see ml_tasks.monitoring.monitor_day)."""
        from encore_airflow.hooks import WarehouseHook
        from ml_tasks.monitoring import monitor_day

        context = get_current_context()
        return monitor_day(
            run_day(context), run_id=context["run_id"], dsn=WarehouseHook().get_dsn()
        )

    wait_for_features >> monitor()
