"""
### score_daily

Scores one UTC day with the models that were champion when the day closed.

Runs when both `features_daily` (`encore_features_day`) and `retrain_nightly`
(`encore_models`) have announced the day, so it scores with the champion that day's
training left; the midnight-UTC cron timetable stays for backfills and as a fallback.

1. **wait_for_features** waits (reschedule mode) until the day's features are built and
   passed validation after that build.
2. **plan_chunks** finds the churn champion for the day and splits the day's active users
   into user-id ranges (`ENCORE_SCORE_CHUNK_USERS`). Without a champion it records the skip
   in `scores.scoring_runs` and the chunks are skipped.
3. **score_chunk** (dynamic task mapping, one task per range, spread over the workers)
   reads the range's features, predicts P(churn) at 7/30/90 days, tiers, segments, tags
   and reasons, and COPYs them into the day's stage table, replacing any earlier attempt.
4. **commit** plans the interventions under the day's budget and swaps `scores.churn` and
   `scores.interventions` for the day in one transaction, then emits `encore_scores_day`
   with the day.

5. **score_popularity** forecasts every catalogue track's plays over 1, 7 and 30 days
   into `scores.track_popularity` with the popularity champion of the day, or records the
   skip when there is none.
6. **score_genres** predicts the genre of every unlabelled catalogue track into
   `scores.track_genres` with the genre champion of the day (trained on the audio features
   `audio_features` extracted), or records the skip when there is none.

`encore score --date D` runs the same functions in one process.
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from encore_airflow.assets import CHAIN_ROOT, FEATURES_DAY, MODELS, SCORES_DAY, announce
from encore_airflow.common import Tag, daily_dag, run_day
from encore_airflow.sensors import FeatureDayReadySensor

with daily_dag(
    "score_daily",
    description="Churn scores, segments, reasons and interventions for one UTC day",
    doc_md=__doc__,
    tags=[Tag.SCORING, Tag.DAILY],
    upstream=[FEATURES_DAY, MODELS],
    day_description="UTC day to score (manual runs without a data interval)",
) as dag:
    wait_for_features = FeatureDayReadySensor(task_id="wait_for_features", yield_to=CHAIN_ROOT)

    @task
    def plan_chunks() -> list[list[int]]:
        """User-id ranges of the day, or none when no churn model was champion."""
        from encore_airflow.hooks import WarehouseHook
        from ml_tasks import registry, scoring, warehouse
        from ml_tasks.settings import get_settings

        context = get_current_context()
        day = run_day(context)
        dsn = warehouse.ensure_migrated(WarehouseHook().get_dsn())
        if registry.champion(scoring.CHURN_MODEL, scoring.day_end(day), dsn=dsn) is None:
            why = f"no churn model was champion when {day} closed"
            scoring.record_skip(dsn, day, context["run_id"], scoring.CHURN_MODEL, why)
            return []
        scoring.prepare_stage(day, dsn=dsn)
        chunks = scoring.user_id_chunks(dsn, day, get_settings().score_chunk_users)
        return [[lo, hi] for lo, hi in chunks]

    @task(map_index_template="{{ task.op_kwargs['bounds'][0] }}")
    def score_chunk(bounds: list[int]) -> int:
        """Score one user-id range into the day's stage table."""
        from encore_airflow.hooks import WarehouseHook
        from ml_tasks import scoring

        context = get_current_context()
        return scoring.score_churn_chunk(
            run_day(context),
            bounds[0],
            bounds[1],
            run_id=context["run_id"],
            dsn=WarehouseHook().get_dsn(),
        )

    @task(outlets=[SCORES_DAY])
    def commit(rows: list[int]) -> dict:
        """Plan interventions and swap the day's scores in atomically."""
        from airflow.sdk.exceptions import AirflowSkipException

        from encore_airflow.hooks import WarehouseHook
        from ml_tasks import scoring

        context = get_current_context()
        day = run_day(context)
        chunks = len(rows)  # by index: iterating a lazy XCom sequence probes past its end
        if not chunks:
            raise AirflowSkipException(f"nothing scored for {day} (no champion)")
        total = sum(rows[i] for i in range(chunks))
        result = scoring.commit_churn(
            day, run_id=context["run_id"], dsn=WarehouseHook().get_dsn(), expected_rows=total
        )
        announce(context, SCORES_DAY, day)
        return result

    @task(outlets=[SCORES_DAY])
    def score_popularity() -> dict:
        """Forecast every catalogue track's plays over 1, 7 and 30 days (one swap)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from encore_airflow.hooks import WarehouseHook
        from ml_tasks import scoring, warehouse

        context = get_current_context()
        day = run_day(context)
        dsn = warehouse.ensure_migrated(WarehouseHook().get_dsn())
        try:
            result = scoring.score_popularity(day, run_id=context["run_id"], dsn=dsn)
        except scoring.NoChampion as exc:
            scoring.record_skip(dsn, day, context["run_id"], "popularity", str(exc))
            raise AirflowSkipException(str(exc)) from exc
        announce(context, SCORES_DAY, day)
        return result

    @task
    def score_genres() -> dict:
        """Genre of every unlabelled catalogue track with the day's genre champion."""
        from airflow.sdk.exceptions import AirflowSkipException

        from encore_airflow.hooks import WarehouseHook
        from ml_tasks import scoring

        context = get_current_context()
        try:
            return scoring.score_genres(
                run_day(context), run_id=context["run_id"], dsn=WarehouseHook().get_dsn()
            )
        except scoring.NoChampion as exc:  # the skip is already recorded in scoring_runs
            raise AirflowSkipException(str(exc)) from exc

    chunks = plan_chunks()
    wait_for_features >> [chunks, score_popularity(), score_genres()]
    commit(score_chunk.expand(bounds=chunks))
