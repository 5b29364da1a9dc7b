"""The docs stay true: analysts' example queries run against a simulated world."""

from __future__ import annotations

import re
from pathlib import Path

from ml_tasks import warehouse

DOCS = Path(__file__).resolve().parent.parent / "docs"
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.DOTALL)


def _queries(doc: str) -> list[str]:
    return SQL_BLOCK.findall((DOCS / doc).read_text())


def test_analyst_queries_run_and_return_rows(world_dsn) -> None:
    """Against the simulated world of conftest: ingested, featurized, ten days."""
    with warehouse.connect(world_dsn) as conn:
        conn.execute(
            "INSERT INTO monitoring.validation_results (suite, dt, run_id, success, evaluated,"
            " failed, failures) VALUES ('raw.listening_events', '2026-10-10', 'docs', true,"
            " 10, 0, '[]'), ('features.user_daily', '2026-10-10', 'docs', true, 80, 0, '[]')"
        )
        queries = _queries("analysts.md")
        assert len(queries) >= 6
        empty = []
        for query in queries:
            rows = conn.execute(query).fetchall()
            if not rows and "some-event-id" not in query:
                empty.append(query.splitlines()[0])
        assert empty == [], f"queries that returned nothing: {empty}"
