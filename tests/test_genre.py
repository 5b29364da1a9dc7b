"""Genre classification on simulated clips: training, the quality bar, registry, scoring."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import timedelta

import pytest

from ml_tasks import genre, registry, scoring, warehouse
from test_audio import copy_world, drop_db, shared_audio_world

GBM_ONLY = replace(genre.GenreConfig(), cnn=genre.CnnConfig(enabled=False))


@pytest.fixture(scope="session")
def genre_world(request, pg_admin, template_db, tmp_path_factory):
    return shared_audio_world(request, pg_admin, template_db, tmp_path_factory)


@pytest.fixture
def genre_dsn(pg_admin, genre_world, monkeypatch):
    dsn = copy_world(pg_admin, genre_world)
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    yield dsn
    drop_db(pg_admin, dsn)


@pytest.fixture
def artifacts(genre_world, tmp_path):
    """A private artifacts folder holding the world's log-mel cache."""
    root = tmp_path / "artifacts"
    shutil.copytree(genre_world.artifacts, root)
    return root


def test_scoring_without_a_champion_skips_cleanly(genre_world, genre_dsn, monkeypatch) -> None:
    result = genre.score_genres(genre_world.last_day, run_id="s0", dsn=genre_dsn)
    assert result["status"] == "skipped" and "no genre model" in result["reason"]
    # score_daily and `encore score` go through scoring.score_day's genre family, which
    # leaves the skip to genre itself rather than writing the same row a second time
    second_writes: list = []
    monkeypatch.setattr(scoring, "record_skip", lambda *args: second_writes.append(args))
    via = scoring.score_day(genre_world.last_day, run_id="s0", dsn=genre_dsn, families=["genre"])
    assert via["scored"] == {} and "no genre model" in via["skipped"]["genre"]
    assert second_writes == []
    with warehouse.connect(genre_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM scores.track_genres").fetchone()[0] == 0
        status = conn.execute(
            "SELECT status FROM scores.scoring_runs WHERE model_name = 'genre'"
        ).fetchone()
    assert status == ("skipped",)


def test_gbm_meets_the_quality_bar_registers_and_scores(genre_world, genre_dsn, artifacts):
    day = genre_world.last_day
    trained = genre.train_genre(
        day, run_id="train", dsn=genre_dsn, artifacts=artifacts, config=GBM_ONLY
    )
    acc = trained["accuracy"]
    print(f"\ngenre held-out accuracy: {json.dumps(acc)}; macro F1 {trained['macro_f1']}")
    assert trained["chosen"] == "gbm"
    assert acc["gbm"] >= 0.85, trained["metrics"]["candidates"]["gbm"]
    assert acc["gbm"] > acc["baseline"]
    assert trained["status"] == "champion", trained["gate"]
    metrics = trained["metrics"]
    assert metrics["rows"]["holdout"] >= 30
    confusion = metrics["candidates"]["gbm"]["confusion"]
    assert sum(map(sum, confusion)) == metrics["rows"]["holdout"]

    record = registry.get("genre", trained["version"], dsn=genre_dsn)
    assert record.status == "champion"
    assert record.artifact_sha256 == registry.sha256_file(record.artifact_path)
    assert isinstance(registry.load_model(record), genre.GenreModel)
    card = record.artifact_path.parent / genre.CARD_FILE
    assert record.model_card_uri == str(card)
    assert "Confusion" in card.read_text() and "majority class" in card.read_text()

    via = scoring.score_day(day, run_id="score-via", dsn=genre_dsn, families=["genre"])
    assert via["skipped"] == {} and via["scored"]["genre"]["status"] == "scored"
    scored = genre.score_genres(day, run_id="score", dsn=genre_dsn)
    assert scored["status"] == "scored" and scored["tracks"] > 0
    assert via["scored"]["genre"]["tracks"] == scored["tracks"]
    with warehouse.connect(genre_dsn) as conn:
        unlabelled = conn.execute(
            "SELECT count(*) FROM raw.tracks t JOIN features.track_audio USING (track_id)"
            " WHERE t.genre IS NULL"
        ).fetchone()[0]
        rows = conn.execute(
            "SELECT g.track_id, g.genre, g.probability, g.top3, g.model_version, g.run_id,"
            " g.dt, t.genre FROM scores.track_genres g JOIN raw.tracks t USING (track_id)"
        ).fetchall()
        before = warehouse.table_checksum(conn, "scores.track_genres", ["run_id", "scored_at"])
    assert len(rows) == unlabelled == scored["tracks"]
    for _, g, p, top3, version, run_id, dt, catalogue_genre in rows:
        assert catalogue_genre is None
        assert g in metrics["classes"] and 0 < p <= 1
        assert top3[0]["genre"] == g and len(top3) == 3
        assert top3[0]["probability"] >= top3[1]["probability"] >= top3[2]["probability"]
        assert (version, run_id, dt) == (trained["version"], "score", day)

    # re-scoring the day replaces the same rows
    genre.score_genres(day, run_id="score-again", dsn=genre_dsn)
    with warehouse.connect(genre_dsn) as conn:
        after = warehouse.table_checksum(conn, "scores.track_genres", ["run_id", "scored_at"])
    assert after == before

    # a retrained model on the same data is gated against the champion
    again = genre.train_genre(
        day + timedelta(days=1),
        run_id="train2",
        dsn=genre_dsn,
        artifacts=artifacts,
        config=GBM_ONLY,
    )
    champ_check = again["gate"]["checks"][0]
    assert champ_check["check"].startswith("accuracy vs champion")
    assert champ_check["champion"] == acc["gbm"]


@pytest.mark.slow
def test_cnn_and_gbm_are_both_reported(genre_world, genre_dsn, artifacts) -> None:
    """Both candidates trained on the same split; the better one kept. TensorFlow: slow."""
    cfg = replace(genre.GenreConfig(), cnn=replace(genre.CnnConfig(), epochs=20))
    trained = genre.train_genre(
        genre_world.last_day, run_id="both", dsn=genre_dsn, artifacts=artifacts, config=cfg
    )
    acc = trained["accuracy"]
    print(f"\ngenre held-out accuracy: {json.dumps(acc)}; chosen {trained['chosen']}")
    cands = trained["metrics"]["candidates"]
    assert set(cands) == {"gbm", "cnn"}
    assert "confusion" in cands["cnn"], cands["cnn"]
    fit = cands["cnn"]["fit"]
    assert fit["fit_tracks"] + fit["validation_tracks"] == cands["cnn"]["train_tracks"]
    assert fit["validation_tracks"] > 0 and 1 <= fit["best_epoch"] <= fit["epochs_run"] <= 20
    assert acc["cnn"] > acc["baseline"]
    f1 = trained["macro_f1"]
    assert trained["chosen"] == max(("gbm", "cnn"), key=lambda k: (acc[k], f1[k], k == "gbm"))
    assert max(acc["gbm"], acc["cnn"]) >= 0.85
    # the chosen model (whichever kind) loads from its single artifact and scores
    scored = genre.score_genres(
        genre_world.last_day,
        run_id="s",
        dsn=genre_dsn,
        artifacts=artifacts,
        landing_root=genre_world.landing,
    )
    assert scored["status"] == "scored" and scored["tracks"] > 0 and scored["missing_audio"] == 0


@pytest.mark.slow
def test_cnn_early_stopping_keeps_the_best_epochs_weights() -> None:
    """On clips whose labels are noise the held-out loss only rises after a while: the fit
    stops early and the model it returns has the best epoch's held-out loss, not the last
    epoch's."""
    import keras
    import numpy as np

    rng = np.random.default_rng(3)
    labels = [str(x) for x in rng.choice(["pop", "rock", "jazz"], size=90)]
    mels = [rng.normal(-40.0, 12.0, size=(64, 80)).astype(np.float32) for _ in labels]
    cnn = replace(genre.CnnConfig(), epochs=30, patience=2, min_delta=0.0, batch_size=16)
    cfg = replace(genre.GenreConfig(), cnn=cnn, seed=11)
    classes = sorted(set(labels))
    model, fit = genre.fit_cnn(mels, labels, classes, cfg)
    assert fit["validation_tracks"] == 9 and fit["fit_tracks"] == 81
    assert fit["epochs_run"] < 30 and fit["best_epoch"] <= fit["epochs_run"] - 2

    _, val_idx = genre._early_stopping_split(labels, cfg)
    patches, owner = genre._patches([mels[i] for i in val_idx], 64, cnn.patch_hop)
    x = genre._normalise(patches, model.band_mean, model.band_std)
    y = np.asarray([classes.index(labels[i]) for i in val_idx])[owner]
    probs = model._keras.predict(x, verbose=0)
    loss = float(keras.losses.sparse_categorical_crossentropy(y, probs).numpy().mean())
    assert loss == pytest.approx(fit["best_validation_loss"], abs=2e-4)

    off = replace(cfg, cnn=replace(cnn, patience=0, epochs=3))
    _, fit_off = genre.fit_cnn(mels, labels, classes, off)
    assert fit_off == {
        "epochs_run": 3,
        "best_epoch": None,
        "best_validation_loss": None,
        "fit_tracks": 90,
        "validation_tracks": 0,
    }
