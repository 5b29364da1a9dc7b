"""Idempotency: a DAG run twice for the same interval leaves the same data.

Each daily DAG of the chain runs twice for the same day through Airflow (``dag.test()``
with the day's interval) on a scored copy of the churn world. After each run, every data
table the DAG writes is checksummed for the day (lineage columns aside: run ids and
timestamps). The second run must leave exactly what the first left.

Run logs are audit trails by design and gain one row per run: ``raw.ingest_runs``,
``raw.ingest_log``, ``monitoring.validation_results``, ``monitoring.feature_materializations``,
``scores.scoring_runs``, ``ml.training_runs``. ``audio_features`` runs on the audio world
(every track has a clip) instead. ``retrain_nightly`` runs with the world's own model
configuration through ``ENCORE_CONFIG_DIR`` (the shipped one needs months of history this
world does not have): unchanged inputs register nothing (``ml_tasks.training_inputs``);
the function-level test shows changed ones train anew.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
import pytest
from reliability_results import record

from landing import INGEST_TABLES
from ml_tasks import features, scoring, warehouse

pytestmark = [pytest.mark.slow, pytest.mark.reliability, pytest.mark.airflow]

DAGS = Path(__file__).resolve().parents[2] / "dags"
LINEAGE = (
    "run_id",
    "scored_at",
    "computed_at",
    "built_at",
    "seconds",
    "created_ts",
    "extracted_at",
    "rejected_at",
)
#: dag_id -> the tables whose day partition (or, for feast_online, whole table) it writes
WRITES: dict[str, list[str]] = {
    "ingest_daily": [t for t in INGEST_TABLES if t != "raw.ingest_log"],
    "features_daily": [
        *(t.name for t in features.ACTIVITY_TABLES + features.DAILY_TABLES),
        "monitoring.stream_anomalies",
        "feast_online.encore_user_engagement",
        "feast_online.encore_user_account",
    ],
    "score_daily": [scoring.CHURN_TABLE, scoring.INTERVENTIONS_TABLE, "scores.track_popularity"],
    "monitor_daily": ["monitoring.drift", "monitoring.realized_performance"],
}
REGISTRY = ["ml.model_registry", "ml.champion_history"]
#: The DAGs CI's quick slice runs twice (make test-full and make reliability run them all).
QUICK = ("ingest_daily", "score_daily")


@pytest.fixture(scope="module")
def world(pg_admin, churn_world, tmp_path_factory, airflow_db):
    from churn_world import drop, scored_copy
    from ml_tasks import validation

    artifacts = tmp_path_factory.mktemp("idem-artifacts")
    copy = scored_copy(pg_admin, churn_world, artifacts)
    # Each DAG's preconditions hold on their own, whichever of the parameters run (alone,
    # features_daily's sensor would wait hours for a raw validation ingest_daily's run
    # leaves behind).
    validation.validate_day(copy["day"], run_id="idem-raw", dsn=copy["dsn"], artifacts=artifacts)
    ready, why = features.raw_day_ready(copy["day"], dsn=copy["dsn"])
    assert ready, why
    yield copy
    drop(pg_admin, copy["name"])


def _relation(conn, table: str, day) -> str | None:
    if table.startswith("feast_online."):
        return table
    partition = warehouse.partition_name(table, day)
    if conn.execute("SELECT to_regclass(%s)", (partition,)).fetchone()[0] is not None:
        return partition
    return None  # not partitioned by day: the whole table is checked


def snapshot(dsn: str, tables: list[str], day) -> dict[str, tuple[int, str]]:
    with warehouse.connect(dsn) as conn:
        out = {}
        for table in tables:
            relation = _relation(conn, table, day) or table
            out[table] = warehouse.table_checksum(conn, relation, exclude=LINEAGE)
        return out


@pytest.mark.parametrize(
    "dag_id",
    [d if d in QUICK else pytest.param(d, marks=pytest.mark.full) for d in WRITES],
)
def test_a_dag_run_twice_for_a_day_leaves_the_same_data(world, dag_id, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dsn, day = world["dsn"], world["day"]
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    monkeypatch.setenv("ENCORE_LANDING_ROOT", str(world["landing"]))
    monkeypatch.setenv("ENCORE_SCORE_CHUNK_USERS", "200")
    dag = DagBag(dag_folder=str(DAGS)).get_dag(dag_id)
    logical = pendulum.datetime(day.year, day.month, day.day, tz="UTC") + timedelta(days=1)
    snapshots, states = [], []
    for _ in range(2):
        run = dag.test(logical_date=logical)
        states.append(
            {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}
        )
        assert str(run.state) == "success", states[-1]
        snapshots.append(snapshot(dsn, WRITES[dag_id], day))
    first, second = snapshots
    assert any(count for count, _ in first.values()), f"{dag_id} wrote nothing: {first}"
    differing = sorted(t for t in first if first[t] != second[t])
    record(
        "idempotency",
        dag_id,
        {
            "dag": dag_id,
            "day": day.isoformat(),
            "runs": 2,
            "tables": len(first),
            "rows": sum(count for count, _ in second.values()),
            "held": not differing,
        },
    )
    assert not differing, f"{dag_id}: a second run changed {differing}"


def test_retraining_unchanged_inputs_registers_nothing_and_changed_inputs_train(
    world, tmp_path
) -> None:
    from churn_world import small_churn_config
    from ml_tasks.churn import train_churn
    from ml_tasks.feature_validation import validate_features

    dsn, day = world["dsn"], world["day"]
    # the fixture validated and scored after its training: inputs of that run changed, so
    # this first run trains (and, promoted at the same instant, supersedes that champion)
    first = train_churn(
        day, run_id="retrain-1", dsn=dsn, artifacts=tmp_path, config=small_churn_config()
    )
    before = snapshot(dsn, REGISTRY, day)
    again = train_churn(
        day, run_id="retrain-2", dsn=dsn, artifacts=tmp_path, config=small_churn_config()
    )
    assert again.get("reused") is True, again
    assert again["version"] == first["version"]
    unchanged = snapshot(dsn, REGISTRY, day) == before
    # a feature day validated again is a new input: the next run trains a new model
    validate_features(day - timedelta(days=10), run_id="revalidate", dsn=dsn)
    fresh = train_churn(
        day, run_id="retrain-changed", dsn=dsn, artifacts=tmp_path, config=small_churn_config()
    )
    record(
        "idempotency",
        "retrain_churn",
        {
            "case": "train_churn twice on unchanged inputs, then after one input changed",
            "day": day.isoformat(),
            "runs": 4,
            "rows": before["ml.model_registry"][0],
            "held": unchanged and not fresh.get("reused"),
        },
    )
    assert unchanged, "a retraining on unchanged inputs changed the registry"
    assert not fresh.get("reused") and fresh["version"] != again["version"]


AUDIO_WRITES = ["features.track_audio", "quarantine.audio_rejects"]


@pytest.mark.full
def test_audio_features_run_twice_for_a_day_leaves_the_same_data(
    request, pg_admin, template_db, tmp_path_factory, airflow_db, tmp_path, monkeypatch
) -> None:
    """``audio_features`` through Airflow on the audio world (every track has a clip): the
    first run decodes the whole catalogue afresh, the second decodes nothing and leaves
    every row as it was. Genres are then scored twice with a genre champion, as
    ``score_daily``'s ``score_genres`` task does after the day's retraining, and the second
    scoring leaves ``scores.track_genres`` as the first left it."""
    import shutil
    from dataclasses import replace

    from airflow.dag_processing.dagbag import DagBag

    from ml_tasks import genre, scoring, validation
    from test_audio import copy_world, drop_db, shared_audio_world

    audio_world = shared_audio_world(request, pg_admin, template_db, tmp_path_factory)
    dsn = copy_world(pg_admin, audio_world)
    try:
        artifacts = tmp_path / "artifacts"
        shutil.copytree(audio_world.artifacts, artifacts)
        day = audio_world.last_day
        gbm_only = replace(genre.GenreConfig(), cnn=genre.CnnConfig(enabled=False))
        trained = genre.train_genre(
            day, run_id="idem-genre", dsn=dsn, artifacts=artifacts, config=gbm_only
        )
        assert trained["status"] == "champion", trained["gate"]
        validation.validate_day(day, run_id="idem-validate", dsn=dsn)  # the sensor's gate
        with warehouse.connect(dsn) as conn:  # forget the world's extraction
            conn.execute("TRUNCATE features.track_audio, quarantine.audio_rejects")
        monkeypatch.setenv("WAREHOUSE_DSN", dsn)
        monkeypatch.setenv("ENCORE_LANDING_ROOT", str(audio_world.landing))
        monkeypatch.setenv("ENCORE_ARTIFACTS", str(artifacts))
        dag = DagBag(dag_folder=str(DAGS)).get_dag("audio_features")
        logical = pendulum.datetime(day.year, day.month, day.day, tz="UTC") + timedelta(days=1)
        snapshots, untouched, genres = [], [], []
        for attempt in range(2):
            run = dag.test(logical_date=logical)
            states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
            assert str(run.state) == "success", states
            snapshots.append(snapshot(dsn, AUDIO_WRITES, day))
            with warehouse.connect(dsn) as conn:  # lineage included: rows not rewritten
                untouched.append(warehouse.table_checksum(conn, "features.track_audio", ()))
            scored = scoring.score_genres(day, run_id=f"idem-genres-{attempt}", dsn=dsn)
            assert scored["status"] == "scored", scored
            genres.append(snapshot(dsn, ["scores.track_genres"], day)["scores.track_genres"])
        first, second = snapshots
        assert first["features.track_audio"][0] > 0 and genres[0][0] > 0
        differing = sorted(t for t in first if first[t] != second[t])
        if genres[0] != genres[1]:
            differing.append("scores.track_genres")
        record(
            "idempotency",
            "audio_features",
            {
                "dag": "audio_features (and score_genres)",
                "day": day.isoformat(),
                "runs": 2,
                "tables": len(first) + 1,
                "rows": sum(count for count, _ in second.values()) + genres[1][0],
                "held": not differing and untouched[0] == untouched[1],
            },
        )
        assert not differing, f"audio_features: a second run changed {differing}"
        assert untouched[0] == untouched[1], "the second run re-extracted unchanged clips"
    finally:
        drop_db(pg_admin, dsn)


@pytest.mark.full
def test_retrain_nightly_run_twice_registers_nothing_new(world, tmp_path, monkeypatch) -> None:
    """``retrain_nightly`` through Airflow, its configuration the world's own (the shipped
    one needs months of history) through ``ENCORE_CONFIG_DIR``: the first run retrains,
    the second finds every input unchanged and leaves the registry as it was."""
    from airflow.dag_processing.dagbag import DagBag

    from churn_world import small_config_dir
    from ml_tasks.feature_validation import validate_features

    dsn, day = world["dsn"], world["day"]
    monkeypatch.setenv("WAREHOUSE_DSN", dsn)
    monkeypatch.setenv("ENCORE_LANDING_ROOT", str(world["landing"]))
    monkeypatch.setenv("ENCORE_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("ENCORE_CONFIG_DIR", str(small_config_dir(tmp_path / "config")))
    # a feature day validated again is a new input, whatever ran before: the first run trains
    validate_features(day - timedelta(days=9), run_id="revalidate-dag", dsn=dsn)
    before = snapshot(dsn, REGISTRY, day)
    dag = DagBag(dag_folder=str(DAGS)).get_dag("retrain_nightly")
    logical = pendulum.datetime(day.year, day.month, day.day, tz="UTC") + timedelta(days=1)
    snapshots, states = [], []
    for _ in range(2):
        run = dag.test(logical_date=logical)
        states.append({ti.task_id: str(ti.state) for ti in run.get_task_instances()})
        assert str(run.state) == "success", states[-1]
        snapshots.append(snapshot(dsn, REGISTRY, day))
    assert states[0]["train_churn"] == "success", states[0]
    first, second = snapshots
    assert first["ml.model_registry"][0] > before["ml.model_registry"][0], "nothing retrained"
    record(
        "idempotency",
        "retrain_nightly",
        {
            "case": "retrain_nightly: "
            + ", ".join(
                f"{t} {s}" for t, s in sorted(states[0].items()) if t != "wait_for_features"
            ),
            "dag": "retrain_nightly",
            "day": day.isoformat(),
            "runs": 2,
            "tables": len(first),
            "rows": sum(count for count, _ in second.values()),
            "held": first == second,
            "tasks": states[1],
        },
    )
    assert first == second, f"retrain_nightly: a second run changed the registry {states}"
