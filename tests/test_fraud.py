"""Stream-fraud detection against the simulator's bots, and its effect on track features."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd

from ml_tasks import feature_validation, features, fraud, warehouse
from ml_tasks.ingest import ingest_day


def test_bots_are_flagged_with_high_recall_and_precision(world, world_dsn) -> None:
    bots = set(pd.read_parquet(world.truth / "bots.parquet")["user_id"])
    assert bots, "the world has bots"
    for offset in range(world.days):
        fraud.detect_day(world.start + timedelta(days=offset), run_id="t", dsn=world_dsn)
    with warehouse.connect(world_dsn) as conn:
        rows = conn.execute(
            "SELECT user_id, is_flagged, reasons, model_version FROM monitoring.stream_anomalies"
        ).fetchall()
        bot_days = conn.execute(
            "SELECT count(DISTINCT (user_id, played_at::date)) FROM raw.listening_events"
            " WHERE user_id = ANY(%s)",
            (list(bots),),
        ).fetchone()[0]
    flagged = [(u, reasons) for u, f, reasons, _ in rows if f]
    true_positives = sum(u in bots for u, _ in flagged)
    recall = true_positives / bot_days
    precision = true_positives / len(flagged)
    assert recall >= 0.9 and precision >= 0.9, (recall, precision)
    assert all(reasons for _, reasons in flagged), "every flagged user-day says why"
    assert len({v for *_, v in rows}) == 1


def test_detection_is_idempotent_and_flagged_plays_leave_track_features(world, world_dsn) -> None:
    day = world.last_day
    first = fraud.detect_day(day, run_id="a", dsn=world_dsn)
    with warehouse.connect(world_dsn) as conn:
        before = warehouse.table_checksum(
            conn, "monitoring.stream_anomalies", exclude=("run_id", "scored_at")
        )
    again = fraud.detect_day(day, run_id="b", dsn=world_dsn)
    with warehouse.connect(world_dsn) as conn:
        after = warehouse.table_checksum(
            conn, "monitoring.stream_anomalies", exclude=("run_id", "scored_at")
        )
    assert first == again and before == after and first["flagged"] > 0
    result = features.build_day(day, run_id="after-fraud", dsn=world_dsn)
    assert result.rows["features.track_daily"] > 0
    with warehouse.connect(world_dsn) as conn:
        flagged_plays = conn.execute(
            "SELECT count(*) FROM raw.listening_events e JOIN monitoring.stream_anomalies a"
            " ON a.user_id = e.user_id AND a.dt = %s AND a.is_flagged"
            " WHERE e.played_at >= %s AND e.played_at < %s",
            (day, *warehouse.day_bounds(day)),
        ).fetchone()[0]
        left_out = conn.execute(
            "SELECT sum(flagged_plays) FROM features.track_activity_daily WHERE dt = %s", (day,)
        ).fetchone()[0]
    assert flagged_plays > 0 and left_out == flagged_plays
    # validation recomputes the net play total from raw minus the flags
    feature_validation.validate_features(day, run_id="after-fraud", dsn=world_dsn)


def test_monitoring_keeps_the_flags_the_features_were_built_on(world, world_dsn) -> None:
    """Monitoring reports a day's current flags instead of scoring it again: restamped flags
    made the next night rebuild that day's track activity. Flags older than the day's
    latest ingest, or missing, are computed."""
    day, next_day = world.last_day - timedelta(days=1), world.last_day
    first = fraud.detect_day(day, run_id="features", dsn=world_dsn)  # as features_daily does
    features.build_day(day, run_id="features", dsn=world_dsn)

    def stamps() -> tuple:
        with warehouse.connect(world_dsn) as conn:
            return conn.execute(
                "SELECT min(scored_at), max(scored_at), min(run_id), count(*)"
                " FROM monitoring.stream_anomalies WHERE dt = %s",
                (day,),
            ).fetchone()

    before = stamps()
    reported = fraud.ensure_day(day, run_id="monitor", dsn=world_dsn)
    assert reported == {**first, "computed": False}
    assert stamps() == before
    assert features.build_day(next_day, run_id="next", dsn=world_dsn).rebuilt == []

    ingest_day(day, run_id="redelivered", dsn=world_dsn, landing_root=world.landing)
    again = fraud.ensure_day(day, run_id="monitor-2", dsn=world_dsn)
    assert again == {**first, "computed": True}  # same plays, same flags
    assert stamps()[2] == "monitor-2"
    missing = fraud.ensure_day(next_day, run_id="monitor-3", dsn=world_dsn)
    assert missing["computed"] and missing["scored"] > 0
