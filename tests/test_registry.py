"""Registry: artifacts with sha256, champion stints and lookups at an instant, one champion."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from ml_tasks import registry, warehouse

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _register(dsn: str, version: str, artifacts: Path) -> registry.ModelRecord:
    path, sha = registry.save_artifact({"weights": [1, 2, 3]}, "toy", version, {}, artifacts)
    return registry.register(
        name="toy",
        version=version,
        horizons=[7],
        train_start=date(2026, 4, 1),
        train_end=date(2026, 4, 30),
        feature_service="churn_v1",
        metrics={"7": {"ece": 0.01}},
        artifact_path=path,
        artifact_sha256=sha,
        run_id="r",
        dsn=dsn,
    )


def test_champion_at_an_instant(warehouse_dsn: str, tmp_path: Path) -> None:
    a = _register(warehouse_dsn, "a", tmp_path)
    b = _register(warehouse_dsn, "b", tmp_path)
    assert a.status == "candidate"
    assert registry.champion("toy", T0, dsn=warehouse_dsn) is None
    registry.promote("toy", "a", run_id="r1", at=T0, dsn=warehouse_dsn)
    registry.promote("toy", "b", run_id="r2", at=T0 + timedelta(days=3), dsn=warehouse_dsn)
    at = registry.champion
    assert at("toy", T0 - timedelta(microseconds=1), dsn=warehouse_dsn) is None
    assert at("toy", T0, dsn=warehouse_dsn).version == "a"
    assert at("toy", T0 + timedelta(days=2), dsn=warehouse_dsn).version == "a"
    assert at("toy", T0 + timedelta(days=3), dsn=warehouse_dsn).version == "b"
    assert at("toy", T0 + timedelta(days=300), dsn=warehouse_dsn).version == b.version
    assert registry.get("toy", "a", dsn=warehouse_dsn).status == "retired"
    with pytest.raises(ValueError, match="timezone"):
        at("toy", datetime(2026, 5, 1), dsn=warehouse_dsn)


def test_only_one_champion_per_model(warehouse_dsn: str, tmp_path: Path) -> None:
    _register(warehouse_dsn, "a", tmp_path)
    _register(warehouse_dsn, "b", tmp_path)
    registry.promote("toy", "a", run_id="r", at=T0, dsn=warehouse_dsn)
    with warehouse.connect(warehouse_dsn) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("UPDATE ml.model_registry SET status = 'champion' WHERE version = 'b'")
    with pytest.raises(registry.RegistryError, match="already the champion"):
        registry.promote("toy", "a", run_id="r", dsn=warehouse_dsn)


def test_sha256_mismatch_is_refused(warehouse_dsn: str, tmp_path: Path) -> None:
    good = _register(warehouse_dsn, "a", tmp_path)
    bad = _register(warehouse_dsn, "b", tmp_path)
    assert registry.load_model(good) == {"weights": [1, 2, 3]}
    bad.artifact_path.write_bytes(bad.artifact_path.read_bytes() + b"x")
    with pytest.raises(registry.ArtifactIntegrityError, match=str(bad.artifact_path)):
        registry.load_model(bad)
    bad.artifact_path.unlink()
    with pytest.raises(registry.ArtifactIntegrityError, match="missing"):
        registry.load_model(bad)
    assert registry.load_model(good) == {"weights": [1, 2, 3]}


def test_a_candidate_whose_artifact_changed_is_not_promoted(
    warehouse_dsn: str, tmp_path: Path
) -> None:
    champion = _register(warehouse_dsn, "a", tmp_path)
    registry.promote("toy", "a", run_id="r1", at=T0, dsn=warehouse_dsn)
    bad = _register(warehouse_dsn, "b", tmp_path)
    bad.artifact_path.write_bytes(bad.artifact_path.read_bytes() + b"x")
    actual = registry.sha256_file(bad.artifact_path)
    with pytest.raises(registry.ArtifactIntegrityError) as refused:
        registry.promote("toy", "b", run_id="r2", at=T0 + timedelta(days=1), dsn=warehouse_dsn)
    message = str(refused.value)
    for part in (str(bad.artifact_path), bad.artifact_sha256, actual, "toy a stays champion"):
        assert part in message
    assert registry.get("toy", "b", dsn=warehouse_dsn).status == "candidate"
    assert registry.champion("toy", T0 + timedelta(days=2), dsn=warehouse_dsn) == registry.get(
        "toy", champion.version, dsn=warehouse_dsn
    )
    bad.artifact_path.unlink()
    with pytest.raises(registry.ArtifactIntegrityError, match="missing"):
        registry.promote("toy", "b", run_id="r2", dsn=warehouse_dsn)


def test_a_failed_training_run_is_recorded_with_its_error_and_retried(empty_db, tmp_path):
    """The trainers' shared run (training_inputs.train_unless_unchanged): a run that raises
    is marked failed with the error; nothing was registered, so the next run tries again."""
    from ml_tasks import genre

    warehouse.ensure_migrated(empty_db)
    day = date(2026, 5, 1)
    for run_id in ("genre-1", "genre-2"):
        with pytest.raises(genre.NotEnoughData, match="labelled tracks"):
            genre.train_genre(day, run_id=run_id, dsn=empty_db, artifacts=tmp_path)
    with warehouse.connect(empty_db) as conn:
        runs = conn.execute(
            "SELECT run_id, model_name, status, error, version FROM ml.training_runs"
            " ORDER BY run_id"
        ).fetchall()
    assert [(r[0], r[1], r[2], r[4]) for r in runs] == [
        ("genre-1", "genre", "failed", None),
        ("genre-2", "genre", "failed", None),
    ]
    assert all(r[3].startswith("NotEnoughData: 0 labelled tracks") for r in runs), runs
