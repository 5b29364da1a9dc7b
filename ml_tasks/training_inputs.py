"""What a training run reads, as one fingerprint: retraining unchanged inputs is a no-op.

A training run of a model family for day D reads its configuration and the warehouse as of
the end of D: raw days (labels, catalogue), feature days (and whether they passed
validation, which the gate asks), and the audio features. The fingerprint hashes the
configuration with the latest ingest, build and validation of every day up to D and the
state of ``features.track_audio``. Models are trained with fixed seeds, so a second run
with the same fingerprint would register the same model again and, tying the champion,
promote it: a re-run of ``retrain_nightly`` for a day (a retry, a backfill) would churn
champions. Instead the trainers return the model already registered for the fingerprint
(``ml.model_registry.metrics->>'inputs_sha256'``). Anything upstream that changed (a
re-ingested or rebuilt day, a new validation, new audio, another configuration) changes
the fingerprint and trains anew.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import date, datetime

from ml_tasks import registry, warehouse

log = logging.getLogger(__name__)

METRICS_KEY = "inputs_sha256"


def fingerprint(dsn: str, family: str, day: date, config: object) -> str:
    """sha256 of the configuration and every input layer's state up to the end of ``day``."""
    digest = hashlib.sha256()
    digest.update(f"{family}|{day.isoformat()}|{config!r}".encode())
    with warehouse.connect(dsn) as conn:
        for query in (
            "SELECT dt, max(finished_at) FROM raw.ingest_runs WHERE dt <= %(day)s"
            " GROUP BY dt ORDER BY dt",
            "SELECT table_name, dt, max(built_at) FROM features.build_log WHERE dt <= %(day)s"
            " GROUP BY table_name, dt ORDER BY table_name, dt",
            "SELECT suite, dt, max(validated_at) FROM monitoring.validation_results"
            " WHERE dt <= %(day)s GROUP BY suite, dt ORDER BY suite, dt",
            "SELECT count(*), max(extracted_at) FROM features.track_audio",
        ):
            for row in conn.execute(query, {"day": day}):
                digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def already_trained(dsn: str, family: str, inputs: str) -> registry.ModelRecord | None:
    """The newest model of ``family`` registered for exactly these inputs, if any."""
    with warehouse.connect(dsn) as conn:
        row = conn.execute(
            "SELECT version FROM ml.model_registry WHERE model_name = %s"
            " AND metrics->>%s = %s ORDER BY trained_at DESC LIMIT 1",
            (family, METRICS_KEY, inputs),
        ).fetchone()
    return registry.get(family, row[0], dsn=dsn) if row else None


def reuse(
    dsn: str, family: str, inputs: str, *, run_id: str, day: date, started_at: datetime
) -> dict | None:
    """If a model was trained on these inputs, record this run as reusing it and return
    the trainers' summary for it; else None (train)."""
    record = already_trained(dsn, family, inputs)
    if record is None:
        return None
    log.info(
        "%s for %s: inputs unchanged since version %s (%s); not retraining",
        family,
        day,
        record.version,
        record.status,
    )
    registry.record_training_run(
        dsn,
        family,
        run_id,
        day,
        started_at,
        status="succeeded",
        finished_at=datetime.now(started_at.tzinfo),
        version=record.version,
        seconds=0.0,
    )
    return {
        "day": day.isoformat(),
        "version": record.version,
        "status": record.status,
        "reused": True,
        "inputs_sha256": inputs,
        "gate": record.gate_report,
        "metrics": {k: v for k, v in record.metrics.items() if k != METRICS_KEY},
    }


def remember(dsn: str, family: str, version: str, inputs: str) -> None:
    """Note on a newly registered model the inputs it was trained on."""
    with warehouse.connect(dsn) as conn:
        conn.execute(
            "UPDATE ml.model_registry SET metrics = metrics || jsonb_build_object(%s::text,"
            " %s::text) WHERE model_name = %s AND version = %s",
            (METRICS_KEY, inputs, family, version),
        )


def train_unless_unchanged(
    dsn: str,
    family: str,
    day: date,
    config: object,
    train: Callable[[], dict],
    *,
    run_id: str,
    started: float,
    started_at: datetime,
) -> dict:
    """The trainers' shared run: reuse the model trained on the same inputs, else record
    the run as running, call ``train`` (it registers a model and returns its summary) and
    note its inputs; a failure is recorded on the run with its error, then raised."""
    inputs = fingerprint(dsn, family, day, config)
    reused = reuse(dsn, family, inputs, run_id=run_id, day=day, started_at=started_at)
    if reused is not None:
        return reused
    registry.record_training_run(dsn, family, run_id, day, started_at, status="running")
    try:
        result = train()
        remember(dsn, family, result["version"], inputs)
        return result
    except Exception as exc:
        registry.record_training_run(
            dsn,
            family,
            run_id,
            day,
            started_at,
            status="failed",
            finished_at=datetime.now(started_at.tzinfo),
            error=f"{type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - started,
        )
        raise
