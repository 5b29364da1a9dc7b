"""The popularity models: a global LightGBM per horizon and a small TensorFlow LSTM per
horizon, and :class:`PopularityModel`, the artifact that scores (per horizon: LightGBM, the
LSTM or their average, whichever won on the holdout).

- **LightGBM** (one model per horizon, all tracks together): lags (daily plays of the last
  ``sequence_days`` days), window sums, the ``popularity_v1`` features, catalogue features
  (age since release, artist momentum and size, genre, length, explicit) and audio
  features when present. Objective ``tweedie`` (plays are over-dispersed counts; log link)
  or ``l2_log1p`` (squared error on log1p(plays)).
- **LSTM** (one per horizon): the daily play sequence (log1p(plays) and a "released yet"
  flag per day) through an LSTM, concatenated with the static features (signed log1p,
  standardized, genre one-hot), then a dense layer; trained on log1p(plays) with the mean
  absolute error, on at most ``lstm.max_train_rows`` rows (optionally stopped early by the
  WAPE of later rows beyond those, ``lstm.patience``). The Keras network is kept as its weights
  (numpy arrays), so the artifact is a plain pickle and TensorFlow is imported only when an
  LSTM is actually used.
- **New releases**: a track with few days of history has mostly empty lags; both models
  see ``days_since_release`` (and its log), ``released_days_in_window``,
  ``plays_per_released_day``, the artist's plays per track and momentum, genre and audio
  features, so they learn the launch curve from the tracks released earlier in the window
  rather than extrapolating a short or empty sequence.

Forecasts are made non-decreasing in the horizon (plays over 7 days >= over 1 day).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml_tasks.popularity.config import LightGbmConfig, LstmConfig
from ml_tasks.popularity.data import ID_COLUMNS, lag_column

log = logging.getLogger(__name__)

CHOICES = ("lightgbm", "lstm", "blend")


def prediction_column(horizon: int) -> str:
    return f"predicted_plays_{horizon}d"


def wape(y: np.ndarray, p: np.ndarray) -> float | None:
    """Weighted absolute percentage error: sum |y - p| / sum y (None when sum y == 0)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    total = y.sum()
    if total <= 0:
        return None
    return float(np.abs(y - p).sum() / total)


def feature_names(frame: pd.DataFrame) -> list[str]:
    """The model inputs of an example frame: everything but keys, text and targets."""
    return [c for c in frame.columns if c not in ID_COLUMNS and not c.startswith("y_")]


def _numeric(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """The named columns as floats (missing columns -> NaN; genre is handled apart)."""
    out = {}
    for name in names:
        if name == "genre":
            continue
        if name in frame.columns:
            out[name] = pd.to_numeric(frame[name], errors="coerce").astype(float).to_numpy()
        else:
            out[name] = np.full(len(frame), np.nan)
    return pd.DataFrame(out, index=frame.index)


# --------------------------------------------------------------------------- LightGBM


@dataclass
class LightGbmMember:
    """One horizon's global LightGBM model."""

    names: list[str]
    genres: list[str]
    objective: str
    estimator: object

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        X = _numeric(frame, self.names)
        if "genre" in self.names:
            genre = (
                frame["genre"] if "genre" in frame.columns else pd.Series(None, index=frame.index)
            )
            X["genre"] = pd.Categorical(genre, categories=self.genres)
        return X[self.names]

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        raw = np.asarray(self.estimator.predict(self.matrix(frame)), dtype=float)
        if self.objective == "l2_log1p":
            raw = np.expm1(raw)
        return np.clip(raw, 0.0, None)

    def importances(self) -> dict[str, float]:
        gains = np.asarray(
            self.estimator.booster_.feature_importance(importance_type="gain"), dtype=float
        )
        total = gains.sum() or 1.0
        pairs = sorted(zip(self.names, gains / total, strict=True), key=lambda kv: -kv[1])
        return {k: round(float(v), 5) for k, v in pairs}


def fit_lightgbm(
    train: pd.DataFrame, target: str, names: list[str], genres: list[str], cfg: LightGbmConfig
) -> LightGbmMember:
    import lightgbm as lgb

    member = LightGbmMember(names, genres, cfg.objective, None)
    X = member.matrix(train)
    y = train[target].to_numpy(dtype=float)
    params = dict(
        n_estimators=cfg.n_estimators,
        learning_rate=cfg.learning_rate,
        num_leaves=cfg.num_leaves,
        min_child_samples=cfg.min_child_samples,
        subsample=cfg.subsample,
        subsample_freq=1,
        colsample_bytree=cfg.colsample_bytree,
        n_jobs=cfg.n_jobs,
        random_state=cfg.seed,
        verbose=-1,
    )
    if cfg.objective == "tweedie":
        est = lgb.LGBMRegressor(
            objective="tweedie", tweedie_variance_power=cfg.tweedie_variance_power, **params
        )
        est.fit(X, y)
    else:
        est = lgb.LGBMRegressor(objective="regression", **params)
        est.fit(X, np.log1p(y))
    member.estimator = est
    return member


# --------------------------------------------------------------------------- LSTM

_TF_CONFIGURED = False


def _tensorflow(threads: int):
    global _TF_CONFIGURED
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if not _TF_CONFIGURED:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialized by someone else: keep its settings
            pass
        _TF_CONFIGURED = True
    return tf


def _build_network(tf, steps: int, n_static: int, cfg: LstmConfig):
    keras = tf.keras
    seq_in = keras.Input(shape=(steps, 2), name="sequence")
    static_in = keras.Input(shape=(n_static,), name="static")
    x = keras.layers.LSTM(cfg.units, name="lstm")(seq_in)
    x = keras.layers.Concatenate()([x, static_in])
    x = keras.layers.Dense(cfg.dense_units, activation="relu")(x)
    out = keras.layers.Dense(1, name="log1p_plays")(x)
    return keras.Model([seq_in, static_in], out)


@dataclass
class LstmMember:
    """One horizon's LSTM over the daily play sequence plus static features."""

    steps: int
    static_names: list[str]
    genres: list[str]
    mean: np.ndarray
    scale: np.ndarray
    cfg: LstmConfig
    #: Largest log1p(target) seen in training: outputs are clipped to [0, max_log + 0.5] so
    #: that a row unlike any training row cannot explode through expm1.
    max_log: float = 20.0
    #: Epochs the fit ran (fewer than ``cfg.epochs`` when early stopping ended it), and
    #: the rows it fitted on and held out for early stopping.
    epochs_run: int = 0
    rows_fit: int = 0
    rows_validation: int = 0
    #: WAPE of the kept weights on the held-out rows (None without early stopping).
    validation_wape: float | None = None
    weights: list[np.ndarray] = field(default_factory=list)
    _net: object = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_net"] = None  # rebuilt from the weights on first use
        return state

    def inputs(self, frame: pd.DataFrame) -> list[np.ndarray]:
        lags = np.stack(
            [frame[lag_column(k)].to_numpy(dtype=float) for k in range(self.steps - 1, -1, -1)],
            axis=1,
        )  # oldest first
        since = frame["days_since_release"].to_numpy(dtype=float)
        # step k (0 = oldest) is day D - (steps - 1 - k): released when since >= steps - 1 - k
        released = (since[:, None] >= (self.steps - 1 - np.arange(self.steps))[None, :]).astype(
            float
        )
        seq = np.stack([np.log1p(np.clip(lags, 0, None)), released], axis=2).astype(np.float32)
        X = _numeric(frame, self.static_names).to_numpy(dtype=float)
        X = np.sign(X) * np.log1p(np.abs(X))
        X = (X - self.mean) / self.scale
        X = np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)
        genre = frame["genre"].to_numpy() if "genre" in frame.columns else np.full(len(frame), None)
        onehot = (
            np.stack([(genre == g).astype(float) for g in self.genres], axis=1)
            if self.genres
            else np.zeros((len(frame), 0))
        )
        static = np.concatenate([X, onehot], axis=1).astype(np.float32)
        return [seq, static]

    def network(self):
        if self._net is None:
            tf = _tensorflow(self.cfg.threads)
            net = _build_network(
                tf, self.steps, len(self.static_names) + len(self.genres), self.cfg
            )
            net.set_weights(self.weights)
            self._net = net
        return self._net

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        if len(frame) == 0:
            return np.zeros(0)
        return _forecast_plays(self.network(), self.inputs(frame), self.max_log + 0.5)


def _forecast_plays(net, inputs: list[np.ndarray], max_log: float) -> np.ndarray:
    """Plays forecast by ``net`` for ``inputs`` (sequence, static): its log1p output
    clipped to [0, ``max_log``], then expm1.

    A direct call per batch: Keras' predict() retraces its tf.function for every new input
    size, which costs more than the forward pass on frames this small."""
    n = len(inputs[0])
    out = np.concatenate(
        [
            np.asarray(net([x[i : i + 8192] for x in inputs], training=False))
            for i in range(0, n, 8192)
        ]
    ).reshape(-1)
    return np.expm1(np.clip(out.astype(float), 0.0, max_log))


def _wape_early_stopping(
    tf, inputs: list[np.ndarray], plays: np.ndarray, patience: int, cap: float
):
    """A Keras callback: after each epoch, the WAPE of the forecast plays on held-out rows
    (the metric the holdout picks models by, where the loss is the MAE of log1p(plays));
    stop after ``patience`` epochs without improvement and keep the best epoch's weights."""

    class WapeEarlyStopping(tf.keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.best: float | None = None
            self.best_weights: list[np.ndarray] | None = None
            self.waited = 0

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            score = wape(plays, _forecast_plays(self.model, inputs, cap))
            if score is None:  # no plays held out: nothing to judge by
                return
            if self.best is None or score < self.best:
                self.best, self.waited = score, 0
                self.best_weights = self.model.get_weights()
                return
            self.waited += 1
            if self.waited >= patience:
                self.model.stop_training = True

        def on_train_end(self, logs: dict | None = None) -> None:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return WapeEarlyStopping()


def latest_rows_split(dates: pd.Series, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the other rows and of the ``count`` rows with the latest dates (ties
    broken by position): no row of the second set is older than one of the first."""
    if count < 1 or count >= len(dates):
        return np.arange(len(dates)), np.arange(0)
    by_date = np.argsort(pd.to_datetime(dates).to_numpy(), kind="stable")
    return np.sort(by_date[:-count]), by_date[-count:]


def lstm_rows(dates: pd.Series, cfg: LstmConfig) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the rows the LSTM fits on and of those it stops early by.

    Up to ``cfg.max_train_rows`` rows are fitted. Only when there are more than that, and
    ``cfg.patience`` is set, are the ``validation_share × max_train_rows`` latest rows held
    out for early stopping, and the fitted rows sampled from the others: the LSTM never
    gives up training rows to judge its epochs, and a small training set runs every epoch.
    """
    n, cap = len(dates), cfg.max_train_rows
    if cap is None or n <= cap:
        return np.arange(n), np.arange(0)
    rng = np.random.default_rng(cfg.seed)
    if not cfg.patience:
        return np.sort(rng.choice(n, cap, replace=False)), np.arange(0)
    others, held_out = latest_rows_split(dates, int(cap * cfg.validation_share))
    fit = others if len(others) <= cap else np.sort(rng.choice(others, cap, replace=False))
    return fit, held_out


def fit_lstm(
    train: pd.DataFrame,
    target: str,
    names: list[str],
    genres: list[str],
    steps: int,
    cfg: LstmConfig,
) -> LstmMember:
    """Fit one horizon's LSTM on at most ``cfg.max_train_rows`` rows of ``train``.

    With ``cfg.patience`` > 0 and more rows than that, the latest rows by date beyond the
    fitted ones are held out (see :func:`lstm_rows`): training stops once the WAPE of their
    forecast plays has not improved for ``patience`` epochs, and the best epoch's weights
    are kept.
    """
    tf = _tensorflow(cfg.threads)
    tf.keras.utils.set_random_seed(cfg.seed)
    fit_rows, val_rows = lstm_rows(train["dt"], cfg)
    fitted = train.iloc[fit_rows]
    static_names = [n for n in names if not n.startswith("lag_") and n != "genre"]
    X = _numeric(fitted, static_names).to_numpy(dtype=float)
    X = np.sign(X) * np.log1p(np.abs(X))
    mean = np.nanmean(X, axis=0)
    scale = np.nanstd(X, axis=0)
    mean = np.nan_to_num(mean)
    scale = np.where(np.isfinite(scale) & (scale > 1e-9), scale, 1.0)
    member = LstmMember(steps, static_names, genres, mean, scale, cfg)
    fit_x = member.inputs(fitted)
    fit_y = np.log1p(fitted[target].to_numpy(dtype=float)).astype(np.float32)
    member.max_log = float(fit_y.max(initial=0.0))
    net = _build_network(tf, steps, fit_x[1].shape[1], cfg)
    net.compile(optimizer=tf.keras.optimizers.Adam(cfg.learning_rate), loss="mae")
    extra: dict = {}
    if len(val_rows):
        held_out = train.iloc[val_rows]
        stopper = _wape_early_stopping(
            tf,
            member.inputs(held_out),
            held_out[target].to_numpy(dtype=float),
            cfg.patience,
            member.max_log + 0.5,
        )
        extra = {"callbacks": [stopper]}
    history = net.fit(
        fit_x,
        fit_y,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        shuffle=True,
        verbose=0,
        **extra,
    )
    member.epochs_run = len(history.history["loss"])
    if extra:
        member.validation_wape = stopper.best
    member.rows_fit, member.rows_validation = len(fit_rows), len(val_rows)
    member.weights = [np.asarray(w) for w in net.get_weights()]
    member._net = net
    return member


# --------------------------------------------------------------------------- the artifact


@dataclass
class PopularityModel:
    """What ``train_popularity`` registers: per horizon, the member(s) it chose."""

    horizons: tuple[int, ...]
    sequence_days: int
    feature_names: list[str]
    chosen: dict[int, str]
    lightgbm: dict[int, LightGbmMember] = field(default_factory=dict)
    lstm: dict[int, LstmMember] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return ", ".join(f"{h}d: {self.chosen[h]}" for h in self.horizons)

    def predict_member(self, frame: pd.DataFrame, horizon: int, which: str) -> np.ndarray:
        if which == "lightgbm":
            return self.lightgbm[horizon].predict(frame)
        if which == "lstm":
            return self.lstm[horizon].predict(frame)
        if which == "blend":
            return 0.5 * (self.lightgbm[horizon].predict(frame) + self.lstm[horizon].predict(frame))
        raise ValueError(f"unknown member {which!r}")

    def predict(
        self,
        frame: pd.DataFrame,
        *,
        upto: int | None = None,
        made: dict[int, np.ndarray] | None = None,
    ) -> pd.DataFrame:
        """Forecast plays per horizon, non-decreasing in the horizon.

        ``upto``: only the horizons up to this one (a horizon's forecast depends on the
        shorter ones only). ``made``: the chosen members' forecasts of ``frame`` already
        made, per horizon (not yet made non-decreasing), so that they are not made again.
        """
        horizons = [h for h in sorted(self.horizons) if upto is None or h <= upto]
        out = np.zeros((len(frame), len(horizons)))
        for j, h in enumerate(horizons):
            if len(frame):
                known = (made or {}).get(h)
                out[:, j] = (
                    self.predict_member(frame, h, self.chosen[h]) if known is None else known
                )
        out = np.maximum.accumulate(out, axis=1)
        return pd.DataFrame(
            out, columns=[prediction_column(h) for h in horizons], index=frame.index
        )

    def importances(self, horizon: int) -> dict[str, float]:
        member = self.lightgbm.get(horizon)
        return member.importances() if member is not None else {}

    def prune(self) -> PopularityModel:
        """Drop the members no horizon uses (no TensorFlow at scoring time unless needed)."""
        keep_lgb = {
            h: m for h, m in self.lightgbm.items() if self.chosen[h] in ("lightgbm", "blend")
        }
        keep_lstm = {h: m for h, m in self.lstm.items() if self.chosen[h] in ("lstm", "blend")}
        return PopularityModel(
            self.horizons,
            self.sequence_days,
            self.feature_names,
            dict(self.chosen),
            keep_lgb,
            keep_lstm,
        )
