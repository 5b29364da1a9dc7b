"""Audio feature extraction throughput next to the bare decode of the same files.

Writes ``--clips`` preview clips the way the simulator does (mono 16-bit WAV, ``--seconds``
long, 16 kHz, the eight genres in turn), then times, over the same files (page cache warm):

- the decode floor: ``soundfile.read`` of every file, one process and all cores
  (a process pool over chunks of files, as extraction uses);
- ``librosa.load`` (decode + resample to 22.05 kHz), all cores;
- ``ml_tasks.audio`` extraction (hash, decode, resample, every feature, log-mel cache),
  one process and all cores.

Prints files/s for each and the ratio of extraction to the floor as JSON.

Usage: ``python bench/audio_bench.py [--clips 400] [--seconds 2] [--workers N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml_tasks import audio
from ml_tasks.simulate.audio import synthesize, track_rng, write_clip
from ml_tasks.simulate.catalogue import GENRES


def make_clips(folder: Path, n: int, seconds: float, rate: int = 16_000) -> list[Path]:
    paths = []
    for i in range(n):
        path = folder / f"t{i:06d}.wav"
        write_clip(path, synthesize(i % len(GENRES), track_rng(99, i), seconds, rate), rate)
        paths.append(path)
    return paths


def _sf_read(paths: list[str]) -> int:
    import soundfile as sf

    return sum(len(sf.read(p, dtype="float32")[0]) for p in paths)


def _librosa_load(paths: list[str]) -> int:
    import librosa
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return sum(len(librosa.load(p, sr=audio.TARGET_SR)[0]) for p in paths)


def _cpu() -> float:
    """CPU seconds used so far by this process and its reaped children."""
    import resource

    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


CPU: dict[str, float] = {}


def _timed(name: str, func, *args) -> float:
    cpu = _cpu()
    wall = func(*args)
    CPU[name] = _cpu() - cpu
    return wall


def _pool(func, paths: list[Path], workers: int, chunk: int = 16) -> float:
    """Wall seconds to run ``func`` over chunks of ``paths`` on ``workers`` processes."""
    import multiprocessing as mp

    chunks = [[str(p) for p in paths[i : i + chunk]] for i in range(0, len(paths), chunk)]
    started = time.perf_counter()
    if workers == 1:
        for c in chunks:
            func(c)
    else:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            list(pool.map(func, chunks))
    return time.perf_counter() - started


def _extract(paths: list[Path], workers: int, cache: Path) -> float:
    items = [audio.Item(track_id=p.stem, preview_path=p.name, path=str(p)) for p in paths]
    started = time.perf_counter()
    out = audio.process_items(items, workers=workers, cache=cache)
    seconds = time.perf_counter() - started
    bad = [r for r in out if r["status"] != "extracted"]
    if bad:
        raise RuntimeError(f"{len(bad)} clips not extracted: {bad[:3]}")
    return seconds


def run(clips: int, seconds: float, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="audio-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        paths = make_clips(root / "audio", clips, seconds)
        made = time.perf_counter() - t0
        _sf_read([str(p) for p in paths])  # page cache warm for everyone
        audio.warm_up()  # imports and numba kernels compiled once, as in a real run
        n = workers
        timings = {
            "soundfile_read_1_process": _timed(
                "soundfile_read_1_process", _pool, _sf_read, paths, 1
            ),
            f"soundfile_read_{n}_processes": _timed(
                f"soundfile_read_{n}_processes", _pool, _sf_read, paths, n
            ),
            f"librosa_load_{n}_processes": _timed(
                f"librosa_load_{n}_processes", _pool, _librosa_load, paths, n
            ),
            "extraction_1_process": _timed(
                "extraction_1_process", _extract, paths, 1, root / "cache1"
            ),
            f"extraction_{n}_processes": _timed(
                f"extraction_{n}_processes", _extract, paths, n, root / "cacheN"
            ),
        }
    rates = {k: round(clips / v, 1) for k, v in timings.items()}
    floor = timings[f"soundfile_read_{workers}_processes"]
    extraction = timings[f"extraction_{workers}_processes"]
    return {
        "clips": clips,
        "clip_seconds": seconds,
        "workers": workers,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "made_clips_seconds": round(made, 1),
        "seconds": {k: round(v, 3) for k, v in timings.items()},
        "files_per_second": rates,
        # contention-proof: files per CPU-second (wall figures depend on who else runs)
        "files_per_cpu_second": {k: round(clips / v, 1) for k, v in CPU.items() if v > 0},
        "extraction_vs_bare_decode": round(extraction / floor, 1),
        "extraction_vs_librosa_load": round(
            extraction / timings[f"librosa_load_{workers}_processes"], 2
        ),
        "parallel_speedup_extraction": round(timings["extraction_1_process"] / extraction, 2),
        "audio_seconds_per_wall_second": round(clips * seconds / extraction, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=audio.default_workers())
    args = parser.parse_args()
    np.seterr(all="ignore")
    print(json.dumps(run(args.clips, args.seconds, args.workers), indent=2))


if __name__ == "__main__":
    main()
