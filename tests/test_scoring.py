"""Churn scoring, interventions and analyst views on the churn world, with a trained champion."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pendulum
import pytest
from psycopg import sql

from ml_tasks import feature_validation, interventions, registry, scoring, warehouse

pytestmark = pytest.mark.slow
LINEAGE = ("run_id", "scored_at")


def frame(dsn: str, query: str, params: tuple = ()) -> pd.DataFrame:
    with warehouse.connect(dsn) as conn:
        cur = conn.execute(query, params)
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def checksums(dsn: str, day) -> dict:
    with warehouse.connect(dsn) as conn:
        return {
            t: warehouse.table_checksum(conn, warehouse.partition_name(t, day), exclude=LINEAGE)
            for t in (scoring.CHURN_TABLE, scoring.INTERVENTIONS_TABLE)
        }


def test_every_active_user_is_scored_with_lineage(scored) -> None:
    dsn, day = scored["dsn"], scored["day"]
    assert "churn" in scored["result"]["scored"] and "churn" not in scored["result"]["skipped"]
    churn = frame(dsn, "SELECT * FROM scores.churn WHERE dt = %s", (day,))
    users = frame(dsn, "SELECT user_id, is_paying FROM features.user_daily WHERE dt = %s", (day,))
    assert sorted(churn["user_id"]) == sorted(users["user_id"])
    p = churn[["p_churn_7d", "p_churn_30d", "p_churn_90d"]].to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    assert (np.diff(p, axis=1) >= 0).all(), "probabilities never decrease with the horizon"
    assert set(churn["model_version"]) == {scored["trained"]["version"]}
    assert set(churn["feature_date"]) == {day} and set(churn["run_id"]) == {"score-1"}
    record = registry.champion("churn", scoring.day_end(day), dsn=dsn)
    assert record is not None and record.version == scored["trained"]["version"]


def test_tiers_segments_tags_and_reasons_follow_their_definitions(scored) -> None:
    dsn, day = scored["dsn"], scored["day"]
    config = scoring.ScoringConfig.load()
    joined = frame(
        dsn,
        "SELECT c.*, f.listening_hours_30d, f.ctx_playlist_share_30d, f.share_rate_30d"
        " FROM scores.churn c JOIN features.user_daily f USING (user_id, dt) WHERE c.dt = %s",
        (day,),
    )
    thresholds = dict(config.tiers)
    for tier, lower in thresholds.items():
        rows = joined[joined["risk_tier"] == tier]
        assert (rows["p_churn_30d"] >= lower).all(), tier
    per_day = joined["listening_hours_30d"] / 30
    expected = np.where(per_day > 4, "heavy", np.where(per_day < 1, "light", "moderate"))
    assert (joined["segment"] == expected).all()
    playlist = joined["ctx_playlist_share_30d"].fillna(0) >= 0.5
    tagged = joined["tags"].map(lambda t: "playlist creator" in t)
    assert (playlist == tagged).all()
    assert joined["segment"].nunique() >= 2 and tagged.any()
    features = (
        set(scored["trained"]["metrics"]["feature_names"])
        if "feature_names" in (scored["trained"]["metrics"])
        else None
    )
    for reasons in joined["reasons"]:
        assert 1 <= len(reasons) <= 3
        assert all(r["contribution"] > 0 for r in reasons)
        if features:
            assert {r["feature"] for r in reasons} <= features


def test_interventions_respect_value_eligibility_and_budget(scored) -> None:
    dsn, day = scored["dsn"], scored["day"]
    plan = frame(dsn, "SELECT * FROM scores.interventions WHERE dt = %s", (day,))
    churn = frame(
        dsn, "SELECT user_id, p_churn_30d, is_paying FROM scores.churn WHERE dt = %s", (day,)
    )
    assert sorted(plan["user_id"]) == sorted(churn["user_id"])
    catalogue = interventions.load_catalogue()
    chosen = plan[plan["intervention"].notna()]
    assert (chosen["expected_net_value"].astype(float) > 0).all()
    assert float(plan.loc[plan["selected"], "cost"].astype(float).sum()) <= catalogue.daily_budget
    merged = chosen.merge(churn, on="user_id")
    assert not ((merged["intervention"] == "retention_offer") & ~merged["is_paying"]).any()
    assert not ((merged["intervention"] == "premium_upsell") & merged["is_paying"]).any()
    assert plan["reason"].str.len().min() > 10
    assert set(plan["catalogue_version"]) == {catalogue.version}


def test_rescoring_is_idempotent_and_chunking_does_not_change_results(scored) -> None:
    dsn, day = scored["dsn"], scored["day"]
    before = checksums(dsn, day)
    scoring.score_churn(day, run_id="score-2", dsn=dsn, chunk_users=97)
    assert checksums(dsn, day) == before
    runs = frame(
        dsn,
        "SELECT run_id, status, rows FROM scores.scoring_runs WHERE model_name = 'churn'"
        " AND dt = %s ORDER BY run_id",
        (day,),
    )
    assert list(runs["run_id"]) == ["score-1", "score-2"] and set(runs["status"]) == {"scored"}


def test_a_day_before_any_champion_is_skipped_and_says_so(scored) -> None:
    dsn = scored["dsn"]
    earlier = scored["day"] - timedelta(days=10)
    feature_validation.validate_features(earlier, run_id="fv", dsn=dsn)
    result = scoring.score_day(earlier, run_id="score-early", dsn=dsn)
    assert result["scored"] == {} and "no churn model was champion" in result["skipped"]["churn"]
    runs = frame(
        dsn,
        "SELECT status, detail FROM scores.scoring_runs"
        " WHERE run_id = 'score-early' AND model_name = 'churn'",
    )
    assert list(runs["status"]) == ["skipped"]


def test_unvalidated_features_are_not_scored(scored) -> None:
    dsn = scored["dsn"]
    with pytest.raises(scoring.NotReady, match="not been validated"):
        scoring.score_day(scored["day"] - timedelta(days=3), run_id="x", dsn=dsn)


def test_analyst_views_show_the_day(scored) -> None:
    dsn, day = scored["dsn"], scored["day"]
    at_risk = frame(dsn, "SELECT * FROM analytics.at_risk_today")
    assert len(at_risk) > 0 and set(at_risk["risk_tier"]) <= {"high", "critical"}
    assert set(at_risk["scored_for"]) == {day}
    plan = frame(dsn, "SELECT * FROM analytics.intervention_plan_daily WHERE dt = %s", (day,))
    assert plan["users_recommended"].sum() == len(
        frame(dsn, "SELECT 1 FROM scores.interventions WHERE dt = %s", (day,))
    )
    latest = frame(dsn, "SELECT * FROM analytics.latest_churn_scores")
    assert len(latest) >= len(frame(dsn, "SELECT 1 FROM scores.churn WHERE dt = %s", (day,)))
    board = frame(dsn, "SELECT * FROM analytics.model_leaderboard")
    assert scored["trained"]["version"] in set(board["version"])


@pytest.mark.airflow
def test_score_daily_fans_out_over_user_ranges_with_dag_test(
    scored, airflow_db, monkeypatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dsn, day = scored["dsn"], scored["day"]
    before = checksums(dsn, day)
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    monkeypatch.setenv("ENCORE_SCORE_CHUNK_USERS", "150")
    dag = DagBag(dag_folder=str(Path(__file__).parent.parent / "dags")).get_dag("score_daily")
    run = dag.test(
        logical_date=pendulum.datetime(day.year, day.month, day.day, tz="UTC") + timedelta(days=1)
    )
    states = {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    chunks = [k for k in states if k[0] == "score_chunk"]
    assert len(chunks) >= 3, "the day was fanned out over several user-id ranges"
    assert checksums(dsn, day) == before, "a fanned-out run equals the single-process one"


def test_scoring_reads_exactly_what_feasts_point_in_time_join_serves(scored) -> None:
    """Scoring reads the day's partition directly (COPY, fast); Feast would serve the same.

    For entity timestamp D+1 00:00 (the scoring instant), Feast's point-in-time join
    returns, for every user active on D, the very row the scorer reads.
    """
    from ml_tasks import feature_store, registry

    dsn, day = scored["dsn"], scored["day"]
    record = registry.champion("churn", scoring.day_end(day), dsn=dsn)
    model = registry.load_churn_model(record)
    columns = ["user_id", *model.feature_names]
    with warehouse.connect(dsn) as conn:
        direct = (
            warehouse.read_arrow(
                conn,
                sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, columns)),
                    warehouse.qualified(warehouse.partition_name("features.user_daily", day)),
                ),
            )
            .to_pandas()
            .sort_values("user_id")
            .reset_index(drop=True)
        )
    served = feature_store.historical_features(
        "SELECT user_id, ((dt + 1)::timestamp AT TIME ZONE 'UTC') AS event_timestamp"
        f" FROM features.user_daily WHERE dt = DATE '{day.isoformat()}'",
        "churn_v1",
        dsn=dsn,
    )
    served = served[columns].sort_values("user_id").reset_index(drop=True)
    assert len(served) == len(direct) > 100
    for column in columns:
        a, b = direct[column], served[column]
        if a.dtype.kind in "fiub" or b.dtype.kind in "fiub":
            a = pd.to_numeric(a, errors="coerce").astype(float)
            b = pd.to_numeric(b, errors="coerce").astype(float)
            assert np.allclose(a, b, equal_nan=True), column
        else:
            assert (a.astype(str) == b.astype(str)).all(), column
