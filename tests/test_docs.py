"""The docs stay true: analysts' example queries run against a simulated world."""

from __future__ import annotations

import re
from pathlib import Path

from ml_tasks import warehouse

DOCS = Path(__file__).resolve().parent.parent / "docs"
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.DOTALL)


SCORES_SECTION = "## Scores and analyst views"


def _queries(doc: str, *, scores: bool = False) -> list[str]:
    """SQL blocks of ``doc``: those before the scores section, or those in it."""
    text = (DOCS / doc).read_text()
    before, _, after = text.partition(SCORES_SECTION)
    return SQL_BLOCK.findall(after if scores else before)


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


def test_analyst_score_queries_run_and_return_rows(scored) -> None:
    """The scores section's queries, against a world scored by a trained champion."""
    queries = _queries("analysts.md", scores=True)
    assert len(queries) >= 4
    with warehouse.connect(scored["dsn"]) as conn:
        empty = [q.splitlines()[0] for q in queries if not conn.execute(q).fetchall()]
    assert empty == [], f"queries that returned nothing: {empty}"
