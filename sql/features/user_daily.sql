-- features.user_daily for feature day D: every user active on D (a paying plan at the end
-- of D, or a play in the 30 days ending on D), described as of the end of D.
-- Parameters: %(day)s (D), %(hi)s (end of D, exclusive), %(feature_ts)s, %(run_id)s.
-- Reads features.user_activity_daily for D-29 .. D (the caller makes sure those days are
-- built), raw.subscription_events up to the end of D, raw.user_versions delivered by D and
-- the temporary table user_key_counts (distinct tracks, artists and genres per user and
-- window).
INSERT INTO {stage}
WITH act AS (
    SELECT a.*, (%(day)s::date - a.dt) AS age
    FROM features.user_activity_daily a
    WHERE a.dt BETWEEN %(day)s::date - 29 AND %(day)s::date
),
windows AS (
    SELECT user_id,
           sum(plays) FILTER (WHERE age < 7) AS plays_7, sum(plays) FILTER (WHERE age < 14) AS plays_14,
           sum(plays) AS plays_30,
           sum(listening_ms) FILTER (WHERE age < 7) AS ms_7,
           sum(listening_ms) FILTER (WHERE age < 14) AS ms_14, sum(listening_ms) AS ms_30,
           sum(sessions) FILTER (WHERE age < 7) AS sessions_7,
           sum(sessions) FILTER (WHERE age < 14) AS sessions_14, sum(sessions) AS sessions_30,
           count(*) FILTER (WHERE age < 7) AS days_7, count(*) FILTER (WHERE age < 14) AS days_14,
           count(*) AS days_30,
           sum(skips) FILTER (WHERE age < 7) AS skips_7,
           sum(skips) FILTER (WHERE age < 14) AS skips_14, sum(skips) AS skips_30,
           sum(completions) FILTER (WHERE age < 7) AS compl_7,
           sum(completions) FILTER (WHERE age < 14) AS compl_14, sum(completions) AS compl_30,
           sum(likes) FILTER (WHERE age < 7) AS likes_7,
           sum(likes) FILTER (WHERE age < 14) AS likes_14, sum(likes) AS likes_30,
           sum(shares) FILTER (WHERE age < 7) AS shares_7,
           sum(shares) FILTER (WHERE age < 14) AS shares_14, sum(shares) AS shares_30,
           sum(ctx_playlist) AS ctx_playlist, sum(ctx_album) AS ctx_album,
           sum(ctx_artist) AS ctx_artist, sum(ctx_search) AS ctx_search,
           sum(ctx_radio) AS ctx_radio, sum(ctx_recommendation) AS ctx_recommendation,
           sum(ctx_other) AS ctx_other,
           sum(dev_mobile) AS dev_mobile, sum(dev_desktop) AS dev_desktop,
           sum(dev_web) AS dev_web, sum(dev_tv) AS dev_tv, sum(dev_speaker) AS dev_speaker,
           sum(dev_other) AS dev_other,
           sum(night_plays) AS night_plays, sum(session_ms) AS session_ms_30,
           max(dt) AS last_dt, min(dt) AS first_dt,
           bit_or(1::bigint << age)::bit(30)::text AS active_bits
    FROM act
    GROUP BY user_id
),
-- Distinct tracks, artists and genres per window come from pg_temp.user_key_counts, which
-- features._make_key_counts fills (counted in numpy from the same activity rows; a hash
-- aggregate over every (user, key) pair of the window was most of this query's time).
tracks_n AS (
    SELECT user_id, tracks_7 AS n7, tracks_14 AS n14, tracks_30 AS n30
    FROM pg_temp.user_key_counts WHERE tracks_30 > 0
),
artists_n AS (
    SELECT user_id, artists_7 AS n7, artists_14 AS n14, artists_30 AS n30
    FROM pg_temp.user_key_counts WHERE artists_30 > 0
),
genres_n AS (
    SELECT user_id, genres_7 AS n7, genres_14 AS n14, genres_30 AS n30
    FROM pg_temp.user_key_counts WHERE genres_30 > 0
),
subs AS (
    SELECT DISTINCT ON (user_id) user_id,
           CASE WHEN event_type = 'cancel' THEN 'free' ELSE plan END AS plan
    FROM raw.subscription_events
    WHERE event_at < %(hi)s
    ORDER BY user_id, event_at DESC, event_key DESC
),
sub_window AS (
    SELECT user_id,
           count(*) FILTER (WHERE event_type = 'payment_failed') AS payment_failures,
           count(*) FILTER (WHERE event_type IN ('upgrade', 'downgrade', 'cancel', 'reactivate'))
               AS plan_changes
    FROM raw.subscription_events
    WHERE event_at >= %(hi)s::timestamptz - interval '30 days' AND event_at < %(hi)s
    GROUP BY user_id
),
population AS (
    SELECT user_id FROM windows
    UNION
    SELECT user_id FROM subs WHERE plan <> 'free'
),
profile AS (
    SELECT DISTINCT ON (user_id) user_id, signup_date
    FROM raw.user_versions
    WHERE dt <= %(day)s::date AND user_id IN (SELECT user_id FROM population)
    ORDER BY user_id, dt DESC
)
SELECT
    %(day)s::date AS dt,
    p.user_id,
    %(feature_ts)s::timestamptz AS feature_ts,
    coalesce(s.plan, 'free') AS plan,
    coalesce(s.plan, 'free') <> 'free' AS is_paying,
    greatest(%(day)s::date - coalesce(pr.signup_date, w.first_dt, %(day)s::date), 0) AS tenure_days,
    coalesce(%(day)s::date - w.last_dt, %(day)s::date - older.last_dt) AS days_since_last_play,
    coalesce(w.plays_7, 0), coalesce(w.ms_7, 0) / 3.6e6, coalesce(w.sessions_7, 0),
    coalesce(w.days_7, 0),
    w.skips_7::float8 / nullif(w.plays_7, 0), w.compl_7::float8 / nullif(w.plays_7, 0),
    w.likes_7::float8 / nullif(w.plays_7, 0), w.shares_7::float8 / nullif(w.plays_7, 0),
    coalesce(t.n7, 0), coalesce(ar.n7, 0), coalesce(g.n7, 0),
    coalesce(w.plays_14, 0), coalesce(w.ms_14, 0) / 3.6e6, coalesce(w.sessions_14, 0),
    coalesce(w.days_14, 0),
    w.skips_14::float8 / nullif(w.plays_14, 0), w.compl_14::float8 / nullif(w.plays_14, 0),
    w.likes_14::float8 / nullif(w.plays_14, 0), w.shares_14::float8 / nullif(w.plays_14, 0),
    coalesce(t.n14, 0), coalesce(ar.n14, 0), coalesce(g.n14, 0),
    coalesce(w.plays_30, 0), coalesce(w.ms_30, 0) / 3.6e6, coalesce(w.sessions_30, 0),
    coalesce(w.days_30, 0),
    w.skips_30::float8 / nullif(w.plays_30, 0), w.compl_30::float8 / nullif(w.plays_30, 0),
    w.likes_30::float8 / nullif(w.plays_30, 0), w.shares_30::float8 / nullif(w.plays_30, 0),
    coalesce(t.n30, 0), coalesce(ar.n30, 0), coalesce(g.n30, 0),
    coalesce(w.ms_7, 0) / 3.6e6 / 7 - coalesce(w.ms_30, 0) / 3.6e6 / 30 AS listening_hours_trend,
    coalesce(w.plays_7, 0) / 7.0 - coalesce(w.plays_30, 0) / 30.0 AS plays_trend,
    coalesce(w.sessions_7, 0) / 7.0 - coalesce(w.sessions_30, 0) / 30.0 AS sessions_trend,
    coalesce(w.days_7, 0) / 7.0 - coalesce(w.days_30, 0) / 30.0 AS active_days_trend,
    w.skips_7::float8 / nullif(w.plays_7, 0) - w.skips_30::float8 / nullif(w.plays_30, 0)
        AS skip_rate_trend,
    w.ctx_playlist::float8 / nullif(w.plays_30, 0), w.ctx_album::float8 / nullif(w.plays_30, 0),
    w.ctx_artist::float8 / nullif(w.plays_30, 0), w.ctx_search::float8 / nullif(w.plays_30, 0),
    w.ctx_radio::float8 / nullif(w.plays_30, 0),
    w.ctx_recommendation::float8 / nullif(w.plays_30, 0),
    w.ctx_other::float8 / nullif(w.plays_30, 0),
    w.dev_mobile::float8 / nullif(w.plays_30, 0), w.dev_desktop::float8 / nullif(w.plays_30, 0),
    w.dev_web::float8 / nullif(w.plays_30, 0), w.dev_tv::float8 / nullif(w.plays_30, 0),
    w.dev_speaker::float8 / nullif(w.plays_30, 0), w.dev_other::float8 / nullif(w.plays_30, 0),
    w.night_plays::float8 / nullif(w.plays_30, 0) AS night_share_30d,
    w.session_ms_30 / 60000.0 / nullif(w.sessions_30, 0) AS avg_session_minutes_30d,
    t.n30::float8 / nullif(w.plays_30, 0) AS discovery_share_30d,
    coalesce(sw.payment_failures, 0) AS payment_failures_30d,
    coalesce(sw.plan_changes, 0) AS plan_changes_30d,
    coalesce(length(substring(w.active_bits FROM '1*$')), 0) AS current_streak_days,
    coalesce((SELECT max(length(r)) FROM regexp_split_to_table(w.active_bits, '0+') r), 0)
        AS longest_streak_30d,
    %(run_id)s AS run_id,
    now() AS computed_at
FROM population p
LEFT JOIN windows w USING (user_id)
LEFT JOIN tracks_n t USING (user_id)
LEFT JOIN artists_n ar USING (user_id)
LEFT JOIN genres_n g USING (user_id)
LEFT JOIN subs s USING (user_id)
LEFT JOIN sub_window sw USING (user_id)
LEFT JOIN profile pr USING (user_id)
LEFT JOIN LATERAL (
    SELECT max(o.dt) AS last_dt
    FROM features.user_activity_daily o
    WHERE w.user_id IS NULL AND o.user_id = p.user_id AND o.dt < %(day)s::date - 29
) older ON true
