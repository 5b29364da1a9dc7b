-- Users and tracks arrive as daily upserts. Every accepted delivery is kept per day in
-- *_versions (replaced atomically per day), and the current row per key is kept in
-- raw.users / raw.tracks, recomputed for the affected keys in the same transaction.

CREATE TABLE raw.user_versions (
    dt                  date     NOT NULL,
    user_id             bigint   NOT NULL,
    signup_date         date     NOT NULL,
    country             text     NOT NULL,
    birth_year          smallint,
    gender              text,
    acquisition_channel text     NOT NULL,
    source_file         text     NOT NULL,
    source_row          integer  NOT NULL,
    PRIMARY KEY (dt, user_id)
);
CREATE INDEX user_versions_user_idx ON raw.user_versions (user_id, dt);
COMMENT ON TABLE raw.user_versions IS 'Every accepted users delivery, one row per (delivery day, user).';
COMMENT ON COLUMN raw.user_versions.dt IS 'Landing day the row was delivered in (users/dt=...).';
COMMENT ON COLUMN raw.user_versions.user_id IS 'User key.';
COMMENT ON COLUMN raw.user_versions.signup_date IS 'Day the user signed up.';
COMMENT ON COLUMN raw.user_versions.country IS 'ISO 3166-1 alpha-2 country.';
COMMENT ON COLUMN raw.user_versions.birth_year IS 'Year of birth, null when unknown.';
COMMENT ON COLUMN raw.user_versions.gender IS 'Free text, null when not given.';
COMMENT ON COLUMN raw.user_versions.acquisition_channel IS 'organic, paid_social, search_ads, referral, partner, other.';
COMMENT ON COLUMN raw.user_versions.source_file IS 'Landing file the row came from, relative to the landing root.';
COMMENT ON COLUMN raw.user_versions.source_row IS 'Row number in that file (1 = first data row).';

CREATE TABLE raw.users (
    user_id             bigint  PRIMARY KEY,
    signup_date         date    NOT NULL,
    country             text    NOT NULL,
    birth_year          smallint,
    gender              text,
    acquisition_channel text    NOT NULL,
    first_delivered     date    NOT NULL,
    last_delivered      date    NOT NULL
);
COMMENT ON TABLE raw.users IS 'Current state of every user: the latest accepted delivery per user_id.';
COMMENT ON COLUMN raw.users.user_id IS 'User key.';
COMMENT ON COLUMN raw.users.signup_date IS 'Day the user signed up.';
COMMENT ON COLUMN raw.users.country IS 'ISO 3166-1 alpha-2 country.';
COMMENT ON COLUMN raw.users.birth_year IS 'Year of birth, null when unknown.';
COMMENT ON COLUMN raw.users.gender IS 'Free text, null when not given.';
COMMENT ON COLUMN raw.users.acquisition_channel IS 'organic, paid_social, search_ads, referral, partner, other.';
COMMENT ON COLUMN raw.users.first_delivered IS 'First landing day that delivered this user.';
COMMENT ON COLUMN raw.users.last_delivered IS 'Landing day of the delivery this row reflects.';

CREATE TABLE raw.track_versions (
    dt           date     NOT NULL,
    track_id     text     NOT NULL,
    title        text     NOT NULL,
    artist_id    text     NOT NULL,
    album_id     text,
    release_date date     NOT NULL,
    duration_ms  integer  NOT NULL,
    genre        text,
    explicit     boolean  NOT NULL,
    preview_path text,
    source_file  text     NOT NULL,
    source_row   integer  NOT NULL,
    PRIMARY KEY (dt, track_id)
);
CREATE INDEX track_versions_track_idx ON raw.track_versions (track_id, dt);
COMMENT ON TABLE raw.track_versions IS 'Every accepted tracks delivery, one row per (delivery day, track).';
COMMENT ON COLUMN raw.track_versions.dt IS 'Landing day the row was delivered in (tracks/dt=...).';
COMMENT ON COLUMN raw.track_versions.track_id IS 'Track key.';
COMMENT ON COLUMN raw.track_versions.title IS 'Track title.';
COMMENT ON COLUMN raw.track_versions.artist_id IS 'Main artist.';
COMMENT ON COLUMN raw.track_versions.album_id IS 'Album, null when none.';
COMMENT ON COLUMN raw.track_versions.release_date IS 'Release day.';
COMMENT ON COLUMN raw.track_versions.duration_ms IS 'Length in milliseconds.';
COMMENT ON COLUMN raw.track_versions.genre IS 'Catalogue genre label; null means to be classified.';
COMMENT ON COLUMN raw.track_versions.explicit IS 'Explicit lyrics.';
COMMENT ON COLUMN raw.track_versions.preview_path IS 'Preview clip path under audio/ in the landing root, null when none.';
COMMENT ON COLUMN raw.track_versions.source_file IS 'Landing file the row came from, relative to the landing root.';
COMMENT ON COLUMN raw.track_versions.source_row IS 'Row number in that file (1 = first data row).';

CREATE TABLE raw.tracks (
    track_id        text     PRIMARY KEY,
    title           text     NOT NULL,
    artist_id       text     NOT NULL,
    album_id        text,
    release_date    date     NOT NULL,
    duration_ms     integer  NOT NULL,
    genre           text,
    explicit        boolean  NOT NULL,
    preview_path    text,
    first_delivered date     NOT NULL,
    last_delivered  date     NOT NULL
);
COMMENT ON TABLE raw.tracks IS 'Current state of the catalogue: the latest accepted delivery per track_id.';
COMMENT ON COLUMN raw.tracks.track_id IS 'Track key.';
COMMENT ON COLUMN raw.tracks.title IS 'Track title.';
COMMENT ON COLUMN raw.tracks.artist_id IS 'Main artist.';
COMMENT ON COLUMN raw.tracks.album_id IS 'Album, null when none.';
COMMENT ON COLUMN raw.tracks.release_date IS 'Release day.';
COMMENT ON COLUMN raw.tracks.duration_ms IS 'Length in milliseconds.';
COMMENT ON COLUMN raw.tracks.genre IS 'Catalogue genre label; null means to be classified.';
COMMENT ON COLUMN raw.tracks.explicit IS 'Explicit lyrics.';
COMMENT ON COLUMN raw.tracks.preview_path IS 'Preview clip path under audio/ in the landing root, null when none.';
COMMENT ON COLUMN raw.tracks.first_delivered IS 'First landing day that delivered this track.';
COMMENT ON COLUMN raw.tracks.last_delivered IS 'Landing day of the delivery this row reflects.';
