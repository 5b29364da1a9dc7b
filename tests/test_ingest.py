"""Ingestion against a real PostgreSQL: contract rules, idempotency, atomicity, bad files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from landing import (
    DAY,
    INGEST_TABLES,
    folder,
    good_play,
    good_sub,
    good_track,
    good_user,
    write_csv,
    write_day,
    write_parquet,
)
from ml_tasks import contract, ingest, warehouse


def checksums(dsn: str) -> dict[str, tuple[int, str]]:
    with warehouse.connect(dsn) as conn:
        return {t: warehouse.table_checksum(conn, t) for t in INGEST_TABLES}


def quarantined(dsn: str, dataset: str | None = None) -> list[tuple]:
    with warehouse.connect(dsn) as conn:
        q = (
            "SELECT dataset, source_file, source_row, reasons, payload"
            " FROM quarantine.rejected_rows"
        )
        params: tuple = ()
        if dataset:
            q += " WHERE dataset = %s"
            params = (dataset,)
        return conn.execute(q + " ORDER BY 1, 2, 3", params).fetchall()


def scalar(dsn: str, query: str, params: tuple = ()):
    with warehouse.connect(dsn) as conn:
        return conn.execute(query, params).fetchone()[0]


# --------------------------------------------------------------------------- rule by rule

NOON = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)  # the clock for the "future" case

# (dataset, column, bad value, expected reason fragment, ingest clock or None)
RULE_CASES = [
    ("listening_events", "event_id", " ", "event_id: empty string", None),
    ("listening_events", "event_id", None, "event_id: missing value", None),
    ("listening_events", "user_id", 0, "user_id: must be > 0", None),
    ("listening_events", "user_id", -7, "user_id: must be > 0", None),
    ("listening_events", "user_id", "abc", "user_id: not a valid int64", None),
    ("listening_events", "user_id", "1.5", "user_id: not a valid int64", None),
    ("listening_events", "user_id", "99999999999999999999", "user_id: not a valid int64", None),
    ("listening_events", "track_id", "  ", "track_id: empty string", None),
    (
        "listening_events",
        "played_at",
        "2026-11-04T23:59:59Z",
        "played_at: outside the folder",
        None,
    ),
    (
        "listening_events",
        "played_at",
        "2026-11-06T00:00:00Z",
        "played_at: outside the folder",
        None,
    ),
    ("listening_events", "played_at", "yesterday", "played_at: not an ISO 8601", None),
    ("listening_events", "played_at", "2026-11-05T10:00:00", "played_at: not an ISO 8601", None),
    ("listening_events", "played_at", "2026-11-05T12:00:01Z", "played_at: in the future", NOON),
    ("listening_events", "ms_played", -1, "ms_played: must be >= 0", None),
    ("listening_events", "ms_played", 800_001, "ms_played: more than 4 x track_duration_ms", None),
    ("listening_events", "ms_played", "3000000000", "ms_played: not a valid int32", None),
    ("listening_events", "track_duration_ms", 0, "track_duration_ms: must be > 0", None),
    ("listening_events", "skipped", "maybe", "skipped: not a valid bool", None),
    ("listening_events", "context_type", "telepathy", "context_type: not one of", None),
    ("listening_events", "device_type", "toaster", "device_type: not one of", None),
    ("listening_events", "shared", None, "shared: missing value", None),
    ("listening_events", "liked", "2", "liked: not a valid bool", None),
    ("subscription_events", "event_id", None, "event_id: missing value", None),
    ("subscription_events", "user_id", 0, "user_id: must be > 0", None),
    (
        "subscription_events",
        "event_at",
        "2026-11-07T01:00:00Z",
        "event_at: outside the folder",
        None,
    ),
    ("subscription_events", "event_type", "refund", "event_type: not one of", None),
    ("subscription_events", "plan", "platinum", "plan: not one of", None),
    ("subscription_events", "amount", "-1.00", "amount: must be >= 0", None),
    ("subscription_events", "amount", "1.234", "amount: not a valid decimal", None),
    ("subscription_events", "amount", "NaN", "amount: not a valid decimal", None),
    ("subscription_events", "currency", "eur", "currency: does not match", None),
    ("subscription_events", "currency", "EURO", "currency: does not match", None),
    ("subscription_events", "auto_renew", "sometimes", "auto_renew: not a valid bool", None),
    ("users", "user_id", -1, "user_id: must be > 0", None),
    ("users", "signup_date", "2026-11-06", "signup_date: after the folder's day", None),
    ("users", "signup_date", "2026-13-01", "signup_date: not a valid date", None),
    ("users", "country", "SWE", "country: does not match", None),
    ("users", "birth_year", 1850, "birth_year: outside 1900", None),
    ("users", "birth_year", DAY.year - 3, "birth_year: outside 1900", None),
    ("users", "acquisition_channel", "tv_ads", "acquisition_channel: not one of", None),
    ("tracks", "track_id", None, "track_id: missing value", None),
    ("tracks", "artist_id", " ", "artist_id: empty string", None),
    ("tracks", "release_date", "soon", "release_date: not a valid date", None),
    ("tracks", "duration_ms", 0, "duration_ms: must be > 0", None),
    ("tracks", "explicit", "perhaps", "explicit: not a valid bool", None),
    ("tracks", "preview_path", "/etc/passwd", "preview_path: not a relative path", None),
    ("tracks", "preview_path", "audio/../../x.wav", "preview_path: not a relative path", None),
    ("tracks", "preview_path", "clips/x.wav", "preview_path: not a relative path", None),
]


def _good_rows(dataset: str, day: date) -> list[dict]:
    return {
        "users": [good_user(i, day) for i in (1, 2, 3)],
        "tracks": [good_track(t, day) for t in ("t1", "t2")],
        "listening_events": [good_play(f"ok{i}", 1 + i % 3, "t1", day, i) for i in range(5)],
        "subscription_events": [good_sub("s-ok", 1, day)],
    }[dataset]


@pytest.mark.parametrize(
    ("dataset", "column", "value", "reason", "day"),
    RULE_CASES,
    ids=[f"{c[0]}.{c[1]}={c[2]!r}" for c in RULE_CASES],
)
def test_every_contract_rule_quarantines_the_row(
    warehouse_dsn, landing_root, dataset, column, value, reason, day
) -> None:
    now = day if isinstance(day, datetime) else None
    day = DAY if now or day is None else day
    rows = {name: _good_rows(name, day) for name in contract.DATASETS_BY_NAME}
    bad = dict(rows[dataset][0])
    key = contract.dataset(dataset).key
    if key != column:
        bad[key] = 99 if dataset == "users" else "bad-1"
    bad[column] = value
    rows[dataset].append(bad)
    write_day(
        landing_root,
        day,
        users=rows["users"],
        tracks=rows["tracks"],
        plays=rows["listening_events"],
        subs=rows["subscription_events"],
    )
    result = ingest.ingest_day(day, now=now)

    q = quarantined(warehouse_dsn, dataset)
    assert len(q) == 1, q
    _, source_file, source_row, reasons, payload = q[0]
    assert any(reason in r for r in reasons), reasons
    assert source_row == len(rows[dataset])  # the last data row of the file
    assert source_file == f"{dataset}/dt={day}/part-000.csv"
    assert payload[column] == (None if value is None else str(value))  # as delivered
    res = result.datasets[dataset]
    assert (res.rows_read, res.rows_accepted, res.rows_quarantined) == (
        len(rows[dataset]),
        len(rows[dataset]) - 1,
        1,
    )


def test_every_rule_of_the_contract_has_a_case() -> None:
    covered = {(c[0], c[3].split(":")[0]) for c in RULE_CASES}
    for ds in contract.DATASETS:
        for col in ds.columns:
            if (
                col.kind is not contract.Kind.STRING
                or col.non_empty
                or col.allowed
                or col.pattern
                or col.relative_path
            ):
                if col.name == "gender" or (
                    col.kind is contract.Kind.STRING and col.nullable and not col.relative_path
                ):
                    continue
                assert (ds.name, col.name) in covered, f"no bad-row case for {ds.name}.{col.name}"


def test_row_breaking_several_rules_lists_every_reason(warehouse_dsn, landing_root) -> None:
    bad = good_play("multi")
    bad.update(user_id=-1, context_type="x", device_type="y", ms_played=10_000_000)
    write_day(landing_root, plays=[good_play("a"), bad])
    ingest.ingest_day(DAY)
    [(_, _, _, reasons, _)] = quarantined(warehouse_dsn)
    assert len(reasons) == 4
    assert {r.split(":")[0] for r in reasons} == {
        "user_id",
        "context_type",
        "device_type",
        "ms_played",
    }


def test_cross_rule_free_plan_must_cost_nothing(warehouse_dsn, landing_root) -> None:
    free_paid = good_sub("s2")
    free_paid.update(plan="free", amount="4.99")
    free_ok = good_sub("s3")
    free_ok.update(plan="free", amount="0")
    write_day(landing_root, subs=[free_paid, free_ok])
    ingest.ingest_day(DAY)
    [(_, _, _, reasons, _)] = quarantined(warehouse_dsn)
    assert reasons == ["amount: must be 0 for the free plan"]
    assert scalar(warehouse_dsn, "SELECT count(*) FROM raw.subscription_events") == 1


# --------------------------------------------------------------------------- nothing lost


def test_rows_read_equals_accepted_plus_quarantined_per_file(warehouse_dsn, landing_root) -> None:
    plays = [good_play(f"e{i}", 1, "t1", DAY, i % 24) for i in range(30)]
    plays[3]["user_id"] = "x"
    plays[7] = dict(plays[6])  # duplicate delivery
    write_day(landing_root, plays=plays)
    second = folder(landing_root, "listening_events") / "part-001.parquet"
    write_parquet(
        second,
        "listening_events",
        [good_play(f"p{i}", 2, "t2", DAY, 3) for i in range(5)] + [plays[0]],
    )
    ingest.ingest_day(DAY)
    with warehouse.connect(warehouse_dsn) as conn:
        log_rows = conn.execute(
            "SELECT source_file, rows_read, rows_accepted, rows_quarantined FROM raw.ingest_log"
            " WHERE dataset = 'listening_events' ORDER BY 1"
        ).fetchall()
        raw_by_file = dict(
            conn.execute(
                "SELECT source_file, count(*) FROM raw.listening_events GROUP BY 1"
            ).fetchall()
        )
        q_by_file = dict(
            conn.execute(
                "SELECT source_file, count(*) FROM quarantine.rejected_rows GROUP BY 1"
            ).fetchall()
        )
    assert [r[0] for r in log_rows] == [
        "listening_events/dt=2026-11-05/part-000.csv",
        "listening_events/dt=2026-11-05/part-001.parquet",
    ]
    for source_file, read, accepted, rejected in log_rows:
        assert read == accepted + rejected
        assert raw_by_file.get(source_file, 0) == accepted
        assert q_by_file.get(source_file, 0) == rejected
    assert log_rows[0][1:] == (30, 28, 2)
    assert log_rows[1][1:] == (6, 5, 1)  # its copy of e0 came after the CSV's: duplicate


def test_duplicates_keep_the_first_delivery_and_quarantine_the_rest(
    warehouse_dsn, landing_root
) -> None:
    first = good_play("dup", 1, "t1", DAY, 1)
    again = dict(first)
    write_day(landing_root, plays=[first, good_play("other"), again, again])
    ingest.ingest_day(DAY)
    with warehouse.connect(warehouse_dsn) as conn:
        kept = conn.execute(
            "SELECT source_row FROM raw.listening_events WHERE event_id = 'dup'"
        ).fetchall()
    assert kept == [(1,)]
    q = quarantined(warehouse_dsn)
    assert [r[2] for r in q] == [3, 4]
    assert all(r[3] == [contract.DUPLICATE_REASON] for r in q)


def test_event_already_accepted_on_another_day_is_quarantined(warehouse_dsn, landing_root) -> None:
    day2 = DAY + timedelta(days=1)
    write_day(landing_root, DAY, plays=[good_play("e1", day=DAY), good_play("e2", day=DAY)])
    write_day(landing_root, day2, plays=[good_play("e1", day=day2), good_play("e3", day=day2)])
    ingest.ingest_day(DAY)
    ingest.ingest_day(day2)
    q = quarantined(warehouse_dsn, "listening_events")
    assert len(q) == 1 and q[0][4]["event_id"] == "e1"
    assert "on another day" in q[0][3][0]
    assert scalar(warehouse_dsn, "SELECT count(*) FROM raw.listening_events") == 3


def test_cross_day_confirmation_probes_indexes_instead_of_scanning_the_history(
    warehouse_dsn, landing_root
) -> None:
    """The few ids the keys table flags are confirmed against the other days' event_key
    indexes. Their temp table must carry statistics: unanalyzed, the planner took it for
    ~1,000 rows and hash-joined it with a scan of every row ever loaded (11 s a day on a
    220-day world of 10M plays, growing with every day kept)."""
    days = [DAY + timedelta(days=i) for i in range(3)]
    for i, day in enumerate(days):
        plays = [good_play(f"d{i}-{k}", 1 + k % 3, "t1", day, k % 24) for k in range(20_000)]
        write_day(landing_root, day, plays=plays)
        ingest.ingest_day(day)
    last = DAY + timedelta(days=3)
    plays = [good_play(f"n{k}", 1 + k % 3, "t1", last, k % 24) for k in range(20_000)]
    write_day(landing_root, last, plays=[good_play("d0-7", day=last), *plays])
    partitions = [warehouse.partition_name("raw.listening_events", d) for d in days]

    def seq_scans() -> list[int]:
        with warehouse.connect(warehouse_dsn) as conn:
            return [
                conn.execute(
                    "SELECT seq_scan FROM pg_stat_user_tables WHERE relid = %s::regclass", (p,)
                ).fetchone()[0]
                for p in partitions
            ]

    before = seq_scans()
    ingest.ingest_day(last)
    q = quarantined(warehouse_dsn, "listening_events")
    assert [r[4]["event_id"] for r in q] == ["d0-7"] and "on another day" in q[0][3][0]
    assert seq_scans() == before


def runs_from_partitions(ds: contract.Dataset) -> str:
    """SQL for each day's (dt, run, count) computed from the partitions, as 0017 fills them."""
    return f"""
        SELECT dt, string_agg(int8send(event_key), ''::bytea ORDER BY event_key) AS event_keys,
               count(*)::integer AS key_count
        FROM (SELECT DISTINCT ({ds.time_column} AT TIME ZONE 'UTC')::date AS dt, event_key
              FROM {ds.raw_table}) k
        GROUP BY dt"""


def event_keys_match_partitions(dsn: str) -> bool:
    """Each day's key run holds exactly the distinct event keys of its partition, sorted,
    and no day without rows has a run."""
    with warehouse.connect(dsn) as conn:
        for ds in contract.DATASETS:
            if not ds.is_event:
                continue
            expected = runs_from_partitions(ds)
            diff = conn.execute(
                f"""
                SELECT count(*) FROM (
                    ({expected} EXCEPT SELECT dt, event_keys, key_count FROM {ds.key_runs_table})
                    UNION ALL
                    (SELECT dt, event_keys, key_count FROM {ds.key_runs_table} EXCEPT {expected})
                ) d"""
            ).fetchone()[0]
            if diff:
                return False
    return True


def key_run(dsn: str, ds_name: str, day: date) -> list[int]:
    """The keys of one day's run, decoded as ingestion reads them."""
    import numpy as np

    with warehouse.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT event_keys FROM raw.{ds_name}_key_runs WHERE dt = %s", (day,), binary=True
        ).fetchone()
    return [] if row is None else np.frombuffer(row[0], ">i8").astype(np.int64).tolist()


def test_event_keys_follow_redelivered_and_withdrawn_days(warehouse_dsn, landing_root) -> None:
    """An id withdrawn by a redelivered day no longer blocks a later day that carries it."""
    day2, day3 = DAY + timedelta(days=1), DAY + timedelta(days=2)
    write_day(landing_root, DAY, plays=[good_play("a", day=DAY), good_play("b", day=DAY)])
    write_day(landing_root, day2, plays=[good_play("c", day=day2)], subs=[good_sub("s1", day=day2)])
    ingest.ingest_day(DAY)
    ingest.ingest_day(day2)
    assert event_keys_match_partitions(warehouse_dsn)
    # upstream withdraws play "b" from the first day; it turns up on the third
    write_day(landing_root, DAY, plays=[good_play("a", day=DAY)])
    write_day(landing_root, day3, plays=[good_play("b", day=day3), good_play("a", day=day3)])
    ingest.ingest_day(DAY)
    ingest.ingest_day(day3)
    assert event_keys_match_partitions(warehouse_dsn)
    with warehouse.connect(warehouse_dsn) as conn:
        events = sorted(conn.execute("SELECT event_id, played_at::date FROM raw.listening_events"))
    assert [e for e, _ in events] == ["a", "b", "c"]
    [q] = quarantined(warehouse_dsn, "listening_events")
    assert q[4]["event_id"] == "a" and "on another day" in q[3][0]
    # a day redelivered empty loses its run; a day never delivered has none
    write_day(landing_root, day2, plays=[])
    ingest.ingest_day(day2)
    assert key_run(warehouse_dsn, "listening_events", day2) == []
    assert len(key_run(warehouse_dsn, "subscription_events", day2)) == 1
    assert event_keys_match_partitions(warehouse_dsn)


def test_key_runs_are_sorted_signed_and_found_across_many_days(warehouse_dsn, landing_root) -> None:
    """Runs are ascending as signed 64-bit integers (the hashes span both signs), and an id
    is found whichever of several earlier days holds it, first or last in its run."""
    import numpy as np

    days = [DAY + timedelta(days=i) for i in range(4)]
    for i, day in enumerate(days[:3]):
        write_day(landing_root, day, plays=[good_play(f"d{i}-{j}", day=day) for j in range(40)])
        ingest.ingest_day(day)
    runs = {day: key_run(warehouse_dsn, "listening_events", day) for day in days[:3]}
    for run in runs.values():
        assert run == sorted(set(run)) and len(run) == 40
        assert run[0] < 0 < run[-1]
    # the smallest and largest key of each earlier day, by id
    ids = {}
    for i in range(3):
        hashes = ingest.string_hashes(pa.array([f"d{i}-{j}" for j in range(40)])).view(np.int64)
        ids[int(hashes.min())] = f"d{i}-{int(hashes.argmin())}"
        ids[int(hashes.max())] = f"d{i}-{int(hashes.argmax())}"
    repeated = sorted(ids.values())
    write_day(
        landing_root,
        days[3],
        plays=[good_play(e, day=days[3]) for e in repeated] + [good_play("new", day=days[3])],
    )
    result = ingest.ingest_day(days[3])
    assert result.datasets["listening_events"].rows_accepted == 1
    refused = sorted(r[4]["event_id"] for r in quarantined(warehouse_dsn, "listening_events"))
    assert refused == repeated
    assert event_keys_match_partitions(warehouse_dsn)


def test_key_runs_migration_covers_the_events_already_loaded(warehouse_dsn, landing_root) -> None:
    """A warehouse loaded before 0017 gets runs, from its partitions, equal to ingestion's."""
    day2 = DAY + timedelta(days=1)
    write_day(landing_root, DAY, plays=[good_play(f"a{i}", day=DAY) for i in range(5)])
    write_day(landing_root, day2, plays=[good_play("b", day=day2)], subs=[good_sub("s", day=day2)])
    ingest.ingest_day(DAY)
    ingest.ingest_day(day2)
    tables = [f"raw.{name}_key_runs" for name in ("listening_events", "subscription_events")]
    with warehouse.connect(warehouse_dsn) as conn:
        written = [
            conn.execute(f"SELECT dt, event_keys, key_count FROM {t} ORDER BY dt").fetchall()
            for t in tables
        ]
    with warehouse.connect(warehouse_dsn, autocommit=True) as conn:  # back to before 0017
        conn.execute(f"DROP TABLE {', '.join(tables)}")
        conn.execute("DELETE FROM ml.schema_migrations WHERE version = 17")
        applied = [m.path.name for m in warehouse.migrate(conn)]
        migrated = [
            conn.execute(f"SELECT dt, event_keys, key_count FROM {t} ORDER BY dt").fetchall()
            for t in tables
        ]
    assert applied == ["0017_event_key_runs.sql"]
    assert migrated == written
    assert [len(w) for w in written] == [2, 2]  # both days hold plays and a subscription


def test_cross_day_check_is_exact_under_hash_collisions(
    warehouse_dsn, landing_root, monkeypatch
) -> None:
    """Every hash colliding across days: only the id really accepted before is refused."""
    import numpy as np

    day2 = DAY + timedelta(days=1)
    write_day(landing_root, DAY, plays=[good_play(f"d1-{i}", day=DAY) for i in range(50)])
    write_day(
        landing_root,
        day2,
        plays=[good_play(f"d2-{i}", day=day2) for i in range(50)] + [good_play("d1-7", day=day2)],
    )
    monkeypatch.setattr(ingest, "string_hashes", lambda arr: np.zeros(len(arr), np.uint64))
    ingest.ingest_day(DAY)
    result = ingest.ingest_day(day2)
    assert result.datasets["listening_events"].rows_accepted == 50
    [q] = quarantined(warehouse_dsn, "listening_events")
    assert q[4]["event_id"] == "d1-7" and "on another day" in q[3][0]
    assert event_keys_match_partitions(warehouse_dsn)


def test_unknown_users_and_tracks_are_kept_and_flagged(warehouse_dsn, landing_root) -> None:
    plays = [good_play("k1", 1, "t1"), good_play("u1", 404, "t1"), good_play("u2", 1, "nope")]
    write_day(landing_root, plays=plays, subs=[good_sub("s1", 405)])
    ingest.ingest_day(DAY)
    with warehouse.connect(warehouse_dsn) as conn:
        flags = dict(
            (r[0], r[1:])
            for r in conn.execute(
                "SELECT event_id, unknown_user, unknown_track FROM raw.listening_events"
            )
        )
        sub_flag = conn.execute("SELECT unknown_user FROM raw.subscription_events").fetchone()
    assert flags == {"k1": (False, False), "u1": (True, False), "u2": (False, True)}
    assert sub_flag == (True,)
    assert quarantined(warehouse_dsn) == []


@pytest.mark.parametrize(
    ("known", "plays"),
    [
        # dense ids (looked up in a mask): below, inside a gap, known, above
        ((5, 6, 8), {"below": 4, "gap": 7, "known": 8, "above": 9}),
        # sparse ids (hashed by Arrow's is_in instead)
        ((2, 10**12), {"below": 1, "gap": 3, "known": 10**12, "above": 10**12 + 1}),
    ],
    ids=["dense", "sparse"],
)
def test_unknown_user_flags_whatever_the_id_layout(
    warehouse_dsn, landing_root, known, plays
) -> None:
    """Exactly the plays of users not delivered are flagged, on both lookup paths."""
    write_day(
        landing_root,
        users=[good_user(u) for u in known],
        plays=[good_play(name, user) for name, user in plays.items()],
        subs=[good_sub("s-known", known[-1]), good_sub("s-gap", plays["gap"])],
    )
    ingest.ingest_day(DAY)
    with warehouse.connect(warehouse_dsn) as conn:
        flags = dict(conn.execute("SELECT event_id, unknown_user FROM raw.listening_events"))
        subs = dict(conn.execute("SELECT event_id, unknown_user FROM raw.subscription_events"))
    assert flags == {"below": True, "gap": True, "known": False, "above": True}
    assert subs == {"s-known": False, "s-gap": True}


def test_users_known_only_from_a_later_day_count_as_unknown(warehouse_dsn, landing_root) -> None:
    """The flag depends on deliveries up to the day, not on the order days were ingested."""
    day2 = DAY + timedelta(days=1)
    write_day(landing_root, DAY, users=[good_user(1)], plays=[good_play("a", 7, "t1", DAY)])
    write_day(landing_root, day2, users=[good_user(7, day2)], plays=[good_play("b", 7, "t1", day2)])
    ingest.ingest_day(day2)
    ingest.ingest_day(DAY)
    with warehouse.connect(warehouse_dsn) as conn:
        flags = dict(conn.execute("SELECT event_id, unknown_user FROM raw.listening_events"))
    assert flags == {"a": True, "b": False}


# --------------------------------------------------------------------------- idempotency


def test_reingest_leaves_identical_checksums(warehouse_dsn, landing_root) -> None:
    plays = [good_play(f"e{i}", 1 + i % 3, "t1", DAY, i % 24) for i in range(40)]
    plays[5]["device_type"] = "fridge"
    plays.append(dict(plays[2]))
    write_day(landing_root, plays=plays)
    write_day(landing_root, DAY + timedelta(days=1), fmt="parquet")
    ingest.ingest_day(DAY)
    ingest.ingest_day(DAY + timedelta(days=1))
    first = checksums(warehouse_dsn)
    ingest.ingest_day(DAY)
    ingest.ingest_day(DAY + timedelta(days=1))
    assert checksums(warehouse_dsn) == first
    assert first["raw.listening_events"][0] == 39 + 20
    assert first["quarantine.rejected_rows"][0] == 2
    assert scalar(warehouse_dsn, "SELECT count(*) FROM raw.ingest_runs") == 4


def test_the_swapped_in_day_arrives_frozen(warehouse_dsn, landing_root) -> None:
    """The events are COPYed with FREEZE into a stage emptied in the same transaction: every
    page of the day is all-frozen (a plain VACUUM of rows this young would leave them
    unfrozen), so no reader or index build sets hint bits on it. Two files go through the
    one transaction."""
    with warehouse.connect(warehouse_dsn) as conn:
        if not conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_visibility'"
        ).fetchone():
            pytest.skip("the server has no pg_visibility extension to read the map with")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_visibility")
        conn.commit()
    plays = [good_play(f"z{i}", 1 + i % 3, "t1", DAY, i % 24) for i in range(4000)]
    write_day(landing_root, plays=plays[:2500])
    write_csv(
        folder(landing_root, "listening_events") / "part-x.csv", "listening_events", plays[2500:]
    )
    result = ingest.ingest_day(DAY)
    assert result.datasets["listening_events"].rows_accepted == 4000
    partition = warehouse.partition_name("raw.listening_events", DAY)
    pages, frozen = scalar(
        warehouse_dsn,
        "SELECT ARRAY[count(*), count(*) FILTER (WHERE all_frozen)]"
        " FROM pg_visibility_map(%s::regclass)",
        (partition,),
    )
    assert pages > 1
    assert frozen == pages


def test_the_swapped_in_day_is_vacuumed(warehouse_dsn, landing_root) -> None:
    """The day arrives with its visibility map set: filling the keys table then reads the
    stage's event_key index without fetching every heap row (and readers need not set
    hint bits on every page)."""
    write_day(
        landing_root, plays=[good_play(f"v{i}", 1 + i % 3, "t1", DAY, i % 24) for i in range(3000)]
    )
    ingest.ingest_day(DAY)
    partition = warehouse.partition_name("raw.listening_events", DAY)
    pages, visible = scalar(
        warehouse_dsn,
        "SELECT ARRAY[relpages, relallvisible] FROM pg_class WHERE oid = %s::regclass",
        (partition,),
    )
    assert pages > 1
    assert visible == pages


def test_redelivered_day_replaces_the_old_one(warehouse_dsn, landing_root) -> None:
    write_day(
        landing_root,
        plays=[good_play(f"old{i}") for i in range(10)],
        users=[good_user(1), good_user(2)],
    )
    ingest.ingest_day(DAY)
    # upstream corrects the day: other plays, user 2 withdrawn, user 1 changed
    changed = good_user(1)
    changed["country"] = "NO"
    write_day(landing_root, plays=[good_play(f"new{i}") for i in range(4)], users=[changed])
    ingest.ingest_day(DAY)
    with warehouse.connect(warehouse_dsn) as conn:
        events = sorted(r[0] for r in conn.execute("SELECT event_id FROM raw.listening_events"))
        users = conn.execute("SELECT user_id, country FROM raw.users ORDER BY 1").fetchall()
        partitions = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'raw.listening_events'::regclass"
        ).fetchone()[0]
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE '\\_stage\\_%'"
        ).fetchone()[0]
    assert events == [f"new{i}" for i in range(4)]
    assert users == [(1, "NO")]
    assert partitions == 1
    assert leftovers == 0


def test_latest_delivery_of_a_dimension_wins_and_withdrawal_restores(
    warehouse_dsn, landing_root
) -> None:
    day2 = DAY + timedelta(days=1)
    moved = good_user(1, day2)
    moved["country"] = "DE"
    write_day(landing_root, DAY, users=[good_user(1)])
    write_day(landing_root, day2, users=[moved])
    ingest.ingest_day(DAY)
    ingest.ingest_day(day2)
    row = "SELECT country, first_delivered, last_delivered FROM raw.users WHERE user_id = 1"
    assert scalar(warehouse_dsn, "SELECT count(*) FROM raw.user_versions") == 2
    with warehouse.connect(warehouse_dsn) as conn:
        assert conn.execute(row).fetchone() == ("DE", DAY, day2)
    write_day(landing_root, day2, users=[])
    ingest.ingest_day(day2)
    with warehouse.connect(warehouse_dsn) as conn:
        assert conn.execute(row).fetchone() == ("SE", DAY, DAY)


def test_duplicate_dimension_keys_keep_the_last_row(warehouse_dsn, landing_root) -> None:
    a, b = good_user(1), good_user(1)
    b["country"] = "FI"
    write_day(landing_root, users=[a, b])
    ingest.ingest_day(DAY)
    assert scalar(warehouse_dsn, "SELECT country FROM raw.users WHERE user_id = 1") == "FI"
    [(_, _, row, reasons, _)] = quarantined(warehouse_dsn, "users")
    assert row == 1 and "duplicate key" in reasons[0]


def test_small_batches_give_the_same_result(warehouse_dsn, landing_root) -> None:
    plays = [good_play(f"e{i}", 1 + i % 3, "t1", DAY, i % 24) for i in range(3500)]
    plays[2600] = dict(plays[10])  # duplicate in a later batch
    write_day(landing_root, plays=plays)
    ingest.ingest_day(DAY, chunk_rows=1000)
    small = checksums(warehouse_dsn)
    ingest.ingest_day(DAY, chunk_rows=100_000)
    assert checksums(warehouse_dsn) == small
    assert small["raw.listening_events"][0] == 3499
    rows = [r[2] for r in quarantined(warehouse_dsn)]
    assert rows == [2601]


def test_parquet_days_and_naive_parquet_timestamps(warehouse_dsn, landing_root) -> None:
    write_day(landing_root, fmt="parquet")
    path = folder(landing_root, "listening_events") / "part-000.parquet"
    table = pq.read_table(path)
    idx = table.schema.get_field_index("played_at")
    naive = table.column("played_at").cast(pa.timestamp("ms"))
    pq.write_table(table.set_column(idx, "played_at", naive), path)
    result = ingest.ingest_day(DAY)
    assert result.datasets["listening_events"].rows_accepted == 20
    assert scalar(
        warehouse_dsn, "SELECT min(played_at) = '2026-11-05 00:00+00' FROM raw.listening_events"
    )


def test_unknown_extra_columns_are_ignored_with_a_warning(
    warehouse_dsn, landing_root, caplog
) -> None:
    write_day(landing_root)
    cols = [*contract.LISTENING_EVENTS.column_names, "mood"]
    write_csv(
        folder(landing_root, "listening_events") / "part-000.csv",
        "listening_events",
        [dict(good_play("x1"), mood="happy")],
        columns=cols,
    )
    with caplog.at_level(logging.WARNING, logger="ml_tasks.ingest"):
        result = ingest.ingest_day(DAY)
    assert result.datasets["listening_events"].rows_accepted == 1
    assert "ignoring unknown column(s) mood" in caplog.text


# --------------------------------------------------------------------------- refused days


def _garbage_parquet(path: Path) -> None:
    path.with_suffix(".csv").unlink()
    path.write_bytes(b"this is not parquet at all")


def _truncated_parquet(path: Path) -> None:
    csv_path = path.with_suffix(".csv")
    write_parquet(path, "listening_events", [good_play(f"t{i}") for i in range(50)])
    csv_path.unlink()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _latin1_csv(path: Path) -> None:
    csv_path = path.with_suffix(".csv")
    text = csv_path.read_text().replace("playlist", "playlist")
    csv_path.write_bytes(
        text.encode()
        + "\nsø,1,t1,2026-11-05T01:00:00Z,1,2,false,playlist,mobile,false,false\n".encode("latin-1")
    )


def _missing_column(path: Path) -> None:
    csv_path = path.with_suffix(".csv")
    cols = [c for c in contract.LISTENING_EVENTS.column_names if c != "liked"]
    write_csv(csv_path, "listening_events", [good_play("m1")], columns=cols)


def _other_file_type(path: Path) -> None:
    (path.parent / "extra.json").write_text("{}")


def _empty_csv(path: Path) -> None:
    path.with_suffix(".csv").write_bytes(b"")


UNREADABLE = [
    (_garbage_parquet, "part-000.parquet", "not a readable Parquet file"),
    (_truncated_parquet, "part-000.parquet", "Parquet"),
    (_latin1_csv, "part-000.csv", "not valid UTF-8"),
    (_missing_column, "part-000.csv", "missing required column(s) liked"),
    (_other_file_type, "extra.json", "not a .parquet or .csv file"),
    (_empty_csv, "part-000.csv", "empty file"),
]


@pytest.mark.parametrize(
    ("breaker", "filename", "problem"),
    UNREADABLE,
    ids=[u[0].__name__.strip("_") for u in UNREADABLE],
)
def test_unreadable_file_refuses_the_day_and_changes_nothing(
    warehouse_dsn, landing_root, breaker, filename, problem
) -> None:
    write_day(landing_root, plays=[good_play(f"v1-{i}") for i in range(8)])
    ingest.ingest_day(DAY)
    before = checksums(warehouse_dsn)
    write_day(landing_root, plays=[good_play(f"v2-{i}") for i in range(5)], users=[good_user(9)])
    breaker(folder(landing_root, "listening_events") / "part-000.parquet")
    with pytest.raises(ingest.UnreadableFile) as info:
        ingest.ingest_day(DAY)
    message = str(info.value)
    assert filename in message
    assert problem in message
    assert checksums(warehouse_dsn) == before


def test_failure_during_commit_leaves_the_old_day(warehouse_dsn, landing_root, monkeypatch) -> None:
    write_day(landing_root, plays=[good_play(f"v1-{i}") for i in range(8)])
    ingest.ingest_day(DAY)
    before = checksums(warehouse_dsn)
    write_day(
        landing_root, plays=[good_play(f"v2-{i}") for i in range(5)], subs=[good_sub("s9", 2)]
    )
    real_swap = warehouse.swap_day_partition

    def swap_then_die(conn, parent, stage, day):
        real_swap(conn, parent, stage, day)
        if parent == "raw.subscription_events":
            raise RuntimeError("killed mid-commit")

    monkeypatch.setattr(warehouse, "swap_day_partition", swap_then_die)
    with pytest.raises(RuntimeError, match="killed mid-commit"):
        ingest.ingest_day(DAY)
    assert checksums(warehouse_dsn) == before
    monkeypatch.setattr(warehouse, "swap_day_partition", real_swap)
    ingest.ingest_day(DAY)
    assert scalar(warehouse_dsn, "SELECT count(*) FROM raw.listening_events") == 5


def test_missing_success_marker_names_the_folders(warehouse_dsn, landing_root) -> None:
    write_day(landing_root)
    (folder(landing_root, "tracks") / contract.SUCCESS_MARKER).unlink()
    (folder(landing_root, "users") / contract.SUCCESS_MARKER).unlink()
    with pytest.raises(ingest.LandingIncomplete) as info:
        ingest.ingest_day(DAY)
    assert "tracks/dt=2026-11-05" in str(info.value)
    assert "users/dt=2026-11-05" in str(info.value)
    assert "listening_events" not in str(info.value)


def _encore(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "encore"
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=120)


def test_cli_ingests_and_fails_with_one_line(warehouse_dsn, landing_root) -> None:
    write_day(landing_root)
    env = dict(os.environ)
    ok = _encore("ingest", "--date", DAY.isoformat(), env=env)
    assert ok.returncode == 0, ok.stderr
    assert '"rows_accepted": 26' in ok.stdout
    missing = _encore("ingest", "--date", "2026-11-09", env=env)
    assert missing.returncode == 1
    lines = [line for line in missing.stderr.splitlines() if line.startswith("encore")]
    assert len(lines) == 1 and "not complete" in lines[0] and "dt=2026-11-09" in lines[0]
    bad_date = _encore("ingest", "--date", "11/09/2026", env=env)
    assert bad_date.returncode == 2 and "not a date" in bad_date.stderr


def test_hash_collisions_never_quarantine_distinct_ids(
    warehouse_dsn, landing_root, monkeypatch
) -> None:
    """Duplicate candidates come from 64-bit hashes; the SQL check is exact. With every
    hash colliding, distinct ids must all be accepted and only the true repeat refused."""
    import numpy as np

    plays = [good_play(f"e{i}", 1, "t1", DAY, i % 24) for i in range(300)]
    plays.append(dict(plays[17]))
    write_day(landing_root, plays=plays)
    monkeypatch.setattr(ingest, "string_hashes", lambda arr: np.zeros(len(arr), np.uint64))
    result = ingest.ingest_day(DAY, chunk_rows=1000)
    assert result.datasets["listening_events"].rows_accepted == 300
    [(_, _, row, reasons, payload)] = quarantined(warehouse_dsn)
    assert row == 301 and payload["event_id"] == "e17"
    assert reasons == [contract.DUPLICATE_REASON]


def _reference_hash(text: str) -> int:
    """string_hashes' documented function, one string in plain Python: the stored event
    keys depend on it never changing."""
    raw = text.encode()
    mask = (1 << 64) - 1
    h = 0
    for i, byte in enumerate(raw[:4096]):
        h = (h + (byte + 1) * pow(0x100000001B3, i + 1, 1 << 64)) & mask
    h ^= (len(raw) * 0x9E3779B97F4A7C15) & mask
    for mult in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h ^= h >> 33
        h = (h * mult) & mask
    return h ^ (h >> 33)


def test_string_hashes_equal_the_documented_function_on_both_paths() -> None:
    """Few distinct lengths go through the byte-matrix product, many through the per-byte
    sum: both give the reference function's values, past 4096 bytes and in slices too."""
    import random

    rnd = random.Random(7)
    few = [
        "".join(rnd.choice("abz\x00") for _ in range(rnd.choice([0, 1, 17, 4096, 5000])))
        for _ in range(60)
    ] + ["\u00e9\u00e9", "\u00e9ab", "x\u00e9y"]  # 4 and 5 bytes
    many = ["x" * n for n in range(ingest._HASH_MAX_LENGTHS + 5)] + ["\u00e9" * 3]
    one_length = [f"e{i:016x}" for i in range(50)]

    def lengths(values: list[str]) -> int:
        return len({len(v.encode()) for v in values})

    assert lengths(few) <= ingest._HASH_MAX_LENGTHS < lengths(many)
    for values in (few, many, one_length):
        arr = pa.array(values)
        assert ingest.string_hashes(arr).tolist() == [_reference_hash(v) for v in values]
        assert ingest.string_hashes(arr.slice(3)).tolist() == [
            _reference_hash(v) for v in values[3:]
        ]


def test_integer_text_is_read_exactly_whatever_else_the_batch_holds() -> None:
    """An integer is a sign and digits. Plain ones are cast in one go, the other shapes
    value by value: a value's verdict does not depend on its neighbours, and bigints past
    2**53 keep every digit."""
    cases = {
        "9223372036854775807": 9223372036854775807,
        "-9223372036854775808": -9223372036854775808,
        "12345678901234567": 12345678901234567,
        "-5": -5,
        "007": 7,
        "+5": 5,
        "+9223372036854775807": 9223372036854775807,
        "00000000000000000001": 1,
        "-" + "0" * 30 + "42": -42,
        "9" * 5000: None,
        "5.0": None,
        "0x10": None,
        " 5": None,
        "5.5": None,
        "abc": None,
        "-": None,
        "9223372036854775808": None,
    }
    alone = {
        text: ingest.parse_column(pa.array([text]), contract.Kind.INT64)[0][0].as_py()
        for text in cases
    }
    assert alone == cases
    plain = [t for t in cases if t.lstrip("-").isdigit() and cases[t] is not None]
    for odd in [t for t in cases if t not in plain]:
        values, bad = ingest.parse_column(pa.array([*plain, odd, None]), contract.Kind.INT64)
        assert values.to_pylist() == [cases[t] for t in plain] + [cases[odd], None]
        assert bad.tolist() == [False] * len(plain) + [cases[odd] is None, False]
    small, bad = ingest.parse_column(pa.array(["32767", "32768", "-7", "+1"]), contract.Kind.INT16)
    assert small.to_pylist() == [32767, None, -7, 1] and bad.tolist() == [False, True, False, False]


def test_nanosecond_timestamps_beside_an_impossible_date_quarantine_one_row() -> None:
    """An impossible date sends the batch past Arrow's cast to pandas, which reads
    nanoseconds: those are dropped to microseconds, not a failed file."""
    values, bad = ingest.parse_column(
        pa.array(["2026-11-05T10:00:00.123456789Z", "2026-02-30T00:00:00Z", None]),
        contract.Kind.TIMESTAMP,
    )
    assert values.to_pylist() == [datetime(2026, 11, 5, 10, 0, 0, 123456, tzinfo=UTC), None, None]
    assert bad.tolist() == [False, True, False]


def test_string_hashes_agree_on_equal_strings_in_any_slice() -> None:
    import numpy as np

    values = pa.array(["abc", "abd", "", "x" * 300, "abc", "é", "abd"])
    whole = ingest.string_hashes(values)
    part = ingest.string_hashes(values.slice(3))
    assert whole[0] == whole[4] and whole[1] == whole[6]
    assert len(set(whole[:4].tolist())) == 4
    assert np.array_equal(whole[3:], part)
