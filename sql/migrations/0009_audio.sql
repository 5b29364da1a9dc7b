-- Audio features of preview clips, audio files refused by extraction, and genre predictions.
--
-- features.track_audio holds the CURRENT features of each track's preview (one row per track,
-- upserted by audio_features): the landing area keeps only the current clip of a track, so a
-- per-day history could not be rebuilt anyway. A row is re-extracted when the file's sha256,
-- its path or the extractor version changes.
--
-- scores.track_genres is keyed by (track_id, model_version): a track's genre does not change
-- from day to day, so a daily partition would copy the whole unlabelled catalogue every day.
-- Each champion's prediction per track is kept once (re-scoring with the same model upserts
-- it: idempotent), a new champion adds its own rows beside the old ones, and dt says which
-- scoring day last wrote the row.

CREATE TABLE features.track_audio (
    track_id          text             PRIMARY KEY,
    preview_path      text             NOT NULL,
    file_sha256       text             NOT NULL CHECK (file_sha256 ~ '^[0-9a-f]{64}$'),
    file_bytes        bigint           NOT NULL,
    format            text             NOT NULL,
    duration_s        double precision NOT NULL,
    sample_rate       integer          NOT NULL,
    channels          smallint         NOT NULL,
    mfcc_mean_1       double precision NOT NULL,
    mfcc_mean_2       double precision NOT NULL,
    mfcc_mean_3       double precision NOT NULL,
    mfcc_mean_4       double precision NOT NULL,
    mfcc_mean_5       double precision NOT NULL,
    mfcc_mean_6       double precision NOT NULL,
    mfcc_mean_7       double precision NOT NULL,
    mfcc_mean_8       double precision NOT NULL,
    mfcc_mean_9       double precision NOT NULL,
    mfcc_mean_10      double precision NOT NULL,
    mfcc_mean_11      double precision NOT NULL,
    mfcc_mean_12      double precision NOT NULL,
    mfcc_mean_13      double precision NOT NULL,
    mfcc_std_1        double precision NOT NULL,
    mfcc_std_2        double precision NOT NULL,
    mfcc_std_3        double precision NOT NULL,
    mfcc_std_4        double precision NOT NULL,
    mfcc_std_5        double precision NOT NULL,
    mfcc_std_6        double precision NOT NULL,
    mfcc_std_7        double precision NOT NULL,
    mfcc_std_8        double precision NOT NULL,
    mfcc_std_9        double precision NOT NULL,
    mfcc_std_10       double precision NOT NULL,
    mfcc_std_11       double precision NOT NULL,
    mfcc_std_12       double precision NOT NULL,
    mfcc_std_13       double precision NOT NULL,
    chroma_mean_1     double precision NOT NULL,
    chroma_mean_2     double precision NOT NULL,
    chroma_mean_3     double precision NOT NULL,
    chroma_mean_4     double precision NOT NULL,
    chroma_mean_5     double precision NOT NULL,
    chroma_mean_6     double precision NOT NULL,
    chroma_mean_7     double precision NOT NULL,
    chroma_mean_8     double precision NOT NULL,
    chroma_mean_9     double precision NOT NULL,
    chroma_mean_10    double precision NOT NULL,
    chroma_mean_11    double precision NOT NULL,
    chroma_mean_12    double precision NOT NULL,
    spectral_centroid_mean double precision NOT NULL,
    spectral_centroid_std double precision NOT NULL,
    spectral_bandwidth_mean double precision NOT NULL,
    spectral_bandwidth_std double precision NOT NULL,
    spectral_rolloff_mean double precision NOT NULL,
    spectral_rolloff_std double precision NOT NULL,
    zcr_mean          double precision NOT NULL,
    zcr_std           double precision NOT NULL,
    rms_mean          double precision NOT NULL,
    rms_std           double precision NOT NULL,
    tempo             double precision NOT NULL,
    extractor_version text             NOT NULL,
    dt                date             NOT NULL,
    run_id            text             NOT NULL,
    extracted_at      timestamptz      NOT NULL
);
CREATE INDEX track_audio_dt_idx ON features.track_audio (dt);
COMMENT ON TABLE features.track_audio IS 'librosa summary features of each track''s current preview clip (MFCC means and deviations, chroma, spectral centroid/bandwidth/roll-off, zero-crossing rate, RMS, tempo), one row per track, upserted by audio_features / encore audio.';
COMMENT ON COLUMN features.track_audio.track_id IS 'Track key (raw.tracks).';
COMMENT ON COLUMN features.track_audio.preview_path IS 'Preview clip path under the landing root (tracks.preview_path) the features were computed from.';
COMMENT ON COLUMN features.track_audio.file_sha256 IS 'sha256 of the clip file; a different hash on disk makes the next run re-extract the track.';
COMMENT ON COLUMN features.track_audio.file_bytes IS 'Size of the clip file in bytes.';
COMMENT ON COLUMN features.track_audio.format IS 'Container format as decoded (WAV, FLAC, OGG, MP3, ...).';
COMMENT ON COLUMN features.track_audio.duration_s IS 'Length of the decoded clip in seconds.';
COMMENT ON COLUMN features.track_audio.sample_rate IS 'Sample rate of the file in Hz (features are computed after resampling to 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.channels IS 'Channels in the file (mixed down to mono before extraction).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_1 IS 'Mean over frames of MFCC coefficient 1 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_2 IS 'Mean over frames of MFCC coefficient 2 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_3 IS 'Mean over frames of MFCC coefficient 3 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_4 IS 'Mean over frames of MFCC coefficient 4 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_5 IS 'Mean over frames of MFCC coefficient 5 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_6 IS 'Mean over frames of MFCC coefficient 6 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_7 IS 'Mean over frames of MFCC coefficient 7 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_8 IS 'Mean over frames of MFCC coefficient 8 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_9 IS 'Mean over frames of MFCC coefficient 9 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_10 IS 'Mean over frames of MFCC coefficient 10 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_11 IS 'Mean over frames of MFCC coefficient 11 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_12 IS 'Mean over frames of MFCC coefficient 12 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_mean_13 IS 'Mean over frames of MFCC coefficient 13 (librosa, 13 coefficients, 22.05 kHz mono).';
COMMENT ON COLUMN features.track_audio.mfcc_std_1 IS 'Standard deviation over frames of MFCC coefficient 1.';
COMMENT ON COLUMN features.track_audio.mfcc_std_2 IS 'Standard deviation over frames of MFCC coefficient 2.';
COMMENT ON COLUMN features.track_audio.mfcc_std_3 IS 'Standard deviation over frames of MFCC coefficient 3.';
COMMENT ON COLUMN features.track_audio.mfcc_std_4 IS 'Standard deviation over frames of MFCC coefficient 4.';
COMMENT ON COLUMN features.track_audio.mfcc_std_5 IS 'Standard deviation over frames of MFCC coefficient 5.';
COMMENT ON COLUMN features.track_audio.mfcc_std_6 IS 'Standard deviation over frames of MFCC coefficient 6.';
COMMENT ON COLUMN features.track_audio.mfcc_std_7 IS 'Standard deviation over frames of MFCC coefficient 7.';
COMMENT ON COLUMN features.track_audio.mfcc_std_8 IS 'Standard deviation over frames of MFCC coefficient 8.';
COMMENT ON COLUMN features.track_audio.mfcc_std_9 IS 'Standard deviation over frames of MFCC coefficient 9.';
COMMENT ON COLUMN features.track_audio.mfcc_std_10 IS 'Standard deviation over frames of MFCC coefficient 10.';
COMMENT ON COLUMN features.track_audio.mfcc_std_11 IS 'Standard deviation over frames of MFCC coefficient 11.';
COMMENT ON COLUMN features.track_audio.mfcc_std_12 IS 'Standard deviation over frames of MFCC coefficient 12.';
COMMENT ON COLUMN features.track_audio.mfcc_std_13 IS 'Standard deviation over frames of MFCC coefficient 13.';
COMMENT ON COLUMN features.track_audio.chroma_mean_1 IS 'Mean chroma energy of pitch class C (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.chroma_mean_2 IS 'Mean chroma energy of pitch class C# (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.chroma_mean_3 IS 'Mean chroma energy of pitch class D (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.chroma_mean_4 IS 'Mean chroma energy of pitch class D# (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.chroma_mean_5 IS 'Mean chroma energy of pitch class E (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.chroma_mean_6 IS 'Mean chroma energy of pitch class F (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.chroma_mean_7 IS 'Mean chroma energy of pitch class F# (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.chroma_mean_8 IS 'Mean chroma energy of pitch class G (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.chroma_mean_9 IS 'Mean chroma energy of pitch class G# (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.chroma_mean_10 IS 'Mean chroma energy of pitch class A (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.chroma_mean_11 IS 'Mean chroma energy of pitch class A# (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.chroma_mean_12 IS 'Mean chroma energy of pitch class B (STFT chroma, 0..1).';
COMMENT ON COLUMN features.track_audio.spectral_centroid_mean IS 'Mean over frames of the spectral centroid (Hz).';
COMMENT ON COLUMN features.track_audio.spectral_centroid_std IS 'Standard deviation over frames of the spectral centroid (Hz).';
COMMENT ON COLUMN features.track_audio.spectral_bandwidth_mean IS 'Mean over frames of the spectral bandwidth (Hz).';
COMMENT ON COLUMN features.track_audio.spectral_bandwidth_std IS 'Standard deviation over frames of the spectral bandwidth (Hz).';
COMMENT ON COLUMN features.track_audio.spectral_rolloff_mean IS 'Mean over frames of the 85% spectral roll-off frequency (Hz).';
COMMENT ON COLUMN features.track_audio.spectral_rolloff_std IS 'Standard deviation over frames of the 85% spectral roll-off frequency (Hz).';
COMMENT ON COLUMN features.track_audio.zcr_mean IS 'Mean over frames of the zero-crossing rate (crossings per sample).';
COMMENT ON COLUMN features.track_audio.zcr_std IS 'Standard deviation over frames of the zero-crossing rate (crossings per sample).';
COMMENT ON COLUMN features.track_audio.rms_mean IS 'Mean over frames of the RMS energy (full scale = 1).';
COMMENT ON COLUMN features.track_audio.rms_std IS 'Standard deviation over frames of the RMS energy (full scale = 1).';
COMMENT ON COLUMN features.track_audio.tempo IS 'Estimated tempo in beats per minute (librosa beat tracker); 0 when no beat was found.';
COMMENT ON COLUMN features.track_audio.extractor_version IS 'Version of the feature extractor (ml_tasks.audio.EXTRACTOR_VERSION); a new version re-extracts every track.';
COMMENT ON COLUMN features.track_audio.dt IS 'Day of the audio_features run that extracted this row.';
COMMENT ON COLUMN features.track_audio.run_id IS 'Run that extracted it.';
COMMENT ON COLUMN features.track_audio.extracted_at IS 'When it was extracted.';

CREATE TABLE quarantine.audio_rejects (
    dt           date        NOT NULL,
    track_id     text        NOT NULL,
    preview_path text        NOT NULL,
    file_sha256  text,
    reason       text        NOT NULL CHECK (reason IN ('missing', 'corrupt', 'silent', 'too_short', 'unsafe_path')),
    detail       text        NOT NULL,
    run_id       text        NOT NULL,
    rejected_at  timestamptz NOT NULL,
    PRIMARY KEY (dt, track_id)
);
CREATE INDEX audio_rejects_track_idx ON quarantine.audio_rejects (track_id, dt);
COMMENT ON TABLE quarantine.audio_rejects IS 'Preview clips audio extraction refused, with the reason; replaced per run day. A rejected clip is retried when its file (sha256) changes or the track is delivered again.';
COMMENT ON COLUMN quarantine.audio_rejects.dt IS 'Day of the audio_features run that refused the clip.';
COMMENT ON COLUMN quarantine.audio_rejects.track_id IS 'Track key.';
COMMENT ON COLUMN quarantine.audio_rejects.preview_path IS 'preview_path as delivered (relative to the landing root).';
COMMENT ON COLUMN quarantine.audio_rejects.file_sha256 IS 'sha256 of the file as found (null when missing).';
COMMENT ON COLUMN quarantine.audio_rejects.reason IS 'missing (no such file), corrupt (not decodable audio, truncated), silent (RMS below the threshold), too_short (below the minimum length), unsafe_path (outside the landing root).';
COMMENT ON COLUMN quarantine.audio_rejects.detail IS 'What was observed: the decoder''s error, the RMS or the length.';
COMMENT ON COLUMN quarantine.audio_rejects.run_id IS 'Run that refused it.';
COMMENT ON COLUMN quarantine.audio_rejects.rejected_at IS 'When it was refused.';

CREATE TABLE scores.track_genres (
    track_id       text             NOT NULL,
    model_version  text             NOT NULL,
    genre          text             NOT NULL,
    probability    double precision NOT NULL CHECK (probability BETWEEN 0 AND 1),
    top3           jsonb            NOT NULL,
    model_name     text             NOT NULL,
    file_sha256    text             NOT NULL,
    dt             date             NOT NULL,
    run_id         text             NOT NULL,
    scored_at      timestamptz      NOT NULL,
    PRIMARY KEY (track_id, model_version)
);
CREATE INDEX track_genres_dt_idx ON scores.track_genres (dt);
COMMENT ON TABLE scores.track_genres IS 'Predicted genre of unlabelled catalogue tracks from their preview''s audio features, one row per track and genre model version (a new champion adds rows; re-scoring with the same model replaces them).';
COMMENT ON COLUMN scores.track_genres.track_id IS 'Track key (a track whose catalogue genre is null).';
COMMENT ON COLUMN scores.track_genres.model_version IS 'Registry version of the genre model (champion on dt) that made the prediction.';
COMMENT ON COLUMN scores.track_genres.genre IS 'Most probable genre.';
COMMENT ON COLUMN scores.track_genres.probability IS 'Model probability of that genre (0..1).';
COMMENT ON COLUMN scores.track_genres.top3 IS 'The three most probable genres: [{genre, probability}], most probable first.';
COMMENT ON COLUMN scores.track_genres.model_name IS 'Registry model name (genre).';
COMMENT ON COLUMN scores.track_genres.file_sha256 IS 'sha256 of the preview clip whose features were used (features.track_audio.file_sha256).';
COMMENT ON COLUMN scores.track_genres.dt IS 'Scoring day of the run that last wrote the row (feature date).';
COMMENT ON COLUMN scores.track_genres.run_id IS 'Run that scored it.';
COMMENT ON COLUMN scores.track_genres.scored_at IS 'When it was scored.';
