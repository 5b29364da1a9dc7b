-- Each day's event-id hashes as one sorted run of 8-byte keys, instead of one B-tree over
-- every day's keys.
-- - Why: a night's keys are random, so inserting them into one B-tree touched most of its
--   leaf pages, and each page's first change after a checkpoint was logged whole. At
--   100,000 users after 91 days (63.7 M keys) that insert took 3.8-3.9 s and wrote 1.3 GB
--   of WAL, and the probe that found the candidates took 4.9 s: the index (1.2 GB) was ten
--   times shared_buffers.
-- - Now: ingestion writes a day's run whole (6.4 MB for 800,000 keys), and the cross-day
--   check reads the other days' runs in turn and searches them in memory. A redelivered
--   day's run is replaced by primary key. The table is read whole by design: 8 bytes a key
--   kept, against about 64 for a row and its index entry before.
-- - Filled from the partitions themselves, so a warehouse at any earlier state gets runs
--   that match its rows; the B-tree tables of 0013 are dropped.

CREATE TABLE raw.listening_events_key_runs (
    dt         date    PRIMARY KEY,
    event_keys bytea   NOT NULL,
    key_count  integer NOT NULL CHECK (key_count > 0 AND octet_length(event_keys) = 8 * key_count)
);
-- Random hashes do not compress: store the runs out of line without trying.
ALTER TABLE raw.listening_events_key_runs ALTER COLUMN event_keys SET STORAGE EXTERNAL;
INSERT INTO raw.listening_events_key_runs (dt, event_keys, key_count)
SELECT dt, string_agg(int8send(event_key), ''::bytea ORDER BY event_key), count(*)
FROM (SELECT DISTINCT (played_at AT TIME ZONE 'UTC')::date AS dt, event_key
      FROM raw.listening_events) k
GROUP BY dt;
COMMENT ON TABLE raw.listening_events_key_runs IS 'One row per UTC day that holds plays: the distinct event_key hashes of that partition of raw.listening_events, sorted. Kept by ingestion in the transaction that swaps the day in; the cross-day duplicate check searches every other day''s run, then confirms the candidates exactly against raw.listening_events.';
COMMENT ON COLUMN raw.listening_events_key_runs.dt IS 'UTC day of played_at: the partition of raw.listening_events the keys come from.';
COMMENT ON COLUMN raw.listening_events_key_runs.event_keys IS 'The day''s distinct raw.listening_events.event_key values (64-bit hashes of event_id), ascending as signed integers, each as 8 big-endian bytes (int8send).';
COMMENT ON COLUMN raw.listening_events_key_runs.key_count IS 'Number of keys in event_keys (its length / 8).';

CREATE TABLE raw.subscription_events_key_runs (
    dt         date    PRIMARY KEY,
    event_keys bytea   NOT NULL,
    key_count  integer NOT NULL CHECK (key_count > 0 AND octet_length(event_keys) = 8 * key_count)
);
ALTER TABLE raw.subscription_events_key_runs ALTER COLUMN event_keys SET STORAGE EXTERNAL;
INSERT INTO raw.subscription_events_key_runs (dt, event_keys, key_count)
SELECT dt, string_agg(int8send(event_key), ''::bytea ORDER BY event_key), count(*)
FROM (SELECT DISTINCT (event_at AT TIME ZONE 'UTC')::date AS dt, event_key
      FROM raw.subscription_events) k
GROUP BY dt;
COMMENT ON TABLE raw.subscription_events_key_runs IS 'One row per UTC day that holds subscription events: the distinct event_key hashes of that partition of raw.subscription_events, sorted. Kept by ingestion in the transaction that swaps the day in; the cross-day duplicate check searches every other day''s run, then confirms the candidates exactly against raw.subscription_events.';
COMMENT ON COLUMN raw.subscription_events_key_runs.dt IS 'UTC day of event_at: the partition of raw.subscription_events the keys come from.';
COMMENT ON COLUMN raw.subscription_events_key_runs.event_keys IS 'The day''s distinct raw.subscription_events.event_key values (64-bit hashes of event_id), ascending as signed integers, each as 8 big-endian bytes (int8send).';
COMMENT ON COLUMN raw.subscription_events_key_runs.key_count IS 'Number of keys in event_keys (its length / 8).';

DROP TABLE IF EXISTS raw.listening_events_keys;
DROP TABLE IF EXISTS raw.subscription_events_keys;
