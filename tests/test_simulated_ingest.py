"""A simulated world through ingestion: the platform finds exactly the rows the simulator broke."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from ml_tasks import ingest, warehouse
from ml_tasks.simulate import simulate_world

START = date(2026, 10, 1)
DAYS = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("sim") / "landing"
    summary = simulate_world(
        out,
        users=400,
        tracks=120,
        start=START,
        days=DAYS,
        seed=11,
        bad_rate=0.03,
        preview_share=0.2,
        bot_share=0.01,
    )
    return out, Path(summary.truth_out)


def test_every_injected_bad_row_is_quarantined_and_nothing_else(world, warehouse_dsn) -> None:
    landing, truth = world
    results = [
        ingest.ingest_day(START + timedelta(days=i), landing_root=landing) for i in range(DAYS)
    ]
    bad = pd.read_parquet(truth / "bad_rows.parquet")
    with warehouse.connect(warehouse_dsn) as conn:
        quarantined = pd.DataFrame(
            conn.execute(
                "SELECT dataset, source_file, source_row, reasons FROM quarantine.rejected_rows"
            ).fetchall(),
            columns=["dataset", "file", "row_number", "reasons"],
        )
        log = pd.DataFrame(
            conn.execute(
                "SELECT source_file, rows_read, rows_accepted, rows_quarantined FROM raw.ingest_log"
            ).fetchall(),
            columns=["file", "read", "accepted", "quarantined"],
        )
        unknown = {
            r[0]
            for r in conn.execute(
                "SELECT event_id FROM raw.listening_events WHERE unknown_user OR unknown_track"
            )
        }
    expected = set(zip(bad["file"], bad["row_number"], strict=True))
    found = set(zip(quarantined["file"], quarantined["row_number"], strict=True))
    assert found == expected, (
        f"missed {sorted(expected - found)[:5]}, wrongly quarantined {sorted(found - expected)[:5]}"
    )
    assert len(bad) > 100 and bad["kind"].nunique() >= 25
    assert (log["read"] == log["accepted"] + log["quarantined"]).all()
    assert sum(r.rows_read for r in results) == log["read"].sum()
    refs = pd.read_parquet(truth / "unknown_refs.parquet")
    assert set(refs["event_id"]) <= unknown
    assert len(refs) > 0
