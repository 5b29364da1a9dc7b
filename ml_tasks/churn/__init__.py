"""Churn risk at 7, 30 and 90 days: labels in :mod:`ml_tasks.labels`, the hazard model in
:mod:`.model`, training/evaluation/gate in :mod:`.training`, settings in :mod:`.config`."""

from __future__ import annotations

from ml_tasks.churn.config import ChurnConfig, ChurnConfigError
from ml_tasks.churn.model import ChurnModel
from ml_tasks.churn.training import (
    MODEL_NAME,
    NotEnoughHistory,
    plan_splits,
    train_churn,
    training_frame,
)

__all__ = [
    "MODEL_NAME",
    "ChurnConfig",
    "ChurnConfigError",
    "ChurnModel",
    "NotEnoughHistory",
    "plan_splits",
    "train_churn",
    "training_frame",
]
