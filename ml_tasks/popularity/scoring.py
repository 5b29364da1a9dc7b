"""Score track popularity for one day (``score_daily`` / ``encore score``, family
``popularity``).

Every catalogue track of day D (the rows of ``features.track_daily`` for D) gets forecast
plays over the next 1, 7 and 30 days from the popularity model that was champion when D
closed, beside the naive baselines (the plays of the last 1, 7 and 30 days). The day is
written to a stage table and swapped in as the day's partition of
``scores.track_popularity`` in one transaction, with its ``scores.scoring_runs`` row: a
reader sees the old day or the new one, and re-scoring the day replaces it.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa

from ml_tasks import registry, warehouse
from ml_tasks.popularity.data import build_examples, naive_column
from ml_tasks.popularity.model import prediction_column
from ml_tasks.popularity.training import MODEL_NAME, load_popularity_model

log = logging.getLogger(__name__)

TABLE = "scores.track_popularity"
HORIZONS = (1, 7, 30)


def score_popularity(day: date, *, run_id: str, dsn: str | None = None) -> dict:
    """Forecast every catalogue track of ``day`` and replace the day's partition.

    Raises :class:`ml_tasks.scoring.NoChampion` when no popularity model was champion when
    the day closed (``score_day`` then records the family as skipped), and
    :class:`ml_tasks.scoring.NotReady` when the feature day is missing or not validated.
    """
    from ml_tasks.scoring import NoChampion, day_end, features_ready

    started = time.perf_counter()
    target = warehouse.ensure_migrated(dsn)
    record = registry.champion(MODEL_NAME, day_end(day), dsn=target)
    if record is None:
        raise NoChampion(f"no popularity model was champion when {day} closed")
    features_ready(target, day)
    model = load_popularity_model(record)
    frame = build_examples(
        [day],
        as_of=day,
        dsn=target,
        horizons=HORIZONS,
        sequence_days=model.sequence_days,
        source="warehouse",
        with_targets=False,
    )
    predictions = model.predict(frame)
    n = len(frame)
    now = datetime.now(UTC)
    table = pa.table(
        {
            "dt": pa.array([day] * n, pa.date32()),
            "track_id": pa.array(frame["track_id"].astype(str).tolist(), pa.string()),
            **{
                prediction_column(h): pa.array(
                    predictions[prediction_column(h)].to_numpy(dtype=float), pa.float64()
                )
                for h in HORIZONS
            },
            **{
                f"naive_plays_{h}d": pa.array(
                    frame[naive_column(h)].to_numpy(dtype=np.int64), pa.int64()
                )
                for h in HORIZONS
            },
            "model_name": pa.array([record.name] * n, pa.string()),
            "model_version": pa.array([record.version] * n, pa.string()),
            "feature_date": pa.array([day] * n, pa.date32()),
            "run_id": pa.array([run_id] * n, pa.string()),
            "scored_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        }
    )
    stage = f"{warehouse.partition_name(TABLE, day)}_stage"
    with warehouse.connect(target) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse.lock_key(stage),))
        warehouse.create_day_stage(conn, TABLE, stage, "dt", day)
        warehouse.copy_arrow(conn, stage, table, table.column_names)
        warehouse.swap_day_partition(conn, TABLE, stage, day)
        seconds = time.perf_counter() - started
        conn.execute(
            "INSERT INTO scores.scoring_runs (run_id, dt, model_name, model_version, status,"
            " detail, rows, seconds, finished_at) VALUES (%s, %s, %s, %s, 'scored', %s, %s,"
            " %s, now()) ON CONFLICT (run_id, dt, model_name) DO UPDATE SET"
            " model_version = excluded.model_version, status = excluded.status,"
            " detail = excluded.detail, rows = excluded.rows, seconds = excluded.seconds,"
            " finished_at = excluded.finished_at",
            (
                run_id,
                day,
                MODEL_NAME,
                record.version,
                f"{n} tracks forecast for 1, 7 and 30 days ({model.kind})",
                n,
                seconds,
            ),
        )
    log.info("scored popularity for %d tracks of %s in %.2f s", n, day, seconds)
    return {
        "day": day.isoformat(),
        "tracks": n,
        "model_version": record.version,
        "chosen": {str(h): c for h, c in model.chosen.items()},
        "seconds": round(time.perf_counter() - started, 2),
    }
