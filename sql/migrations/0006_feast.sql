-- Feast in the warehouse: its SQL registry and its online store each get a schema of their
-- own (Feast creates the tables inside them on apply), and every materialization of a
-- feature day is logged.
CREATE SCHEMA IF NOT EXISTS feast_registry;
CREATE SCHEMA IF NOT EXISTS feast_online;

COMMENT ON SCHEMA feast_registry IS 'Feast SQL registry of project encore (entities, sources, feature views, services); written by encore feature apply (ml_tasks.feature_store.apply), shared by every Airflow worker.';
COMMENT ON SCHEMA feast_online IS 'Feast online store of project encore: one table encore_<feature view> per view, one row per (entity_key, feature_name) holding the latest materialized value.';

CREATE TABLE monitoring.feature_materializations (
    feature_view      text             NOT NULL,
    dt                date             NOT NULL,
    method            text             NOT NULL CHECK (method IN ('bulk', 'feast')),
    rows              bigint           NOT NULL,
    online_rows       bigint           NOT NULL,
    seconds           double precision NOT NULL,
    materialized_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (feature_view, dt)
);
COMMENT ON TABLE monitoring.feature_materializations IS 'The last materialization of each feature view and feature day into the Feast online store (replaced when the day is materialized again).';
COMMENT ON COLUMN monitoring.feature_materializations.feature_view IS 'Feast feature view.';
COMMENT ON COLUMN monitoring.feature_materializations.dt IS 'Feature day: source rows with feature_ts in [dt 00:00, dt+1 00:00) UTC.';
COMMENT ON COLUMN monitoring.feature_materializations.method IS 'bulk (COPY + one upsert per chunk, ml_tasks.feature_store) or feast (FeatureStore.materialize).';
COMMENT ON COLUMN monitoring.feature_materializations.rows IS 'Entity rows (source rows) materialized.';
COMMENT ON COLUMN monitoring.feature_materializations.online_rows IS 'Online-store rows written: entity rows x features of the view.';
COMMENT ON COLUMN monitoring.feature_materializations.seconds IS 'Wall time.';
COMMENT ON COLUMN monitoring.feature_materializations.materialized_at IS 'When it finished.';
