"""The warehouse stops mid-run; model artifacts get corrupted; everything restarts.

These tests stop and crash a PostgreSQL server, so they run on one of their own
(``own_postgres.py``) holding a copy of the ``scored`` world: the shared server at
127.0.0.1:5432 is never stopped. Each test gets a clone of that copy and its own copy of the
model artifacts (the registry's artifact URIs point at it).

- **Outages**: a real step (``features.build_day``, ``scoring.score_churn``) runs in a child
  process; the child pauses at a chosen point (inside the transaction that swaps a day in, or
  between two staged chunks), the server is stopped (``pg_ctl stop -m immediate``, a crash,
  or ``-m fast``) and the child resumes against it. The child must fail with
  :class:`~ml_tasks.warehouse.WarehouseUnavailable` naming the warehouse; after the server
  is back the day must be the previous complete version, and a re-run (what an Airflow
  retry does: team policy gives every task 2 retries) must converge to the state of a clean
  run, lineage columns aside. The clean run and the re-run run in the test's process.
- **Recovery**: a candidate whose artifact no longer matches its sha256 is never promoted and
  the champion keeps scoring; a corrupted champion stops scoring with an error naming the
  file (no fallback: DESIGN.md says a day is scored by the model that was champion then);
  registry rows, champion history and artifacts survive a stop and start of the server, and
  scoring after it reproduces the scores made before.

Every case goes to the reliability results file (sections ``warehouse_outages`` and
``recovery``, see ``reliability_results.py``).
"""

from __future__ import annotations

import logging
import select
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from own_postgres import OwnPostgres, copy_database, own_postgres
from reliability_results import record, record_setting

from ml_tasks import cli, features, registry, scoring, warehouse

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "encore_restart_world"
#: Lineage columns, left out of checksums (as in test_faults.py).
LINEAGE = ("run_id", "scored_at", "computed_at", "built_at", "seconds", "created_ts")
CHUNK_USERS = 200
CHILD_TIMEOUT = 180.0
SCORE_TABLES = [scoring.CHURN_TABLE, scoring.INTERVENTIONS_TABLE]
STEP_TABLES = {
    "features": [t.name for t in features.ACTIVITY_TABLES + features.DAILY_TABLES],
    "score": SCORE_TABLES,
}
REGISTRY_TABLES = ["ml.model_registry", "ml.champion_history", "ml.training_runs"]

#: case -> (step, where the child pauses, pg_ctl stop mode)
OUTAGES: dict[str, tuple[str, str, str]] = {
    "features-crash-in-swap": ("features", "swap", "immediate"),
    "score-stop-between-chunks": ("score", "chunk", "fast"),
    "score-crash-in-commit": ("score", "swap", "immediate"),
}

CHILD = textwrap.dedent(
    f"""
    import logging
    import sys
    from datetime import date

    from ml_tasks import features, registry, scoring, warehouse

    logging.basicConfig(level=logging.WARNING)
    STEP, DAY, DSN, RUN_ID, PAUSE_AT = sys.argv[1:6]
    DAY = date.fromisoformat(DAY)


    def pause_once(module, name, *, after):
        original = getattr(module, name)
        paused = []

        def hooked(*args, **kwargs):
            if not after and not paused:
                paused.append(1)
                print("PAUSED", flush=True)
                sys.stdin.readline()
            out = original(*args, **kwargs)
            if after and not paused:
                paused.append(1)
                print("PAUSED", flush=True)
                sys.stdin.readline()
            return out

        setattr(module, name, hooked)


    if STEP == "score":  # warm up: the model's libraries take seconds to import
        registry.load_churn_model(registry.champion("churn", scoring.day_end(DAY), dsn=DSN))
    if PAUSE_AT == "swap":  # in the transaction that swaps a day in, before the swap
        pause_once(warehouse, "swap_day_partition", after=False)
    elif PAUSE_AT == "chunk":  # once the first chunk of scores is staged
        pause_once(scoring, "score_churn_chunk", after=True)
    print("READY", flush=True)
    sys.stdin.readline()
    if STEP == "features":
        features.build_day(DAY, run_id=RUN_ID, dsn=DSN)
    else:
        scoring.score_churn(DAY, run_id=RUN_ID, dsn=DSN, chunk_users={CHUNK_USERS})
    print("DONE", flush=True)
    """
)


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class OwnWorld:
    """The own server, holding :data:`TEMPLATE` (a copy of the scored world)."""

    server: OwnPostgres
    day: date
    artifacts: Path  # the scored world's artifact root: copied, never changed


@dataclass(frozen=True)
class OwnDb:
    """One test's clone of the template and its own copy of the artifacts."""

    server: OwnPostgres
    name: str
    dsn: str
    day: date
    artifacts: Path
    logs: Path


@pytest.fixture(scope="module")
def own_world(scored) -> Iterator[OwnWorld]:
    started = time.perf_counter()
    champion = registry.champion(
        scoring.CHURN_MODEL, scoring.day_end(scored["day"]), dsn=scored["dsn"]
    )
    assert champion is not None
    with own_postgres() as server:
        copy_database(scored["dsn"], server, TEMPLATE)
        log.info("own world ready in %.1f s", time.perf_counter() - started)
        record_setting("restart_server", f"own PostgreSQL {server.version} ({server.bin_dir})")
        yield OwnWorld(server, scored["day"], champion.artifact_path.parents[3])


@pytest.fixture
def own_db(own_world: OwnWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OwnDb]:
    server = own_world.server
    server.ensure_running()
    name = f"encore_r_{uuid.uuid4().hex[:10]}"
    dsn = server.create_database(name, template=TEMPLATE)
    artifacts = tmp_path / "artifacts"
    shutil.copytree(own_world.artifacts / "models", artifacts / "models")
    with warehouse.connect(dsn) as conn, conn.transaction():
        conn.execute(
            "UPDATE ml.model_registry SET artifact_uri = replace(artifact_uri, %s, %s)",
            (str(own_world.artifacts), str(artifacts)),
        )
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    monkeypatch.setenv("ENCORE_ARTIFACTS", str(artifacts))
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        yield OwnDb(server, name, dsn, own_world.day, artifacts, logs)
    finally:
        server.ensure_running()
        server.drop_database(name)


# --------------------------------------------------------------------------- helpers


def snapshot(dsn: str, tables: list[str], day: date | None = None) -> dict[str, tuple[int, str]]:
    """Checksums (lineage aside) of each table's ``day`` partition, or of whole tables."""
    with warehouse.connect(dsn) as conn:
        return {
            t: warehouse.table_checksum(
                conn,
                warehouse.partition_name(t, day) if day else t,
                exclude=LINEAGE if day else (),
            )
            for t in tables
        }


def start_step(db: OwnDb, step: str, run_id: str, pause_at: str = "") -> subprocess.Popen:
    """The step in a child process (stderr to ``logs/<run_id>.err``): it imports, prints
    READY and waits for a line on stdin before it starts."""
    args = [step, db.day.isoformat(), db.dsn, run_id, pause_at or "-"]
    with open(db.logs / f"{run_id}.err", "w") as err:
        return subprocess.Popen(
            [sys.executable, "-c", CHILD, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
        )


def wait_for(child: subprocess.Popen, db: OwnDb, run_id: str, expect: str) -> None:
    """Wait for the child to say ``expect``."""
    said = read_line(child)
    assert said == expect, f"child said {said!r}, not {expect!r}: {child_error(db, run_id)}"


def resume(child: subprocess.Popen) -> None:
    """Let a waiting child go on."""
    child.stdin.write("go\n")
    child.stdin.flush()


def read_line(child: subprocess.Popen, timeout: float = CHILD_TIMEOUT) -> str:
    """The child's next stdout line ('' if it exited first)."""
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"child {child.pid} said nothing for {timeout:.0f} s")
    return child.stdout.readline().strip()


def stop_child(child: subprocess.Popen) -> None:
    """Kill the child by its PID if it still runs, and reap it."""
    if child.poll() is None:
        child.kill()
    child.wait(timeout=30)
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            stream.close()


def child_error(db: OwnDb, run_id: str) -> str:
    """The last line of a child's stderr: the exception it died of."""
    lines = [x for x in (db.logs / f"{run_id}.err").read_text().splitlines() if x.strip()]
    return lines[-1] if lines else ""


def run_step(db: OwnDb, step: str, run_id: str) -> float:
    """Run the step here, as a retry would; returns its seconds."""
    started = time.perf_counter()
    if step == "features":
        features.build_day(db.day, run_id=run_id, dsn=db.dsn)
    else:
        scoring.score_churn(db.day, run_id=run_id, dsn=db.dsn, chunk_users=CHUNK_USERS)
    return time.perf_counter() - started


def run_step_in_child(db: OwnDb, step: str, run_id: str) -> float:
    """Run the step to completion in a fresh process; returns its seconds."""
    started = time.perf_counter()
    child = start_step(db, step, run_id)
    try:
        wait_for(child, db, run_id, "READY")
        resume(child)
        line = read_line(child)
        code = child.wait(timeout=CHILD_TIMEOUT)
    finally:
        stop_child(child)
    if line != "DONE" or code != 0:
        tail = (db.logs / f"{run_id}.err").read_text()[-3000:]
        pytest.fail(f"{step} run {run_id} failed ({code}):\n{tail}")
    return time.perf_counter() - started


def scoring_run(dsn: str, run_id: str) -> tuple | None:
    with warehouse.connect(dsn) as conn:
        return conn.execute(
            "SELECT model_version, status FROM scores.scoring_runs"
            " WHERE run_id = %s AND model_name = %s",
            (run_id, scoring.CHURN_MODEL),
        ).fetchone()


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def delete(path: Path) -> None:
    path.unlink()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "flipped-byte": flip_byte,
    "truncated": truncate,
    "missing": delete,
}


# --------------------------------------------------------------------------- outages


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.full) if c != "score-crash-in-commit" else c
        for c in OUTAGES
    ],
)
def test_a_stopped_warehouse_fails_clearly_and_a_rerun_converges(own_db: OwnDb, case: str) -> None:
    from encore_airflow.common import DEFAULT_ARGS

    step, pause_at, mode = OUTAGES[case]
    server, dsn, day = own_db.server, own_db.dsn, own_db.day
    tables = STEP_TABLES[step]
    where = {"swap": "in the transaction swapping the day in", "chunk": "between chunks"}
    began = time.perf_counter()
    entry: dict = {
        "case": f"{step}: warehouse stopped (-m {mode}) {where[pause_at]}, then a re-run",
        "step": step,
        "stop_mode": mode,
        "runs": 3,
        "day": day.isoformat(),
        "airflow_retries": DEFAULT_ARGS["retries"],
        "held": False,
    }
    child = start_step(own_db, step, "stopped", pause_at)  # it imports meanwhile
    try:
        entry["clean_seconds"] = round(run_step(own_db, step, "clean"), 2)
        reference = snapshot(dsn, tables, day)
        assert all(count > 0 for count, _ in reference.values()), reference
        entry["rows"] = {t: c for t, (c, _) in reference.items()}

        try:
            wait_for(child, own_db, "stopped", "READY")
            resume(child)
            wait_for(child, own_db, "stopped", "PAUSED")
            server.stop(mode)
            resume(child)  # against a stopped warehouse
            code = child.wait(timeout=CHILD_TIMEOUT)
        finally:
            stop_child(child)
        error = child_error(own_db, "stopped")
        entry["exit_code"], entry["error"] = code, error
        assert code != 0, "the step must fail while the warehouse is down"
        assert error.startswith("ml_tasks.warehouse.WarehouseUnavailable:"), error
        assert f"warehouse at {dsn}" in error, error
        assert "lost the connection" in error or "cannot connect" in error, error
        assert "re-run" in error, error

        started = time.perf_counter()
        server.start()
        entry["restart_seconds"] = round(time.perf_counter() - started, 2)
        after = snapshot(dsn, tables, day)
        assert after == reference, "after the restart the day must be the previous whole version"

        entry["rerun_seconds"] = round(run_step(own_db, step, "rerun"), 2)
        assert snapshot(dsn, tables, day) == reference, "the re-run must converge to a clean run"
        assert DEFAULT_ARGS["retries"] >= 2, "an Airflow retry is the re-run: policy needs 2"
        entry["held"] = True
    finally:
        stop_child(child)
        entry["seconds"] = round(time.perf_counter() - began, 1)
        record("warehouse_outages", case, entry)


# --------------------------------------------------------------------------- recovery


def test_a_corrupted_candidate_is_refused_and_the_champion_keeps_scoring(own_db: OwnDb) -> None:
    dsn, day = own_db.dsn, own_db.day
    at = scoring.day_end(day)
    began = time.perf_counter()
    entry: dict = {
        "case": "candidate's artifact corrupted: promotion refused, the champion scores the day",
        "runs": 1,
        "held": False,
    }
    try:
        champion = registry.champion(scoring.CHURN_MODEL, at, dsn=dsn)
        assert champion is not None
        entry["champion"] = champion.version
        reference = snapshot(dsn, SCORE_TABLES, day)
        entry["rows"] = {t: c for t, (c, _) in reference.items()}
        version = f"{champion.version}-corrupted"
        path, sha = registry.save_artifact(
            registry.load_churn_model(champion),
            scoring.CHURN_MODEL,
            version,
            {"note": "reliability test: corrupted after registration"},
            own_db.artifacts,
        )
        registry.register(
            name=scoring.CHURN_MODEL,
            version=version,
            horizons=list(champion.horizons),
            train_start=champion.train_start,
            train_end=champion.train_end,
            feature_service=champion.feature_service,
            metrics=champion.metrics,
            artifact_path=path,
            artifact_sha256=sha,
            run_id="recovery",
            dsn=dsn,
        )
        registry_before = snapshot(dsn, REGISTRY_TABLES)
        flip_byte(path)
        actual = registry.sha256_file(path)

        with pytest.raises(registry.ArtifactIntegrityError) as refused:
            registry.promote(scoring.CHURN_MODEL, version, run_id="recovery", at=at, dsn=dsn)
        message = str(refused.value)
        entry["error"] = message
        for part in (str(path), sha, actual, f"{champion.version} stays champion"):
            assert part in message, f"{part!r} not in {message!r}"
        assert snapshot(dsn, REGISTRY_TABLES) == registry_before, "the refusal changed the registry"
        assert registry.champion(scoring.CHURN_MODEL, at, dsn=dsn).version == champion.version
        assert registry.get(scoring.CHURN_MODEL, version, dsn=dsn).status == "candidate"

        result = scoring.score_churn(day, run_id="after-refusal", dsn=dsn)
        assert result["model_version"] == champion.version
        assert scoring_run(dsn, "after-refusal") == (champion.version, "scored")
        assert snapshot(dsn, SCORE_TABLES, day) == reference, "the champion's scores changed"
        entry["scored_with"] = result["model_version"]
        entry["held"] = True
    finally:
        entry["seconds"] = round(time.perf_counter() - began, 1)
        record("recovery", "corrupted-candidate", entry)


@pytest.mark.parametrize(
    "damage",
    [d if d == "flipped-byte" else pytest.param(d, marks=pytest.mark.full) for d in DAMAGE],
)
def test_a_corrupted_champion_stops_scoring_with_a_clear_error(
    own_db: OwnDb, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, day = own_db.dsn, own_db.day
    began = time.perf_counter()
    entry: dict = {
        "case": f"champion's artifact {damage}: scoring refused (library and CLI), then restored",
        "runs": 3,
        "held": False,
    }
    try:
        champion = registry.champion(scoring.CHURN_MODEL, scoring.day_end(day), dsn=dsn)
        assert champion is not None
        entry["champion"] = champion.version
        reference = snapshot(dsn, SCORE_TABLES, day)
        entry["rows"] = {t: c for t, (c, _) in reference.items()}
        original = champion.artifact_path.read_bytes()
        DAMAGE[damage](champion.artifact_path)

        with pytest.raises(registry.ArtifactIntegrityError) as refused:
            scoring.score_churn(day, run_id="corrupted", dsn=dsn)
        message = str(refused.value)
        entry["error"] = message
        for part in (str(champion.artifact_path), champion.artifact_sha256):
            assert part in message, f"{part!r} not in {message!r}"
        # no fallback to another model: the day keeps the scores it had, nothing recorded
        assert snapshot(dsn, SCORE_TABLES, day) == reference
        assert scoring_run(dsn, "corrupted") is None
        # the CLI says it in one line
        code = cli.main(["score", "--date", day.isoformat(), "--run-id", "corrupted-cli"])
        said = capsys.readouterr().err.strip().splitlines()[-1]
        entry["cli"] = said
        assert code == 1 and said.startswith("encore score: error: model file"), said
        assert str(champion.artifact_path) in said, said

        champion.artifact_path.write_bytes(original)  # the remedy: restore the file
        result = scoring.score_churn(day, run_id="restored", dsn=dsn)
        assert result["model_version"] == champion.version
        assert snapshot(dsn, SCORE_TABLES, day) == reference
        entry["held"] = True
    finally:
        entry["seconds"] = round(time.perf_counter() - began, 1)
        record("recovery", f"corrupted-champion-{damage}", entry)


@pytest.mark.parametrize("mode", ["immediate", pytest.param("fast", marks=pytest.mark.full)])
def test_registry_and_artifacts_survive_a_restart_of_everything(own_db: OwnDb, mode: str) -> None:
    server, dsn, day = own_db.server, own_db.dsn, own_db.day
    at = scoring.day_end(day)
    began = time.perf_counter()
    entry: dict = {
        "case": f"server stopped (-m {mode}) and started: registry, artifacts and scores intact",
        "runs": 2,
        "held": False,
    }
    try:
        entry["scoring_seconds_before"] = round(run_step(own_db, "score", "before-restart"), 2)
        reference = snapshot(dsn, SCORE_TABLES, day)
        registry_before = snapshot(dsn, REGISTRY_TABLES)
        entry["rows"] = {t: c for t, (c, _) in {**reference, **registry_before}.items()}
        champion = registry.champion(scoring.CHURN_MODEL, at, dsn=dsn)
        records = registry.models(scoring.CHURN_MODEL, dsn=dsn)
        files = {
            p: registry.sha256_file(p) for p in sorted(own_db.artifacts.rglob("*")) if p.is_file()
        }
        entry.update(champion=champion.version, models=len(records), artifact_files=len(files))

        server.stop(mode)
        assert not server.running()
        started = time.perf_counter()
        server.start()
        entry["restart_seconds"] = round(time.perf_counter() - started, 2)

        assert snapshot(dsn, REGISTRY_TABLES) == registry_before
        assert registry.champion(scoring.CHURN_MODEL, at, dsn=dsn) == champion
        assert registry.models(scoring.CHURN_MODEL, dsn=dsn) == records
        for rec in records:
            registry.verify_artifact(rec)
        assert {p: registry.sha256_file(p) for p in files} == files
        registry.load_churn_model(champion)
        # scoring in a fresh process: nothing cached from before the restart
        entry["scoring_seconds_after"] = round(
            run_step_in_child(own_db, "score", "after-restart"), 2
        )
        assert scoring_run(dsn, "after-restart") == (champion.version, "scored")
        assert snapshot(dsn, SCORE_TABLES, day) == reference
        entry["held"] = True
    finally:
        entry["seconds"] = round(time.perf_counter() - began, 1)
        record("recovery", f"restart-{mode}", entry)
