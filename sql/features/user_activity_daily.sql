-- features.user_activity_daily for one UTC day: what each user did that day.
-- Parameters: %(day)s (date), %(lo)s / %(hi)s (the day's UTC bounds), %(run_id)s.
-- Reads the day's raw.listening_events partition (plus the 30 minutes before it, to tell a
-- new session from one that started before midnight) and the catalogue as of the day
-- (temporary table catalogue, made by the caller from raw.track_versions).
INSERT INTO {stage}
WITH plays AS (
    SELECT e.user_id, e.track_id, e.played_at, e.ms_played, e.track_duration_ms, e.skipped,
           e.liked, e.shared, e.context_type, e.device_type,
           lag(e.played_at) OVER (PARTITION BY e.user_id ORDER BY e.played_at, e.event_key)
               AS prev_at
    FROM raw.listening_events e
    WHERE e.played_at >= %(lo)s AND e.played_at < %(hi)s
),
before_day AS (
    SELECT user_id, max(played_at) AS played_at
    FROM raw.listening_events
    WHERE played_at >= %(lo)s::timestamptz - interval '30 minutes' AND played_at < %(lo)s
    GROUP BY user_id
),
marked AS (
    SELECT p.*,
           coalesce(p.played_at - coalesce(p.prev_at, b.played_at) > interval '30 minutes',
                    true) AS starts_session
    FROM plays p LEFT JOIN before_day b USING (user_id)
),
numbered AS (
    SELECT m.*,
           sum(m.starts_session::int) OVER (PARTITION BY m.user_id ORDER BY m.played_at
               ROWS UNBOUNDED PRECEDING) AS session_no
    FROM marked m
),
spans AS (
    SELECT user_id,
           sum(span_ms)::bigint AS session_ms
    FROM (
        SELECT user_id, session_no,
               extract(epoch FROM max(played_at + ms_played * interval '1 millisecond')
                                  - min(played_at)) * 1000 AS span_ms
        FROM numbered
        GROUP BY user_id, session_no
    ) s
    GROUP BY user_id
)
SELECT
    %(day)s::date AS dt,
    n.user_id,
    count(*) AS plays,
    sum(n.ms_played)::bigint AS listening_ms,
    count(*) FILTER (WHERE n.skipped) AS skips,
    count(*) FILTER (WHERE NOT n.skipped AND n.ms_played >= 0.9 * n.track_duration_ms)
        AS completions,
    count(*) FILTER (WHERE n.liked) AS likes,
    count(*) FILTER (WHERE n.shared) AS shares,
    count(*) FILTER (WHERE n.context_type = 'playlist') AS ctx_playlist,
    count(*) FILTER (WHERE n.context_type = 'album') AS ctx_album,
    count(*) FILTER (WHERE n.context_type = 'artist') AS ctx_artist,
    count(*) FILTER (WHERE n.context_type = 'search') AS ctx_search,
    count(*) FILTER (WHERE n.context_type = 'radio') AS ctx_radio,
    count(*) FILTER (WHERE n.context_type = 'recommendation') AS ctx_recommendation,
    count(*) FILTER (WHERE n.context_type = 'other') AS ctx_other,
    count(*) FILTER (WHERE n.device_type = 'mobile') AS dev_mobile,
    count(*) FILTER (WHERE n.device_type = 'desktop') AS dev_desktop,
    count(*) FILTER (WHERE n.device_type = 'web') AS dev_web,
    count(*) FILTER (WHERE n.device_type = 'tv') AS dev_tv,
    count(*) FILTER (WHERE n.device_type = 'speaker') AS dev_speaker,
    count(*) FILTER (WHERE n.device_type = 'other') AS dev_other,
    count(*) FILTER (WHERE extract(hour FROM n.played_at AT TIME ZONE 'UTC') < 6)
        AS night_plays,
    count(*) FILTER (WHERE n.starts_session) AS sessions,
    max(s.session_ms) AS session_ms,
    min(n.played_at) AS first_play_at,
    max(n.played_at) AS last_play_at,
    array_agg(DISTINCT hashtext(n.track_id)) AS track_keys,
    coalesce(array_agg(DISTINCT hashtext(c.artist_id)) FILTER (WHERE c.artist_id IS NOT NULL),
             ARRAY[]::integer[]) AS artist_keys,
    coalesce(array_agg(DISTINCT c.genre) FILTER (WHERE c.genre IS NOT NULL),
             ARRAY[]::text[]) AS genres,
    %(run_id)s AS run_id
FROM numbered n
JOIN spans s USING (user_id)
LEFT JOIN catalogue c ON c.track_id = n.track_id
GROUP BY n.user_id
