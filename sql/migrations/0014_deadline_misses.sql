-- Missed deadlines of the nightly chain, one row per Airflow deadline that passed before
-- its run finished (see dags/nightly_deadline.py and encore_airflow.deadlines).

CREATE TABLE monitoring.deadline_misses (
    deadline_id        text NOT NULL,
    dag_id             text NOT NULL,
    run_id             text NOT NULL,
    run_type           text,
    dt                 date,
    deadline_time      timestamptz NOT NULL,
    missing            text NOT NULL,
    recorded_at        timestamptz NOT NULL,
    PRIMARY KEY (deadline_id)
);
CREATE INDEX deadline_misses_dt_idx ON monitoring.deadline_misses (dt);
COMMENT ON TABLE monitoring.deadline_misses IS 'Deadlines of the nightly chain that passed before their run finished: one row per missed Airflow deadline, written by its callback (a re-delivered callback changes nothing).';
COMMENT ON COLUMN monitoring.deadline_misses.deadline_id IS 'Airflow deadline id (metadata table deadline).';
COMMENT ON COLUMN monitoring.deadline_misses.dag_id IS 'DAG whose run missed it (nightly_deadline watches the whole chain).';
COMMENT ON COLUMN monitoring.deadline_misses.run_id IS 'Airflow run that missed it.';
COMMENT ON COLUMN monitoring.deadline_misses.run_type IS 'scheduled, manual or backfill.';
COMMENT ON COLUMN monitoring.deadline_misses.dt IS 'UTC day whose chain was late (null when the run names no day).';
COMMENT ON COLUMN monitoring.deadline_misses.deadline_time IS 'When the day was due (end of the day plus config/deadlines.yaml chain_due_hours).';
COMMENT ON COLUMN monitoring.deadline_misses.missing IS 'What of the day was still missing when the deadline passed.';
COMMENT ON COLUMN monitoring.deadline_misses.recorded_at IS 'When the callback recorded it.';
