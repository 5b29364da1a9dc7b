"""The churn model: a discrete-time hazard over day bands, calibrated per horizon.

Each entity row (user, scoring date D) becomes one *person-period* row per band
(0, 7], (7, 14], ..., (75, 90] in which the user was still at risk and which was observed
to its end: the target is "churned in this band". A gradient-boosted classifier (XGBoost,
LightGBM or CatBoost; the band's end is one of its inputs) learns the band hazard h_b(x),
and

    P(churn within H) = 1 - prod_{b: end_b <= H} (1 - h_b(x))

is non-decreasing in H by construction. Censored rows contribute exactly the bands they
were observed through; a band cut by censoring is left out, *whether or not it holds the
churn*. Keeping the cut bands that hold a churn (and only those) would count that band's
early churns and none of its survivors: on the rows whose censoring falls inside a late
band, its hazard would come out near 1.

Calibration maps each horizon's probability through an isotonic (or Platt) curve fitted on
a later, separate set of scoring dates. Separate curves per horizon could cross, so after
calibration the horizons are made monotone again with a running maximum
(p_30 := max(p_30, p_7), p_90 := max(p_90, p_30)): the smallest change that restores the
order, and a no-op wherever the calibrated curves already agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml_tasks.churn import explain

log = logging.getLogger(__name__)

#: Columns of features.user_daily that are identifiers or lineage, never inputs.
NON_FEATURES = ("dt", "user_id", "feature_ts", "event_timestamp", "run_id", "computed_at")
PLAN_CODES = {
    "free": 0,
    "premium_student": 1,
    "premium_individual": 2,
    "premium_duo": 3,
    "premium_family": 4,
}
BAND_COLUMN = "hazard_band_end"


def encode(frame: pd.DataFrame, feature_names: list[str]) -> pd.DataFrame:
    """Model inputs as float columns: booleans 0/1, ``plan`` as a code, missing kept NaN."""
    out = {}
    for name in feature_names:
        col = frame[name]
        if name == "plan":
            out[name] = col.map(PLAN_CODES).astype(float)
        elif col.dtype == bool or str(col.dtype) == "boolean":
            out[name] = col.astype(float)
        else:
            out[name] = pd.to_numeric(col, errors="coerce").astype(float)
    return pd.DataFrame(out, index=frame.index)


def person_periods(
    X: pd.DataFrame,
    duration: np.ndarray,
    event: np.ndarray,
    observed: np.ndarray,
    edges: tuple[int, ...],
) -> tuple[pd.DataFrame, np.ndarray]:
    """Expand entity rows into (row, band) rows with the band's event indicator.

    ``duration`` is the days to the churn (``event``) or to censoring, ``observed`` the
    days through which the outcome is known (:mod:`ml_tasks.labels`). A band (start, end]
    is kept when the user was at risk at its start (no churn by then) and its outcome is
    known to its end (``observed >= end``); its target is whether the churn fell in it.
    """
    starts = (0, *edges[:-1])
    parts, targets = [], []
    for start, end in zip(starts, edges, strict=True):
        kept = (duration > start) & (observed >= end)
        happened = event & (duration <= end)
        rows = X.loc[kept].copy()
        rows[BAND_COLUMN] = float(end)
        parts.append(rows)
        targets.append(happened[kept].astype(int))
    return pd.concat(parts, ignore_index=True), np.concatenate(targets)


def make_estimator(family: str, gbm) -> object:
    """An unfitted classifier of ``family`` with the configured size."""
    if family == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(
            n_estimators=gbm.n_estimators,
            learning_rate=gbm.learning_rate,
            max_depth=gbm.max_depth,
            n_jobs=gbm.n_jobs,
            random_state=gbm.seed,
            tree_method="hist",
            subsample=0.8,
            colsample_bytree=0.8,
            eval_metric="logloss",
        )
    if family == "lightgbm":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            n_estimators=gbm.n_estimators,
            learning_rate=gbm.learning_rate,
            max_depth=gbm.max_depth,
            num_leaves=max(2, 2**gbm.max_depth - 1),
            n_jobs=gbm.n_jobs,
            random_state=gbm.seed,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            verbose=-1,
        )
    if family == "catboost":
        from catboost import CatBoostClassifier

        return CatBoostClassifier(
            iterations=gbm.n_estimators,
            learning_rate=gbm.learning_rate * 2,
            depth=gbm.max_depth + 1,
            thread_count=gbm.n_jobs,
            random_seed=gbm.seed,
            verbose=False,
            allow_writing_files=False,
        )
    raise ValueError(f"unknown model family {family!r}")


@dataclass
class HorizonCalibrator:
    """A monotone map of one horizon's raw probability (isotonic or Platt), or identity."""

    method: str
    model: object = None

    def __call__(self, p: np.ndarray) -> np.ndarray:
        if self.model is None:
            return p
        if self.method == "isotonic":
            return self.model.predict(p)
        logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
        return self.model.predict_proba(logit.reshape(-1, 1))[:, 1]


def fit_calibrator(method: str, p: np.ndarray, y: np.ndarray) -> HorizonCalibrator:
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(p, y)
        return HorizonCalibrator(method, iso)
    from sklearn.linear_model import LogisticRegression

    logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
    lr = LogisticRegression(C=1e6)
    lr.fit(logit.reshape(-1, 1), y)
    return HorizonCalibrator(method, lr)


@dataclass
class ChurnModel:
    """Multi-horizon churn probabilities from one or more hazard classifiers.

    ``members`` are (family, fitted classifier) pairs; with several, their cumulative
    probabilities are averaged (an average of monotone curves is monotone).
    """

    feature_names: list[str]
    horizons: tuple[int, ...]
    band_edges: tuple[int, ...]
    members: list[tuple[str, object]]
    calibrators: dict[int, HorizonCalibrator] = field(default_factory=dict)
    name: str = "churn"
    #: 30-day-ish band used for reasons: the band ending at this horizon.
    reason_horizon: int = 30
    #: Path tables of the members, built on first use (never pickled with the model).
    _path_tables: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_path_tables"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._path_tables = {}

    @property
    def kind(self) -> str:
        return "+".join(f for f, _ in self.members)

    # ------------------------------------------------------------------ prediction

    def _inputs(self, frame: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.feature_names if c not in frame.columns]
        if missing:
            raise KeyError(f"churn model inputs missing from the frame: {missing}")
        return encode(frame, self.feature_names)

    def _cumulative(self, family: str, estimator, inputs: np.ndarray) -> np.ndarray:
        """P(churn by the end of each band), shape (rows, bands).

        ``inputs``: the encoded features with a last column for the band's end, which this
        overwrites band by band.
        """
        survival = np.ones(len(inputs))
        out = np.empty((len(inputs), len(self.band_edges)))
        for j, end in enumerate(self.band_edges):
            inputs[:, -1] = float(end)
            survival *= 1.0 - band_hazard(family, estimator, inputs)
            out[:, j] = 1.0 - survival
        return out

    def band_probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        """Uncalibrated P(churn by the end of each band), averaged over the members,
        shape (rows, bands)."""
        X = self._inputs(frame)
        if not len(X):
            return np.zeros((0, len(self.band_edges)))
        # One C-ordered float64 matrix for every member and band: each library reads it as
        # it is (the sklearn wrappers would convert a fresh DataFrame copy per call).
        inputs = np.empty((len(X), len(self.feature_names) + 1))
        inputs[:, :-1] = X.to_numpy(dtype=np.float64)
        total = np.zeros((len(X), len(self.band_edges)))
        for family, est in self.members:
            total += self._cumulative(family, est, inputs)
        return total / len(self.members)

    def raw_probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        """Uncalibrated P(churn within H) per horizon, shape (rows, horizons)."""
        cum = self.band_probabilities(frame)
        idx = [self.band_edges.index(h) for h in self.horizons]
        return cum[:, idx]

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Columns ``p_churn_<H>d`` per horizon, calibrated, non-decreasing in H per row."""
        raw = self.raw_probabilities(frame)
        cal = (
            np.column_stack(
                [
                    self.calibrators.get(h, HorizonCalibrator("identity"))(raw[:, i])
                    for i, h in enumerate(self.horizons)
                ]
            )
            if len(raw)
            else raw
        )
        cal = np.maximum.accumulate(np.clip(cal, 0.0, 1.0), axis=1)
        return pd.DataFrame(
            cal, columns=[f"p_churn_{h}d" for h in self.horizons], index=frame.index
        )

    # ------------------------------------------------------------------ reasons

    def contributions(self, frame: pd.DataFrame, method: str = "path") -> np.ndarray:
        """Per-row feature contributions (log-odds of the hazard of the band ending at
        ``reason_horizon``, averaged over members); positive raises the risk.

        ``method``: ``path`` (Saabas path attributions) or ``shap`` (exact TreeSHAP); see
        :mod:`ml_tasks.churn.explain`.
        """
        if method not in explain.METHODS:
            raise ValueError(f"unknown contribution method {method!r}; known: {explain.METHODS}")
        X = self._inputs(frame)
        X[BAND_COLUMN] = float(self.reason_horizon)
        total = np.zeros((len(X), len(self.feature_names)))
        for k, (family, est) in enumerate(self.members):
            total += self._member_contributions(k, family, est, X, method)[
                :, : len(self.feature_names)
            ]
        return total / len(self.members)

    def _member_contributions(
        self, k: int, family: str, est, X: pd.DataFrame, method: str
    ) -> np.ndarray:
        if method == "shap":
            return explain.shap_contributions(family, est, X)
        if family == "xgboost":  # XGBoost's own Saabas (the same figures, tested), in C++
            import xgboost as xgb

            return est.get_booster().predict(
                xgb.DMatrix(X), pred_contribs=True, approx_contribs=True
            )[:, :-1]
        if k not in self._path_tables:
            self._path_tables[k] = explain.path_table(family, est, list(X.columns))
        return self._path_tables[k].contributions(explain.leaf_indices(family, est, X))

    def top_reasons(
        self, frame: pd.DataFrame, top: int = 3, method: str = "path"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row's ``top`` largest positive contributions, largest first.

        Returns ``(columns, contributions)``, both of shape (rows, top): indices into
        :attr:`feature_names` (-1 where a row has fewer than ``top`` positive ones) and
        their contributions (0 there).
        """
        if not len(frame):
            return np.zeros((0, top), dtype=np.int64), np.zeros((0, top))
        contrib = self.contributions(frame, method)
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :top]
        picked = np.take_along_axis(contrib, order, axis=1)
        positive = picked > 0
        return np.where(positive, order, -1), np.where(positive, picked, 0.0)

    def reasons(
        self, frame: pd.DataFrame, top: int = 3, method: str = "path"
    ) -> list[list[tuple[str, float]]]:
        """The ``top`` features that raise each row's risk most, with their contribution."""
        columns, contrib = self.top_reasons(frame, top, method)
        names = self.feature_names
        return [
            [(names[c], float(v)) for c, v in zip(cols, vals, strict=True) if c >= 0]
            for cols, vals in zip(columns.tolist(), contrib.tolist(), strict=True)
        ]

    def feature_importances(self) -> dict[str, float]:
        """Mean importance per input over members (each normalised to sum to 1)."""
        total = np.zeros(len(self.feature_names))
        for family, est in self.members:
            if family == "catboost":
                imp = np.asarray(est.get_feature_importance(), dtype=float)
            else:
                imp = np.asarray(est.feature_importances_, dtype=float)
            imp = imp[: len(self.feature_names)]
            total += imp / imp.sum() if imp.sum() else imp
        total /= len(self.members)
        return dict(
            sorted(zip(self.feature_names, total.tolist(), strict=True), key=lambda kv: -kv[1])
        )


def band_hazard(family: str, estimator, inputs: np.ndarray) -> np.ndarray:
    """P(churn in the band) per row from a fitted classifier of ``family``.

    ``inputs`` is the float64 matrix of the model's columns in training order (features,
    then the band's end). The same figures as ``estimator.predict_proba(frame)[:, 1]`` on
    the equivalent DataFrame, through each library's own entry point for arrays: XGBoost
    and CatBoost read float32 either way, LightGBM float64.
    """
    if family == "xgboost":
        return estimator.get_booster().inplace_predict(inputs, validate_features=False)
    if family == "lightgbm":
        threads = estimator.n_jobs if (estimator.n_jobs or 0) > 0 else 0
        return estimator.booster_.predict(inputs, num_threads=threads)
    if family == "catboost":
        return estimator.predict(inputs, prediction_type="Probability")[:, 1]
    return estimator.predict_proba(inputs)[:, 1]


def fit_hazard(
    family: str,
    X: pd.DataFrame,
    duration: np.ndarray,
    event: np.ndarray,
    observed: np.ndarray,
    edges: tuple[int, ...],
    gbm,
):
    """Fit one family's band-hazard classifier on person-period rows."""
    pp, target = person_periods(X, duration, event, observed, edges)
    est = make_estimator(family, gbm)
    est.fit(pp, target)
    return est
