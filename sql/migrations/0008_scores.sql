-- Scores written by score_daily, one partition per scoring day (dt), replaced atomically.
-- Every row carries its lineage: model name and version, run id, feature date, scored_at.

CREATE TABLE scores.churn (
    dt                     date NOT NULL,
    user_id                bigint NOT NULL,
    p_churn_7d             double precision NOT NULL,
    p_churn_30d            double precision NOT NULL,
    p_churn_90d            double precision NOT NULL,
    risk_tier              text NOT NULL,
    segment                text NOT NULL,
    tags                   text[] NOT NULL,
    plan                   text NOT NULL,
    is_paying              boolean NOT NULL,
    reasons                jsonb NOT NULL,
    model_name             text NOT NULL,
    model_version          text NOT NULL,
    feature_date           date NOT NULL,
    run_id                 text NOT NULL,
    scored_at              timestamptz NOT NULL,
    PRIMARY KEY (dt, user_id)
) PARTITION BY RANGE (dt);
COMMENT ON TABLE scores.churn IS 'Churn risk at 7, 30 and 90 days for every user active on the scoring day, with tier, segment, tags and reasons. One partition per day.';
COMMENT ON COLUMN scores.churn.dt IS 'Scoring day: the user was active on it, and features as of its end were used.';
COMMENT ON COLUMN scores.churn.user_id IS 'User.';
COMMENT ON COLUMN scores.churn.p_churn_7d IS 'Calibrated probability of churning within 7 days after dt.';
COMMENT ON COLUMN scores.churn.p_churn_30d IS 'Calibrated probability of churning within 30 days after dt (>= p_churn_7d).';
COMMENT ON COLUMN scores.churn.p_churn_90d IS 'Calibrated probability of churning within 90 days after dt (>= p_churn_30d).';
COMMENT ON COLUMN scores.churn.risk_tier IS 'low, medium, high or critical, from p_churn_30d and the thresholds in config/churn_scoring.yaml.';
COMMENT ON COLUMN scores.churn.segment IS 'heavy (> 4 h/day over 30 days), moderate (1-4 h) or light (< 1 h).';
COMMENT ON COLUMN scores.churn.tags IS 'Behavioural tags: discovery-focused, playlist creator, social.';
COMMENT ON COLUMN scores.churn.plan IS 'Plan at the end of dt.';
COMMENT ON COLUMN scores.churn.is_paying IS 'Paid plan at the end of dt.';
COMMENT ON COLUMN scores.churn.reasons IS 'Top three reasons behind the 30-day score: [{feature, value, contribution}], contribution in log-odds, positive = raises risk.';
COMMENT ON COLUMN scores.churn.model_name IS 'Registry model name (churn).';
COMMENT ON COLUMN scores.churn.model_version IS 'Registry version of the model that was champion on dt.';
COMMENT ON COLUMN scores.churn.feature_date IS 'Feature day the scores were computed from (= dt).';
COMMENT ON COLUMN scores.churn.run_id IS 'Run that scored it.';
COMMENT ON COLUMN scores.churn.scored_at IS 'When it was scored.';

CREATE TABLE scores.interventions (
    dt                     date NOT NULL,
    user_id                bigint NOT NULL,
    intervention           text,
    selected               boolean NOT NULL,
    budget_rank            integer,
    p_churn                double precision NOT NULL,
    value_at_risk          numeric(10,2) NOT NULL,
    uplift                 double precision,
    cost                   numeric(10,2),
    expected_net_value     numeric(12,4),
    reason                 text NOT NULL,
    segment                text NOT NULL,
    plan                   text NOT NULL,
    model_version          text NOT NULL,
    catalogue_version      text NOT NULL,
    run_id                 text NOT NULL,
    scored_at              timestamptz NOT NULL,
    PRIMARY KEY (dt, user_id)
) PARTITION BY RANGE (dt);
COMMENT ON TABLE scores.interventions IS 'Retention-intervention recommendation per scored user and day: the best positive expected net value, and whether the daily budget (allocated greedily by value) covers it. One partition per day.';
COMMENT ON COLUMN scores.interventions.dt IS 'Scoring day.';
COMMENT ON COLUMN scores.interventions.user_id IS 'User.';
COMMENT ON COLUMN scores.interventions.intervention IS 'Best intervention with a positive expected net value; null when none has one.';
COMMENT ON COLUMN scores.interventions.selected IS 'Within the day''s budget: the intervention is in today''s plan.';
COMMENT ON COLUMN scores.interventions.budget_rank IS 'Rank by expected net value among users with a positive one (1 = best).';
COMMENT ON COLUMN scores.interventions.p_churn IS 'P(churn within 30 days) used.';
COMMENT ON COLUMN scores.interventions.value_at_risk IS 'Value at risk of the user''s plan (config/interventions.yaml).';
COMMENT ON COLUMN scores.interventions.uplift IS 'Assumed uplift of the intervention for the user''s segment.';
COMMENT ON COLUMN scores.interventions.cost IS 'Cost of the intervention.';
COMMENT ON COLUMN scores.interventions.expected_net_value IS 'P(churn) x value at risk x uplift - cost.';
COMMENT ON COLUMN scores.interventions.reason IS 'Why: the arithmetic, and whether the budget covered it.';
COMMENT ON COLUMN scores.interventions.segment IS 'Segment of the user on dt.';
COMMENT ON COLUMN scores.interventions.plan IS 'Plan at the end of dt.';
COMMENT ON COLUMN scores.interventions.model_version IS 'Churn model version behind p_churn.';
COMMENT ON COLUMN scores.interventions.catalogue_version IS 'sha256 (first 12 hex) of the intervention catalogue used.';
COMMENT ON COLUMN scores.interventions.run_id IS 'Run that planned it.';
COMMENT ON COLUMN scores.interventions.scored_at IS 'When it was planned.';

CREATE TABLE scores.scoring_runs (
    run_id                 text NOT NULL,
    dt                     date NOT NULL,
    model_name             text NOT NULL,
    model_version          text,
    status                 text NOT NULL,
    detail                 text NOT NULL,
    rows                   bigint NOT NULL,
    seconds                double precision NOT NULL,
    finished_at            timestamptz NOT NULL,
    PRIMARY KEY (run_id, dt, model_name)
);
COMMENT ON TABLE scores.scoring_runs IS 'History of scoring runs per model family and day, including families skipped for lack of a champion (append-only).';
COMMENT ON COLUMN scores.scoring_runs.run_id IS 'Scoring run.';
COMMENT ON COLUMN scores.scoring_runs.dt IS 'Scoring day.';
COMMENT ON COLUMN scores.scoring_runs.model_name IS 'Model family scored (churn, popularity, ...).';
COMMENT ON COLUMN scores.scoring_runs.model_version IS 'Version used; null when skipped.';
COMMENT ON COLUMN scores.scoring_runs.status IS 'scored or skipped.';
COMMENT ON COLUMN scores.scoring_runs.detail IS 'What happened (rows written, or why it was skipped).';
COMMENT ON COLUMN scores.scoring_runs.rows IS 'Rows written.';
COMMENT ON COLUMN scores.scoring_runs.seconds IS 'Wall time.';
COMMENT ON COLUMN scores.scoring_runs.finished_at IS 'When it finished.';

CREATE INDEX churn_user_idx ON scores.churn (user_id, dt);
