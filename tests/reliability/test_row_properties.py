"""Property-based tests (hypothesis) over the contents of landing rows.

Batches of rows are generated cell by cell: lawful values mixed with random unicode text
(control characters, NUL, huge strings), numbers (NaN, infinities, negatives, overflow),
timestamps (any offset, outside the day, in the future, malformed), enum look-alikes and
nulls, as CSV text or as typed Parquet columns (or floats where integers belong). For every
batch:

- ``check_batch``: every row is accepted or rejected, never both nor neither; each
  rejected row has at least one reason and a payload jsonb can hold; every accepted row
  satisfies the contract (checked by an independent oracle, :func:`violations`);
- ``ingest_day`` (the CLI's and the DAG's path, on a real PostgreSQL): per file, rows read
  = accepted + quarantined, the raw and quarantined rows are exactly the file's rows, the
  accepted rows read back from ``raw`` satisfy the contract and event ids stay unique.

``ENCORE_HYPOTHESIS_EXAMPLES`` sets the examples per test (25 by default, for CI's quick
slice; ``make reliability`` runs more).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_input import folder, write_clean_day
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from reliability_results import record, record_setting

from ml_tasks import contract, ingest, warehouse
from ml_tasks.contract import Column, Dataset, Kind

pytestmark = pytest.mark.reliability

EXAMPLES = int(os.environ.get("ENCORE_HYPOTHESIS_EXAMPLES", "25"))
DAY = date(2025, 9, 10)
NOW = datetime.combine(DAY, datetime.min.time(), UTC) + timedelta(hours=18)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# --------------------------------------------------------------------------- the oracle


def _full(pattern: str) -> str:
    """A contract pattern (``^...$``) for :func:`re.fullmatch`, where ``$`` means the end."""
    return pattern.removeprefix("^").removesuffix("$")


def _two_decimals(value: float | Decimal) -> bool:
    if not math.isfinite(float(value)):
        return False
    exact = Decimal(str(value))
    return exact == exact.quantize(Decimal("0.01"))


def violations(ds: Dataset, row: dict, day: date, now: datetime) -> list[str]:
    """The contract rules a typed row breaks, written independently of ``ml_tasks.ingest``."""
    out: list[str] = []
    start = datetime.combine(day, datetime.min.time(), UTC)
    for col in ds.columns:
        v = row[col.name]
        name = col.name
        if v is None:
            if not col.nullable:
                out.append(f"{name} is null")
            continue
        if col.kind is Kind.STRING:
            if not isinstance(v, str) or "\x00" in v:
                out.append(f"{name} is not text PostgreSQL can hold")
                continue
            if col.non_empty and not v.strip():
                out.append(f"{name} is blank")
            if col.allowed and v not in col.allowed:
                out.append(f"{name} not allowed")
            if col.pattern and not re.fullmatch(_full(col.pattern), v):
                out.append(f"{name} does not match")
            if col.relative_path and (
                not re.fullmatch(_full(contract.AUDIO_PATH_PATTERN), v)
                or re.search(contract.PARENT_DIR_PATTERN, v)
            ):
                out.append(f"{name} escapes audio/")
            continue
        if col.kind.is_integer:
            low, high = contract.INT_BOUNDS[col.kind]
            if not (isinstance(v, int) and not isinstance(v, bool) and low <= v <= high):
                out.append(f"{name} is not an {col.kind.name}")
                continue
        if col.kind is Kind.DECIMAL and not _two_decimals(v):
            out.append(f"{name} is not a 2-decimal number")
            continue
        if col.kind is Kind.BOOL and not isinstance(v, bool):
            out.append(f"{name} is not a bool")
        if col.kind is Kind.TIMESTAMP:
            if not (isinstance(v, datetime) and v.tzinfo is not None):
                out.append(f"{name} is not an instant")
                continue
            if col.in_day and not (start <= v < start + timedelta(days=1)):
                out.append(f"{name} outside the day")
            if col.not_future and v > now:
                out.append(f"{name} in the future")
        if col.kind is Kind.DATE and col.not_after_day and v > day:
            out.append(f"{name} after the day")
        if col.minimum is not None and (
            v <= col.minimum if col.minimum_exclusive else v < col.minimum
        ):
            out.append(f"{name} below the minimum")
        if col.maximum is not None and v > col.maximum:
            out.append(f"{name} above the maximum")
        if col.birth_year and not (
            contract.MIN_BIRTH_YEAR <= v <= day.year - contract.MIN_USER_AGE_YEARS
        ):
            out.append(f"{name} not a plausible birth year")
    if ds is contract.LISTENING_EVENTS and not out:
        limit = contract.MAX_PLAY_TO_DURATION_RATIO * row["track_duration_ms"]
        if row["ms_played"] > limit:
            out.append("ms_played over 4 x duration")
    free = ds is contract.SUBSCRIPTION_EVENTS and row["plan"] == "free"
    if free and not out and row["amount"] != 0:
        out.append("a paid free plan")
    return out


# --------------------------------------------------------------------------- strategies

_ID_ALPHABET = st.characters(codec="ascii", categories=("L", "N"))
_ANY_CHAR = st.characters(codec="utf-8")
nasty_text = st.one_of(
    st.text(_ANY_CHAR, max_size=24),
    st.text(st.characters(codec="utf-8", categories=("Cc", "Zs", "Zl", "Cf")), max_size=6),
    st.builds(lambda c, n: c * n, _ANY_CHAR, st.integers(4_000, 60_000)),  # huge
    st.sampled_from(["", " ", "\x00", "a\x00", "NULL", "None", "null", '"', "\\N", "\ufeff"]),
)
number_text = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
    st.sampled_from(
        ["NaN", "nan", "inf", "-inf", "Infinity", "1e3", "-0", "+5", " 7 ", "0x10", "１２", "1_000"]
    ),
)


@st.composite
def timestamp_text(draw, day: date) -> str:
    base = datetime.combine(day, datetime.min.time())
    moment = draw(
        st.one_of(
            st.datetimes(base - timedelta(hours=30), base + timedelta(hours=54)),
            st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)),
        )
    )
    offset = draw(st.sampled_from(["Z", "+00:00", "+05:30", "-02:00", "+14:00", "", "z", "+0100"]))
    sep = draw(st.sampled_from(["T", " ", "t"]))
    spec = draw(st.sampled_from(["seconds", "milliseconds", "microseconds", "minutes"]))
    return moment.isoformat(sep=sep, timespec=spec) + offset


def lawful(col: Column, day: date) -> st.SearchStrategy:
    """Values the contract allows (typed); keys drawn from a small set, so they repeat."""
    if col.allowed:
        return st.sampled_from(col.allowed)
    if col.name == "country":
        return st.sampled_from(["SE", "NO", "US"])
    if col.name == "currency":
        return st.sampled_from(["EUR", "SEK", "USD"])
    if col.relative_path:
        return st.builds(lambda s: f"audio/{s}.wav", st.text(_ID_ALPHABET, min_size=1, max_size=6))
    if col.kind is Kind.STRING:
        return st.text(_ID_ALPHABET, min_size=1, max_size=4)
    if col.kind is Kind.BOOL:
        return st.booleans()
    if col.birth_year:
        return st.integers(contract.MIN_BIRTH_YEAR, day.year - contract.MIN_USER_AGE_YEARS)
    if col.name == "ms_played":
        return st.integers(0, 600_000)
    if col.name.endswith("duration_ms"):  # so that plays stay within 4 x the track
        return st.integers(150_000, 400_000)
    if col.kind.is_integer:
        return st.integers(1, 3_000_000)
    if col.kind is Kind.DECIMAL:
        return st.integers(0, 10_000_000).map(lambda cents: cents / 100)
    if col.kind is Kind.DATE:
        return st.dates(date(1950, 1, 1), day)
    start = datetime.combine(day, datetime.min.time())
    return st.datetimes(start, start + timedelta(hours=23, minutes=59)).map(
        lambda d: d.replace(tzinfo=UTC)
    )


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def text_cell(col: Column, day: date) -> st.SearchStrategy:
    """A CSV cell: mostly lawful, otherwise anything."""
    return st.integers(0, 9).flatmap(
        lambda k: (
            lawful(col, day).map(_as_text)
            if k < 6
            else st.one_of(
                st.none(),
                nasty_text,
                number_text,
                timestamp_text(day),
                st.sampled_from([*contract.CONTEXT_TYPES, *contract.PLANS]).map(
                    lambda s: s.upper() if k % 2 else f" {s}"
                ),
            )
        )
    )


def typed_cell(col: Column, day: date) -> st.SearchStrategy:
    """A value of the column's Parquet type: mostly lawful, otherwise edge values."""
    lawful_value = lawful(col, day)
    if col.kind is Kind.STRING:
        edge = nasty_text
    elif col.kind is Kind.BOOL:
        edge = st.booleans()
    elif col.kind.is_integer:
        low, high = contract.INT_BOUNDS[col.kind]
        edge = st.integers(low, high)
    elif col.kind is Kind.DECIMAL:
        edge = st.floats()
    elif col.kind is Kind.DATE:
        edge = st.dates()
    else:
        edge = st.datetimes(timezones=st.just(UTC))
    return st.one_of(lawful_value, lawful_value, edge, st.none())


def float_cell(col: Column, day: date) -> st.SearchStrategy:
    """Floats where integers or booleans belong (a producer's pandas NaN-to-float)."""
    return st.one_of(
        lawful(col, day).map(float), st.floats(), st.integers(-5, 5).map(float), st.none()
    )


@st.composite
def batches(draw, ds: Dataset, day: date, fmt: str) -> pa.Table:
    """A batch as ``iter_batches`` yields it: CSV as text columns, Parquet with types."""
    n = draw(st.integers(1, 25))
    # about half the rows lawful throughout, the others with anything in any cell
    dirty = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    arrays: dict[str, pa.Array] = {}

    def cells(col: Column, anything: st.SearchStrategy, as_lawful) -> list:
        clean = lawful(col, day).map(as_lawful)
        return [draw(anything if d else clean) for d in dirty]

    for col in ds.columns:
        mode = "text" if fmt == "csv" else draw(st.sampled_from(["typed", "typed", "text"]))
        if (
            fmt == "parquet"
            and draw(st.booleans())
            and (col.kind.is_integer or col.kind is Kind.BOOL)
        ):
            mode = "float"
        if mode == "text":
            texts = cells(col, text_cell(col, day), _as_text)
            if fmt == "csv":  # what the CSV reader yields: "" is null
                texts = [c if c != "" else None for c in texts]
            arrays[col.name] = pa.array(texts, pa.string())
        elif mode == "float":
            arrays[col.name] = pa.array(cells(col, float_cell(col, day), float), pa.float64())
        else:
            values = cells(col, typed_cell(col, day), lambda v: v)
            kind_type = contract.landing_arrow_type(col.kind)
            if col.kind is Kind.DECIMAL:
                kind_type = pa.float64()
            arrays[col.name] = pa.array(values, kind_type)
    return pa.table(arrays)


# --------------------------------------------------------------------------- pure checks


def _record(name: str, stats: Counter, held: bool, started: float, **extra) -> None:
    record(
        "properties",
        name,
        {
            "property": name,
            "examples": stats["examples"],
            "rows_read": stats["read"],
            "rows_accepted": stats["accepted"],
            "rows_quarantined": stats["quarantined"],
            "held": held,
            "seconds": round(time.perf_counter() - started, 2),
            **extra,
        },
    )


@pytest.mark.parametrize("dataset", [d.name for d in contract.DATASETS])
def test_check_batch_accepts_or_rejects_every_row(dataset: str) -> None:
    ds = contract.dataset(dataset)
    stats: Counter = Counter()
    record_setting("hypothesis_examples", EXAMPLES)

    @SETTINGS
    @given(fmt=st.sampled_from(["csv", "parquet"]), data=st.data())
    def check(fmt: str, data) -> None:
        batch = data.draw(batches(ds, DAY, fmt))
        checked = ingest.check_batch(ds, batch, DAY, NOW)
        rejected = [int(i) for i in checked.rejected_rows]
        n = batch.num_rows
        assert len(set(rejected)) == len(rejected) and all(0 <= i < n for i in rejected)
        assert checked.accepted.num_rows + len(rejected) == n
        assert len(checked.reasons) == len(rejected)
        assert all(reasons for reasons in checked.reasons), checked.reasons
        for row in checked.accepted.to_pylist():
            assert violations(ds, row, DAY, NOW) == [], row
        if rejected:
            for text in ingest._payloads(batch, np.asarray(rejected)):
                assert "\x00" not in text
                payload = json.loads(text)  # strict: no NaN/Infinity tokens
                assert set(ds.column_names) <= set(payload)
        stats.update(
            examples=1, read=n, accepted=checked.accepted.num_rows, quarantined=len(rejected)
        )

    started, held = time.perf_counter(), False
    try:
        check()
        held = True
    finally:
        _record(f"check_batch/{dataset}", stats, held, started, dataset=dataset)


# --------------------------------------------------------------------------- through the warehouse


@pytest.fixture(scope="module")
def bench(pg_admin: str, template_db: str, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    name = f"encore_prop_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    root = tmp_path_factory.mktemp("properties") / "landing"
    root.mkdir()
    yield warehouse.with_database(pg_admin, name), root
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def write_batch(path: Path, batch: pa.Table, fmt: str) -> None:
    """The batch as a landing file (CSV: RFC 4180 text; Parquet: its own types)."""
    if fmt == "parquet":
        pq.write_table(batch, path)
        return
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(batch.column_names)
    for row in batch.to_pylist():
        writer.writerow(["" if v is None else v for v in row.values()])
    path.write_text(out.getvalue(), encoding="utf-8")


def test_ingest_accounts_for_every_generated_row(bench) -> None:
    """One generated file per example, in a dataset drawn too; the other datasets clean."""
    dsn, root = bench
    stats: Counter = Counter()

    @SETTINGS
    @given(
        dataset=st.sampled_from([d.name for d in contract.DATASETS]),
        fmt=st.sampled_from(["csv", "parquet"]),
        data=st.data(),
    )
    def check(dataset: str, fmt: str, data) -> None:
        ds = contract.dataset(dataset)
        day = DAY + timedelta(days=[d.name for d in contract.DATASETS].index(dataset))
        batch = data.draw(batches(ds, day, fmt))
        write_clean_day(root, day)
        target = folder(root, dataset, day)
        for old in target.glob("part-000.*"):
            old.unlink()
        write_batch(target / f"part-000.{fmt}", batch, fmt)
        result = ingest.ingest_day(day, run_id="prop", dsn=dsn, landing_root=root)
        source = f"{dataset}/dt={day.isoformat()}/part-000.{fmt}"
        with warehouse.connect(dsn) as conn:
            read, accepted, quarantined = conn.execute(
                "SELECT rows_read, rows_accepted, rows_quarantined FROM raw.ingest_log"
                " WHERE dt = %s AND source_file = %s",
                (day, source),
            ).fetchone()
            assert read == batch.num_rows == accepted + quarantined
            where = "source_file = %s" + ("" if ds.is_event else " AND dt = %s")
            params = (source,) if ds.is_event else (source, day)
            cols = sql.SQL(", ").join(map(sql.Identifier, ["source_row", *ds.column_names]))
            with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
                raw_rows = cur.execute(
                    sql.SQL("SELECT {} FROM {} WHERE " + where).format(
                        cols, warehouse.qualified(ds.raw_table)
                    ),
                    params,
                ).fetchall()
            q_rows = conn.execute(
                "SELECT source_row, reasons, payload FROM quarantine.rejected_rows"
                " WHERE dt = %s AND source_file = %s",
                (day, source),
            ).fetchall()
            assert len(raw_rows) == accepted and len(q_rows) == quarantined
            rows = sorted([r["source_row"] for r in raw_rows] + [r[0] for r in q_rows])
            assert rows == list(range(1, read + 1))
            for _, reasons, payload in q_rows:
                assert reasons and set(ds.column_names) <= set(payload)
            for row in raw_rows:
                assert violations(ds, row, day, datetime.now(UTC)) == [], row
            if ds.is_event:
                repeats = conn.execute(
                    sql.SQL("SELECT event_id FROM {} GROUP BY 1 HAVING count(*) > 1").format(
                        warehouse.qualified(ds.raw_table)
                    )
                ).fetchall()
                assert repeats == []
        stats.update(
            dataset,
            examples=1,
            read=result.datasets[dataset].rows_read,
            accepted=result.datasets[dataset].rows_accepted,
            quarantined=result.datasets[dataset].rows_quarantined,
        )

    started, held = time.perf_counter(), False
    try:
        check()
        held = True
    finally:
        by_dataset = {d.name: stats[d.name] for d in contract.DATASETS}
        _record("ingest_day/all datasets", stats, held, started, examples_by_dataset=by_dataset)
