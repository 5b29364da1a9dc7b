"""The docs stay true: analysts' example queries run against an ingested simulated day."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from ml_tasks import ingest, warehouse
from ml_tasks.simulate import simulate_world

DOCS = Path(__file__).resolve().parent.parent / "docs"
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.DOTALL)


def _queries(doc: str) -> list[str]:
    return SQL_BLOCK.findall((DOCS / doc).read_text())


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "landing"
    simulate_world(
        out,
        users=150,
        tracks=60,
        start=date(2026, 10, 1),
        days=2,
        seed=3,
        bad_rate=0.02,
        preview_share=0.0,
    )
    return out


def test_analyst_queries_run_and_return_rows(warehouse_dsn, landing) -> None:
    for day in (date(2026, 10, 1), date(2026, 10, 2)):
        ingest.ingest_day(day, landing_root=landing)
    with warehouse.connect(warehouse_dsn) as conn:
        conn.execute(
            "INSERT INTO monitoring.validation_results (suite, dt, run_id, success, evaluated,"
            " failed, failures) VALUES ('raw.listening_events', '2026-10-02', 'docs', true,"
            " 10, 0, '[]')"
        )
        queries = _queries("analysts.md")
        assert len(queries) >= 6
        empty = []
        for query in queries:
            rows = conn.execute(query).fetchall()
            if not rows and "some-event-id" not in query:
                empty.append(query.splitlines()[0])
        assert empty == [], f"queries that returned nothing: {empty}"
