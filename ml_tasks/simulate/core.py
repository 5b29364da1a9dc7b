"""``simulate_world``: write a landing area (per DATA_CONTRACT.md) plus its ground truth."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from ml_tasks.contract import (
    CONTRACT_VERSION,
    LISTENING_EVENTS,
    SUBSCRIPTION_EVENTS,
    SUCCESS_MARKER,
    TRACKS,
    USERS,
    Dataset,
)
from ml_tasks.simulate.audio import synthesize, track_rng, write_clip
from ml_tasks.simulate.bad_rows import BadRowInjector, Injected
from ml_tasks.simulate.catalogue import Catalogue, build_catalogue
from ml_tasks.simulate.ids import hex_strings, key_from, mix64
from ml_tasks.simulate.population import BAD_USER_BASE, build_population
from ml_tasks.simulate.tables import CSV, PARQUET, write_table
from ml_tasks.simulate.truth import TruthRecorder
from ml_tasks.simulate.world import World

log = logging.getLogger(__name__)

#: A day's listening events are split into files of at most this many rows.
MAX_ROWS_PER_FILE = 200_000
#: Counters of contract-breaking copies start here, so their ids never meet a real one.
BAD_ID_BASE = 2**62
AUDIO_DIR = "audio"


@dataclass
class SimulationSummary:
    """What a simulation wrote."""

    out: Path
    truth_out: Path
    start: dt.date
    days: int
    seed: int
    users: int
    tracks: int
    bots: int
    rows: dict[str, int]  # rows written per dataset, bad rows included
    bad_rows: dict[str, int]  # contract-breaking rows injected per dataset
    unknown_references: int  # listening rows naming an unknown user or track (not bad)
    files_written: int  # landing data files (Parquet + CSV)
    success_markers: int
    audio_files: int
    elapsed_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    bad_kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    burn_in_days: int = 0  # days simulated before ``start`` and not written

    @property
    def total_bad_rows(self) -> int:
        return sum(self.bad_rows.values())

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly dict."""
        d = asdict(self)
        d["out"] = str(self.out)
        d["truth_out"] = str(self.truth_out)
        d["start"] = self.start.isoformat()
        d["end"] = (self.start + dt.timedelta(days=self.days - 1)).isoformat()
        d["total_bad_rows"] = self.total_bad_rows
        d["contract_version"] = CONTRACT_VERSION
        return d


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def _check_share(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and low <= v <= high):
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return v


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _clean_folder(folder: Path) -> None:
    """Remove a previous run's files of one dataset-day (marker first)."""
    marker = folder / SUCCESS_MARKER
    if marker.exists():
        marker.unlink()
    for pattern in ("part-*.parquet", "part-*.csv", ".part-*.tmp"):
        for stale in sorted(folder.glob(pattern)):
            stale.unlink()


def _parts(n: int, ds: Dataset) -> list[tuple[int, int]]:
    """(first row, row count) of each file of a dataset-day."""
    if ds is not LISTENING_EVENTS or n <= MAX_ROWS_PER_FILE:
        return [(0, n)]
    k = math.ceil(n / MAX_ROWS_PER_FILE)
    size = math.ceil(n / k)
    return [(i * size, min(size, n - i * size)) for i in range(k)]


class _Writer:
    """Writes dataset-day folders and keeps the counts."""

    def __init__(self, out: Path, truth: TruthRecorder) -> None:
        self.out = out
        self.truth = truth
        self.rows: dict[str, int] = {
            d.name: 0 for d in (USERS, TRACKS, LISTENING_EVENTS, SUBSCRIPTION_EVENTS)
        }
        self.bad: dict[str, int] = dict.fromkeys(self.rows, 0)
        self.files = 0
        self.markers = 0

    def folder(self, ds: Dataset, day: dt.date) -> Path:
        return self.out / ds.name / f"dt={day.isoformat()}"

    def deliver(self, ds: Dataset, day: dt.date, fmt: str, inj: Injected) -> list[str]:
        """Write the files of one dataset-day (the marker comes separately, last)."""
        folder = self.folder(ds, day)
        folder.mkdir(parents=True, exist_ok=True)
        _clean_folder(folder)
        parts = _parts(inj.table.num_rows, ds)
        names = []
        for i, (first, count) in enumerate(parts):
            name = f"part-{i:03d}.{fmt}"
            write_table(inj.table.slice(first, count), folder / name, fmt)
            names.append(f"{ds.name}/dt={day.isoformat()}/{name}")
        self.files += len(parts)
        self.rows[ds.name] += inj.table.num_rows
        self.bad[ds.name] += len(inj.rows)
        # where each bad row went
        starts = np.array([p[0] for p in parts])
        part_of = np.searchsorted(starts, inj.rows, side="right") - 1
        for p, name in enumerate(names):
            sel = np.flatnonzero(part_of == p)
            self.truth.add_bad(
                ds.name,
                day,
                name,
                (inj.rows[sel] - starts[p]).tolist(),
                [inj.keys[i] for i in sel],
                [inj.kinds[i] for i in sel],
            )
        return names

    def mark(self, ds: Dataset, day: dt.date) -> None:
        (self.folder(ds, day) / SUCCESS_MARKER).write_bytes(b"")
        self.markers += 1


def simulate_world(
    out: Path,
    *,
    users: int,
    tracks: int,
    start: dt.date,
    days: int,
    seed: int,
    bad_rate: float = 0.002,
    truth_out: Path | None = None,
    preview_share: float = 0.5,
    bot_share: float = 0.01,
    clip_seconds: float = 2.0,
    sample_rate: int = 16000,
    burn_in_days: int = 0,
) -> SimulationSummary:
    """Simulate ``days`` days of a streaming service from ``start`` into the landing area ``out``.

    Writes ``out/<dataset>/dt=YYYY-MM-DD/part-NNN.parquet|csv`` (Parquet on even day
    indexes, CSV on odd ones) with a ``_SUCCESS`` marker per dataset-day, and
    ``out/audio/<track_id>.wav`` preview clips; the ground truth goes to ``truth_out``
    (default: a sibling folder ``<out>_truth``). The same arguments give byte-identical
    landing files.

    ``burn_in_days``: the world runs that many days before ``start`` with nothing written.
    Accounts that exist on the first simulated day start from a drawn state, not one their
    own history produced (a fading user's engagement has not faded yet, payers likely to
    fail a payment have not been filtered out), so the first months drift towards the
    world's settled rates: the paid churn hazard of a 5,000-user world rises by 85 % and
    falls back by half over its first six months. After a burn-in the landing data starts
    in that settled state, as a service running for years would hand it over. 0 (the
    default) writes from the first simulated day, as before.
    """
    users = _check_int("users", users, 1)
    tracks = _check_int("tracks", tracks, 1, 2**30)
    days = _check_int("days", days, 1, 3660)
    seed = _check_int("seed", seed, 0)
    bad_rate = _check_share("bad_rate", bad_rate, 0.0, 0.5)
    preview_share = _check_share("preview_share", preview_share, 0.0, 1.0)
    bot_share = _check_share("bot_share", bot_share, 0.0, 0.5)
    clip_seconds = _check_share("clip_seconds", clip_seconds, 0.05, 60.0)
    sample_rate = _check_int("sample_rate", sample_rate, 1000, 192_000)
    burn_in_days = _check_int("burn_in_days", burn_in_days, 0, 3660)
    if isinstance(start, dt.datetime):
        start = start.date()
    if not isinstance(start, dt.date):
        raise ValueError(f"start must be a date, got {start!r}")
    out = Path(out).resolve()
    truth_out = (
        Path(truth_out).resolve() if truth_out is not None else out.parent / f"{out.name}_truth"
    )
    if _is_within(truth_out, out) or _is_within(out, truth_out):
        raise ValueError(
            f"truth_out ({truth_out}) must be a folder outside the landing area ({out})"
        )

    if out.is_dir() and any(out.iterdir()):
        log.warning(
            "%s already holds files: the day folders and clips of this run replace "
            "theirs, anything else there is left as it is",
            out,
        )
    t_begin = time.perf_counter()
    timings = dict.fromkeys(("world", "bad_rows", "write", "audio", "truth"), 0.0)
    streams = np.random.SeedSequence(seed).spawn(7)
    rng_cat, rng_pop, rng_dyn, rng_plays, rng_bad, rng_ids = (
        np.random.default_rng(s) for s in streams[:6]
    )
    audio_entropy = int(streams[6].generate_state(1)[0])
    # The world's day 0 is burn_in_days before start: days 0 .. burn_in_days - 1 are
    # simulated and dropped, the day burn_in_days is the first landing day.
    span = burn_in_days + days
    world_start = start - dt.timedelta(days=burn_in_days)
    cat = build_catalogue(rng_cat, tracks, span, preview_share)
    pop = build_population(rng_pop, users, span, world_start.year, bot_share, cat.fraud_pool)
    event_key, sub_key = key_from(rng_ids), key_from(rng_ids)
    world = World(
        pop, cat, world_start, rng_dyn, rng_plays, event_key, sub_key, first_day=burn_in_days
    )

    def fresh_event(prefix: str, key: int):
        def make(i: int) -> str:
            value = np.array([BAD_ID_BASE + i], dtype=np.uint64)
            return hex_strings(prefix, mix64(value, key), 16)[0].as_py()

        return make

    injector = BadRowInjector(
        bad_rate,
        rng_bad,
        {
            LISTENING_EVENTS.name: fresh_event("e", event_key),
            SUBSCRIPTION_EVENTS.name: fresh_event("s", sub_key),
            USERS.name: lambda i: BAD_USER_BASE + i,
            TRACKS.name: lambda i: cat.bad_ids(np.array([i]))[0].as_py(),
        },
    )
    truth = TruthRecorder(pop, cat, start, days, offset=burn_in_days)
    writer = _Writer(out, truth)
    audio_files = 0
    unknown_refs = 0
    previous_ids: pa.Array | None = None
    log.info(
        "simulating %d users, %d tracks, %d days from %s (seed %d, %d days of burn-in) into %s",
        users,
        tracks,
        days,
        start,
        seed,
        burn_in_days,
        out,
    )

    for t in range(span):
        tick = time.perf_counter()
        res = world.step(t)
        tock = time.perf_counter()
        timings["world"] += tock - tick
        if t < burn_in_days:
            continue
        truth.add_day(t - burn_in_days, res)
        fmt = PARQUET if (t - burn_in_days) % 2 == 0 else CSV
        day = res.day

        delivered: dict[str, Injected] = {}
        for ds, table in (
            (USERS, res.users),
            (TRACKS, res.tracks),
            (LISTENING_EVENTS, res.listening),
            (SUBSCRIPTION_EVENTS, res.subscription),
        ):
            prev = previous_ids if ds is LISTENING_EVENTS else None
            delivered[ds.name] = injector.inject(ds, table, day, fmt, prev)
        previous_ids = res.listening.column("event_id").combine_chunks()
        tick = time.perf_counter()
        timings["bad_rows"] += tick - tock

        writer.deliver(USERS, day, fmt, delivered[USERS.name])
        writer.mark(USERS, day)
        writer.deliver(TRACKS, day, fmt, delivered[TRACKS.name])
        tock = time.perf_counter()
        audio_files += _write_audio(
            out, cat, res.track_idx, audio_entropy, clip_seconds, sample_rate
        )
        tick = time.perf_counter()
        timings["audio"] += tick - tock
        writer.mark(TRACKS, day)
        inj = delivered[LISTENING_EVENTS.name]
        names = writer.deliver(LISTENING_EVENTS, day, fmt, inj)
        writer.mark(LISTENING_EVENTS, day)
        unknown_refs += _record_unknown(truth, day, names, res.unknown_refs, inj)
        writer.deliver(SUBSCRIPTION_EVENTS, day, fmt, delivered[SUBSCRIPTION_EVENTS.name])
        writer.mark(SUBSCRIPTION_EVENTS, day)
        timings["write"] += time.perf_counter() - tick
        log.info(
            "%s (%s): %d plays, %d subscription events, %d users, %d tracks rows",
            day,
            fmt,
            res.listening.num_rows,
            res.subscription.num_rows,
            res.users.num_rows,
            res.tracks.num_rows,
        )

    tick = time.perf_counter()
    truth.write(truth_out)
    summary = SimulationSummary(
        out=out,
        truth_out=truth_out,
        start=start,
        days=days,
        seed=seed,
        users=users,
        tracks=tracks,
        bots=int(pop.is_bot.sum()),
        rows=writer.rows,
        bad_rows=writer.bad,
        unknown_references=unknown_refs,
        files_written=writer.files,
        success_markers=writer.markers,
        audio_files=audio_files,
        bad_kinds=truth.bad_kind_counts(),
        burn_in_days=burn_in_days,
    )
    timings["truth"] = time.perf_counter() - tick
    summary.elapsed_seconds = round(time.perf_counter() - t_begin, 3)
    summary.timings = {k: round(v, 3) for k, v in timings.items()}
    (truth_out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    log.info(
        "wrote %d listening events (%d bad rows in all) in %.1f s to %s",
        summary.rows[LISTENING_EVENTS.name],
        summary.total_bad_rows,
        summary.elapsed_seconds,
        out,
    )
    return summary


def _write_audio(
    out: Path, cat: Catalogue, idx: np.ndarray, entropy: int, seconds: float, sample_rate: int
) -> int:
    """Write the preview clips of the tracks delivered today; return how many."""
    with_clip = idx[cat.has_preview[idx]]
    ids = cat.track_id.take(pa.array(with_clip, type=pa.int64())).to_pylist()
    folder = out / AUDIO_DIR
    for i, track_id in zip(with_clip.tolist(), ids, strict=True):
        clip = synthesize(int(cat.genre[i]), track_rng(entropy, i), seconds, sample_rate)
        write_clip(folder / f"{track_id}.wav", clip, sample_rate)
    return len(with_clip)


def _record_unknown(
    truth: TruthRecorder, day: dt.date, names: list[str], unknown: pa.Table, inj: Injected
) -> int:
    """Record where the unknown-reference rows of a day ended up."""
    if unknown.num_rows == 0:
        return 0
    rows = inj.good_rows[unknown.column("row").to_numpy()]
    parts = _parts(inj.table.num_rows, LISTENING_EVENTS)
    starts = np.array([p[0] for p in parts])
    part_of = np.searchsorted(starts, rows, side="right") - 1
    ids = unknown.column("event_id").to_pylist()
    kinds = unknown.column("kind").to_pylist()
    for p, name in enumerate(names):
        sel = np.flatnonzero(part_of == p)
        truth.add_unknown(
            day,
            name,
            (rows[sel] - starts[p]).tolist(),
            [ids[i] for i in sel],
            [kinds[i] for i in sel],
        )
    return unknown.num_rows
