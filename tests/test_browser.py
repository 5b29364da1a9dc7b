"""A person's view of the Airflow UI: headless Chromium logs in, sees the DAGs and the Encore page.

A real ``airflow api-server`` runs on a free loopback port with a fresh ``AIRFLOW_HOME``, a
fresh metadata database on the test PostgreSQL (migrated, then the project's DAGs
serialized into it with ``airflow dags reserialize``, which is what the DAG list reads), the
project's ``dags/`` and ``plugins/``, the simple auth manager with a known user, and the
warehouse connection pointing at a fresh warehouse holding a few registry rows. Chromium
(Debian's ``chromium`` and ``chromium-driver``; ``make browser-deps`` installs them) signs
in through the login form, opens the DAG list and the Encore page, and saves screenshots
under ``var/screenshots/``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from browser_session import WAIT, log_in, wait_for_text
from ml_tasks import warehouse
from test_ui_plugin import populate

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "var" / "screenshots"
AIRFLOW = Path(sys.executable).parent / "airflow"
USER, PASSWORD = "admin", "admin"
DAG_IDS = (
    "ingest_daily",
    "features_daily",
    "audio_features",
    "retrain_nightly",
    "score_daily",
    "monitor_daily",
    "nightly_deadline",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kill_tree(proc: subprocess.Popen) -> None:
    """Stop a process we started and every process it started (api-server workers)."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(family, timeout=10)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    proc.wait(timeout=10)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@pytest.fixture
def airflow_metadata_db(pg_admin: str) -> Iterator[str]:
    """A fresh, empty Airflow metadata database on the test server (SQLAlchemy URL)."""
    name = f"encore_af_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = warehouse.with_database(pg_admin, name)
    yield url.replace("postgresql://", "postgresql+psycopg2://", 1)
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def api_server(tmp_path: Path, airflow_metadata_db: str, warehouse_dsn: str) -> Iterator[str]:
    """A running api-server over the project's DAGs and plugins; yields its base URL."""
    home = tmp_path / "airflow"
    home.mkdir()
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    populate(warehouse_dsn, artifacts)
    passwords = home / "passwords.json"
    passwords.write_text(f'{{"{USER}": "{PASSWORD}"}}')
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_metadata_db,
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW_CONN_WAREHOUSE": warehouse_dsn,
        "WAREHOUSE_DSN": warehouse_dsn,
        "ENCORE_ARTIFACTS": str(artifacts),
        "PYTHONPATH": str(ROOT / "plugins"),
    }
    migrate = subprocess.run(
        [str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=180
    )
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "api-server.log"
    started: list[subprocess.Popen] = []
    try:
        with open(server_log, "w") as log:
            # serialize the DAGs while the server starts: the DAG list reads them from the DB
            reserialize = subprocess.Popen(
                [str(AIRFLOW), "dags", "reserialize"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            started.append(reserialize)
            command = ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
            server = subprocess.Popen(
                [str(AIRFLOW), *command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            started.append(server)
        out, _ = reserialize.communicate(timeout=180)
        assert reserialize.returncode == 0, out[-3000:]
        _wait_healthy(base, server, server_log)
        yield base
    finally:
        for proc in started:
            if proc.poll() is None:
                _kill_tree(proc)


def _wait_healthy(base: str, server: subprocess.Popen, server_log: Path) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"api-server exited with {server.returncode}:\n{_tail(server_log)}")
        try:
            with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"api-server did not answer within {WAIT} s:\n{_tail(server_log)}")


def test_a_person_logs_in_and_sees_the_dags_and_the_encore_page(api_server: str, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    expected_dags = sorted(set(DAG_IDS) | {p.stem for p in (ROOT / "dags").glob("[!_]*.py")})

    # the UI sends a visitor without a session to the login form
    log_in(browser, api_server, USER, PASSWORD, screenshot=SCREENSHOTS / "01-login.png")

    # the DAG list shows every Encore DAG, and the nav bar has the Encore entry
    browser.get(f"{api_server}/dags")
    text = wait_for_text(browser, expected_dags, "the DAG list")
    assert f"{len(expected_dags)} Dags" in text
    assert "Encore" in text  # the plugin's nav entry
    browser.save_screenshot(str(SCREENSHOTS / "02-dag-list.png"))

    # the Encore page: the plugin's app inside the UI's iframe, reading the warehouse
    browser.get(f"{api_server}/plugin/encore")
    frame = wait.until(ec.presence_of_element_located((By.TAG_NAME, "iframe")))
    assert frame.get_attribute("src").rstrip("/").endswith("/encore")
    browser.switch_to.frame(frame)
    page = wait_for_text(browser, ["Models (ml.model_registry)", "Latest runs"], "the Encore page")
    families = [h.text for h in browser.find_elements(By.CSS_SELECTOR, ".family h3")]
    assert families == ["churn", "genre", "popularity"]
    assert "Champion 20261101-champ" in page
    assert "Champion 20261102-genre" in page
    assert "20261105-cand" in page and "keep as candidate" in page
    assert "No popularity model is registered yet" in page
    assert "boom: out of labels" in page  # the failed training run
    browser.switch_to.default_content()
    browser.save_screenshot(str(SCREENSHOTS / "03-encore-page.png"))
    for name in ("01-login.png", "02-dag-list.png", "03-encore-page.png"):
        assert (SCREENSHOTS / name).stat().st_size > 10_000, name
