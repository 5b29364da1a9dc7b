"""SIGKILL the ingest, feature, materialize and score steps at random points.

Each step first runs cleanly on a scored simulated world; its tables' checksums (lineage
columns aside) are the reference. Then the same step is started again in a child process
and killed with SIGKILL after a seeded random delay, while a reader in this process keeps
checking the day's rows: a reader must never see a partial day, the killed run must leave
the reference state, and a final clean re-run must converge to it.

``ENCORE_FAULT_KILLS`` sets the kills per step (default 1 for CI's quick slice;
``make reliability`` runs 6 per step, 24 in all). Each step's runs, kills and rows go to
the reliability results file (``reliability_results``) for ``docs/reliability.md``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from reliability_results import record, record_setting

from ml_tasks import features, scoring, warehouse

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

KILLS_PER_STEP = int(os.environ.get("ENCORE_FAULT_KILLS", "1"))
SEED = 20261122
ROOT = Path(__file__).resolve().parents[2]
LINEAGE = ("run_id", "scored_at", "computed_at", "built_at", "seconds", "created_ts")

#: step -> (python statement run in the child, tables whose day partition it replaces)
STEPS: dict[str, tuple[str, list[str]]] = {
    "ingest": (
        "from ml_tasks.ingest import ingest_day;"
        " ingest_day(DAY, run_id='fault', dsn=DSN, landing_root=Path(LANDING))",
        ["raw.listening_events", "raw.subscription_events"],
    ),
    "features": (
        "from ml_tasks.features import build_day; build_day(DAY, run_id='fault', dsn=DSN)",
        [t.name for t in features.ACTIVITY_TABLES + features.DAILY_TABLES],
    ),
    "materialize": (
        "from ml_tasks.feature_store import materialize_day; materialize_day(DAY, dsn=DSN)",
        ["feast_online.encore_user_engagement", "feast_online.encore_user_account"],
    ),
    "score": (
        "from ml_tasks.scoring import score_churn;"
        " score_churn(DAY, run_id='fault', dsn=DSN, chunk_users=200)",
        [scoring.CHURN_TABLE, scoring.INTERVENTIONS_TABLE],
    ),
}

CHILD = textwrap.dedent(
    """
    import sys
    from datetime import date
    from pathlib import Path
    DAY, DSN, LANDING = date.fromisoformat(sys.argv[1]), sys.argv[2], sys.argv[3]
    {imports}
    print("READY", flush=True)
    sys.stdin.readline()
    {statement}
    print("DONE", flush=True)
    """
)


def _relation(table: str, day) -> str:
    if table.startswith("feast_online."):
        return table
    return warehouse.partition_name(table, day)


def snapshot(dsn: str, tables: list[str], day) -> dict[str, tuple[int, str]]:
    with warehouse.connect(dsn) as conn:
        return {
            t: warehouse.table_checksum(conn, _relation(t, day), exclude=LINEAGE) for t in tables
        }


def run_child(step: str, dsn: str, day, landing: Path) -> subprocess.Popen:
    statement, _ = STEPS[step]
    imports = statement.split(";")[0]
    code = CHILD.format(imports=imports, statement=statement.split(";", 1)[1].strip())
    child = subprocess.Popen(
        [sys.executable, "-c", code, day.isoformat(), dsn, str(landing)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout.readline().strip() == "READY"
    return child


def clean_run(step: str, dsn: str, day, landing: Path) -> float:
    child = run_child(step, dsn, day, landing)
    started = time.perf_counter()
    child.stdin.write("go\n")
    child.stdin.flush()
    if child.stdout.readline().strip() != "DONE":
        child.wait(timeout=30)
        pytest.fail(f"{step} failed on a clean run:\n{child.stderr.read()[-3000:]}")
    child.wait(timeout=120)
    return time.perf_counter() - started


def kill_during(
    step: str, dsn: str, day, landing: Path, delay: float, check: Callable[[], None]
) -> str:
    """Start the step, SIGKILL it after ``delay`` s, checking the reader's view meanwhile."""
    child = run_child(step, dsn, day, landing)
    child.stdin.write("go\n")
    child.stdin.flush()
    deadline = time.perf_counter() + delay
    while time.perf_counter() < deadline and child.poll() is None:
        check()
    finished = child.poll() is not None
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    return "finished before the kill" if finished else "killed"


@pytest.fixture(scope="module")
def world(pg_admin, churn_world, tmp_path_factory):
    """A scored copy of the churn world of its own: the kills must not disturb other tests."""
    from churn_world import drop, scored_copy

    copy = scored_copy(pg_admin, churn_world, tmp_path_factory.mktemp("fault-artifacts"))
    yield copy
    drop(pg_admin, copy["name"])


@pytest.mark.parametrize("step", list(STEPS))
def test_a_killed_step_leaves_a_whole_day_and_a_rerun_converges(world, step) -> None:
    dsn, day = world["dsn"], world["day"]
    landing = world["landing"]
    _, tables = STEPS[step]
    if step == "score":  # an earlier step may have rebuilt the features: validate them again
        from ml_tasks.feature_validation import validate_features

        validate_features(day, run_id="fault", dsn=dsn)
    seconds = clean_run(step, dsn, day, landing)
    reference = snapshot(dsn, tables, day)
    assert all(count > 0 for count, _ in reference.values()), reference
    counts = {t: c for t, (c, _) in reference.items()}
    rng = random.Random(f"{SEED}-{step}")

    def reader_sees_whole_days() -> None:
        with warehouse.connect(dsn) as conn:
            for table in tables:
                seen = conn.execute(f"SELECT count(*) FROM {_relation(table, day)}").fetchone()[0]
                assert seen == counts[table], f"{step}: a reader saw {seen} rows of {table}"

    outcomes: list[dict] = []
    held = False
    record_setting("fault_kills_per_step", KILLS_PER_STEP)
    try:
        for _ in range(KILLS_PER_STEP):
            delay = rng.uniform(0.02, seconds * 1.1)
            outcome = kill_during(step, dsn, day, landing, delay, reader_sees_whole_days)
            outcomes.append({"delay_s": round(delay, 3), "outcome": outcome})
            assert snapshot(dsn, tables, day) == reference, f"{step} killed at {delay:.2f}s"
        clean_run(step, dsn, day, landing)
        assert snapshot(dsn, tables, day) == reference
        held = True
    finally:
        record(
            "faults",
            step,
            {
                "step": step,
                "day": day.isoformat(),
                "clean_seconds": round(seconds, 2),
                "clean_runs": 2 if held else 1,
                "kills": outcomes,
                "rows": counts,
                "held": held,
            },
        )
