"""Churn training, evaluation, registry and gate on a longer simulated world (real Postgres)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from churn_world import ChurnWorld, clone, drop, small_churn_config
from ml_tasks import labels, registry
from ml_tasks.churn import train_churn
from ml_tasks.churn.training import load_dataset, plan_splits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(pg_admin: str, churn_world: ChurnWorld, tmp_path_factory):
    """One database with a first model trained (and promoted) on the world's last day."""
    name, dsn = clone(pg_admin, churn_world.template)
    artifacts = tmp_path_factory.mktemp("artifacts")
    promoted_at = datetime(2026, 3, 1, tzinfo=UTC)
    result = train_churn(
        churn_world.last_day,
        run_id="t1",
        dsn=dsn,
        artifacts=artifacts,
        config=small_churn_config(),
        promote_at=promoted_at,
    )
    yield {"dsn": dsn, "artifacts": artifacts, "result": result, "promoted_at": promoted_at}
    drop(pg_admin, name)


def test_labels_match_the_simulator(churn_world: ChurnWorld, trained) -> None:
    """7-day labels of paying (cancels) and free (dormancy) users against the truth."""
    as_of = churn_world.last_day
    dates = [churn_world.start + timedelta(days=d) for d in range(5, churn_world.days - 36)]
    got = labels.churn_labels(dates, as_of, dsn=trained["dsn"])
    truth = pq.read_table(churn_world.truth / "churn_events.parquet").to_pandas()
    truth = truth[truth["source"] == "landing"]
    known_users = set(
        pq.read_table(churn_world.truth / "user_daily.parquet", columns=["user_id"]).to_pandas()[
            "user_id"
        ]
    )
    got = got[got["user_id"].isin(known_users)]
    assert got["label_7"].notna().all()
    by_user = truth.groupby("user_id")
    expected = []
    for row in got.itertuples():
        events = by_user.get_group(row.user_id) if row.user_id in by_user.groups else truth[:0]
        if row.is_paying:
            days = events.loc[events["kind"] == "paid_cancel", "churn_date"]
            lo, hi = row.dt + timedelta(days=1), row.dt + timedelta(days=7)
        else:
            days = events.loc[events["kind"] == "dormancy", "churn_date"]
            lo, hi = row.dt - timedelta(days=28), row.dt + timedelta(days=7)
        expected.append(bool(((days >= lo) & (days <= hi)).any()))
    expected = np.array(expected)
    actual = got["label_7"].astype(bool).to_numpy()
    assert (actual == expected).mean() == 1.0
    assert expected[~got["is_paying"].to_numpy()].sum() > 20  # dormancy churn is covered
    assert expected[got["is_paying"].to_numpy()].sum() > 0


def test_first_model_is_promoted_over_the_baseline(trained) -> None:
    result = trained["result"]
    record = registry.get("churn", result["version"], dsn=trained["dsn"])
    assert record.status == "champion"
    first = record.gate_report["checks"][0]
    assert "baseline" in first["check"] and first["passed"]
    assert first["candidate"] > first["baseline"]
    assert set(record.metrics["candidates"]) >= {"xgboost", "lightgbm", "catboost", "ensemble"}
    for h in ("7",):
        assert record.metrics[h]["ece"] <= 0.03
        assert record.metrics["baseline"][h]["roc_auc"] is not None
    assert record.metrics["monotone_share"] == 1.0
    card = record.artifact_path.parent / "model_card.html"
    assert card.is_file() and "data:image/png;base64" in card.read_text()
    assert record.model_card_uri == str(card)


def test_probabilities_are_monotone_with_reasons(churn_world: ChurnWorld, trained) -> None:
    dsn = trained["dsn"]
    record = registry.champion("churn", datetime.now(UTC), dsn=dsn)
    model = registry.load_churn_model(record)
    cfg = small_churn_config()
    splits = plan_splits(churn_world.last_day, cfg, churn_world.start)
    frame = load_dataset(churn_world.last_day, splits, cfg, dsn)
    probs = model.predict(frame[model.feature_names])
    assert list(probs.columns) == ["p_churn_7d", "p_churn_30d", "p_churn_90d"]
    p = probs.to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    assert (np.diff(p, axis=1) >= 0).all()  # 100% of rows
    reasons = model.reasons(frame[model.feature_names].head(50), top=3)
    assert len(reasons) == 50
    assert all(len(r) <= 3 and all(v > 0 for _, v in r) for r in reasons)
    assert any(reasons)
    assert all(name in model.feature_names for r in reasons for name, _ in r)


def test_band_hazards_from_arrays_equal_the_classifiers_predict_proba(
    churn_world: ChurnWorld, trained
) -> None:
    """Scoring feeds each library one float64 array; the probabilities must be exactly
    those of the sklearn wrappers' ``predict_proba`` on the DataFrame, for every family."""
    from ml_tasks.churn.model import BAND_COLUMN, ChurnModel, encode
    from ml_tasks.churn.training import fit_models

    dsn = trained["dsn"]
    cfg = small_churn_config()
    splits = plan_splits(churn_world.last_day, cfg, churn_world.start)
    frame = load_dataset(churn_world.last_day, splits, cfg, dsn)
    train = frame[frame["dt"].isin(splits.train)]
    cal = frame[frame["dt"].isin(splits.calibration_all)].reset_index(drop=True)
    holdout = frame[frame["dt"].isin(splits.holdout)].reset_index(drop=True)
    _, info = fit_models(train, cal, holdout, cfg, churn_world.last_day, splits)
    record = registry.champion("churn", datetime.now(UTC), dsn=dsn)
    names = registry.load_churn_model(record).feature_names
    X = encode(holdout, names)
    models = {f: m for f, m in info["models"].items() if f in cfg.families}
    assert set(models) == set(cfg.families)
    for family, model in models.items():
        assert isinstance(model, ChurnModel)
        ((_, est),) = model.members
        survival = np.ones(len(X))
        expected = []
        for end in model.band_edges:
            Xb = X.copy()
            Xb[BAND_COLUMN] = float(end)
            survival = survival * (1.0 - est.predict_proba(Xb)[:, 1])
            expected.append(1.0 - survival)
        got = model.band_probabilities(holdout)
        np.testing.assert_array_equal(got, np.column_stack(expected), err_msg=family)


def test_worse_candidate_stays_candidate_and_champion_history(churn_world, trained) -> None:
    dsn = trained["dsn"]
    first = trained["result"]["version"]
    weak = small_churn_config(tolerance=0.0).with_overrides(
        families=("lightgbm",),
        gbm={"n_estimators": 1, "max_depth": 1},
        baseline_features=("tenure_days",),
    )
    result = train_churn(
        churn_world.last_day, run_id="t2", dsn=dsn, artifacts=trained["artifacts"], config=weak
    )
    record = registry.get("churn", result["version"], dsn=dsn)
    assert record.status == "candidate"
    assert not record.gate_report["passed"]
    assert "champion" in record.gate_report["checks"][0]["check"]
    assert registry.champion("churn", datetime.now(UTC), dsn=dsn).version == first
    # promoting it by hand retires the first one, atomically, and history keeps both stints
    later = datetime(2026, 4, 1, tzinfo=UTC)
    registry.promote("churn", record.version, run_id="manual", at=later, dsn=dsn)
    assert registry.get("churn", first, dsn=dsn).status == "retired"
    assert registry.champion("churn", later - timedelta(seconds=1), dsn=dsn).version == first
    assert registry.champion("churn", later, dsn=dsn).version == record.version
    assert registry.champion("churn", trained["promoted_at"] - timedelta(days=1), dsn=dsn) is None
    registry.promote("churn", first, run_id="manual", at=later + timedelta(days=1), dsn=dsn)


def test_tampered_artifact_is_refused_and_champion_still_loads(churn_world, trained) -> None:
    dsn = trained["dsn"]
    cfg = small_churn_config(max_ece=0.0)  # a calibration bound nothing meets: stays candidate
    result = train_churn(
        churn_world.last_day,
        run_id="t3",
        dsn=dsn,
        artifacts=trained["artifacts"],
        config=cfg.with_overrides(families=("xgboost",)),
    )
    record = registry.get("churn", result["version"], dsn=dsn)
    assert record.status == "candidate"
    assert any("ECE above" in r for r in record.gate_report["reasons"])
    with open(record.artifact_path, "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(registry.ArtifactIntegrityError, match=str(record.artifact_path)):
        registry.load_churn_model(record)
    champion = registry.champion("churn", datetime.now(UTC), dsn=dsn)
    assert champion.version != record.version
    model = registry.load_churn_model(champion)
    assert isinstance(model.feature_names, list) and model.feature_names


def test_unvalidated_training_data_blocks_promotion(churn_world, trained) -> None:
    report = registry.gate(
        candidate={"7": {"roc_auc": 0.9, "ece": 0.01}},
        baseline={"7": {"roc_auc": 0.8}},
        champion=None,
        champion_version=None,
        validation=registry.features_validated([churn_world.last_day], dsn=trained["dsn"]),
        metric="roc_auc",
        horizon=7,
        tolerance=0.01,
        max_ece=0.03,
        require_validated_features=True,
    )
    assert not report["passed"]
    assert report["checks"][-1]["missing_days"] == [churn_world.last_day.isoformat()]
    assert pd.notna(report["decided_at"])


def test_long_horizons_calibrate_on_their_own_dates_held_out_of_training() -> None:
    """90-day labels are known only far back: the 90-day calibrator gets the latest dates
    that know them, and training gives those dates up; with too little history the horizon
    stays uncalibrated rather than calibrated on dates that cannot know its labels."""
    from ml_tasks import labels
    from ml_tasks.churn import ChurnConfig

    cfg = ChurnConfig.load()
    first = date(2026, 1, 1)
    day = first + timedelta(days=200)
    splits = plan_splits(day, cfg, first)
    late = splits.late_calibration[90]
    w = cfg.window
    assert late[-1] == labels.last_fully_labelled_day(90, day)
    assert late[0] >= late[-1] - timedelta(days=w.late_calibration_days - 1)
    assert len(late) == -(-w.late_calibration_days // w.late_calibration_stride)
    assert all((b - a).days == w.late_calibration_stride for a, b in pairwise(late))
    assert not set(late) & set(splits.train)
    assert not set(late) & set(splits.calibration) and not set(late) & set(splits.holdout)
    assert splits.calibration_for(90) == late
    assert splits.calibration_for(30) == splits.calibration == splits.calibration_for(7)
    assert set(late) <= set(splits.all) and set(late) <= set(splits.calibration_all)
    assert 30 not in splits.late_calibration  # split horizon: the shared dates know it

    # a shorter history keeps the days it holds, never one closer to the first feature day
    # than min_history_days
    day = first + timedelta(days=140)
    shorter = plan_splits(day, cfg, first).late_calibration[90]
    earliest = first + timedelta(days=w.min_history_days)
    assert shorter[-1] == labels.last_fully_labelled_day(90, day)
    assert shorter[0] >= earliest > shorter[0] - timedelta(days=w.late_calibration_stride)

    short = plan_splits(first + timedelta(days=130), cfg, first)
    assert short.late_calibration == {}
    assert short.calibration_for(90) == short.calibration


def test_churn_config_refuses_an_unknown_late_calibration() -> None:
    from ml_tasks.churn import ChurnConfig
    from ml_tasks.churn.config import ChurnConfigError

    with pytest.raises(ChurnConfigError, match="late_method"):
        ChurnConfig.from_dict({"calibration": {"late_method": "beta"}})
    with pytest.raises(ChurnConfigError, match="late_calibration_stride"):
        ChurnConfig.from_dict(
            {"window": {"late_calibration_days": 4, "late_calibration_stride": 5}}
        )


def test_person_periods_keep_only_bands_observed_to_their_end() -> None:
    """A band cut by censoring is left out whether or not it holds the churn: keeping the
    cut bands that hold one would count a band's early churns and none of its survivors."""
    from ml_tasks.churn.model import BAND_COLUMN, person_periods

    X = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    # churn on day 5, seen through 90 | churn on day 9 seen through 10 (band 14 cut)
    # | no churn, seen through 12 | churn on day 3 seen through 3 (band 7 cut)
    duration = np.array([5, 9, 12, 3])
    event = np.array([True, True, False, True])
    observed = np.array([90, 10, 12, 3])
    rows, target = person_periods(X, duration, event, observed, (7, 14, 21))
    got = sorted(zip(rows["x"], rows[BAND_COLUMN], target, strict=True))
    assert got == [(1.0, 7.0, 1), (2.0, 7.0, 0), (3.0, 7.0, 0)]


def test_band_hazards_from_person_periods_are_unbiased_under_censoring() -> None:
    """Constant daily hazard, censoring spread over every band: the share of events among
    each band's person-period rows estimates the true band hazard."""
    from ml_tasks.churn.model import BAND_COLUMN, person_periods

    rng = np.random.default_rng(7)
    n, daily = 200_000, 0.01
    churn_day = rng.geometric(daily, n)
    censor = rng.integers(1, 91, n)
    event = churn_day <= np.minimum(censor, 90)
    duration = np.where(event, churn_day, np.minimum(censor, 90))
    edges = (7, 14, 21, 30, 45, 60, 75, 90)
    rows, target = person_periods(pd.DataFrame({"x": np.zeros(n)}), duration, event, censor, edges)
    for start, end in zip((0, *edges[:-1]), edges, strict=True):
        in_band = rows[BAND_COLUMN].to_numpy() == end
        true_hazard = 1 - (1 - daily) ** (end - start)
        assert abs(target[in_band].mean() - true_hazard) < 0.1 * true_hazard + 0.003, end
