-- Access control: a pipeline role that writes, and an analyst role that reads only the
-- analytics views and the scores. Roles are cluster-wide, so they are created once per
-- server (NOLOGIN group roles: grant them to login users); the grants are per database.
-- Default privileges cover the tables and partitions created after this migration.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'encore_pipeline') THEN
        CREATE ROLE encore_pipeline NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'encore_analyst') THEN
        CREATE ROLE encore_analyst NOLOGIN;
    END IF;
END
$$;
COMMENT ON ROLE encore_pipeline IS 'Encore pipeline: reads and writes every Encore schema (grant it to the Airflow workers'' login).';
COMMENT ON ROLE encore_analyst IS 'Encore analysts: read-only access to the analytics views and the scores tables, nothing else.';

DO $$
DECLARE
    s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['raw', 'quarantine', 'features', 'ml', 'scores', 'monitoring',
                             'analytics', 'feast_registry', 'feast_online'] LOOP
        EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO encore_pipeline', s);
        EXECUTE format('GRANT ALL ON ALL TABLES IN SCHEMA %I TO encore_pipeline', s);
        EXECUTE format('GRANT ALL ON ALL SEQUENCES IN SCHEMA %I TO encore_pipeline', s);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT ALL ON TABLES'
                       ' TO encore_pipeline', s);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT ALL ON SEQUENCES'
                       ' TO encore_pipeline', s);
    END LOOP;
    FOREACH s IN ARRAY ARRAY['analytics', 'scores'] LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO encore_analyst', s);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO encore_analyst', s);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES'
                       ' TO encore_analyst', s);
    END LOOP;
    -- nobody else: PUBLIC gets nothing in Encore's schemas
    FOREACH s IN ARRAY ARRAY['raw', 'quarantine', 'features', 'ml', 'scores', 'monitoring',
                             'analytics'] LOOP
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', s);
    END LOOP;
END
$$;
