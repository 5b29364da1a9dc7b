-- Accepted landing events, partitioned by UTC day of their timestamp.
-- Ingestion loads a day into a staging table and swaps it in as that day's partition.

CREATE TABLE raw.listening_events (
    event_id          text        NOT NULL,
    user_id           bigint      NOT NULL,
    track_id          text        NOT NULL,
    played_at         timestamptz NOT NULL,
    ms_played         integer     NOT NULL,
    track_duration_ms integer     NOT NULL,
    skipped           boolean     NOT NULL,
    context_type      text        NOT NULL,
    device_type       text        NOT NULL,
    shared            boolean     NOT NULL,
    liked             boolean     NOT NULL,
    unknown_user      boolean     NOT NULL,
    unknown_track     boolean     NOT NULL,
    source_file       text        NOT NULL,
    source_row        integer     NOT NULL,
    event_key         bigint      NOT NULL
) PARTITION BY RANGE (played_at);
CREATE INDEX listening_events_event_key_idx ON raw.listening_events (event_key);

COMMENT ON TABLE raw.listening_events IS 'One row per accepted play (landing dataset listening_events), one partition per UTC day of played_at. event_id is unique across all days.';
COMMENT ON COLUMN raw.listening_events.event_id IS 'Unique id of the play; repeats were quarantined as duplicate deliveries.';
COMMENT ON COLUMN raw.listening_events.user_id IS 'Listener (users.user_id; may be unknown, see unknown_user).';
COMMENT ON COLUMN raw.listening_events.track_id IS 'Track played (tracks.track_id; may be unknown, see unknown_track).';
COMMENT ON COLUMN raw.listening_events.played_at IS 'When the play started, UTC; inside the partition''s day.';
COMMENT ON COLUMN raw.listening_events.ms_played IS 'Milliseconds played, 0 to 4 x track_duration_ms.';
COMMENT ON COLUMN raw.listening_events.track_duration_ms IS 'Track length in milliseconds as reported with the play.';
COMMENT ON COLUMN raw.listening_events.skipped IS 'The user skipped before the end.';
COMMENT ON COLUMN raw.listening_events.context_type IS 'Where the play started: playlist, album, artist, search, radio, recommendation, other.';
COMMENT ON COLUMN raw.listening_events.device_type IS 'Device class: mobile, desktop, web, tv, speaker, other.';
COMMENT ON COLUMN raw.listening_events.shared IS 'The user shared the track from this play.';
COMMENT ON COLUMN raw.listening_events.liked IS 'The user saved/liked the track during this play.';
COMMENT ON COLUMN raw.listening_events.unknown_user IS 'True when user_id had not been delivered in users on or before this day (kept and flagged, per the contract).';
COMMENT ON COLUMN raw.listening_events.unknown_track IS 'True when track_id had not been delivered in tracks on or before this day.';
COMMENT ON COLUMN raw.listening_events.source_file IS 'Landing file the row came from, relative to the landing root.';
COMMENT ON COLUMN raw.listening_events.source_row IS 'Row number in that file (1 = first data row).';
COMMENT ON COLUMN raw.listening_events.event_key IS '64-bit hash of event_id computed at ingest (ml_tasks.ingest.string_hashes); indexed for the duplicate checks.';

CREATE TABLE raw.subscription_events (
    event_id      text          NOT NULL,
    user_id       bigint        NOT NULL,
    event_at      timestamptz   NOT NULL,
    event_type    text          NOT NULL,
    plan          text          NOT NULL,
    amount        numeric(10,2) NOT NULL,
    currency      text          NOT NULL,
    auto_renew    boolean       NOT NULL,
    unknown_user  boolean       NOT NULL,
    source_file   text          NOT NULL,
    source_row    integer       NOT NULL,
    event_key     bigint        NOT NULL
) PARTITION BY RANGE (event_at);
CREATE INDEX subscription_events_event_key_idx ON raw.subscription_events (event_key);
CREATE INDEX subscription_events_user_idx ON raw.subscription_events (user_id, event_at);

COMMENT ON TABLE raw.subscription_events IS 'Accepted subscription lifecycle events, one partition per UTC day of event_at.';
COMMENT ON COLUMN raw.subscription_events.event_id IS 'Unique id of the event.';
COMMENT ON COLUMN raw.subscription_events.user_id IS 'Subscriber (users.user_id; may be unknown, see unknown_user).';
COMMENT ON COLUMN raw.subscription_events.event_at IS 'When it happened, UTC.';
COMMENT ON COLUMN raw.subscription_events.event_type IS 'signup, renewal, upgrade, downgrade, cancel (paid churn), payment_failed, reactivate.';
COMMENT ON COLUMN raw.subscription_events.plan IS 'Plan after the event: free, premium_individual, premium_duo, premium_family, premium_student.';
COMMENT ON COLUMN raw.subscription_events.amount IS 'Amount charged; 0 for free.';
COMMENT ON COLUMN raw.subscription_events.currency IS 'ISO 4217 currency code.';
COMMENT ON COLUMN raw.subscription_events.auto_renew IS 'Whether the plan renews automatically.';
COMMENT ON COLUMN raw.subscription_events.unknown_user IS 'True when user_id had not been delivered in users on or before this day.';
COMMENT ON COLUMN raw.subscription_events.source_file IS 'Landing file the row came from, relative to the landing root.';
COMMENT ON COLUMN raw.subscription_events.source_row IS 'Row number in that file (1 = first data row).';
COMMENT ON COLUMN raw.subscription_events.event_key IS '64-bit hash of event_id computed at ingest (ml_tasks.ingest.string_hashes); indexed for the duplicate checks.';
