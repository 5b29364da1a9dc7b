-- One unpartitioned index of every accepted event id's hash, per event dataset.
-- The cross-day duplicate check probes it once per row instead of probing the event_key
-- index of every day partition (its cost grew with rows x days kept). Ingestion replaces a
-- day's keys in the same transaction that swaps the day's partition in.

CREATE TABLE raw.listening_events_keys (
    event_key bigint NOT NULL,
    dt        date   NOT NULL
);
CREATE INDEX listening_events_keys_key_idx ON raw.listening_events_keys (event_key) INCLUDE (dt);
CREATE INDEX listening_events_keys_dt_idx ON raw.listening_events_keys (dt);
INSERT INTO raw.listening_events_keys (event_key, dt)
SELECT event_key, (played_at AT TIME ZONE 'UTC')::date FROM raw.listening_events;

COMMENT ON TABLE raw.listening_events_keys IS 'One row per row of raw.listening_events: the hash of its event_id and the UTC day holding it. Kept by ingestion in step with the partitions; the cross-day duplicate check looks ids up here, then confirms the candidates exactly against raw.listening_events.';
COMMENT ON COLUMN raw.listening_events_keys.event_key IS 'raw.listening_events.event_key of an accepted play (64-bit hash of event_id).';
COMMENT ON COLUMN raw.listening_events_keys.dt IS 'UTC day of played_at: the partition of raw.listening_events that holds the play.';

CREATE TABLE raw.subscription_events_keys (
    event_key bigint NOT NULL,
    dt        date   NOT NULL
);
CREATE INDEX subscription_events_keys_key_idx ON raw.subscription_events_keys (event_key) INCLUDE (dt);
CREATE INDEX subscription_events_keys_dt_idx ON raw.subscription_events_keys (dt);
INSERT INTO raw.subscription_events_keys (event_key, dt)
SELECT event_key, (event_at AT TIME ZONE 'UTC')::date FROM raw.subscription_events;

COMMENT ON TABLE raw.subscription_events_keys IS 'One row per row of raw.subscription_events: the hash of its event_id and the UTC day holding it. Kept by ingestion in step with the partitions; the cross-day duplicate check looks ids up here, then confirms the candidates exactly against raw.subscription_events.';
COMMENT ON COLUMN raw.subscription_events_keys.event_key IS 'raw.subscription_events.event_key of an accepted event (64-bit hash of event_id).';
COMMENT ON COLUMN raw.subscription_events_keys.dt IS 'UTC day of event_at: the partition of raw.subscription_events that holds the event.';
