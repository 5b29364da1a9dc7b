"""Users: static attributes, latent tastes and the state the daily dynamics evolve."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ml_tasks.contract import ACQUISITION_CHANNELS, PLANS
from ml_tasks.simulate.catalogue import GENRE_SHARE, GENRES
from ml_tasks.simulate.tables import dates_from_ordinals

COUNTRIES = ("US", "GB", "DE", "FR", "BR", "MX", "SE", "ES", "IT", "NL", "CA", "AU", "JP", "PL")
_COUNTRY_WEIGHT = np.array([24, 10, 9, 7, 9, 6, 3, 5, 5, 3, 4, 3, 5, 4], dtype=float)
_EUR = {"DE", "FR", "ES", "IT", "NL", "SE", "PL"}
#: Billing currency per country (same order as COUNTRIES).
CURRENCIES = tuple("GBP" if c == "GB" else "EUR" if c in _EUR else "USD" for c in COUNTRIES)
#: Monthly price in cents per plan (same order as contract PLANS).
PLAN_PRICE_CENTS = np.array([0, 1099, 1499, 1699, 599], dtype=np.int64)
if len(PLAN_PRICE_CENTS) != len(PLANS):  # pragma: no cover - guards a contract change
    raise RuntimeError("PLAN_PRICE_CENTS must list a price for every contract plan")
FREE = PLANS.index("free")
INDIVIDUAL = PLANS.index("premium_individual")
DUO = PLANS.index("premium_duo")
FAMILY = PLANS.index("premium_family")
STUDENT = PLANS.index("premium_student")

GENDERS = ("female", "male", "non-binary", "prefer not to say")
_GENDER_WEIGHT = np.array([0.42, 0.42, 0.03, 0.01])  # the rest (0.12) is null
_CHANNEL_WEIGHT = np.array([0.45, 0.18, 0.12, 0.12, 0.08, 0.05])
_CTX_ALPHA = np.array([3.0, 1.5, 1.0, 1.0, 1.0, 1.5, 0.3])
_DEVICE_ALPHA = np.array([5.0, 2.0, 1.5, 0.5, 0.5, 0.2]) * 0.3

#: Ids at or above these values are never users.
UNKNOWN_USER_BASE = 900_000_000
BAD_USER_BASE = 800_000_000
FIRST_USER_ID = 100_001
NEVER = 2**30


def _cum(probs: np.ndarray) -> np.ndarray:
    cum = np.cumsum(probs, axis=1)
    cum /= cum[:, -1:]
    cum[:, -1] = 1.0 + 1e-9
    return cum.astype(np.float32)


@dataclass
class Population:
    """Every account of the world; index = position in these arrays."""

    user_id: np.ndarray  # int64, increasing with signup
    signup_day: np.ndarray  # int32, relative to start
    signup_ms: np.ndarray  # int64, ms of the signup day at which the account was created
    country: np.ndarray  # int8 index into COUNTRIES
    birth_year: np.ndarray  # int32, -1 = null
    gender: np.ndarray  # int8 index into GENDERS, -1 = null
    channel: np.ndarray  # int8 index into ACQUISITION_CHANNELS
    is_bot: np.ndarray
    base: np.ndarray  # long-run log engagement
    fade: np.ndarray  # daily drift of base (negative for fading users)
    x: np.ndarray  # AR(1) deviation of log engagement
    genre_cum: np.ndarray  # (n, genres) cumulative taste
    ctx_cum: np.ndarray  # (n, contexts)
    dev_cum: np.ndarray  # (n, devices)
    pref_hour: np.ndarray
    skip_bias: np.ndarray
    like_bias: np.ndarray
    fail_prop: np.ndarray  # chance a renewal payment fails
    plan_pref: np.ndarray  # paid plan the user picks when paying
    # bots
    bot_targets: np.ndarray  # (n, 5) track indices (bots only)
    bot_n_targets: np.ndarray
    bot_device: np.ndarray
    # subscription / activity state
    plan: np.ndarray
    next_bill: np.ndarray
    fail_count: np.ndarray
    last_fail_day: np.ndarray
    ever_paid: np.ndarray
    dormant: np.ndarray
    dormant_until: np.ndarray
    last_play: np.ndarray

    @property
    def n(self) -> int:
        return len(self.user_id)

    @property
    def engagement(self) -> np.ndarray:
        return self.base + self.x

    def users_columns(self, idx: np.ndarray, start_ordinal: int) -> dict[str, pa.Array]:
        """Typed columns of users rows for ``idx``."""
        by = self.birth_year[idx]
        gender = self.gender[idx]
        return {
            "user_id": pa.array(self.user_id[idx], type=pa.int64()),
            "signup_date": dates_from_ordinals(start_ordinal + self.signup_day[idx]),
            "country": pa.array(COUNTRIES).take(pa.array(self.country[idx].astype(np.int64))),
            "birth_year": pa.array(by.astype(np.int16), mask=by < 0, type=pa.int16()),
            "gender": pa.array(GENDERS).take(
                pa.array(np.maximum(gender, 0).astype(np.int64), mask=gender < 0)
            ),
            "acquisition_channel": pa.array(ACQUISITION_CHANNELS).take(
                pa.array(self.channel[idx].astype(np.int64))
            ),
        }


def build_population(
    rng: np.random.Generator,
    users: int,
    days: int,
    start_year: int,
    bot_share: float,
    fraud_pool: np.ndarray,
) -> Population:
    """Draw all accounts, their tastes and their state on the start day."""
    n = users
    n_bots = min(n, round(n * bot_share))
    is_bot = np.zeros(n, dtype=bool)
    is_bot[rng.choice(n, size=n_bots, replace=False)] = True

    new_share = min(0.3, 0.004 * days) if days > 1 else 0.0
    is_new = rng.random(n) < np.where(is_bot, 0.5 if days > 1 else 0.0, new_share)
    before = -np.minimum(np.ceil(rng.exponential(500.0, n)), 3650).astype(np.int64)
    before = np.where(is_bot, -rng.integers(1, 121, n), np.minimum(before, -1))
    signup_day = np.where(is_new, rng.integers(0, max(days, 1), n), before).astype(np.int32)
    signup_ms = rng.integers(0, 20 * 3_600_000, n).astype(np.int64)
    # ids increase with signup time
    order = np.lexsort((signup_ms, signup_day))
    user_id = np.empty(n, dtype=np.int64)
    user_id[order] = FIRST_USER_ID + np.arange(n)

    country = rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_WEIGHT / _COUNTRY_WEIGHT.sum())
    age = np.clip(rng.normal(30, 11, n), 13, 85).astype(np.int32)
    birth_year = np.where((rng.random(n) < 0.15) | is_bot, -1, start_year - age).astype(np.int32)
    g = rng.random(n)
    gender = np.searchsorted(np.cumsum(_GENDER_WEIGHT), g, side="right")
    gender = np.where((gender >= len(GENDERS)) | is_bot, -1, gender).astype(np.int8)
    channel = rng.choice(len(ACQUISITION_CHANNELS), size=n, p=_CHANNEL_WEIGHT)
    channel = np.where(is_bot, rng.choice([1, 5], size=n), channel).astype(np.int8)

    base = rng.normal(0.0, 0.7, n)
    fade = np.where(rng.random(n) < 0.15, -rng.uniform(0.01, 0.05, n), 0.0)
    x = rng.normal(0.0, 0.3, n)

    taste = rng.dirichlet(GENRE_SHARE * len(GENRES) * 0.5, size=n)
    ctx_alpha = np.tile(_CTX_ALPHA, (n, 1))
    tilt = np.exp(0.6 * np.clip(base, -2, 2))
    ctx_alpha[:, 0] *= tilt  # engaged users play from playlists ...
    ctx_alpha[:, 3] *= tilt  # ... and search more
    ctx = _dirichlet_rows(rng, ctx_alpha)
    dev = rng.dirichlet(_DEVICE_ALPHA, size=n)

    kind = rng.random(n)
    pref_hour = (
        np.where(
            kind < 0.55,
            rng.normal(19.5, 2.5, n),
            np.where(kind < 0.85, rng.normal(12.0, 3.0, n), rng.normal(1.5, 1.5, n)),
        )
        % 24.0
    )
    skip_bias = rng.normal(0.0, 0.5, n)
    like_bias = rng.normal(0.0, 0.5, n)
    fail_prop = np.where(is_bot, 0.0, rng.beta(1.0, 24.0, n))
    p = rng.random(n)
    young = (birth_year > 0) & (start_year - birth_year <= 24)
    plan_pref = np.where(
        young & (p < 0.6),
        STUDENT,
        np.where(p < 0.6, INDIVIDUAL, np.where(p < 0.8, DUO, FAMILY)),
    ).astype(np.int8)

    bot_n_targets = np.where(is_bot, rng.integers(2, 6, n), 0).astype(np.int8)
    bot_targets = fraud_pool[rng.integers(0, len(fraud_pool), size=(n, 5))]
    bot_device = rng.choice([1, 2, 5], size=n, p=[0.4, 0.4, 0.2]).astype(np.int8)

    # state on the start day for accounts that exist before it
    pre = signup_day < 0
    paying = pre & (rng.random(n) < np.where(is_bot, 0.15, _sigmoid(-0.8 + 0.9 * base)))
    plan = np.where(paying, np.where(is_bot, INDIVIDUAL, plan_pref), FREE).astype(np.int8)
    next_bill = np.where(paying, rng.integers(0, 30, n), NEVER).astype(np.int32)
    ever_paid = paying | (pre & (rng.random(n) < 0.2))
    dormant = pre & ~paying & ~is_bot & (rng.random(n) < 0.12 * _sigmoid(-1.0 - base) * 2)
    dormant_until = np.where(
        dormant & (rng.random(n) < 0.25), rng.integers(1, 61, n), NEVER
    ).astype(np.int32)
    last_play = np.where(dormant, -200, -rng.integers(1, 8, n)).astype(np.int32)

    return Population(
        user_id=user_id,
        signup_day=signup_day,
        signup_ms=signup_ms,
        country=country.astype(np.int8),
        birth_year=birth_year,
        gender=gender,
        channel=channel,
        is_bot=is_bot,
        base=base,
        fade=fade,
        x=x,
        genre_cum=_cum(taste),
        ctx_cum=_cum(ctx),
        dev_cum=_cum(dev),
        pref_hour=pref_hour,
        skip_bias=skip_bias,
        like_bias=like_bias,
        fail_prop=fail_prop,
        plan_pref=plan_pref,
        bot_targets=bot_targets,
        bot_n_targets=bot_n_targets,
        bot_device=bot_device,
        plan=plan,
        next_bill=next_bill,
        fail_count=np.zeros(n, dtype=np.int8),
        last_fail_day=np.full(n, -NEVER, dtype=np.int32),
        ever_paid=ever_paid,
        dormant=dormant,
        dormant_until=dormant_until,
        last_play=last_play,
    )


def _dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """One Dirichlet draw per row of ``alpha`` (vectorized via normalized gammas)."""
    g = rng.standard_gamma(alpha)
    g = np.maximum(g, 1e-12)
    return g / g.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))
