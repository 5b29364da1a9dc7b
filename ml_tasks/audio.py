"""Audio features of preview clips: decode, librosa summary features, quarantine, upsert.

For day D, the tracks to look at are the catalogue as of D (the latest version delivered on
or before D) with a ``preview_path``. A track is (re)extracted when it was delivered on D
and its clip is not already extracted, or when its clip's sha256, its path or the extractor
version differs from what ``features.track_audio`` (or, for a clip refused before, the
latest ``quarantine.audio_rejects`` row) recorded. Every clip is hashed each run (cheap next
to decoding); only new or changed clips are decoded.

Decoding is soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, MP3 and the other formats it
knows), mixed to mono, the first ``max_seconds`` only, resampled to 22.05 kHz. Features:
13 MFCC means and deviations, 12 chroma means, spectral centroid, bandwidth and 85 %
roll-off (mean and deviation), zero-crossing rate and RMS (mean and deviation), and tempo.
A 64-band log-mel spectrogram of each clip is cached under
``$ENCORE_ARTIFACTS/audio/logmel/`` (by file sha256) for the genre CNN.

A clip that is missing, not decodable (not audio, truncated), silent (RMS below
``silence_rms``) or too short (below ``min_seconds``) becomes a row of
``quarantine.audio_rejects`` with the reason: never a crash, and its earlier features (if
any) are removed so ``features.track_audio`` always describes the current clip.

Files are processed on all cores by a process pool, in chunks of files. The day's results
are written in one transaction (rejects of the day replaced, features upserted), so a
re-run leaves the same state: unchanged clips are not touched, refused ones are refused
again with the same reason.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from ml_tasks import warehouse
from ml_tasks.settings import get_settings

log = logging.getLogger(__name__)

#: Bumped whenever the features change meaning: a new version re-extracts every clip.
EXTRACTOR_VERSION = "librosa-v1-sr22050-fft2048-hop512"
TARGET_SR = 22_050
N_FFT = 2048
HOP = 512
N_MFCC = 13
MFCC_MELS = 128
LOGMEL_BANDS = 64
LOCK_NAME = "encore.audio_features"

REASONS = ("missing", "corrupt", "silent", "too_short", "unsafe_path")

FEATURE_COLUMNS: tuple[str, ...] = (
    *(f"mfcc_mean_{i}" for i in range(1, N_MFCC + 1)),
    *(f"mfcc_std_{i}" for i in range(1, N_MFCC + 1)),
    *(f"chroma_mean_{i}" for i in range(1, 13)),
    "spectral_centroid_mean",
    "spectral_centroid_std",
    "spectral_bandwidth_mean",
    "spectral_bandwidth_std",
    "spectral_rolloff_mean",
    "spectral_rolloff_std",
    "zcr_mean",
    "zcr_std",
    "rms_mean",
    "rms_std",
    "tempo",
)
FILE_COLUMNS = (
    "track_id",
    "preview_path",
    "file_sha256",
    "file_bytes",
    "format",
    "duration_s",
    "sample_rate",
    "channels",
)
TABLE_COLUMNS = (
    *FILE_COLUMNS,
    *FEATURE_COLUMNS,
    "extractor_version",
    "dt",
    "run_id",
    "extracted_at",
)


@dataclass(frozen=True)
class AudioConfig:
    """Limits of what counts as a usable clip, and how work is split."""

    min_seconds: float = 0.5
    #: RMS of the whole clip (full scale = 1) below which it is silent: -60 dBFS.
    silence_rms: float = 1e-3
    #: Only the first ``max_seconds`` of a clip are decoded (previews are ~30 s).
    max_seconds: float = 30.0
    #: Files per task sent to a worker process.
    chunk_files: int = 16


class AudioReject(Exception):
    """A clip that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------- one clip


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wav_truncation(path: Path) -> str | None:
    """For a RIFF/WAVE file whose ``data`` chunk declares more bytes than the file holds,
    what is missing (libsndfile silently decodes what is there); otherwise None."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):  # streamed: size unknown
                    return None
                held = size - offset - 8
                if held < chunk_size:
                    return f"data chunk declares {chunk_size} bytes, the file holds {held}"
                return None
            offset += 8 + chunk_size + (chunk_size & 1)
    return None


def decode(path: Path, config: AudioConfig = AudioConfig()) -> tuple[np.ndarray, int, dict]:
    """Decode a clip to mono float32 at its own rate: (samples, rate, file info).

    Raises :class:`AudioReject` ('corrupt') for anything libsndfile cannot read, a file
    with no audio frames, a decode that stops before the frames the header declares, or
    non-finite samples.
    """
    import soundfile as sf

    try:
        info = sf.info(str(path))
        limit = int(config.max_seconds * info.samplerate) if info.samplerate > 0 else -1
        frames = -1 if info.frames <= 0 or info.frames <= limit else limit
        data, rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile's errors are RuntimeError/LibsndfileError/...
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AudioReject("corrupt", f"not decodable audio: {text}") from None
    meta = {
        "format": str(info.format),
        "sample_rate": int(rate),
        "channels": int(info.channels),
        "declared_frames": int(info.frames),
    }
    if data.shape[0] == 0:
        raise AudioReject("corrupt", "no audio frames (empty or truncated file)")
    if meta["format"] in ("WAV", "WAVEX") and (missing := wav_truncation(path)):
        raise AudioReject("corrupt", f"truncated: {missing}")
    expected = info.frames if frames < 0 else frames
    if expected > 0 and data.shape[0] < expected:
        raise AudioReject(
            "corrupt", f"truncated: decoded {data.shape[0]} of {expected} declared frames"
        )
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioReject("corrupt", "non-finite samples")
    return np.ascontiguousarray(mono), int(rate), meta


def check_usable(y: np.ndarray, rate: int, config: AudioConfig = AudioConfig()) -> float:
    """Refuse a too-short or silent clip; returns its duration in seconds."""
    duration = len(y) / rate
    if duration < config.min_seconds:
        raise AudioReject(
            "too_short", f"{duration:.3f} s long, the minimum is {config.min_seconds} s"
        )
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    if rms < config.silence_rms:
        level = 20 * np.log10(rms) if rms > 0 else float("-inf")
        raise AudioReject(
            "silent", f"RMS {rms:.2e} ({level:.1f} dBFS) below {config.silence_rms:.0e}"
        )
    return duration


def resample(y: np.ndarray, rate: int) -> np.ndarray:
    """``y`` at :data:`TARGET_SR` (soxr, high quality)."""
    if rate == TARGET_SR:
        return y
    import librosa

    return librosa.resample(y, orig_sr=rate, target_sr=TARGET_SR, res_type="soxr_hq")


@functools.lru_cache(maxsize=8)
def _filters(kind: str, bands: int) -> np.ndarray:
    """Mel or chroma filter banks at :data:`TARGET_SR` / :data:`N_FFT`, built once."""
    import librosa

    if kind == "mel":
        return librosa.filters.mel(sr=TARGET_SR, n_fft=N_FFT, n_mels=bands).astype(np.float32)
    return librosa.filters.chroma(sr=TARGET_SR, n_fft=N_FFT, tuning=0.0, n_chroma=bands).astype(
        np.float32
    )


def _logmel(power: np.ndarray) -> np.ndarray:
    """64-band log-mel (dB, float16, clipped to [-100, 60]) of a power spectrogram."""
    mel = _filters("mel", LOGMEL_BANDS) @ power
    return np.clip(10.0 * np.log10(np.maximum(mel, 1e-10)), -100.0, 60.0).astype(np.float16)


def summary_features(y: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Summary features of a mono clip at :data:`TARGET_SR`, and its 64-band log-mel
    spectrogram (dB, float16, bands x frames).

    One STFT feeds every spectral feature; the mel and chroma projections are the same as
    librosa's ``melspectrogram`` / ``chroma_stft(tuning=0)`` with cached filter banks and
    a BLAS product (librosa's einsum and per-call filter construction cost 3x more here).
    """
    import librosa

    sr = TARGET_SR
    mag = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))
    power = mag**2
    mel_db = librosa.power_to_db(_filters("mel", MFCC_MELS) @ power)
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=N_MFCC)
    chroma = librosa.util.normalize(_filters("chroma", 12) @ power, norm=np.inf, axis=-2)
    centroid = librosa.feature.spectral_centroid(S=mag, sr=sr)[0]
    bandwidth = librosa.feature.spectral_bandwidth(S=mag, sr=sr)[0]
    rolloff = librosa.feature.spectral_rolloff(S=mag, sr=sr)[0]
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP)[0]
    rms = librosa.feature.rms(S=mag, frame_length=N_FFT)[0]
    onset = librosa.onset.onset_strength(S=mel_db, sr=sr)
    tempo = librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=HOP)
    values: dict[str, float] = {}
    for i in range(N_MFCC):
        values[f"mfcc_mean_{i + 1}"] = float(mfcc[i].mean())
    for i in range(N_MFCC):
        values[f"mfcc_std_{i + 1}"] = float(mfcc[i].std())
    for i in range(12):
        values[f"chroma_mean_{i + 1}"] = float(chroma[i].mean())
    for name, series in (
        ("spectral_centroid", centroid),
        ("spectral_bandwidth", bandwidth),
        ("spectral_rolloff", rolloff),
        ("zcr", zcr),
        ("rms", rms),
    ):
        values[f"{name}_mean"] = float(series.mean())
        values[f"{name}_std"] = float(series.std())
    values["tempo"] = float(tempo[0]) if len(tempo) else 0.0
    if not all(np.isfinite(v) for v in values.values()):
        raise AudioReject("corrupt", "features are not finite")
    return values, _logmel(power)


def logmel_of(y: np.ndarray, rate: int) -> np.ndarray:
    """The 64-band log-mel spectrogram of a decoded clip (same as extraction caches)."""
    import librosa

    power = np.abs(librosa.stft(resample(y, rate), n_fft=N_FFT, hop_length=HOP)) ** 2
    return _logmel(power)


def analyse_file(path: Path, config: AudioConfig = AudioConfig()) -> dict:
    """Decode, check and featurize one clip. Raises :class:`AudioReject`."""
    y, rate, meta = decode(path, config)
    duration = check_usable(y, rate, config)
    values, logmel = summary_features(resample(y, rate))
    return {
        "format": meta["format"],
        "duration_s": duration,
        "sample_rate": meta["sample_rate"],
        "channels": meta["channels"],
        **values,
        "_logmel": logmel,
    }


# --------------------------------------------------------------------------- log-mel cache


def logmel_cache_dir(artifacts: Path | None = None) -> Path:
    return Path(artifacts or get_settings().artifacts) / "audio" / "logmel"


def logmel_path(cache: Path, sha: str) -> Path:
    return cache / sha[:2] / f"{sha}.npy"


def save_logmel(cache: Path, sha: str, logmel: np.ndarray) -> None:
    path = logmel_path(cache, sha)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, logmel)
    os.replace(tmp, path)


def load_logmel(cache: Path, sha: str) -> np.ndarray | None:
    path = logmel_path(cache, sha)
    try:
        return np.load(path)
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- work items


@dataclass(frozen=True)
class Item:
    """One clip to look at: where it is, and what state would make it 'unchanged'."""

    track_id: str
    preview_path: str
    path: str | None  # absolute path; None when preview_path leaves the landing root
    skip_sha: str | None = None  # the recorded clip: a file with this hash is unchanged
    skip_missing: bool = False  # recorded as missing, and still missing: unchanged


def _process(item: Item, config: AudioConfig, cache: str | None) -> dict:
    """Hash, compare with the recorded state, and if new or changed analyse one clip."""
    base = {"track_id": item.track_id, "preview_path": item.preview_path}
    if item.path is None:
        return {
            **base,
            "status": "rejected",
            "reason": "unsafe_path",
            "detail": "preview_path points outside the landing root",
            "file_sha256": None,
        }
    path = Path(item.path)
    try:
        sha = sha256_file(path)
        size = path.stat().st_size
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        if item.skip_missing:
            return {**base, "status": "unchanged"}
        return {
            **base,
            "status": "rejected",
            "reason": "missing",
            "detail": f"no file at {item.preview_path} under the landing root",
            "file_sha256": None,
        }
    except OSError as exc:
        return {
            **base,
            "status": "rejected",
            "reason": "corrupt",
            "detail": f"cannot read the file: {exc.strerror or exc}",
            "file_sha256": None,
        }
    if sha == item.skip_sha:
        return {**base, "status": "unchanged"}
    try:
        result = analyse_file(path, config)
    except AudioReject as rej:
        return {
            **base,
            "status": "rejected",
            "reason": rej.reason,
            "detail": rej.detail,
            "file_sha256": sha,
        }
    except Exception as exc:  # a decoder bug must not stop the day: quarantine the clip
        return {
            **base,
            "status": "rejected",
            "reason": "corrupt",
            "detail": f"extraction failed: {type(exc).__name__}: {exc}",
            "file_sha256": sha,
        }
    logmel = result.pop("_logmel")
    if cache is not None:
        try:
            save_logmel(Path(cache), sha, logmel)
        except OSError as exc:  # the cache is an optimisation only
            log.warning("cannot cache the log-mel of %s: %s", item.preview_path, exc)
    return {**base, "status": "extracted", "file_sha256": sha, "file_bytes": size, **result}


def _process_chunk(items: Sequence[Item], config: AudioConfig, cache: str | None) -> list[dict]:
    return [_process(item, config, cache) for item in items]


def _limit_threads() -> None:
    """One BLAS/OpenMP thread per worker process: the pool already uses every core, and
    OpenBLAS threads spinning on busy cores made one clip 7x slower (measured)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _process_chunk_limited(
    items: Sequence[Item], config: AudioConfig, cache: str | None
) -> list[dict]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _process_chunk(items, config, cache)


def warm_up() -> None:
    """Import librosa and compile its numba kernels once, before forking workers."""
    rng = np.random.default_rng(0)
    y = (rng.standard_normal(TARGET_SR) * 0.1).astype(np.float32)
    summary_features(y)
    resample(y[:16000], 16000)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def process_items(
    items: Sequence[Item],
    *,
    workers: int | None = None,
    config: AudioConfig = AudioConfig(),
    cache: Path | None = None,
) -> list[dict]:
    """Process clips on ``workers`` processes (default: every core), in chunks of files.

    Small batches (one chunk) and ``workers=1`` run in this process.
    """
    workers = max(1, workers or default_workers())
    cache_arg = str(cache) if cache is not None else None
    size = max(1, config.chunk_files)
    # Smaller chunks when there are few files, so every worker gets some.
    size = max(1, min(size, -(-len(items) // (workers * 2)) if items else size))
    chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
    if workers == 1 or len(chunks) <= 1:
        return _process_chunk_limited(list(items), config, cache_arg)
    import multiprocessing as mp

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        warm_up()  # forked workers inherit librosa imported and its kernels compiled
    methods = mp.get_all_start_methods()
    context = mp.get_context("fork" if "fork" in methods else None)
    out: list[dict] = []
    with ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)), mp_context=context, initializer=_limit_threads
    ) as pool:
        for part in pool.map(
            _process_chunk, chunks, [config] * len(chunks), [cache_arg] * len(chunks)
        ):
            out.extend(part)
    return out


# --------------------------------------------------------------------------- the day

CANDIDATES_SQL = """
WITH catalogue AS (
    SELECT DISTINCT ON (track_id) track_id, preview_path, dt
    FROM raw.track_versions WHERE dt <= %(day)s
    ORDER BY track_id, dt DESC
), last_reject AS (
    SELECT DISTINCT ON (track_id) track_id, preview_path, file_sha256
    FROM quarantine.audio_rejects WHERE dt <> %(day)s
    ORDER BY track_id, dt DESC
)
SELECT c.track_id, c.preview_path, c.dt = %(day)s AS delivered_today,
       a.preview_path AS done_path, a.file_sha256 AS done_sha,
       a.extractor_version AS done_version,
       r.track_id IS NOT NULL AS was_rejected, r.preview_path AS rejected_path,
       r.file_sha256 AS rejected_sha
FROM catalogue c
LEFT JOIN features.track_audio a USING (track_id)
LEFT JOIN last_reject r USING (track_id)
WHERE c.preview_path IS NOT NULL
ORDER BY c.track_id
"""

DROPPED_PREVIEW_SQL = """
SELECT v.track_id FROM raw.track_versions v JOIN features.track_audio a USING (track_id)
WHERE v.dt = %(day)s AND v.preview_path IS NULL
"""


def resolve_clip(landing_root: Path, preview_path: str) -> Path | None:
    """The clip's absolute path, or None if ``preview_path`` escapes the landing root."""
    root = landing_root.resolve()
    candidate = (root / preview_path).resolve()
    if not candidate.is_relative_to(root):
        return None
    return candidate


def plan_items(rows: Iterable[tuple], landing_root: Path) -> list[Item]:
    """Work items from candidate rows (see :data:`CANDIDATES_SQL`)."""
    items = []
    for (
        track_id,
        preview_path,
        delivered_today,
        done_path,
        done_sha,
        done_version,
        was_rejected,
        rejected_path,
        rejected_sha,
    ) in rows:
        skip_sha, skip_missing = None, False
        if done_sha is not None and done_path == preview_path and done_version == EXTRACTOR_VERSION:
            skip_sha = done_sha
        elif (
            done_sha is None
            and was_rejected
            and not delivered_today
            and rejected_path == preview_path
        ):
            skip_sha, skip_missing = rejected_sha, rejected_sha is None
        items.append(
            Item(
                track_id=track_id,
                preview_path=preview_path,
                path=str(p) if (p := resolve_clip(landing_root, preview_path)) else None,
                skip_sha=skip_sha,
                skip_missing=skip_missing,
            )
        )
    return items


def _features_table(rows: list[dict], day: date, run_id: str, now: datetime):
    import pyarrow as pa

    n = len(rows)
    cols: dict[str, pa.Array] = {
        "track_id": pa.array([r["track_id"] for r in rows], pa.string()),
        "preview_path": pa.array([r["preview_path"] for r in rows], pa.string()),
        "file_sha256": pa.array([r["file_sha256"] for r in rows], pa.string()),
        "file_bytes": pa.array([r["file_bytes"] for r in rows], pa.int64()),
        "format": pa.array([r["format"] for r in rows], pa.string()),
        "duration_s": pa.array([r["duration_s"] for r in rows], pa.float64()),
        "sample_rate": pa.array([r["sample_rate"] for r in rows], pa.int32()),
        "channels": pa.array([r["channels"] for r in rows], pa.int16()),
    }
    for c in FEATURE_COLUMNS:
        cols[c] = pa.array([r[c] for r in rows], pa.float64())
    cols["extractor_version"] = pa.array([EXTRACTOR_VERSION] * n, pa.string())
    cols["dt"] = pa.array([day] * n, pa.date32())
    cols["run_id"] = pa.array([run_id] * n, pa.string())
    cols["extracted_at"] = pa.array([now] * n, pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


def _rejects_table(rows: list[dict], day: date, run_id: str, now: datetime):
    import pyarrow as pa

    n = len(rows)
    return pa.table(
        {
            "dt": pa.array([day] * n, pa.date32()),
            "track_id": pa.array([r["track_id"] for r in rows], pa.string()),
            "preview_path": pa.array([r["preview_path"] for r in rows], pa.string()),
            "file_sha256": pa.array([r["file_sha256"] for r in rows], pa.string()),
            "reason": pa.array([r["reason"] for r in rows], pa.string()),
            "detail": pa.array([r["detail"] for r in rows], pa.string()),
            "run_id": pa.array([run_id] * n, pa.string()),
            "rejected_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        }
    )


_UPSERT = (
    "INSERT INTO features.track_audio SELECT * FROM pg_temp.track_audio_stage"
    " ON CONFLICT (track_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in TABLE_COLUMNS if c != "track_id")
)


def extract_day(
    day: date,
    *,
    run_id: str,
    dsn: str | None = None,
    landing_root: Path | None = None,
    workers: int | None = None,
    artifacts: Path | None = None,
    config: AudioConfig | None = None,
) -> dict:
    """Extract the audio features of day ``day``'s new or changed preview clips.

    Writes ``features.track_audio`` (upsert) and the day's ``quarantine.audio_rejects``
    in one transaction. Returns counts: candidates, extracted, unchanged, rejected (by
    reason), and the throughput.
    """
    started = time.perf_counter()
    config = config or AudioConfig()
    settings = get_settings()
    landing = Path(landing_root or settings.landing_root).resolve()
    cache = logmel_cache_dir(artifacts)
    target = warehouse.ensure_migrated(dsn)
    with warehouse.connect(target) as conn:
        rows = conn.execute(CANDIDATES_SQL, {"day": day}).fetchall()
    items = plan_items(rows, landing)
    n_workers = max(1, workers or default_workers())
    results = process_items(items, workers=n_workers, config=config, cache=cache)
    decode_seconds = time.perf_counter() - started

    extracted = [r for r in results if r["status"] == "extracted"]
    rejected = [r for r in results if r["status"] == "rejected"]
    unchanged = len(results) - len(extracted) - len(rejected)
    now = datetime.now(UTC)
    features = _features_table(extracted, day, run_id, now)
    rejects = _rejects_table(rejected, day, run_id, now)
    with warehouse.connect(target) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse.lock_key(LOCK_NAME),))
        conn.execute("DELETE FROM quarantine.audio_rejects WHERE dt = %s", (day,))
        if extracted:
            conn.execute(
                "CREATE TEMP TABLE track_audio_stage (LIKE features.track_audio) ON COMMIT DROP"
            )
            warehouse.copy_arrow(conn, "pg_temp.track_audio_stage", features, TABLE_COLUMNS)
            conn.execute(_UPSERT)
        dropped = [r[0] for r in conn.execute(DROPPED_PREVIEW_SQL, {"day": day}).fetchall()]
        gone = [r["track_id"] for r in rejected] + dropped
        if gone:
            conn.execute("DELETE FROM features.track_audio WHERE track_id = ANY(%s)", (gone,))
        if rejected:
            warehouse.copy_arrow(conn, "quarantine.audio_rejects", rejects, rejects.column_names)
    seconds = time.perf_counter() - started
    reasons = dict(sorted(Counter(r["reason"] for r in rejected).items()))
    decoded = len(extracted) + sum(1 for r in rejected if r.get("file_sha256"))
    summary = {
        "day": day.isoformat(),
        "candidates": len(items),
        "extracted": len(extracted),
        "unchanged": unchanged,
        "rejected": len(rejected),
        "reasons": reasons,
        "removed_features": len(dropped),
        "workers": n_workers,
        "seconds": round(seconds, 2),
        "clips_per_second": round(decoded / decode_seconds, 1) if decoded else None,
        "extractor_version": EXTRACTOR_VERSION,
    }
    log.info(
        "audio features for %s: %d candidates, %d extracted, %d unchanged, %d rejected %s"
        " on %d workers in %.1f s",
        day,
        len(items),
        len(extracted),
        unchanged,
        len(rejected),
        reasons,
        n_workers,
        seconds,
    )
    return summary


def read_features(conn, track_ids: Sequence[str] | None = None):
    """``features.track_audio`` rows (all, or of ``track_ids``) as a pandas frame."""
    from psycopg import sql

    query = sql.SQL("SELECT * FROM features.track_audio")
    params: tuple = ()
    if track_ids is not None:
        query = sql.SQL("SELECT * FROM features.track_audio WHERE track_id = ANY(%s)")
        params = (list(track_ids),)
    return warehouse.read_arrow(conn, query, params).to_pandas()
