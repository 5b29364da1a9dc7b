"""Churn labels per DATA_CONTRACT.md ("Definitions the models use"), computed in SQL.

The one place the churn label is defined. For a scoring date D, the population is exactly
the rows of ``features.user_daily`` for ``dt = D`` (the users active on D), split by
``is_paying`` (the plan at the end of D):

- **paying on D**: churn within H = a ``cancel`` subscription event on a UTC day in
  (D, D + H];
- **free on D**: churn within H = a *dormancy churn day* t in [D − 28, D + H], where t is a
  dormancy churn day when the user played on t − 1, was on the free tier at the end of
  t − 1, and has no play on the 30 days t .. t + 29. (The free-tier condition follows the
  simulator's truth and the contract's "a free-tier user churns ...".)

**Censoring** as of ``as_of`` (the training date; the warehouse holds every event up to the
end of that day):

- a paying user's H-label is known when D + H ≤ as_of: every day of (D, D + H] is observed;
- a free user's H-label is known when D + H + 29 ≤ as_of: the latest candidate churn day is
  t = D + H, and deciding it needs its whole silence window t .. t + 29 = D + H .. D + H + 29
  observed. (The contract's "30 days later" counted inclusively: the 30 days D + H ..
  D + H + 29 must have passed.) On as_of = D + H + 28 the label is still NULL.

An unknown label is NULL, never 0 -- and also never an early 1: a churn that is already
visible before the whole window is observed still leaves the H-label NULL, so that every
known label comes from a fully observed window (no selection towards positives). That early
information is kept in the survival columns instead:

- ``duration``: days after D until the event (``event`` true), or through which the user
  is known not to have churned (``event`` false), capped at the largest horizon. A free
  user's churn day t ≤ D counts as duration 1 (label for every H ≥ 1 is 1, like the
  contract's window starting at D − 28). The censoring point of a free user is
  as_of − 29 − D (the last decided churn day), of a paying user as_of − D.
- ``event``: the churn was observed within the largest horizon.
- ``observed``: the censoring point, capped at the largest horizon: the outcome of every
  day after D up to and including D + ``observed`` is decided as of ``as_of`` (0 when none
  is). A hazard model may only count a day band as an event *or* a survival when the band
  ends by ``observed``: counting a band cut by censoring only when it holds the churn
  would overstate that band's hazard.

So for every horizon H: label_H = 1 ⇔ event ∧ duration ≤ H; label_H = 0 ⇒ duration ≥ H with
the window fully observed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date

import pandas as pd
from psycopg import sql

from ml_tasks import warehouse

log = logging.getLogger(__name__)

HORIZONS: tuple[int, ...] = (7, 30, 90)
#: A dormancy churn day t needs no play on t .. t + DORMANCY_DAYS - 1.
DORMANCY_DAYS = 30
#: A free user's label window starts this many days before D (contract: [D - 28, D + H]).
DORMANCY_LOOKBACK = 28


def label_column(horizon: int) -> str:
    """The label column of a horizon: ``label_30``."""
    return f"label_{horizon}"


def free_label_known(day: date, horizon: int, as_of: date) -> bool:
    """Whether a free-tier user's label at ``day`` for ``horizon`` is known on ``as_of``."""
    return (as_of - day).days >= horizon + DORMANCY_DAYS - 1


def paying_label_known(day: date, horizon: int, as_of: date) -> bool:
    """Whether a paying user's label at ``day`` for ``horizon`` is known on ``as_of``."""
    return (as_of - day).days >= horizon


def last_fully_labelled_day(horizon: int, as_of: date) -> date:
    """The latest scoring date whose labels at ``horizon`` are known for every user."""
    from datetime import timedelta

    return as_of - timedelta(days=horizon + DORMANCY_DAYS - 1)


_LABELS_SQL = """
WITH pop AS (
    SELECT u.user_id, u.dt, u.is_paying
    FROM features.user_daily u
    WHERE u.dt = ANY(%(dates)s::date[])
      -- the table is partitioned on feature_ts (the last microsecond of dt): this range
      -- lets the planner skip the other days' partitions, which dt alone does not
      AND u.feature_ts >= %(ts_lo)s::timestamptz AND u.feature_ts < %(ts_hi)s::timestamptz
),
cancels AS (
    -- first cancel of each paying user after D, within the largest horizon and as_of
    SELECT p.user_id, p.dt, min((s.event_at AT TIME ZONE 'UTC')::date) AS churn_day
    FROM pop p
    JOIN raw.subscription_events s
      ON s.user_id = p.user_id
     AND s.event_type = 'cancel'
     AND s.event_at >= ((p.dt + 1)::timestamp AT TIME ZONE 'UTC')
     AND s.event_at < ((least(p.dt + %(max_h)s, %(as_of)s::date) + 1)::timestamp
                       AT TIME ZONE 'UTC')
    WHERE p.is_paying
    GROUP BY p.user_id, p.dt
),
free_users AS (
    SELECT DISTINCT user_id FROM pop WHERE NOT is_paying
),
active AS (
    SELECT a.user_id, a.dt,
           lead(a.dt) OVER (PARTITION BY a.user_id ORDER BY a.dt) AS next_dt
    FROM features.user_activity_daily a
    JOIN free_users f USING (user_id)
    WHERE a.dt BETWEEN %(first_play)s::date AND %(as_of)s::date
),
silences AS (
    -- a play on day a followed by DORMANCY_DAYS silent days a+1 .. a+30, decided by as_of
    SELECT user_id, dt + 1 AS churn_day
    FROM active
    WHERE dt + %(dormancy)s <= %(as_of)s::date
      AND (next_dt IS NULL OR next_dt - dt > %(dormancy)s)
),
dormancy AS (
    -- ... by a user on the free tier at the end of the day of the last play
    SELECT s.user_id, s.churn_day
    FROM silences s
    LEFT JOIN LATERAL (
        SELECT CASE WHEN e.event_type = 'cancel' THEN 'free' ELSE e.plan END AS plan
        FROM raw.subscription_events e
        WHERE e.user_id = s.user_id
          AND e.event_at < (s.churn_day::timestamp AT TIME ZONE 'UTC')
        ORDER BY e.event_at DESC, e.event_key DESC
        LIMIT 1
    ) plan_then ON true
    WHERE coalesce(plan_then.plan, 'free') = 'free'
),
free_churn AS (
    SELECT p.user_id, p.dt, min(d.churn_day) AS churn_day
    FROM pop p
    JOIN dormancy d
      ON d.user_id = p.user_id
     AND d.churn_day BETWEEN p.dt - %(lookback)s AND p.dt + %(max_h)s
    WHERE NOT p.is_paying
    GROUP BY p.user_id, p.dt
),
joined AS (
    SELECT p.user_id, p.dt, p.is_paying,
           coalesce(c.churn_day, f.churn_day) AS churn_day,
           CASE WHEN p.is_paying THEN %(as_of)s::date - p.dt
                ELSE %(as_of)s::date - (%(dormancy)s - 1) - p.dt END AS observed_days
    FROM pop p
    LEFT JOIN cancels c ON p.is_paying AND c.user_id = p.user_id AND c.dt = p.dt
    LEFT JOIN free_churn f ON NOT p.is_paying AND f.user_id = p.user_id AND f.dt = p.dt
)
SELECT user_id, dt, is_paying, churn_day,
       {labels},
       churn_day IS NOT NULL AS event,
       CASE WHEN churn_day IS NOT NULL THEN greatest(churn_day - dt, 1)
            ELSE greatest(least(observed_days, %(max_h)s), 0) END AS duration,
       greatest(least(observed_days, %(max_h)s), 0) AS observed
FROM joined
ORDER BY dt, user_id
"""


def _label_expr(horizon: int) -> sql.Composed:
    h = sql.Literal(horizon)
    return sql.SQL(
        "CASE WHEN observed_days >= {h} THEN coalesce(churn_day <= dt + {h}, false) END AS {col}"
    ).format(h=h, col=sql.Identifier(label_column(horizon)))


def churn_labels(
    dates: Iterable[date],
    as_of: date,
    *,
    horizons: Sequence[int] = HORIZONS,
    dsn: str | None = None,
) -> pd.DataFrame:
    """Labels of every user active on each scoring date in ``dates``, censored as of ``as_of``.

    Returns one row per (user_id, dt) of ``features.user_daily`` for those dates, with
    ``is_paying``, ``label_<H>`` per horizon (nullable boolean: NULL = censored),
    ``churn_day`` (the churn counted, if observed within the largest horizon), ``event``,
    ``duration`` and ``observed`` (the survival view, see the module docstring).
    """
    dates = sorted(set(dates))
    horizons = sorted({int(h) for h in horizons})
    if not dates:
        raise ValueError("churn_labels needs at least one scoring date")
    if any(d > as_of for d in dates):
        raise ValueError(f"scoring dates after as_of {as_of} have no observed future")
    max_h = horizons[-1]
    from datetime import timedelta

    params = {
        "dates": dates,
        "as_of": as_of,
        "max_h": max_h,
        "dormancy": DORMANCY_DAYS,
        "lookback": DORMANCY_LOOKBACK,
        "first_play": dates[0] - timedelta(days=DORMANCY_LOOKBACK + 1),
        "ts_lo": warehouse.day_bounds(dates[0])[0],
        "ts_hi": warehouse.day_bounds(dates[-1])[1],
    }
    query = sql.SQL(_LABELS_SQL).format(labels=sql.SQL(", ").join(_label_expr(h) for h in horizons))
    with warehouse.connect(warehouse.resolve_dsn(dsn=dsn)) as conn:
        cur = conn.execute(query, params)
        columns = [d.name for d in cur.description]
        frame = pd.DataFrame(cur.fetchall(), columns=columns)
    for h in horizons:
        frame[label_column(h)] = frame[label_column(h)].astype("boolean")
    frame["is_paying"] = frame["is_paying"].astype(bool)
    frame["event"] = frame["event"].astype(bool)
    frame["duration"] = frame["duration"].astype("int64")
    frame["observed"] = frame["observed"].astype("int64")
    frame["dt"] = pd.to_datetime(frame["dt"]).dt.date
    log.info("churn labels for %d scoring dates as of %s: %d rows", len(dates), as_of, len(frame))
    return frame
