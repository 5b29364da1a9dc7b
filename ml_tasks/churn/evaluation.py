"""Holdout metrics per horizon, and the comparison with the simulator's true hazard."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ("roc_auc", "pr_auc", "brier", "ece", "lift_top_decile")
ECE_BINS = 10


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width probability bins: sum of |mean(p) - mean(y)| x share."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def lift_top_decile(y: np.ndarray, p: np.ndarray) -> float:
    """Churn rate among the 10% highest scores over the overall rate."""
    y = np.asarray(y, dtype=float)
    base = y.mean()
    if base == 0:
        return float("nan")
    k = max(1, math.ceil(len(y) * 0.1))
    top = np.argsort(-np.asarray(p, dtype=float), kind="stable")[:k]
    return float(y[top].mean() / base)


def binary_metrics(y, p) -> dict[str, float | int | None]:
    """ROC AUC, PR AUC, Brier, ECE (10 bins) and top-decile lift; AUCs None with one class."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    both = 0 < y.sum() < len(y)
    return {
        "rows": len(y),
        "positives": int(y.sum()),
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "brier": float(brier_score_loss(y, p)) if len(y) else None,
        "ece": expected_calibration_error(y, p) if len(y) else None,
        "lift_top_decile": lift_top_decile(y, p) if both else None,
    }


def true_hazard_comparison(
    holdout: pd.DataFrame,
    probabilities: pd.DataFrame,
    truth_dir: Path,
    *,
    horizon: int = 30,
) -> dict:
    """The model's ROC AUC at ``horizon`` next to the AUC of the simulator's true hazard.

    ``holdout`` holds user_id, dt and ``label_<horizon>`` (rows with a known label are
    used); ``probabilities`` its predictions (same index, ``p_churn_<horizon>d``). The true
    score of a user on day D is the simulator's daily hazard of D (``user_daily.parquet``,
    keyed by user_id already: the simulator maps user_idx to user_id with its id helpers).
    The daily hazard is 0 for a user whose (latent) dormancy already began, yet the
    contract counts a silence that began up to 28 days before D as churn; so the report
    also gives the AUC of the *state-aware* true score (hazard, or above every hazard when
    the user is dormant at the end of D): the best any model could rank from the truth.
    Rows the truth does not cover (bots' and unknown ids aside, none) are left out.
    """
    from sklearn.metrics import roc_auc_score

    truth = pd.read_parquet(
        truth_dir / "user_daily.parquet", columns=["user_id", "date", "hazard", "dormant"]
    )
    truth["dt"] = pd.to_datetime(truth["date"]).dt.date
    label = f"label_{horizon}"
    frame = holdout[["user_id", "dt", label]].copy()
    frame["p"] = probabilities[f"p_churn_{horizon}d"].to_numpy()
    frame = frame[frame[label].notna()]
    frame = frame.merge(
        truth[["user_id", "dt", "hazard", "dormant"]], on=["user_id", "dt"], how="inner"
    )
    y = frame[label].astype(int).to_numpy()
    if not 0 < y.sum() < len(y):
        return {"horizon": horizon, "rows": len(y), "model_auc": None, "true_hazard_auc": None}
    model_auc = float(roc_auc_score(y, frame["p"]))
    hazard_auc = float(roc_auc_score(y, frame["hazard"]))
    true_auc = float(roc_auc_score(y, frame["hazard"] + frame["dormant"].astype(float)))
    return {
        "horizon": horizon,
        "rows": len(y),
        "positives": int(y.sum()),
        "model_auc": model_auc,
        "true_hazard_auc": true_auc,
        "ratio": model_auc / true_auc if true_auc else None,
        "daily_hazard_only_auc": hazard_auc,
        "days": sorted({d.isoformat() for d in frame["dt"]}),
    }
