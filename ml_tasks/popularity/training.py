"""Train, evaluate, register and gate the popularity model for one training date.

Splits, per horizon H, by scoring date D (targets as of the end of the training date
``day``: a target is known once D + H <= day):

- **holdout**: the ``holdout_days`` latest dates whose H-day targets are known, i.e. ending
  on day - H;
- **training**: up to ``lookback_days`` dates before them, every ``stride_days``-th one,
  ending ``purge`` days before the holdout starts so that the training targets were known
  when the holdout's first forecast would have been made (purge = H, shortened -- and
  recorded in the metrics -- when fewer than ``min_train_dates`` dates would remain, as in
  a short history), and never closer than ``min_history_days`` to the first activity day.

Per horizon, the global LightGBM model, the LSTM and their average are evaluated on the
holdout by WAPE (sum |y - y_hat| / sum y); the best one serves that horizon. The naive
baseline (the last H days' plays) is always reported beside it, also on new releases.

Gate: with a champion (the one serving when the training day closes), the candidate's
WAPE at ``gate.horizon`` on this holdout must not exceed the champion's (evaluated on the
same rows) by more than ``gate.tolerance``; the first model must beat the naive baseline
(WAPE below ``max_naive_ratio`` x naive). The feature days used must have passed
validation (``features.track_daily`` suite) unless the config says otherwise, and a
backfilled run never rewrites a later champion's stint. Promotion happens at the logical
end of the training day.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks import registry, training_inputs, warehouse
from ml_tasks.popularity.config import FAMILIES, PopularityConfig
from ml_tasks.popularity.data import (
    SAMPLE_COLUMN,
    EntitySample,
    build_examples,
    catalogue_rows,
    naive_column,
    target_column,
)
from ml_tasks.popularity.model import (
    PopularityModel,
    feature_names,
    fit_lightgbm,
    fit_lstm,
    prediction_column,
    wape,
)
from ml_tasks.utc_days import day_end, days

log = logging.getLogger(__name__)

MODEL_NAME = "popularity"
FEATURE_SUITE = "features.track_daily"


class NotEnoughHistory(RuntimeError):
    """The warehouse does not hold enough activity days before the training date."""


@dataclass(frozen=True)
class HorizonSplit:
    horizon: int
    train: list[date]
    holdout: list[date]
    purge: int

    def to_dict(self) -> dict:
        def span(ds: list[date]) -> dict:
            return {"first": ds[0].isoformat(), "last": ds[-1].isoformat(), "dates": len(ds)}

        return {"train": span(self.train), "holdout": span(self.holdout), "purge_days": self.purge}


def plan_splits(day: date, cfg: PopularityConfig, first_day: date) -> dict[int, HorizonSplit]:
    """Training and holdout scoring dates per horizon (see the module docstring)."""
    w = cfg.window
    earliest = first_day + timedelta(days=w.min_history_days)
    out = {}
    for h in sorted(cfg.horizons):
        last = day - timedelta(days=h)
        holdout = days(last - timedelta(days=w.holdout_days - 1), last)
        if not holdout or holdout[0] < earliest:
            raise NotEnoughHistory(
                f"training popularity on {day} needs activity days from {first_day} such that"
                f" the {h}-day holdout ({holdout[0] if holdout else last}..{last}) starts at"
                f" least {w.min_history_days} days after the first one"
            )
        train: list[date] = []
        purge = h
        while purge >= 1:
            end = holdout[0] - timedelta(days=purge)
            start = max(earliest, end - timedelta(days=w.lookback_days - 1))
            train = days(start, end, w.stride_days)
            if len(train) >= w.min_train_dates:
                break
            purge -= 1
        if len(train) < w.min_train_dates:
            raise NotEnoughHistory(
                f"training popularity on {day}: fewer than {w.min_train_dates} training dates"
                f" for the {h}-day horizon between {earliest} and {holdout[0]}"
            )
        out[h] = HorizonSplit(h, train, holdout, purge)
    return out


def scoring_dates(splits: dict[int, HorizonSplit]) -> list[date]:
    """Every training and holdout scoring date of the splits, oldest first."""
    return sorted({d for s in splits.values() for d in (*s.train, *s.holdout)})


def first_activity_day(dsn: str) -> date:
    with warehouse.connect(dsn) as conn:
        first = conn.execute(
            "SELECT min(dt) FROM features.build_log"
            " WHERE table_name = 'features.track_activity_daily'"
        ).fetchone()[0]
    if first is None:
        raise NotEnoughHistory("features.track_activity_daily has no day yet")
    return first


# --------------------------------------------------------------------------- evaluation


def _segment(frame: pd.DataFrame, h: int, cfg: PopularityConfig) -> np.ndarray:
    """New releases: released less than ``new_release_days`` before D (or within (D, D+H])."""
    since = frame["days_since_release"].to_numpy(dtype=float)
    return (since < cfg.window.new_release_days) & (since + h >= 0)


def evaluate(
    model: PopularityModel,
    frame: pd.DataFrame,
    h: int,
    cfg: PopularityConfig,
    served: pd.DataFrame | None = None,
) -> dict:
    """WAPE of the served forecast at horizon ``h`` on ``frame``, beside the naive baseline,
    overall and on new releases. ``served``: ``model.predict(frame)`` (at least up to ``h``),
    when already made."""
    y = frame[target_column(h)].to_numpy(dtype=float)
    served = model.predict(frame, upto=h) if served is None else served
    p = served[prediction_column(h)].to_numpy()
    naive = frame[naive_column(h)].to_numpy(dtype=float)
    new = _segment(frame, h, cfg)
    out = {
        "rows": len(frame),
        "actual_plays": float(y.sum()),
        "wape": wape(y, p),
        "naive_wape": wape(y, naive),
        "bias": float(p.sum() / y.sum() - 1.0) if y.sum() > 0 else None,
        "new_releases": {
            "rows": int(new.sum()),
            "wape": wape(y[new], p[new]) if new.any() else None,
            "naive_wape": wape(y[new], naive[new]) if new.any() else None,
        },
    }
    out["ratio_to_naive"] = (
        out["wape"] / out["naive_wape"] if out["wape"] is not None and out["naive_wape"] else None
    )
    return out


#: A horizon's share of its training rows in the entity sample is set so that the rows
#: drawn exceed its row cap by this many standard deviations of the draw's binomial
#: count: falling short has a probability below 1e-9. The cap is then an exact uniform
#: sample of what was drawn. At a 300,000-row cap that draws 1.1 % more than the cap.
SAMPLE_SIGMAS = 6.0


def sample_share(cap: int, rows: int) -> float:
    """The share of ``rows`` to draw so that at least ``cap`` are drawn (see
    :data:`SAMPLE_SIGMAS`); 1.0 when ``rows`` do not exceed it."""
    # smallest mean m with m - k * sqrt(m) >= cap (the count's sd is at most sqrt(m))
    k = SAMPLE_SIGMAS
    mean = (k / 2 + (k * k / 4 + cap) ** 0.5) ** 2
    return 1.0 if rows <= 0 else min(1.0, mean / rows)


def plan_sample(
    splits: dict[int, HorizonSplit], rows: dict[date, int], cfg: PopularityConfig
) -> tuple[EntitySample, dict[int, float]]:
    """The entity sample that leaves each horizon at least its row cap of training rows
    (:func:`sample_share`) and every holdout row, and each horizon's share.

    ``rows``: catalogue rows per date (:func:`~ml_tasks.popularity.data.catalogue_rows`).
    Training all rows and then sampling ``max_train_rows`` of them would read every track of
    every date through Feast's point-in-time join, most of them to be thrown away.
    """
    cap = cfg.window.max_train_rows
    horizon_share = {}
    for h, split in splits.items():
        n = sum(rows.get(d, 0) for d in split.train)
        horizon_share[h] = 1.0 if n <= cap else sample_share(cap, n)
    shares: dict[date, float] = {}
    for h, split in splits.items():
        for d in split.train:
            shares[d] = max(shares.get(d, 0.0), horizon_share[h])
    for split in splits.values():
        for d in split.holdout:
            shares[d] = 1.0
    return EntitySample(shares, cfg.lightgbm.seed), horizon_share


@dataclass(frozen=True)
class HorizonRows:
    """One horizon's rows of the examples, by position: its training rows (its entity
    sample, then at most the row cap, in the order the cap's sample drew them) and its
    holdout rows (all of them, in frame order)."""

    train: np.ndarray
    holdout: np.ndarray

    def frames(self, data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        return data.iloc[self.train], data.iloc[self.holdout].reset_index(drop=True)


def _horizon_rows(
    data: pd.DataFrame, split: HorizonSplit, cfg: PopularityConfig, share: float
) -> HorizonRows:
    h = split.horizon
    in_train = data["dt"].isin(split.train) & data[target_column(h)].notna()
    if share < 1.0:
        in_train &= data[SAMPLE_COLUMN] < share
        drawn = int(in_train.sum())
        if drawn < cfg.window.max_train_rows:
            log.warning(
                "popularity %dd: the entity sample drew %d training rows, below the cap %d",
                h,
                drawn,
                cfg.window.max_train_rows,
            )
    train = pd.Series(np.flatnonzero(in_train.to_numpy()))
    if len(train) > cfg.window.max_train_rows:
        # the rows DataFrame.sample draws from the training frame: the draw depends only on
        # the number of rows and the seed
        train = train.sample(cfg.window.max_train_rows, random_state=cfg.lightgbm.seed)
    return HorizonRows(train.to_numpy(), np.flatnonzero(data["dt"].isin(split.holdout)))


#: A family's fits: per horizon, the member, its fit's wall seconds and its holdout forecast.
FamilyFits = dict[int, tuple[Any, float, np.ndarray]]


def _fit_family(
    family: str,
    data: pd.DataFrame,
    rows: dict[int, HorizonRows],
    names: list[str],
    genres: list[str],
    cfg: PopularityConfig,
) -> FamilyFits:
    """Fit one family on every horizon, one after another, and forecast each holdout.

    Each horizon's frames are cut from ``data`` here and dropped after its fit, so two
    families fitting at once hold at most two horizons' frames."""
    fits: FamilyFits = {}
    for h, horizon_rows in rows.items():
        train, holdout = horizon_rows.frames(data)
        col = target_column(h)
        t0 = time.perf_counter()
        if family == "lightgbm":
            member = fit_lightgbm(train, col, names, genres, cfg.lightgbm)
        else:
            member = fit_lstm(train, col, names, genres, cfg.sequence_days, cfg.lstm)
        fits[h] = (member, round(time.perf_counter() - t0, 2), member.predict(holdout))
        del train, holdout
    return fits


def _fit_families(
    data: pd.DataFrame,
    rows: dict[int, HorizonRows],
    names: list[str],
    genres: list[str],
    cfg: PopularityConfig,
) -> dict[str, FamilyFits]:
    """Every configured family's fits; with ``cfg.families_together``, the families fit at
    once, one thread each.

    Each family's fit is single-threaded (LightGBM's ``n_jobs``, the LSTM's ``threads``)
    and both release the GIL while they compute, so on two cores the families together
    take about as long as the slower one. Within a family the horizons fit one after
    another, so the forecasts are those of fitting the families one after another.
    """
    # the LSTM first: it fits on this thread, the other family on the pool's
    families = [f for f in ("lstm", "lightgbm") if f in cfg.families]
    args = (data, rows, names, genres, cfg)
    if not cfg.families_together or len(families) < 2:
        return {f: _fit_family(f, *args) for f in families}
    first, *others = families
    with ThreadPoolExecutor(len(others), thread_name_prefix="popularity-fit") as pool:
        pending = {f: pool.submit(_fit_family, f, *args) for f in others}
        fits = {first: _fit_family(first, *args)}
        fits.update({f: future.result() for f, future in pending.items()})
    return fits


def fit_horizons(
    data: pd.DataFrame,
    splits: dict[int, HorizonSplit],
    cfg: PopularityConfig,
    shares: dict[int, float] | None = None,
) -> tuple[PopularityModel, dict]:
    """Fit every family per horizon, pick the best (or the blend) on the holdout. Returns
    the model and what the fits did; its ``holdout_forecasts`` are the chosen member's
    forecasts of each horizon's holdout (:meth:`PopularityModel.predict`'s ``made``), of
    the rows at the positions ``holdout_rows`` of ``data``, in that order.

    ``shares``: per horizon, the share of its training rows it samples (by the rows'
    :data:`SAMPLE_COLUMN` draw, when ``data`` came from a :func:`plan_sample` sample)."""
    names = feature_names(data.drop(columns=[c for c in data.columns if c.startswith("y_")]))
    genres = sorted(str(g) for g in data["genre"].dropna().unique())
    model = PopularityModel(tuple(sorted(cfg.horizons)), cfg.sequence_days, names, {})
    horizon_rows = {
        h: _horizon_rows(data, split, cfg, (shares or {}).get(h, 1.0))
        for h, split in sorted(splits.items())
    }
    fits = _fit_families(data, horizon_rows, names, genres, cfg)
    candidates: dict[str, dict[str, float | None]] = {}
    fit_seconds: dict[str, dict[str, float]] = {}
    rows: dict[str, dict[str, int]] = {}
    forecasts: dict[int, np.ndarray] = {}
    for h, positions in horizon_rows.items():
        y = data[target_column(h)].to_numpy(dtype=float)[positions.holdout]
        preds: dict[str, np.ndarray] = {}
        secs: dict[str, float] = {}
        for family in (f for f in FAMILIES if f in fits):
            member, secs[family], preds[family] = fits[family][h]
            getattr(model, family)[h] = member
        if cfg.blend and len(preds) == 2:
            preds["blend"] = 0.5 * (preds["lightgbm"] + preds["lstm"])
        scores = {name: wape(y, p) for name, p in preds.items()}
        ranked = [n for n in scores if scores[n] is not None]
        chosen = min(ranked, key=lambda n: scores[n]) if ranked else next(iter(preds))
        model.chosen[h] = chosen
        forecasts[h] = preds[chosen]
        candidates[str(h)] = {n: (None if v is None else round(v, 5)) for n, v in scores.items()}
        fit_seconds[str(h)] = secs
        rows[str(h)] = {"train": len(positions.train), "holdout": len(positions.holdout)}
        if h in model.lstm:
            member = model.lstm[h]
            rows[str(h)].update(
                lstm_fit=member.rows_fit,
                lstm_validation=member.rows_validation,
                lstm_epochs=member.epochs_run,
            )
        log.info("popularity %dd: %s -> %s", h, candidates[str(h)], chosen)
    info = {
        "candidates": candidates,
        "fit_seconds": fit_seconds,
        "rows": rows,
        "holdout_forecasts": forecasts,
        "holdout_rows": {h: positions.holdout for h, positions in horizon_rows.items()},
    }
    return model.prune(), info


# --------------------------------------------------------------------------- the gate


def gate(
    *,
    candidate: dict,
    champion: dict | None,
    champion_version: str | None,
    champion_error: str | None,
    validation: dict,
    cfg: PopularityConfig,
) -> dict:
    """The promotion verdict (same shape as :func:`ml_tasks.registry.gate`'s).

    ``candidate`` / ``champion`` map str(horizon) -> {"wape", "naive_wape", ...}.
    """
    h = str(cfg.gate.horizon)
    checks = []
    cand = (candidate.get(h) or {}).get("wape")
    if champion_error:
        checks.append(
            {
                "check": "champion",
                "passed": False,
                "detail": f"current champion could not be evaluated: {champion_error}",
            }
        )
    elif champion is not None:
        champ = (champion.get(h) or {}).get("wape")
        ok = cand is not None and (champ is None or cand <= champ + cfg.gate.tolerance)
        checks.append(
            {
                "check": f"WAPE@{h}d vs champion {champion_version}",
                "passed": ok,
                "candidate": cand,
                "champion": champ,
                "tolerance": cfg.gate.tolerance,
                "detail": (
                    f"candidate WAPE {_r(cand)} vs champion {_r(champ)} on the same holdout"
                    f" (may be worse by at most {cfg.gate.tolerance})"
                ),
            }
        )
    else:
        naive = (candidate.get(h) or {}).get("naive_wape")
        bound = None if naive is None else naive * cfg.gate.max_naive_ratio
        ok = cand is not None and bound is not None and cand < bound
        checks.append(
            {
                "check": f"WAPE@{h}d vs naive baseline (first model)",
                "passed": ok,
                "candidate": cand,
                "naive": naive,
                "max_naive_ratio": cfg.gate.max_naive_ratio,
                "detail": (
                    f"candidate WAPE {_r(cand)} must be below {cfg.gate.max_naive_ratio} x the"
                    f" naive baseline's {_r(naive)}"
                ),
            }
        )
    required = cfg.gate.require_validated_features
    checks.append(
        {
            "check": "training data validated",
            **validation,
            "passed": validation["passed"] or not required,
            "required": required,
            "detail": (
                "every feature day passed validation"
                if validation["passed"]
                else _validation_gaps(validation)
                + ("" if required else " (not required by config)")
            ),
        }
    )
    return registry.verdict(checks)


def _validation_gaps(validation: dict) -> str:
    def days_text(ds: list[str]) -> str:
        if not ds:
            return "none"
        return ", ".join(ds) if len(ds) <= 4 else f"{len(ds)} days ({ds[0]} .. {ds[-1]})"

    return (
        f"feature days that failed validation: {days_text(validation['failed_days'])};"
        f" without a verdict: {days_text(validation['missing_days'])}"
    )


def _r(v: float | None) -> str:
    return "none" if v is None else f"{v:.4f}"


# --------------------------------------------------------------------------- training


def load_popularity_model(record: registry.ModelRecord) -> PopularityModel:
    """The verified :class:`PopularityModel` of a registry record (sha256 checked)."""
    model = registry.load_model(record)
    if not isinstance(model, PopularityModel):
        raise registry.RegistryError(f"{record.artifact_path} does not hold a popularity model")
    return model


def _version(day: date, now: datetime) -> str:
    return f"{day:%Y%m%d}-{now:%H%M%S}-{uuid.uuid4().hex[:6]}"


def _record_run(dsn: str, run_id: str, day: date, started_at: datetime, **values) -> None:
    registry.record_training_run(dsn, MODEL_NAME, run_id, day, started_at, **values)


def load_dataset(
    day: date,
    splits: dict[int, HorizonSplit],
    cfg: PopularityConfig,
    dsn: str,
    sample: EntitySample | None = None,
) -> pd.DataFrame:
    """Examples (features from Feast, lags, naive baselines, targets as of ``day``) for
    every scoring date of the splits: all rows, or those of ``sample``."""
    dates = scoring_dates(splits)
    return build_examples(
        dates,
        as_of=day,
        dsn=dsn,
        horizons=tuple(sorted(cfg.horizons)),
        sequence_days=cfg.sequence_days,
        source="feast",
        sample=sample,
    )


def train_popularity(
    day: date,
    *,
    run_id: str,
    dsn: str | None = None,
    artifacts: Path | None = None,
    config: PopularityConfig | None = None,
    promote_at: datetime | None = None,
) -> dict:
    """Train the popularity models for training date ``day``, register the chosen one, run
    the gate, write the model card. Returns a JSON-friendly summary (version, WAPE per
    horizon beside the naive baseline, gate verdict)."""
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    cfg = config or PopularityConfig.load()
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


def _train(day, cfg, target, run_id, artifacts, promote_at, started, started_at) -> dict:
    splits = plan_splits(day, cfg, first_activity_day(target))
    t0 = time.perf_counter()
    dates = scoring_dates(splits)
    catalogue = catalogue_rows(dates, dsn=target)
    sample, shares = plan_sample(splits, catalogue, cfg)
    data = load_dataset(day, splits, cfg, target, sample)
    load_seconds = round(time.perf_counter() - t0, 2)
    log.info(
        "popularity: %d of %d catalogue rows through Feast (training shares %s)",
        len(data),
        sum(catalogue.values()),
        {h: round(s, 4) for h, s in shares.items()},
    )
    model, fit_info = fit_horizons(data, splits, cfg, shares)
    # the holdout rows the fit forecast, in the same order (its forecasts are reused below)
    holdouts = {
        h: data.iloc[rows].reset_index(drop=True)
        for h, rows in fit_info.pop("holdout_rows").items()
    }
    # the served forecasts of each holdout, made once (the chosen member's own forecast from
    # the fit, the shorter horizons' members again): the evaluation and the card use them
    made = fit_info.pop("holdout_forecasts")
    served = {h: model.predict(frame, upto=h, made={h: made[h]}) for h, frame in holdouts.items()}
    evaluation = {}
    for h, frame in holdouts.items():
        evaluation[str(h)] = {
            **evaluate(model, frame, h, cfg, served[h]),
            "chosen": model.chosen[h],
            "candidates": fit_info["candidates"][str(h)],
        }

    # Models become champion at the logical end of their training day, so that scoring day
    # D (which asks for the champion when D closed) uses a model trained on data up to D,
    # and a backfill of scores reproduces history. The champion to beat is the one then.
    promote_at = promote_at or day_end(day)
    champ_record = registry.champion(MODEL_NAME, promote_at, dsn=target)
    champ_metrics, champ_error = None, None
    if champ_record is not None:
        try:
            champ_model = load_popularity_model(champ_record)
            champ_metrics = {
                str(h): evaluate(champ_model, frame, h, cfg) for h, frame in holdouts.items()
            }
        except Exception as exc:  # a champion we cannot evaluate blocks promotion
            champ_error = f"{type(exc).__name__}: {exc}"

    validation = registry.features_validated(dates, suite=FEATURE_SUITE, dsn=target)
    report = gate(
        candidate=evaluation,
        champion=champ_metrics,
        champion_version=champ_record.version if champ_record else None,
        champion_error=champ_error,
        validation=validation,
        cfg=cfg,
    )
    later = registry.later_champion(MODEL_NAME, promote_at, dsn=target)
    if later is not None:
        detail = (
            f"a later champion ({later.version}) already serves from after {promote_at}:"
            " a backfilled training run does not rewrite champion history"
        )
        report["checks"].append({"check": "chronology", "passed": False, "detail": detail})
        failing = report["reasons"] if not report["passed"] else []
        report["reasons"] = [*failing, detail]
        report["passed"] = False
        report["verdict"] = "keep as candidate"

    now = datetime.now(UTC)
    version = _version(day, now)
    metrics = {
        **evaluation,
        "metric": "wape",
        "chosen": {str(h): c for h, c in model.chosen.items()},
        "kind": model.kind,
        "champion": (
            {"version": champ_record.version, **(champ_metrics or {})} if champ_record else None
        ),
        "splits": {str(h): s.to_dict() for h, s in splits.items()},
        "rows": fit_info["rows"],
        "fit_seconds": fit_info["fit_seconds"],
        "load_seconds": load_seconds,
        "entity_rows": {
            "catalogue": sum(catalogue.values()),
            "sampled": len(data),
            "training_shares": {str(h): round(s, 6) for h, s in shares.items()},
        },
        "features": len(model.feature_names),
        "audio_features": sum(1 for n in model.feature_names if n.startswith("audio_")),
    }
    manifest = {
        "model": MODEL_NAME,
        "training_date": day.isoformat(),
        "feature_service": cfg.feature_service,
        "feature_names": model.feature_names,
        "horizons": list(model.horizons),
        "chosen": metrics["chosen"],
        "sequence_days": cfg.sequence_days,
        "run_id": run_id,
        "trained_at": now.isoformat(),
    }
    path, sha = registry.save_artifact(model, MODEL_NAME, version, manifest, artifacts)
    record = registry.register(
        name=MODEL_NAME,
        version=version,
        horizons=list(model.horizons),
        train_start=min(s.train[0] for s in splits.values()),
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
    from ml_tasks.popularity.card import write_model_card

    card = write_model_card(
        record,
        model,
        holdouts,
        gate_report=report,
        validation=validation,
        day=day,
        served=served,
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
        rows_train=sum(r["train"] for r in fit_info["rows"].values()),
        rows_holdout=sum(r["holdout"] for r in fit_info["rows"].values()),
        seconds=seconds,
    )
    log.info("trained popularity %s in %.1f s: %s", version, seconds, report["verdict"])
    return {
        "model": MODEL_NAME,
        "version": version,
        "status": record.status,
        "chosen": metrics["chosen"],
        "evaluation": evaluation,
        "champion_before": champ_record.version if champ_record else None,
        "gate": {"passed": report["passed"], "reasons": report["reasons"]},
        "artifact": str(path),
        "model_card": str(card),
        "fit_seconds": fit_info["fit_seconds"],
        "rows": fit_info["rows"],
        "seconds": round(seconds, 1),
    }
