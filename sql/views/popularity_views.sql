-- Analyst views over track popularity forecasts (scores.track_popularity).
-- Re-applied by encore migrate whenever this file changes (ml.view_definitions).

DROP VIEW IF EXISTS analytics.top_rising_tracks;
CREATE VIEW analytics.top_rising_tracks AS
WITH latest AS (
    SELECT p.*
    FROM scores.track_popularity p
    WHERE p.dt = (SELECT max(dt) FROM scores.track_popularity)
)
SELECT row_number() OVER (
           ORDER BY (l.predicted_plays_7d + 1.0) / (l.naive_plays_7d + 1.0) DESC,
                    l.predicted_plays_7d DESC, l.track_id
       )::integer AS rising_rank,
       l.dt AS scored_for,
       l.track_id,
       k.title,
       f.artist_id,
       f.genre,
       f.days_since_release,
       l.predicted_plays_1d,
       l.predicted_plays_7d,
       l.predicted_plays_30d,
       l.naive_plays_7d AS plays_last_7d,
       l.naive_plays_1d AS plays_last_1d,
       l.naive_plays_30d AS plays_last_30d,
       (l.predicted_plays_7d + 1.0) / (l.naive_plays_7d + 1.0) AS rise_ratio,
       l.model_version,
       l.scored_at
FROM latest l
LEFT JOIN features.track_daily f
       ON f.track_id = l.track_id
      AND f.feature_ts = (l.dt + 1)::timestamp AT TIME ZONE 'UTC' - interval '1 microsecond'
LEFT JOIN raw.tracks k ON k.track_id = l.track_id;
COMMENT ON VIEW analytics.top_rising_tracks IS 'Tracks of the latest popularity scoring day ranked by how much their forecast plays over the next 7 days exceed their plays over the last 7 days (rise_ratio, smoothed by +1 so tracks without recent plays rank sensibly); rank 1 = rising fastest. Play counts are net of fraud-flagged plays.';
COMMENT ON COLUMN analytics.top_rising_tracks.rising_rank IS 'Rank by rise_ratio (ties: higher forecast first); 1 = rising fastest.';
COMMENT ON COLUMN analytics.top_rising_tracks.scored_for IS 'Latest scoring day: the forecasts cover the days after it.';
COMMENT ON COLUMN analytics.top_rising_tracks.track_id IS 'Track.';
COMMENT ON COLUMN analytics.top_rising_tracks.title IS 'Track title (current catalogue).';
COMMENT ON COLUMN analytics.top_rising_tracks.artist_id IS 'Artist (catalogue as of the scoring day).';
COMMENT ON COLUMN analytics.top_rising_tracks.genre IS 'Catalogue genre as of the scoring day; null = unlabelled.';
COMMENT ON COLUMN analytics.top_rising_tracks.days_since_release IS 'Days from the release date to the scoring day (negative: not released yet).';
COMMENT ON COLUMN analytics.top_rising_tracks.predicted_plays_1d IS 'Forecast plays on the day after the scoring day.';
COMMENT ON COLUMN analytics.top_rising_tracks.predicted_plays_7d IS 'Forecast plays over the 7 days after the scoring day.';
COMMENT ON COLUMN analytics.top_rising_tracks.predicted_plays_30d IS 'Forecast plays over the 30 days after the scoring day.';
COMMENT ON COLUMN analytics.top_rising_tracks.plays_last_7d IS 'Plays over the 7 days ending on the scoring day (the naive 7-day baseline).';
COMMENT ON COLUMN analytics.top_rising_tracks.plays_last_1d IS 'Plays on the scoring day (the naive 1-day baseline).';
COMMENT ON COLUMN analytics.top_rising_tracks.plays_last_30d IS 'Plays over the 30 days ending on the scoring day (the naive 30-day baseline).';
COMMENT ON COLUMN analytics.top_rising_tracks.rise_ratio IS '(predicted_plays_7d + 1) / (plays_last_7d + 1): above 1 = forecast to rise.';
COMMENT ON COLUMN analytics.top_rising_tracks.model_version IS 'Popularity model version that made the forecast.';
COMMENT ON COLUMN analytics.top_rising_tracks.scored_at IS 'When it was scored.';
