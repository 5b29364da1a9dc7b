-- Model registry: every trained model, its artifact (with sha256), metrics, gate verdict and
-- champion history. Scoring a past day asks "which model was champion then?": each stint as
-- champion is one row of ml.champion_history, so the answer survives later promotions.

CREATE TABLE ml.training_runs (
    run_id          text        NOT NULL,
    model_name      text        NOT NULL,
    training_date   date        NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    status          text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    version         text,
    rows_train      bigint,
    rows_calibration bigint,
    rows_holdout    bigint,
    seconds         double precision,
    error           text,
    PRIMARY KEY (run_id, model_name)
);
COMMENT ON TABLE ml.training_runs IS 'One row per training run of a model (encore train / retrain_nightly): what it trained on, how long it took, and how it ended.';
COMMENT ON COLUMN ml.training_runs.run_id IS 'Run that trained (Airflow run id or a CLI run id).';
COMMENT ON COLUMN ml.training_runs.model_name IS 'Model family trained (churn, ...).';
COMMENT ON COLUMN ml.training_runs.training_date IS 'Training date: labels are censored as of the end of this day.';
COMMENT ON COLUMN ml.training_runs.started_at IS 'When the run started.';
COMMENT ON COLUMN ml.training_runs.finished_at IS 'When it ended (null while running).';
COMMENT ON COLUMN ml.training_runs.status IS 'running, succeeded or failed.';
COMMENT ON COLUMN ml.training_runs.version IS 'Registry version it produced (null unless it succeeded).';
COMMENT ON COLUMN ml.training_runs.rows_train IS 'Entity rows (user, scoring date) in the training split.';
COMMENT ON COLUMN ml.training_runs.rows_calibration IS 'Entity rows in the calibration split.';
COMMENT ON COLUMN ml.training_runs.rows_holdout IS 'Entity rows in the time-based holdout.';
COMMENT ON COLUMN ml.training_runs.seconds IS 'Wall time of the run.';
COMMENT ON COLUMN ml.training_runs.error IS 'Why it failed (null otherwise).';

CREATE TABLE ml.model_registry (
    model_name      text        NOT NULL,
    version         text        NOT NULL,
    horizons        integer[]   NOT NULL,
    train_start     date        NOT NULL,
    train_end       date        NOT NULL,
    trained_at      timestamptz NOT NULL,
    feature_service text        NOT NULL,
    metrics         jsonb       NOT NULL,
    artifact_uri    text        NOT NULL,
    artifact_sha256 text        NOT NULL CHECK (artifact_sha256 ~ '^[0-9a-f]{64}$'),
    status          text        NOT NULL DEFAULT 'candidate'
                                CHECK (status IN ('candidate', 'champion', 'retired')),
    promoted_at     timestamptz,
    retired_at      timestamptz,
    gate_report     jsonb,
    model_card_uri  text,
    run_id          text        NOT NULL,
    PRIMARY KEY (model_name, version)
);
-- At most one champion per model at a time.
CREATE UNIQUE INDEX model_registry_one_champion ON ml.model_registry (model_name)
    WHERE status = 'champion';
COMMENT ON TABLE ml.model_registry IS 'Every trained model: version, horizons, training window, holdout metrics, artifact (URI and sha256), status and promotion-gate verdict. At most one champion per model name.';
COMMENT ON COLUMN ml.model_registry.model_name IS 'Model family (churn, popularity, ...).';
COMMENT ON COLUMN ml.model_registry.version IS 'Version, unique per model name (training date, time and a short hash).';
COMMENT ON COLUMN ml.model_registry.horizons IS 'Horizons in days the model predicts (churn: 7, 30, 90).';
COMMENT ON COLUMN ml.model_registry.train_start IS 'First scoring date of the training window.';
COMMENT ON COLUMN ml.model_registry.train_end IS 'Training date (labels censored as of its end); the last scoring date used is before it.';
COMMENT ON COLUMN ml.model_registry.trained_at IS 'When the model was trained.';
COMMENT ON COLUMN ml.model_registry.feature_service IS 'Feast feature service the model reads (churn_v1, ...).';
COMMENT ON COLUMN ml.model_registry.metrics IS 'Holdout metrics: per horizon roc_auc, pr_auc, brier, ece, lift_top_decile, for the chosen model, the baseline and each candidate family.';
COMMENT ON COLUMN ml.model_registry.artifact_uri IS 'Model file (absolute path or URI) under ENCORE_ARTIFACTS/models/<name>/<version>/.';
COMMENT ON COLUMN ml.model_registry.artifact_sha256 IS 'sha256 of the model file; loading refuses a file whose hash differs.';
COMMENT ON COLUMN ml.model_registry.status IS 'candidate (trained, not serving), champion (the model scoring uses) or retired (was champion).';
COMMENT ON COLUMN ml.model_registry.promoted_at IS 'When it became champion (null if never).';
COMMENT ON COLUMN ml.model_registry.retired_at IS 'When a later champion replaced it (null if never).';
COMMENT ON COLUMN ml.model_registry.gate_report IS 'The promotion gate: each check, its figures, and the verdict with reasons.';
COMMENT ON COLUMN ml.model_registry.model_card_uri IS 'HTML model card beside the artifact.';
COMMENT ON COLUMN ml.model_registry.run_id IS 'Run that trained it.';

CREATE TABLE ml.champion_history (
    model_name      text        NOT NULL,
    version         text        NOT NULL,
    champion_from   timestamptz NOT NULL,
    champion_until  timestamptz,
    promoted_by_run text        NOT NULL,
    PRIMARY KEY (model_name, champion_from),
    FOREIGN KEY (model_name, version) REFERENCES ml.model_registry (model_name, version),
    CHECK (champion_until IS NULL OR champion_until > champion_from)
);
CREATE UNIQUE INDEX champion_history_open ON ml.champion_history (model_name)
    WHERE champion_until IS NULL;
COMMENT ON TABLE ml.champion_history IS 'Each stint of a model version as champion, [champion_from, champion_until): answers which model was champion at any instant, so a backfill scores a past day with the model that was champion then.';
COMMENT ON COLUMN ml.champion_history.model_name IS 'Model family.';
COMMENT ON COLUMN ml.champion_history.version IS 'Version that was champion.';
COMMENT ON COLUMN ml.champion_history.champion_from IS 'Start of the stint (inclusive).';
COMMENT ON COLUMN ml.champion_history.champion_until IS 'End of the stint (exclusive); null while it is the champion.';
COMMENT ON COLUMN ml.champion_history.promoted_by_run IS 'Run that promoted it.';
