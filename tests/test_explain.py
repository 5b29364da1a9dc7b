"""Per-row contributions: path attributions for all three families, and the reasons text."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from ml_tasks.churn import explain
from ml_tasks.churn.model import BAND_COLUMN, ChurnModel
from ml_tasks.scoring import reasons_json

FEATURES = [f"f{i}" for i in range(8)]


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(3000, len(FEATURES))), columns=FEATURES)
    X.iloc[rng.random(X.shape) < 0.05] = np.nan  # missing values take the default branch
    signal = X["f0"].fillna(0) + X["f1"].fillna(0) * X["f2"].fillna(0) - 0.5 * X["f3"].fillna(0)
    y = (signal + rng.normal(size=len(X)) > 0.8).astype(int).to_numpy()
    new = pd.DataFrame(rng.normal(size=(500, len(FEATURES))), columns=FEATURES)
    new.iloc[rng.random(new.shape) < 0.05] = np.nan
    return X, y, new


def _fit(family: str, X: pd.DataFrame, y: np.ndarray):
    from ml_tasks.churn.model import make_estimator

    class Gbm:
        n_estimators, learning_rate, max_depth, n_jobs, seed = 40, 0.1, 3, 1, 3

    return make_estimator(family, Gbm).fit(X, y)


def _margin(family: str, est, X: pd.DataFrame) -> np.ndarray:
    if family == "xgboost":
        import xgboost as xgb

        return est.get_booster().predict(xgb.DMatrix(X), output_margin=True)
    if family == "lightgbm":
        return est.booster_.predict(X, raw_score=True)
    return est.predict(X, prediction_type="RawFormulaVal")


@pytest.mark.parametrize("family", ["xgboost", "lightgbm", "catboost"])
def test_path_contributions_add_up_to_the_raw_score(family, data) -> None:
    X, y, new = data
    est = _fit(family, X, y)
    table = explain.path_table(family, est, FEATURES)
    contrib = table.contributions(explain.leaf_indices(family, est, new))
    assert contrib.shape == (len(new), len(FEATURES))
    rest = _margin(family, est, new) - contrib.sum(axis=1) - table.roots.sum()
    # what is left is the same for every row: XGBoost's base score, CatBoost's bias, or 0
    assert np.ptp(rest) < 1e-5, family  # XGBoost sums in float32
    # the informative features carry the weight, and rows differ
    weight = np.abs(contrib).mean(axis=0)
    assert weight[[0, 1, 2, 3]].sum() > 5 * weight[[5, 6, 7]].sum()
    assert np.std(contrib[:, 0]) > 0


def test_path_table_reproduces_xgboost_approx_contribs(data) -> None:
    """XGBoost ships Saabas attributions: the generic tables give the same figures."""
    import xgboost as xgb

    X, y, new = data
    est = _fit("xgboost", X, y)
    table = explain.path_table("xgboost", est, FEATURES)
    ours = table.contributions(explain.leaf_indices("xgboost", est, new))
    native = est.get_booster().predict(xgb.DMatrix(new), pred_contribs=True, approx_contribs=True)
    np.testing.assert_allclose(ours, native[:, :-1], atol=1e-5)


@pytest.mark.parametrize("method", ["path", "shap"])
def test_model_reasons_rank_positive_contributions(method, data) -> None:
    X, y, new = data
    Xb = X.assign(**{BAND_COLUMN: 30.0})
    members = [(f, _fit(f, Xb, y)) for f in ("xgboost", "lightgbm", "catboost")]
    model = ChurnModel(FEATURES, (7, 30), (7, 30), members)
    columns, contrib = model.top_reasons(new, top=3, method=method)
    full = model.contributions(new, method)
    assert columns.shape == contrib.shape == (len(new), 3)
    for i in range(len(new)):
        positive = np.sort(full[i][full[i] > 0])[::-1][:3]
        np.testing.assert_allclose(contrib[i][: len(positive)], positive)
        assert (columns[i][len(positive) :] == -1).all()
    # the two methods broadly agree on what matters most
    if method == "path":
        shap = model.contributions(new, "shap")
        agree = np.mean(np.argmax(full, axis=1) == np.argmax(shap, axis=1))
        assert agree > 0.6, agree
    with pytest.raises(ValueError, match="unknown contribution method"):
        model.contributions(new, "lime")


def test_path_tables_are_not_pickled(data) -> None:
    X, y, new = data
    Xb = X.assign(**{BAND_COLUMN: 30.0})
    model = ChurnModel(FEATURES, (7,), (7,), [("lightgbm", _fit("lightgbm", Xb, y))])
    before = model.contributions(new)
    assert model._path_tables
    clone = pickle.loads(pickle.dumps(model))
    assert clone._path_tables == {}
    np.testing.assert_array_equal(clone.contributions(new), before)


def test_reasons_json_renders_every_kind_of_value() -> None:
    values = pd.DataFrame(
        {
            "plays_7d": [3.0, np.nan, 2.5],  # an int column with a null reads as float
            "rate": [0.123456, np.inf, -0.5],
            "plan": ["free", 'we"ird', None],
            "is_paying": np.array([True, False, True]),
            "n": np.array([7, 8, 9], dtype=np.int64),
        }
    )
    columns = np.array([[0, 1, 2], [1, 0, 3], [4, -1, -1]])
    contrib = np.array([[0.5, 0.25, 0.123456], [1.0, 0.5, 0.1], [0.3, 0.0, 0.0]])
    out = [json.loads(text) for text in reasons_json(columns, contrib, values)]
    assert out[0] == [
        {"feature": "plays_7d", "value": 3, "contribution": 0.5},
        {"feature": "rate", "value": 0.1235, "contribution": 0.25},
        {"feature": "plan", "value": "free", "contribution": 0.1235},
    ]
    assert [r["value"] for r in out[1]] == [None, None, False]  # inf and NaN are null
    assert out[2] == [{"feature": "n", "value": 9, "contribution": 0.3}]
    assert isinstance(out[0][0]["value"], int)
