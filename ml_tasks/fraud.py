"""Stream-fraud anomalies: an Isolation Forest over one day's user behaviour.

For every user with at least ``min_plays`` plays on day D, the day's behaviour becomes a
vector (plays per active hour, hours of the day with plays, repeat ratio, distinct tracks,
the top track's share, plays just past the 30-second royalty threshold, and the absence of
skips, likes and shares). An Isolation Forest fitted on that day's users scores each one;
a user-day is flagged when its score reaches the configured threshold. Each row names the
behaviours that stood out most (robust z-scores against the day's users).

Flagged user-days are written to ``monitoring.stream_anomalies`` (the day replaced in one
transaction); the track features and popularity targets leave their plays out.
``features_daily`` runs it before the feature SQL. Monitoring reports the day's flags and
computes them only when they are missing or out of date (:func:`ensure_day`): re-scoring a
day the features were built on would restamp its flags and make the next night rebuild that
day's track activity.

Users are scored in ``user_id`` order (the forest subsamples rows by position), so a day
scored again gives the same flags whatever plan the server picks for the behaviour query.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ml_tasks import warehouse
from ml_tasks.yaml_config import load_flat

log = logging.getLogger(__name__)

#: Behaviour columns, with how each is shown in reasons.
BEHAVIOURS = {
    "plays_per_hour": "plays per active hour",
    "active_hours": "hours of the day with plays",
    "repeat_ratio": "share of plays repeating a track already played that day",
    "distinct_tracks": "distinct tracks",
    "top_track_share": "share of plays on the most played track",
    "near_threshold_share": "share of plays ending 30-35 s in (just past the royalty threshold)",
    "no_skip": "no skips at all",
    "no_like_or_share": "no likes or shares at all",
}

BEHAVIOUR_SQL = """
SELECT user_id,
       count(*) AS plays,
       count(*)::float8 / count(DISTINCT extract(hour FROM played_at AT TIME ZONE 'UTC'))
           AS plays_per_hour,
       count(DISTINCT extract(hour FROM played_at AT TIME ZONE 'UTC')) AS active_hours,
       1 - count(DISTINCT track_id)::float8 / count(*) AS repeat_ratio,
       count(DISTINCT track_id) AS distinct_tracks,
       avg((ms_played BETWEEN 30000 AND 35000)::int) AS near_threshold_share,
       (count(*) FILTER (WHERE skipped) = 0)::int AS no_skip,
       (count(*) FILTER (WHERE liked OR shared) = 0)::int AS no_like_or_share
FROM raw.listening_events
WHERE played_at >= %(lo)s AND played_at < %(hi)s
GROUP BY user_id
HAVING count(*) >= %(min_plays)s
ORDER BY user_id
"""

TOP_TRACK_SQL = """
SELECT user_id, max(n)::float8 / sum(n) AS top_track_share
FROM (SELECT user_id, track_id, count(*) AS n FROM raw.listening_events
      WHERE played_at >= %(lo)s AND played_at < %(hi)s GROUP BY user_id, track_id) t
GROUP BY user_id
HAVING sum(n) >= %(min_plays)s
"""


@dataclass(frozen=True)
class FraudConfig:
    """Detector settings (``config/fraud.yaml``)."""

    min_plays: int = 5
    threshold: float = 0.69
    n_estimators: int = 200
    seed: int = 7

    @classmethod
    def load(cls, path: Path | None = None) -> FraudConfig:
        return load_flat(cls, "fraud.yaml", path)

    @property
    def version(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"isolation_forest-{digest[:10]}"


def behaviour(dsn: str, day: date, min_plays: int) -> pd.DataFrame:
    """One row per user with at least ``min_plays`` plays on ``day``."""
    low, high = warehouse.day_bounds(day)
    params = {"lo": low, "hi": high, "min_plays": min_plays}
    with warehouse.connect(dsn) as conn:
        cur = conn.execute(BEHAVIOUR_SQL, params)
        frame = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
        top = dict(conn.execute(TOP_TRACK_SQL, params).fetchall())
    frame["top_track_share"] = frame["user_id"].map(top).astype(float)
    return frame


def score(frame: pd.DataFrame, config: FraudConfig) -> pd.DataFrame:
    """Anomaly score (0..1, higher = more anomalous), flag and reasons per user-day."""
    from sklearn.ensemble import IsolationForest

    out = frame[["user_id"]].copy()
    if len(frame) < 2:
        out["anomaly_score"] = 0.0
        out["is_flagged"] = False
        out["reasons"] = [[] for _ in range(len(frame))]
        return out
    x = frame[list(BEHAVIOURS)].to_numpy(dtype=float)
    x[:, [0, 3]] = np.log1p(x[:, [0, 3]])  # counts: compare orders of magnitude
    forest = IsolationForest(
        n_estimators=config.n_estimators, random_state=config.seed, n_jobs=1
    ).fit(x)
    anomaly = -forest.score_samples(x)
    median = np.median(x, axis=0)
    mad = np.median(np.abs(x - median), axis=0) * 1.4826
    spread = np.where(mad > 1e-9, mad, np.maximum(np.std(x, axis=0), 1e-9))
    z = np.abs(x - median) / spread
    out["anomaly_score"] = anomaly
    out["is_flagged"] = anomaly >= config.threshold
    out["reasons"] = _reasons(frame[list(BEHAVIOURS)].to_numpy(dtype=float), z)
    return out


def _reasons(raw: np.ndarray, z: np.ndarray) -> list[list[str]]:
    """Per user-day, up to three behaviours with a robust z-score of 3 or more, largest
    first, each with its value and the day's median.

    The day's medians are computed once: computed per reason, they made this quadratic in
    the users (``detect_day`` at 46,567 user-days: 3.65 s before, 2.27 s after).
    """
    names = list(BEHAVIOURS)
    medians = [f"{m:.3g}" for m in np.median(raw, axis=0).tolist()]
    top = np.argsort(-z, axis=1)[:, :3]
    rows = np.arange(len(z))[:, None]
    shown = z[rows, top] >= 3
    values = raw[rows, top]
    reasons: list[list[str]] = [[] for _ in range(len(z))]
    for i in np.flatnonzero(shown.any(axis=1)).tolist():
        reasons[i] = [
            f"{names[j]}={v:.3g} (day median {medians[j]})"
            for j, v, s in zip(top[i].tolist(), values[i].tolist(), shown[i].tolist(), strict=True)
            if s
        ]
    return reasons


def detect_day(day: date, *, run_id: str, dsn: str | None = None) -> dict:
    """Score ``day``'s user behaviour and replace its rows in monitoring.stream_anomalies."""
    started = time.perf_counter()
    target = warehouse.ensure_migrated(dsn)
    config = FraudConfig.load()
    scored = score(behaviour(target, day, config.min_plays), config)
    n = len(scored)
    now = datetime.now(UTC)
    table = pa.table(
        {
            "dt": pa.array([day] * n, pa.date32()),
            "user_id": pa.array(scored["user_id"].to_numpy(dtype=np.int64)),
            "anomaly_score": pa.array(scored["anomaly_score"].to_numpy(dtype=float)),
            "is_flagged": pa.array(scored["is_flagged"].to_numpy(dtype=bool)),
            "reasons": pa.array(list(scored["reasons"]), pa.list_(pa.string())),
            "model_version": pa.array([config.version] * n),
            "run_id": pa.array([run_id] * n),
            "scored_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        }
    )
    with warehouse.connect(target) as conn, conn.transaction():
        conn.execute("DELETE FROM monitoring.stream_anomalies WHERE dt = %s", (day,))
        if n:
            warehouse.copy_arrow(conn, "monitoring.stream_anomalies", table, table.column_names)
    flagged = int(scored["is_flagged"].sum())
    log.info(
        "stream anomalies for %s: %d user-days scored, %d flagged in %.2f s",
        day,
        n,
        flagged,
        time.perf_counter() - started,
    )
    return {"day": day.isoformat(), "scored": n, "flagged": flagged, "model": config.version}


def current_flags(day: date, *, dsn: str | None = None) -> dict | None:
    """The day's flags as :func:`detect_day` reported them, or None when they must be
    computed again: none stored, stored by another detector configuration, or older than
    the day's latest ingest."""
    target = warehouse.resolve_dsn(dsn=dsn)
    version = FraudConfig.load().version
    with warehouse.connect(target) as conn:
        scored, flagged, versions, stored_version, scored_at = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE is_flagged), count(DISTINCT model_version),"
            " min(model_version), min(scored_at) FROM monitoring.stream_anomalies WHERE dt = %s",
            (day,),
        ).fetchone()
        ingested = conn.execute(
            "SELECT max(finished_at) FROM raw.ingest_runs WHERE dt = %s", (day,)
        ).fetchone()[0]
    if not scored or versions != 1 or stored_version != version:
        return None
    if ingested is not None and scored_at < ingested:
        return None
    return {"day": day.isoformat(), "scored": scored, "flagged": flagged, "model": version}


def ensure_day(day: date, *, run_id: str, dsn: str | None = None) -> dict:
    """The day's flags: those stored when still current (see :func:`current_flags`), else
    computed now by :func:`detect_day`. ``computed`` in the result says which."""
    target = warehouse.ensure_migrated(dsn)
    current = current_flags(day, dsn=target)
    if current is not None:
        log.info("stream anomalies for %s are current: %d flagged", day, current["flagged"])
        return {**current, "computed": False}
    return {**detect_day(day, run_id=run_id, dsn=target), "computed": True}
