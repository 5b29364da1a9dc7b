"""docker-compose.yaml: the official Airflow 3 layout with Celery workers, plus a warehouse.

Parsed by ``docker compose config`` where the Docker client has the compose plugin, else
read as YAML (merge keys resolved, ``${VAR:-default}`` left as written). Every service the
docs name must exist, and every service must be documented. In README.md and
docs/operations.md, a service is named in backticks: ``airflow-*`` anywhere, and any bare
lowercase word (no spaces, dots or underscores) in a section whose title names docker
compose, where volumes may be named the same way.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yaml"
DOCS = (ROOT / "README.md", ROOT / "docs" / "operations.md")
AIRFLOW_COMMANDS = {
    "api-server": "airflow api-server",
    "scheduler": "airflow scheduler",
    "dag-processor": "airflow dag-processor",
    "triggerer": "airflow triggerer",
    "worker": "airflow celery worker",
}


def _docker_compose() -> str | None:
    """The docker client when it has the compose plugin."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=60
    )
    return docker if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose model."""
    docker = _docker_compose()
    if docker is None:
        model = yaml.safe_load(COMPOSE.read_text())
        assert isinstance(model, dict) and isinstance(model.get("services"), dict)
        return model
    out = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def command(service: dict[str, Any]) -> str:
    cmd = service.get("command") or ""
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def by_command(services: dict[str, dict[str, Any]], wanted: str) -> list[str]:
    """Names of the services whose command runs ``wanted``."""
    return [name for name, svc in services.items() if command(svc).strip() == wanted]


def airflow_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services running Encore's Airflow image."""
    return {n: s for n, s in services.items() if "AIRFLOW__CORE__EXECUTOR" in environment(s)}


def host_of(url: str) -> str | None:
    """The host of a URL such as ``db+postgresql://u:p@host/db`` or ``redis://:@redis:6379/0``."""
    return urlsplit(url.split("+", 1)[-1] if "+" in url.split("://")[0] else url).hostname


def replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def image(service: dict[str, Any]) -> str:
    return str(service.get("image") or "")


def one_shot(name: str, services: dict[str, dict[str, Any]]) -> bool:
    """A service others wait for to complete (``airflow-init``), not a long-running one."""
    return any(
        (svc.get("depends_on") or {}).get(name, {}).get("condition")
        == "service_completed_successfully"
        for svc in services.values()
        if isinstance(svc.get("depends_on"), dict)
    )


def test_it_parses_into_the_airflow_3_layout(services) -> None:
    for role, wanted in AIRFLOW_COMMANDS.items():
        assert len(by_command(services, wanted)) >= 1, f"no service runs `{wanted}` ({role})"
    workers = by_command(services, AIRFLOW_COMMANDS["worker"])
    assert sum(replicas(services[w]) for w in workers) >= 2, "at least two Celery workers"
    assert [n for n, s in services.items() if image(s).startswith("redis")], "a Redis broker"


def test_airflow_metadata_and_the_warehouse_are_separate_postgres_servers(services) -> None:
    airflow = airflow_services(services)
    assert len(airflow) >= len(AIRFLOW_COMMANDS)
    for name, svc in airflow.items():
        env = environment(svc)
        metadata = host_of(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        warehouse = host_of(env["AIRFLOW_CONN_WAREHOUSE"])
        assert metadata in services and image(services[metadata]).startswith("postgres"), name
        assert warehouse in services and image(services[warehouse]).startswith("postgres"), name
        assert metadata != warehouse, f"{name}: the warehouse is its own server"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        broker = host_of(env["AIRFLOW__CELERY__BROKER_URL"])
        assert broker in services and image(services[broker]).startswith("redis"), name
        assert host_of(env["AIRFLOW__CELERY__RESULT_BACKEND"]) == metadata, name


def test_every_airflow_component_shares_one_jwt_secret_and_the_execution_api(services) -> None:
    airflow = airflow_services(services)
    secrets = {environment(s).get("AIRFLOW__API_AUTH__JWT_SECRET") for s in airflow.values()}
    assert len(secrets) == 1 and None not in secrets and "" not in secrets, secrets
    (api,) = by_command(services, AIRFLOW_COMMANDS["api-server"])
    urls = {environment(s)["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] for s in airflow.values()}
    assert len(urls) == 1
    url = urls.pop()
    assert host_of(url) == api and urlsplit(url).path.rstrip("/") == "/execution"


def test_the_image_is_built_from_the_pinned_requirements(services) -> None:
    airflow = airflow_services(services)
    assert len({image(s) for s in airflow.values()}) == 1, "one image for every component"
    for name, svc in airflow.items():
        build = svc.get("build")
        assert build, f"{name}: built, not pulled"
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (ROOT / context / dockerfile).resolve() == (ROOT / "Dockerfile").resolve(), name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.MULTILINE)
    assert "-r requirements.txt" in dockerfile
    requirements = [
        line.split("#")[0].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip() and not line.strip().startswith("-")
    ]
    unpinned = [r for r in requirements if "==" not in r]
    assert requirements and unpinned == [], f"unpinned: {unpinned}"


def test_long_running_services_have_healthchecks(services) -> None:
    for name, svc in services.items():
        if one_shot(name, services):
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"


def _compose_mentions(text: str) -> set[str]:
    """Service-like names in backticks: ``airflow-*`` anywhere, any bare word in a section
    about docker compose."""
    found: set[str] = set(re.findall(r"`(airflow-[a-z0-9-]+)`", text))
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        heading = re.match(r"^(#+)\s+(.*)", line)
        if heading:
            level = len(heading.group(1))
            stack = [(lv, title) for lv, title in stack if lv < level] + [(level, heading.group(2))]
            continue
        if any(re.search(r"docker[ -]compose", title, re.I) for _, title in stack):
            found |= set(re.findall(r"`([a-z][a-z0-9]*(?:-[a-z0-9]+)*)`", line))
    return found


def test_every_service_the_docs_name_exists_and_every_service_is_documented(
    compose, services
) -> None:
    mentioned = set().union(*(_compose_mentions(doc.read_text()) for doc in DOCS))
    volumes = set(compose.get("volumes") or {})
    unknown = mentioned - set(services) - volumes
    assert unknown == set(), "named in the docs, neither a service nor a volume of the compose file"
    assert set(services) - mentioned == set(), "in the compose file, not named in the docs"
