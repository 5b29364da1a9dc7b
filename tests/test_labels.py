"""Churn labels: a hand-built scenario at the contract's boundaries, and the simulator's truth."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest

from ml_tasks import labels, warehouse
from ml_tasks.features import feature_ts

D = date(2026, 3, 1)


def _insert(conn, table: str, values: dict) -> None:
    """Insert one row, filling every other NOT NULL column with a neutral value."""
    cols = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema || '.' || table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    row = dict(values)
    for name, kind, nullable in cols:
        if name in row or nullable == "YES":
            continue
        row[name] = {
            "text": "x",
            "boolean": False,
            "ARRAY": [],
            "date": D,
            "timestamp with time zone": datetime(2026, 1, 1, tzinfo=UTC),
        }.get(kind, 0)
    names = list(row)
    conn.execute(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})",
        [row[n] for n in names],
    )


def _day(offset: int) -> date:
    return D + timedelta(days=offset)


def _at(offset: int, hour: int = 12) -> datetime:
    d = _day(offset)
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


@pytest.fixture
def scenario(warehouse_dsn: str) -> str:
    """Users active on D, each testing one rule of the contract."""
    paying = {1: 5, 2: 20, 3: None}  # user -> cancel day offset (None: never)
    free_plays = {
        4: [-10, 40],  # silence D-9 .. D+39: churn day D-9 (inside [D-28, D+H])
        5: [-5, -4, -3, -2, -1, 0],  # silent from D+1 on: churn day D+1
        6: [-29],  # churn day D-28: the window's first day, counted
        # silence D-30 .. D-1: churn day D-30 is before the window; no later 30-day silence
        7: [-31, 0, 20, 40, 60, 80, 100, 120],
        8: [0, 31],  # silence D+1 .. D+30 (30 days): churn day D+1
        9: [0, 30],  # silence D+1 .. D+29 (29 days): no churn
        10: [0, 5],  # upgrades on D+3, silent after D+5 while paying: no dormancy churn
    }
    with warehouse.connect(warehouse_dsn) as conn, conn.transaction():
        for table in (
            "features.user_daily",
            "features.user_activity_daily",
            "raw.subscription_events",
        ):
            conn.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        for user, cancel in paying.items():
            _insert(
                conn,
                "features.user_daily",
                {
                    "dt": D,
                    "feature_ts": feature_ts(D),
                    "user_id": user,
                    "is_paying": True,
                    "plan": "premium_individual",
                },
            )
            _insert(
                conn,
                "raw.subscription_events",
                {
                    "user_id": user,
                    "event_at": _at(-40),
                    "event_type": "signup",
                    "plan": "premium_individual",
                    "event_id": f"s{user}",
                    "event_key": user,
                },
            )
            if cancel is not None:
                _insert(
                    conn,
                    "raw.subscription_events",
                    {
                        "user_id": user,
                        "event_at": _at(cancel),
                        "event_type": "cancel",
                        "plan": "premium_individual",
                        "event_id": f"c{user}",
                        "event_key": 100 + user,
                    },
                )
        for user, plays in free_plays.items():
            _insert(
                conn,
                "features.user_daily",
                {
                    "dt": D,
                    "feature_ts": feature_ts(D),
                    "user_id": user,
                    "is_paying": False,
                    "plan": "free",
                },
            )
            _insert(
                conn,
                "raw.subscription_events",
                {
                    "user_id": user,
                    "event_at": _at(-60),
                    "event_type": "signup",
                    "plan": "free",
                    "event_id": f"s{user}",
                    "event_key": user,
                },
            )
            for offset in plays:
                _insert(
                    conn,
                    "features.user_activity_daily",
                    {"dt": _day(offset), "user_id": user, "plays": 1},
                )
        _insert(
            conn,
            "raw.subscription_events",
            {
                "user_id": 10,
                "event_at": _at(3),
                "event_type": "upgrade",
                "plan": "premium_individual",
                "event_id": "u10",
                "event_key": 210,
            },
        )
    return warehouse_dsn


def _labels(dsn: str, as_of_offset: int) -> pd.DataFrame:
    frame = labels.churn_labels([D], _day(as_of_offset), dsn=dsn)
    return frame.set_index("user_id")


def test_labels_when_everything_is_observed(scenario: str) -> None:
    got = _labels(scenario, 90 + 29)
    expect = {  # user: (label_7, label_30, label_90)
        1: (True, True, True),
        2: (False, True, True),
        3: (False, False, False),
        4: (True, True, True),
        5: (True, True, True),
        6: (True, True, True),
        7: (False, False, False),
        8: (True, True, True),
        9: (False, False, True),  # silent again after D+30: churn day D+31
        10: (False, False, False),
    }
    for user, want in expect.items():
        row = got.loc[user]
        assert (row.label_7, row.label_30, row.label_90) == want, user
    assert got.loc[1, "duration"] == 5 and got.loc[1, "event"]
    assert got.loc[4, "duration"] == 1 and got.loc[4, "churn_day"] == _day(-9)
    assert got.loc[8, "churn_day"] == _day(1)


def test_paying_labels_are_known_once_d_plus_h_has_passed(scenario: str) -> None:
    on_boundary = _labels(scenario, 7)
    assert on_boundary.loc[3, "label_7"] == False  # noqa: E712 -- D+7 observed: a real 0
    assert on_boundary.loc[1, "label_7"] == True  # noqa: E712
    assert pd.isna(on_boundary.loc[3, "label_30"])
    before = _labels(scenario, 6)
    assert before.loc[[1, 2, 3], "label_7"].isna().all()
    # the cancel on D+5 is already visible: the survival view has it, the label waits
    assert before.loc[1, "event"] and before.loc[1, "duration"] == 5


def test_free_labels_wait_for_the_whole_silence_window(scenario: str) -> None:
    # the latest candidate churn day for H = 7 is D+7; its silence D+7 .. D+36 decides it
    known = _labels(scenario, 7 + 29)
    assert known.loc[9, "label_7"] == False  # noqa: E712
    assert known.loc[5, "label_7"] == True  # noqa: E712
    one_day_short = _labels(scenario, 7 + 28)
    free = one_day_short[~one_day_short["is_paying"]]
    assert free["label_7"].isna().all()
    assert free["label_30"].isna().all() and free["label_90"].isna().all()


def test_censored_labels_are_never_zero(scenario: str) -> None:
    for as_of in range(0, 125, 4):
        got = _labels(scenario, as_of)
        for h in labels.HORIZONS:
            col = got[f"label_{h}"]
            paying_known = as_of >= h
            free_known = as_of >= h + 29
            assert col[got["is_paying"]].notna().all() == paying_known
            assert col[~got["is_paying"]].notna().all() == free_known
            if not free_known:
                assert col[~got["is_paying"]].isna().all()


def test_paying_labels_match_the_simulator(world, world_dsn: str) -> None:
    """The 10-day conftest world: 7-day labels of paying users against the true cancels."""
    as_of = world.last_day
    dates = [world.start + timedelta(days=i) for i in range(world.days - 7)]
    got = labels.churn_labels(dates, as_of, dsn=world_dsn)
    paying = got[got["is_paying"]]
    assert paying["label_7"].notna().all()
    assert got.loc[~got["is_paying"], "label_7"].isna().all()  # free: needs 36 more days
    truth = pq.read_table(world.truth / "churn_events.parquet").to_pandas()
    cancels = truth[truth["kind"] == "paid_cancel"]
    expected = []
    for row in paying.itertuples():
        days = cancels.loc[cancels["user_id"] == row.user_id, "churn_date"]
        expected.append(bool(((days > row.dt) & (days <= row.dt + timedelta(days=7))).any()))
    assert paying["label_7"].astype(bool).tolist() == expected
    assert len(expected) > 20  # (cancels are rare in 10 days; the churn world has more)
