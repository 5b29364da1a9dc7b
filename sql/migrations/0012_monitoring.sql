-- Monitoring of the nightly chain: feature and score drift against the training window,
-- realized performance of past scores as their labels mature, and the daily report.

CREATE TABLE monitoring.drift (
    dt                 date NOT NULL,
    model_name         text NOT NULL,
    model_version      text NOT NULL,
    column_name        text NOT NULL,
    psi                double precision NOT NULL,
    status             text NOT NULL CHECK (status IN ('ok', 'warn', 'alert')),
    reference_start    date NOT NULL,
    reference_end      date NOT NULL,
    rows               bigint NOT NULL,
    run_id             text NOT NULL,
    computed_at        timestamptz NOT NULL,
    PRIMARY KEY (dt, model_name, column_name)
);
COMMENT ON TABLE monitoring.drift IS 'Drift (PSI) of each model input and output on a day against the model''s training window; replaced per day.';
COMMENT ON COLUMN monitoring.drift.dt IS 'Day monitored.';
COMMENT ON COLUMN monitoring.drift.model_name IS 'Model whose inputs and outputs are watched (its champion when dt closed).';
COMMENT ON COLUMN monitoring.drift.model_version IS 'That champion''s version.';
COMMENT ON COLUMN monitoring.drift.column_name IS 'Feature column, or score:<column> for the model''s output.';
COMMENT ON COLUMN monitoring.drift.psi IS 'Population stability index of the day against the training window (10 quantile bins of the reference).';
COMMENT ON COLUMN monitoring.drift.status IS 'ok, warn or alert, from the thresholds in config/monitoring.yaml.';
COMMENT ON COLUMN monitoring.drift.reference_start IS 'First day of the reference (training) window.';
COMMENT ON COLUMN monitoring.drift.reference_end IS 'Last day of the reference window.';
COMMENT ON COLUMN monitoring.drift.rows IS 'Rows of the day compared.';
COMMENT ON COLUMN monitoring.drift.run_id IS 'Run that computed it.';
COMMENT ON COLUMN monitoring.drift.computed_at IS 'When it was computed.';

CREATE TABLE monitoring.realized_performance (
    scored_for         date NOT NULL,
    horizon            integer NOT NULL,
    model_name         text NOT NULL,
    model_version      text NOT NULL,
    as_of              date NOT NULL,
    rows               bigint NOT NULL,
    positives          bigint NOT NULL,
    roc_auc            double precision,
    brier              double precision NOT NULL,
    ece                double precision NOT NULL,
    mean_predicted     double precision NOT NULL,
    observed_rate      double precision NOT NULL,
    run_id             text NOT NULL,
    computed_at        timestamptz NOT NULL,
    PRIMARY KEY (scored_for, horizon, model_name)
);
COMMENT ON TABLE monitoring.realized_performance IS 'How scores made H days earlier did once their labels are known: one row per scoring day, horizon and model; replaced when recomputed.';
COMMENT ON COLUMN monitoring.realized_performance.scored_for IS 'Scoring day whose labels have matured.';
COMMENT ON COLUMN monitoring.realized_performance.horizon IS 'Horizon in days (7, 30, 90).';
COMMENT ON COLUMN monitoring.realized_performance.model_name IS 'Model family (churn).';
COMMENT ON COLUMN monitoring.realized_performance.model_version IS 'Version that scored that day.';
COMMENT ON COLUMN monitoring.realized_performance.as_of IS 'Day the labels were read (censored as of its end).';
COMMENT ON COLUMN monitoring.realized_performance.rows IS 'Scored users with a known label.';
COMMENT ON COLUMN monitoring.realized_performance.positives IS 'Of those, users who churned.';
COMMENT ON COLUMN monitoring.realized_performance.roc_auc IS 'ROC AUC of the scores against the realized labels (null with one class).';
COMMENT ON COLUMN monitoring.realized_performance.brier IS 'Brier score.';
COMMENT ON COLUMN monitoring.realized_performance.ece IS 'Expected calibration error (10 bins).';
COMMENT ON COLUMN monitoring.realized_performance.mean_predicted IS 'Mean predicted probability.';
COMMENT ON COLUMN monitoring.realized_performance.observed_rate IS 'Observed churn rate.';
COMMENT ON COLUMN monitoring.realized_performance.run_id IS 'Run that computed it.';
COMMENT ON COLUMN monitoring.realized_performance.computed_at IS 'When it was computed.';

CREATE TABLE monitoring.reports (
    dt                 date NOT NULL,
    path               text NOT NULL,
    summary            jsonb NOT NULL,
    run_id             text NOT NULL,
    created_at         timestamptz NOT NULL,
    PRIMARY KEY (dt)
);
COMMENT ON TABLE monitoring.reports IS 'The daily monitoring report of each day (the latest run''s).';
COMMENT ON COLUMN monitoring.reports.dt IS 'Day reported.';
COMMENT ON COLUMN monitoring.reports.path IS 'HTML report under ENCORE_ARTIFACTS/reports.';
COMMENT ON COLUMN monitoring.reports.summary IS 'Headline figures: drift alerts, realized performance, fraud flags.';
COMMENT ON COLUMN monitoring.reports.run_id IS 'Run that wrote it.';
COMMENT ON COLUMN monitoring.reports.created_at IS 'When it was written.';

