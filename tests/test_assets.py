"""Data-aware scheduling: the assets, who makes them, who runs on them, and the day they carry."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest

from landing import DAY, good_play, write_day

pytestmark = pytest.mark.airflow
DAGS = Path(__file__).resolve().parent.parent / "dags"

#: The asset names each DAG is scheduled on (AND); None: the cron timetable alone.
EXPECTED_UPSTREAM: dict[str, set[str] | None] = {
    "ingest_daily": None,
    "features_daily": {"encore_raw_day"},
    "audio_features": {"encore_raw_day"},
    "retrain_nightly": {"encore_features_day", "encore_audio_day"},
    "score_daily": {"encore_features_day", "encore_models"},
    "monitor_daily": {"encore_features_day", "encore_models"},
    "nightly_deadline": None,
}

#: (dag_id, task_id) -> the asset name it emits; no other task has outlets.
EXPECTED_OUTLETS: dict[tuple[str, str], str] = {
    ("ingest_daily", "validate"): "encore_raw_day",
    ("features_daily", "materialize"): "encore_features_day",
    ("audio_features", "extract"): "encore_audio_day",
    ("retrain_nightly", "train_churn"): "encore_models",
    ("retrain_nightly", "train_genre"): "encore_models",
    ("retrain_nightly", "train_popularity"): "encore_models",
    ("score_daily", "commit"): "encore_scores_day",
    ("score_daily", "score_popularity"): "encore_scores_day",
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag


def test_assets_are_named_once_with_valid_unique_uris() -> None:
    from airflow.serialization.definitions.assets import SerializedAsset

    from encore_airflow import assets

    names = [a.name for a in assets.ALL]
    uris = [a.uri for a in assets.ALL]
    assert len(set(names)) == len(names) and len(set(uris)) == len(uris)
    for asset in assets.ALL:
        assert asset.uri.startswith("encore://warehouse/"), asset
        # what the scheduler side stores: the URI survives Airflow's validation unchanged
        assert SerializedAsset(
            name=asset.name, uri=asset.uri, group=asset.group, extra={}, watchers=[]
        ).uri == (asset.uri)


def test_each_dag_is_scheduled_on_exactly_its_upstream_assets(dagbag) -> None:
    from airflow.serialization.definitions.assets import SerializedAssetAll
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.interval import CronDataIntervalTimetable

    assert set(dagbag.dag_ids) == set(EXPECTED_UPSTREAM)
    for dag_id, expected in EXPECTED_UPSTREAM.items():
        timetable = coerce_to_core_timetable(dagbag.dags[dag_id].timetable)
        if expected is None:
            assert isinstance(timetable, CronDataIntervalTimetable), dag_id
            continue
        assert isinstance(timetable, AssetOrTimeSchedule), dag_id
        condition = timetable.asset_condition
        assert isinstance(condition, SerializedAssetAll), f"{dag_id}: an AND of its inputs"
        assert {key.name for key, _ in condition.iter_assets()} == expected, dag_id
        # the time path: midnight UTC, one-day intervals (backfills, manual runs)
        assert isinstance(timetable.timetable, CronDataIntervalTimetable), dag_id
        assert timetable.timetable.summary == "0 0 * * *"
        assert timetable.periodic, f"{dag_id}: backfills need a periodic timetable"


def test_each_producing_task_declares_its_asset_as_outlet(dagbag) -> None:
    found = {
        (dag_id, task.task_id): [a.name for a in task.outlets]
        for dag_id, dag in dagbag.dags.items()
        for task in dag.tasks
        if task.outlets
    }
    assert found == {key: [name] for key, name in EXPECTED_OUTLETS.items()}
    produced = set(EXPECTED_OUTLETS.values())
    for dag_id, expected in EXPECTED_UPSTREAM.items():
        assert expected is None or expected <= produced, f"{dag_id} waits on an orphan asset"


def test_scheduled_runs_stand_aside_only_once_the_chain_announced_the_day(dagbag) -> None:
    """A cron run of a downstream DAG skips its day once ``encore_raw_day`` announced it."""
    from airflow.sdk.exceptions import AirflowSkipException

    from encore_airflow.assets import CHAIN_ROOT

    for dag_id, expected in EXPECTED_UPSTREAM.items():
        sensors = [t for t in dagbag.dags[dag_id].tasks if hasattr(t, "yield_to")]
        wanted = None if expected is None else CHAIN_ROOT
        assert [s.yield_to for s in sensors] == [wanted] * len(sensors), dag_id
        assert expected is None or sensors, f"{dag_id} has no sensor that stands aside"

    sensor = dagbag.dags["features_daily"].get_task("wait_for_raw_day")

    class Events(list):
        def after(self, since):
            return Events(e for e in self if e["timestamp"] > since)

    def context(run_type: str, *days: str) -> dict[str, Any]:
        stamp = pendulum.datetime(2026, 11, 6, 1, tz="UTC")
        events = Events({"extra": {"day": d}, "timestamp": stamp} for d in days)
        return {
            "params": {},
            "dag_run": SimpleNamespace(run_type=run_type, conf={}),
            "data_interval_start": pendulum.datetime(2026, 11, 5, tz="UTC"),
            "data_interval_end": pendulum.datetime(2026, 11, 6, tz="UTC"),
            "inlet_events": {CHAIN_ROOT: events},
        }

    assert sensor._stand_aside(context("scheduled", "2026-11-04")) is None
    assert "encore_raw_day announced 2026-11-05" in sensor._stand_aside(
        context("scheduled", "2026-11-04", "2026-11-05")
    )
    for run_type in ("manual", "backfill", "asset_triggered"):
        assert sensor._stand_aside(context(run_type, "2026-11-05")) is None
    with pytest.raises(AirflowSkipException, match="stands aside"):
        sensor.poke(context("scheduled", "2026-11-05"))


def _event(day: str | None, **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(extra={"day": day, **extra} if day else extra)


def _asset_run(events: dict) -> dict[str, Any]:
    """The context of an asset-triggered run: no data interval, no 'day' param."""
    return {
        "params": {"day": None},
        "dag_run": SimpleNamespace(conf={}, dag_id="score_daily", run_type="asset_triggered"),
        "triggering_asset_events": events,
    }


def test_run_day_reads_the_day_from_triggering_asset_events(caplog) -> None:
    from encore_airflow.assets import FEATURES_DAY, MODELS
    from encore_airflow.common import run_day

    one_day = {FEATURES_DAY: [_event("2026-11-05")], MODELS: [_event("2026-11-05", model="c")]}
    assert run_day(_asset_run(one_day)) == date(2026, 11, 5)

    # several events of one asset (an upstream backfill batched into one run): the latest
    # day every asset announced, and the others are named with the command that runs them
    batched = {
        FEATURES_DAY: [_event("2026-11-03"), _event("2026-11-04"), _event("2026-11-05")],
        MODELS: [_event("2026-11-04"), _event("2026-11-05"), _event(None)],
    }
    with caplog.at_level(logging.WARNING, logger="airflow.task"):
        assert run_day(_asset_run(batched)) == date(2026, 11, 5)
    assert "2026-11-03" in caplog.text and "2026-11-04" in caplog.text
    assert "airflow dags trigger score_daily" in caplog.text

    # an AND whose partner came a day late: the day both announced
    late = {
        FEATURES_DAY: [_event("2026-11-04"), _event("2026-11-05")],
        MODELS: [_event("2026-11-04")],
    }
    assert run_day(_asset_run(late)) == date(2026, 11, 4)

    # the 'day' param and a data interval still win over events
    assert run_day({**_asset_run(one_day), "params": {"day": "2026-10-01"}}) == date(2026, 10, 1)
    interval = {
        "data_interval_start": pendulum.datetime(2026, 10, 2, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 10, 3, tz="UTC"),
    }
    assert run_day({**_asset_run(one_day), **interval}) == date(2026, 10, 2)


def test_run_day_refuses_conflicting_or_missing_days() -> None:
    from encore_airflow.assets import FEATURES_DAY, MODELS
    from encore_airflow.common import RunDayError, run_day

    conflict = {FEATURES_DAY: [_event("2026-11-05")], MODELS: [_event("2026-11-04")]}
    with pytest.raises(
        RunDayError, match=r"no common day.*features_day: 2026-11-05.*models: 2026-11-04"
    ):
        run_day(_asset_run(conflict))
    with pytest.raises(RunDayError, match="names a day"):
        run_day(_asset_run({FEATURES_DAY: [_event(None)]}))
    with pytest.raises(RunDayError, match="must be YYYY-MM-DD"):
        run_day(_asset_run({FEATURES_DAY: [_event("yesterday")]}))
    with pytest.raises(RunDayError, match="no data interval"):
        run_day(_asset_run({}))


@pytest.fixture
def downstream_unpaused(airflow_db):
    """Every DAG of the folder in the metadata DB, the asset-scheduled ones unpaused.

    The scheduler queues asset-triggered runs only for unpaused DAGs (DAGs are created
    paused); they are paused again afterwards.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        sync_bag_to_db(bag, bundle.name, bundle.version)
    downstream = [d for d, up in EXPECTED_UPSTREAM.items() if up]
    with create_session() as session:
        for model in session.query(DagModel).filter(DagModel.dag_id.in_(downstream)):
            model.is_paused = False
    yield downstream
    with create_session() as session:
        for model in session.query(DagModel).filter(DagModel.dag_id.in_(downstream)):
            model.is_paused = True


def test_an_ingest_run_announces_its_day_and_queues_the_dags_that_run_on_it(
    downstream_unpaused, dagbag, warehouse_dsn, landing_root, monkeypatch
) -> None:
    """End to end: dag.test() of ingest_daily records the asset event with its day;
    Airflow's own scheduler code queues and creates the asset-triggered downstream runs,
    and a scheduled (cron) run of a downstream DAG for that day stands aside."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from encore_airflow.assets import RAW_DAY
    from encore_airflow.common import run_day

    write_day(landing_root, plays=[good_play(f"e{i}", 1 + i % 3, "t1", DAY, i) for i in range(6)])
    with create_session() as session:  # earlier tests' leftovers must not blur the picture
        session.query(AssetDagRunQueue).delete()
    run = dagbag.dags["ingest_daily"].test(
        logical_date=pendulum.datetime(DAY.year, DAY.month, DAY.day, tz="UTC") + timedelta(days=1)
    )
    assert str(run.state) == "success"

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == RAW_DAY.name, AssetEvent.source_run_id == run.run_id)
            .all()
        )
        assert [(e.source_task_id, e.extra) for e in events] == [
            ("validate", {"day": DAY.isoformat()})
        ]
        assert events[0].asset.uri == RAW_DAY.uri
        queued = {q.target_dag_id for q in session.query(AssetDagRunQueue)}
        assert queued == {"features_daily", "audio_features"}

        # what the scheduler loop asks next: which DAGs are due for an asset-triggered run
        _, triggered = DagModel.dags_needing_dagruns(session)
        assert set(triggered) == {"features_daily", "audio_features"}
        session.rollback()  # release the row locks taken by that query

        runner = SchedulerJobRunner(job=Job())
        models = session.query(DagModel).filter(DagModel.dag_id == "features_daily").all()
        runner._create_dag_runs_asset_triggered(dag_models=models, session=session)
        session.flush()
        created = (
            session.query(DagRun)
            .filter(DagRun.dag_id == "features_daily", DagRun.run_type == "asset_triggered")
            .order_by(DagRun.id.desc())
            .first()
        )
        assert created is not None and created.data_interval_start is None
        consumed = list(created.consumed_asset_events)
        assert events[0].id in {e.id for e in consumed}
        # the run's tasks see these events as triggering_asset_events: the day comes back
        context = {
            "params": {"day": None},
            "dag_run": created,
            "triggering_asset_events": {RAW_DAY: [e for e in consumed if e.id == events[0].id]},
        }
        assert run_day(context) == DAY
        session.rollback()  # leave no run behind for other tests
        session.query(AssetDagRunQueue).delete()

    # the cron run of features_daily for the same day: its sensor sees the announcement
    # through the Task SDK (inlet events) and skips the run, which the asset run owns
    import airflow.models.dagrun as dagrun_module

    make_run = dagrun_module.get_or_create_dagrun

    def scheduled_run(**kwargs):
        created = make_run(**kwargs)
        created.run_type = "scheduled"  # dag.test() makes manual runs; the scheduler, these
        kwargs["session"].commit()
        return created

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", scheduled_run)
    cron_run = dagbag.dags["features_daily"].test(
        logical_date=pendulum.datetime(DAY.year, DAY.month, DAY.day, tz="UTC") + timedelta(days=1)
    )
    assert str(cron_run.run_type) in ("scheduled", "DagRunType.SCHEDULED")
    states = {ti.task_id: str(ti.state) for ti in cron_run.get_task_instances()}
    assert str(cron_run.state) == "success", states
    assert set(states.values()) == {"skipped"}, states
