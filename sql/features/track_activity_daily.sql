-- features.track_activity_daily for one UTC day: what happened to each track that day,
-- net of plays by user-days flagged as stream fraud in monitoring.stream_anomalies.
-- Parameters: %(day)s, %(lo)s / %(hi)s (the day's UTC bounds), %(run_id)s.
INSERT INTO {stage}
WITH plays AS (
    SELECT e.track_id, e.user_id, e.ms_played, e.track_duration_ms, e.skipped, e.liked,
           e.shared, e.context_type,
           (a.user_id IS NOT NULL) AS flagged
    FROM raw.listening_events e
    LEFT JOIN monitoring.stream_anomalies a
           ON a.dt = %(day)s::date AND a.user_id = e.user_id AND a.is_flagged
    WHERE e.played_at >= %(lo)s AND e.played_at < %(hi)s
)
SELECT
    %(day)s::date AS dt,
    track_id,
    count(*) FILTER (WHERE NOT flagged) AS plays,
    count(DISTINCT user_id) FILTER (WHERE NOT flagged) AS listeners,
    count(*) FILTER (WHERE NOT flagged AND skipped) AS skips,
    count(*) FILTER (WHERE NOT flagged AND NOT skipped AND ms_played >= 0.9 * track_duration_ms)
        AS completions,
    count(*) FILTER (WHERE NOT flagged AND liked) AS likes,
    count(*) FILTER (WHERE NOT flagged AND shared) AS shares,
    count(*) FILTER (WHERE NOT flagged AND context_type = 'playlist') AS playlist_plays,
    coalesce(sum(ms_played) FILTER (WHERE NOT flagged), 0)::bigint AS listening_ms,
    count(*) FILTER (WHERE flagged) AS flagged_plays,
    %(run_id)s AS run_id
FROM plays
GROUP BY track_id
