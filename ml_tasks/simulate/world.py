"""The daily dynamics of the world: engagement, subscriptions, churn, dormancy and plays.

:meth:`World.step` advances one day and returns that day's clean landing tables (before any
contract-breaking rows are added) together with the ground truth of the day.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ml_tasks.contract import (
    CONTEXT_TYPES,
    DEVICE_TYPES,
    LISTENING_EVENTS,
    PLANS,
    SUBSCRIPTION_EVENT_TYPES,
    SUBSCRIPTION_EVENTS,
    TRACKS,
    USERS,
)
from ml_tasks.simulate.catalogue import Catalogue
from ml_tasks.simulate.ids import hex_strings, mix64
from ml_tasks.simulate.plays import DAY_MS, Plays, TrackChooser, bot_plays, normal_plays
from ml_tasks.simulate.population import (
    COUNTRIES,
    CURRENCIES,
    FREE,
    INDIVIDUAL,
    NEVER,
    PLAN_PRICE_CENTS,
    UNKNOWN_USER_BASE,
    Population,
)
from ml_tasks.simulate.tables import arrow_schema, decimal_from_cents, timestamps_from_us

SIGNUP, RENEWAL, UPGRADE, DOWNGRADE, CANCEL, PAYMENT_FAILED, REACTIVATE = (
    SUBSCRIPTION_EVENT_TYPES.index(k)
    for k in ("signup", "renewal", "upgrade", "downgrade", "cancel", "payment_failed", "reactivate")
)
#: Share of plays that reference a user or track unknown to the landing data.
UNKNOWN_REF_RATE = 0.0005
#: A latent-active user is never silent this many days in a row (natural gaps stay < 30 days).
MAX_NATURAL_GAP = 20
#: Daily hazard offsets per plan (free, individual, duo, family, student).
_PLAN_HAZARD = np.array([0.0, 0.0, -0.2, -0.4, 0.4])
_EPOCH = dt.date(1970, 1, 1)
_US_PER_MS = 1000


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def paid_hazard(
    eng: np.ndarray, recent_fail: np.ndarray, tenure: np.ndarray, plan: np.ndarray
) -> np.ndarray:
    """Daily chance that a paying user cancels (voluntary churn)."""
    return _sigmoid(
        -6.6 - 1.2 * eng + 1.0 * recent_fail - 0.3 * np.log1p(tenure / 30.0) + _PLAN_HAZARD[plan]
    )


def dormancy_hazard(eng: np.ndarray, tenure: np.ndarray) -> np.ndarray:
    """Daily chance that a free-tier user goes dormant (stops playing for 30+ days)."""
    return _sigmoid(-6.1 - 1.4 * eng + 1.0 * (tenure < 30) - 0.2 * np.log1p(tenure / 30.0))


@dataclass
class DayResult:
    """One simulated day: clean typed tables plus the truth about it."""

    day: dt.date
    users: pa.Table
    tracks: pa.Table
    track_idx: np.ndarray  # catalogue indices delivered today (for audio)
    listening: pa.Table
    subscription: pa.Table
    unknown_refs: pa.Table  # row (in ``listening``), event_id, kind
    user_daily: dict[str, np.ndarray]
    cancels: dict[str, np.ndarray]  # user index, voluntary flag
    latent_dormancy: np.ndarray  # user indices whose latent dormancy starts today
    played: np.ndarray  # user indices with at least one clean play today
    free_at_end: np.ndarray  # bool per user: free tier at the end of the day


@dataclass
class World:
    """The evolving world; one instance simulates consecutive days from day 0."""

    pop: Population
    cat: Catalogue
    start: dt.date
    rng_dynamics: np.random.Generator
    rng_plays: np.random.Generator
    event_key: int
    sub_key: int
    event_counter: int = 0
    sub_counter: int = 0
    #: The first day whose tables are delivered: it carries every account and every track
    #: released so far (the days before it are a burn-in whose tables are dropped).
    first_day: int = 0

    def step(self, t: int) -> DayResult:
        """Simulate day ``t`` (0-based) and return its landing tables and truth."""
        pop, rng = self.pop, self.rng_dynamics
        n = pop.n
        day = self.start + dt.timedelta(days=t)
        alive = pop.signup_day <= t
        new = pop.signup_day == t
        old = alive & ~new
        bot = pop.is_bot

        # latent engagement: AR(1) around a slowly drifting base
        pop.x = np.where(alive, 0.9 * pop.x + rng.normal(0.0, 0.2, n), pop.x)
        pop.base = np.where(old, np.maximum(pop.base + pop.fade, -3.0), pop.base)
        eng = pop.engagement
        tenure = np.maximum(t - pop.signup_day, 0).astype(float)
        plan0 = pop.plan.copy()
        paying0 = plan0 != FREE
        dormant0 = pop.dormant.copy()
        fails0 = pop.fail_count.copy()
        h_paid = paid_hazard(eng, (t - pop.last_fail_day) <= 14, tenure, plan0)
        h_free = dormancy_hazard(eng, tenure)

        ev = np.full(n, -1, dtype=np.int8)
        ev_ms = rng.integers(0, DAY_MS, n)
        voluntary = np.zeros(n, dtype=bool)

        # sign-ups (free, or straight onto a paid plan)
        paid_signup = new & (rng.random(n) < np.where(bot, 0.1, 0.2))
        pop.plan[new] = np.where(paid_signup, np.where(bot, INDIVIDUAL, pop.plan_pref), FREE)[new]
        pop.next_bill[new] = np.where(paid_signup, t + 30, NEVER)[new]
        pop.ever_paid |= paid_signup
        pop.last_play[new] = t
        ev[new] = SIGNUP
        ev_ms[new] = pop.signup_ms[new]

        # monthly billing: renewal, payment failure (retried after 3 days), involuntary cancel
        due = old & paying0 & (pop.next_bill == t)
        fail_p = np.where(fails0 > 0, 0.5, pop.fail_prop)
        failed = due & (rng.random(n) < fail_p)
        renew = due & ~failed
        invol = failed & (fails0 >= 2)
        pfail = failed & ~invol
        ev[renew] = RENEWAL
        pop.next_bill[renew] = t + 30
        pop.fail_count[renew] = 0
        ev[pfail] = PAYMENT_FAILED
        pop.fail_count[pfail] += 1
        pop.last_fail_day[pfail] = t
        pop.next_bill[pfail] = t + 3
        ev[invol] = CANCEL

        # voluntary cancels with the paid hazard
        vol = old & paying0 & ~bot & (ev < 0) & (rng.random(n) < h_paid)
        ev[vol] = CANCEL
        voluntary[vol] = True
        cancel = invol | vol
        pop.plan[cancel] = FREE
        pop.next_bill[cancel] = NEVER
        pop.fail_count[cancel] = 0
        pop.base[cancel] -= 0.2

        # occasional moves between paid plans
        chg = old & paying0 & ~bot & (ev < 0) & (rng.random(n) < 0.0008)
        moved = (1 + (plan0.astype(np.int64) - 1 + rng.integers(1, 4, n)) % 4).astype(np.int8)
        up_move = PLAN_PRICE_CENTS[moved] > PLAN_PRICE_CENTS[plan0]
        ev[chg] = np.where(up_move, UPGRADE, DOWNGRADE)[chg]
        pop.plan[chg] = moved[chg]

        # free tier: latent dormancy with the dormancy hazard, or an upgrade
        free_ok = old & ~paying0 & ~dormant0 & ~bot & (ev < 0)
        dorm = free_ok & (rng.random(n) < h_free)
        back = np.where(rng.random(n) < 0.3, t + 30 + rng.geometric(1 / 30, n), NEVER).astype(
            np.int32
        )
        pop.dormant[dorm] = True
        pop.dormant_until[dorm] = back[dorm]
        p_up = _sigmoid(-7.0 + 1.2 * eng + 0.7 * pop.ever_paid)
        up = free_ok & ~dorm & (rng.random(n) < p_up)
        ev[up] = np.where(pop.ever_paid, REACTIVATE, UPGRADE)[up]
        pop.plan[up] = pop.plan_pref[up]
        pop.next_bill[up] = t + 30
        pop.fail_count[up] = 0
        pop.ever_paid |= up

        # some dormant users come back (after 30+ days)
        ret = alive & dormant0 & (pop.dormant_until <= t)
        pop.dormant[ret] = False
        pop.dormant_until[ret] = NEVER
        pop.fade[ret] = 0.0
        pop.x[ret] = 0.0
        pop.base[ret] = np.maximum(pop.base[ret], -0.5)
        eng = pop.engagement

        # truth: the probability of churning today, as of the start of the day
        p_invol = np.where(due & (fails0 >= 2), 0.5, 0.0)
        hazard = np.where(paying0, 1.0 - (1.0 - h_paid) * (1.0 - p_invol), h_free)
        hazard = np.where(new | bot | dormant0, 0.0, hazard)

        # who plays today
        pool = alive & ~pop.dormant & ~bot
        p_act = np.clip(_sigmoid(0.8 + 1.6 * eng), 0.12, 0.97)
        u = rng.random(n)
        active = pool & ((u < p_act) | (t - pop.last_play >= MAX_NATURAL_GAP) | ret)
        active = np.where(new, pool & (u < 0.85), active)
        earliest = np.where(new, pop.signup_ms + 60_000, 0)
        chooser = TrackChooser(self.cat, t)
        plays = Plays.concat(
            [
                normal_plays(
                    self.rng_plays, pop, self.cat, chooser, np.flatnonzero(active), eng, earliest
                ),
                bot_plays(self.rng_plays, pop, self.cat, np.flatnonzero(alive & bot), earliest),
            ]
        )
        counts = np.bincount(plays.user, minlength=n)
        played = np.flatnonzero(counts > 0)
        pop.last_play[played] = t

        listening, unknown = self._listening_table(day, plays)
        subs = self._subscription_table(day, np.flatnonzero(ev >= 0), ev, ev_ms)
        users_idx = self._users_today(t, alive, new, old & ~bot)
        users = pa.table(
            pop.users_columns(users_idx, day.toordinal() - t), schema=arrow_schema(USERS)
        )
        track_idx = np.flatnonzero(
            self.cat.release_day <= t if t == self.first_day else self.cat.release_day == t
        )
        tracks = pa.table(
            self.cat.table(track_idx, day.toordinal() - t), schema=arrow_schema(TRACKS)
        )

        live = np.flatnonzero(alive)
        user_daily = {
            "user_idx": live,
            "day": np.full(len(live), t, dtype=np.int32),
            "hazard": hazard[live],
            "engagement": eng[live],
            "plan": pop.plan[live].copy(),
            "is_bot": bot[live],
            "dormant": pop.dormant[live].copy(),
            "plays": counts[live].astype(np.int32),
        }
        return DayResult(
            day=day,
            users=users,
            tracks=tracks,
            track_idx=track_idx,
            listening=listening,
            subscription=subs,
            unknown_refs=unknown,
            user_daily=user_daily,
            cancels={"user_idx": np.flatnonzero(cancel), "voluntary": voluntary[cancel]},
            latent_dormancy=np.flatnonzero(dorm),
            played=played,
            free_at_end=pop.plan == FREE,
        )

    def _users_today(
        self, t: int, alive: np.ndarray, new: np.ndarray, movable: np.ndarray
    ) -> np.ndarray:
        """Users rows delivered on day t: sign-ups (all earlier accounts on the first
        delivered day) and moves."""
        pop, rng = self.pop, self.rng_dynamics
        move = movable & (rng.random(pop.n) < 0.0004)
        shift = rng.integers(1, len(COUNTRIES), pop.n)
        pop.country[move] = ((pop.country[move] + shift[move]) % len(COUNTRIES)).astype(np.int8)
        rows = alive if t == self.first_day else (new | move)
        idx = np.flatnonzero(rows)
        return idx[np.argsort(pop.user_id[idx], kind="stable")]

    def _listening_table(self, day: dt.date, plays: Plays) -> tuple[pa.Table, pa.Table]:
        rng = self.rng_plays
        pop, cat = self.pop, self.cat
        n_clean = len(plays)
        # a few plays reference a user or a track that the landing data never describes
        m = int(rng.binomial(n_clean, UNKNOWN_REF_RATE)) if n_clean else 0
        src = rng.integers(0, max(n_clean, 1), m)
        unknown_user = rng.random(m) < 0.5
        extra = plays.select(src)
        user_ids = np.concatenate(
            [
                pop.user_id[plays.user],
                np.where(
                    unknown_user,
                    UNKNOWN_USER_BASE + rng.integers(0, 10**8, m),
                    pop.user_id[extra.user],
                ),
            ]
        )
        unknown_tracks = cat.unknown_ids(rng, m)
        track_code = np.concatenate(
            [plays.track, np.where(unknown_user, extra.track, cat.n + np.arange(m))]
        )
        allp = Plays.concat([plays, extra])
        order = np.argsort(allp.at_ms, kind="stable")
        total = len(order)
        ids = hex_strings("e", mix64(self.event_counter + np.arange(total), self.event_key), 16)
        self.event_counter += total
        day_us = (day - _EPOCH).days * DAY_MS * _US_PER_MS
        all_track_ids = pa.concat_arrays([cat.track_id, unknown_tracks])
        tcode = track_code[order]
        cols = {
            "event_id": ids,
            "user_id": pa.array(user_ids[order], type=pa.int64()),
            "track_id": all_track_ids.take(pa.array(tcode, type=pa.int64())),
            "played_at": timestamps_from_us(day_us + allp.at_ms[order] * _US_PER_MS),
            "ms_played": pa.array(allp.ms_played[order].astype(np.int32)),
            "track_duration_ms": pa.array(
                cat.duration_ms[np.where(tcode < cat.n, tcode, allp.track[order])]
            ),
            "skipped": pa.array(allp.skipped[order]),
            "context_type": pa.array(CONTEXT_TYPES).take(
                pa.array(allp.context[order].astype(np.int64))
            ),
            "device_type": pa.array(DEVICE_TYPES).take(
                pa.array(allp.device[order].astype(np.int64))
            ),
            "shared": pa.array(allp.shared[order]),
            "liked": pa.array(allp.liked[order]),
        }
        table = pa.table(cols, schema=arrow_schema(LISTENING_EVENTS))
        # truth about the unknown references: their position after sorting
        pos = np.empty(total, dtype=np.int64)
        pos[order] = np.arange(total)
        extra_pos = pos[n_clean:]
        unknown = pa.table(
            {
                "row": pa.array(extra_pos, type=pa.int64()),
                "event_id": ids.take(pa.array(extra_pos, type=pa.int64())),
                "kind": pa.array(
                    np.where(unknown_user, "unknown_user", "unknown_track").tolist(),
                    type=pa.string(),
                ),
            }
        )
        return table, unknown

    def _subscription_table(
        self, day: dt.date, who: np.ndarray, ev: np.ndarray, ev_ms: np.ndarray
    ) -> pa.Table:
        pop = self.pop
        order = np.lexsort((pop.user_id[who], ev_ms[who]))
        who = who[order]
        kind = ev[who].astype(np.int64)
        plan = pop.plan[who].astype(np.int64)
        charged = np.isin(kind, [SIGNUP, RENEWAL, UPGRADE, DOWNGRADE, REACTIVATE])
        cents = np.where(charged, PLAN_PRICE_CENTS[plan], 0)
        k = len(who)
        ids = hex_strings("s", mix64(self.sub_counter + np.arange(k), self.sub_key), 16)
        self.sub_counter += k
        day_us = (day - _EPOCH).days * DAY_MS * _US_PER_MS
        cols = {
            "event_id": ids,
            "user_id": pa.array(pop.user_id[who], type=pa.int64()),
            "event_at": timestamps_from_us(day_us + ev_ms[who] * _US_PER_MS),
            "event_type": pa.array(SUBSCRIPTION_EVENT_TYPES).take(pa.array(kind)),
            "plan": pa.array(PLANS).take(pa.array(plan)),
            "amount": decimal_from_cents(cents),
            "currency": pa.array(CURRENCIES).take(pa.array(pop.country[who].astype(np.int64))),
            "auto_renew": pa.array(plan != FREE),
        }
        return pa.table(cols, schema=arrow_schema(SUBSCRIPTION_EVENTS))
