-- What ingestion read, accepted and refused: per file, per run, per rejected row.

CREATE TABLE quarantine.rejected_rows (
    dataset     text    NOT NULL,
    dt          date    NOT NULL,
    source_file text    NOT NULL,
    source_row  integer NOT NULL,
    reasons     text[]  NOT NULL,
    payload     jsonb   NOT NULL,
    PRIMARY KEY (dt, dataset, source_file, source_row)
);
COMMENT ON TABLE quarantine.rejected_rows IS 'Landing rows refused by ingestion, with every reason and the original values; replaced per landing day.';
COMMENT ON COLUMN quarantine.rejected_rows.dataset IS 'Landing dataset: listening_events, subscription_events, users, tracks.';
COMMENT ON COLUMN quarantine.rejected_rows.dt IS 'Landing day (folder dt=...) the row was delivered in.';
COMMENT ON COLUMN quarantine.rejected_rows.source_file IS 'Landing file, relative to the landing root.';
COMMENT ON COLUMN quarantine.rejected_rows.source_row IS 'Row number in that file (1 = first data row).';
COMMENT ON COLUMN quarantine.rejected_rows.reasons IS 'Every contract rule the row broke, as "column: rule" texts.';
COMMENT ON COLUMN quarantine.rejected_rows.payload IS 'The row as delivered (CSV values as text, Parquet values as typed JSON).';
CREATE INDEX rejected_rows_reasons_idx ON quarantine.rejected_rows USING gin (reasons);

CREATE TABLE raw.ingest_log (
    dt               date    NOT NULL,
    dataset          text    NOT NULL,
    source_file      text    NOT NULL,
    file_format      text    NOT NULL,
    file_bytes       bigint  NOT NULL,
    file_sha256      text    NOT NULL,
    rows_read        bigint  NOT NULL,
    rows_accepted    bigint  NOT NULL,
    rows_quarantined bigint  NOT NULL,
    contract_version text    NOT NULL,
    PRIMARY KEY (dt, dataset, source_file),
    CONSTRAINT ingest_log_balanced CHECK (rows_read = rows_accepted + rows_quarantined)
);
COMMENT ON TABLE raw.ingest_log IS 'One row per landing file of the day as last ingested: rows read = accepted + quarantined, checked before commit.';
COMMENT ON COLUMN raw.ingest_log.dt IS 'Landing day.';
COMMENT ON COLUMN raw.ingest_log.dataset IS 'Landing dataset.';
COMMENT ON COLUMN raw.ingest_log.source_file IS 'Landing file, relative to the landing root.';
COMMENT ON COLUMN raw.ingest_log.file_format IS 'parquet or csv.';
COMMENT ON COLUMN raw.ingest_log.file_bytes IS 'File size in bytes.';
COMMENT ON COLUMN raw.ingest_log.file_sha256 IS 'sha256 of the file contents.';
COMMENT ON COLUMN raw.ingest_log.rows_read IS 'Data rows read from the file.';
COMMENT ON COLUMN raw.ingest_log.rows_accepted IS 'Rows now in the raw table.';
COMMENT ON COLUMN raw.ingest_log.rows_quarantined IS 'Rows now in quarantine.rejected_rows.';
COMMENT ON COLUMN raw.ingest_log.contract_version IS 'Landing contract version the file was checked against.';

CREATE TABLE raw.ingest_runs (
    run_id           text        NOT NULL,
    dt               date        NOT NULL,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL,
    files            integer     NOT NULL,
    rows_read        bigint      NOT NULL,
    rows_accepted    bigint      NOT NULL,
    rows_quarantined bigint      NOT NULL,
    PRIMARY KEY (run_id, dt)
);
COMMENT ON TABLE raw.ingest_runs IS 'History of committed ingest runs (append-only; the only raw table a re-run adds to).';
COMMENT ON COLUMN raw.ingest_runs.run_id IS 'Airflow run id, or cli-<timestamp> for encore ingest.';
COMMENT ON COLUMN raw.ingest_runs.dt IS 'Landing day ingested.';
COMMENT ON COLUMN raw.ingest_runs.started_at IS 'When the run started reading.';
COMMENT ON COLUMN raw.ingest_runs.finished_at IS 'When the day was committed.';
COMMENT ON COLUMN raw.ingest_runs.files IS 'Landing files read.';
COMMENT ON COLUMN raw.ingest_runs.rows_read IS 'Rows read over all files.';
COMMENT ON COLUMN raw.ingest_runs.rows_accepted IS 'Rows accepted over all datasets.';
COMMENT ON COLUMN raw.ingest_runs.rows_quarantined IS 'Rows quarantined over all datasets.';

CREATE TABLE monitoring.validation_results (
    suite          text        NOT NULL,
    dt             date        NOT NULL,
    run_id         text        NOT NULL,
    success        boolean     NOT NULL,
    evaluated      integer     NOT NULL,
    failed         integer     NOT NULL,
    failures       jsonb       NOT NULL,
    data_docs_path text,
    validated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (suite, dt, run_id)
);
COMMENT ON TABLE monitoring.validation_results IS 'Great Expectations results per suite and day; the latest row per (suite, dt) is the day''s verdict.';
COMMENT ON COLUMN monitoring.validation_results.suite IS 'Expectation suite (raw.listening_events, ...).';
COMMENT ON COLUMN monitoring.validation_results.dt IS 'Day (partition) validated.';
COMMENT ON COLUMN monitoring.validation_results.run_id IS 'Run that validated it.';
COMMENT ON COLUMN monitoring.validation_results.success IS 'Every expectation held within its tolerance.';
COMMENT ON COLUMN monitoring.validation_results.evaluated IS 'Expectations evaluated.';
COMMENT ON COLUMN monitoring.validation_results.failed IS 'Expectations that failed.';
COMMENT ON COLUMN monitoring.validation_results.failures IS 'What failed: expectation, column, observed value.';
COMMENT ON COLUMN monitoring.validation_results.data_docs_path IS 'Data Docs page of this validation, under ENCORE_ARTIFACTS.';
COMMENT ON COLUMN monitoring.validation_results.validated_at IS 'When it ran.';
