"""The Encore page of the Airflow UI: registry, latest runs, served reports, the plugin itself."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from encore_airflow import ui
from ml_tasks import registry, warehouse
from ml_tasks.deadlines import DeadlineConfig, record_miss

DAY = date(2026, 11, 5)
T0 = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)
CHURN_METRICS = {
    "chosen": "xgboost",
    "7": {"roc_auc": 0.8123, "pr_auc": 0.41, "ece": 0.012, "brier": 0.05},
    "30": {"roc_auc": 0.7911, "pr_auc": 0.52, "ece": 0.018, "brier": 0.11},
    "90": None,
    "baseline": {"7": {"roc_auc": 0.7001}, "30": {"roc_auc": 0.6802}},
}


def _model(
    dsn: str,
    artifacts: Path,
    name: str,
    version: str,
    metrics: dict,
    gate: dict,
    *,
    trained_at: datetime,
    card: str | None = None,
) -> registry.ModelRecord:
    """Register a model the way training does: artifact, registry row, gate report, card."""
    path, sha = registry.save_artifact({"toy": version}, name, version, {}, artifacts)
    registry.register(
        name=name,
        version=version,
        horizons=[7, 30, 90] if name == "churn" else [],
        train_start=DAY - timedelta(days=60),
        train_end=DAY,
        feature_service="churn_v1" if name == "churn" else "track_audio",
        metrics=metrics,
        artifact_path=path,
        artifact_sha256=sha,
        run_id=f"train-{version}",
        trained_at=trained_at,
        dsn=dsn,
    )
    card_path = None
    if card is not None:
        card_path = path.parent / ui.CARD_FILE
        card_path.write_text(card, encoding="utf-8")
    registry.update_report(
        name,
        version,
        gate_report=registry.verdict(gate["checks"]),
        model_card_uri=str(card_path) if card_path else None,
        dsn=dsn,
    )
    return registry.get(name, version, dsn=dsn)


def _check(passed: bool, detail: str) -> dict:
    return {"check": "roc_auc@30d", "passed": passed, "detail": detail}


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "artifacts"
    root.mkdir()
    monkeypatch.setenv("ENCORE_ARTIFACTS", str(root))
    return root


@pytest.fixture
def world(warehouse_dsn: str, artifacts: Path) -> dict:
    """Two churn models (champion, failed candidate), a genre champion, runs and reports."""
    return populate(warehouse_dsn, artifacts)


def populate(dsn: str, artifacts: Path) -> dict:
    """Fill a migrated warehouse and an artifacts folder as a few nightly runs would."""
    _model(
        dsn,
        artifacts,
        "churn",
        "20261101-champ",
        CHURN_METRICS,
        {"checks": [_check(True, "candidate 0.7911 must beat the baseline 0.6802")]},
        trained_at=T0,
        card="<html><body><h1>churn 20261101-champ card</h1></body></html>",
    )
    registry.promote("churn", "20261101-champ", run_id="train-1", at=T0, dsn=dsn)
    _model(
        dsn,
        artifacts,
        "churn",
        "20261105-cand",
        {**CHURN_METRICS, "30": {"roc_auc": 0.7502, "ece": 0.05}},
        {"checks": [_check(False, "candidate 0.7502 vs champion 0.7911 (tolerance 0.005)")]},
        trained_at=T0 + timedelta(days=4),
        card="<html><body>candidate card</body></html>",
    )
    _model(
        dsn,
        artifacts,
        "genre",
        "20261102-genre",
        {"chosen": "gbm", "accuracy": 0.9034, "macro_f1": 0.88, "baseline": {"accuracy": 0.2}},
        {"checks": [_check(True, "accuracy 0.9034 beats the majority class")]},
        trained_at=T0,
    )
    registry.promote("genre", "20261102-genre", run_id="train-g", at=T0, dsn=dsn)
    registry.record_training_run(
        dsn, "churn", "train-2", DAY, T0, status="failed", error="boom: out of labels"
    )
    report = artifacts / "reports" / f"monitoring-{DAY}.html"
    report.parent.mkdir()
    report.write_text("<html><body>monitoring report of the day</body></html>")
    site = artifacts / ui.DATA_DOCS_DIR
    (site / "validations").mkdir(parents=True)
    (site / "index.html").write_text("<html><body>Data Docs index</body></html>")
    page = site / "validations" / "raw_listening.html"
    page.write_text("<html><body>validation page</body></html>")
    with warehouse.connect(dsn) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO scores.scoring_runs (run_id, dt, model_name, model_version, status,"
            " detail, rows, seconds, finished_at) VALUES ('score-1', %s, 'churn',"
            " '20261101-champ', 'scored', '800 users scored', 800, 1.5, %s),"
            " ('score-1', %s, 'popularity', NULL, 'skipped', 'no champion', 0, 0.1, %s)",
            (DAY, T0, DAY, T0),
        )
        conn.execute(
            "INSERT INTO monitoring.reports (dt, path, summary, run_id, created_at)"
            " VALUES (%s, %s, %s, 'monitor-1', %s)",
            (DAY, str(report), json.dumps({"drift_alert": ["plays_7d"], "drift_warn": []}), T0),
        )
        conn.execute(
            "INSERT INTO monitoring.validation_results (suite, dt, run_id, success, evaluated,"
            " failed, failures, data_docs_path) VALUES ('raw.listening_events', %s, 'ingest-1',"
            " false, 12, 1, '[]', %s)",
            (DAY, str(page)),
        )
    record_miss(
        deadline_id="0193-miss",
        dag_id="nightly_deadline",
        run_id="scheduled__2026-11-04T00:00:00+00:00",
        run_type="scheduled",
        day=DAY - timedelta(days=1),
        deadline_time=DeadlineConfig().due(DAY - timedelta(days=1)),
        dsn=dsn,
    )
    return {"dsn": dsn, "artifacts": artifacts, "report": report}


def _client(dsn: str) -> TestClient:
    """The app as signed-in users see it (Airflow's login check is tested on its own)."""
    app = ui.create_app(dsn=lambda: dsn)
    app.dependency_overrides[ui.require_airflow_user] = lambda: None
    return TestClient(app)


def test_page_shows_champions_candidates_metrics_and_runs(world: dict) -> None:
    page = _client(world["dsn"]).get("/")
    assert page.status_code == 200
    text = page.text
    assert "Champion <code>20261101-champ</code>" in text
    assert "0.8123" in text and "0.7911" in text and "0.7001" in text  # metrics + baseline
    assert "not evaluated" in text  # churn 90 d without labels yet
    assert "20261105-cand" in text and "keep as candidate" in text
    assert "candidate 0.7502 vs champion 0.7911" in text  # the gate's reason
    assert "Champion <code>20261102-genre</code>" in text and "0.9034" in text
    assert "No popularity model is registered yet" in text
    assert "boom: out of labels" in text  # failed training run
    assert "800 users scored" in text and "no champion" in text  # scoring runs
    assert "plays_7d" in text  # the report's drift alert
    assert "raw.listening_events" in text and "failed" in text
    assert "No model is registered yet" not in text
    missed = text.split('id="deadlines"')[1].split("</table>")[0]  # the missed deadline
    assert f"{DAY - timedelta(days=1)}</span>" in missed
    assert "2026-11-05 06:00 UTC" in missed
    assert "churn scores, popularity scores, the monitoring report" in missed
    assert "nightly_deadline" in missed and "scheduled" in missed
    runs = _client(world["dsn"]).get("/api/runs").json()["runs"]
    assert [r["run_type"] for r in runs["deadline_misses"]] == ["scheduled"]


def test_links_serve_cards_reports_and_data_docs(world: dict) -> None:
    client = _client(world["dsn"])
    page = client.get("/").text
    links = sorted(set(re.findall(r'href="([^"#]+)"', page)) - {"/"})
    assert "cards/churn/20261101-champ" in links
    assert f"reports/{DAY}" in links
    assert "datadocs/index.html" in links
    assert "datadocs/validations/raw_listening.html" in links
    for link in links:
        assert client.get("/" + link).status_code == 200, link
    card = client.get("/cards/churn/20261101-champ")
    assert card.headers["content-type"].startswith("text/html")
    assert card.text == "<html><body><h1>churn 20261101-champ card</h1></body></html>"
    assert "monitoring report of the day" in client.get(f"/reports/{DAY}").text
    assert "Data Docs index" in client.get("/datadocs/").text


def test_files_outside_the_artifacts_are_refused(world: dict, tmp_path: Path) -> None:
    client = _client(world["dsn"])
    secret = tmp_path / "secret.html"
    secret.write_text("<html>secret</html>")
    for path in (
        "/datadocs/../../../../secret.html",
        "/datadocs/..%2F..%2F..%2F..%2F..%2Fsecret.html",
        "/datadocs/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.html",
        f"/datadocs/{secret}",
        "/datadocs/..%2F..%2F..%2F..%2Fmodels/churn/20261101-champ/model.joblib",
        "/cards/churn/no-such-version",
        "/cards/genre/20261102-genre",  # registered, but without a card
        "/reports/2026-01-01",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "secret" not in response.text
    # a registry row or report row pointing outside the artifacts folder is not followed
    registry.update_report("genre", "20261102-genre", model_card_uri=str(secret), dsn=world["dsn"])
    world["report"].unlink()
    with warehouse.connect(world["dsn"]) as conn, conn.transaction():
        conn.execute("UPDATE monitoring.reports SET path = %s", (str(secret),))
    assert client.get("/cards/genre/20261102-genre").status_code == 404
    assert client.get(f"/reports/{DAY}").status_code == 404


def test_registry_json_for_scripts(world: dict) -> None:
    client = _client(world["dsn"])
    data = client.get("/api/registry").json()
    churn = data["families"]["churn"]
    assert churn["champion"]["version"] == "20261101-champ"
    assert churn["champion"]["promoted_at"].startswith("2026-11-01T01:00")
    assert churn["champion"]["gate"]["passed"] is True
    assert churn["champion"]["key_metrics"][0] == {
        "scope": "7 d",
        "roc_auc": 0.8123,
        "pr_auc": 0.41,
        "ece": 0.012,
        "brier": 0.05,
        "baseline roc_auc": 0.7001,
    }
    assert [m["version"] for m in churn["candidates"]] == ["20261105-cand"]
    assert churn["candidates"][0]["gate"]["verdict"] == "keep as candidate"
    assert data["families"]["popularity"]["champion"] is None
    runs = client.get("/api/runs").json()["runs"]
    assert runs["training"][0]["error"] == "boom: out of labels"
    assert runs["reports"][0]["dt"] == DAY.isoformat()


def test_an_empty_warehouse_says_what_to_do(warehouse_dsn: str, artifacts: Path) -> None:
    client = _client(warehouse_dsn)
    page = client.get("/")
    assert page.status_code == 200
    assert "No model is registered yet" in page.text
    assert "No training run yet" in page.text and "No Data Docs built yet" in page.text
    assert "No missed deadline" in page.text
    data = client.get("/api/registry").json()
    assert data["has_models"] is False
    assert data["families"]["churn"]["champion"] is None


def test_an_unmigrated_or_unreachable_warehouse_is_explained(empty_db: str, artifacts) -> None:
    page = _client(empty_db).get("/")
    assert page.status_code == 200
    assert "no Encore tables yet" in page.text and "encore migrate" in page.text
    assert _client(empty_db).get("/cards/churn/v1").status_code == 404
    down = _client("postgresql://postgres@127.0.0.1:1/nowhere")
    page = down.get("/")
    assert page.status_code == 503 and "cannot be read right now" in page.text
    assert down.get("/api/registry").status_code == 503


def test_every_route_requires_an_airflow_login(world: dict) -> None:
    client = TestClient(ui.create_app(dsn=lambda: world["dsn"]))
    for path in ("/", "/api/registry", "/cards/churn/20261101-champ", "/datadocs/index.html"):
        assert client.get(path).status_code == 401, path


@pytest.mark.airflow
def test_airflow_loads_the_plugin_and_serves_the_page(airflow_db, world: dict) -> None:
    """Airflow's plugins manager finds EncorePlugin in the plugins folder, and the api-server
    mounts its app and lists its nav entry; a signed-in user sees the page."""
    from airflow import plugins_manager
    from airflow.api_fastapi.app import create_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    plugins, errors = plugins_manager._get_plugins()
    assert [f for f in errors if Path(f).name in ("encore_plugin.py", "ui.py")] == [], errors
    encore = next(p for p in plugins if p.name == "encore")
    assert type(encore).__name__ == "EncorePlugin"
    apps, _ = plugins_manager.get_fastapi_plugins()
    assert [a["url_prefix"] for a in apps if a["name"] == "Encore"] == ["/encore"]
    views, _ = plugins_manager._get_ui_plugins()
    view = next(v for v in views if v["name"] == "Encore")
    assert view["destination"] == "nav" and view["url_route"] == "encore"

    api = create_app(apps="core")
    client = TestClient(api)
    assert client.get("/encore/").status_code == 401
    token = api.state.auth_manager.generate_jwt(
        SimpleAuthManagerUser(username="admin", role="admin")
    )
    headers = {"Authorization": f"Bearer {token}"}
    page = client.get("/encore/", headers=headers)
    assert page.status_code == 200 and "20261101-champ" in page.text
    assert '<base href="/encore/">' in page.text
    card = client.get("/encore/cards/churn/20261101-champ", headers=headers)
    assert card.status_code == 200 and "card" in card.text
    listed = client.get("/api/v2/plugins", headers=headers).json()["plugins"]
    entry = next(p for p in listed if p["name"] == "encore")
    assert entry["external_views"][0]["href"] == "encore/"
    assert entry["fastapi_apps"][0]["url_prefix"] == "/encore"
