-- features.track_daily for feature day D: every track in the catalogue as of D, described
-- as of the end of D. Play counts come from features.track_activity_daily (net of plays
-- flagged as fraud) for D-27 .. D; the caller makes sure those days are built and fills
-- the temporary table catalogue (the latest raw.track_versions row per track by D).
-- Parameters: %(day)s, %(feature_ts)s, %(run_id)s.
INSERT INTO {stage}
WITH act AS (
    SELECT a.*, (%(day)s::date - a.dt) AS age
    FROM features.track_activity_daily a
    WHERE a.dt BETWEEN %(day)s::date - 27 AND %(day)s::date
),
windows AS (
    SELECT track_id,
           sum(plays) FILTER (WHERE age = 0) AS plays_1, sum(listeners) FILTER (WHERE age = 0) AS listeners_1,
           sum(skips) FILTER (WHERE age = 0) AS skips_1,
           sum(completions) FILTER (WHERE age = 0) AS compl_1,
           sum(likes) FILTER (WHERE age = 0) AS likes_1, sum(shares) FILTER (WHERE age = 0) AS shares_1,
           sum(playlist_plays) FILTER (WHERE age = 0) AS playlist_1,
           sum(plays) FILTER (WHERE age < 7) AS plays_7,
           sum(plays) FILTER (WHERE age BETWEEN 7 AND 13) AS plays_prev_7,
           sum(plays) AS plays_28,
           sum(listeners) FILTER (WHERE age < 7) AS listener_days_7,
           sum(likes) FILTER (WHERE age < 7) AS likes_7,
           sum(shares) FILTER (WHERE age < 7) AS shares_7,
           sum(skips) FILTER (WHERE age < 7) AS skips_7,
           sum(completions) FILTER (WHERE age < 7) AS compl_7,
           sum(playlist_plays) FILTER (WHERE age < 7) AS playlist_7
    FROM act
    GROUP BY track_id
),
tracks AS (
    SELECT c.*, coalesce(w.plays_7, 0) AS p7, coalesce(w.plays_prev_7, 0) AS pp7
    FROM catalogue c LEFT JOIN windows w USING (track_id)
),
artists AS (
    SELECT artist_id, sum(p7) AS plays_7, sum(pp7) AS plays_prev_7, count(*) AS n_tracks
    FROM tracks GROUP BY artist_id
)
SELECT
    %(day)s::date AS dt,
    c.track_id,
    %(feature_ts)s::timestamptz AS feature_ts,
    c.artist_id,
    c.genre,
    %(day)s::date - c.release_date AS days_since_release,
    c.duration_ms,
    c.explicit,
    c.preview_path IS NOT NULL AS has_preview,
    coalesce(w.plays_1, 0), coalesce(w.listeners_1, 0),
    w.skips_1::float8 / nullif(w.plays_1, 0), w.compl_1::float8 / nullif(w.plays_1, 0),
    coalesce(w.likes_1, 0), coalesce(w.shares_1, 0),
    w.playlist_1::float8 / nullif(w.plays_1, 0),
    coalesce(w.plays_7, 0), coalesce(w.plays_prev_7, 0), coalesce(w.plays_28, 0),
    coalesce(w.listener_days_7, 0), coalesce(w.likes_7, 0), coalesce(w.shares_7, 0),
    w.skips_7::float8 / nullif(w.plays_7, 0), w.compl_7::float8 / nullif(w.plays_7, 0),
    w.playlist_7::float8 / nullif(w.plays_7, 0),
    ln((coalesce(w.plays_7, 0) + 1.0) / (coalesce(w.plays_prev_7, 0) + 1.0)) AS plays_trend_7d,
    a.plays_7 AS artist_plays_7d,
    ln((a.plays_7 + 1.0) / (a.plays_prev_7 + 1.0)) AS artist_momentum,
    a.n_tracks AS artist_tracks,
    %(run_id)s AS run_id,
    now() AS computed_at
FROM tracks c
JOIN artists a USING (artist_id)
LEFT JOIN windows w USING (track_id)
