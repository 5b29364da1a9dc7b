"""
### audio_features

Audio features of the catalogue's preview clips, one UTC day at a time.

Runs when `ingest_daily` announces a day (`encore_raw_day`), on that day; the midnight-UTC
cron timetable stays for backfills and as a fallback.

1. **wait_for_raw_day** waits (reschedule mode) until the day is ingested and its raw
   validation passed, so the DAG can run alone for any day (a backfill, a manual run).
2. **extract** hashes the preview clip of every catalogue track as of the day and decodes
   those new or changed (delivered that day, or whose file sha256, path or extractor
   version differs from `features.track_audio`), on every core of the worker: librosa
   MFCC, chroma, spectral, zero-crossing, RMS and tempo features are upserted into
   `features.track_audio`; missing, corrupt, silent and too-short clips go to
   `quarantine.audio_rejects` with the reason. One transaction per day
   (`encore audio --date D` runs the same code). Emits `encore_audio_day` with the day
   (`retrain_nightly` runs on it).

Genres are scored by `score_daily`, with the genre model the day's retraining left (which
trains on these features). Scored here, before that retraining, a day's genres came from
the previous day's model, and from the day's own once a re-run came after it.

Re-running a day leaves the same state: unchanged clips are not decoded again.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from encore_airflow.assets import AUDIO_DAY, CHAIN_ROOT, RAW_DAY, announce
from encore_airflow.common import Tag, daily_dag, run_day
from encore_airflow.sensors import RawDayReadySensor

with daily_dag(
    "audio_features",
    description="librosa features of new or changed preview clips",
    doc_md=__doc__,
    tags=[Tag.FEATURES, Tag.DAILY],
    upstream=[RAW_DAY],
    max_active_runs=1,  # extraction already uses every core of the worker
) as dag:
    wait_for_raw_day = RawDayReadySensor(task_id="wait_for_raw_day", yield_to=CHAIN_ROOT)

    @task(outlets=[AUDIO_DAY])
    def extract() -> dict:
        """Extract the day's new or changed clips (see ml_tasks.audio.extract_day)."""
        from encore_airflow.hooks import WarehouseHook
        from ml_tasks.audio import extract_day

        context = get_current_context()
        day = run_day(context)
        result = extract_day(day, run_id=context["run_id"], dsn=WarehouseHook().get_dsn())
        announce(context, AUDIO_DAY, day)
        return result

    wait_for_raw_day >> extract()
