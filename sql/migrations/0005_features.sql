-- Daily features. Two layers, each replaced atomically per day:
--   *_activity_daily: what happened on one UTC day (a pure function of that day's raw
--     partitions, the catalogue as of the day, and the day's fraud flags);
--   user_daily / track_daily: the features as of the end of a day (windows over the
--     activity layer), stamped feature_ts = the last microsecond of the day, and partitioned
--     on feature_ts (one partition per UTC day) so Feast's point-in-time queries and a
--     materialization of one data interval prune to the days they need.

CREATE TABLE features.user_activity_daily (
    dt                         date NOT NULL,
    user_id                    bigint NOT NULL,
    plays                      integer NOT NULL,
    listening_ms               bigint NOT NULL,
    skips                      integer NOT NULL,
    completions                integer NOT NULL,
    likes                      integer NOT NULL,
    shares                     integer NOT NULL,
    ctx_playlist               integer NOT NULL,
    ctx_album                  integer NOT NULL,
    ctx_artist                 integer NOT NULL,
    ctx_search                 integer NOT NULL,
    ctx_radio                  integer NOT NULL,
    ctx_recommendation         integer NOT NULL,
    ctx_other                  integer NOT NULL,
    dev_mobile                 integer NOT NULL,
    dev_desktop                integer NOT NULL,
    dev_web                    integer NOT NULL,
    dev_tv                     integer NOT NULL,
    dev_speaker                integer NOT NULL,
    dev_other                  integer NOT NULL,
    night_plays                integer NOT NULL,
    sessions                   integer NOT NULL,
    session_ms                 bigint NOT NULL,
    first_play_at              timestamptz NOT NULL,
    last_play_at               timestamptz NOT NULL,
    track_keys                 integer[] NOT NULL,
    artist_keys                integer[] NOT NULL,
    genres                     text[] NOT NULL,
    run_id                     text NOT NULL,
    PRIMARY KEY (dt, user_id)
) PARTITION BY RANGE (dt);
COMMENT ON TABLE features.user_activity_daily IS 'What each user did on one UTC day: additive counts and distinct sets, one row per user with at least one play. Replaced per day.';
COMMENT ON COLUMN features.user_activity_daily.dt IS 'UTC day of the plays.';
COMMENT ON COLUMN features.user_activity_daily.user_id IS 'User.';
COMMENT ON COLUMN features.user_activity_daily.plays IS 'Accepted plays that day.';
COMMENT ON COLUMN features.user_activity_daily.listening_ms IS 'Sum of ms_played.';
COMMENT ON COLUMN features.user_activity_daily.skips IS 'Plays skipped before the end.';
COMMENT ON COLUMN features.user_activity_daily.completions IS 'Plays not skipped with ms_played >= 90% of track_duration_ms.';
COMMENT ON COLUMN features.user_activity_daily.likes IS 'Plays during which the user liked the track.';
COMMENT ON COLUMN features.user_activity_daily.shares IS 'Plays the user shared.';
COMMENT ON COLUMN features.user_activity_daily.ctx_playlist IS 'Plays with context_type = playlist.';
COMMENT ON COLUMN features.user_activity_daily.ctx_album IS 'Plays with context_type = album.';
COMMENT ON COLUMN features.user_activity_daily.ctx_artist IS 'Plays with context_type = artist.';
COMMENT ON COLUMN features.user_activity_daily.ctx_search IS 'Plays with context_type = search.';
COMMENT ON COLUMN features.user_activity_daily.ctx_radio IS 'Plays with context_type = radio.';
COMMENT ON COLUMN features.user_activity_daily.ctx_recommendation IS 'Plays with context_type = recommendation.';
COMMENT ON COLUMN features.user_activity_daily.ctx_other IS 'Plays with context_type = other.';
COMMENT ON COLUMN features.user_activity_daily.dev_mobile IS 'Plays with device_type = mobile.';
COMMENT ON COLUMN features.user_activity_daily.dev_desktop IS 'Plays with device_type = desktop.';
COMMENT ON COLUMN features.user_activity_daily.dev_web IS 'Plays with device_type = web.';
COMMENT ON COLUMN features.user_activity_daily.dev_tv IS 'Plays with device_type = tv.';
COMMENT ON COLUMN features.user_activity_daily.dev_speaker IS 'Plays with device_type = speaker.';
COMMENT ON COLUMN features.user_activity_daily.dev_other IS 'Plays with device_type = other.';
COMMENT ON COLUMN features.user_activity_daily.night_plays IS 'Plays between 00:00 and 05:59 UTC.';
COMMENT ON COLUMN features.user_activity_daily.sessions IS 'Sessions started that day: a play more than 30 minutes after the previous play (across midnight too) starts one.';
COMMENT ON COLUMN features.user_activity_daily.session_ms IS 'Wall-clock span of that day''s listening sessions (first play start to last play end), in ms.';
COMMENT ON COLUMN features.user_activity_daily.first_play_at IS 'First play of the day.';
COMMENT ON COLUMN features.user_activity_daily.last_play_at IS 'Last play of the day.';
COMMENT ON COLUMN features.user_activity_daily.track_keys IS 'Distinct tracks played, as hashtext(track_id), for distinct counts over windows.';
COMMENT ON COLUMN features.user_activity_daily.artist_keys IS 'Distinct artists played (known tracks only), as hashtext(artist_id).';
COMMENT ON COLUMN features.user_activity_daily.genres IS 'Distinct catalogue genres played (known, labelled tracks only).';
COMMENT ON COLUMN features.user_activity_daily.run_id IS 'Run that computed the row.';

CREATE TABLE features.user_daily (
    dt                         date NOT NULL,
    user_id                    bigint NOT NULL,
    feature_ts                 timestamptz NOT NULL,
    plan                       text NOT NULL,
    is_paying                  boolean NOT NULL,
    tenure_days                integer NOT NULL,
    days_since_last_play       integer,
    plays_7d                   integer NOT NULL,
    listening_hours_7d         double precision NOT NULL,
    sessions_7d                integer NOT NULL,
    active_days_7d             integer NOT NULL,
    skip_rate_7d               double precision,
    completion_rate_7d         double precision,
    like_rate_7d               double precision,
    share_rate_7d              double precision,
    distinct_tracks_7d         integer NOT NULL,
    distinct_artists_7d        integer NOT NULL,
    distinct_genres_7d         integer NOT NULL,
    plays_14d                  integer NOT NULL,
    listening_hours_14d        double precision NOT NULL,
    sessions_14d               integer NOT NULL,
    active_days_14d            integer NOT NULL,
    skip_rate_14d              double precision,
    completion_rate_14d        double precision,
    like_rate_14d              double precision,
    share_rate_14d             double precision,
    distinct_tracks_14d        integer NOT NULL,
    distinct_artists_14d       integer NOT NULL,
    distinct_genres_14d        integer NOT NULL,
    plays_30d                  integer NOT NULL,
    listening_hours_30d        double precision NOT NULL,
    sessions_30d               integer NOT NULL,
    active_days_30d            integer NOT NULL,
    skip_rate_30d              double precision,
    completion_rate_30d        double precision,
    like_rate_30d              double precision,
    share_rate_30d             double precision,
    distinct_tracks_30d        integer NOT NULL,
    distinct_artists_30d       integer NOT NULL,
    distinct_genres_30d        integer NOT NULL,
    listening_hours_trend      double precision NOT NULL,
    plays_trend                double precision NOT NULL,
    sessions_trend             double precision NOT NULL,
    active_days_trend          double precision NOT NULL,
    skip_rate_trend            double precision,
    ctx_playlist_share_30d     double precision,
    ctx_album_share_30d        double precision,
    ctx_artist_share_30d       double precision,
    ctx_search_share_30d       double precision,
    ctx_radio_share_30d        double precision,
    ctx_recommendation_share_30d double precision,
    ctx_other_share_30d        double precision,
    dev_mobile_share_30d       double precision,
    dev_desktop_share_30d      double precision,
    dev_web_share_30d          double precision,
    dev_tv_share_30d           double precision,
    dev_speaker_share_30d      double precision,
    dev_other_share_30d        double precision,
    night_share_30d            double precision,
    avg_session_minutes_30d    double precision,
    discovery_share_30d        double precision,
    payment_failures_30d       integer NOT NULL,
    plan_changes_30d           integer NOT NULL,
    current_streak_days        integer NOT NULL,
    longest_streak_30d         integer NOT NULL,
    run_id                     text NOT NULL,
    computed_at                timestamptz NOT NULL,
    PRIMARY KEY (user_id, feature_ts)
) PARTITION BY RANGE (feature_ts);
COMMENT ON TABLE features.user_daily IS 'User features as of the end of each day, one row per user active on that day (paying at the end of the day, or a play in the 30 days ending on it). Feast source of the user feature views.';
COMMENT ON COLUMN features.user_daily.dt IS 'Feature day: the features describe the user as of the end of this UTC day.';
COMMENT ON COLUMN features.user_daily.user_id IS 'User (Feast entity user).';
COMMENT ON COLUMN features.user_daily.feature_ts IS 'Event timestamp for Feast: the last microsecond of dt (UTC); the values use only data up to it.';
COMMENT ON COLUMN features.user_daily.plan IS 'Plan at the end of the day (free after a cancel).';
COMMENT ON COLUMN features.user_daily.is_paying IS 'Plan is a paid plan at the end of the day.';
COMMENT ON COLUMN features.user_daily.tenure_days IS 'Days since signup_date (users version delivered by the day; the first active day in the 30-day window if the user is unknown).';
COMMENT ON COLUMN features.user_daily.days_since_last_play IS 'Days since the last play on or before the day; null if the user never played.';
COMMENT ON COLUMN features.user_daily.plays_7d IS 'Plays in the 7 days ending on dt.';
COMMENT ON COLUMN features.user_daily.listening_hours_7d IS 'Hours listened in the 7 days ending on dt.';
COMMENT ON COLUMN features.user_daily.sessions_7d IS 'Sessions started in the 7 days ending on dt.';
COMMENT ON COLUMN features.user_daily.active_days_7d IS 'Days with at least one play in the 7 days ending on dt.';
COMMENT ON COLUMN features.user_daily.skip_rate_7d IS 'Skipped / plays over 7 days; null without plays.';
COMMENT ON COLUMN features.user_daily.completion_rate_7d IS 'Completed / plays over 7 days; null without plays.';
COMMENT ON COLUMN features.user_daily.like_rate_7d IS 'Likes / plays over 7 days; null without plays.';
COMMENT ON COLUMN features.user_daily.share_rate_7d IS 'Shares / plays over 7 days; null without plays.';
COMMENT ON COLUMN features.user_daily.distinct_tracks_7d IS 'Distinct tracks played over 7 days.';
COMMENT ON COLUMN features.user_daily.distinct_artists_7d IS 'Distinct artists played over 7 days.';
COMMENT ON COLUMN features.user_daily.distinct_genres_7d IS 'Distinct genres played over 7 days.';
COMMENT ON COLUMN features.user_daily.plays_14d IS 'Plays in the 14 days ending on dt.';
COMMENT ON COLUMN features.user_daily.listening_hours_14d IS 'Hours listened in the 14 days ending on dt.';
COMMENT ON COLUMN features.user_daily.sessions_14d IS 'Sessions started in the 14 days ending on dt.';
COMMENT ON COLUMN features.user_daily.active_days_14d IS 'Days with at least one play in the 14 days ending on dt.';
COMMENT ON COLUMN features.user_daily.skip_rate_14d IS 'Skipped / plays over 14 days; null without plays.';
COMMENT ON COLUMN features.user_daily.completion_rate_14d IS 'Completed / plays over 14 days; null without plays.';
COMMENT ON COLUMN features.user_daily.like_rate_14d IS 'Likes / plays over 14 days; null without plays.';
COMMENT ON COLUMN features.user_daily.share_rate_14d IS 'Shares / plays over 14 days; null without plays.';
COMMENT ON COLUMN features.user_daily.distinct_tracks_14d IS 'Distinct tracks played over 14 days.';
COMMENT ON COLUMN features.user_daily.distinct_artists_14d IS 'Distinct artists played over 14 days.';
COMMENT ON COLUMN features.user_daily.distinct_genres_14d IS 'Distinct genres played over 14 days.';
COMMENT ON COLUMN features.user_daily.plays_30d IS 'Plays in the 30 days ending on dt.';
COMMENT ON COLUMN features.user_daily.listening_hours_30d IS 'Hours listened in the 30 days ending on dt.';
COMMENT ON COLUMN features.user_daily.sessions_30d IS 'Sessions started in the 30 days ending on dt.';
COMMENT ON COLUMN features.user_daily.active_days_30d IS 'Days with at least one play in the 30 days ending on dt.';
COMMENT ON COLUMN features.user_daily.skip_rate_30d IS 'Skipped / plays over 30 days; null without plays.';
COMMENT ON COLUMN features.user_daily.completion_rate_30d IS 'Completed / plays over 30 days; null without plays.';
COMMENT ON COLUMN features.user_daily.like_rate_30d IS 'Likes / plays over 30 days; null without plays.';
COMMENT ON COLUMN features.user_daily.share_rate_30d IS 'Shares / plays over 30 days; null without plays.';
COMMENT ON COLUMN features.user_daily.distinct_tracks_30d IS 'Distinct tracks played over 30 days.';
COMMENT ON COLUMN features.user_daily.distinct_artists_30d IS 'Distinct artists played over 30 days.';
COMMENT ON COLUMN features.user_daily.distinct_genres_30d IS 'Distinct genres played over 30 days.';
COMMENT ON COLUMN features.user_daily.listening_hours_trend IS 'Average daily hours over 7 days minus over 30 days (negative = listening less lately).';
COMMENT ON COLUMN features.user_daily.plays_trend IS 'Average daily plays over 7 days minus over 30 days.';
COMMENT ON COLUMN features.user_daily.sessions_trend IS 'Average daily sessions over 7 days minus over 30 days.';
COMMENT ON COLUMN features.user_daily.active_days_trend IS 'Share of active days over 7 days minus over 30 days.';
COMMENT ON COLUMN features.user_daily.skip_rate_trend IS 'skip_rate_7d minus skip_rate_30d; null without plays in 7 days.';
COMMENT ON COLUMN features.user_daily.ctx_playlist_share_30d IS 'Share of the 30-day plays with context playlist; null without plays.';
COMMENT ON COLUMN features.user_daily.ctx_album_share_30d IS 'Share of the 30-day plays with context album; null without plays.';
COMMENT ON COLUMN features.user_daily.ctx_artist_share_30d IS 'Share of the 30-day plays with context artist; null without plays.';
COMMENT ON COLUMN features.user_daily.ctx_search_share_30d IS 'Share of the 30-day plays with context search; null without plays.';
COMMENT ON COLUMN features.user_daily.ctx_radio_share_30d IS 'Share of the 30-day plays with context radio; null without plays.';
COMMENT ON COLUMN features.user_daily.ctx_recommendation_share_30d IS 'Share of the 30-day plays with context recommendation; null without plays.';
COMMENT ON COLUMN features.user_daily.ctx_other_share_30d IS 'Share of the 30-day plays with context other; null without plays.';
COMMENT ON COLUMN features.user_daily.dev_mobile_share_30d IS 'Share of the 30-day plays on device mobile; null without plays.';
COMMENT ON COLUMN features.user_daily.dev_desktop_share_30d IS 'Share of the 30-day plays on device desktop; null without plays.';
COMMENT ON COLUMN features.user_daily.dev_web_share_30d IS 'Share of the 30-day plays on device web; null without plays.';
COMMENT ON COLUMN features.user_daily.dev_tv_share_30d IS 'Share of the 30-day plays on device tv; null without plays.';
COMMENT ON COLUMN features.user_daily.dev_speaker_share_30d IS 'Share of the 30-day plays on device speaker; null without plays.';
COMMENT ON COLUMN features.user_daily.dev_other_share_30d IS 'Share of the 30-day plays on device other; null without plays.';
COMMENT ON COLUMN features.user_daily.night_share_30d IS 'Share of the 30-day plays between 00:00 and 05:59 UTC; null without plays.';
COMMENT ON COLUMN features.user_daily.avg_session_minutes_30d IS 'Average session length over 30 days in minutes; null without sessions.';
COMMENT ON COLUMN features.user_daily.discovery_share_30d IS 'Distinct tracks / plays over 30 days (1 = every play a different track); null without plays.';
COMMENT ON COLUMN features.user_daily.payment_failures_30d IS 'payment_failed events in the 30 days ending on dt.';
COMMENT ON COLUMN features.user_daily.plan_changes_30d IS 'upgrade, downgrade, cancel and reactivate events in the 30 days ending on dt.';
COMMENT ON COLUMN features.user_daily.current_streak_days IS 'Consecutive days with plays ending on dt (0 if no play on dt; at most 30).';
COMMENT ON COLUMN features.user_daily.longest_streak_30d IS 'Longest run of consecutive active days within the 30 days ending on dt.';
COMMENT ON COLUMN features.user_daily.run_id IS 'Run that computed the row.';
COMMENT ON COLUMN features.user_daily.computed_at IS 'When the row was computed.';

CREATE TABLE features.track_activity_daily (
    dt                         date NOT NULL,
    track_id                   text NOT NULL,
    plays                      integer NOT NULL,
    listeners                  integer NOT NULL,
    skips                      integer NOT NULL,
    completions                integer NOT NULL,
    likes                      integer NOT NULL,
    shares                     integer NOT NULL,
    playlist_plays             integer NOT NULL,
    listening_ms               bigint NOT NULL,
    flagged_plays              integer NOT NULL,
    run_id                     text NOT NULL,
    PRIMARY KEY (dt, track_id)
) PARTITION BY RANGE (dt);
COMMENT ON TABLE features.track_activity_daily IS 'What happened to each track on one UTC day, net of plays flagged as fraud; one row per track played that day. Replaced per day.';
COMMENT ON COLUMN features.track_activity_daily.dt IS 'UTC day of the plays.';
COMMENT ON COLUMN features.track_activity_daily.track_id IS 'Track.';
COMMENT ON COLUMN features.track_activity_daily.plays IS 'Plays that day, net of plays by user-days flagged as fraud.';
COMMENT ON COLUMN features.track_activity_daily.listeners IS 'Distinct users who played it (net of flagged user-days).';
COMMENT ON COLUMN features.track_activity_daily.skips IS 'Skipped plays.';
COMMENT ON COLUMN features.track_activity_daily.completions IS 'Plays not skipped with ms_played >= 90% of track_duration_ms.';
COMMENT ON COLUMN features.track_activity_daily.likes IS 'Likes.';
COMMENT ON COLUMN features.track_activity_daily.shares IS 'Shares.';
COMMENT ON COLUMN features.track_activity_daily.playlist_plays IS 'Plays with context_type = playlist.';
COMMENT ON COLUMN features.track_activity_daily.listening_ms IS 'Sum of ms_played.';
COMMENT ON COLUMN features.track_activity_daily.flagged_plays IS 'Plays left out because their user-day is flagged in monitoring.stream_anomalies.';
COMMENT ON COLUMN features.track_activity_daily.run_id IS 'Run that computed the row.';

CREATE TABLE features.track_daily (
    dt                         date NOT NULL,
    track_id                   text NOT NULL,
    feature_ts                 timestamptz NOT NULL,
    artist_id                  text NOT NULL,
    genre                      text,
    days_since_release         integer NOT NULL,
    duration_ms                integer NOT NULL,
    explicit                   boolean NOT NULL,
    has_preview                boolean NOT NULL,
    plays_1d                   integer NOT NULL,
    listeners_1d               integer NOT NULL,
    skip_rate_1d               double precision,
    completion_rate_1d         double precision,
    likes_1d                   integer NOT NULL,
    shares_1d                  integer NOT NULL,
    playlist_share_1d          double precision,
    plays_7d                   integer NOT NULL,
    plays_prev_7d              integer NOT NULL,
    plays_28d                  integer NOT NULL,
    listener_days_7d           integer NOT NULL,
    likes_7d                   integer NOT NULL,
    shares_7d                  integer NOT NULL,
    skip_rate_7d               double precision,
    completion_rate_7d         double precision,
    playlist_share_7d          double precision,
    plays_trend_7d             double precision NOT NULL,
    artist_plays_7d            integer NOT NULL,
    artist_momentum            double precision NOT NULL,
    artist_tracks              integer NOT NULL,
    run_id                     text NOT NULL,
    computed_at                timestamptz NOT NULL,
    PRIMARY KEY (track_id, feature_ts)
) PARTITION BY RANGE (feature_ts);
COMMENT ON TABLE features.track_daily IS 'Track features as of the end of each day, one row per catalogue track known on that day; play counts are net of fraud-flagged plays. Feast source of the track feature views.';
COMMENT ON COLUMN features.track_daily.dt IS 'Feature day: the features describe the track as of the end of this UTC day.';
COMMENT ON COLUMN features.track_daily.track_id IS 'Track (Feast entity track).';
COMMENT ON COLUMN features.track_daily.feature_ts IS 'Event timestamp for Feast: the last microsecond of dt (UTC); the values use only data up to it.';
COMMENT ON COLUMN features.track_daily.artist_id IS 'Artist (catalogue as of the day).';
COMMENT ON COLUMN features.track_daily.genre IS 'Catalogue genre; null = unlabelled.';
COMMENT ON COLUMN features.track_daily.days_since_release IS 'dt minus release_date (negative before release).';
COMMENT ON COLUMN features.track_daily.duration_ms IS 'Track length.';
COMMENT ON COLUMN features.track_daily.explicit IS 'Explicit lyrics.';
COMMENT ON COLUMN features.track_daily.has_preview IS 'The catalogue names a preview clip.';
COMMENT ON COLUMN features.track_daily.plays_1d IS 'Plays on dt (net of fraud).';
COMMENT ON COLUMN features.track_daily.listeners_1d IS 'Distinct listeners on dt.';
COMMENT ON COLUMN features.track_daily.skip_rate_1d IS 'Skips / plays on dt; null without plays.';
COMMENT ON COLUMN features.track_daily.completion_rate_1d IS 'Completions / plays on dt; null without plays.';
COMMENT ON COLUMN features.track_daily.likes_1d IS 'Likes on dt.';
COMMENT ON COLUMN features.track_daily.shares_1d IS 'Shares on dt.';
COMMENT ON COLUMN features.track_daily.playlist_share_1d IS 'Playlist plays / plays on dt; null without plays.';
COMMENT ON COLUMN features.track_daily.plays_7d IS 'Plays in the 7 days ending on dt.';
COMMENT ON COLUMN features.track_daily.plays_prev_7d IS 'Plays in the 7 days before those.';
COMMENT ON COLUMN features.track_daily.plays_28d IS 'Plays in the 28 days ending on dt.';
COMMENT ON COLUMN features.track_daily.listener_days_7d IS 'Sum of daily distinct listeners over 7 days.';
COMMENT ON COLUMN features.track_daily.likes_7d IS 'Likes over 7 days.';
COMMENT ON COLUMN features.track_daily.shares_7d IS 'Shares over 7 days.';
COMMENT ON COLUMN features.track_daily.skip_rate_7d IS 'Skips / plays over 7 days; null without plays.';
COMMENT ON COLUMN features.track_daily.completion_rate_7d IS 'Completions / plays over 7 days; null without plays.';
COMMENT ON COLUMN features.track_daily.playlist_share_7d IS 'Playlist plays / plays over 7 days; null without plays.';
COMMENT ON COLUMN features.track_daily.plays_trend_7d IS 'ln((plays_7d + 1) / (plays_prev_7d + 1)): positive = rising.';
COMMENT ON COLUMN features.track_daily.artist_plays_7d IS 'Plays of all the artist''s tracks over 7 days.';
COMMENT ON COLUMN features.track_daily.artist_momentum IS 'ln((artist plays over 7 days + 1) / (over the 7 days before + 1)).';
COMMENT ON COLUMN features.track_daily.artist_tracks IS 'Tracks by the artist in the catalogue as of dt.';
COMMENT ON COLUMN features.track_daily.run_id IS 'Run that computed the row.';
COMMENT ON COLUMN features.track_daily.computed_at IS 'When the row was computed.';

CREATE TABLE features.build_log (
    table_name                 text NOT NULL,
    dt                         date NOT NULL,
    run_id                     text NOT NULL,
    rows                       bigint NOT NULL,
    inputs_as_of               timestamptz,
    seconds                    double precision NOT NULL,
    built_at                   timestamptz NOT NULL,
    PRIMARY KEY (table_name, dt)
);
COMMENT ON TABLE features.build_log IS 'The last build of each feature table day (replaced with the day): lets a feature run rebuild stale or missing activity days in its window.';
COMMENT ON COLUMN features.build_log.table_name IS 'Feature table.';
COMMENT ON COLUMN features.build_log.dt IS 'Day.';
COMMENT ON COLUMN features.build_log.run_id IS 'Run that built it.';
COMMENT ON COLUMN features.build_log.rows IS 'Rows written.';
COMMENT ON COLUMN features.build_log.inputs_as_of IS 'For activity tables: finish time of the latest ingest run of the day when it was built (a later ingest makes it stale).';
COMMENT ON COLUMN features.build_log.seconds IS 'Wall time of the build.';
COMMENT ON COLUMN features.build_log.built_at IS 'When the day was committed.';

CREATE TABLE monitoring.stream_anomalies (
    dt                         date NOT NULL,
    user_id                    bigint NOT NULL,
    anomaly_score              double precision NOT NULL,
    is_flagged                 boolean NOT NULL,
    reasons                    text[] NOT NULL,
    model_version              text NOT NULL,
    run_id                     text NOT NULL,
    scored_at                  timestamptz NOT NULL,
    PRIMARY KEY (dt, user_id)
);
COMMENT ON TABLE monitoring.stream_anomalies IS 'Stream-fraud anomaly scores per user-day (Isolation Forest over user-day behaviour); flagged user-days are excluded from popularity features and targets. Replaced per day.';
COMMENT ON COLUMN monitoring.stream_anomalies.dt IS 'UTC day of the behaviour.';
COMMENT ON COLUMN monitoring.stream_anomalies.user_id IS 'User.';
COMMENT ON COLUMN monitoring.stream_anomalies.anomaly_score IS 'Isolation Forest anomaly score (higher = more anomalous).';
COMMENT ON COLUMN monitoring.stream_anomalies.is_flagged IS 'The user-day is treated as stream fraud: its plays are left out of track features and popularity targets.';
COMMENT ON COLUMN monitoring.stream_anomalies.reasons IS 'The behaviours that stood out, most unusual first.';
COMMENT ON COLUMN monitoring.stream_anomalies.model_version IS 'Detector version.';
COMMENT ON COLUMN monitoring.stream_anomalies.run_id IS 'Run that scored it.';
COMMENT ON COLUMN monitoring.stream_anomalies.scored_at IS 'When it was scored.';

-- days_since_last_play looks up a user's last active day beyond the 30-day window.
CREATE INDEX user_activity_daily_user_idx ON features.user_activity_daily (user_id, dt);
