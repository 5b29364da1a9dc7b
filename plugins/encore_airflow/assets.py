"""The Airflow assets of the nightly chain, named in one place.

Each producing task declares its asset as an outlet and attaches the UTC day it processed to
the asset event (``extra={"day": "YYYY-MM-DD"}``); downstream DAGs are scheduled on these
assets (see :func:`encore_airflow.common.daily_dag`) and read the day back from their
triggering events (:func:`encore_airflow.common.run_day`).

- ``encore_raw_day``: made by ``ingest_daily.validate``; ``features_daily`` and
  ``audio_features`` run on it.
- ``encore_features_day``: made by ``features_daily.materialize``; ``retrain_nightly``,
  ``score_daily`` and ``monitor_daily`` run on it.
- ``encore_audio_day``: made by ``audio_features.extract``; ``retrain_nightly`` runs on it.
- ``encore_models``: made by ``retrain_nightly.train_churn|train_genre|train_popularity``;
  ``score_daily`` and ``monitor_daily`` run on it.
- ``encore_scores_day``: made by ``score_daily.commit`` and ``score_daily.score_popularity``;
  for lineage (no DAG runs on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from airflow.sdk import Asset

#: Extra key of every Encore asset event: the UTC day (ISO date) the producing run processed.
DAY_KEY = "day"

RAW_DAY = Asset(name="encore_raw_day", uri="encore://warehouse/raw/daily")
FEATURES_DAY = Asset(name="encore_features_day", uri="encore://warehouse/features/daily")
AUDIO_DAY = Asset(name="encore_audio_day", uri="encore://warehouse/features/track_audio")
MODELS = Asset(name="encore_models", uri="encore://warehouse/ml/model_registry")
SCORES_DAY = Asset(name="encore_scores_day", uri="encore://warehouse/scores/daily")

#: The asset that starts the chain: once a day is announced here, the asset-triggered runs
#: downstream own that day, and the scheduled (cron) runs of those DAGs stand aside.
CHAIN_ROOT = RAW_DAY

ALL = (RAW_DAY, FEATURES_DAY, AUDIO_DAY, MODELS, SCORES_DAY)


def announce(context: Mapping[str, Any], asset: Asset, day: date, **extra: Any) -> None:
    """Attach the processed ``day`` (and any ``extra``) to the task's event for ``asset``.

    Call it in a task that declares ``asset`` among its outlets, after its work succeeded:
    Airflow records the event (with this extra) when the task finishes successfully.
    """
    context["outlet_events"][asset].extra = {DAY_KEY: day.isoformat(), **extra}


def event_day(event: Any) -> str | None:
    """The day an asset event (an Airflow event object, or a dict) announces, if any."""
    extra = getattr(event, "extra", None)
    if extra is None and isinstance(event, Mapping):
        extra = event.get("extra")
    value = (extra or {}).get(DAY_KEY)
    return str(value) if value else None


def announced(events: Iterable[Any], day: date) -> bool:
    """Whether one of the asset ``events`` announces ``day``."""
    return any(event_day(event) == day.isoformat() for event in events)
