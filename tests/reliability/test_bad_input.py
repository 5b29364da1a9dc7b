"""Every kind of broken landing data in ``bad_input.KINDS``, ingested for real.

One database for the module (cloned from the migrated template); kind number i uses landing
day ``BASE_DAY + 2 i`` (and the day after, when it needs a neighbour), so the kinds do not
disturb each other. Ingestion runs through ``ml_tasks.ingest.ingest_day``, the function the
``encore ingest`` CLI and the ``ingest_daily`` DAG call; audio kinds then run
``ml_tasks.audio.extract_day``. For each kind:

- quarantine/accept: per file, rows read = accepted + quarantined (``raw.ingest_log``), the
  rows in ``raw`` and in quarantine are exactly the file's rows, the broken rows (and only
  they) are quarantined with the expected reasons and their payload as delivered;
- refuse: the error matches the kind's pattern (naming the file and the problem) and every
  warehouse table is exactly as before, a good earlier version of the day intact.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
from bad_input import KINDS, BadInput, Broken, write_clean_day
from psycopg import sql
from reliability_results import record

from landing import INGEST_TABLES
from ml_tasks import audio, contract, ingest, warehouse

pytestmark = pytest.mark.reliability

log = logging.getLogger(__name__)

BASE_DAY = date(2025, 3, 1)
DATA_TABLES = (*INGEST_TABLES, "quarantine.audio_rejects", "features.track_audio")


@dataclass(frozen=True)
class Bench:
    """The module's warehouse and landing root."""

    dsn: str
    landing: Path
    artifacts: Path


@pytest.fixture(scope="module")
def bench(pg_admin: str, template_db: str, tmp_path_factory) -> Iterator[Bench]:
    name = f"encore_bad_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    base = tmp_path_factory.mktemp("bad-input")
    (base / "landing").mkdir()
    yield Bench(warehouse.with_database(pg_admin, name), base / "landing", base / "artifacts")
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def day_of(bad: BadInput) -> date:
    return BASE_DAY + timedelta(days=2 * KINDS.index(bad))


def checksums(dsn: str) -> dict[str, tuple[int, str]]:
    with warehouse.connect(dsn) as conn:
        return {t: warehouse.table_checksum(conn, t) for t in DATA_TABLES}


def stage_tables(dsn: str) -> list[str]:
    with warehouse.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables WHERE tablename LIKE %s",
            ("\\_stage\\_%",),
        ).fetchall()
    return [r[0] for r in rows]


def stored(value: object) -> object:
    """A payload value as quarantine stores it (NUL, which jsonb cannot hold, as text)."""
    return value.replace("\x00", "\\u0000") if isinstance(value, str) else value


def rel_file(b: Broken, day: date) -> str:
    return f"{b.dataset}/dt={day.isoformat()}/{b.file}"


# --------------------------------------------------------------------------- the outcomes


def run_refused(bench: Bench, bad: BadInput, day: date) -> dict:
    """A good version of the day first; then the broken one must be refused, changing nothing."""
    write_clean_day(bench.landing, day, tag="v1")
    good = ingest.ingest_day(day, run_id="v1", dsn=bench.dsn, landing_root=bench.landing)
    before = checksums(bench.dsn)
    write_clean_day(bench.landing, day)
    assert bad.write(bench.landing, day) == []
    with pytest.raises(ingest.IngestError) as info:
        ingest.ingest_day(
            day,
            run_id=f"bad-{bad.name}",
            dsn=bench.dsn,
            landing_root=bench.landing,
            chunk_rows=bad.chunk_rows,
            now=bad.now(day),
        )
    message = str(info.value)
    assert bad.error is not None and re.search(bad.error, message), message
    assert checksums(bench.dsn) == before, "a refused day changed the warehouse"
    assert stage_tables(bench.dsn) == []
    return {
        "rows_read": 0,
        "rows_accepted": 0,
        "rows_quarantined": 0,
        "rows_kept": good.rows_accepted,
        "error": message.replace(f"{bench.landing}/", ""),
    }


def account_for_every_row(conn, day: date) -> list[tuple]:
    """Per file of the day: raw rows + quarantined rows are exactly rows 1..read."""
    files = conn.execute(
        "SELECT dataset, source_file, rows_read, rows_accepted, rows_quarantined"
        " FROM raw.ingest_log WHERE dt = %s ORDER BY 1, 2",
        (day,),
    ).fetchall()
    for dataset, source_file, read, accepted, quarantined in files:
        assert read == accepted + quarantined, (source_file, read, accepted, quarantined)
        ds = contract.dataset(dataset)
        where = "source_file = %s" if ds.is_event else "source_file = %s AND dt = %s"
        params = (source_file,) if ds.is_event else (source_file, day)
        in_raw = [
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT source_row FROM {} WHERE " + where).format(
                    warehouse.qualified(ds.raw_table)
                ),
                params,
            )
        ]
        in_quarantine = [
            r[0]
            for r in conn.execute(
                "SELECT source_row FROM quarantine.rejected_rows"
                " WHERE dt = %s AND source_file = %s",
                (day, source_file),
            )
        ]
        assert len(in_raw) == accepted and len(in_quarantine) == quarantined, source_file
        assert sorted(in_raw + in_quarantine) == list(range(1, read + 1)), source_file
    return files


def run_loaded(bench: Bench, bad: BadInput, day: date, caplog) -> dict:
    """Ingest the broken day; every row is in raw or quarantined as the kind expects."""
    write_clean_day(bench.landing, day)
    broken = bad.write(bench.landing, day)
    if bad.prior_day is not None:
        ingest.ingest_day(
            day + timedelta(days=bad.prior_day), dsn=bench.dsn, landing_root=bench.landing
        )
    with caplog.at_level(logging.WARNING, logger="ml_tasks.ingest"):
        result = ingest.ingest_day(
            day,
            run_id=f"bad-{bad.name}",
            dsn=bench.dsn,
            landing_root=bench.landing,
            chunk_rows=bad.chunk_rows,
            now=bad.now(day),
        )
    if bad.warning:
        assert re.search(bad.warning, caplog.text), caplog.text
    rows_broken = [b for b in broken if b.dataset != "audio"]
    expected = {(rel_file(b, day), b.row): b for b in rows_broken}
    assert len(expected) == len(rows_broken), "a kind broke the same row twice"
    with warehouse.connect(bench.dsn) as conn:
        files = account_for_every_row(conn, day)
        got = {
            (f, r): (reasons, payload)
            for f, r, reasons, payload in conn.execute(
                "SELECT source_file, source_row, reasons, payload FROM quarantine.rejected_rows"
                " WHERE dt = %s",
                (day,),
            )
        }
        assert sorted(got) == sorted(expected), "quarantined rows differ from the broken rows"
        for key, b in expected.items():
            reasons, payload = got[key]
            assert sorted(reasons) == sorted(b.reasons or bad.reasons), (key, reasons)
            for column, value in b.payload.items():
                assert payload.get(column) == stored(value), (key, column, payload.get(column))
        if bad.verify:
            bad.verify(conn, day)
    assert (result.rows_read, result.rows_accepted, result.rows_quarantined) == (
        sum(f[2] for f in files),
        sum(f[3] for f in files),
        sum(f[4] for f in files),
    )
    outcome = {
        "rows_read": result.rows_read,
        "rows_accepted": result.rows_accepted,
        "rows_quarantined": result.rows_quarantined,
        "reasons": sorted({r for reasons, _ in got.values() for r in reasons}),
    }
    clips = [b for b in broken if b.dataset == "audio"]
    if bad.audio:
        outcome.update(run_audio(bench, bad, day, clips))
    return outcome


def run_audio(bench: Bench, bad: BadInput, day: date, clips: list[Broken]) -> dict:
    """Extract the day's clips: each broken clip is an audio reject, with no features."""
    assert clips, "an audio kind must break a clip"
    summary = audio.extract_day(
        day,
        run_id=f"bad-{bad.name}",
        dsn=bench.dsn,
        landing_root=bench.landing,
        workers=1,
        artifacts=bench.artifacts,
    )
    with warehouse.connect(bench.dsn) as conn:
        for clip in clips:
            track_id = clip.payload["track_id"]
            row = conn.execute(
                "SELECT reason, preview_path, detail FROM quarantine.audio_rejects"
                " WHERE dt = %s AND track_id = %s",
                (day, track_id),
            ).fetchone()
            assert row is not None, f"{clip.file} was not rejected: {summary}"
            assert (row[0], row[1]) == ((clip.reasons or bad.reasons)[0], clip.file), row
            features = conn.execute(
                "SELECT count(*) FROM features.track_audio WHERE track_id = %s", (track_id,)
            ).fetchone()[0]
            assert features == 0, f"{clip.file} has audio features"
    return {
        "clips_read": len(clips),
        "clips_rejected": len(clips),
        "audio_reasons": sorted({(c.reasons or bad.reasons)[0] for c in clips}),
    }


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("bad", KINDS, ids=[k.name for k in KINDS])
def test_broken_landing_data_is_quarantined_or_refused(bench: Bench, bad: BadInput, caplog):
    day = day_of(bad)
    entry: dict = {
        "kind": bad.name,
        "dataset": bad.dataset,
        "description": bad.description,
        "expected": bad.outcome,
        "day": day.isoformat(),
        # ingest runs (a good version first, a neighbour day first) and extraction runs
        "runs": 1 + (bad.outcome == "refuse") + (bad.prior_day is not None) + bad.audio,
    }
    started = time.perf_counter()
    try:
        if bad.outcome == "refuse":
            entry.update(run_refused(bench, bad, day), outcome="refused")
        else:
            entry.update(run_loaded(bench, bad, day, caplog))
            rejected = entry["rows_quarantined"] + entry.get("clips_rejected", 0)
            entry["outcome"] = "quarantined" if rejected else "accepted"
        entry["held"] = True
    except BaseException as exc:
        entry["held"] = False
        entry["failure"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise
    finally:
        entry["seconds"] = round(time.perf_counter() - started, 2)
        record("bad_input", bad.name, entry)


def test_the_registry_names_at_least_30_kinds() -> None:
    names = [k.name for k in KINDS]
    assert len(names) >= 30
    assert len(set(names)) == len(names)
    for bad in KINDS:
        assert bad.description and bad.dataset in contract.DATASETS_BY_NAME, bad.name
        assert (bad.error is not None) == (bad.outcome == "refuse"), bad.name


def test_every_reason_the_contract_names_has_a_kind(tmp_path: Path) -> None:
    """Every quarantine reason of contract.py (and every audio reject reason) is produced
    by some kind: the registry covers the whole contract, not a sample of it."""
    produced: set[str] = set()
    for bad in KINDS:
        root = tmp_path / bad.name / "landing"
        write_clean_day(root, BASE_DAY)
        broken = bad.write(root, BASE_DAY)
        assert bool(broken) == (bad.outcome == "quarantine"), bad.name
        for b in broken:
            assert b.reasons or bad.reasons, f"{bad.name}: a broken row without reasons"
            produced.update(b.reasons or bad.reasons)
    wanted = {contract.DUPLICATE_REASON, contract.DUPLICATE_REASON + " on another day"}
    wanted |= {contract.DUPLICATE_KEY_REASON.format(key=k) for k in ("user_id", "track_id")}
    wanted |= set(audio.REASONS)
    for ds in contract.DATASETS:
        wanted |= {rule.message for rule in ds.cross_rules}
        for col in ds.columns:
            for code, message in contract.rule_messages(col).items():
                if code == "type" and col.kind is contract.Kind.STRING:
                    continue  # any text is a string; undecodable bytes refuse the file
                if code == "missing" and col.nullable:
                    continue
                wanted.add(message)
    assert wanted - produced == set()
