"""The nightly chain's deadline: when a day is due, what is missing, and the recorded misses.

The alert firing for real (scheduler, deadline, callback on a Celery worker) is in
``test_celery.py``; here are its parts against a real warehouse and Airflow's DagBag.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ml_tasks import warehouse
from ml_tasks.deadlines import DeadlineConfig, chain_day_complete, chain_missing, record_miss

DAY = date(2026, 11, 5)
DAGS = Path(__file__).resolve().parent.parent / "dags"


def _scored(dsn: str, day: date, family: str, status: str = "scored") -> None:
    with warehouse.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO scores.scoring_runs (run_id, dt, model_name, model_version, status,"
            " detail, rows, seconds, finished_at) VALUES (%s, %s, %s, NULL, %s, '', 0, 0, now())",
            (f"r_{family}", day, family, status),
        )


def _reported(dsn: str, day: date) -> None:
    with warehouse.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO monitoring.reports (dt, path, summary, run_id, created_at)"
            " VALUES (%s, 'r.html', '{}', 'r', now())",
            (day,),
        )


def test_config_says_when_a_day_is_due(tmp_path: Path) -> None:
    config = DeadlineConfig.load()
    assert config.due(DAY) == datetime(2026, 11, 6, tzinfo=UTC) + timedelta(
        hours=config.chain_due_hours
    )
    for bad in ("chain_due_hours: 0\n", "chain_due_hours: 8\nwatch_hours: 7\n", "late: 1\n"):
        path = tmp_path / "deadlines.yaml"
        path.write_text(bad)
        with pytest.raises(ValueError, match=r"deadlines\.yaml"):
            DeadlineConfig.load(path)


def test_the_chain_of_a_day_is_done_once_scored_and_reported(warehouse_dsn: str) -> None:
    assert chain_missing(DAY, warehouse_dsn) == [
        "churn scores",
        "popularity scores",
        "the monitoring report",
    ]
    _scored(warehouse_dsn, DAY, "churn")
    _scored(warehouse_dsn, DAY + timedelta(days=1), "popularity")  # another day's
    _reported(warehouse_dsn, DAY - timedelta(days=1))
    done, why = chain_day_complete(DAY, warehouse_dsn)
    assert not done
    assert why == f"{DAY}: no popularity scores, no the monitoring report yet"
    _scored(warehouse_dsn, DAY, "popularity", status="skipped")  # no champion: handled
    _reported(warehouse_dsn, DAY)
    assert chain_day_complete(DAY, warehouse_dsn) == (True, "")


def test_a_miss_is_recorded_once_per_deadline(warehouse_dsn: str) -> None:
    due = DeadlineConfig.load().due(DAY)
    facts = {
        "deadline_id": "0193-a",
        "dag_id": "nightly_deadline",
        "run_id": "scheduled__2026-11-05T00:00:00+00:00",
        "run_type": "scheduled",
        "day": DAY,
        "deadline_time": due,
    }
    _scored(warehouse_dsn, DAY, "churn")
    first = record_miss(**facts, dsn=warehouse_dsn)
    assert first["new"] is True
    assert first["missing"] == "popularity scores, the monitoring report"
    assert first["deadline_time"] == due and first["day"] == DAY
    _scored(warehouse_dsn, DAY, "popularity")
    again = record_miss(**facts, dsn=warehouse_dsn)  # a re-delivered callback
    assert again["new"] is False
    assert again["missing"] == first["missing"], "the first record stands"
    record_miss(**{**facts, "deadline_id": "0193-b", "day": None}, dsn=warehouse_dsn)
    _reported(warehouse_dsn, DAY)  # done by the time a later deadline's callback runs
    assert record_miss(**{**facts, "deadline_id": "0193-c"}, dsn=warehouse_dsn)["missing"] == (
        "nothing"
    )
    with warehouse.connect(warehouse_dsn) as conn:
        rows = conn.execute(
            "SELECT deadline_id, dt, missing FROM monitoring.deadline_misses ORDER BY 1"
        ).fetchall()
    assert rows == [
        ("0193-a", DAY, "popularity scores, the monitoring report"),
        ("0193-b", None, "unknown"),
        ("0193-c", DAY, "nothing"),
    ]


def test_run_day_end_covers_every_way_a_run_names_its_day() -> None:
    from encore_airflow.deadlines import day_end, record_missed_deadline, run_of

    end = datetime(2026, 11, 6, tzinfo=UTC)
    start = end - timedelta(days=1)
    assert day_end({"day": "2026-11-05"}, None, None) == end  # manual run from the UI
    assert day_end({}, start, end) == end  # scheduled run, backfill
    # as the callback's context has it
    assert day_end(None, "2026-11-05T00:00:00Z", "2026-11-06T00:00:00Z") == end
    later = datetime(2026, 12, 1, tzinfo=UTC)
    assert day_end({"day": "2026-11-05"}, later - timedelta(days=1), later) == end
    assert day_end({}, None, None) is None  # an asset-triggered run: no deadline
    with pytest.raises(ValueError):
        day_end({"day": "05/11/2026"}, None, None)
    with pytest.raises(ValueError, match="not one UTC day"):  # run_day's rule, shared
        day_end({}, start, later)

    # the context Deadline.handle_miss gives the callback: the run as the REST API shows it
    context = {
        "dag_run": {
            "dag_run_id": "scheduled__2026-11-05T00:00:00+00:00",
            "dag_id": "nightly_deadline",
            "run_type": "scheduled",
            "conf": {},
            "data_interval_start": "2026-11-05T00:00:00Z",
            "data_interval_end": "2026-11-06T00:00:00Z",
        },
        "deadline": {"id": "0193-c", "deadline_time": "2026-11-06T06:00:00+00:00"},
    }
    assert run_of(context) == {
        "deadline_id": "0193-c",
        "dag_id": "nightly_deadline",
        "run_id": "scheduled__2026-11-05T00:00:00+00:00",
        "run_type": "scheduled",
        "day": DAY,
        "deadline_time": end + timedelta(hours=6),
    }
    with pytest.raises(ValueError, match="without a deadline"):
        record_missed_deadline(context={"dag_run": context["dag_run"]})


@pytest.mark.airflow
def test_nightly_deadline_carries_the_alert_through_serialization() -> None:
    """The DAG's alert survives what the dag-processor stores and the scheduler reads back."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.decoders import decode_deadline_alert
    from airflow.serialization.definitions.deadline import SerializedReferenceModels
    from airflow.serialization.encoders import encode_deadline_alert

    from encore_airflow.deadlines import CALLBACK, RunDayEnd
    from encore_plugin import EncorePlugin

    bag = DagBag(dag_folder=str(DAGS / "nightly_deadline.py"))
    assert bag.import_errors == {}
    dag = bag.dags["nightly_deadline"]
    alerts = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert len(alerts) == 1
    alert = alerts[0]
    assert isinstance(alert.reference, RunDayEnd)
    assert alert.interval == timedelta(hours=DeadlineConfig.load().chain_due_hours)
    assert alert.callback.path == CALLBACK
    assert RunDayEnd in EncorePlugin.deadline_references

    decoded = decode_deadline_alert(encode_deadline_alert(alert))
    reference = decoded.reference
    assert isinstance(reference, SerializedReferenceModels.SerializedCustomReference)
    assert isinstance(reference, SerializedReferenceModels.TYPES.DAGRUN), "made with each run"
    assert isinstance(reference.inner_ref, RunDayEnd)
    assert decoded.interval == alert.interval
    sensor = dag.get_task("wait_for_chain")
    assert sensor.timeout == timedelta(hours=DeadlineConfig.load().watch_hours).total_seconds()
    assert dag.dagrun_timeout > timedelta(hours=DeadlineConfig.load().watch_hours)


def test_encore_deadline_says_done_overdue_and_checks(warehouse_dsn: str, capsys) -> None:
    import json

    from ml_tasks.cli import main
    from ml_tasks.deadlines import chain_status

    config = DeadlineConfig.load()
    due = config.due(DAY)
    before, after = due - timedelta(minutes=1), due + timedelta(minutes=1)
    assert chain_status(DAY, warehouse_dsn, now=before)["overdue"] is False
    late = chain_status(DAY, warehouse_dsn, now=after)
    assert late["overdue"] is True and late["done"] is False and late["misses"] == []
    record_miss(
        deadline_id="0193-d",
        dag_id="nightly_deadline",
        run_id="r",
        run_type="scheduled",
        day=DAY,
        deadline_time=due,
        dsn=warehouse_dsn,
    )

    # the CLI, today (long after DAY): overdue, and --check makes it fail
    assert main(["deadline", "--date", DAY.isoformat(), "--dsn", warehouse_dsn]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["due"] == due.isoformat() and shown["overdue"] is True
    assert [m["run_id"] for m in shown["misses"]] == ["r"]
    assert main(["deadline", "--date", DAY.isoformat(), "--dsn", warehouse_dsn, "--check"]) == 1
    assert f"overdue: the nightly chain of {DAY} is not done" in capsys.readouterr().err

    _scored(warehouse_dsn, DAY, "churn")
    _scored(warehouse_dsn, DAY, "popularity")
    _reported(warehouse_dsn, DAY)
    argv = ["deadline", "--date", DAY.isoformat(), "--through", str(DAY + timedelta(days=1))]
    assert main([*argv, "--dsn", warehouse_dsn, "--check"]) == 1  # DAY + 1 is not done
    days = json.loads(capsys.readouterr().out)
    assert [(d["day"], d["done"]) for d in days] == [
        (str(DAY), True),
        (str(DAY + timedelta(days=1)), False),
    ]
    assert main(["deadline", "--date", DAY.isoformat(), "--dsn", warehouse_dsn, "--check"]) == 0
    assert json.loads(capsys.readouterr().out)["missing"] == []
