"""Feature days: every value checked against an independent pandas computation from raw.

The simulated world (conftest ``world``) is ingested and featurized day by day; here the
feature SQL's output is recomputed from ``raw.*`` in pandas, row by row, column by column.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_tasks import contract, feature_validation, features, warehouse
from ml_tasks.validation import ValidationFailed

WINDOWS = (7, 14, 30)
LINEAGE = ("run_id", "computed_at")


def frame(dsn: str, query: str, params: tuple = ()) -> pd.DataFrame:
    with warehouse.connect(dsn) as conn:
        cur = conn.execute(query, params)
        columns = [d.name for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=columns)


def catalogue(dsn: str, day: date) -> pd.DataFrame:
    versions = frame(dsn, "SELECT * FROM raw.track_versions WHERE dt <= %s", (day,))
    return versions.sort_values("dt").groupby("track_id").tail(1).set_index("track_id")


def plays_until(dsn: str, day: date) -> pd.DataFrame:
    plays = frame(
        dsn,
        "SELECT user_id, track_id, played_at, ms_played, track_duration_ms, skipped, liked,"
        " shared, context_type, device_type FROM raw.listening_events WHERE played_at < %s",
        (datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC),),
    )
    plays["day"] = plays["played_at"].dt.tz_convert("UTC").dt.date
    plays["age"] = [(day - d).days for d in plays["day"]]
    return plays


def expected_user_features(dsn: str, day: date) -> pd.DataFrame:
    """user_daily for ``day``, computed from raw with pandas (no SQL feature code)."""
    plays = plays_until(dsn, day)
    cat = catalogue(dsn, day)
    plays["artist_id"] = plays["track_id"].map(cat["artist_id"])
    plays["genre"] = plays["track_id"].map(cat["genre"])
    plays["completed"] = ~plays["skipped"] & (
        plays["ms_played"] >= 0.9 * plays["track_duration_ms"]
    )
    plays["night"] = plays["played_at"].dt.tz_convert("UTC").dt.hour < 6
    plays = plays.sort_values(["user_id", "played_at"])
    gap = plays.groupby("user_id")["played_at"].diff()
    plays["starts"] = gap.isna() | (gap > pd.Timedelta(minutes=30))
    plays["session"] = plays.groupby("user_id")["starts"].cumsum()
    plays["end"] = plays["played_at"] + pd.to_timedelta(plays["ms_played"], unit="ms")

    last_play = plays.groupby("user_id")["day"].max()
    window = plays[plays["age"] < 30]
    rows: dict[int, dict] = {}
    for user_id, p in window.groupby("user_id"):
        r: dict = {}
        for w in WINDOWS:
            q = p[p["age"] < w]
            n = len(q)
            r[f"plays_{w}d"] = n
            r[f"listening_hours_{w}d"] = q["ms_played"].sum() / 3.6e6
            r[f"sessions_{w}d"] = int(q["starts"].sum())
            r[f"active_days_{w}d"] = q["day"].nunique()
            for rate, col in (
                ("skip_rate", "skipped"),
                ("completion_rate", "completed"),
                ("like_rate", "liked"),
                ("share_rate", "shared"),
            ):
                r[f"{rate}_{w}d"] = q[col].sum() / n if n else np.nan
            r[f"distinct_tracks_{w}d"] = q["track_id"].nunique()
            r[f"distinct_artists_{w}d"] = q["artist_id"].dropna().nunique()
            r[f"distinct_genres_{w}d"] = q["genre"].dropna().nunique()
        n30 = r["plays_30d"]
        for ctx in contract.CONTEXT_TYPES:
            r[f"ctx_{ctx}_share_30d"] = (p["context_type"] == ctx).sum() / n30
        for dev in contract.DEVICE_TYPES:
            r[f"dev_{dev}_share_30d"] = (p["device_type"] == dev).sum() / n30
        r["night_share_30d"] = p["night"].sum() / n30
        spans = p.groupby(["session", "day"]).agg(first=("played_at", "min"), end=("end", "max"))
        span_ms = (spans["end"] - spans["first"]).dt.total_seconds().sum() * 1000
        r["avg_session_minutes_30d"] = (
            span_ms / 60000 / r["sessions_30d"] if r["sessions_30d"] else np.nan
        )
        r["discovery_share_30d"] = r["distinct_tracks_30d"] / n30
        active = set(p["age"])
        streak = 0
        while streak in active:
            streak += 1
        r["current_streak_days"] = streak
        longest = run = 0
        for age in range(30):
            run = run + 1 if age in active else 0
            longest = max(longest, run)
        r["longest_streak_30d"] = longest
        r["first_day"] = p["day"].min()
        rows[int(user_id)] = r

    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    subs = frame(
        dsn,
        "SELECT user_id, event_at, event_type, plan, event_key FROM raw.subscription_events"
        " WHERE event_at < %s",
        (end,),
    )
    latest = subs.sort_values(["user_id", "event_at", "event_key"]).groupby("user_id").tail(1)
    plan = pd.Series(
        np.where(latest["event_type"] == "cancel", "free", latest["plan"]),
        index=latest["user_id"],
    )
    recent = subs[subs["event_at"] >= end - timedelta(days=30)]
    failures = recent[recent["event_type"] == "payment_failed"].groupby("user_id").size()
    changes = (
        recent[recent["event_type"].isin(["upgrade", "downgrade", "cancel", "reactivate"])]
        .groupby("user_id")
        .size()
    )
    versions = frame(
        dsn, "SELECT user_id, dt, signup_date FROM raw.user_versions WHERE dt <= %s", (day,)
    )
    signup = versions.sort_values("dt").groupby("user_id")["signup_date"].last()

    population = set(rows) | set(plan[plan != "free"].index)
    out = []
    for user_id in sorted(population):
        r = rows.get(user_id)
        if r is None:  # paying, silent for 30 days
            r = {f"plays_{w}d": 0 for w in WINDOWS}
            for w in WINDOWS:
                r |= {
                    f"listening_hours_{w}d": 0.0,
                    f"sessions_{w}d": 0,
                    f"active_days_{w}d": 0,
                    f"distinct_tracks_{w}d": 0,
                    f"distinct_artists_{w}d": 0,
                    f"distinct_genres_{w}d": 0,
                }
                for rate in ("skip_rate", "completion_rate", "like_rate", "share_rate"):
                    r[f"{rate}_{w}d"] = np.nan
            r |= {f"ctx_{c}_share_30d": np.nan for c in contract.CONTEXT_TYPES}
            r |= {f"dev_{d}_share_30d": np.nan for d in contract.DEVICE_TYPES}
            r |= {
                "night_share_30d": np.nan,
                "avg_session_minutes_30d": np.nan,
                "discovery_share_30d": np.nan,
                "current_streak_days": 0,
                "longest_streak_30d": 0,
                "first_day": None,
            }
        r = dict(r, user_id=user_id)
        r["plan"] = plan.get(user_id, "free")
        r["is_paying"] = r["plan"] != "free"
        start = signup.get(user_id, r["first_day"] or day)
        r["tenure_days"] = max((day - start).days, 0)
        last = last_play.get(user_id)
        r["days_since_last_play"] = (day - last).days if last is not None else np.nan
        r["payment_failures_30d"] = int(failures.get(user_id, 0))
        r["plan_changes_30d"] = int(changes.get(user_id, 0))
        r["listening_hours_trend"] = r["listening_hours_7d"] / 7 - r["listening_hours_30d"] / 30
        r["plays_trend"] = r["plays_7d"] / 7 - r["plays_30d"] / 30
        r["sessions_trend"] = r["sessions_7d"] / 7 - r["sessions_30d"] / 30
        r["active_days_trend"] = r["active_days_7d"] / 7 - r["active_days_30d"] / 30
        r["skip_rate_trend"] = r["skip_rate_7d"] - r["skip_rate_30d"]
        r.pop("first_day")
        out.append(r)
    return pd.DataFrame(out).set_index("user_id")


def assert_frames_match(actual: pd.DataFrame, expected: pd.DataFrame, what: str) -> None:
    assert sorted(actual.index) == sorted(expected.index), f"{what}: different rows"
    actual = actual.loc[expected.index]
    for column in expected.columns:
        a, e = actual[column], expected[column]
        if e.dtype.kind in "fiu" or a.dtype.kind in "fiu":
            a = pd.to_numeric(a, errors="coerce").astype(float)
            e = pd.to_numeric(e, errors="coerce").astype(float)
            bad = ~(np.isclose(a, e, rtol=1e-9, atol=1e-9) | (a.isna() & e.isna()))
        else:
            bad = a.astype(str) != e.astype(str)
        assert not bad.any(), (
            f"{what}.{column}: {int(bad.sum())} rows differ, e.g. "
            f"{list(zip(a[bad].index[:3], a[bad][:3], e[bad][:3], strict=False))}"
        )


def test_user_features_equal_an_independent_computation_from_raw(world, world_dsn) -> None:
    day = world.last_day
    actual = frame(world_dsn, "SELECT * FROM features.user_daily WHERE dt = %s", (day,))
    expected = expected_user_features(world_dsn, day)
    assert len(expected) > 500
    assert expected["is_paying"].sum() > 20 and (expected["plays_30d"] == 0).any(), (
        "the world has paying users and users silent for the whole window"
    )
    assert (actual["feature_ts"] == features.feature_ts(day)).all()
    assert_frames_match(actual.set_index("user_id"), expected, "user_daily")


def test_one_user_row_by_hand(world, world_dsn) -> None:
    """One heavy user's row, from their raw plays, spelled out."""
    day = world.last_day
    user_id = int(
        frame(
            world_dsn,
            "SELECT user_id FROM features.user_daily WHERE dt = %s"
            " ORDER BY plays_7d DESC, user_id LIMIT 1 OFFSET 20",
            (day,),
        ).iloc[0, 0]
    )
    plays = frame(
        world_dsn,
        "SELECT played_at, ms_played, skipped FROM raw.listening_events"
        " WHERE user_id = %s AND played_at >= %s AND played_at < %s ORDER BY played_at",
        (
            user_id,
            datetime.combine(day - timedelta(days=6), datetime.min.time(), UTC),
            datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC),
        ),
    )
    row = frame(
        world_dsn,
        "SELECT * FROM features.user_daily WHERE dt = %s AND user_id = %s",
        (day, user_id),
    ).iloc[0]
    assert row["plays_7d"] == len(plays)
    assert row["listening_hours_7d"] == pytest.approx(plays["ms_played"].sum() / 3_600_000)
    assert row["skip_rate_7d"] == pytest.approx(plays["skipped"].mean())
    assert row["active_days_7d"] == plays["played_at"].dt.date.nunique()


def expected_track_features(dsn: str, day: date) -> pd.DataFrame:
    plays = plays_until(dsn, day)
    plays = plays[plays["age"] < 28]
    flags = frame(
        dsn, "SELECT dt AS day, user_id FROM monitoring.stream_anomalies WHERE is_flagged"
    )
    flagged = set(zip(flags["day"], flags["user_id"], strict=True))
    keep = [(d, u) not in flagged for d, u in zip(plays["day"], plays["user_id"], strict=True)]
    plays = plays[keep].copy()
    plays["completed"] = ~plays["skipped"] & (
        plays["ms_played"] >= 0.9 * plays["track_duration_ms"]
    )
    plays["playlist"] = plays["context_type"] == "playlist"
    cat = catalogue(dsn, day)
    out = pd.DataFrame(index=cat.index)
    today, week = plays[plays["age"] == 0], plays[plays["age"] < 7]
    prev = plays[(plays["age"] >= 7) & (plays["age"] < 14)]
    g1, g7 = today.groupby("track_id"), week.groupby("track_id")
    out["plays_1d"] = g1.size()
    out["listeners_1d"] = g1["user_id"].nunique()
    out["skip_rate_1d"] = g1["skipped"].mean()
    out["completion_rate_1d"] = g1["completed"].mean()
    out["playlist_share_1d"] = g1["playlist"].mean()
    out["plays_7d"] = g7.size()
    out["plays_prev_7d"] = prev.groupby("track_id").size()
    out["plays_28d"] = plays.groupby("track_id").size()
    out["listener_days_7d"] = (
        week.groupby(["track_id", "day"])["user_id"].nunique().groupby("track_id").sum()
    )
    out["likes_7d"] = g7["liked"].sum()
    out["skip_rate_7d"] = g7["skipped"].mean()
    for column in ("plays_1d", "listeners_1d", "plays_7d", "plays_prev_7d", "plays_28d"):
        out[column] = out[column].fillna(0)
    out["listener_days_7d"] = out["listener_days_7d"].fillna(0)
    out["likes_7d"] = out["likes_7d"].fillna(0)
    out["plays_trend_7d"] = np.log((out["plays_7d"] + 1) / (out["plays_prev_7d"] + 1))
    artist = cat["artist_id"]
    a7 = out["plays_7d"].groupby(artist).sum()
    aprev = out["plays_prev_7d"].groupby(artist).sum()
    out["artist_plays_7d"] = artist.map(a7)
    out["artist_momentum"] = np.log((artist.map(a7) + 1) / (artist.map(aprev) + 1))
    out["artist_tracks"] = artist.map(artist.value_counts())
    out["days_since_release"] = [(day - d).days for d in cat["release_date"]]
    out["has_preview"] = cat["preview_path"].notna()
    return out


def test_track_features_equal_an_independent_computation_net_of_fraud(world, world_dsn) -> None:
    day = world.last_day
    # flag the heaviest user of the last two days as fraud, then rebuild the day
    heavy = frame(
        world_dsn,
        "SELECT user_id, count(*) FROM raw.listening_events WHERE played_at >= %s"
        " GROUP BY 1 ORDER BY 2 DESC LIMIT 1",
        (datetime.combine(day - timedelta(days=1), datetime.min.time(), UTC),),
    )
    user_id, heavy_plays = int(heavy.iloc[0, 0]), int(heavy.iloc[0, 1])
    with warehouse.connect(world_dsn) as conn:
        for flagged_day in (day - timedelta(days=1), day):
            conn.execute(
                "INSERT INTO monitoring.stream_anomalies VALUES"
                " (%s, %s, 0.9, true, ARRAY['plays_per_hour'], 'test', 'test', now())",
                (flagged_day, user_id),
            )
    before = frame(
        world_dsn, "SELECT sum(plays_7d) FROM features.track_daily WHERE dt = %s", (day,)
    )
    result = features.build_day(day, run_id="fraud", dsn=world_dsn)
    # the previous day's activity was stale (new flags) and was rebuilt too
    assert f"features.track_activity_daily:{day - timedelta(days=1)}" in result.rebuilt
    after = frame(world_dsn, "SELECT sum(plays_7d) FROM features.track_daily WHERE dt = %s", (day,))
    assert int(before.iloc[0, 0]) - int(after.iloc[0, 0]) == heavy_plays

    actual = frame(world_dsn, "SELECT * FROM features.track_daily WHERE dt = %s", (day,))
    expected = expected_track_features(world_dsn, day)
    assert_frames_match(actual.set_index("track_id"), expected, "track_daily")
    flagged = frame(
        world_dsn,
        "SELECT sum(flagged_plays) FROM features.track_activity_daily WHERE dt >= %s",
        (day - timedelta(days=1),),
    )
    assert int(flagged.iloc[0, 0]) == heavy_plays
    feature_validation.validate_features(day, run_id="fraud", dsn=world_dsn)


def checksums(dsn: str, day: date) -> dict[str, tuple[int, str]]:
    with warehouse.connect(dsn) as conn:
        return {
            t.name: warehouse.table_checksum(
                conn, warehouse.partition_name(t.name, day), exclude=LINEAGE
            )
            for t in features.ACTIVITY_TABLES + features.DAILY_TABLES
        }


def test_rebuilding_a_day_is_idempotent_and_order_does_not_matter(world, world_dsn) -> None:
    day = world.last_day
    built_in_order = checksums(world_dsn, day)
    features.build_day(day, run_id="again", dsn=world_dsn)
    assert checksums(world_dsn, day) == built_in_order
    # wipe every feature day, then build the last day first: it builds its window itself
    with warehouse.connect(world_dsn) as conn:
        for table in features.ACTIVITY_TABLES + features.DAILY_TABLES:
            conn.execute(f"TRUNCATE {table.name}")
        conn.execute("TRUNCATE features.build_log")
    result = features.build_day(day, run_id="reverse", dsn=world_dsn)
    assert len(result.rebuilt) == 2 * (world.days - 1)
    assert checksums(world_dsn, day) == built_in_order


def test_each_table_day_commits_on_its_own(world, world_dsn, monkeypatch) -> None:
    """A table-day's build is visible to others, and its locks gone, before the next starts:
    held to the end of build_day they deadlocked parallel backfills of overlapping days."""
    day = world.last_day
    build = features.build_table_day
    seen: list[tuple[str, str, int]] = []

    def build_and_look(conn, table, build_day, run_id, inputs_as_of=None):
        rows = build(conn, table, build_day, run_id, inputs_as_of)
        with warehouse.connect(world_dsn) as other:
            (logged_run,) = other.execute(
                "SELECT run_id FROM features.build_log WHERE table_name = %s AND dt = %s",
                (table.name, build_day),
            ).fetchone()
            (locks,) = other.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype <> 'virtualxid'"
                " AND NOT (locktype = 'relation' AND relation::regclass::text LIKE 'pg_%%')",
                (conn.info.backend_pid,),
            ).fetchone()
        seen.append((table.name, logged_run, locks))
        return rows

    monkeypatch.setattr(features, "build_table_day", build_and_look)
    features.build_day(day, run_id="own-commits", dsn=world_dsn)
    assert len(seen) == len(features.ACTIVITY_TABLES) + len(features.DAILY_TABLES)
    assert all(run == "own-commits" for _, run, _ in seen), seen
    assert all(locks == 0 for _, _, locks in seen), seen
    # a connection already inside a transaction is refused, not silently nested
    with warehouse.connect(world_dsn) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(RuntimeError, match="outside a transaction"):
            build(conn, features.DAILY_TABLES[0], day, "nested")


def test_a_reingested_raw_day_makes_its_activity_stale(world, world_dsn) -> None:
    from ml_tasks.ingest import ingest_day

    day, earlier = world.last_day, world.last_day - timedelta(days=3)
    ingest_day(earlier, run_id="again", dsn=world_dsn, landing_root=world.landing)
    result = features.build_day(day, run_id="after-reingest", dsn=world_dsn)
    assert sorted(result.rebuilt) == [
        f"features.track_activity_daily:{earlier}",
        f"features.user_activity_daily:{earlier}",
    ]
    again = features.build_day(day, run_id="fresh", dsn=world_dsn)
    assert again.rebuilt == []


def test_a_day_that_was_not_ingested_is_refused(world, world_dsn) -> None:
    later = world.last_day + timedelta(days=1)
    with pytest.raises(features.FeaturesNotReady, match="encore ingest --date"):
        features.build_day(later, run_id="x", dsn=world_dsn)
    with pytest.raises(features.FeaturesNotReady, match="encore features --date"):
        feature_validation.validate_features(later, run_id="x", dsn=world_dsn)


def test_validation_passes_then_catches_broken_feature_rows(world, world_dsn, tmp_path) -> None:
    day = world.last_day
    report = feature_validation.validate_features(
        day, run_id="ok", dsn=world_dsn, artifacts=tmp_path
    )
    assert report.success and all(r.data_docs_path for r in report.reports)
    partition = warehouse.partition_name("features.user_daily", day)
    with warehouse.connect(world_dsn) as conn:
        conn.execute(
            f"UPDATE {partition} SET skip_rate_7d = 1.5"
            f" WHERE user_id = (SELECT min(user_id) FROM {partition} WHERE plays_7d > 0)"
        )
        conn.execute(
            f"DELETE FROM {partition} WHERE user_id = (SELECT max(user_id) FROM {partition})"
        )
    with pytest.raises(ValidationFailed) as failed:
        feature_validation.validate_features(
            day, run_id="broken", dsn=world_dsn, artifacts=tmp_path
        )
    message = str(failed.value)
    assert "features.user_daily: FAILED 2 of" in message
    assert "skip_rate_7d" in message and "row count" in message
    assert "features.track_daily: passed" in message
    with warehouse.connect(world_dsn) as conn:
        verdicts = dict(
            conn.execute(
                "SELECT run_id, bool_and(success) FROM monitoring.validation_results"
                " WHERE dt = %s AND suite LIKE 'features.%%' GROUP BY run_id",
                (day,),
            ).fetchall()
        )
    assert verdicts == {"ok": True, "broken": False}


def test_feature_days_validate_in_one_session(world, world_dsn, tmp_path) -> None:
    """Several days, one Data Docs build: each day recorded with its own page, and a broken
    day raised only after every day was recorded."""
    days = [world.last_day - timedelta(days=2), world.last_day - timedelta(days=1)]
    partition = warehouse.partition_name("features.track_daily", days[1])
    with warehouse.connect(world_dsn) as conn:
        conn.execute(
            f"DELETE FROM {partition} WHERE track_id = (SELECT max(track_id) FROM {partition})"
        )
    with pytest.raises(ValidationFailed) as failed:
        feature_validation.validate_feature_days(
            [*days, world.last_day], run_id="range", dsn=world_dsn, artifacts=tmp_path
        )
    assert failed.value.validation.dt == days[1]
    assert "features.track_daily: FAILED" in str(failed.value)
    with warehouse.connect(world_dsn) as conn:
        recorded = conn.execute(
            "SELECT dt, suite, success, data_docs_path FROM monitoring.validation_results"
            " WHERE run_id = 'range' ORDER BY dt, suite"
        ).fetchall()
    assert [(dt, suite, ok) for dt, suite, ok, _ in recorded] == [
        (day, suite, not (day == days[1] and suite == "features.track_daily"))
        for day in (*days, world.last_day)
        for suite in ("features.track_daily", "features.user_daily")
    ]
    assert len({page for *_, page in recorded}) == 6
    for dt, _suite, _ok, page in recorded:
        assert dt.isoformat() in Path(page).read_text(encoding="utf-8")
    assert feature_validation.validate_feature_days([], run_id="none", dsn=world_dsn) == []


def test_raw_day_readiness(world, world_dsn) -> None:
    from ml_tasks.validation import validate_day

    day = world.last_day
    ready, why = features.raw_day_ready(day, dsn=world_dsn)
    assert not ready and "not been validated" in why
    validate_day(day, run_id="v", dsn=world_dsn)
    assert features.raw_day_ready(day, dsn=world_dsn) == (True, "")
    ready, why = features.raw_day_ready(day + timedelta(days=1), dsn=world_dsn)
    assert not ready and "not been ingested" in why


def test_distinct_key_counts_by_window() -> None:
    """A key counts in a window when its latest sighting is in it, once per user."""
    users = np.array([7, 7, 7, 7, 3, 3, 9])
    ages = np.array([0, 10, 20, 5, 29, 29, 13])
    keys = np.array([1, 1, 2, 3, 1, 1, -5])
    ids, counts = features.distinct_key_counts(users, ages, keys, windows=(7, 14, 30))
    assert ids.tolist() == [3, 7, 9]
    # user 3: key 1 at age 29 only; user 7: key 1 (age 0), 3 (age 5), 2 (age 20)
    assert counts.tolist() == [[0, 0, 1], [2, 2, 3], [0, 1, 1]]
    empty_ids, empty = features.distinct_key_counts(*(np.empty(0, np.int64),) * 3)
    assert empty_ids.size == 0 and empty.shape == (0, len(features.KEY_WINDOWS))


def test_distinct_key_counts_match_a_set_per_user_in_any_row_order() -> None:
    """The packed single sort agrees with plain sets, whatever order the rows come in."""
    rng = np.random.default_rng(7)
    n = 5_000
    users = rng.integers(1, 300, n) * 1_000_003
    ages = rng.integers(0, 30, n)
    keys = rng.integers(-(2**31), 2**31, 400)[rng.integers(0, 400, n)]
    for order in (np.arange(n), rng.permutation(n), np.lexsort((users, -ages))):
        ids, counts = features.distinct_key_counts(users[order], ages[order], keys[order])
        sightings = list(zip(users, ages, keys, strict=True))
        expected = {
            u: [len({k for uu, a, k in sightings if uu == u and a < w}) for w in (7, 14, 30)]
            for u in np.unique(users)
        }
        assert ids.tolist() == sorted(expected)
        assert counts.tolist() == [expected[u] for u in ids]


def test_distinct_key_counts_refuses_negative_ages() -> None:
    with pytest.raises(ValueError, match="ages must not be negative"):
        features.distinct_key_counts(np.array([1]), np.array([-1]), np.array([5]))


def test_key_chunks_cover_every_user_once_within_the_limit() -> None:
    users = np.array([1, 2, 5, 6, 9, 12])
    elements = np.array([3, 3, 9, 1, 1, 4])
    chunks = features.key_chunks(users, elements, 6)
    assert chunks == [(1, 2), (5, 5), (6, 12)]  # one user over the limit stays whole
    assert features.key_chunks(users, elements, 100) == [(1, 12)]
    assert features.key_chunks(users[:0], elements[:0], 6) == []


def test_genre_keys_migration_fills_the_days_already_built(world_dsn) -> None:
    """A warehouse built before 0016 gets each activity row's genre keys from its genres,
    the same keys the feature build writes."""
    query = "SELECT dt, user_id, genre_keys FROM features.user_activity_daily ORDER BY 1, 2"
    with warehouse.connect(world_dsn, autocommit=True) as conn:
        built = conn.execute(query).fetchall()
        assert sum(len(keys) for *_, keys in built) > 0
        conn.execute("ALTER TABLE features.user_activity_daily DROP COLUMN genre_keys")
        conn.execute("DELETE FROM ml.schema_migrations WHERE version = 16")
        applied = [m.path.name for m in warehouse.migrate(conn)]
        assert applied == ["0016_user_activity_genre_keys.sql"]
        assert conn.execute(query).fetchall() == built


def test_key_counts_in_chunks_equal_the_sql_aggregate(world, world_dsn, monkeypatch) -> None:
    """The numpy counts, read in many small chunks, equal GROUP BY (user, key) in SQL (for
    genres, by the genre names themselves rather than their keys)."""
    day = world.last_day
    monkeypatch.setattr(features, "KEY_CHUNK_ELEMENTS", 500)
    with warehouse.connect(world_dsn) as conn:
        _, elements = conn.execute(
            "SELECT count(DISTINCT user_id), sum(cardinality(track_keys)"
            " + cardinality(artist_keys) + cardinality(genre_keys))"
            " FROM features.user_activity_daily"
            " WHERE dt BETWEEN %s AND %s",
            (day - timedelta(days=features.WINDOW_DAYS - 1), day),
        ).fetchone()
        assert elements > 5 * 500, "the world is big enough for several chunks"
        features._make_key_counts(conn, day)
        got = conn.execute("SELECT * FROM pg_temp.user_key_counts ORDER BY user_id").fetchall()
        expected = conn.execute(
            """
            WITH act AS (
                SELECT user_id, %(day)s - dt AS age, track_keys, artist_keys, genres
                FROM features.user_activity_daily WHERE dt BETWEEN %(day)s - 29 AND %(day)s),
            t AS (SELECT user_id, k, min(age) AS age FROM act, unnest(track_keys) k
                  GROUP BY user_id, k),
            a AS (SELECT user_id, k, min(age) AS age FROM act, unnest(artist_keys) k
                  GROUP BY user_id, k),
            g AS (SELECT user_id, k, min(age) AS age FROM act, unnest(genres) k
                  GROUP BY user_id, k),
            tn AS (SELECT user_id, count(*) FILTER (WHERE age < 7) AS n7,
                   count(*) FILTER (WHERE age < 14) AS n14, count(*) AS n30
                   FROM t GROUP BY user_id),
            an AS (SELECT user_id, count(*) FILTER (WHERE age < 7) AS n7,
                   count(*) FILTER (WHERE age < 14) AS n14, count(*) AS n30
                   FROM a GROUP BY user_id),
            gn AS (SELECT user_id, count(*) FILTER (WHERE age < 7) AS n7,
                   count(*) FILTER (WHERE age < 14) AS n14, count(*) AS n30
                   FROM g GROUP BY user_id)
            SELECT tn.user_id, tn.n7, tn.n14, tn.n30, coalesce(an.n7, 0), coalesce(an.n14, 0),
                   coalesce(an.n30, 0), coalesce(gn.n7, 0), coalesce(gn.n14, 0),
                   coalesce(gn.n30, 0)
            FROM tn LEFT JOIN an USING (user_id) LEFT JOIN gn USING (user_id)
            ORDER BY tn.user_id
            """,
            {"day": day},
        ).fetchall()
        conn.rollback()
    assert got and got == expected
