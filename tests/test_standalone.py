"""``make airflow`` as an operator runs it: the whole nightly chain through the scheduler.

``make airflow`` (``airflow standalone``: scheduler, dag-processor, triggerer, api-server
and the LocalExecutor over ``dags/`` and ``plugins/``) starts in a fresh ``AIRFLOW_HOME``
on a free port, with the warehouse of a scored copy of the churn world and that world's own
model configuration (``ENCORE_CONFIG_DIR``: the shipped windows need months of history).
The test reads the generated admin password as an operator would, checks that every DAG
is parsed with no import errors, unpauses the seven DAGs and triggers ``ingest_daily`` for
the world's last day. From there the chain runs on its assets alone: ``features_daily``
and ``audio_features`` on ``encore_raw_day``, ``retrain_nightly`` on both of theirs,
``score_daily`` and ``monitor_daily`` on ``encore_features_day`` and ``encore_models``,
every run working on the day the events announce.

Unpausing a DAG makes the scheduler create its cron run for the latest whole day, which
this world has no data for; the test marks those runs failed, as an operator would, so
that they do not hold the DAGs whose ``max_active_runs`` is 1. The cron run of
``nightly_deadline`` watches that day too: its deadline (06:00 UTC after it) has passed with
nothing done, so the local executor runs its callback, which records the miss. Once the
chain has run the world's day, that day is what ``nightly_deadline`` calls done.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from ml_tasks import warehouse
from ml_tasks.deadlines import DeadlineConfig, chain_day_complete
from test_browser import DAG_IDS
from test_celery import Cluster, _signal_group, free_port, tail

pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.full]

ROOT = Path(__file__).resolve().parent.parent
#: DAG -> the tasks whose success shows it did the day's work
WORK = {
    "features_daily": "materialize",
    "audio_features": "extract",
    "retrain_nightly": "train_churn",
    "score_daily": "commit",
    "monitor_daily": "monitor",
}
START_TIMEOUT = 300.0
CHAIN_TIMEOUT = 1500.0


@pytest.fixture(scope="module")
def standalone(pg_admin: str, churn_world, tmp_path_factory) -> Iterator[Cluster]:
    """``make airflow`` over a scored copy of the churn world; stopped at the end."""
    import signal

    from churn_world import drop, scored_copy, small_config_dir

    home = tmp_path_factory.mktemp("standalone")
    scored = scored_copy(pg_admin, churn_world, home / "model-artifacts")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "WAREHOUSE_DSN": scored["dsn"],
            "AIRFLOW_CONN_WAREHOUSE": scored["dsn"],
            "ENCORE_LANDING_ROOT": str(scored["landing"]),
            "ENCORE_ARTIFACTS": str(home / "artifacts"),
            "ENCORE_CONFIG_DIR": str(small_config_dir(home / "config")),
            "ENCORE_ENV": "ci",
        }
    )
    cluster = Cluster(
        env=env,
        home=home / "airflow",
        base_url=f"http://127.0.0.1:{port}",
        password="",
        warehouse_dsn=scored["dsn"],
        day=scored["day"],
        single_process={},
        queue="",
        workers={},
    )
    logs = cluster.home / "proc-logs"
    logs.mkdir(parents=True)
    try:
        with open(logs / "standalone.log", "wb") as out:
            cluster.procs["standalone"] = subprocess.Popen(
                ["make", "--no-print-directory", "airflow"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _wait_for_login(cluster)
        yield cluster
    finally:
        proc = cluster.procs.get("standalone")
        if proc is not None:
            _signal_group(proc.pid, signal.SIGINT)  # standalone stops its components on ^C
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        drop(pg_admin, scored["name"])


def _wait_for_login(cluster: Cluster) -> None:
    """Until the generated admin password exists and the API logs us in with it."""
    import httpx

    generated = cluster.home / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        cluster.check_alive()
        if generated.exists():
            try:
                cluster.password = json.loads(generated.read_text())["admin"]
                cluster.login()
                return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
        time.sleep(2)
    pytest.fail(
        f"make airflow: no login after {START_TIMEOUT:.0f} s\n"
        + tail(cluster.home / "proc-logs" / "standalone.log")
    )


def _wait(what: str, check, cluster: Cluster, timeout: float, dag_id: str | None = None):
    return cluster.wait_until(what, check, timeout, dag_id, every=3.0)


def test_make_airflow_prints_the_login_and_parses_every_dag(standalone: Cluster) -> None:
    cluster = standalone
    printed = tail(cluster.home / "proc-logs" / "standalone.log", 200_000)
    assert "Airflow UI: http://localhost:8080  user: admin" in printed  # the Makefile's banner

    def parsed():
        dags = cluster.request("GET", "/api/v2/dags", limit=100)["dags"]
        return sorted(d["dag_id"] for d in dags) if len(dags) >= len(DAG_IDS) else None

    assert _wait("the DAGs parsed", parsed, cluster, START_TIMEOUT) == sorted(DAG_IDS)
    errors = cluster.request("GET", "/api/v2/importErrors")
    assert errors["total_entries"] == 0, errors


def test_unpaused_the_chain_runs_a_day_on_its_assets(standalone: Cluster) -> None:
    cluster, day, dsn = standalone, standalone.day, standalone.warehouse_dsn
    for dag_id in DAG_IDS:
        cluster.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def cron_runs_failed():
        """The cron run each DAG gets on unpausing (a day this world has no data for)."""
        pending = []
        for dag_id in DAG_IDS:
            scheduled = [r for r in cluster.runs(dag_id) if r["run_type"] == "scheduled"]
            if not scheduled:
                pending.append(dag_id)
            for run in scheduled:
                if run["state"] not in ("failed", "success"):
                    pending.append(dag_id)
                    # standalone's metadata database is SQLite: a write can meet a lock
                    # (HTTP 500); the next poll tries again
                    with contextlib.suppress(AssertionError):
                        cluster.request(
                            "PATCH",
                            f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}",
                            {"state": "failed"},
                        )
        return not pending

    _wait("a cron run per unpaused DAG", cron_runs_failed, cluster, 120)
    (watch,) = [r for r in cluster.runs("nightly_deadline") if r["run_type"] == "scheduled"]
    watched = date.fromisoformat(watch["data_interval_start"][:10])

    def scheduled_miss():
        with warehouse.connect(dsn) as conn:
            return conn.execute(
                "SELECT dt, deadline_time, missing FROM monitoring.deadline_misses"
                " WHERE run_id = %s",
                (watch["dag_run_id"],),
            ).fetchall()

    ((missed_day, due, missing),) = _wait(
        "the cron run of nightly_deadline's missed deadline", scheduled_miss, cluster, 120
    )
    assert missed_day == watched and due == DeadlineConfig.load().due(watched)
    assert missing == "churn scores, popularity scores, the monitoring report"
    triggered = cluster.request(
        "POST",
        "/api/v2/dags/ingest_daily/dagRuns",
        {"logical_date": None, "conf": {"day": day.isoformat()}},
    )
    ingest = cluster.wait_for_run("ingest_daily", triggered["dag_run_id"], timeout=CHAIN_TIMEOUT)
    assert ingest["state"] == "success", cluster.diagnose("ingest_daily")

    runs: dict[str, dict] = {}
    for dag_id, task_id in WORK.items():

        def finished(dag_id=dag_id):
            found = [
                r
                for r in cluster.runs(dag_id)
                if r["run_type"] == "asset_triggered" and r["state"] in ("success", "failed")
            ]
            return found[-1] if found else None

        run = _wait(f"{dag_id}'s asset-triggered run", finished, cluster, CHAIN_TIMEOUT, dag_id)
        assert run["state"] == "success", cluster.diagnose(dag_id)
        states = {
            ti["task_id"]: ti["state"] for ti in cluster.task_instances(dag_id, run["dag_run_id"])
        }
        assert states[task_id] == "success", (dag_id, states)
        runs[dag_id] = run

    # every run worked on the world's last day, as the triggering events announced
    with warehouse.connect(dsn) as conn:
        ingested = conn.execute(
            "SELECT dt FROM raw.ingest_runs WHERE run_id = %s", (triggered["dag_run_id"],)
        ).fetchall()
        built = conn.execute(
            "SELECT DISTINCT dt FROM features.build_log WHERE run_id = %s"
            " AND table_name = 'features.user_daily'",
            (runs["features_daily"]["dag_run_id"],),
        ).fetchall()
        trained = conn.execute(
            "SELECT model_name, training_date, status FROM ml.training_runs WHERE run_id = %s",
            (runs["retrain_nightly"]["dag_run_id"],),
        ).fetchall()
        scored = conn.execute(
            "SELECT DISTINCT dt FROM scores.churn WHERE run_id = %s",
            (runs["score_daily"]["dag_run_id"],),
        ).fetchall()
        monitored = conn.execute(
            "SELECT DISTINCT dt FROM monitoring.drift WHERE run_id = %s",
            (runs["monitor_daily"]["dag_run_id"],),
        ).fetchall()
    assert ingested == [(day,)]
    assert built == [(day,)]
    assert ("churn", day, "succeeded") in trained, trained
    assert scored == [(day,)]
    assert monitored == [(day,)]
    assert chain_day_complete(day, dsn) == (True, ""), "what nightly_deadline waits for"
