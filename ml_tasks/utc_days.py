"""UTC calendar days, the unit every Encore run works in: when a day closes, which days a
window holds. No heavy imports: the Airflow plugin uses it too."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def day_end(day: date) -> datetime:
    """The instant day ``day`` closed (D+1 00:00 UTC): the model and features as of then."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def days(first: date, last: date, stride: int = 1) -> list[date]:
    """``first``..``last`` inclusive, every ``stride``-th day counted back from ``last``
    (so ``last`` is always in), oldest first; empty when ``last < first``."""
    if last < first:
        return []
    n = (last - first).days
    return sorted(last - timedelta(days=k) for k in range(0, n + 1, stride))
