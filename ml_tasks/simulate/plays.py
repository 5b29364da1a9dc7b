"""Listening sessions of one day, vectorized over all users at once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml_tasks.contract import CONTEXT_TYPES, DEVICE_TYPES
from ml_tasks.simulate.catalogue import GENRES, Catalogue
from ml_tasks.simulate.population import Population

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
#: Bots play just above the 30 s royalty threshold.
ROYALTY_MS = 30_000
BOT_PLAYS_PER_DAY = (300, 800)
_PLAYLIST = CONTEXT_TYPES.index("playlist")
_OTHER_CTX = CONTEXT_TYPES.index("other")
_GROUP_STRIDE = np.int64(10**11)  # larger than any ms span within one user's day


@dataclass
class Plays:
    """Plays of one day as parallel arrays (ms since the day's midnight)."""

    user: np.ndarray  # user index
    track: np.ndarray  # track index
    at_ms: np.ndarray
    ms_played: np.ndarray
    skipped: np.ndarray
    context: np.ndarray
    device: np.ndarray
    shared: np.ndarray
    liked: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    def select(self, mask: np.ndarray) -> Plays:
        return Plays(**{k: v[mask] for k, v in self.__dict__.items()})

    @staticmethod
    def concat(parts: list[Plays]) -> Plays:
        return Plays(
            **{k: np.concatenate([getattr(p, k) for p in parts]) for k in Plays.__annotations__}
        )


def choose_rows(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Categorical draw per row: index of the first cumulative probability above ``u``."""
    return (u[:, None] >= cum).sum(axis=1).astype(np.int8)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _group_exclusive_cumsum(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Within consecutive groups: the sum of the earlier values of the element's group.

    ``first[i]`` is the index of the first element of element ``i``'s group.
    """
    excl = np.cumsum(values) - values
    return excl - excl[first]


class TrackChooser:
    """Picks tracks of a genre in proportion to their current popularity."""

    def __init__(self, cat: Catalogue, day: int) -> None:
        w = cat.weights(day)
        self._by_genre: list[tuple[np.ndarray, np.ndarray]] = []
        glob = np.flatnonzero(w > 0)
        self._global = (glob, np.cumsum(w[glob]))
        for g in range(len(GENRES)):
            idx = np.flatnonzero((cat.genre == g) & (w > 0))
            self._by_genre.append((idx, np.cumsum(w[idx])) if len(idx) else self._global)

    def choose(self, genre: np.ndarray, u: np.ndarray) -> np.ndarray:
        out = np.empty(len(genre), dtype=np.int64)
        for g, (idx, cw) in enumerate(self._by_genre):
            sel = genre == g
            if not sel.any():
                continue
            pos = np.searchsorted(cw, u[sel] * cw[-1], side="right")
            out[sel] = idx[np.minimum(pos, len(idx) - 1)]
        return out


def normal_plays(
    rng: np.random.Generator,
    pop: Population,
    cat: Catalogue,
    chooser: TrackChooser,
    users: np.ndarray,
    eng: np.ndarray,
    earliest_ms: np.ndarray,
) -> Plays:
    """Sessions of the given (active, human) users; plays follow each other in a session."""
    if len(users) == 0:
        return _empty()
    e_u = eng[users]
    n_sess = 1 + np.minimum(rng.poisson(0.5 * np.exp(0.7 * e_u)), 5)
    s_user = np.repeat(users, n_sess)
    s_group = np.repeat(np.arange(len(users)), n_sess)
    n_s = len(s_user)
    hour = (pop.pref_hour[s_user] + rng.normal(0.0, 1.8, n_s)) % 24.0
    start = (hour * HOUR_MS).astype(np.int64)
    start = np.maximum(start, earliest_ms[s_user])
    order = np.lexsort((start, s_group))
    s_user, s_group, start = s_user[order], s_group[order], start[order]
    per = 1 + np.minimum(rng.poisson(5.0 * np.exp(0.4 * eng[s_user])), 60)
    s_ctx = choose_rows(pop.ctx_cum[s_user], rng.random(n_s))
    s_dev = choose_rows(pop.dev_cum[s_user], rng.random(n_s))

    sess = np.repeat(np.arange(n_s), per)
    user = s_user[sess]
    n_p = len(sess)
    genre = choose_rows(pop.genre_cum[user], rng.random(n_p))
    track = chooser.choose(genre, rng.random(n_p))
    dur = cat.duration_ms[track].astype(np.int64)
    e_p = eng[user]
    skipped = rng.random(n_p) < _sigmoid(-0.6 - 0.8 * e_p + pop.skip_bias[user])
    frac = rng.beta(0.8, 3.0, n_p)
    short = np.maximum(500, (dur * frac * 0.97).astype(np.int64))
    tail = np.where(rng.random(n_p) < 0.85, 0, rng.integers(0, 1500, n_p))
    ms = np.where(skipped, short, dur - tail)
    liked = ~skipped & (rng.random(n_p) < _sigmoid(-3.8 + 0.7 * e_p + pop.like_bias[user]))
    shared = rng.random(n_p) < _sigmoid(-6.0 + 0.8 * e_p) * np.where(skipped, 0.2, 1.0)

    # plays of a session follow each other: start += previous ms_played + small gap
    step = ms + rng.integers(100, 2500, n_p)
    first_play = np.concatenate(([0], np.cumsum(per)[:-1]))
    offset = _group_exclusive_cumsum(step, first_play[sess])
    sess_len = np.add.reduceat(step, first_play)
    # sessions of a user do not overlap: each starts after the previous one ends (plus a
    # pause), i.e. start' = c + running max of (start - c) within the user, c = the
    # exclusive cumulative span of the user's earlier sessions
    span = sess_len + rng.integers(5, 40, n_s) * 60_000
    c = _group_exclusive_cumsum(span, np.searchsorted(s_group, s_group, side="left"))
    shifted = start - c + s_group.astype(np.int64) * _GROUP_STRIDE
    run = np.maximum.accumulate(shifted) - s_group.astype(np.int64) * _GROUP_STRIDE
    s_start = c + run
    at = s_start[sess] + offset
    plays = Plays(
        user=user,
        track=track,
        at_ms=at,
        ms_played=ms,
        skipped=skipped,
        context=s_ctx[sess],
        device=s_dev[sess],
        shared=shared,
        liked=liked,
    )
    return plays.select(at < DAY_MS)


def bot_plays(
    rng: np.random.Generator,
    pop: Population,
    cat: Catalogue,
    bots: np.ndarray,
    earliest_ms: np.ndarray,
) -> Plays:
    """Stream-farming bots: a few tracks on repeat around the clock, ~31 s per play."""
    if len(bots) == 0:
        return _empty()
    lo, hi = BOT_PLAYS_PER_DAY
    count = rng.integers(lo, hi + 1, len(bots))
    user = np.repeat(bots, count)
    n_p = len(user)
    first = np.concatenate(([0], np.cumsum(count)[:-1]))
    i = np.arange(n_p) - np.repeat(first, count)
    begin = earliest_ms[user]
    spacing = (DAY_MS - begin) / np.repeat(count, count)
    at = (begin + i * spacing + rng.random(n_p) * 0.3 * spacing).astype(np.int64)
    pick = rng.integers(0, 5, n_p) % pop.bot_n_targets[user]
    track = pop.bot_targets[user, pick]
    ms = ROYALTY_MS + rng.integers(300, 4000, n_p)
    ms = np.minimum(ms, cat.duration_ms[track].astype(np.int64) - 1)
    device = np.where(
        rng.random(n_p) < 0.95, pop.bot_device[user], rng.integers(0, len(DEVICE_TYPES), n_p)
    ).astype(np.int8)
    context = np.where(rng.random(n_p) < 0.8, _PLAYLIST, _OTHER_CTX).astype(np.int8)
    no = np.zeros(n_p, dtype=bool)
    return Plays(
        user=user,
        track=track,
        at_ms=at,
        ms_played=ms,
        skipped=no,
        context=context,
        device=device,
        shared=no.copy(),
        liked=no.copy(),
    )


def _empty() -> Plays:
    i64 = np.zeros(0, dtype=np.int64)
    b = np.zeros(0, dtype=bool)
    i8 = np.zeros(0, dtype=np.int8)
    return Plays(i64, i64, i64, i64, b, i8, i8, b, b)
