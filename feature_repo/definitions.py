"""Encore's Feast definitions: entities, sources, feature views and feature services.

The sources are the daily feature tables built by ``features_daily``
(``sql/migrations/0005_features.sql``): one row per entity and feature day ``dt``, stamped
``feature_ts = dt 23:59:59.999999 UTC`` (the last microsecond of the day, and the values
use only data up to it). Both tables are range-partitioned on ``feature_ts`` and keyed on
(join key, ``feature_ts``), the index Feast's point-in-time joins need.

Point-in-time convention: scoring or labelling date D uses the entity timestamp
``D+1 00:00 UTC`` (after the day closed), which picks the row stamped
``D 23:59:59.999999``.

TTL, two days: a row stamped at the end of day D serves entity timestamps in
``[D 23:59:59.999999, D+2 23:59:59.999999]``. The nightly timestamp ``D+1 00:00`` is one
microsecond after the row, so one day would already be enough; the second day lets scoring
survive one missing feature day (the previous row is reused, and it is never more than
48 h old), while a feature day missing for longer gives nulls rather than stale values.
Feast never joins a row stamped after the entity timestamp, whatever the TTL.

The configuration (registry, offline and online stores) is built in code by
``ml_tasks.feature_store`` from ``ml_tasks.settings``; this file holds no credentials.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.types import Bool, Float64, Int32, String

OWNER = "encore-data-platform"
TTL = timedelta(days=2)
TAGS = {"team": "data-platform", "cadence": "daily", "pii": "false"}


def _tags(**extra: str) -> dict[str, str]:
    return {**TAGS, **extra}


# --------------------------------------------------------------------------- entities

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A listener (raw.users.user_id).",
    owner=OWNER,
    tags=_tags(domain="users"),
)

track = Entity(
    name="track",
    join_keys=["track_id"],
    value_type=ValueType.STRING,
    description="A catalogue track (raw.tracks.track_id).",
    owner=OWNER,
    tags=_tags(domain="catalogue"),
)

# --------------------------------------------------------------------------- sources

user_daily_source = PostgreSQLSource(
    name="user_daily",
    table="features.user_daily",
    timestamp_field="feature_ts",
    description="features.user_daily: user features as of the end of each UTC day.",
    owner=OWNER,
    tags=_tags(domain="users"),
)

track_daily_source = PostgreSQLSource(
    name="track_daily",
    table="features.track_daily",
    timestamp_field="feature_ts",
    description="features.track_daily: track features as of the end of each UTC day.",
    owner=OWNER,
    tags=_tags(domain="catalogue"),
)

# --------------------------------------------------------------------------- user views


def _window_fields(days: int) -> list[Field]:
    return [
        Field(name=f"plays_{days}d", dtype=Int32),
        Field(name=f"listening_hours_{days}d", dtype=Float64),
        Field(name=f"sessions_{days}d", dtype=Int32),
        Field(name=f"active_days_{days}d", dtype=Int32),
        Field(name=f"skip_rate_{days}d", dtype=Float64),
        Field(name=f"completion_rate_{days}d", dtype=Float64),
        Field(name=f"like_rate_{days}d", dtype=Float64),
        Field(name=f"share_rate_{days}d", dtype=Float64),
        Field(name=f"distinct_tracks_{days}d", dtype=Int32),
        Field(name=f"distinct_artists_{days}d", dtype=Int32),
        Field(name=f"distinct_genres_{days}d", dtype=Int32),
    ]


user_engagement = FeatureView(
    name="user_engagement",
    entities=[user],
    ttl=TTL,
    schema=[
        *_window_fields(7),
        *_window_fields(14),
        *_window_fields(30),
        Field(name="listening_hours_trend", dtype=Float64),
        Field(name="plays_trend", dtype=Float64),
        Field(name="sessions_trend", dtype=Float64),
        Field(name="active_days_trend", dtype=Float64),
        Field(name="skip_rate_trend", dtype=Float64),
    ],
    source=user_daily_source,
    online=True,
    description=(
        "How much and how a user listens over 7, 14 and 30 days ending on the feature day "
        "(plays, hours, sessions, active days, skip/completion/like/share rates, distinct "
        "tracks/artists/genres) and the 7-vs-30-day trends. Rates are null without plays."
    ),
    owner=OWNER,
    tags=_tags(domain="users", group="engagement"),
)

user_mix = FeatureView(
    name="user_mix",
    entities=[user],
    ttl=TTL,
    schema=[
        *(
            Field(name=f"ctx_{ctx}_share_30d", dtype=Float64)
            for ctx in ("playlist", "album", "artist", "search", "radio", "recommendation")
        ),
        Field(name="ctx_other_share_30d", dtype=Float64),
        *(
            Field(name=f"dev_{dev}_share_30d", dtype=Float64)
            for dev in ("mobile", "desktop", "web", "tv", "speaker", "other")
        ),
        Field(name="night_share_30d", dtype=Float64),
        Field(name="avg_session_minutes_30d", dtype=Float64),
        Field(name="discovery_share_30d", dtype=Float64),
    ],
    source=user_daily_source,
    online=True,
    description=(
        "Where and when a user listens over 30 days: shares of plays by context "
        "(playlist, album, ...) and device, night share, session length and discovery "
        "share. Null without plays in the window."
    ),
    owner=OWNER,
    tags=_tags(domain="users", group="mix"),
)

user_account = FeatureView(
    name="user_account",
    entities=[user],
    ttl=TTL,
    schema=[
        Field(name="plan", dtype=String),
        Field(name="is_paying", dtype=Bool),
        Field(name="tenure_days", dtype=Int32),
        Field(name="days_since_last_play", dtype=Int32),
        Field(name="payment_failures_30d", dtype=Int32),
        Field(name="plan_changes_30d", dtype=Int32),
        Field(name="current_streak_days", dtype=Int32),
        Field(name="longest_streak_30d", dtype=Int32),
    ],
    source=user_daily_source,
    online=True,
    description=(
        "The user's subscription and habit: plan and paying status at the end of the day, "
        "tenure, days since the last play (null if never), payment failures and plan "
        "changes over 30 days, current and longest listening streaks."
    ),
    owner=OWNER,
    tags=_tags(domain="users", group="account"),
)

# --------------------------------------------------------------------------- track views

track_popularity = FeatureView(
    name="track_popularity",
    entities=[track],
    ttl=TTL,
    schema=[
        Field(name="plays_1d", dtype=Int32),
        Field(name="listeners_1d", dtype=Int32),
        Field(name="skip_rate_1d", dtype=Float64),
        Field(name="completion_rate_1d", dtype=Float64),
        Field(name="likes_1d", dtype=Int32),
        Field(name="shares_1d", dtype=Int32),
        Field(name="playlist_share_1d", dtype=Float64),
        Field(name="plays_7d", dtype=Int32),
        Field(name="plays_prev_7d", dtype=Int32),
        Field(name="plays_28d", dtype=Int32),
        Field(name="listener_days_7d", dtype=Int32),
        Field(name="likes_7d", dtype=Int32),
        Field(name="shares_7d", dtype=Int32),
        Field(name="skip_rate_7d", dtype=Float64),
        Field(name="completion_rate_7d", dtype=Float64),
        Field(name="playlist_share_7d", dtype=Float64),
        Field(name="plays_trend_7d", dtype=Float64),
        Field(name="artist_plays_7d", dtype=Int32),
        Field(name="artist_momentum", dtype=Float64),
    ],
    source=track_daily_source,
    online=True,
    description=(
        "Plays, listeners, engagement rates and momentum of a track (and its artist) on the "
        "feature day and over 7 and 28 days, net of plays flagged as stream fraud."
    ),
    owner=OWNER,
    tags=_tags(domain="catalogue", group="popularity"),
)

track_catalogue = FeatureView(
    name="track_catalogue",
    entities=[track],
    ttl=TTL,
    schema=[
        Field(name="artist_id", dtype=String),
        Field(name="genre", dtype=String),
        Field(name="days_since_release", dtype=Int32),
        Field(name="duration_ms", dtype=Int32),
        Field(name="explicit", dtype=Bool),
        Field(name="has_preview", dtype=Bool),
        Field(name="artist_tracks", dtype=Int32),
    ],
    source=track_daily_source,
    online=True,
    description=(
        "What the catalogue says about a track as of the feature day: artist, genre (null = "
        "unlabelled), age since release, length, explicit, preview, artist catalogue size."
    ),
    owner=OWNER,
    tags=_tags(domain="catalogue", group="catalogue"),
)

# --------------------------------------------------------------------------- services

churn_v1 = FeatureService(
    name="churn_v1",
    features=[user_engagement, user_mix, user_account],
    description="Every user feature, version 1: the inputs of the churn and segment models.",
    owner=OWNER,
    tags=_tags(model="churn", version="1"),
)

popularity_v1 = FeatureService(
    name="popularity_v1",
    features=[track_popularity, track_catalogue],
    description="Every track feature, version 1: the inputs of the popularity models.",
    owner=OWNER,
    tags=_tags(model="popularity", version="1"),
)

ENTITIES = [user, track]
SOURCES = [user_daily_source, track_daily_source]
FEATURE_VIEWS = [user_engagement, user_mix, user_account, track_popularity, track_catalogue]
FEATURE_SERVICES = [churn_v1, popularity_v1]
