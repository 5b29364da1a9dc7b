-- Encore warehouse schemas (see DESIGN.md, "Warehouse schemas").
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS quarantine;
CREATE SCHEMA IF NOT EXISTS features;
CREATE SCHEMA IF NOT EXISTS ml;
CREATE SCHEMA IF NOT EXISTS scores;
CREATE SCHEMA IF NOT EXISTS monitoring;
CREATE SCHEMA IF NOT EXISTS analytics;

COMMENT ON SCHEMA raw IS 'Landing data as accepted by ingestion, one partition per UTC day.';
COMMENT ON SCHEMA quarantine IS 'Landing rows refused by ingestion, with their reasons and original payload.';
COMMENT ON SCHEMA features IS 'Daily user and track features, audio features.';
COMMENT ON SCHEMA ml IS 'Model registry, training runs and schema migrations.';
COMMENT ON SCHEMA scores IS 'Model outputs: churn, popularity, genres, interventions.';
COMMENT ON SCHEMA monitoring IS 'Validation results, drift, anomalies and realized performance.';
COMMENT ON SCHEMA analytics IS 'Views for analysts over scores and features.';
