"""Preview clips whose sound depends on the track's true genre.

Each genre has a tempo with percussion, a pitch register and scale, a harmonic profile,
note envelopes, a noise level and a distortion amount, so spectral features (MFCC, centroid,
zero-crossing rate, chroma, tempo) separate the genres. Each track varies its key, tempo,
melody and loudness. Synthesis is vectorized numpy; clips are mono 16-bit PCM WAV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ml_tasks.simulate.catalogue import GENRES


@dataclass(frozen=True)
class GenreSound:
    """How one genre sounds."""

    bpm: float
    root_midi: int
    scale: tuple[int, ...]
    harmonics: tuple[float, ...]
    notes_per_beat: int
    attack_s: float
    decay_s: float
    distortion: float
    noise: float
    kick: float
    snare: float
    hat: float
    bass: float
    vibrato: float = 0.0
    swing: float = 0.0
    second_voice: int = 0  # semitones above the melody (0: none)


_SAW = tuple(1.0 / h for h in range(1, 7))
SOUNDS: dict[str, GenreSound] = {
    "rock": GenreSound(
        120, 52, (0, 3, 5, 7, 10, 12), _SAW[:6], 2, 0.005, 0.25, 4.0, 0.03, 0.6, 0.5, 0.2, 0.3
    ),
    "pop": GenreSound(
        116,
        62,
        (0, 2, 4, 5, 7, 9, 11, 12),
        (1.0, 0.5, 0.25),
        2,
        0.01,
        0.3,
        0.0,
        0.004,
        0.5,
        0.3,
        0.15,
        0.2,
        second_voice=4,
    ),
    "hiphop": GenreSound(
        88,
        45,
        (0, 3, 5, 7, 8, 10),
        (1.0, 0.3),
        1,
        0.01,
        0.35,
        0.0,
        0.005,
        1.0,
        0.45,
        0.3,
        0.8,
        swing=0.12,
    ),
    "electronic": GenreSound(
        128, 57, (0, 3, 7, 10, 12, 15), _SAW[:6], 4, 0.002, 0.08, 1.5, 0.01, 0.9, 0.1, 0.45, 0.6
    ),
    "jazz": GenreSound(
        140,
        55,
        (0, 2, 3, 5, 7, 9, 10),
        (1.0, 0.2, 0.1),
        2,
        0.02,
        0.4,
        0.0,
        0.01,
        0.15,
        0.1,
        0.25,
        0.4,
        swing=0.33,
        second_voice=10,
    ),
    "classical": GenreSound(
        70,
        67,
        (0, 2, 4, 5, 7, 9, 11, 12),
        (1.0, 0.4, 0.3, 0.2),
        1,
        0.12,
        1.2,
        0.0,
        0.001,
        0.0,
        0.0,
        0.0,
        0.0,
        vibrato=0.006,
        second_voice=7,
    ),
    "country": GenreSound(
        104,
        55,
        (0, 2, 4, 7, 9, 12),
        (1.0, 0.6, 0.4, 0.3, 0.2),
        2,
        0.002,
        0.12,
        0.0,
        0.005,
        0.4,
        0.35,
        0.1,
        0.3,
    ),
    "metal": GenreSound(
        175, 40, (0, 1, 3, 5, 7, 8), _SAW[:6], 4, 0.002, 0.1, 10.0, 0.08, 1.0, 0.6, 0.3, 0.5
    ),
}
if tuple(SOUNDS) != GENRES:  # pragma: no cover - keeps the two lists in step
    raise RuntimeError("SOUNDS must describe every genre, in GENRES order")
_PROFILES = tuple(SOUNDS.values())


def _phase(freq: np.ndarray, sample_rate: int) -> np.ndarray:
    """Running phase (radians, wrapped, float32) of a time-varying frequency."""
    cycles = np.cumsum(freq) / sample_rate
    cycles -= np.floor(cycles)
    return (cycles * (2 * np.pi)).astype(np.float32)


def _midi_hz(m: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=float) - 69.0) / 12.0)


def _add_hits(mix: np.ndarray, sound: np.ndarray, starts: np.ndarray) -> None:
    """Add a short percussion sound at each start sample (cut at the clip's end)."""
    n = len(mix)
    for st in starts.tolist():
        if st >= n:
            break
        m = min(len(sound), n - st)
        mix[st : st + m] += sound[:m]


def synthesize(
    genre: int, rng: np.random.Generator, seconds: float, sample_rate: int
) -> np.ndarray:
    """A clip of ``seconds`` for a track of genre index ``genre``, float32 in [-1, 1]."""
    s = _PROFILES[genre]
    f32 = np.float32
    sr = sample_rate
    n = max(1, round(seconds * sr))
    beat = max(4, round(sr * 60.0 / (s.bpm * (1.0 + rng.normal(0.0, 0.04)))))  # samples
    root = s.root_midi + int(rng.integers(-4, 5))

    # melody: notes of a genre scale; every second note starts late with swing
    note = max(2, beat // s.notes_per_beat)
    n_notes = n // note + 2
    starts = np.arange(n_notes) * note
    starts[1::2] += round(s.swing * note)
    starts[0] = 0
    degrees = np.asarray(s.scale)[rng.integers(0, len(s.scale), n_notes)]
    octave = np.where(rng.random(n_notes) < 0.15, 12, 0)
    note_hz = _midi_hz(root + degrees + octave).astype(f32)
    lengths = np.diff(np.append(starts, max(n, starts[-1] + 1)))
    k = np.repeat(np.arange(n_notes), lengths)[:n]
    freq = note_hz[k]
    t = np.arange(n, dtype=f32) / f32(sr)
    if s.vibrato:
        freq = freq * (f32(1) + f32(s.vibrato) * np.sin(f32(2 * np.pi * 5.5) * t))
    longest = int(lengths.max())
    tn = np.arange(longest, dtype=f32) / f32(sr)
    shape = (f32(1) - np.exp(-tn / f32(s.attack_s))) * np.exp(-tn / f32(s.decay_s))
    env = shape[np.arange(n) - starts[k]]
    phase = _phase(freq, sr)
    top_hz = float(_midi_hz(root + max(s.scale) + 12))
    tone = np.zeros(n, dtype=f32)
    for h, amp in enumerate(s.harmonics, start=1):
        if top_hz * h >= sr / 2:  # keep harmonics below Nyquist
            break
        tone += f32(amp) * np.sin(f32(h) * phase)
    if s.second_voice:
        tone += f32(0.6) * np.sin(_phase(freq * f32(2.0 ** (s.second_voice / 12.0)), sr))
    mix = tone * env

    # rhythm section: short sounds placed on the beat grid
    beats = np.arange(0, n + beat, beat)
    tb = np.arange(beat, dtype=f32) / f32(sr)
    if s.bass:
        bass_hz = float(_midi_hz(root - 24))
        bass = np.sin(f32(2 * np.pi * bass_hz) * tb) * np.exp(-tb / (f32(beat / sr) * f32(0.6)))
        _add_hits(mix, f32(s.bass) * bass, beats)
    noise = (rng.random(n, dtype=f32) - f32(0.5)) * f32(3.4)  # unit-variance-ish white noise
    if s.kick:
        step = beat // (2 if s.notes_per_beat >= 4 and s.distortion > 5 else 1)
        tk = tb[: min(beat, sr // 4)]
        sweep = f32(2 * np.pi) * (f32(50) + f32(120) * np.exp(-tk * f32(40))) * tk
        _add_hits(mix, f32(s.kick) * np.sin(sweep) * np.exp(-tk * f32(25)), np.arange(0, n, step))
    if s.snare:
        ts = tb[: min(beat, sr // 4)]
        burst = (rng.random(len(ts), dtype=f32) - f32(0.5)) * f32(3.4)
        snare = burst * np.exp(-ts * f32(25))
        _add_hits(mix, f32(s.snare) * snare, beats[1::2])
    if s.hat:
        half = beat // 2
        th = tb[: max(1, min(half, sr // 16))]
        hiss = np.diff(rng.random(len(th) + 1, dtype=f32)) * f32(2.4)  # high-passed noise
        _add_hits(
            mix, f32(s.hat * 0.5) * hiss * np.exp(-th * f32(90)), np.arange(half // 2, n, half)
        )
    mix += f32(s.noise * 4.0) * noise
    if s.distortion:
        mix = np.tanh(f32(s.distortion) * mix) / f32(np.tanh(s.distortion))
    peak = float(np.max(np.abs(mix))) or 1.0
    return (mix * f32(rng.uniform(0.5, 0.9) / peak)).astype(f32)


def write_clip(path: Path, clip: np.ndarray, sample_rate: int) -> None:
    """Write a mono 16-bit PCM WAV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(clip, -1.0, 1.0) * 32767).astype(np.int16)
    sf.write(str(path), pcm, sample_rate, subtype="PCM_16", format="WAV")


def track_rng(entropy: int, track_index: int) -> np.random.Generator:
    """The random stream of one track's clip (independent of which other clips are made)."""
    return np.random.default_rng(np.random.SeedSequence([entropy, track_index]))
