"""Great Expectations validation of a raw day (ml_tasks.validation), on a real PostgreSQL.

A fresh database per module on the local server (trust auth); small hand-made rows for one
day (2026-11-05), and for its neighbour (2026-11-06) where a test needs rows outside the day.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import threading
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ml_tasks import contract, validation, warehouse
from ml_tasks.validation import DayValidation, ValidationFailed, validate_day

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DAY = date(2026, 11, 5)
NEXT_DAY = DAY + timedelta(days=1)
TOLERANCE = 0.05
EVENTS = (contract.LISTENING_EVENTS, contract.SUBSCRIPTION_EVENTS)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dsn() -> str:
    """A migrated database of its own, dropped (forcibly) after the module."""
    name = f"encore_val_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {ADMIN_DSN}: {exc}")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = f"postgresql://postgres@127.0.0.1:5432/{name}"
    try:
        warehouse.ensure_migrated(target)
        with warehouse.connect(target) as conn:
            for ds in EVENTS:
                for day in (DAY, NEXT_DAY):
                    _create_partition(conn, ds.raw_table, day)
        yield target
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GX project for the module, so Data Docs accumulate as they do in production."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture
def clean(dsn: str) -> str:
    """Reset the warehouse to a clean DAY (and an empty NEXT_DAY)."""
    with warehouse.connect(dsn) as conn:
        conn.execute(
            "TRUNCATE raw.listening_events, raw.subscription_events, raw.user_versions,"
            " raw.track_versions, raw.ingest_log, monitoring.validation_results"
        )
        load_clean_day(conn, DAY)
    return dsn


def _create_partition(conn: psycopg.Connection, parent: str, day: date) -> None:
    low, high = warehouse.day_bounds(day)
    conn.execute(
        sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            warehouse.qualified(warehouse.partition_name(parent, day)),
            warehouse.qualified(parent),
            sql.Literal(low),
            sql.Literal(high),
        )
    )


def _ts(day: date, seconds: int) -> datetime:
    return datetime.fromisoformat(f"{day.isoformat()}T00:00:00+00:00") + timedelta(seconds=seconds)


def listening_row(day: date, n: int, **changes) -> dict:
    row = {
        "event_id": f"le-{day:%Y%m%d}-{n}",
        "user_id": 1 + n % 5,
        "track_id": f"t{1 + n % 3}",
        "played_at": _ts(day, 3600 + 97 * n),
        "ms_played": 30_000 + n,
        "track_duration_ms": 200_000,
        "skipped": n % 4 == 0,
        "context_type": contract.CONTEXT_TYPES[n % len(contract.CONTEXT_TYPES)],
        "device_type": contract.DEVICE_TYPES[n % len(contract.DEVICE_TYPES)],
        "shared": False,
        "liked": n % 7 == 0,
        "unknown_user": False,
        "unknown_track": False,
        "source_file": f"listening_events/dt={day}/part-0.csv",
        "source_row": n,
    }
    row.update(changes)
    return row


def subscription_row(day: date, n: int, **changes) -> dict:
    plan = contract.PLANS[n % len(contract.PLANS)]
    row = {
        "event_id": f"se-{day:%Y%m%d}-{n}",
        "user_id": 1 + n % 5,
        "event_at": _ts(day, 7200 + 301 * n),
        "event_type": contract.SUBSCRIPTION_EVENT_TYPES[n % len(contract.SUBSCRIPTION_EVENT_TYPES)],
        "plan": plan,
        "amount": 0 if plan == "free" else 9.99,
        "currency": "EUR",
        "auto_renew": True,
        "unknown_user": False,
        "source_file": f"subscription_events/dt={day}/part-0.parquet",
        "source_row": n,
    }
    row.update(changes)
    return row


def user_row(day: date, n: int, **changes) -> dict:
    row = {
        "dt": day,
        "user_id": n,
        "signup_date": date(2025, 1, 1) + timedelta(days=n),
        "country": "DE" if n % 2 else "FR",
        "birth_year": None if n == 3 else 1980 + n,
        "gender": None if n % 2 else "f",
        "acquisition_channel": contract.ACQUISITION_CHANNELS[n % 6],
        "source_file": f"users/dt={day}/users.csv",
        "source_row": n,
    }
    row.update(changes)
    return row


def track_row(day: date, n: int, **changes) -> dict:
    row = {
        "dt": day,
        "track_id": f"t{n}",
        "title": f"Song {n}",
        "artist_id": f"a{n}",
        "album_id": None if n == 2 else f"al{n}",
        "release_date": date(2020, 5, n),
        "duration_ms": 200_000,
        "genre": None if n == 3 else "rock",
        "explicit": False,
        "preview_path": None if n == 3 else f"audio/t{n}.wav",
        "source_file": f"tracks/dt={day}/tracks.parquet",
        "source_row": n,
    }
    row.update(changes)
    return row


def _event_key(event_id: str) -> int:
    """The id hash ingestion stores in event_key (ml_tasks.ingest.string_hashes)."""
    import numpy as np
    import pyarrow as pa

    from ml_tasks.ingest import string_hashes

    return int(string_hashes(pa.array([event_id])).view(np.int64)[0])


def insert(conn: psycopg.Connection, table: str, rows: list[dict]) -> None:
    if "event_id" in rows[0] and "event_key" not in rows[0]:
        rows = [{**r, "event_key": _event_key(r["event_id"])} for r in rows]
    cols = list(rows[0])
    stmt = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        warehouse.qualified(table),
        sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join(sql.Placeholder() * len(cols)),
    )
    with conn.cursor() as cur:
        cur.executemany(stmt, [tuple(r[c] for c in cols) for r in rows])


def log_ingest(
    conn: psycopg.Connection, day: date, dataset: str, read: int, quarantined: int
) -> None:
    conn.execute(
        "INSERT INTO raw.ingest_log (dt, dataset, source_file, file_format, file_bytes,"
        " file_sha256, rows_read, rows_accepted, rows_quarantined, contract_version)"
        " VALUES (%s, %s, %s, 'csv', 1000, 'sha', %s, %s, %s, %s)"
        " ON CONFLICT (dt, dataset, source_file) DO UPDATE SET rows_read = EXCLUDED.rows_read,"
        " rows_accepted = EXCLUDED.rows_accepted, rows_quarantined = EXCLUDED.rows_quarantined",
        (
            day,
            dataset,
            f"{dataset}/dt={day}/part-0.csv",
            read,
            read - quarantined,
            quarantined,
            contract.CONTRACT_VERSION,
        ),
    )


def load_clean_day(conn: psycopg.Connection, day: date) -> None:
    """A day that follows the contract: 40 plays, 7 subscription events, 5 users, 3 tracks."""
    insert(conn, "raw.user_versions", [user_row(day, n) for n in range(1, 6)])
    insert(conn, "raw.track_versions", [track_row(day, n) for n in range(1, 4)])
    insert(conn, "raw.listening_events", [listening_row(day, n) for n in range(40)])
    insert(conn, "raw.subscription_events", [subscription_row(day, n) for n in range(7)])
    log_ingest(conn, day, "listening_events", read=41, quarantined=1)  # 2.4 % quarantined
    log_ingest(conn, day, "subscription_events", read=7, quarantined=0)
    log_ingest(conn, day, "users", read=5, quarantined=0)
    log_ingest(conn, day, "tracks", read=3, quarantined=0)


def stored_results(dsn: str, day: date = DAY) -> list[tuple]:
    with warehouse.connect(dsn) as conn:
        return conn.execute(
            "SELECT suite, run_id, success, evaluated, failed, failures, data_docs_path"
            " FROM monitoring.validation_results WHERE dt = %s ORDER BY run_id, suite",
            (day,),
        ).fetchall()


def run(dsn: str, artifacts: Path, **kwargs) -> DayValidation:
    kwargs.setdefault("run_id", "test_run")
    kwargs.setdefault("tolerance", TOLERANCE)
    return validate_day(kwargs.pop("day", DAY), dsn=dsn, artifacts=artifacts, **kwargs)


# --------------------------------------------------------------------------- a clean day


def test_clean_day_passes_every_suite_and_records_it(clean: str, artifacts: Path) -> None:
    result = run(clean, artifacts, run_id="scheduled__2026-11-05T00:00:00+00:00")

    assert result.success
    assert [r.suite for r in result.reports] == [
        "raw.user_versions",
        "raw.track_versions",
        "raw.listening_events",
        "raw.subscription_events",
    ]
    for report in result.reports:
        assert report.success and report.failed == 0 and report.failures == []
        assert report.evaluated >= 10
    assert "passed" in result.summary()

    rows = stored_results(clean)
    assert len(rows) == 4
    assert {r[0] for r in rows} == {r.suite for r in result.reports}
    for _suite, run_id, success, evaluated, failed, failures, docs in rows:
        assert run_id == "scheduled__2026-11-05T00:00:00+00:00"
        assert success and evaluated >= 10 and failed == 0 and failures == []
        page = Path(docs)
        assert page.suffix == ".html" and page.is_file()
        assert page.is_relative_to(artifacts / "gx")
        assert "2026-11-05" in page.read_text(encoding="utf-8")  # the batch's dt marker
    index = artifacts / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    assert index.is_file()


def test_gx_project_is_file_backed_without_credentials(clean: str, artifacts: Path) -> None:
    run(clean, artifacts, datasets=(contract.USERS,))
    config = (artifacts / "gx" / "great_expectations.yml").read_text(encoding="utf-8")
    assert "${" + validation.URL_VARIABLE + "}" in config
    assert "127.0.0.1" not in config  # the URL is a runtime variable, never written down
    assert "analytics_enabled: false" in config
    assert "globally: false" in config  # no progress bars
    assert (artifacts / "gx" / "expectations").is_dir()
    assert list((artifacts / "gx" / "uncommitted" / "validations").rglob("*.json"))


# --------------------------------------------------------------------------- broken days


def _break_context_type(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE raw.listening_events SET context_type = 'podcast' WHERE source_row = 3")


def _duplicate_event_id(conn: psycopg.Connection) -> None:
    insert(
        conn,
        "raw.listening_events",
        [listening_row(DAY, 5, source_row=99, played_at=_ts(DAY, 80_000))],
    )


def _overlong_play(conn: psycopg.Connection) -> None:
    conn.execute(
        "UPDATE raw.listening_events SET ms_played = 4 * track_duration_ms + 1 WHERE source_row = 7"
    )


def _too_many_quarantined(conn: psycopg.Connection) -> None:
    log_ingest(conn, DAY, "subscription_events", read=10, quarantined=3)  # 30 % > 5 %


def _bad_country(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE raw.user_versions SET country = 'Germany' WHERE user_id = 2")


def _unknown_users(conn: psycopg.Connection) -> None:
    conn.execute(
        "UPDATE raw.listening_events SET unknown_user = true WHERE source_row BETWEEN 1 AND 3"
    )


def _blank_track(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE raw.listening_events SET track_id = '  ' WHERE source_row = 11")


def _no_plays(conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM raw.listening_events")


BREAKAGES = [
    # breakage, suite, expectation, column, text that shows what was observed
    (
        _break_context_type,
        "raw.listening_events",
        "expect_column_values_to_be_in_set",
        "context_type",
        "'podcast'",
    ),
    (
        _duplicate_event_id,
        "raw.listening_events",
        "expect_column_values_to_be_unique",
        "event_id",
        "'le-20261105-5'",
    ),
    (
        _overlong_play,
        "raw.listening_events",
        "unexpected_rows_expectation",
        None,
        "ms_played: more than 4 x track_duration_ms: 1 row",
    ),
    (
        _too_many_quarantined,
        "raw.subscription_events",
        "unexpected_rows_expectation",
        None,
        "3 of 10 rows read were quarantined (30.0%)",
    ),
    (
        _bad_country,
        "raw.user_versions",
        "expect_column_values_to_match_regex",
        "country",
        "'Germany'",
    ),
    (
        _unknown_users,
        "raw.listening_events",
        "expect_column_values_to_be_in_set",
        "unknown_user",
        "3 of 40 rows (7.50%)",
    ),
    (
        _blank_track,
        "raw.listening_events",
        "expect_column_values_to_match_regex",
        "track_id",
        "track_id: empty string",
    ),
    (_no_plays, "raw.listening_events", "expect_table_row_count_to_be_between", None, "observed 0"),
]


@pytest.mark.parametrize(
    ("breakage", "suite", "expectation", "column", "observed"),
    BREAKAGES,
    ids=[b[0].__name__.lstrip("_") for b in BREAKAGES],
)
def test_broken_day_fails_with_a_readable_message(
    clean: str,
    artifacts: Path,
    breakage,
    suite: str,
    expectation: str,
    column: str | None,
    observed: str,
) -> None:
    with warehouse.connect(clean) as conn:
        breakage(conn)

    with pytest.raises(ValidationFailed) as caught:
        run(clean, artifacts, run_id="broken")

    message = str(caught.value)
    assert "2026-11-05" in message
    assert f"{suite}: FAILED" in message
    assert expectation in message
    if column:
        assert f"on {column}:" in message
    assert observed in message
    assert '{"' not in message and "{'" not in message  # prose, not a JSON dump

    day_validation = caught.value.validation
    failed = [r for r in day_validation.reports if not r.success]
    assert [r.suite for r in failed] == [suite]
    failure = next(f for f in failed[0].failures if f["expectation"] == expectation)
    assert failure["column"] == column
    assert failure["details"] and failure["allowed"]

    rows = {r[0]: r for r in stored_results(clean)}
    assert len(rows) == 4
    assert rows[suite][2] is False and rows[suite][4] >= 1
    assert expectation in {f["expectation"] for f in rows[suite][5]}
    assert all(r[2] for s, r in rows.items() if s != suite)


def test_flags_are_allowed_up_to_the_tolerance(clean: str, artifacts: Path) -> None:
    with warehouse.connect(clean) as conn:
        _unknown_users(conn)  # 3 of 40 plays (7.5 %) have an unknown user
    assert run(clean, artifacts, tolerance=0.10, datasets=EVENTS).success
    with pytest.raises(ValidationFailed, match=re.escape("true in at most 5.0% of rows")):
        run(clean, artifacts, tolerance=0.05, datasets=EVENTS)


def test_tolerance_defaults_to_the_setting(
    clean: str, artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with warehouse.connect(clean) as conn:
        _too_many_quarantined(conn)  # 30 % of subscription_events quarantined
    monkeypatch.setenv("ENCORE_QUARANTINE_TOLERANCE", "0.5")
    ok = validate_day(
        DAY, run_id="env", dsn=clean, artifacts=artifacts, datasets=(contract.SUBSCRIPTION_EVENTS,)
    )
    assert ok.success
    monkeypatch.setenv("ENCORE_QUARANTINE_TOLERANCE", "0.1")
    with pytest.raises(ValidationFailed, match=re.escape("at most 10.0% of the rows read")):
        validate_day(
            DAY,
            run_id="env",
            dsn=clean,
            artifacts=artifacts,
            datasets=(contract.SUBSCRIPTION_EVENTS,),
        )


def test_failure_can_be_returned_instead_of_raised(clean: str, artifacts: Path) -> None:
    with warehouse.connect(clean) as conn:
        _break_context_type(conn)
    result = run(clean, artifacts, raise_on_failure=False)
    assert not result.success
    assert result.failed_suites == ["raw.listening_events"]
    summary = result.summary().splitlines()
    assert summary[0].startswith("Validation of 2026-11-05 (run test_run) FAILED: 1 of 4 suites")
    assert any("context_type" in line and "'podcast'" in line for line in summary)
    assert len(stored_results(clean)) == 4


# --------------------------------------------------------------------------- idempotence


def test_revalidating_a_run_replaces_its_rows(clean: str, artifacts: Path) -> None:
    with warehouse.connect(clean) as conn:
        _break_context_type(conn)
    with pytest.raises(ValidationFailed):
        run(clean, artifacts, run_id="manual__1")
    with warehouse.connect(clean) as conn:
        conn.execute("UPDATE raw.listening_events SET context_type = 'radio'")
    run(clean, artifacts, run_id="manual__1")  # the same run, after a fix: passes

    rows = stored_results(clean)
    assert len(rows) == 4
    assert all(r[1] == "manual__1" and r[2] for r in rows)

    run(clean, artifacts, run_id="manual__2")  # another run adds its own rows
    assert len(stored_results(clean)) == 8


def test_each_run_stores_the_suite_it_ran(clean: str, artifacts: Path) -> None:
    """The GX project keeps the latest suite and definition per table, not the first."""
    import great_expectations as gx

    for tolerance in (0.10, 0.05):
        run(clean, artifacts, tolerance=tolerance, datasets=(contract.LISTENING_EVENTS,))
    context = gx.get_context(mode="file", project_root_dir=str(artifacts))
    stored = context.suites.get("raw.listening_events")
    assert stored.meta["tolerance"] == 0.05
    assert len(stored.expectations) == len(
        validation.build_suite(contract.LISTENING_EVENTS, DAY, 0.05).expectations
    )
    definition = context.validation_definitions.get("raw.listening_events")
    assert definition.suite.id == stored.id
    assert [s.name for s in context.suites.all()].count("raw.listening_events") == 1


# --------------------------------------------------------------------------- one day only


def test_only_the_days_rows_are_validated(clean: str, artifacts: Path) -> None:
    with warehouse.connect(clean) as conn:
        insert(
            conn,
            "raw.listening_events",
            [
                listening_row(NEXT_DAY, 1, context_type="podcast"),
                listening_row(NEXT_DAY, 2, event_id="le-20261105-1"),  # duplicates a DAY event
                listening_row(NEXT_DAY, 3, ms_played=10**9),
            ],
        )
        insert(
            conn,
            "raw.subscription_events",
            [subscription_row(NEXT_DAY, 1, currency="eur", plan="gold")],
        )
        insert(conn, "raw.user_versions", [user_row(NEXT_DAY, 1, country="Germany")])
        insert(conn, "raw.track_versions", [track_row(NEXT_DAY, 1, duration_ms=0)])
        log_ingest(conn, NEXT_DAY, "listening_events", read=10, quarantined=7)

    assert run(clean, artifacts).success

    with pytest.raises(ValidationFailed) as caught:
        run(clean, artifacts, day=NEXT_DAY)
    assert set(caught.value.validation.failed_suites) == {
        "raw.user_versions",
        "raw.track_versions",
        "raw.listening_events",
        "raw.subscription_events",
    }
    events = next(r for r in caught.value.validation.reports if r.suite == "raw.listening_events")
    # the event_id repeated across days is not a duplicate within NEXT_DAY's batch
    assert "expect_column_values_to_be_unique" not in {f["expectation"] for f in events.failures}


def test_batch_queries_select_one_day_by_range() -> None:
    query = validation.batch_query(contract.LISTENING_EVENTS, DAY)
    assert query.startswith("SELECT ")
    assert "FROM raw.listening_events" in query
    assert "played_at >= '2026-11-05 00:00:00+00'" in query
    assert "played_at < '2026-11-06 00:00:00+00'" in query
    sub = validation.batch_query(contract.SUBSCRIPTION_EVENTS, DAY)
    assert "event_at >= '2026-11-05 00:00:00+00'" in sub
    assert "event_at < '2026-11-06 00:00:00+00'" in sub
    users = validation.batch_query(contract.USERS, DAY)
    assert "FROM raw.user_versions WHERE dt = DATE '2026-11-05'" in users
    tracks = validation.batch_query(contract.TRACKS, DAY)
    assert "FROM raw.track_versions WHERE dt = DATE '2026-11-05'" in tracks


# --------------------------------------------------------------------------- suites


def _by_type(suite, type_: str) -> list:
    return [e for e in suite.expectations if e.expectation_type == type_]


@pytest.mark.parametrize("dataset", contract.DATASETS, ids=lambda d: d.name)
def test_suites_are_generated_from_the_contract(dataset: contract.Dataset) -> None:
    suite = validation.build_suite(dataset, DAY, tolerance=0.02)
    assert suite.name == dataset.raw_table

    in_set = {e.column: e for e in _by_type(suite, "expect_column_values_to_be_in_set")}
    not_null = {e.column for e in _by_type(suite, "expect_column_values_to_not_be_null")}
    regex = {(e.column, e.regex) for e in _by_type(suite, "expect_column_values_to_match_regex")}
    between = {e.column: e for e in _by_type(suite, "expect_column_values_to_be_between")}
    unique = {e.column for e in _by_type(suite, "expect_column_values_to_be_unique")}
    queries = [e.unexpected_rows_query for e in _by_type(suite, "unexpected_rows_expectation")]

    for col in dataset.columns:
        if col.allowed is not None:
            assert sorted(in_set[col.name].value_set) == sorted(col.allowed)
            assert in_set[col.name].mostly == 1
        assert (col.name in not_null) == (not col.nullable)
        if col.pattern is not None:
            assert (col.name, col.pattern) in regex
        if col.non_empty:
            assert any(c == col.name for c, _ in regex)
        if col.minimum is not None:
            assert between[col.name].min_value == col.minimum
            assert between[col.name].strict_min == col.minimum_exclusive
        if col.maximum is not None:
            assert between[col.name].max_value == col.maximum
        if col.in_day:
            assert between[col.name].min_value == _ts(DAY, 0)
            assert between[col.name].max_value == _ts(NEXT_DAY, 0)
            assert between[col.name].strict_max and not between[col.name].strict_min
    assert unique == {dataset.key}

    for rule in dataset.cross_rules:
        assert any(rule.sql_violation in q and "{batch}" in q for q in queries)
    quarantine = [q for q in queries if "raw.ingest_log" in q]
    assert len(quarantine) == 1
    assert f"dataset = '{dataset.name}'" in quarantine[0]
    assert "DATE '2026-11-05'" in quarantine[0]
    assert "0.02 * sum(rows_read)" in quarantine[0]

    for _column, ref in dataset.references:
        flag = in_set[validation.REFERENCE_FLAGS[ref]]
        assert flag.value_set == [False]
        assert flag.mostly == pytest.approx(0.98)

    row_counts = _by_type(suite, "expect_table_row_count_to_be_between")
    assert len(row_counts) == (1 if dataset is contract.LISTENING_EVENTS else 0)
    for e in suite.expectations:
        assert e.meta.get("rule") and e.meta.get("allowed")


def test_a_contract_change_changes_the_suite() -> None:
    extra = contract.Column(
        "mood", contract.Kind.STRING, "Listener's mood.", allowed=("happy", "sad"), nullable=True
    )
    changed = contract.Dataset(
        name="listening_events",
        description="with a new column",
        columns=(*contract.LISTENING_EVENTS.columns, extra),
        key="event_id",
        is_event=True,
        time_column="played_at",
        cross_rules=contract.LISTENING_EVENTS.cross_rules,
        references=contract.LISTENING_EVENTS.references,
    )
    before = validation.build_suite(contract.LISTENING_EVENTS, DAY, 0.05)
    after = validation.build_suite(changed, DAY, 0.05)
    assert len(after.expectations) == len(before.expectations) + 1
    mood = [e for e in _by_type(after, "expect_column_values_to_be_in_set") if e.column == "mood"]
    assert mood and mood[0].value_set == ["happy", "sad"]
    assert "mood" in validation.batch_query(changed, DAY)


def test_today_is_also_bounded_by_now() -> None:
    now = datetime.fromisoformat("2026-11-05T13:30:00+00:00")
    suite = validation.build_suite(contract.LISTENING_EVENTS, DAY, 0.05, now=now)
    [played_at] = [
        e for e in _by_type(suite, "expect_column_values_to_be_between") if e.column == "played_at"
    ]
    assert played_at.min_value == _ts(DAY, 0)
    assert played_at.max_value == now and not played_at.strict_max


def test_a_column_missing_from_the_table_fails_clearly(clean: str, artifacts: Path) -> None:
    mood = contract.Column("mood", contract.Kind.STRING, "Listener's mood.", allowed=("calm",))
    drifted = dataclasses.replace(contract.USERS, columns=(*contract.USERS.columns, mood))
    with pytest.raises(ValidationFailed, match='column "mood" does not exist'):
        run(clean, artifacts, run_id="drift", datasets=(drifted,))
    [row] = stored_results(clean)
    assert row[0] == "raw.user_versions" and row[2] is False


def test_suite_rejects_a_tolerance_outside_0_1() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        validation.build_suite(contract.USERS, DAY, 1.5)


# --------------------------------------------------------------------------- locking


def test_concurrent_validations_wait_for_the_project_lock(clean: str, artifacts: Path) -> None:
    outcome: dict = {}

    def validate() -> None:
        started = time.perf_counter()
        outcome["result"] = run(clean, artifacts, run_id="locked", datasets=(contract.USERS,))
        outcome["finished"] = time.perf_counter() - started

    with validation.project_lock(artifacts):
        worker = threading.Thread(target=validate)
        worker.start()
        time.sleep(1.5)
        assert worker.is_alive()  # blocked on the lock we hold
    worker.join(timeout=120)
    assert outcome["result"].success
    assert outcome["finished"] >= 1.5


# --------------------------------------------------------------------------- connection URLs


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://postgres@127.0.0.1:5432/db",
            "postgresql+psycopg://postgres@127.0.0.1:5432/db?options=-c+TimeZone%3DUTC+-c+jit%3Doff",
        ),
        (
            "postgresql://postgres:@/encore?host=/work/main/var/pgdata",
            "postgresql+psycopg://postgres@/encore?host=%2Fwork%2Fmain%2Fvar%2Fpgdata"
            "&options=-c+TimeZone%3DUTC+-c+jit%3Doff",
        ),
        (
            "host=/tmp port=5433 dbname=x user=u password=p@ss",
            "postgresql+psycopg://u:p%40ss@/x?host=%2Ftmp&options=-c+TimeZone%3DUTC+-c+jit%3Doff&port=5433",
        ),
    ],
)
def test_sqlalchemy_url(dsn: str, expected: str) -> None:
    assert warehouse.sqlalchemy_url(dsn) == expected
    assert warehouse.sqlalchemy_url(dsn, driver="psycopg2").startswith("postgresql+psycopg2://")


def test_socket_only_dsn(artifacts: Path) -> None:
    """The embedded server's DSN has no host, only a socket directory (add_postgres-proof)."""
    pgserver = pytest.importorskip("pgserver")
    import tempfile

    pgdata = Path(tempfile.mkdtemp(prefix="encore_val_pg_"))
    pgdata.chmod(0o755)  # pgserver runs the server as its own user when we are root
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # pragma: no cover - environment dependent
        pytest.skip(f"pgserver cannot start here: {exc}")
    try:
        admin = server.get_uri("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE encore_sock")
        target = server.get_uri("encore_sock")
        assert "@/" in target and "host=" in target
        warehouse.ensure_migrated(target)
        with warehouse.connect(target) as conn:
            for ds in EVENTS:
                _create_partition(conn, ds.raw_table, DAY)
            load_clean_day(conn, DAY)
        result = validate_day(
            DAY,
            run_id="socket",
            dsn=target,
            artifacts=artifacts,
            tolerance=TOLERANCE,
            datasets=(contract.LISTENING_EVENTS,),
        )
        assert result.success
        assert len(stored_results(target)) == 1
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


def test_failures_are_json_in_the_warehouse(clean: str, artifacts: Path) -> None:
    with warehouse.connect(clean) as conn:
        _break_context_type(conn)
        _overlong_play(conn)
    with pytest.raises(ValidationFailed):
        run(clean, artifacts, run_id="json", datasets=(contract.LISTENING_EVENTS,))
    [(_suite, _run, success, evaluated, failed, failures, _docs)] = stored_results(clean)
    assert not success and failed == 2 and evaluated > failed
    by_type = {f["expectation"]: f for f in failures}
    in_set = by_type["expect_column_values_to_be_in_set"]
    assert in_set["column"] == "context_type"
    assert in_set["observed"]["unexpected_count"] == 1
    assert in_set["observed"]["examples"] == ["podcast"]
    assert by_type["unexpected_rows_expectation"]["observed"] == 1
    json.dumps(failures)  # plain JSON all the way down


def test_a_day_never_ingested_is_refused_clearly(clean: str, artifacts: Path) -> None:
    with pytest.raises(validation.DayNotIngested, match="ingest the day first"):
        validate_day(date(2026, 12, 24), run_id="r-missing", dsn=clean, artifacts=artifacts)


def test_examples_are_fetched_only_where_values_were_unexpected(
    clean: str, artifacts: Path
) -> None:
    """A passing expectation costs no examples query (LIMIT n over a batch that holds none
    reads the whole batch); a failing one gets its examples, in the report and in the result
    GX stored for Data Docs."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    with warehouse.connect(clean) as conn:
        _break_context_type(conn)
    examples_queries: list[tuple[str, int]] = []

    def record(_conn, _cursor, statement, params, _context, _executemany) -> None:
        if "AS unexpected_values" not in statement:
            return
        limit = re.search(r"LIMIT %\((\w+)\)s", statement)
        if limit and params[limit.group(1)] > 0:
            column = re.match(r"SELECT (\w+) AS unexpected_values", statement)
            examples_queries.append(
                (column.group(1) if column else statement, params[limit.group(1)])
            )

    event.listen(Engine, "before_cursor_execute", record)
    try:
        outcome = run(
            clean,
            artifacts,
            run_id="examples",
            datasets=(contract.LISTENING_EVENTS,),
            raise_on_failure=False,
        )
    finally:
        event.remove(Engine, "before_cursor_execute", record)

    assert examples_queries == [("context_type", validation.EXAMPLES_PER_FAILURE)]
    [report] = outcome.reports
    [failure] = report.failures
    assert failure["column"] == "context_type"
    assert failure["observed"]["examples"] == ["podcast"]
    assert "e.g. 'podcast'" in failure["details"]
    stored = [
        json.loads(p.read_text())
        for p in (artifacts / "gx" / "uncommitted" / "validations").rglob("*.json")
        if "examples" in str(p)
    ]
    [result] = [r for r in stored if not r["success"]]
    [in_set] = [r for r in result["results"] if not r["success"]]
    assert in_set["result"]["partial_unexpected_list"] == ["podcast"]
    assert in_set["result"]["unexpected_count"] == 1
    passing = [r for r in result["results"] if r["success"] and "unexpected_count" in r["result"]]
    assert passing and all(r["result"]["partial_unexpected_list"] == [] for r in passing)
