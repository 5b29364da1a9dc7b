"""Access control: the analyst role reads analytics and scores, and nothing else."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ml_tasks import warehouse

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def analyst_dsn(scored, pg_admin):
    """A login user that is only a member of encore_analyst, on the scored world."""
    name = f"analyst_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE encore_analyst").format(sql.Identifier(name))
        )
    info = psycopg.conninfo.conninfo_to_dict(scored["dsn"])
    info["user"] = name
    yield psycopg.conninfo.make_conninfo(**info)
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_analyst_reads_analytics_and_scores_only(analyst_dsn) -> None:
    with psycopg.connect(analyst_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM analytics.at_risk_today").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM scores.churn").fetchone()[0] > 0
        for query in (
            "SELECT count(*) FROM raw.listening_events",
            "SELECT count(*) FROM quarantine.rejected_rows",
            "SELECT count(*) FROM features.user_daily",
            "SELECT count(*) FROM ml.model_registry",
            "DELETE FROM scores.churn",
            "INSERT INTO scores.scoring_runs VALUES ('x', '2026-01-01', 'churn', NULL,"
            " 'skipped', 'x', 0, 0, now())",
            "CREATE TABLE analytics.mine (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(query)


def test_pipeline_role_can_write_what_the_pipeline_writes(scored, pg_admin) -> None:
    name = f"pipeline_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE encore_pipeline").format(sql.Identifier(name))
        )
    try:
        info = psycopg.conninfo.conninfo_to_dict(scored["dsn"])
        info["user"] = name
        with psycopg.connect(psycopg.conninfo.make_conninfo(**info)) as conn:
            assert conn.execute("SELECT count(*) FROM raw.listening_events").fetchone()[0] > 0
            conn.execute("UPDATE scores.churn SET run_id = run_id WHERE false")
            conn.execute("DELETE FROM monitoring.stream_anomalies WHERE false")
            conn.rollback()
    finally:
        with psycopg.connect(pg_admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH )?PRIVATE KEY-----"),
    "AWS access key": re.compile(r"AKIA[0-9A-Z]{16}"),
    "password in a URL": re.compile(r"postgres(?:ql)?(?:\+\w+)?://[^:@/\s]+:[^@/\s${}]{3,}@"),
    "password assignment": re.compile(r"(?i)\bpassword\s*[:=]\s*['\"][^'\"${}]{4,}['\"]"),
}


def test_no_secrets_in_the_repository() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in files:
        if name.startswith("tests/"):
            continue  # fixtures hold made-up credentials on purpose (redaction tests)
        path = ROOT / name
        if path.suffix in {".png", ".wav", ".parquet"} or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        for what, pattern in SECRET_PATTERNS.items():
            for match in pattern.finditer(text):
                found.append(f"{name}: {what}: {match.group(0)[:40]}")
    assert found == [], found


def test_warehouse_identifiers_are_quoted() -> None:
    assert warehouse.qualified('raw."x; DROP TABLE y"').as_string(None) == (
        '"raw"."""x; DROP TABLE y"""'
    )
