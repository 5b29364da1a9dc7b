"""Popularity examples: (track, scoring date D) rows with features, lags, naive baselines and
targets, all as of a given instant.

- **Population of D**: the catalogue tracks known on D (the rows of ``features.track_daily``
  for D), released or not.
- **Targets** (DATA_CONTRACT.md): plays of the track in (D, D+H], from
  ``features.track_activity_daily``, which is already net of the plays of user-days flagged
  in ``monitoring.stream_anomalies``. A target is known once D + H <= the as-of day; until
  then it is NaN (never 0).
- **Features**: Feast's ``popularity_v1`` service (point in time, entity timestamp
  D+1 00:00 UTC; or the same rows of ``features.track_daily`` read directly, for scoring),
  the daily plays of the ``sequence_days`` days ending on D (``lag_0`` = D), window sums,
  derived catalogue features, and the audio features of ``features.track_audio`` when that
  table exists (one current row per track: a property of the clip, not of time).
- **Naive baseline** for H: the plays of the last H days, (D-H, D].

Nothing after the as-of day is read: the activity matrix stops at it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from psycopg import sql

from ml_tasks import warehouse
from ml_tasks.feature_store import feature_days_sql

log = logging.getLogger(__name__)

#: Columns of the popularity_v1 feature service (feature_repo/definitions.py), in order.
SERVICE_COLUMNS = (
    "plays_1d",
    "listeners_1d",
    "skip_rate_1d",
    "completion_rate_1d",
    "likes_1d",
    "shares_1d",
    "playlist_share_1d",
    "plays_7d",
    "plays_prev_7d",
    "plays_28d",
    "listener_days_7d",
    "likes_7d",
    "shares_7d",
    "skip_rate_7d",
    "completion_rate_7d",
    "playlist_share_7d",
    "plays_trend_7d",
    "artist_plays_7d",
    "artist_momentum",
    "artist_id",
    "genre",
    "days_since_release",
    "duration_ms",
    "explicit",
    "has_preview",
    "artist_tracks",
)
AUDIO_TABLE = "features.track_audio"
AUDIO_PREFIXES = ("mfcc_", "chroma_", "spectral_", "zcr_", "rms_", "tempo")
#: A row's uniform draw in [0, 1) of an :class:`EntitySample` (seeded hash of the row).
SAMPLE_COLUMN = "sample_u"
#: Columns of an example frame that are keys, labels or text, never model inputs.
ID_COLUMNS = ("track_id", "dt", "artist_id", SAMPLE_COLUMN)


def target_column(horizon: int) -> str:
    return f"y_{horizon}d"


def naive_column(horizon: int) -> str:
    return f"naive_{horizon}d"


def lag_column(k: int) -> str:
    return f"lag_{k}"


def _date_list(dates) -> str:
    return ", ".join(f"DATE '{d.isoformat()}'" for d in sorted(set(dates)))


@dataclass(frozen=True)
class EntitySample:
    """A seeded Bernoulli sample of the (track, date) rows, drawn in the database before
    any feature is read: the rows of date D are kept when their draw ``sample_u`` is below
    ``shares[D]`` (dates not listed keep every row).

    The draw is a hash of (seed, track, date), so a row's draw is the same whatever the
    shares: samples of one seed nest, and a horizon can take its own uniform sample (draw
    below its share) from rows kept for a larger share.
    """

    shares: dict[date, float]
    seed: int

    def __post_init__(self) -> None:
        bad = {d: s for d, s in self.shares.items() if not 0.0 < s <= 1.0}
        if bad:
            raise ValueError(f"sample shares must be in (0, 1], got {bad}")

    def draw_sql(self) -> str:
        """SQL of a row's draw in [0, 1) over ``track_id`` and ``dt``."""
        return (
            f"(hashtextextended(track_id || '|' || dt::text, {int(self.seed)})::float8"
            " / 18446744073709551616.0 + 0.5)"
        )

    def where_sql(self) -> str:
        """The SQL condition keeping the sampled rows of any date."""
        by_share: dict[float, list[date]] = {}
        for d, share in self.shares.items():
            if share < 1.0:
                by_share.setdefault(share, []).append(d)
        if not by_share:
            return "TRUE"
        partial = sorted(d for ds in by_share.values() for d in ds)
        terms = [f"dt NOT IN ({_date_list(partial)})"]
        terms += [
            f"(dt IN ({_date_list(ds)}) AND {self.draw_sql()} < {share!r})"
            for share, ds in sorted(by_share.items())
        ]
        return "(" + " OR ".join(terms) + ")"


# --------------------------------------------------------------------------- activity


@dataclass
class Activity:
    """Daily net plays per track on the days ``first``..``last`` (a dense matrix)."""

    first: date
    last: date
    track_ids: pd.Index  # row i of ``plays`` is track ``track_ids[i]``
    plays: np.ndarray  # (tracks, days) int64

    def rows(self, track_ids) -> np.ndarray:
        """Row of each track (-1 for a track without any play in the window)."""
        return self.track_ids.get_indexer(np.asarray(track_ids, dtype=object))

    def day_offsets(self, days) -> np.ndarray:
        """Each day as its number of days after ``first``."""
        as_days = pd.to_datetime(pd.Series(days)).to_numpy().astype("datetime64[D]")
        return (as_days - np.datetime64(self.first, "D")).astype(np.int64)

    def window(self, rows: np.ndarray, end: np.ndarray, length: int) -> np.ndarray:
        """Per row, the plays of the ``length`` days ending on day offset ``end`` (oldest
        first), for matrix ``rows`` (from :meth:`rows`) and ``end`` (from
        :meth:`day_offsets`).

        Days outside ``first``..``last`` and tracks without plays (row -1) count 0.
        """
        cols = end[:, None] + np.arange(-length + 1, 1)[None, :]
        n_days = self.plays.shape[1]
        ok = (rows[:, None] >= 0) & (cols >= 0) & (cols < n_days)
        out = np.zeros(cols.shape, dtype=np.int64)
        if self.plays.size:
            safe_rows = np.broadcast_to(np.maximum(rows, 0)[:, None], cols.shape)
            out[ok] = self.plays[safe_rows[ok], cols[ok]]
        return out


def load_activity(dsn: str, first: date, last: date) -> Activity:
    """Net plays per track and day from ``features.track_activity_daily``."""
    query = sql.SQL(
        "SELECT track_id, dt, plays FROM features.track_activity_daily"
        " WHERE dt BETWEEN {} AND {} AND plays > 0"
    ).format(sql.Literal(first), sql.Literal(last))
    with warehouse.connect(dsn) as conn:
        table = warehouse.read_arrow(conn, query)
    codes, ids = pd.factorize(table.column("track_id").to_numpy(zero_copy_only=False), sort=True)
    plays = np.zeros((len(ids), (last - first).days + 1), dtype=np.int64)
    activity = Activity(first, last, pd.Index(ids, dtype=object), plays)
    if len(codes):
        days = activity.day_offsets(table.column("dt").to_numpy(zero_copy_only=False))
        plays[codes, days] = table.column("plays").to_numpy(zero_copy_only=False)
    return activity


# --------------------------------------------------------------------------- features


def feature_frame(
    dates: list[date],
    *,
    dsn: str,
    source: str = "feast",
    sample: EntitySample | None = None,
) -> pd.DataFrame:
    """``popularity_v1`` features of every catalogue track of each date: (track_id, dt, ...).

    ``source="feast"``: Feast's point-in-time join for ``event_timestamp = D+1 00:00 UTC``
    (the entity query stays in the database). ``source="warehouse"``: the same rows of
    ``features.track_daily`` read directly (what scoring uses; a test shows they agree).
    ``sample``: only the sampled rows, with their draw in :data:`SAMPLE_COLUMN`.
    """
    where = f"{feature_days_sql(dates)} AND dt IN ({_date_list(dates)})"
    extra: list[str] = []
    if sample is not None:
        where += f" AND {sample.where_sql()}"
        extra = [SAMPLE_COLUMN]
    draw = f", {sample.draw_sql()} AS {SAMPLE_COLUMN}" if sample is not None else ""
    if source == "feast":
        from ml_tasks.feature_store import apply, historical_features

        apply(dsn=dsn)  # idempotent: registers the feature services on a fresh warehouse
        entity_sql = (
            "SELECT track_id, ((dt + 1)::timestamp AT TIME ZONE 'UTC') AS event_timestamp"
            f"{draw} FROM features.track_daily WHERE {where}"
        )
        frame = historical_features(entity_sql, "popularity_v1", dsn=dsn)
        ts = pd.to_datetime(frame["event_timestamp"], utc=True)
        frame["dt"] = (ts - pd.Timedelta(days=1)).dt.date
        frame = frame.drop(columns=["event_timestamp"])
    elif source == "warehouse":
        query = sql.SQL("SELECT track_id, dt, {}{} FROM features.track_daily WHERE {}").format(
            sql.SQL(", ").join(map(sql.Identifier, SERVICE_COLUMNS)), sql.SQL(draw), sql.SQL(where)
        )
        with warehouse.connect(dsn) as conn:
            frame = warehouse.read_arrow(conn, query).to_pandas()
        frame["dt"] = pd.to_datetime(frame["dt"]).dt.date
    else:
        raise ValueError(f"source must be feast or warehouse, got {source!r}")
    missing = [c for c in SERVICE_COLUMNS if c not in frame.columns]
    if missing:
        raise RuntimeError(f"feature service popularity_v1 lacks columns {missing}")
    frame = frame[["track_id", "dt", *SERVICE_COLUMNS, *extra]]
    return frame.sort_values(["dt", "track_id"], kind="stable").reset_index(drop=True)


def catalogue_rows(dates: list[date], *, dsn: str) -> dict[date, int]:
    """Catalogue tracks (rows of ``features.track_daily``) on each date."""
    query = (
        f"SELECT dt, count(*) FROM features.track_daily WHERE {feature_days_sql(dates)}"
        f" AND dt IN ({_date_list(dates)}) GROUP BY dt"
    )
    with warehouse.connect(dsn) as conn:
        return {d: int(n) for d, n in conn.execute(query).fetchall()}


def audio_frame(dsn: str) -> pd.DataFrame | None:
    """The audio features of ``features.track_audio`` (track_id + numeric summary columns),
    or None when the table does not exist or is empty."""
    with warehouse.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass(%s)", (AUDIO_TABLE,)).fetchone()[0] is None:
            return None
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema ="
                " 'features' AND table_name = 'track_audio' AND data_type = 'double precision'"
                " ORDER BY ordinal_position"
            ).fetchall()
            if r[0].startswith(AUDIO_PREFIXES)
        ]
        if not columns:
            return None
        query = sql.SQL("SELECT track_id, {} FROM features.track_audio").format(
            sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        table = warehouse.read_arrow(conn, query)
    if table.num_rows == 0:
        return None
    frame = table.to_pandas()
    return frame.rename(columns={c: f"audio_{c}" for c in columns})


# --------------------------------------------------------------------------- examples


def build_examples(
    dates: list[date],
    *,
    as_of: date,
    dsn: str,
    horizons: tuple[int, ...] = (1, 7, 30),
    sequence_days: int = 30,
    source: str = "feast",
    with_targets: bool = True,
    sample: EntitySample | None = None,
) -> pd.DataFrame:
    """One row per (catalogue track of D, D) for every D in ``dates`` (all <= ``as_of``):
    features, ``lag_0..lag_{n-1}`` (plays on D, D-1, ...), ``naive_{H}d`` and, when
    ``with_targets``, ``y_{H}d`` (NaN unless D + H <= ``as_of``). ``sample``: only the
    sampled rows (see :class:`EntitySample`)."""
    if not dates:
        raise ValueError("no dates to build examples for")
    if max(dates) > as_of:
        raise ValueError(f"scoring dates after the as-of day {as_of}")
    frame = feature_frame(dates, dsn=dsn, source=source, sample=sample)
    first = min(dates) - timedelta(days=sequence_days - 1)
    activity = load_activity(dsn, first, as_of)
    rows = activity.rows(frame["track_id"].to_numpy())
    ends = activity.day_offsets(frame["dt"].to_numpy())
    seq = activity.window(rows, ends, sequence_days)  # oldest first, last column = D
    lags = pd.DataFrame(
        seq[:, ::-1], columns=[lag_column(k) for k in range(sequence_days)], index=frame.index
    )
    frame = pd.concat([frame, lags], axis=1)
    for h in horizons:
        frame[naive_column(h)] = seq[:, -h:].sum(axis=1)
    if with_targets:
        for h in horizons:
            ahead = activity.window(rows, ends + h, h).sum(axis=1)
            known = ends + h <= (as_of - activity.first).days
            frame[target_column(h)] = np.where(known, ahead.astype(float), np.nan)
    _derive(frame, seq, sequence_days)
    audio = audio_frame(dsn)
    if audio is not None:
        frame = frame.merge(audio, on="track_id", how="left")
    return frame


def _derive(frame: pd.DataFrame, seq: np.ndarray, sequence_days: int) -> None:
    """Window sums and shape of the recent sequence, and new-release features."""
    for w in (3, 14):
        frame[f"plays_last_{w}d"] = seq[:, -w:].sum(axis=1)
    frame[f"plays_last_{sequence_days}d"] = seq.sum(axis=1)
    played = seq > 0
    # days since the last play within the window (sequence_days when none)
    rev = played[:, ::-1]
    frame["days_since_last_play"] = np.where(rev.any(axis=1), np.argmax(rev, axis=1), sequence_days)
    frame["active_days_window"] = played.sum(axis=1)
    d = frame["days_since_release"].to_numpy(dtype=float)
    # days of the window since release (the part of the lags that can hold plays)
    frame["released_days_in_window"] = np.clip(d + 1, 0, sequence_days)
    frame["is_released"] = (d >= 0).astype(float)
    frame["log_days_since_release"] = np.sign(d) * np.log1p(np.abs(d))
    tracks = frame["artist_tracks"].to_numpy(dtype=float)
    frame["artist_plays_per_track_7d"] = frame["artist_plays_7d"].to_numpy(
        dtype=float
    ) / np.maximum(tracks, 1.0)
    recent = seq[:, -7:].sum(axis=1).astype(float)
    prior = seq[:, -14:-7].sum(axis=1).astype(float)
    frame["ratio_7d_to_prev"] = (recent + 1.0) / (prior + 1.0)
    # plays per day since release (over the window), the level a young track has shown
    frame["plays_per_released_day"] = seq.sum(axis=1) / np.maximum(
        frame["released_days_in_window"].to_numpy(), 1.0
    )


def popularity_targets(
    dates: list[date], *, as_of: date, horizons: tuple[int, ...] = (1, 7, 30), dsn: str
) -> pd.DataFrame:
    """The targets alone: (track_id, dt, y_{H}d...) for the catalogue tracks of each date."""
    frame = build_examples(
        dates, as_of=as_of, dsn=dsn, horizons=horizons, source="warehouse", with_targets=True
    )
    return frame[["track_id", "dt", *[target_column(h) for h in horizons]]]
