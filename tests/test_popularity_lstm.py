"""The popularity LSTM's own training rules, on a synthetic frame (no warehouse)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from ml_tasks.popularity.config import LstmConfig, PopularityConfig, PopularityConfigError
from ml_tasks.popularity.data import lag_column, target_column
from ml_tasks.popularity.model import fit_lstm, latest_rows_split, lstm_rows, wape

STEPS = 7
NAMES = [lag_column(k) for k in range(STEPS)] + ["days_since_release", "artist_plays"]


def examples(rows: int, dates: int, seed: int = 0) -> pd.DataFrame:
    """Tracks over ``dates`` scoring dates; the target is about the last week's plays."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({lag_column(k): rng.poisson(20, rows) for k in range(STEPS)})
    frame["days_since_release"] = rng.integers(0, 200, rows)
    frame["artist_plays"] = rng.poisson(500, rows)
    frame["genre"] = rng.choice(["rock", "jazz"], rows)
    frame["dt"] = [date(2026, 3, 1) + timedelta(days=int(d)) for d in rng.integers(0, dates, rows)]
    frame["y_7"] = frame[[lag_column(k) for k in range(STEPS)]].sum(axis=1) + rng.poisson(5, rows)
    return frame


def test_the_held_out_rows_are_the_latest_dates() -> None:
    frame = examples(1_000, 20)
    others, latest = latest_rows_split(frame["dt"], 250)
    assert len(latest) == 250 and len(others) == 750
    assert sorted(np.concatenate([others, latest]).tolist()) == list(range(1_000))
    assert frame["dt"].iloc[others].max() <= frame["dt"].iloc[latest].min()


def test_early_stopping_holds_out_only_rows_beyond_the_cap() -> None:
    dates = examples(1_200, 20)["dt"]
    cfg = LstmConfig(max_train_rows=500, patience=3, validation_share=0.2)
    fit, held_out = lstm_rows(dates, cfg)
    assert (len(fit), len(held_out)) == (500, 100)
    assert not set(fit) & set(held_out)
    assert dates.iloc[fit].max() <= dates.iloc[held_out].min()
    # at or under the cap, every row is fitted and nothing is held out
    fit, held_out = lstm_rows(dates.iloc[:500], cfg)
    assert (len(fit), len(held_out)) == (500, 0)
    # without patience the cap is a plain sample
    fit, held_out = lstm_rows(dates, LstmConfig(max_train_rows=500))
    assert (len(fit), len(held_out)) == (500, 0) and len(set(fit)) == 500


def test_the_lstm_trains_on_at_most_its_row_cap() -> None:
    frame = examples(1_200, 20)
    cfg = LstmConfig(units=4, dense_units=4, epochs=2, batch_size=128, max_train_rows=500)
    member = fit_lstm(frame, "y_7", NAMES, ["jazz", "rock"], STEPS, cfg)
    assert (member.rows_fit, member.rows_validation, member.epochs_run) == (500, 0, 2)
    patient = LstmConfig(
        units=4, dense_units=4, epochs=2, batch_size=128, max_train_rows=500, patience=5
    )
    member = fit_lstm(frame, "y_7", NAMES, ["jazz", "rock"], STEPS, patient)
    assert (member.rows_fit, member.rows_validation) == (500, 100)
    member = fit_lstm(frame.iloc[:400], "y_7", NAMES, ["jazz", "rock"], STEPS, patient)
    assert (member.rows_fit, member.rows_validation, member.validation_wape) == (400, 0, None)


def test_early_stopping_ends_a_fit_that_stops_generalizing_to_the_latest_dates() -> None:
    """The latest dates' targets run against the pattern the earlier dates teach: the WAPE
    of their forecasts grows as the fit learns it, so a patient fit stops early, and keeps
    the weights of its best epoch; without patience every epoch runs."""
    frame = examples(2_000, 20, seed=1)
    latest = frame["dt"] >= frame["dt"].quantile(0.8)
    frame.loc[latest, "y_7"] = 1  # the pattern no longer holds
    common = dict(
        units=8, dense_units=8, epochs=15, batch_size=64, learning_rate=0.01, max_train_rows=1_000
    )
    patient_cfg = LstmConfig(**common, patience=2, validation_share=0.4)
    patient = fit_lstm(frame, "y_7", NAMES, ["jazz", "rock"], STEPS, patient_cfg)
    assert (patient.rows_fit, patient.rows_validation) == (1_000, 400)
    assert patient.epochs_run < 15
    _, held_out = lstm_rows(frame["dt"], patient_cfg)
    assert latest.iloc[held_out].all()
    rows = frame.iloc[held_out]
    assert wape(rows["y_7"].to_numpy(), patient.predict(rows)) == pytest.approx(
        patient.validation_wape, rel=1e-4
    )
    every = fit_lstm(frame, "y_7", NAMES, ["jazz", "rock"], STEPS, LstmConfig(**common))
    assert every.epochs_run == 15 and every.rows_validation == 0
    assert every.validation_wape is None


@pytest.mark.parametrize(
    ("lstm", "message"),
    [
        ({"max_train_rows": 0}, "max_train_rows"),
        ({"patience": -1}, "patience"),
        ({"patience": 2, "max_train_rows": 10, "validation_share": 1.5}, "validation_share"),
        ({"patience": 2, "max_train_rows": None}, "needs lstm.max_train_rows"),
    ],
)
def test_bad_lstm_settings_are_refused_by_name(lstm: dict, message: str) -> None:
    with pytest.raises(PopularityConfigError, match=message):
        PopularityConfig.from_dict({"lstm": lstm})


def test_entity_sample_shares_cover_each_horizons_cap_and_every_holdout_row() -> None:
    from ml_tasks.popularity.data import EntitySample
    from ml_tasks.popularity.training import HorizonSplit, plan_sample, sample_share

    d = [date(2026, 3, 1) + timedelta(days=k) for k in range(12)]
    splits = {
        1: HorizonSplit(1, train=d[0:8], holdout=d[9:11], purge=1),
        7: HorizonSplit(7, train=d[0:2], holdout=d[4:6], purge=1),
    }
    rows = dict.fromkeys(d, 1000)
    cfg = PopularityConfig.load().with_overrides(window={"max_train_rows": 2000})
    sample, shares = plan_sample(splits, rows, cfg)
    assert shares == {1: pytest.approx(sample_share(2000, 8000)), 7: 1.0}
    # a date in both horizons' training keeps the larger share; holdout dates keep all
    assert sample.shares[d[0]] == 1.0 and sample.shares[d[6]] == shares[1]
    assert sample.shares[d[4]] == sample.shares[d[9]] == 1.0
    assert d[11] not in sample.shares
    where = sample.where_sql()
    partial = ", ".join(f"DATE '{x}'" for x in (d[2], d[3], d[6], d[7]))
    assert f"dt NOT IN ({partial})" in where and repr(shares[1]) in where
    # nothing to sample below the cap
    roomy = PopularityConfig.load().with_overrides(window={"max_train_rows": 10**6})
    assert plan_sample(splits, rows, roomy)[0].where_sql() == "TRUE"
    with pytest.raises(ValueError, match="shares must be in"):
        EntitySample({d[0]: 0.0}, seed=1)


class _CountingMember:
    """A stand-in member that forecasts fixed values and counts its calls."""

    def __init__(self, values) -> None:
        self.values, self.calls = np.asarray(values, dtype=float), 0

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        self.calls += 1
        return self.values[: len(frame)]


def test_served_forecasts_up_to_a_horizon_reuse_forecasts_already_made() -> None:
    from ml_tasks.popularity.model import PopularityModel

    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0]})
    members = {
        1: _CountingMember([5, 1, 2]),
        7: _CountingMember([4, 6, 1]),
        30: _CountingMember([9, 3, 8]),
    }
    model = PopularityModel((1, 7, 30), 30, ["x"], dict.fromkeys((1, 7, 30), "lightgbm"), members)
    full = model.predict(frame)
    assert full.to_numpy().tolist() == [[5, 5, 9], [1, 6, 6], [2, 2, 8]]  # non-decreasing
    assert [m.calls for m in members.values()] == [1, 1, 1]

    upto = model.predict(frame, upto=7)
    assert list(upto.columns) == ["predicted_plays_1d", "predicted_plays_7d"]
    pd.testing.assert_frame_equal(upto, full[list(upto.columns)])
    assert [m.calls for m in members.values()] == [2, 2, 1]

    made = model.predict(frame, upto=30, made={30: np.array([9.0, 3.0, 8.0])})
    pd.testing.assert_frame_equal(made, full)
    assert [m.calls for m in members.values()] == [3, 3, 1]  # the 30-day member not called


def test_the_families_fit_at_once_and_forecast_as_one_after_another(monkeypatch) -> None:
    """With ``families_together`` LightGBM fits in a second thread while the LSTM fits (the
    two overlap in time); the forecasts, scores and choices are exactly those of fitting the
    families one after another."""
    import threading
    import time

    from ml_tasks.popularity import training

    steps = 30
    rng = np.random.default_rng(3)
    rows, dates = 3_000, 24
    frame = pd.DataFrame({lag_column(k): rng.poisson(20, rows) for k in range(steps)})
    frame["days_since_release"] = rng.integers(0, 200, rows)
    frame["genre"] = rng.choice(["rock", "jazz"], rows)
    frame["dt"] = [date(2026, 3, 1) + timedelta(days=int(d)) for d in rng.integers(0, dates, rows)]
    for h in (1, 7, 30):
        lags = frame[[lag_column(k) for k in range(h)]].sum(axis=1)
        frame[target_column(h)] = lags + rng.poisson(3, rows)
    day = [date(2026, 3, 1) + timedelta(days=d) for d in range(dates)]
    splits = {h: training.HorizonSplit(h, day[:18], day[18:], 0) for h in (1, 7, 30)}
    base = PopularityConfig().with_overrides(
        lightgbm={"n_estimators": 40},
        lstm={"units": 4, "dense_units": 4, "epochs": 2, "batch_size": 256},
    )

    spans: dict[str, list[tuple[float, float, int]]] = {"lightgbm": [], "lstm": []}

    def timed(family: str, fit):
        def run(*args, **kwargs):
            start = time.perf_counter()
            member = fit(*args, **kwargs)
            spans[family].append((start, time.perf_counter(), threading.get_ident()))
            return member

        return run

    monkeypatch.setattr(training, "fit_lightgbm", timed("lightgbm", training.fit_lightgbm))
    monkeypatch.setattr(training, "fit_lstm", timed("lstm", training.fit_lstm))

    apart_model, apart = training.fit_horizons(
        frame, splits, base.with_overrides(families_together=False)
    )
    assert {ident for *_, ident in spans["lightgbm"] + spans["lstm"]} == {threading.get_ident()}
    assert spans["lstm"][-1][1] <= spans["lightgbm"][0][0]  # one family, then the other
    for family_spans in spans.values():
        family_spans.clear()
    model, together = training.fit_horizons(frame, splits, base)
    assert together["candidates"] == apart["candidates"]
    assert model.chosen == apart_model.chosen
    for h in (1, 7, 30):
        np.testing.assert_array_equal(
            together["holdout_forecasts"][h], apart["holdout_forecasts"][h]
        )
    assert {ident for *_, ident in spans["lightgbm"]} != {threading.get_ident()}
    gbm = (spans["lightgbm"][0][0], spans["lightgbm"][-1][1])
    lstm = (spans["lstm"][0][0], spans["lstm"][-1][1])
    assert gbm[0] < lstm[1] and lstm[0] < gbm[1]  # the two families' fits overlapped
