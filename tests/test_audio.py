"""Audio features from real preview clips: extraction, quarantine, idempotency, formats.

A small simulated world WITH previews (every track has a clip) is simulated, ingested and
extracted once per test run and kept as a template database; each test works on a copy
(database and, when it changes files, the audio folder).
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
import soundfile as sf
from psycopg import sql

from ml_tasks import audio, warehouse

AUDIO_START = date(2026, 10, 1)
AUDIO_DAYS = 2
AUDIO_TRACKS = 240


@dataclass(frozen=True)
class AudioWorld:
    template: str
    landing: Path
    artifacts: Path
    start: date
    days: int
    extracted: tuple[dict, ...]

    @property
    def last_day(self) -> date:
        return self.start + timedelta(days=self.days - 1)


_CACHE: dict[str, AudioWorld] = {}


def build_audio_world(pg_admin: str, template_db: str, base: Path) -> AudioWorld:
    """Simulate (previews for every track, 1.5 s clips), ingest, and extract every day."""
    from ml_tasks.ingest import ingest_day
    from ml_tasks.simulate import simulate_world

    landing = base / "landing"
    artifacts = base / "artifacts"
    simulate_world(
        landing,
        users=40,
        tracks=AUDIO_TRACKS,
        start=AUDIO_START,
        days=AUDIO_DAYS,
        seed=23,
        preview_share=1.0,
        clip_seconds=1.5,
    )
    name = f"encore_audio_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    dsn = warehouse.with_database(pg_admin, name)
    results = []
    for offset in range(AUDIO_DAYS):
        day = AUDIO_START + timedelta(days=offset)
        ingest_day(day, run_id="world", dsn=dsn, landing_root=landing)
        results.append(
            audio.extract_day(
                day, run_id="world", dsn=dsn, landing_root=landing, artifacts=artifacts
            )
        )
    return AudioWorld(name, landing, artifacts, AUDIO_START, AUDIO_DAYS, tuple(results))


def shared_audio_world(request, pg_admin: str, template_db: str, tmp_path_factory) -> AudioWorld:
    """The audio world, built once per test run for every module that asks for it."""
    if "world" not in _CACHE:
        world = build_audio_world(pg_admin, template_db, tmp_path_factory.mktemp("audioworld"))
        _CACHE["world"] = world

        def drop() -> None:
            with psycopg.connect(pg_admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(world.template)
                    )
                )

        request.session.config.add_cleanup(drop)
    return _CACHE["world"]


def copy_world(pg_admin: str, world: AudioWorld) -> str:
    name = f"encore_a_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(world.template)
            )
        )
    return warehouse.with_database(pg_admin, name)


def drop_db(pg_admin: str, dsn: str) -> None:
    name = dsn.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def audio_world(request, pg_admin, template_db, tmp_path_factory) -> AudioWorld:
    return shared_audio_world(request, pg_admin, template_db, tmp_path_factory)


@pytest.fixture
def audio_dsn(pg_admin, audio_world, monkeypatch):
    dsn = copy_world(pg_admin, audio_world)
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    yield dsn
    drop_db(pg_admin, dsn)


@pytest.fixture
def private_landing(audio_world, tmp_path) -> Path:
    """A copy of the world's audio folder that a test may damage."""
    landing = tmp_path / "landing"
    shutil.copytree(audio_world.landing / "audio", landing / "audio")
    return landing


def _count(dsn: str, query: str, params=()) -> int:
    with warehouse.connect(dsn) as conn:
        return conn.execute(query, params).fetchone()[0]


# --------------------------------------------------------------------------- extraction


def test_every_good_preview_gets_a_row(audio_world, audio_dsn) -> None:
    first, second = audio_world.extracted
    assert first["rejected"] == 0 and second["rejected"] == 0
    assert first["extracted"] > 0.9 * AUDIO_TRACKS
    with warehouse.connect(audio_dsn) as conn:
        previews = conn.execute(
            "SELECT count(*) FROM raw.tracks WHERE preview_path IS NOT NULL"
        ).fetchone()[0]
        missing = conn.execute(
            "SELECT count(*) FROM raw.tracks t LEFT JOIN features.track_audio a USING (track_id)"
            " WHERE t.preview_path IS NOT NULL AND a.track_id IS NULL"
        ).fetchone()[0]
        frame = audio.read_features(conn)
    assert previews == len(frame) == first["extracted"] + second["extracted"]
    assert missing == 0
    assert set(audio.TABLE_COLUMNS) <= set(frame.columns)
    assert frame[list(audio.FEATURE_COLUMNS)].notna().all().all()
    assert (frame["format"] == "WAV").all()
    assert frame["duration_s"].between(1.49, 1.51).all()
    assert (frame["sample_rate"] == 16000).all()
    assert frame["spectral_centroid_mean"].between(50, 11_025).all()
    assert frame["tempo"].between(30, 320).all()
    chroma = frame[[f"chroma_mean_{i}" for i in range(1, 13)]]
    assert chroma.to_numpy().min() >= 0 and chroma.to_numpy().max() <= 1
    assert frame["file_sha256"].str.fullmatch("[0-9a-f]{64}").all()
    # the log-mel cache for the CNN holds every extracted clip
    cache = audio.logmel_cache_dir(audio_world.artifacts)
    spec = audio.load_logmel(cache, frame["file_sha256"].iloc[0])
    assert spec is not None and spec.shape[0] == audio.LOGMEL_BANDS


def test_rerun_is_idempotent_and_decodes_nothing(audio_world, audio_dsn) -> None:
    tables = ("features.track_audio", "quarantine.audio_rejects")
    with warehouse.connect(audio_dsn) as conn:
        before = [warehouse.table_checksum(conn, t) for t in tables]
    again = audio.extract_day(
        audio_world.last_day,
        run_id="again",
        dsn=audio_dsn,
        landing_root=audio_world.landing,
        artifacts=audio_world.artifacts,
    )
    assert again["extracted"] == 0 and again["rejected"] == 0
    assert again["unchanged"] == again["candidates"] == AUDIO_TRACKS
    with warehouse.connect(audio_dsn) as conn:
        after = [warehouse.table_checksum(conn, t) for t in tables]
    assert after == before


def _write_wav(path: Path, y: np.ndarray, rate: int = 16000) -> None:
    sf.write(str(path), y, rate, subtype="PCM_16", format="WAV")


def test_bad_clips_are_quarantined_with_their_reason(audio_world, audio_dsn, private_landing):
    day = audio_world.last_day
    with warehouse.connect(audio_dsn) as conn:
        rows = conn.execute(
            "SELECT track_id, preview_path FROM features.track_audio ORDER BY track_id LIMIT 6"
        ).fetchall()
    (garbage, _), (silent, _), (short, _), (gone, _), (trunc, _), (fine, _) = rows
    paths = {t: private_landing / p for t, p in rows}
    paths[garbage].write_bytes(b"this is not a wav file\n" * 200)
    _write_wav(paths[silent], np.zeros(24_000, dtype=np.float32))
    good, rate = sf.read(str(paths[short]), dtype="float32")
    _write_wav(paths[short], good[: int(0.05 * rate)], rate)
    paths[gone].unlink()
    whole = paths[trunc].read_bytes()
    paths[trunc].write_bytes(whole[: len(whole) // 2])

    result = audio.extract_day(
        day,
        run_id="bad",
        dsn=audio_dsn,
        landing_root=private_landing,
        artifacts=audio_world.artifacts,
        workers=2,
    )
    assert result["rejected"] == 5, result
    assert result["reasons"] == {"corrupt": 2, "missing": 1, "silent": 1, "too_short": 1}
    with warehouse.connect(audio_dsn) as conn:
        rejects = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT track_id, reason, detail, file_sha256, dt, run_id"
                " FROM quarantine.audio_rejects"
            )
        }
        left = {
            r[0]
            for r in conn.execute(
                "SELECT track_id FROM features.track_audio WHERE track_id = ANY(%s)",
                ([t for t, _ in rows],),
            )
        }
    assert rejects[garbage][0] == "corrupt" and "not decodable" in rejects[garbage][1]
    assert rejects[silent][0] == "silent" and "RMS" in rejects[silent][1]
    assert rejects[short][0] == "too_short" and "0.050 s" in rejects[short][1]
    assert rejects[gone][0] == "missing" and rejects[gone][2] is None
    assert rejects[trunc][0] == "corrupt" and "truncated" in rejects[trunc][1]
    assert all(r[3] == day and r[4] == "bad" for r in rejects.values())
    # features.track_audio describes current clips only; the good one is untouched
    assert left == {fine}

    # a re-run refuses the same clips again, and only them, with the same state
    with warehouse.connect(audio_dsn) as conn:
        before = warehouse.table_checksum(
            conn, "quarantine.audio_rejects", ["run_id", "rejected_at"]
        )
    again = audio.extract_day(
        day,
        run_id="bad2",
        dsn=audio_dsn,
        landing_root=private_landing,
        workers=1,
        artifacts=audio_world.artifacts,
    )
    assert again["reasons"] == result["reasons"] and again["extracted"] == 0
    with warehouse.connect(audio_dsn) as conn:
        after = warehouse.table_checksum(
            conn, "quarantine.audio_rejects", ["run_id", "rejected_at"]
        )
    assert after == before

    # the next day does not retry unchanged refused clips; a repaired clip comes back
    shutil.copy(audio_world.landing / dict(rows)[silent], paths[silent])
    next_day = audio.extract_day(
        day + timedelta(days=1),
        run_id="next",
        dsn=audio_dsn,
        landing_root=private_landing,
        artifacts=audio_world.artifacts,
    )
    assert next_day["extracted"] == 1 and next_day["rejected"] == 0, next_day
    assert (
        _count(
            audio_dsn, "SELECT count(*) FROM features.track_audio WHERE track_id = %s", (silent,)
        )
        == 1
    )


def test_formats_flac_ogg_mp3_decode_like_wav(audio_world, audio_dsn, private_landing) -> None:
    """Re-encoded clips under new preview paths are re-extracted, with close features."""
    day = audio_world.last_day
    with warehouse.connect(audio_dsn) as conn:
        rows = conn.execute(
            "SELECT track_id, preview_path FROM features.track_audio ORDER BY track_id"
            " OFFSET 10 LIMIT 3"
        ).fetchall()
        wav = audio.read_features(conn, [t for t, _ in rows]).set_index("track_id")
    formats = {"flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}
    with warehouse.connect(audio_dsn) as conn, conn.transaction():
        for (track_id, rel), ext in zip(rows, formats, strict=True):
            y, rate = sf.read(str(private_landing / rel), dtype="float32")
            new_rel = rel.replace(".wav", f".{ext}")
            sf.write(str(private_landing / new_rel), y, rate, format=ext.upper())
            conn.execute(
                "UPDATE raw.track_versions SET preview_path = %s WHERE track_id = %s",
                (new_rel, track_id),
            )
    result = audio.extract_day(
        day,
        run_id="fmt",
        dsn=audio_dsn,
        landing_root=private_landing,
        artifacts=audio_world.artifacts,
    )
    assert result["extracted"] == 3 and result["rejected"] == 0, result
    with warehouse.connect(audio_dsn) as conn:
        got = audio.read_features(conn, [t for t, _ in rows]).set_index("track_id")
    for (track_id, _), ext in zip(rows, formats, strict=True):
        assert got.loc[track_id, "format"] == formats[ext]
        assert got.loc[track_id, "preview_path"].endswith(f".{ext}")
        # lossless FLAC matches; lossy codecs stay close on the robust features
        tol = 0.02 if ext == "flac" else 0.12
        for col in ("mfcc_mean_1", "spectral_centroid_mean", "rms_mean"):
            a, b = wav.loc[track_id, col], got.loc[track_id, col]
            assert abs(a - b) <= tol * max(abs(a), 1.0), (ext, col, a, b)


def test_unsafe_path_and_no_crash_on_odd_files(tmp_path) -> None:
    """Directly through the worker code: odd inputs become rejects, never exceptions."""
    landing = tmp_path / "landing"
    (landing / "audio").mkdir(parents=True)
    (landing / "audio" / "empty.wav").write_bytes(b"")
    (landing / "audio" / "dir.wav").mkdir()
    stereo = np.stack([np.sin(np.linspace(0, 2000, 16000)), np.zeros(16000)], axis=1) * 0.5
    sf.write(str(landing / "audio" / "stereo.flac"), stereo.astype(np.float32), 16000)
    rows = [
        ("t1", "../../etc/passwd", False, None, None, None, False, None, None),
        ("t2", "audio/empty.wav", True, None, None, None, False, None, None),
        ("t3", "audio/dir.wav", True, None, None, None, False, None, None),
        ("t4", "audio/stereo.flac", True, None, None, None, False, None, None),
    ]
    items = audio.plan_items(rows, landing)
    out = {r["track_id"]: r for r in audio.process_items(items, workers=1)}
    assert out["t1"]["reason"] == "unsafe_path"
    assert out["t2"]["reason"] == "corrupt"
    assert out["t3"]["status"] == "rejected"
    assert out["t4"]["status"] == "extracted" and out["t4"]["channels"] == 2
    assert out["t4"]["format"] == "FLAC"
