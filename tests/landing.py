"""Hand-made landing days for tests: small, explicit rows that follow (or break) the contract.

Independent of the simulator, so ingestion tests do not depend on it.
"""

from __future__ import annotations

import csv
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ml_tasks import contract

DAY = date(2026, 11, 5)

#: Every table ingestion writes (checksummed by the idempotency and bad-input tests).
INGEST_TABLES = (
    "raw.listening_events",
    "raw.listening_events_key_runs",
    "raw.subscription_events",
    "raw.subscription_events_key_runs",
    "raw.user_versions",
    "raw.users",
    "raw.track_versions",
    "raw.tracks",
    "raw.ingest_log",
    "quarantine.rejected_rows",
)


def ts(day: date, hour: int = 12, minute: int = 0) -> str:
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00Z"


def good_user(user_id: int, day: date = DAY) -> dict:
    return {
        "user_id": user_id,
        "signup_date": (day - timedelta(days=100)).isoformat(),
        "country": "SE",
        "birth_year": 1990,
        "gender": None,
        "acquisition_channel": "organic",
    }


def good_track(track_id: str, day: date = DAY) -> dict:
    return {
        "track_id": track_id,
        "title": f"Song {track_id}",
        "artist_id": "a1",
        "album_id": None,
        "release_date": "2020-01-01",
        "duration_ms": 200_000,
        "genre": "rock",
        "explicit": False,
        "preview_path": f"audio/{track_id}.wav",
    }


def good_play(
    event_id: str, user_id: int = 1, track_id: str = "t1", day: date = DAY, hour: int = 12
) -> dict:
    return {
        "event_id": event_id,
        "user_id": user_id,
        "track_id": track_id,
        "played_at": ts(day, hour),
        "ms_played": 180_000,
        "track_duration_ms": 200_000,
        "skipped": False,
        "context_type": "playlist",
        "device_type": "mobile",
        "shared": False,
        "liked": True,
    }


def good_sub(event_id: str, user_id: int = 1, day: date = DAY) -> dict:
    return {
        "event_id": event_id,
        "user_id": user_id,
        "event_at": ts(day, 9),
        "event_type": "renewal",
        "plan": "premium_individual",
        "amount": "10.99",
        "currency": "EUR",
        "auto_renew": True,
    }


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def write_csv(path: Path, dataset: str, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(contract.dataset(dataset).column_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row.get(c)) for c in columns])
    return path


_PARQUET_TYPES = {
    contract.Kind.STRING: pa.string(),
    contract.Kind.INT16: pa.int16(),
    contract.Kind.INT32: pa.int32(),
    contract.Kind.INT64: pa.int64(),
    contract.Kind.BOOL: pa.bool_(),
    contract.Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    contract.Kind.DATE: pa.date32(),
    contract.Kind.DECIMAL: pa.float64(),
}


def write_parquet(path: Path, dataset: str, rows: list[dict]) -> Path:
    ds = contract.dataset(dataset)
    arrays = {}
    for col in ds.columns:
        values = [r.get(col.name) for r in rows]
        if col.kind is contract.Kind.TIMESTAMP:
            values = [
                datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None for v in values
            ]
        elif col.kind is contract.Kind.DATE:
            values = [date.fromisoformat(v) if v else None for v in values]
        elif col.kind is contract.Kind.DECIMAL:
            values = [float(v) if v is not None else None for v in values]
        arrays[col.name] = pa.array(values, _PARQUET_TYPES[col.kind])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(arrays), path)
    return path


def folder(root: Path, dataset: str, day: date = DAY) -> Path:
    return root / dataset / f"dt={day.isoformat()}"


def write_day(
    root: Path,
    day: date = DAY,
    *,
    users=None,
    tracks=None,
    plays=None,
    subs=None,
    fmt: str = "csv",
    success: bool = True,
) -> Path:
    """Write one landing day; defaults make a small valid day."""
    users = [good_user(i, day) for i in (1, 2, 3)] if users is None else users
    tracks = [good_track(t, day) for t in ("t1", "t2")] if tracks is None else tracks
    plays = (
        [
            good_play(f"e{day:%m%d}-{i}", 1 + i % 3, "t1" if i % 2 else "t2", day, i % 24)
            for i in range(20)
        ]
        if plays is None
        else plays
    )
    subs = [good_sub(f"s{day:%m%d}-1", 1, day)] if subs is None else subs
    writer = write_csv if fmt == "csv" else write_parquet
    for name, rows in (
        ("users", users),
        ("tracks", tracks),
        ("listening_events", plays),
        ("subscription_events", subs),
    ):
        target = folder(root, name, day)
        target.mkdir(parents=True, exist_ok=True)
        writer(target / f"part-000.{fmt}", name, rows)
        if success:
            (target / contract.SUCCESS_MARKER).touch()
    return root
