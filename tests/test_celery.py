"""Airflow beyond one worker, and backfills, against the PostgreSQL and Redis of this machine.

One Airflow deployment per module, as docker-compose.yaml lays it out but as local
processes: a fresh metadata database on the PostgreSQL server, the CeleryExecutor with a
Redis broker and a database result backend, and the api-server, the scheduler, the
dag-processor and two Celery workers (``w1``, ``w2``), all sharing one JWT secret. The
warehouse, reached as ``AIRFLOW_CONN_WAREHOUSE``, is a scored copy of the churn world of
its own (``churn_world.scored_copy``: a trained churn champion, validated features, the
last day scored in one process), so nothing here disturbs the other tests' worlds.

- ``score_daily`` fans that day out over user-id ranges (dynamic task mapping), the chunks
  run on both workers, and the day committed at the end replaces the single-process scores
  with equal ones (lineage columns aside).
- ``nightly_deadline`` watches a day whose chain never ran: its deadline has long passed,
  so the scheduler fires it, the callback runs on a Celery worker and records the miss in
  ``monitoring.deadline_misses`` with the day, when it was due and what is missing.
- ``ingest_daily`` is backfilled from the CLI (``airflow backfill create``), then over the
  same days again from the REST API (``POST /api/v2/backfills``, reprocessing the completed
  runs), then again from the UI (headless Chromium: Trigger, Backfill, the date range, "All
  Runs", Run Backfill): each completes, every day is ingested again, and the warehouse does
  not change.

The scheduler runs with ``[scheduler] use_job_schedule = False`` so that no cron run of
"yesterday" competes with the runs under test; manual runs and backfills are scheduled as
usual. Every process is stopped by its process group id at the end, and only this module's
keys are removed from the Redis database (all of it when no other worker uses it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from browser_session import WAIT
from ml_tasks import contract, scoring, warehouse
from ml_tasks.deadlines import DeadlineConfig, chain_missing

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
AIRFLOW = Path(sys.executable).parent / "airflow"
#: Redis database 7 is used by nothing else in the project (docker compose uses 0).
BROKER = os.environ.get("ENCORE_TEST_BROKER_URL", "redis://127.0.0.1:6379/7")
WORKERS = ("w1", "w2")
CHUNK_USERS = 250
STARTUP_TIMEOUT = 240.0
RUN_TIMEOUT = 300.0
LINEAGE = ("run_id", "scored_at")
#: The raw tables ingest writes, from the landing contract: the day partitions of the event
#: tables, then every whole table (the events' key runs, the dimensions' versions and
#: current rows) with the ingest log and the quarantine.
RAW_DAY_TABLES = tuple(d.raw_table for d in contract.DATASETS if d.is_event)
RAW_TABLES = (
    *(d.key_runs_table for d in contract.DATASETS if d.is_event),
    *(t for d in contract.DATASETS if not d.is_event for t in (d.raw_table, d.current_table)),
    "raw.ingest_log",
    "quarantine.rejected_rows",
)
#: Days each backfill covers: the week before the world's last day.
BACKFILL_DAYS = 7


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def celery_nodes(broker: str) -> set[str]:
    """Names of the Celery workers that answer a ping on ``broker``."""
    from celery import Celery

    app = Celery(broker=broker)
    try:
        replies = app.control.ping(timeout=1.0) or []
    finally:
        app.close()
    return {name for reply in replies for name in reply}


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log)"


@dataclass
class Cluster:
    """A running Airflow deployment: its processes, REST client and warehouse."""

    env: dict[str, str]
    home: Path
    base_url: str
    password: str
    warehouse_dsn: str
    day: date
    single_process: dict[str, tuple[int, str]]
    queue: str
    #: test name (``task_instance.hostname``) -> Celery node name before the ``@``
    workers: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    token: str = ""

    # ------------------------------------------------------------------ processes

    def start(self, name: str, *args: str, **extra_env: str) -> None:
        """Start ``airflow *args`` in its own process group, logging to ``proc-logs/``."""
        logs = self.home / "proc-logs"
        logs.mkdir(exist_ok=True)
        with open(logs / f"{name}.log", "wb") as out:
            self.procs[name] = subprocess.Popen(
                [str(AIRFLOW), *args],
                env={**self.env, **extra_env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        """Fail with its log when a component has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                pytest.fail(
                    f"airflow {name} exited with {proc.returncode}:\n"
                    f"{tail(self.home / 'proc-logs' / f'{name}.log')}"
                )

    def stop(self) -> None:
        """SIGTERM every process group, then SIGKILL whatever is left of them."""
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(proc.pid, signal.SIGKILL)  # also the children of an exited leader
            proc.wait(timeout=30)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run ``airflow *args`` against this deployment."""
        return subprocess.run(
            [str(AIRFLOW), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
        )

    # ------------------------------------------------------------------ REST API

    def request(self, method: str, path: str, body: dict | None = None, **params: Any) -> Any:
        """Call the REST API with the bearer token; fail on an error status."""
        import httpx

        response = httpx.request(
            method,
            f"{self.base_url}{path}",
            json=body,
            params=params or None,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else None

    def login(self) -> None:
        """Get a bearer token from ``/auth/token`` as the admin user."""
        import httpx

        response = httpx.post(
            f"{self.base_url}/auth/token",
            json={"username": "admin", "password": self.password},
            timeout=10,
        )
        response.raise_for_status()
        self.token = response.json()["access_token"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of a run, mapped ones included."""
        found = self.request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=200
        )
        return found["task_instances"]

    def runs(self, dag_id: str) -> list[dict]:
        """The DAG's runs."""
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", limit=200)["dag_runs"]

    def wait_until(
        self,
        what: str,
        check: Callable[[], Any],
        timeout: float = RUN_TIMEOUT,
        dag_id: str | None = None,
        every: float = 2.0,
    ) -> Any:
        """Poll ``check`` until it returns something truthy, and return that; fail naming
        ``what``, with ``dag_id``'s diagnosis, or else every component's log."""
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found:
                return found
            self.check_alive()
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {name}\n{tail(self.home / 'proc-logs' / f'{name}.log')}"
                    for name in self.procs
                )
                pytest.fail(
                    f"{what}: not after {timeout:.0f} s\n"
                    + (self.diagnose(dag_id) if dag_id else logs)
                )
            time.sleep(every)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        """Poll a DAG run until it succeeds or fails."""

        def finished() -> dict | None:
            run = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            return run if run["state"] in ("success", "failed") else None

        return self.wait_until(f"{dag_id} {run_id} finished", finished, timeout, dag_id)

    def wait_for_backfill(self, backfill_id: int, timeout: float = RUN_TIMEOUT) -> dict:
        """Poll a backfill until the scheduler marks it completed."""

        def completed() -> dict | None:
            backfill = self.request("GET", f"/api/v2/backfills/{backfill_id}")
            return backfill if backfill["completed_at"] else None

        dag_id = self.request("GET", f"/api/v2/backfills/{backfill_id}")["dag_id"]
        return self.wait_until(f"backfill {backfill_id} completed", completed, timeout, dag_id)

    def diagnose(self, dag_id: str) -> str:
        """Task states, failed task logs and component logs, for a failure message."""
        parts = []
        for run in self.runs(dag_id):
            states = {
                (ti["task_id"], ti["map_index"]): (ti["state"], ti["hostname"])
                for ti in self.task_instances(dag_id, run["dag_run_id"])
            }
            parts.append(f"{run['dag_run_id']} {run['state']}: {states}")
        for log in sorted((self.home / "logs" / f"dag_id={dag_id}").glob("**/*.log")):
            text = log.read_text(errors="replace")
            if "Traceback" in text or '"level":"error"' in text:
                parts.append(f"--- {log.relative_to(self.home)}\n{text[-2500:]}")
        for name in self.procs:
            parts.append(f"--- {name}\n{tail(self.home / 'proc-logs' / f'{name}.log', 1500)}")
        return "\n".join(parts)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group this module started as ``pid`` (its leader), if any is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _create_database(pg_admin: str, name: str) -> str:
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return warehouse.with_database(pg_admin, name)


def _drop_database(pg_admin: str, name: str) -> None:
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _clean_broker(queue: str) -> None:
    """Flush the test's Redis database if no worker uses it any more, else only our keys."""
    import redis

    client = redis.Redis.from_url(BROKER)
    try:
        if celery_nodes(BROKER):
            for key in client.scan_iter(match=f"*{queue}*"):
                client.delete(key)
        else:
            client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="module")
def cluster(pg_admin: str, churn_world, tmp_path_factory) -> Iterator[Cluster]:
    """The api-server, scheduler, dag-processor and two Celery workers over a scored world."""
    import redis

    from churn_world import drop, scored_copy

    try:
        redis.Redis.from_url(BROKER, socket_connect_timeout=3).ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"no Redis at {BROKER}: {exc}")

    token = uuid.uuid4().hex[:8]
    home = tmp_path_factory.mktemp("celery-airflow")
    metadata_db, queue = f"encore_af_{token}", f"encore-test-{token}"
    scored: dict = {}
    cluster: Cluster | None = None
    migrate: subprocess.Popen | None = None
    try:
        metadata_url = warehouse.sqlalchemy_url(
            _create_database(pg_admin, metadata_db), driver="psycopg2"
        )
        port = free_port()
        password = secrets.token_urlsafe(12)
        passwords = home / "simple_auth_manager_passwords.json"
        passwords.write_text(json.dumps({"admin": password}))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AIRFLOW") and k != "WAREHOUSE_DSN"
        }
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "airflow_worker_hostname.hostname",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
                "AIRFLOW__CELERY__BROKER_URL": BROKER,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata_url}",
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])),
                "ENCORE_ENV": "ci",
                "ENCORE_ARTIFACTS": str(home / "artifacts"),
                "ENCORE_SCORE_CHUNK_USERS": str(CHUNK_USERS),
                "GX_ANALYTICS_ENABLED": "False",
            }
        )
        with open(home / "db-migrate.log", "wb") as out:  # meanwhile, build the warehouse
            migrate = subprocess.Popen(
                [str(AIRFLOW), "db", "migrate"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=home,
                start_new_session=True,
            )
        scored = scored_copy(pg_admin, churn_world, home / "model-artifacts")
        env["AIRFLOW_CONN_WAREHOUSE"] = scored["dsn"]
        env["ENCORE_LANDING_ROOT"] = str(scored["landing"])
        cluster = Cluster(
            env=env,
            home=home,
            base_url=f"http://127.0.0.1:{port}",
            password=password,
            warehouse_dsn=scored["dsn"],
            day=scored["day"],
            single_process=score_checksums(scored["dsn"], scored["day"]),
            queue=queue,
            workers={name: f"{name}-{token}" for name in WORKERS},
        )
        assert migrate.wait(timeout=300) == 0, tail(home / "db-migrate.log")
        cluster.start(
            "api-server", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"
        )
        cluster.start("scheduler", "scheduler")
        cluster.start("dag-processor", "dag-processor")
        for name, node in cluster.workers.items():
            cluster.start(
                f"worker-{name}",
                *("celery", "worker", "--celery-hostname", f"{node}@%h"),
                *("--concurrency", "1", "--queues", queue),
                ENCORE_TEST_WORKER_NAME=name,
                AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            )
        _wait_until_ready(cluster)
        yield cluster
    finally:
        if migrate is not None and migrate.poll() is None:
            _signal_group(migrate.pid, signal.SIGKILL)
            migrate.wait(timeout=30)
        if cluster is not None:
            cluster.stop()
        _clean_broker(queue)
        _drop_database(pg_admin, metadata_db)
        if scored:
            drop(pg_admin, scored["name"])


def _wait_until_ready(cluster: Cluster) -> None:
    """Until the API logs us in, both DAGs are parsed and both workers answer a ping."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    pending = "the api-server"
    while time.monotonic() < deadline:
        cluster.check_alive()
        try:
            if not cluster.token:
                cluster.login()
            pending = "the DAGs"
            dags = cluster.request("GET", "/api/v2/dags", limit=100)["dags"]
            if not {"score_daily", "ingest_daily", "nightly_deadline"} <= {
                d["dag_id"] for d in dags
            }:
                time.sleep(2)
                continue
            pending = "the workers"
            up = {node.split("@")[0] for node in celery_nodes(BROKER)}
            if set(cluster.workers.values()) <= up:
                return
        except Exception:  # not up yet: connection refused, 401 before the first login...
            pass
        time.sleep(2)
    errors = cluster.request("GET", "/api/v2/importErrors") if cluster.token else {}
    pytest.fail(
        f"still waiting for {pending} after {STARTUP_TIMEOUT:.0f}s; import errors:"
        f" {errors}\n{cluster.diagnose('score_daily') if cluster.token else ''}"
    )


# ---------------------------------------------------------------------- helpers over the warehouse


def score_checksums(dsn: str, day: date) -> dict[str, tuple[int, str]]:
    """The day's churn scores and interventions, lineage columns aside."""
    with warehouse.connect(dsn) as conn:
        return {
            table: warehouse.table_checksum(
                conn, warehouse.partition_name(table, day), exclude=LINEAGE
            )
            for table in (scoring.CHURN_TABLE, scoring.INTERVENTIONS_TABLE)
        }


def backfill_week(last_day: date) -> list[date]:
    """The :data:`BACKFILL_DAYS` days before ``last_day``, oldest first."""
    return [last_day - timedelta(days=n) for n in range(BACKFILL_DAYS, 0, -1)]


def raw_checksums(dsn: str, days: list[date]) -> dict[str, tuple[int, str]]:
    """The days' raw event partitions and every table in :data:`RAW_TABLES`."""
    with warehouse.connect(dsn) as conn:
        relations = [warehouse.partition_name(t, d) for t in RAW_DAY_TABLES for d in days]
        return {r: warehouse.table_checksum(conn, r) for r in [*relations, *RAW_TABLES]}


def ingest_runs(dsn: str, days: list[date]) -> dict[date, list[str]]:
    """The runs recorded in ``raw.ingest_runs`` per day."""
    with warehouse.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT dt, run_id FROM raw.ingest_runs WHERE dt = ANY(%s) ORDER BY dt, run_id",
            (days,),
        ).fetchall()
    found: dict[date, list[str]] = {d: [] for d in days}
    for day, run_id in rows:
        found[day].append(run_id)
    return found


def run_day_of(run: dict) -> date:
    """The UTC day a (backfill) run covers: the start of its data interval."""
    return date.fromisoformat(run["data_interval_start"][:10])


# ---------------------------------------------------------------------- the tests


def test_score_daily_fans_out_over_two_celery_workers(cluster: Cluster) -> None:
    """Chunks on both workers, committed once, equal to a single-process run of the day."""
    day, dsn = cluster.day, cluster.warehouse_dsn
    chunks = scoring.user_id_chunks(dsn, day, CHUNK_USERS)
    assert len(chunks) >= 3, "the day must fan out over several user-id ranges"
    reference = cluster.single_process
    assert reference[scoring.CHURN_TABLE][0] > 0, "the world's day was scored in one process"

    cluster.request("PATCH", "/api/v2/dags/score_daily", {"is_paused": False})
    run_id = f"celery_fanout_{day.isoformat()}"
    cluster.request(
        "POST",
        "/api/v2/dags/score_daily/dagRuns",
        {"dag_run_id": run_id, "logical_date": None, "conf": {"day": day.isoformat()}},
    )
    run = cluster.wait_for_run("score_daily", run_id)
    assert run["state"] == "success", cluster.diagnose("score_daily")

    tis = cluster.task_instances("score_daily", run_id)
    mapped = [ti for ti in tis if ti["task_id"] == "score_chunk"]
    assert sorted(ti["map_index"] for ti in mapped) == list(range(len(chunks)))
    assert {ti["state"] for ti in mapped} == {"success"}
    assert {ti["hostname"] for ti in mapped} == set(WORKERS), "chunks ran on both workers"
    assert {ti["hostname"] for ti in tis if ti["hostname"]} <= set(WORKERS)
    committed = [ti for ti in tis if ti["task_id"] == "commit"]
    assert [ti["state"] for ti in committed] == ["success"]

    with warehouse.connect(dsn) as conn:
        for table in (scoring.CHURN_TABLE, scoring.INTERVENTIONS_TABLE):
            run_ids = conn.execute(
                sql.SQL("SELECT DISTINCT run_id FROM {}").format(
                    warehouse.qualified(warehouse.partition_name(table, day))
                )
            ).fetchall()
            assert run_ids == [(run_id,)], f"{table}: the whole day comes from the Airflow run"
        status = conn.execute(
            "SELECT status FROM scores.scoring_runs WHERE run_id = %s AND model_name = 'churn'",
            (run_id,),
        ).fetchall()
        stages = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'scores' AND tablename LIKE %s",
            (f"%{day:%Y%m%d}_stage",),
        ).fetchone()[0]
    assert status == [("scored",)]
    assert stages == 0, "the commit swaps the staged day in and leaves no stage behind"
    assert score_checksums(dsn, day) == reference, "fanned out on Celery == single process"


def test_a_missed_nightly_deadline_fires_its_callback_on_a_worker(cluster: Cluster) -> None:
    """The watch of a day whose chain never ran: the deadline fires while the run waits."""
    dsn, late = cluster.warehouse_dsn, cluster.day - timedelta(days=1)
    missing = chain_missing(late, dsn)
    assert missing == ["churn scores", "popularity scores", "the monitoring report"]
    due = DeadlineConfig.load().due(late)

    cluster.request("PATCH", "/api/v2/dags/nightly_deadline", {"is_paused": False})
    run_id = f"deadline_{late.isoformat()}"
    cluster.request(
        "POST",
        "/api/v2/dags/nightly_deadline/dagRuns",
        {"dag_run_id": run_id, "logical_date": None, "conf": {"day": late.isoformat()}},
    )

    def recorded():
        with warehouse.connect(dsn) as conn:
            return conn.execute(
                "SELECT deadline_id, dag_id, run_type, dt, deadline_time, missing"
                " FROM monitoring.deadline_misses WHERE run_id = %s",
                (run_id,),
            ).fetchone()

    found = cluster.wait_until("a recorded deadline miss", recorded, dag_id="nightly_deadline")
    deadline_id, dag_id, run_type, day, deadline_time, what = found
    assert (dag_id, run_type, day) == ("nightly_deadline", "manual", late)
    assert deadline_time == due, "due chain_due_hours after the run's day ended"
    assert what == ", ".join(missing)
    # Airflow's own record, as its UI shows it on the run
    airflow = cluster.request("GET", f"/ui/dags/nightly_deadline/dagRuns/{run_id}/deadlines")
    assert [
        (d["id"], d["missed"], d["alert_name"], datetime.fromisoformat(d["deadline_time"]))
        for d in airflow["deadlines"]
    ] == [(deadline_id, True, "nightly chain due", due)]

    run = cluster.request("GET", f"/api/v2/dags/nightly_deadline/dagRuns/{run_id}")
    assert run["state"] in ("queued", "running"), "the miss fired while the run still waited"
    logs = list((cluster.home / "logs" / "executor_callbacks" / "nightly_deadline").glob("**/*"))
    texts = [p.read_text(errors="replace") for p in logs if p.is_file()]
    assert any("DEADLINE MISSED" in t and late.isoformat() in t for t in texts), (
        f"the callback logs the miss under executor_callbacks/: {[str(p) for p in logs]}"
    )
    with warehouse.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM monitoring.deadline_misses WHERE run_id = %s", (run_id,)
        ).fetchone()[0]
    assert rows == 1, "one deadline, one miss"
    cluster.request("PATCH", f"/api/v2/dags/nightly_deadline/dagRuns/{run_id}", {"state": "failed"})
    cluster.request("PATCH", "/api/v2/dags/nightly_deadline", {"is_paused": True})


@pytest.mark.full
def test_backfills_from_the_cli_and_the_rest_api_complete_and_change_nothing(
    cluster: Cluster,
) -> None:
    """``airflow backfill create``, then ``POST /api/v2/backfills`` over the same days."""
    dsn = cluster.warehouse_dsn
    days = backfill_week(cluster.day)
    before = raw_checksums(dsn, days)  # as `encore ingest` left them when the world was built
    cluster.request("PATCH", "/api/v2/dags/ingest_daily", {"is_paused": False})

    created = cluster.cli(
        "backfill",
        "create",
        "--dag-id",
        "ingest_daily",
        "--from-date",
        days[0].isoformat(),
        "--to-date",
        days[-1].isoformat(),
    )
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
    backfills = cluster.request("GET", "/api/v2/backfills", dag_id="ingest_daily")["backfills"]
    assert len(backfills) == 1
    cluster.wait_for_backfill(backfills[0]["id"])
    runs = {run_day_of(r): r for r in cluster.runs("ingest_daily") if r["run_type"] == "backfill"}
    assert sorted(runs) == days
    assert {r["state"] for r in runs.values()} == {"success"}, cluster.diagnose("ingest_daily")
    recorded = ingest_runs(dsn, days)
    for day in days:
        assert runs[day]["dag_run_id"] in recorded[day], f"{day} was ingested by its backfill run"
    with warehouse.connect(dsn) as conn:
        verdicts = conn.execute(
            "SELECT run_id, bool_and(success), count(*) FROM monitoring.validation_results"
            " WHERE run_id = ANY(%s) AND suite LIKE 'raw.%%' GROUP BY run_id",
            ([r["dag_run_id"] for r in runs.values()],),
        ).fetchall()
        again_from = conn.execute("SELECT now()").fetchone()[0]
    assert len(verdicts) == len(days) and all(ok for _, ok, _ in verdicts)
    assert raw_checksums(dsn, days) == before, "the backfill left what a direct ingest leaves"

    backfill = cluster.request(
        "POST",
        "/api/v2/backfills",
        {
            "dag_id": "ingest_daily",
            "from_date": f"{days[0].isoformat()}T00:00:00Z",
            "to_date": f"{days[-1].isoformat()}T00:00:00Z",
            "reprocess_behavior": "completed",
            "max_active_runs": 4,
        },
    )
    assert_backfill_reran(cluster, backfill["id"], days, again_from, before)


def assert_backfill_reran(
    cluster: Cluster, backfill_id: int, days: list[date], since, before: dict
) -> None:
    """The backfill completes with one successful run per day, every day is ingested again
    after ``since``, and the raw tables' checksums are still ``before``."""
    cluster.wait_for_backfill(backfill_id)
    rerun = {run_day_of(r): r for r in cluster.runs("ingest_daily") if r["run_type"] == "backfill"}
    assert sorted(rerun) == days
    assert {r["state"] for r in rerun.values()} == {"success"}, cluster.diagnose("ingest_daily")
    with warehouse.connect(cluster.warehouse_dsn) as conn:
        reingested = conn.execute(
            "SELECT DISTINCT dt FROM raw.ingest_runs WHERE dt = ANY(%s) AND finished_at > %s",
            (days, since),
        ).fetchall()
    assert sorted(d for (d,) in reingested) == days, "the backfill ingested every day again"
    assert raw_checksums(cluster.warehouse_dsn, days) == before, "a backfill changed the data"


def _click(driver, tag: str, text: str, *, prefix: bool = False) -> None:
    """Click the first ``tag`` element whose visible text is ``text`` (or starts with it)."""
    from selenium.webdriver.common.by import By

    for element in driver.find_elements(By.TAG_NAME, tag):
        shown = element.text.strip()
        if shown == text or (prefix and shown.startswith(text)):
            element.click()
            return
    pytest.fail(f"no <{tag}> showing {text!r} on {driver.current_url}")


def _pick_datetime(driver, field: int, day: date, time_text: str) -> str:
    """Type a day and a time into the backfill form's ``field``-th date-time picker (0: From,
    1: To) and close it; return what the field then shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def visible(placeholder: str):
        found = [
            e
            for e in driver.find_elements(By.CSS_SELECTOR, f"input[placeholder='{placeholder}']")
            if e.is_displayed()
        ]
        return found[0] if found else False

    driver.find_elements(By.CSS_SELECTOR, "[data-testid=datetime-input]")[field].click()
    WebDriverWait(driver, WAIT).until(lambda d: visible("YYYY/MM/DD"))
    visible("YYYY/MM/DD").send_keys(f"{day:%Y/%m/%d}")
    when = visible("HH:mm")
    when.send_keys(Keys.CONTROL, "a")
    when.send_keys(time_text)
    when.send_keys(Keys.ESCAPE)
    WebDriverWait(driver, WAIT).until(lambda d: not visible("YYYY/MM/DD"))
    return driver.find_elements(By.CSS_SELECTOR, "[data-testid=datetime-input]")[field].text


@pytest.mark.full
def test_a_backfill_started_from_the_ui_completes_and_changes_nothing(
    cluster: Cluster, browser
) -> None:
    """A person opens ``ingest_daily`` in the Airflow UI, picks Trigger, Backfill, the date
    range and "All Runs", and runs it: the scheduler and the Celery workers run every day of
    it, each day is ingested again, and the warehouse does not change."""
    from browser_session import log_in, wait_for_text

    dsn = cluster.warehouse_dsn
    days = backfill_week(cluster.day)
    before = raw_checksums(dsn, days)
    known = {
        b["id"]
        for b in cluster.request("GET", "/api/v2/backfills", dag_id="ingest_daily")["backfills"]
    }
    with warehouse.connect(dsn) as conn:
        clicked_at = conn.execute("SELECT now()").fetchone()[0]
    shots = ROOT / "var" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)

    log_in(browser, cluster.base_url, "admin", cluster.password)
    browser.get(f"{cluster.base_url}/dags/ingest_daily")
    wait_for_text(browser, ["ingest_daily", "Trigger"], "the DAG page")
    _click(browser, "button", "Trigger")
    wait_for_text(browser, ["Run this Dag for a range of dates"], "the trigger form")
    _click(browser, "label", "Backfill", prefix=True)
    wait_for_text(browser, ["Date Range", "Reprocess Behavior"], "the backfill form")
    shown_from = _pick_datetime(browser, 0, days[0], "00:00")
    shown_to = _pick_datetime(browser, 1, days[-1], "00:00")
    assert shown_from.startswith(f"{days[0]:%b} {days[0].day}, {days[0].year}"), shown_from
    assert shown_to.startswith(f"{days[-1]:%b} {days[-1].day}, {days[-1].year}"), shown_to
    _click(browser, "label", "All Runs")
    # the form's dry run: one run per day of the range
    wait_for_text(browser, [f"{len(days)} runs will be triggered."], "the backfill form")
    browser.save_screenshot(str(shots / "04-backfill-form.png"))
    _click(browser, "button", "Run Backfill")
    wait_for_text(browser, ["Backfill generated"], "the DAG page after Run Backfill")
    browser.save_screenshot(str(shots / "05-backfill-started.png"))

    created = [
        b
        for b in cluster.request("GET", "/api/v2/backfills", dag_id="ingest_daily")["backfills"]
        if b["id"] not in known
    ]
    assert len(created) == 1, created
    assert created[0]["reprocess_behavior"] == "completed"
    assert created[0]["from_date"][:10] == days[0].isoformat()
    assert_backfill_reran(cluster, created[0]["id"], days, clicked_at, before)
