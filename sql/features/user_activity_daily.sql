-- features.user_activity_daily for one UTC day: what each user did that day.
-- Parameters: %(day)s (date), %(lo)s / %(hi)s (the day's UTC bounds), %(run_id)s.
-- Reads the day's raw.listening_events partition (plus the 30 minutes before it, to tell a
-- new session from one that started before midnight) and the catalogue as of the day
-- (temporary table catalogue, made by the caller from raw.track_versions).
-- One pass in play order: the catalogue is joined before the sort, and each session's span
-- is a window over that order, so the final GROUP BY reads the rows already sorted. (Joining
-- the catalogue after the windows, and a second aggregate for the spans, re-sorted every
-- play: 9.5 s against 7.4 s for a 2.7M-play day, same rows.)
INSERT INTO {stage}
WITH plays AS (
    SELECT e.user_id, e.track_id, e.played_at, e.ms_played, e.track_duration_ms, e.skipped,
           e.liked, e.shared, e.context_type, e.device_type, c.artist_id, c.genre,
           lag(e.played_at) OVER (PARTITION BY e.user_id ORDER BY e.played_at, e.event_key)
               AS prev_at
    FROM raw.listening_events e
    LEFT JOIN catalogue c ON c.track_id = e.track_id
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
sessions AS (
    -- each session's span, carried by one of its rows (row_number 1)
    SELECT n.*,
           CASE WHEN row_number() OVER s = 1 THEN
               extract(epoch FROM max(n.played_at + n.ms_played * interval '1 millisecond')
                                      OVER s
                                  - min(n.played_at) OVER s) * 1000
           END AS span_ms
    FROM numbered n
    WINDOW s AS (PARTITION BY n.user_id, n.session_no)
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
    sum(n.span_ms)::bigint AS session_ms,
    min(n.played_at) AS first_play_at,
    max(n.played_at) AS last_play_at,
    array_agg(DISTINCT hashtext(n.track_id)) AS track_keys,
    coalesce(array_agg(DISTINCT hashtext(n.artist_id)) FILTER (WHERE n.artist_id IS NOT NULL),
             ARRAY[]::integer[]) AS artist_keys,
    coalesce(array_agg(DISTINCT n.genre) FILTER (WHERE n.genre IS NOT NULL),
             ARRAY[]::text[]) AS genres,
    %(run_id)s AS run_id,
    coalesce(array_agg(DISTINCT hashtext(n.genre)) FILTER (WHERE n.genre IS NOT NULL),
             ARRAY[]::integer[]) AS genre_keys
FROM sessions n
GROUP BY n.user_id
