"""
### nightly_deadline

Watches that the nightly chain finishes each UTC day on time, and alerts when it does not.

Its scheduled run for day D starts at 00:00 UTC on D + 1, as `ingest_daily`'s does.

1. **wait_for_chain** waits (reschedule mode, every 5 minutes) until D's chain is done:
   `score_daily` has handled D for churn and for popularity (a `scores.scoring_runs` row
   each, scored or skipped for want of a champion) and `monitor_daily` has written D's
   report (`monitoring.reports`).

**The deadline.** D's chain is due `chain_due_hours` after D ends (`config/deadlines.yaml`;
6 hours, so 06:00 UTC on D + 1). If this run is still waiting then, Airflow's deadline alert
fires: its callback `encore_airflow.deadlines.record_missed_deadline` runs on a worker,
logs `DEADLINE MISSED` with the day and what is missing, and records the miss in
`monitoring.deadline_misses` (shown on the Encore page). Airflow lists it under the run's
deadlines too. The run goes on waiting: it succeeds once the chain is done (late), or fails
`watch_hours` after it started. A run that finishes before its deadline leaves no miss.

A manual run watches the day of its `day` parameter, or of its logical date's interval,
with the same deadline. A run for a past day is created after its deadline, so it records a
miss whatever the day's state (`missing` says `nothing` for a day that was done): to audit
past days, use `encore deadline --date D --through D2` instead of a backfill.
"""

from __future__ import annotations

from datetime import timedelta

from encore_airflow.common import Tag, daily_dag
from encore_airflow.deadlines import nightly_chain_deadline
from encore_airflow.sensors import DayReadySensor
from ml_tasks.deadlines import DeadlineConfig

config = DeadlineConfig.load()

with daily_dag(
    "nightly_deadline",
    description="Alerts when a day's scores and monitoring are not done on time",
    doc_md=__doc__,
    tags=[Tag.MONITORING, Tag.DAILY],
    max_active_runs=2,
    dagrun_timeout=timedelta(hours=config.watch_hours + 1),
    day_description="UTC day whose chain to watch (manual runs without a data interval)",
    deadline=nightly_chain_deadline(),
) as dag:
    DayReadySensor(
        task_id="wait_for_chain",
        check="ml_tasks.deadlines:chain_day_complete",
        poke_interval=timedelta(minutes=5),
        timeout=timedelta(hours=config.watch_hours),
    )
