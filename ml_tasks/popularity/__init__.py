"""Track popularity forecasts at 1, 7 and 30 days: examples in :mod:`.data`, the LightGBM
and LSTM models in :mod:`.model`, training/evaluation/gate in :mod:`.training`, scoring in
:mod:`.scoring`, the model card in :mod:`.card`, settings in :mod:`.config`.

TensorFlow and LightGBM are imported only when a model is fitted or used.
"""

from __future__ import annotations

from ml_tasks.popularity.config import PopularityConfig, PopularityConfigError
from ml_tasks.popularity.data import build_examples, popularity_targets
from ml_tasks.popularity.model import PopularityModel, wape
from ml_tasks.popularity.scoring import score_popularity
from ml_tasks.popularity.training import (
    MODEL_NAME,
    NotEnoughHistory,
    load_popularity_model,
    plan_splits,
    train_popularity,
)

__all__ = [
    "MODEL_NAME",
    "NotEnoughHistory",
    "PopularityConfig",
    "PopularityConfigError",
    "PopularityModel",
    "build_examples",
    "load_popularity_model",
    "plan_splits",
    "popularity_targets",
    "score_popularity",
    "train_popularity",
    "wape",
]
