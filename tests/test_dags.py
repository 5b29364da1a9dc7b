"""The DAGs through Airflow's own machinery: DagBag, team policy, intervals, dag.test()."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

import pendulum
import pytest

from landing import DAY, folder, good_play, write_day
from ml_tasks import contract, warehouse

pytestmark = pytest.mark.airflow
DAGS = Path(__file__).resolve().parent.parent / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_dagbag_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    files = sorted(p.stem for p in DAGS.glob("*.py") if not p.name.startswith("_"))
    assert sorted(dagbag.dag_ids) == files, "one DAG per file, named after its dag_id"


def test_genres_are_scored_after_the_days_retraining(dagbag) -> None:
    """score_daily scores genres (it runs on the models the day's retraining announced);
    audio_features, which runs before that retraining, only extracts."""
    score = dagbag.dags["score_daily"]
    assert "wait_for_features" in score.get_task("score_genres").upstream_task_ids
    audio = dagbag.dags["audio_features"]
    assert sorted(audio.task_ids) == ["extract", "wait_for_raw_day"]


def test_team_policy(dagbag) -> None:
    from encore_airflow.common import OWNER, Tag

    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag_id}: doc_md"
        assert dag.tags and set(dag.tags) <= {t.value for t in Tag}, f"{dag_id}: tags {dag.tags}"
        for task in dag.tasks:
            assert task.owner == OWNER, f"{dag_id}.{task.task_id}: owner"
            assert task.retries >= 2, f"{dag_id}.{task.task_id}: retries"


def test_dag_files_parse_fast_without_heavy_imports() -> None:
    """Parsing a DAG file must not import pandas, pyarrow, tensorflow or feast."""
    import subprocess
    import sys

    for path in sorted(DAGS.glob("*.py")):
        code = (
            "import sys, time, runpy; import airflow.sdk; t = time.perf_counter();"
            f"runpy.run_path({str(path)!r}); elapsed = time.perf_counter() - t;"
            "heavy = [m for m in ('pandas', 'pyarrow', 'tensorflow', 'feast', "
            "'great_expectations', 'sklearn') if m in sys.modules];"
            "print(elapsed, ','.join(heavy))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env={**__import__("os").environ, "PYTHONPATH": str(DAGS.parent / "plugins")},
        )
        assert out.returncode == 0, out.stderr[-2000:]
        elapsed, heavy = (
            out.stdout.strip().splitlines()[-1].split(" ", 1)
            if " " in out.stdout.strip().splitlines()[-1]
            else (out.stdout.strip(), "")
        )
        assert heavy.strip() == "", f"{path.name} imports {heavy} at top level"
        assert float(elapsed) < 2.0, f"{path.name} took {elapsed}s to parse"


def test_scheduled_runs_get_a_real_one_day_interval(airflow_db, dagbag) -> None:
    """Every DAG, the asset-scheduled ones too: their cron path keeps one-day intervals."""
    from airflow.serialization.encoders import coerce_to_core_timetable

    for dag_id in dagbag.dag_ids:
        dag = dagbag.get_dag(dag_id)
        timetable = coerce_to_core_timetable(dag.timetable)
        after = pendulum.datetime(2026, 11, 6, 0, 30, tz="UTC")
        interval = timetable.infer_manual_data_interval(run_after=after)
        assert interval.end - interval.start == timedelta(days=1), dag_id
        assert (interval.start, interval.end) == (
            pendulum.datetime(2026, 11, 5, tz="UTC"),
            pendulum.datetime(2026, 11, 6, tz="UTC"),
        ), dag_id
        nxt = timetable.next_dagrun_info(
            last_automated_data_interval=interval, restriction=_restriction(dag)
        )
        assert nxt.data_interval.start == interval.end, dag_id
        assert nxt.data_interval.end - nxt.data_interval.start == timedelta(days=1), dag_id


def _restriction(dag):
    from airflow.timetables.base import TimeRestriction

    return TimeRestriction(earliest=dag.start_date, latest=None, catchup=True)


def test_run_day_guards_manual_runs_without_an_interval() -> None:
    from encore_airflow.common import RunDayError, run_day

    assert run_day({"params": {"day": "2026-11-05"}}) == date(2026, 11, 5)
    with pytest.raises(RunDayError, match="no data interval"):
        run_day({"params": {}, "data_interval_start": None, "data_interval_end": None})
    with pytest.raises(RunDayError, match="not one UTC day"):
        run_day(
            {
                "data_interval_start": pendulum.datetime(2026, 11, 5, tz="UTC"),
                "data_interval_end": pendulum.datetime(2026, 11, 5, tz="UTC"),
            }
        )


def run_day_with_dag_test(dag, day: date):
    """Run ``dag`` for UTC day ``day`` as the scheduler would: logical date = the interval's end.

    Airflow infers a manual run's data interval as the last complete interval before its
    logical date, so the run for day D is made at D + 1 day.
    """
    run = dag.test(
        logical_date=pendulum.datetime(day.year, day.month, day.day, tz="UTC") + timedelta(days=1)
    )
    assert run.data_interval_start == pendulum.datetime(day.year, day.month, day.day, tz="UTC")
    assert run.data_interval_end - run.data_interval_start == timedelta(days=1)
    return run


def _task_states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_ingest_daily_runs_a_day_with_dag_test(
    airflow_db, dagbag, warehouse_dsn, landing_root
) -> None:
    plays = [good_play(f"e{i}", 1 + i % 3, "t1", DAY, i % 24) for i in range(50)]
    plays[4]["context_type"] = "nope"
    write_day(landing_root, plays=plays)
    dag = dagbag.get_dag("ingest_daily")
    run = run_day_with_dag_test(dag, DAY)
    assert str(run.state) == "success", _task_states(run)
    with warehouse.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM raw.listening_events").fetchone()[0] == 49
        assert conn.execute("SELECT count(*) FROM quarantine.rejected_rows").fetchone()[0] == 1
        runs = conn.execute("SELECT run_id FROM raw.ingest_runs").fetchall()
        verdicts = conn.execute(
            "SELECT suite, success FROM monitoring.validation_results WHERE dt = %s", (DAY,)
        ).fetchall()
    assert runs == [(run.run_id,)]
    assert len(verdicts) == len(contract.DATASETS) and all(ok for _, ok in verdicts)


def test_sensor_times_out_naming_the_missing_folders(airflow_db, landing_root) -> None:
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from encore_airflow.sensors import LandingDaySensor

    write_day(landing_root)
    (folder(landing_root, "subscription_events") / contract.SUCCESS_MARKER).unlink()
    sensor = LandingDaySensor(task_id="wait", mode="poke", poke_interval=0.1, timeout=0.5)
    context = {
        "params": {},
        "data_interval_start": pendulum.datetime(2026, 11, 5, tz="UTC"),
        "data_interval_end": pendulum.datetime(2026, 11, 6, tz="UTC"),
    }
    started = time.monotonic()
    with pytest.raises(AirflowSensorTimeout) as info:
        sensor.execute(context)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "subscription_events/dt=2026-11-05" in message
    assert "listening_events" not in message
    assert sensor.poke(context) is False
    (folder(landing_root, "subscription_events") / contract.SUCCESS_MARKER).touch()
    assert sensor.poke(context) is True


def test_dag_run_fails_when_landing_never_completes(
    airflow_db, dagbag, warehouse_dsn, landing_root
) -> None:
    write_day(landing_root, success=False)
    dag = dagbag.get_dag("ingest_daily")
    sensor = dag.get_task("wait_for_landing")
    sensor.timeout, sensor.poke_interval, sensor.retries = 2, 1, 0
    run = run_day_with_dag_test(dag, DAY)
    states = _task_states(run)
    assert str(run.state) == "failed"
    assert states["wait_for_landing"] == "failed"
    assert states["ingest"] == "upstream_failed"
    with warehouse.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM raw.ingest_runs").fetchone()[0] == 0


def test_features_daily_builds_validates_and_materializes_a_day(
    airflow_db, dagbag, world, world_dsn
) -> None:
    from ml_tasks import feature_store, features
    from ml_tasks.validation import validate_day

    day = world.last_day
    validate_day(day, run_id="raw", dsn=world_dsn)  # what ingest_daily's validate does
    dag = dagbag.get_dag("features_daily")
    run = run_day_with_dag_test(dag, day)
    assert str(run.state) == "success", _task_states(run)
    assert features.feature_day_ready(day, dsn=world_dsn) == (True, "")
    with warehouse.connect(world_dsn) as conn:
        built = dict(
            conn.execute(
                "SELECT table_name, run_id FROM features.build_log WHERE dt = %s", (day,)
            ).fetchall()
        )
        logged = conn.execute(
            "SELECT count(*), sum(rows) FROM monitoring.feature_materializations WHERE dt = %s",
            (day,),
        ).fetchone()
        users = conn.execute(
            "SELECT user_id FROM features.user_daily WHERE dt = %s ORDER BY user_id LIMIT 3",
            (day,),
        ).fetchall()
    assert set(built.values()) == {run.run_id}
    assert logged[0] == 5 and logged[1] > 0
    online = feature_store.online_features(
        "churn_v1", [{"user_id": int(u)} for (u,) in users], dsn=world_dsn
    )
    assert online["user_id"] == [int(u) for (u,) in users]
    assert all(v is not None for v in online["plays_30d"])
