"""Monitoring: drift against the training window, realized performance, the daily report."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from ml_tasks import monitoring, registry, scoring, warehouse

pytestmark = pytest.mark.slow


def test_psi_is_zero_for_the_same_distribution_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(0, 1, 20_000)
    assert monitoring.psi(reference, rng.normal(0, 1, 20_000)) < 0.01
    shifted = monitoring.psi(reference, rng.normal(0.5, 1, 20_000))
    assert 0.1 < shifted < monitoring.psi(reference, rng.normal(1.5, 1, 20_000))
    with_nans = np.where(rng.random(20_000) < 0.3, np.nan, rng.normal(0, 1, 20_000))
    assert monitoring.psi(reference, with_nans) > 0.25  # missing values are a bin of their own


def test_monitor_day_writes_drift_realized_performance_and_a_report(scored, tmp_path) -> None:
    dsn, day = scored["dsn"], scored["day"]
    earlier = day - timedelta(days=7)
    # score the day a week earlier with today's champion, so its 7-day labels have matured
    record = registry.champion("churn", scoring.day_end(day), dsn=dsn)
    scoring.prepare_stage(earlier, dsn=dsn)
    scoring.score_churn_chunk(earlier, 0, 2**62, run_id="past", dsn=dsn, record=record)
    scoring.commit_churn(earlier, run_id="past", dsn=dsn)

    summary = monitoring.monitor_day(day, run_id="m1", dsn=dsn, artifacts=tmp_path)
    model = registry.load_churn_model(record)
    with warehouse.connect(dsn) as conn:
        drift = dict(
            conn.execute(
                "SELECT column_name, status FROM monitoring.drift WHERE dt = %s", (day,)
            ).fetchall()
        )
        realized = conn.execute(
            "SELECT horizon, rows, positives, roc_auc, brier FROM"
            " monitoring.realized_performance WHERE scored_for = %s",
            (earlier,),
        ).fetchall()
        report = conn.execute(
            "SELECT path FROM monitoring.reports WHERE dt = %s", (day,)
        ).fetchone()
    assert set(drift) == {*model.feature_names, "score:p_churn_30d"}
    assert set(drift.values()) <= {"ok", "warn", "alert"}
    assert [r[0] for r in realized] == [7] and realized[0][1] > 100 and realized[0][2] > 0
    assert realized[0][3] > 0.6, "a champion ranks churners a week later better than chance"
    assert Path(report[0]).read_text().count("<tr>") > len(model.feature_names)
    assert summary["realized"][0]["horizon"] == 7
    again = monitoring.monitor_day(day, run_id="m2", dsn=dsn, artifacts=tmp_path)
    assert again["drift_columns"] == summary["drift_columns"]
    with warehouse.connect(dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM monitoring.drift WHERE dt = %s", (day,)
        ).fetchone()[0] == len(drift)


def test_drift_reference_is_cached_per_model_and_day_scores_are_reused(scored, monkeypatch) -> None:
    """The cached reference and the scores score_daily wrote give the PSI that sampling and
    predicting afresh give."""
    dsn, day = scored["dsn"], scored["day"]
    config = monitoring.MonitoringConfig.load()
    record = registry.champion("churn", scoring.day_end(day), dsn=dsn)
    cache = record.artifact_path.parent / f"monitoring_reference_{config.reference_rows}.parquet"
    cache.unlink(missing_ok=True)
    first = {r["column_name"]: r["psi"] for r in monitoring.drift(day, dsn=dsn, config=config)}
    assert cache.is_file()
    cached = {r["column_name"]: r["psi"] for r in monitoring.drift(day, dsn=dsn, config=config)}
    assert cached == pytest.approx(first, abs=1e-12)

    written = monitoring._day_scores(dsn, day, record.version, 0)
    assert written is None  # a row count that does not match is not reused
    predicted: list[bool] = []
    real_day_scores = monitoring._day_scores

    def no_scores(*args):
        predicted.append(real_day_scores(*args) is not None)
        return None

    monkeypatch.setattr(monitoring, "_day_scores", no_scores)
    cache.unlink()
    fresh = {r["column_name"]: r["psi"] for r in monitoring.drift(day, dsn=dsn, config=config)}
    assert predicted == [True], "score_daily's scores existed and would have been reused"
    assert fresh == pytest.approx(first, abs=1e-9)


def test_settings_files_refuse_unknown_and_inconsistent_keys(tmp_path) -> None:
    from ml_tasks.fraud import FraudConfig

    bogus = tmp_path / "fraud.yaml"
    bogus.write_text("threshold: 0.7\nthreshhold: 0.8\n")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['threshhold'\]"):
        FraudConfig.load(bogus)
    inverted = tmp_path / "monitoring.yaml"
    inverted.write_text("psi_warn: 0.3\npsi_alert: 0.2\n")
    with pytest.raises(ValueError, match="psi_warn < psi_alert"):
        monitoring.MonitoringConfig.load(inverted)
    assert monitoring.MonitoringConfig.load().status(0.3) == "alert"


def test_realized_labels_every_horizon_as_its_own_date_would(scored) -> None:
    """realized() reads the labels of all its scored dates in one query: each horizon's
    figures are those of labels read for its date alone."""
    from ml_tasks import labels

    dsn, day = scored["dsn"], scored["day"]
    record = registry.champion("churn", scoring.day_end(day), dsn=dsn)
    for horizon in (7, 30):
        earlier = day - timedelta(days=horizon)
        scoring.prepare_stage(earlier, dsn=dsn)
        scoring.score_churn_chunk(earlier, 0, 2**62, run_id="past", dsn=dsn, record=record)
        scoring.commit_churn(earlier, run_id="past", dsn=dsn)

    rows = {r["horizon"]: r for r in monitoring.realized(day, dsn=dsn)}
    assert sorted(rows) == [7, 30]
    for horizon, row in rows.items():
        earlier = day - timedelta(days=horizon)
        alone = labels.churn_labels([earlier], day, horizons=[horizon], dsn=dsn)
        known = alone[alone[f"label_{horizon}"].notna()]
        with warehouse.connect(dsn) as conn:
            scored_users = {
                u
                for (u,) in conn.execute(
                    "SELECT user_id FROM scores.churn WHERE dt = %s", (earlier,)
                ).fetchall()
            }
        known = known[known["user_id"].isin(scored_users)]
        assert row["rows"] == len(known) > 100
        assert row["positives"] == int(known[f"label_{horizon}"].astype(int).sum())
