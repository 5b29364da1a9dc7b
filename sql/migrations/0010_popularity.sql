-- Track popularity forecasts written by score_daily (ml_tasks.popularity), one partition per
-- scoring day (dt), replaced atomically (stage table, then a partition swap). Every row
-- carries its lineage: model name and version, run id, feature date, scored_at.
-- Popularity at D for horizon H (DATA_CONTRACT.md): plays of the track in (D, D+H], not
-- counting plays flagged as stream fraud.

CREATE TABLE scores.track_popularity (
    dt                     date             NOT NULL,
    track_id               text             NOT NULL,
    predicted_plays_1d     double precision NOT NULL CHECK (predicted_plays_1d >= 0),
    predicted_plays_7d     double precision NOT NULL CHECK (predicted_plays_7d >= predicted_plays_1d),
    predicted_plays_30d    double precision NOT NULL CHECK (predicted_plays_30d >= predicted_plays_7d),
    naive_plays_1d         bigint           NOT NULL,
    naive_plays_7d         bigint           NOT NULL,
    naive_plays_30d        bigint           NOT NULL,
    model_name             text             NOT NULL,
    model_version          text             NOT NULL,
    feature_date           date             NOT NULL,
    run_id                 text             NOT NULL,
    scored_at              timestamptz      NOT NULL,
    PRIMARY KEY (dt, track_id)
) PARTITION BY RANGE (dt);
COMMENT ON TABLE scores.track_popularity IS 'Forecast plays (net of fraud-flagged plays) of every catalogue track over the 1, 7 and 30 days after the scoring day, beside the naive baseline (the plays of the last 1, 7 and 30 days). One partition per day.';
COMMENT ON COLUMN scores.track_popularity.dt IS 'Scoring day: the track was in the catalogue on it, and features as of its end were used.';
COMMENT ON COLUMN scores.track_popularity.track_id IS 'Track.';
COMMENT ON COLUMN scores.track_popularity.predicted_plays_1d IS 'Forecast plays on dt + 1 (net of fraud).';
COMMENT ON COLUMN scores.track_popularity.predicted_plays_7d IS 'Forecast plays in (dt, dt + 7] (>= predicted_plays_1d).';
COMMENT ON COLUMN scores.track_popularity.predicted_plays_30d IS 'Forecast plays in (dt, dt + 30] (>= predicted_plays_7d).';
COMMENT ON COLUMN scores.track_popularity.naive_plays_1d IS 'Naive baseline for 1 day: plays on dt (net of fraud).';
COMMENT ON COLUMN scores.track_popularity.naive_plays_7d IS 'Naive baseline for 7 days: plays in (dt - 7, dt].';
COMMENT ON COLUMN scores.track_popularity.naive_plays_30d IS 'Naive baseline for 30 days: plays in (dt - 30, dt].';
COMMENT ON COLUMN scores.track_popularity.model_name IS 'Registry model name (popularity).';
COMMENT ON COLUMN scores.track_popularity.model_version IS 'Registry version of the model that was champion when dt closed.';
COMMENT ON COLUMN scores.track_popularity.feature_date IS 'Feature day the forecasts were computed from (= dt).';
COMMENT ON COLUMN scores.track_popularity.run_id IS 'Run that scored it.';
COMMENT ON COLUMN scores.track_popularity.scored_at IS 'When it was scored.';

CREATE INDEX track_popularity_track_idx ON scores.track_popularity (track_id, dt);
