"""
### retrain_nightly

Retrains the churn model on the features and labels known when the day closed.

Runs when both `features_daily` (`encore_features_day`) and `audio_features`
(`encore_audio_day`) have announced the day, on that day; the midnight-UTC cron timetable
stays for backfills and as a fallback.

1. **wait_for_features** waits until the day's features are built and validated.
2. **train_churn** builds the point-in-time training set from Feast over a rolling window of
   past scoring dates, with labels censored as of the day. It trains the hazard model and
   the gradient-boosted candidates, calibrates each horizon on held-back dates, and
   evaluates on a time-based holdout. It then registers the model with its artifact sha256
   and HTML model card, and runs the promotion gate (`encore train churn --date D` does the
   same).

3. **train_genre** trains the genre classifier (LightGBM on the audio summary features
   against a small TensorFlow CNN on log-mel patches; the better one on held-out tracks)
   on the labelled catalogue, registers and gates it (`encore train genre --date D`). It
   skips when there are no labelled clips with audio features yet.

4. **train_popularity** trains the 1/7/30-day play forecasts (a global LightGBM model and a
   small TensorFlow LSTM over daily play sequences; per horizon the better one or their
   blend, always beside the naive baseline), registers and gates them
   (`encore train popularity --date D`).

Each training task that registers a model emits `encore_models` with the day
(`score_daily` and `monitor_daily` run on it: they use the champion of the day's close).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import get_current_context, task

from encore_airflow.assets import AUDIO_DAY, CHAIN_ROOT, FEATURES_DAY, MODELS, announce
from encore_airflow.common import Tag, daily_dag, run_day
from encore_airflow.sensors import FeatureDayReadySensor

with daily_dag(
    "retrain_nightly",
    description="Retrain, evaluate, register and gate the churn, genre and popularity models",
    doc_md=__doc__,
    tags=[Tag.TRAINING, Tag.DAILY],
    upstream=[FEATURES_DAY, AUDIO_DAY],
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=4),
    day_description="training date (manual runs without a data interval)",
) as dag:
    wait_for_features = FeatureDayReadySensor(task_id="wait_for_features", yield_to=CHAIN_ROOT)

    @task(outlets=[MODELS])
    def train_churn() -> dict:
        """Train, evaluate, register and gate a churn model for the run's day."""
        from encore_airflow.hooks import WarehouseHook
        from ml_tasks.churn import train_churn as train

        context = get_current_context()
        day = run_day(context)
        result = train(day, run_id=context["run_id"], dsn=WarehouseHook().get_dsn())
        announce(context, MODELS, day, model="churn")
        return result

    @task(outlets=[MODELS])
    def train_genre() -> dict:
        """Train, evaluate, register and gate the genre classifier on the labelled clips."""
        from airflow.sdk.exceptions import AirflowSkipException

        from encore_airflow.hooks import WarehouseHook
        from ml_tasks.genre import NotEnoughData
        from ml_tasks.genre import train_genre as train

        context = get_current_context()
        day = run_day(context)
        try:
            result = train(day, run_id=context["run_id"], dsn=WarehouseHook().get_dsn())
        except NotEnoughData as exc:  # no labelled clips with audio features yet
            raise AirflowSkipException(str(exc)) from exc
        announce(context, MODELS, day, model="genre")
        return result

    @task(outlets=[MODELS])
    def train_popularity() -> dict:
        """Train, evaluate, register and gate the popularity forecasts (1, 7, 30 days)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from encore_airflow.hooks import WarehouseHook
        from ml_tasks.popularity import NotEnoughHistory
        from ml_tasks.popularity import train_popularity as train

        context = get_current_context()
        day = run_day(context)
        try:
            result = train(day, run_id=context["run_id"], dsn=WarehouseHook().get_dsn())
        except NotEnoughHistory as exc:  # not enough days with known targets yet
            raise AirflowSkipException(str(exc)) from exc
        announce(context, MODELS, day, model="popularity")
        return result

    wait_for_features >> [train_churn(), train_genre(), train_popularity()]
