"""The track catalogue: ids, artists, albums, titles, true genres and popularity over time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.simulate.ids import hex_strings, key_from, mix32
from ml_tasks.simulate.tables import dates_from_ordinals

GENRES = ("rock", "pop", "hiphop", "electronic", "jazz", "classical", "country", "metal")
#: Share of the catalogue per genre (same order as GENRES).
GENRE_SHARE = np.array([0.16, 0.22, 0.16, 0.14, 0.07, 0.07, 0.09, 0.09])
#: Typical track length in seconds per genre.
_GENRE_SECONDS = np.array([230, 205, 215, 300, 320, 380, 210, 280], dtype=float)
_GENRE_EXPLICIT = np.array([0.12, 0.12, 0.45, 0.10, 0.02, 0.0, 0.03, 0.30])
UNLABELLED_SHARE = 0.25
MIN_DURATION_MS = 90_000
MAX_DURATION_MS = 420_000

#: Index ranges of the 32-bit track-id hash: the catalogue, then ids that are never in it.
UNKNOWN_TRACK_BASE = 2**31 + 2**30
BAD_TRACK_BASE = 2**31

_WORDS_A = (
    "Midnight",
    "Golden",
    "Broken",
    "Electric",
    "Silent",
    "Wild",
    "Neon",
    "Blue",
    "Lonely",
    "Burning",
    "Velvet",
    "Crystal",
    "Summer",
    "Winter",
    "Distant",
    "Hollow",
    "Sweet",
    "Dark",
    "Café",
    "Rainy",
    "Endless",
    "Paper",
    "Straße",
    "Fading",
    "Last",
    "Little",
    "Northern",
)
_WORDS_B = (
    "Heart",
    "Road",
    "Dreams",
    "Lights",
    "River",
    "Fire",
    "Sky",
    "Nights",
    "Echoes",
    "Rain",
    "City",
    "Waves",
    "Stars",
    "Shadows",
    "Highway",
    "Garden",
    "Memories",
    "Storm",
    "Ñandú",
    "東京",
    "Love, Again",
    '"Live"',
    "Horizon",
    "Ghosts",
    "Sunrise",
    "Thunder",
    "Letters",
)


@dataclass
class Catalogue:
    """All tracks of the world (index = position in these arrays)."""

    track_id: pa.StringArray
    title: pa.StringArray
    artist_id: pa.StringArray
    album_id: pa.Array
    release_day: np.ndarray  # days relative to the start day (negative: before)
    duration_ms: np.ndarray  # int32
    genre: np.ndarray  # int8 index into GENRES (the TRUE genre)
    labelled: np.ndarray  # bool: the catalogue knows the genre
    explicit: np.ndarray  # bool
    has_preview: np.ndarray  # bool
    appeal: np.ndarray  # float64 base appeal
    fraud_pool: np.ndarray  # indices of tracks promoted by stream-farming bots
    id_key: int

    @property
    def n(self) -> int:
        return len(self.release_day)

    def weights(self, day: int) -> np.ndarray:
        """Current popularity of every track on ``day`` (0 for tracks not yet released)."""
        age = (day - self.release_day).astype(float)
        released = age >= 0
        a = np.maximum(age, 0.0) + 1.0
        tau, k = 6.0, 1.5
        hype = (a / tau) ** k * np.exp(k * (1.0 - a / tau))
        ageing = (1.0 + np.maximum(age, 0.0) / 365.0) ** -0.3
        return np.where(released, self.appeal * (0.25 + 3.0 * hype) * ageing, 0.0)

    def unknown_ids(self, rng: np.random.Generator, size: int) -> pa.StringArray:
        """Track ids that are not in the catalogue."""
        idx = UNKNOWN_TRACK_BASE + rng.integers(0, 2**30, size=size)
        return hex_strings("t", mix32(idx, self.id_key), 8)

    def bad_ids(self, counter: np.ndarray) -> pa.StringArray:
        """Fresh track ids for contract-breaking copies (never in the catalogue)."""
        return hex_strings("t", mix32(BAD_TRACK_BASE + counter, self.id_key), 8)

    def preview_paths(self, idx: np.ndarray) -> pa.Array:
        """``audio/<track_id>.wav`` for tracks with a preview, else null."""
        ids = self.track_id.take(pa.array(idx, type=pa.int64()))
        paths = pc.binary_join_element_wise(pa.scalar("audio/"), ids, pa.scalar(".wav"), "")
        return pc.if_else(pa.array(self.has_preview[idx]), paths, pa.scalar(None, pa.string()))

    def table(self, idx: np.ndarray, start_ordinal: int) -> dict[str, pa.Array]:
        """Typed columns of the tracks rows for ``idx``."""
        take = pa.array(idx, type=pa.int64())
        genre_text = pa.array(GENRES).take(pa.array(self.genre[idx].astype(np.int64)))
        genre = pc.if_else(pa.array(self.labelled[idx]), genre_text, pa.scalar(None, pa.string()))
        return {
            "track_id": self.track_id.take(take),
            "title": self.title.take(take),
            "artist_id": self.artist_id.take(take),
            "album_id": self.album_id.take(take),
            "release_date": dates_from_ordinals(start_ordinal + self.release_day[idx]),
            "duration_ms": pa.array(self.duration_ms[idx], type=pa.int32()),
            "genre": genre,
            "explicit": pa.array(self.explicit[idx]),
            "preview_path": self.preview_paths(idx),
        }


def build_catalogue(
    rng: np.random.Generator, tracks: int, days: int, preview_share: float
) -> Catalogue:
    """Draw the catalogue: most tracks exist before the start, some are released during it."""
    n = tracks
    id_key = key_from(rng)
    n_artists = max(1, n // 6)
    artist_genre = rng.choice(len(GENRES), size=n_artists, p=GENRE_SHARE / GENRE_SHARE.sum())
    artist_pop = rng.lognormal(0.0, 0.8, n_artists)
    artist_weight = rng.pareto(1.5, n_artists) + 1.0
    artist = rng.choice(n_artists, size=n, p=artist_weight / artist_weight.sum())
    genre = np.where(
        rng.random(n) < 0.85, artist_genre[artist], rng.choice(len(GENRES), size=n)
    ).astype(np.int8)

    new_share = min(0.2, 0.004 * days) if days > 1 else 0.0
    in_window = rng.random(n) < new_share
    in_window[0] = False  # at least one track exists before the start
    recent = rng.random(n) < 0.5
    old_day = np.where(recent, -rng.integers(1, 731, n), -rng.integers(731, 25 * 365, n))
    release_day = np.where(in_window, rng.integers(0, max(days, 1), n), old_day).astype(np.int32)

    secs = _GENRE_SECONDS[genre] * rng.lognormal(0.0, 0.2, n)
    duration_ms = np.clip((secs * 1000).astype(np.int64), MIN_DURATION_MS, MAX_DURATION_MS)
    duration_ms = duration_ms.astype(np.int32)
    explicit = rng.random(n) < _GENRE_EXPLICIT[genre]
    labelled = rng.random(n) >= UNLABELLED_SHARE
    has_preview = rng.random(n) < preview_share
    appeal = rng.lognormal(0.0, 1.0, n) * artist_pop[artist]
    hits = in_window & (rng.random(n) < 0.1)
    appeal = np.where(hits, appeal * 8.0, appeal)

    track_id = hex_strings("t", mix32(np.arange(n), id_key), 8)
    artist_id = hex_strings("a", mix32(np.arange(n_artists), id_key ^ 0x5A5A5A5A), 8)
    artist_id = artist_id.take(pa.array(artist, type=pa.int64()))
    album_key = artist.astype(np.int64) * 64 + (release_day.astype(np.int64) // 180) % 64
    album_id = hex_strings("al", mix32(album_key, id_key ^ 0x0F0F0F0F), 8)
    single = rng.random(n) < 0.25
    album_id = pc.if_else(pa.array(single), pa.scalar(None, pa.string()), album_id)
    words_a = pa.array(_WORDS_A).take(pa.array(rng.integers(0, len(_WORDS_A), n)))
    words_b = pa.array(_WORDS_B).take(pa.array(rng.integers(0, len(_WORDS_B), n)))
    title = pc.binary_join_element_wise(words_a, words_b, " ")

    old = np.flatnonzero(release_day <= 0)
    n_pool = int(np.clip(n // 200, 3, 30))
    cheap = old[np.argsort(appeal[old], kind="stable")][: max(1, len(old) // 2)]
    fraud_pool = np.sort(rng.choice(cheap, size=min(n_pool, len(cheap)), replace=False))

    return Catalogue(
        track_id=track_id,
        title=title,
        artist_id=artist_id,
        album_id=album_id,
        release_day=release_day,
        duration_ms=duration_ms,
        genre=genre,
        labelled=labelled,
        explicit=explicit,
        has_preview=has_preview,
        appeal=appeal,
        fraud_pool=fraud_pool,
        id_key=id_key,
    )
