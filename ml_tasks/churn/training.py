"""Train, evaluate, register and gate the churn model for one training date.

Splits, by scoring date (all labels censored as of the end of the training date ``day``;
see :mod:`ml_tasks.labels`):

- **holdout**: the ``holdout_days`` latest scoring dates whose ``split_horizon`` labels are
  known for every user, i.e. ending on day - split_horizon - 29;
- **calibration**: the ``calibration_days`` dates before them, for every horizon whose
  labels they know (up to ``split_horizon``). A longer horizon H gets its own dates:
  every ``late_calibration_stride``-th of the ``late_calibration_days`` days (fewer if the
  history is shorter) ending on the latest date whose H-labels are known for every user,
  calibrated with ``calibration.late_method``; they are taken out of training. When the
  history is too short for them, H stays uncalibrated;
- **training**: up to ``lookback_days`` dates before those, every ``stride_days``-th one,
  never closer than ``min_history_days`` to the first feature day.

The hazard models use every training row, censored or not (a censored row contributes the
bands it was observed through). Calibration and evaluation at horizon H use only the rows
of dates whose H-labels are known for every user (free users' labels take 29 days longer),
so a horizon the window cannot observe yet is reported as not evaluated rather than
estimated on paying users alone.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ml_tasks import labels, registry, training_inputs, warehouse
from ml_tasks.churn.config import ChurnConfig
from ml_tasks.churn.evaluation import binary_metrics
from ml_tasks.churn.model import (
    NON_FEATURES,
    ChurnModel,
    HorizonCalibrator,
    encode,
    fit_calibrator,
    fit_hazard,
)
from ml_tasks.utc_days import day_end, days

log = logging.getLogger(__name__)

MODEL_NAME = "churn"
#: Where training features come from: "feast" (the point-in-time join of
#: ml_tasks.feature_store.historical_features, the default) or "warehouse" (the same rows
#: of features.user_daily joined on user_id and dt; tests show the two frames are equal).
FEATURE_SOURCE = "feast"


class NotEnoughHistory(RuntimeError):
    """The warehouse does not hold enough feature days before the training date."""


@dataclass(frozen=True)
class Splits:
    train: list[date]
    calibration: list[date]
    holdout: list[date]
    #: Horizons longer than the split horizon: their own calibration dates.
    late_calibration: dict[int, list[date]] = field(default_factory=dict)

    @property
    def all(self) -> list[date]:
        return sorted({*self.train, *self.holdout, *self.calibration_all})

    @property
    def calibration_all(self) -> list[date]:
        """Every date any horizon calibrates on."""
        late = [d for dates in self.late_calibration.values() for d in dates]
        return sorted({*self.calibration, *late})

    def calibration_for(self, horizon: int) -> list[date]:
        """The scoring dates horizon ``horizon`` calibrates on."""
        return self.late_calibration.get(horizon, self.calibration)

    def to_dict(self) -> dict:
        def span(ds: list[date]) -> dict:
            return {"first": ds[0].isoformat(), "last": ds[-1].isoformat(), "dates": len(ds)}

        return {
            "train": span(self.train),
            "calibration": span(self.calibration),
            "holdout": span(self.holdout),
            **{
                f"calibration_{h}d": span(dates)
                for h, dates in sorted(self.late_calibration.items())
            },
        }


def plan_splits(day: date, cfg: ChurnConfig, first_feature_day: date) -> Splits:
    """The scoring dates of each split for training date ``day`` (see the module docstring)."""
    w = cfg.window
    end = labels.last_fully_labelled_day(w.split_horizon, day)
    holdout = days(end - timedelta(days=w.holdout_days - 1), end)
    cal_end = holdout[0] - timedelta(days=1)
    calibration = days(cal_end - timedelta(days=w.calibration_days - 1), cal_end)
    train_end = calibration[0] - timedelta(days=1)
    earliest = first_feature_day + timedelta(days=w.min_history_days)
    train = days(
        max(earliest, train_end - timedelta(days=w.lookback_days - 1)), train_end, w.stride_days
    )
    if not train or calibration[0] < earliest:
        raise NotEnoughHistory(
            f"training churn on {day} needs feature days from {earliest} through {end} "
            f"({w.split_horizon}-day labels must be known on the holdout); the first feature "
            f"day is {first_feature_day}"
        )
    late: dict[int, list[date]] = {}
    for h in sorted(cfg.horizons):
        if h <= w.split_horizon:
            continue
        last = labels.last_fully_labelled_day(h, day)
        # as many of the days as the history holds (min_rows decides if they are enough)
        first = max(earliest, last - timedelta(days=w.late_calibration_days - 1))
        dates = days(first, last, w.late_calibration_stride)
        if dates:
            late[h] = dates
    held = {d for dates in late.values() for d in dates}
    kept = [d for d in train if d not in held]
    if late and not kept:
        late = {}  # too little history to spare dates: the long horizons stay uncalibrated
    else:
        train = kept
    return Splits(train, calibration, holdout, late)


def first_feature_day(dsn: str) -> date:
    with warehouse.connect(dsn) as conn:
        first = conn.execute(
            "SELECT min(dt) FROM features.build_log WHERE table_name = 'features.user_daily'"
        ).fetchone()[0]
    if first is None:
        raise NotEnoughHistory("features.user_daily has no feature day yet")
    return first


def training_frame(dates: list[date], *, service: str, dsn: str | None = None) -> pd.DataFrame:
    """Features of every user active on each date: (user_id, dt, <feature columns>).

    Point in time: the features of scoring date D are those stamped at the end of D, i.e.
    what Feast returns for ``event_timestamp = D+1 00:00 UTC``.
    """
    target = warehouse.resolve_dsn(dsn=dsn)
    date_list = ", ".join(f"DATE '{d.isoformat()}'" for d in sorted(dates))
    if FEATURE_SOURCE == "feast":
        from ml_tasks.feature_store import apply, feature_days_sql, historical_features

        apply(dsn=target)  # idempotent: registers the feature services on a fresh warehouse
        entity_sql = (
            "SELECT user_id, ((dt + 1)::timestamp AT TIME ZONE 'UTC') AS event_timestamp"
            f" FROM features.user_daily WHERE {feature_days_sql(dates)} AND dt IN ({date_list})"
        )
        frame = historical_features(entity_sql, service, dsn=target)
        ts = pd.to_datetime(frame["event_timestamp"], utc=True)
        frame["dt"] = (ts - pd.Timedelta(days=1)).dt.date
        return frame.drop(columns=["event_timestamp"])
    with warehouse.connect(target) as conn:
        cur = conn.execute(f"SELECT * FROM features.user_daily WHERE dt IN ({date_list})")
        columns = [d.name for d in cur.description]
        frame = pd.DataFrame(cur.fetchall(), columns=columns)
    frame["dt"] = pd.to_datetime(frame["dt"]).dt.date
    return frame.drop(
        columns=[c for c in ("feature_ts", "run_id", "computed_at") if c in frame.columns]
    )


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in NON_FEATURES]


# --------------------------------------------------------------------------- baseline


@dataclass
class Baseline:
    """Logistic regression per horizon on recency/frequency features."""

    features: list[str]
    models: dict[int, object]

    def predict(self, frame: pd.DataFrame) -> dict[int, np.ndarray]:
        X = encode(frame, self.features)
        return {h: m.predict_proba(X)[:, 1] for h, m in self.models.items()}


def fit_baseline(train: pd.DataFrame, cfg: ChurnConfig, day: date) -> Baseline:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = [f for f in cfg.baseline_features if f in train.columns]
    models = {}
    for h in cfg.horizons:
        rows = _known(train, h, day)
        y = rows[labels.label_column(h)].astype(int)
        if len(rows) < cfg.calibration.min_rows or y.nunique() < 2:
            continue
        pipe = make_pipeline(
            SimpleImputer(strategy="constant", fill_value=999.0),
            StandardScaler(),
            LogisticRegression(max_iter=500),
        )
        pipe.fit(encode(rows, feats), y)
        models[h] = pipe
    return Baseline(feats, models)


# --------------------------------------------------------------------------- helpers


def _known(frame: pd.DataFrame, horizon: int, day: date) -> pd.DataFrame:
    """Rows of dates whose ``horizon`` labels are known for every user."""
    last = labels.last_fully_labelled_day(horizon, day)
    col = labels.label_column(horizon)
    return frame[(frame["dt"] <= last) & frame[col].notna()]


def _evaluate(probs: dict[int, np.ndarray], frame: pd.DataFrame, cfg, day) -> dict:
    """Metrics per horizon (str keys) of predictions aligned with ``frame``'s rows."""
    out = {}
    for h in cfg.horizons:
        if h not in probs:
            continue
        last = labels.last_fully_labelled_day(h, day)
        col = labels.label_column(h)
        mask = ((frame["dt"] <= last) & frame[col].notna()).to_numpy()
        if mask.sum() == 0:
            continue
        out[str(h)] = binary_metrics(frame[col].to_numpy()[mask].astype(int), probs[h][mask])
    return out


def _as_dict(model: ChurnModel, frame: pd.DataFrame) -> dict[int, np.ndarray]:
    p = model.predict(frame)
    return {h: p[f"p_churn_{h}d"].to_numpy() for h in model.horizons}


def _calibrate(
    model: ChurnModel, cal: pd.DataFrame, cfg: ChurnConfig, day: date, splits: Splits
) -> None:
    """Fit each horizon's calibrator on its own calibration dates' known labels."""
    raw = model.raw_probabilities(cal)
    for i, h in enumerate(cfg.horizons):
        last = labels.last_fully_labelled_day(h, day)
        col = labels.label_column(h)
        mask = (
            cal["dt"].isin(splits.calibration_for(h)) & (cal["dt"] <= last) & cal[col].notna()
        ).to_numpy()
        y = cal[col].to_numpy()[mask].astype(int)
        method = cfg.calibration.method
        if h in splits.late_calibration:
            method = cfg.calibration.late_method or method
        if mask.sum() >= cfg.calibration.min_rows and y.sum() >= cfg.calibration.min_positives:
            model.calibrators[h] = fit_calibrator(method, raw[mask, i], y)
        else:
            model.calibrators[h] = HorizonCalibrator("identity")


def _score(metrics: dict, cfg: ChurnConfig) -> float:
    value = (metrics.get(str(cfg.gate.horizon)) or {}).get(cfg.gate.metric)
    return -1.0 if value is None else value


# --------------------------------------------------------------------------- training


def fit_models(
    train: pd.DataFrame,
    cal: pd.DataFrame,
    holdout: pd.DataFrame,
    cfg: ChurnConfig,
    day: date,
    splits: Splits,
) -> tuple[ChurnModel, dict]:
    """Fit every family, calibrate, evaluate; return the chosen model and the metrics."""
    names = feature_columns(
        train.drop(
            columns=[
                c
                for c in train.columns
                if c.startswith("label_")
                or c in ("is_paying_label", "churn_day", "event", "duration", "observed")
            ]
        )
    )
    X = encode(train, names)
    duration = train["duration"].to_numpy()
    event = train["event"].to_numpy(dtype=bool)
    observed = train["observed"].to_numpy()
    candidates: dict[str, ChurnModel] = {}
    seconds: dict[str, float] = {}
    for family in cfg.families:
        started = time.perf_counter()
        est = fit_hazard(family, X, duration, event, observed, cfg.band_edges, cfg.gbm)
        model = ChurnModel(
            names,
            tuple(cfg.horizons),
            tuple(cfg.band_edges),
            [(family, est)],
            reason_horizon=cfg.gate.horizon,
        )
        _calibrate(model, cal, cfg, day, splits)
        candidates[family] = model
        seconds[family] = round(time.perf_counter() - started, 2)
        log.info("fitted churn hazard model %s in %.1f s", family, seconds[family])
    metrics = {
        name: _evaluate(_as_dict(m, holdout), holdout, cfg, day) for name, m in candidates.items()
    }
    best = max(candidates, key=lambda n: _score(metrics[n], cfg))
    chosen_name = best
    if len(candidates) > 1:
        members = [m for model in candidates.values() for m in model.members]
        ensemble = ChurnModel(
            names,
            tuple(cfg.horizons),
            tuple(cfg.band_edges),
            members,
            reason_horizon=cfg.gate.horizon,
        )
        _calibrate(ensemble, cal, cfg, day, splits)
        metrics["ensemble"] = _evaluate(_as_dict(ensemble, holdout), holdout, cfg, day)
        candidates["ensemble"] = ensemble
        if _score(metrics["ensemble"], cfg) > _score(metrics[best], cfg):
            chosen_name = "ensemble"
    return candidates[chosen_name], {
        "chosen": chosen_name,
        "candidates": metrics,
        "fit_seconds": seconds,
        "models": candidates,
    }


def _version(day: date, now: datetime) -> str:
    return f"{day:%Y%m%d}-{now:%H%M%S}-{uuid.uuid4().hex[:6]}"


def _record_run(dsn: str, run_id: str, day: date, started_at: datetime, **values) -> None:
    registry.record_training_run(dsn, MODEL_NAME, run_id, day, started_at, **values)


def train_churn(
    day: date,
    *,
    run_id: str,
    dsn: str | None = None,
    artifacts: Path | None = None,
    config: ChurnConfig | None = None,
    promote_at: datetime | None = None,
) -> dict:
    """Train the churn model for training date ``day``, register it, run the gate, write
    the model card. Returns a JSON-friendly summary (version, metrics, gate verdict)."""
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    cfg = config or ChurnConfig.load()
    target = warehouse.ensure_migrated(dsn)
    return training_inputs.train_unless_unchanged(
        target,
        MODEL_NAME,
        day,
        cfg,
        lambda: _train(day, cfg, target, run_id, artifacts, promote_at, started, started_at),
        run_id=run_id,
        started=started,
        started_at=started_at,
    )


def load_dataset(day: date, splits: Splits, cfg: ChurnConfig, dsn: str) -> pd.DataFrame:
    """Features joined with labels (as of ``day``) for every scoring date of the splits."""
    feats = training_frame(splits.all, service=cfg.feature_service, dsn=dsn)
    labelled = labels.churn_labels(splits.all, day, horizons=cfg.horizons, dsn=dsn)
    labelled = labelled.rename(columns={"is_paying": "is_paying_label"})
    return feats.merge(labelled, on=["user_id", "dt"], how="inner")


def _train(day, cfg, target, run_id, artifacts, promote_at, started, started_at) -> dict:
    splits = plan_splits(day, cfg, first_feature_day(target))
    data = load_dataset(day, splits, cfg, target)
    train = data[data["dt"].isin(splits.train)]
    if len(train) > cfg.window.max_train_rows:
        train = train.sample(cfg.window.max_train_rows, random_state=cfg.gbm.seed)
    cal = data[data["dt"].isin(splits.calibration_all)].reset_index(drop=True)
    holdout = data[data["dt"].isin(splits.holdout)].reset_index(drop=True)

    model, fit_info = fit_models(train, cal, holdout, cfg, day, splits)
    holdout_probs = model.predict(holdout)
    chosen = fit_info["candidates"][fit_info["chosen"]]
    baseline = fit_baseline(train, cfg, day)
    baseline_metrics = _evaluate(baseline.predict(holdout), holdout, cfg, day)
    p = holdout_probs.to_numpy()
    monotone_share = float(np.mean(np.all(np.diff(p, axis=1) >= 0, axis=1))) if len(p) else 1.0

    # Models become champion at the logical end of their training day, so that scoring day
    # D (which asks for the champion when D closed) uses a model trained on data up to D,
    # and a backfill of scores reproduces history. The champion to beat is the one then.
    promote_at = promote_at or day_end(day)
    champ_record = registry.champion(MODEL_NAME, promote_at, dsn=target)
    champ_metrics, champ_error = None, None
    if champ_record is not None:
        try:
            champ_model = registry.load_churn_model(champ_record)
            champ_metrics = _evaluate(_as_dict(champ_model, holdout), holdout, cfg, day)
        except Exception as exc:  # a champion we cannot evaluate blocks promotion
            champ_error = f"{type(exc).__name__}: {exc}"

    validation = registry.features_validated(splits.all, dsn=target)
    report = registry.gate(
        candidate=chosen,
        baseline=baseline_metrics,
        champion=champ_metrics,
        champion_version=champ_record.version if champ_record else None,
        champion_error=champ_error,
        validation=validation,
        metric=cfg.gate.metric,
        horizon=cfg.gate.horizon,
        tolerance=cfg.gate.tolerance,
        max_ece=cfg.gate.max_ece,
        require_validated_features=cfg.gate.require_validated_features,
    )
    later = registry.later_champion(MODEL_NAME, promote_at, dsn=target)
    if later is not None:
        detail = (
            f"a later champion ({later.version}) already serves from after {promote_at}:"
            " a backfilled training run does not rewrite champion history"
        )
        report.setdefault("checks", []).append(
            {"check": "chronology", "passed": False, "detail": detail}
        )
        failing = report["reasons"] if not report["passed"] else []
        report["reasons"] = [*failing, detail]
        report["passed"] = False
        report["verdict"] = "keep as candidate"
    now = datetime.now(UTC)
    version = _version(day, now)
    metrics = {
        **chosen,
        "chosen": fit_info["chosen"],
        "kind": model.kind,
        "baseline": baseline_metrics,
        "candidates": fit_info["candidates"],
        "champion": (
            {"version": champ_record.version, **(champ_metrics or {})} if champ_record else None
        ),
        "monotone_share": monotone_share,
        "calibrated_horizons": [h for h, c in model.calibrators.items() if c.model is not None],
        "splits": splits.to_dict(),
        "rows": {"train": len(train), "calibration": len(cal), "holdout": len(holdout)},
        "fit_seconds": fit_info["fit_seconds"],
    }
    manifest = {
        "model": MODEL_NAME,
        "training_date": day.isoformat(),
        "feature_service": cfg.feature_service,
        "feature_source": FEATURE_SOURCE,
        "feature_names": model.feature_names,
        "horizons": list(cfg.horizons),
        "band_edges": list(cfg.band_edges),
        "members": [f for f, _ in model.members],
        "run_id": run_id,
        "trained_at": now.isoformat(),
    }
    path, sha = registry.save_artifact(model, MODEL_NAME, version, manifest, artifacts)
    record = registry.register(
        name=MODEL_NAME,
        version=version,
        horizons=list(cfg.horizons),
        train_start=splits.train[0],
        train_end=day,
        feature_service=cfg.feature_service,
        metrics=metrics,
        artifact_path=path,
        artifact_sha256=sha,
        run_id=run_id,
        trained_at=now,
        dsn=target,
    )
    if report["passed"]:
        record = registry.promote(MODEL_NAME, version, run_id=run_id, at=promote_at, dsn=target)
    from ml_tasks.model_card import write_model_card

    card = write_model_card(
        record,
        model,
        holdout,
        holdout_probs,
        baseline=baseline,
        gate_report=report,
        validation=validation,
        day=day,
    )
    registry.update_report(
        MODEL_NAME, version, gate_report=report, model_card_uri=str(card), dsn=target
    )
    seconds = time.perf_counter() - started
    _record_run(
        target,
        run_id,
        day,
        started_at,
        status="succeeded",
        finished_at=datetime.now(UTC),
        version=version,
        rows_train=len(train),
        rows_calibration=len(cal),
        rows_holdout=len(holdout),
        seconds=seconds,
    )
    log.info("trained churn %s in %.1f s: %s", version, seconds, report["verdict"])
    return {
        "model": MODEL_NAME,
        "version": version,
        "status": record.status,
        "chosen": fit_info["chosen"],
        "metrics": {h: chosen[h] for h in chosen},
        "baseline": baseline_metrics,
        "champion_before": champ_record.version if champ_record else None,
        "gate": {"passed": report["passed"], "reasons": report["reasons"]},
        "artifact": str(path),
        "model_card": str(card),
        "seconds": round(seconds, 1),
    }


def compare_with_truth(
    day: date,
    model: ChurnModel,
    truth_dir: Path,
    *,
    dsn: str | None = None,
    config: ChurnConfig | None = None,
) -> dict:
    """Per horizon, the model's holdout ROC AUC next to the simulator's true hazard's AUC
    on the same users and days (the quality bar: 30-day ratio >= 0.95), plus monotonicity."""
    from ml_tasks.churn.evaluation import true_hazard_comparison

    cfg = config or ChurnConfig.load()
    target = warehouse.resolve_dsn(dsn=dsn)
    splits = plan_splits(day, cfg, first_feature_day(target))
    holdout = load_dataset(day, splits, cfg, target)
    holdout = holdout[holdout["dt"].isin(splits.holdout)].reset_index(drop=True)
    probs = model.predict(holdout)
    out = {}
    for h in cfg.horizons:
        known = (holdout["dt"] <= labels.last_fully_labelled_day(h, day)).to_numpy()
        if known.any():
            out[str(h)] = true_hazard_comparison(
                holdout[known].reset_index(drop=True),
                probs[known].reset_index(drop=True),
                truth_dir,
                horizon=h,
            )
    p = probs.to_numpy()
    out["monotone_share"] = float(np.mean(np.all(np.diff(p, axis=1) >= 0, axis=1)))
    return out


def forward_evaluation(
    model: ChurnModel,
    trained_on: date,
    as_of: date,
    truth_dir: Path | None = None,
    *,
    dsn: str | None = None,
    config: ChurnConfig | None = None,
    stride_days: int = 3,
) -> dict:
    """Metrics of a model on scoring dates after its training day, labelled as of ``as_of``.

    The out-of-time check a holdout inside the training window cannot give, and the only
    one for horizons longer than the holdout's (90 days): dates ``trained_on + 1`` through
    the last date whose labels at the horizon are known on ``as_of``, every ``stride_days``.
    Per horizon: :func:`binary_metrics` (ROC AUC, PR AUC, Brier, ECE, lift) and, with the
    simulator's ``truth_dir``, the true hazard's AUC on the same rows.
    """
    from ml_tasks.churn.evaluation import true_hazard_comparison

    cfg = config or ChurnConfig.load()
    target = warehouse.resolve_dsn(dsn=dsn)
    first = trained_on + timedelta(days=1)
    last = labels.last_fully_labelled_day(min(cfg.horizons), as_of)
    dates = days(first, last, stride_days) if last >= first else []
    if not dates:
        return {"dates": 0}
    feats = training_frame(dates, service=cfg.feature_service, dsn=target)
    labelled = labels.churn_labels(dates, as_of, horizons=cfg.horizons, dsn=target)
    labelled = labelled.rename(columns={"is_paying": "is_paying_label"})
    frame = feats.merge(labelled, on=["user_id", "dt"], how="inner").reset_index(drop=True)
    probs = model.predict(frame)
    out: dict = {"dates": len(dates), "first": dates[0].isoformat(), "last": dates[-1].isoformat()}
    for h in cfg.horizons:
        col = labels.label_column(h)
        known = (
            (frame["dt"] <= labels.last_fully_labelled_day(h, as_of)) & frame[col].notna()
        ).to_numpy()
        if not known.any():
            continue
        y = frame[col].to_numpy()[known].astype(int)
        metrics = binary_metrics(y, probs[f"p_churn_{h}d"].to_numpy()[known])
        metrics["dates"] = int(frame.loc[known, "dt"].nunique())
        if truth_dir is not None:
            truth = true_hazard_comparison(
                frame[known].reset_index(drop=True),
                probs[known].reset_index(drop=True),
                truth_dir,
                horizon=h,
            )
            metrics["true_hazard_auc"] = truth.get("true_hazard_auc")
            metrics["auc_ratio"] = truth.get("ratio")
        out[str(h)] = metrics
    p = probs.to_numpy()
    out["monotone_share"] = float(np.mean(np.all(np.diff(p, axis=1) >= 0, axis=1)))
    return out
