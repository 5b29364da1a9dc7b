"""Concurrency: days backfilled in parallel, and two scorings of one day racing.

Both run real steps in child processes against a scored copy of the churn world, and
compare the warehouse afterwards with the state the sequential runs left (table
checksums, lineage columns aside): parallel work must end where sequential work ends,
and a reader must never see a partial day meanwhile.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from reliability_results import record

from ml_tasks import features, scoring, warehouse

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

ROOT = Path(__file__).resolve().parents[2]
LINEAGE = ("run_id", "scored_at", "computed_at", "built_at", "seconds", "created_ts")
RAW_TABLES = ["raw.listening_events", "raw.subscription_events"]
FEATURE_TABLES = [t.name for t in features.ACTIVITY_TABLES + features.DAILY_TABLES]
SCORE_TABLES = [scoring.CHURN_TABLE, scoring.INTERVENTIONS_TABLE]


@pytest.fixture(scope="module")
def world(pg_admin, churn_world, tmp_path_factory):
    """A scored copy of the churn world of its own (the races must not disturb others)."""
    from churn_world import drop, scored_copy

    copy = scored_copy(pg_admin, churn_world, tmp_path_factory.mktemp("race-artifacts"))
    yield copy
    drop(pg_admin, copy["name"])


def snapshot(dsn: str, tables: list[str], days) -> dict:
    with warehouse.connect(dsn) as conn:
        return {
            (t, d.isoformat()): warehouse.table_checksum(
                conn, warehouse.partition_name(t, d), exclude=LINEAGE
            )
            for t in tables
            for d in days
        }


def start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def finish(children: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    errors = []
    for child in children:
        _, err = child.communicate(timeout=timeout)
        if child.returncode != 0:
            errors.append(err[-3000:])
    return errors


BACKFILL_DAY = """
    import sys
    from datetime import date
    from pathlib import Path
    from ml_tasks.features import build_day
    from ml_tasks.ingest import ingest_day
    day, dsn, landing = date.fromisoformat(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    ingest_day(day, run_id="parallel", dsn=dsn, landing_root=landing)
    build_day(day, run_id="parallel", dsn=dsn)
"""


def test_four_days_backfilled_in_parallel_equal_a_sequential_run(world) -> None:
    """Re-ingest and rebuild four days at once: each build also refreshes the activity days
    of its window that the others re-ingest, so the per-table-day locks are exercised."""
    dsn, last = world["dsn"], world["day"]
    days = [last - timedelta(days=k) for k in range(3, -1, -1)]
    tables = RAW_TABLES + FEATURE_TABLES
    reference = snapshot(dsn, tables, days)
    assert all(count > 0 for count, _ in reference.values())
    started = time.perf_counter()
    children = [start(BACKFILL_DAY, d.isoformat(), dsn, str(world["landing"])) for d in days]
    errors = finish(children)
    seconds = time.perf_counter() - started
    after = snapshot(dsn, tables, days)
    held = not errors and after == reference
    record(
        "concurrency",
        "four_days_in_parallel",
        {
            "case": "ingest + features of 4 days in 4 processes at once",
            "days": [d.isoformat() for d in days],
            "tables": len(tables),
            "rows": sum(count for count, _ in reference.values()),
            "seconds": round(seconds, 1),
            "held": held,
        },
    )
    assert not errors, errors
    differing = sorted(k for k in reference if reference[k] != after[k])
    assert not differing, f"parallel backfill differs from the sequential run: {differing}"


SCORE_DAY = """
    import sys
    from datetime import date
    from ml_tasks.scoring import score_churn
    day, dsn, run_id = date.fromisoformat(sys.argv[1]), sys.argv[2], sys.argv[3]
    print(score_churn(day, run_id=run_id, dsn=dsn, chunk_users=150)["users"], flush=True)
"""


def test_two_scorings_of_a_day_racing_end_as_one_sequential_run(world) -> None:
    dsn, day = world["dsn"], world["day"]
    from ml_tasks.feature_validation import validate_features

    validate_features(day, run_id="race", dsn=dsn)  # the other test rebuilt the features
    scoring.score_churn(day, run_id="sequential", dsn=dsn, chunk_users=150)
    reference = snapshot(dsn, SCORE_TABLES, [day])
    counts = {t: c for (t, _), (c, _) in reference.items()}
    assert all(counts.values())

    racers = [start(SCORE_DAY, day.isoformat(), dsn, f"racer-{k}") for k in (1, 2)]
    reads = 0
    # autocommit: a reader's open transaction would hold the partitions the swap replaces
    with warehouse.connect(dsn, autocommit=True) as conn:
        while any(r.poll() is None for r in racers):
            for table in SCORE_TABLES:
                seen = conn.execute(
                    f"SELECT count(*) FROM {warehouse.partition_name(table, day)}"
                ).fetchone()[0]
                assert seen == counts[table], f"a reader saw {seen} rows of {table}"
                reads += 1
            time.sleep(0.02)
    errors = finish(racers)
    after = snapshot(dsn, SCORE_TABLES, [day])
    with warehouse.connect(dsn) as conn:
        runs = conn.execute(
            "SELECT run_id FROM scores.scoring_runs WHERE dt = %s AND run_id LIKE 'racer-%%'"
            " AND status = 'scored' ORDER BY run_id",
            (day,),
        ).fetchall()
    held = not errors and after == reference and len(runs) == 2
    record(
        "concurrency",
        "two_scorings_racing",
        {
            "case": "two score_churn runs of the same day at once",
            "day": day.isoformat(),
            "rows": sum(counts.values()),
            "reader_checks": reads,
            "held": held,
        },
    )
    assert not errors, errors
    assert [r for (r,) in runs] == ["racer-1", "racer-2"], "both runs must finish and say so"
    assert after == reference, "the raced day differs from a sequential scoring"
