"""Great Expectations validation of one feature day, before anything downstream reads it.

Each suite validates one partition of ``features.user_daily`` / ``features.track_daily``
(a table asset on the day's partition, so nothing else is scanned) with:

- row counts against populations computed independently from the raw tables (the users
  active on the day; the catalogue delivered by the day), and the play total against raw
  plays minus those flagged as fraud;
- keys unique and present, categories in their sets, rates within [0, 1], counts within
  what a window can hold, nested windows ordered (7 days <= 14 days <= 30 days);
- consistency rules as unexpected-row queries (a rate is null exactly when its window has
  no plays; every row stamped with the day's ``feature_ts``).

It shares the GX project, Data Docs and ``monitoring.validation_results`` with the raw
validation (:mod:`ml_tasks.validation`); a failing day raises
:class:`~ml_tasks.validation.ValidationFailed`.
"""

from __future__ import annotations

import logging
import time as timer
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ml_tasks import contract, features, validation, warehouse
from ml_tasks.settings import get_settings
from ml_tasks.validation import DayValidation, ValidationFailed

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.expectations import Expectation

log = logging.getLogger(__name__)

WINDOWS = (7, 14, 30)
USER_RATES = ("skip_rate", "completion_rate", "like_rate", "share_rate")
CONTEXTS = ("playlist", "album", "artist", "search", "radio", "recommendation", "other")
DEVICES = ("mobile", "desktop", "web", "tv", "speaker", "other")


@dataclass(frozen=True)
class Populations:
    """What the raw tables say a feature day must contain."""

    active_users: int
    catalogue_tracks: int
    net_catalogue_plays: int


def populations(dsn: str, day: date) -> Populations:
    """Count, straight from ``raw``, who and what feature day ``day`` must describe.

    Active users: a paid plan at the end of the day (the latest subscription event is not a
    cancel and names a paid plan), or a play in the 30 days ending on it. The net plays are
    the day's plays of catalogue tracks minus those of user-days flagged as fraud.
    """
    low, high = warehouse.day_bounds(day)
    window_low, _ = warehouse.day_bounds(day - timedelta(days=features.WINDOW_DAYS - 1))
    with warehouse.connect(dsn) as conn:
        active = conn.execute(
            # DISTINCT first: a hash of the window's users, not a sort of all its plays
            "SELECT count(*) FROM ("
            " SELECT DISTINCT user_id FROM raw.listening_events"
            " WHERE played_at >= %s AND played_at < %s"
            " UNION"
            " SELECT user_id FROM (SELECT DISTINCT ON (user_id) user_id, event_type, plan"
            "   FROM raw.subscription_events WHERE event_at < %s"
            "   ORDER BY user_id, event_at DESC, event_key DESC) s"
            " WHERE event_type <> 'cancel' AND plan <> 'free') u",
            (window_low, high, high),
        ).fetchone()[0]
        tracks = conn.execute(
            "SELECT count(DISTINCT track_id) FROM raw.track_versions WHERE dt <= %s", (day,)
        ).fetchone()[0]
        plays = conn.execute(
            "SELECT count(*) FROM raw.listening_events e"
            " WHERE e.played_at >= %s AND e.played_at < %s"
            " AND EXISTS (SELECT 1 FROM raw.track_versions v"
            "   WHERE v.track_id = e.track_id AND v.dt <= %s)"
            " AND NOT EXISTS (SELECT 1 FROM monitoring.stream_anomalies a"
            "   WHERE a.dt = %s AND a.user_id = e.user_id AND a.is_flagged)",
            (low, high, day, day),
        ).fetchone()[0]
    return Populations(int(active), int(tracks), int(plays))


def _meta(rule: str, allowed: str, violation: str) -> dict[str, str]:
    return {"rule": rule, "allowed": allowed, "violation": violation}


def _between(column: str, low: float, high: float | None) -> Expectation:
    import great_expectations as gx

    allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
    return gx.expectations.ExpectColumnValuesToBeBetween(
        column=column,
        min_value=low,
        max_value=high,
        meta=_meta("range", allowed, f"{column}: outside {allowed}"),
    )


def _not_null(column: str) -> Expectation:
    import great_expectations as gx

    return gx.expectations.ExpectColumnValuesToNotBeNull(
        column=column, meta=_meta("missing", "no missing values", f"{column}: missing")
    )


def _ordered(larger: str, smaller: str) -> Expectation:
    import great_expectations as gx

    return gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A=larger,
        column_B=smaller,
        or_equal=True,
        meta=_meta("window_order", f"{larger} >= {smaller}", f"{larger} < {smaller}"),
    )


def _no_rows(rule: str, where: str, message: str) -> Expectation:
    import great_expectations as gx

    return gx.expectations.UnexpectedRowsExpectation(
        unexpected_rows_query=f"SELECT * FROM {{batch}} WHERE {where}",
        description=message,
        meta=_meta(rule, f"no row where {where}", message),
    )


def _row_count(value: int, what: str) -> Expectation:
    import great_expectations as gx

    return gx.expectations.ExpectTableRowCountToEqual(
        value=value,
        meta=_meta("row_count", f"{value} rows ({what})", f"row count differs from {what}"),
    )


def _stamp_rule(day: date) -> Expectation:
    stamp = features.feature_ts(day).isoformat()
    return _no_rows(
        "feature_ts",
        f"dt <> DATE '{day.isoformat()}' OR feature_ts <> TIMESTAMPTZ '{stamp}'",
        f"every row has dt = {day} and feature_ts = {stamp}",
    )


def user_suite(day: date, pops: Populations) -> gx.ExpectationSuite:
    """Expectations on ``features.user_daily`` for one day."""
    import great_expectations as gx

    E = gx.expectations
    exp: list[Expectation] = [
        _row_count(pops.active_users, "users active on the day, counted from raw"),
        E.ExpectColumnValuesToBeUnique(
            column="user_id", meta=_meta("key", "unique", "user_id: repeated")
        ),
        E.ExpectColumnValuesToBeInSet(
            column="plan",
            value_set=list(contract.PLANS),
            meta=_meta("allowed", "a contract plan", "plan: not a contract plan"),
        ),
        _stamp_rule(day),
        _no_rows(
            "is_paying",
            "is_paying <> (plan <> 'free')",
            "is_paying is true exactly for paid plans",
        ),
        _between("tenure_days", 0, None),
        _between("days_since_last_play", 0, None),
        _between("current_streak_days", 0, 30),
        _between("longest_streak_30d", 0, 30),
        _ordered("longest_streak_30d", "current_streak_days"),
        _between("payment_failures_30d", 0, None),
        _between("plan_changes_30d", 0, None),
        _no_rows(
            "last_play",
            "plays_30d > 0 AND (days_since_last_play IS NULL OR days_since_last_play > 29)",
            "a user with plays in the window last played within it",
        ),
    ]
    for column in ("user_id", "feature_ts", "plan", "tenure_days"):
        exp.append(_not_null(column))
    for w in WINDOWS:
        exp += [
            _between(f"plays_{w}d", 0, None),
            _between(f"listening_hours_{w}d", 0, 24 * w),
            _between(f"sessions_{w}d", 0, None),
            _between(f"active_days_{w}d", 0, w),
            _ordered(f"plays_{w}d", f"distinct_tracks_{w}d"),
            _ordered(f"distinct_tracks_{w}d", f"distinct_artists_{w}d"),
            _ordered(f"plays_{w}d", f"sessions_{w}d"),
        ]
        for rate in USER_RATES:
            exp.append(_between(f"{rate}_{w}d", 0, 1))
            exp.append(
                _no_rows(
                    "rate_null",
                    f"({rate}_{w}d IS NULL) <> (plays_{w}d = 0)",
                    f"{rate}_{w}d is null exactly when there are no plays in {w} days",
                )
            )
    for shorter, longer in ((7, 14), (14, 30)):
        for measure in ("plays", "sessions", "active_days", "distinct_tracks"):
            exp.append(_ordered(f"{measure}_{longer}d", f"{measure}_{shorter}d"))
    shares = [f"ctx_{c}_share_30d" for c in CONTEXTS] + [f"dev_{d}_share_30d" for d in DEVICES]
    shares += ["night_share_30d", "discovery_share_30d"]
    exp += [_between(column, 0, 1) for column in shares]
    for group in (CONTEXTS, DEVICES):
        prefix = "ctx" if group is CONTEXTS else "dev"
        total = " + ".join(f"{prefix}_{g}_share_30d" for g in group)
        exp.append(
            _no_rows(
                f"{prefix}_mix",
                f"plays_30d > 0 AND abs({total} - 1) > 1e-9",
                f"the {prefix} shares of a user with plays sum to 1",
            )
        )
    return gx.ExpectationSuite(name="features.user_daily", expectations=exp)


def track_suite(day: date, pops: Populations) -> gx.ExpectationSuite:
    """Expectations on ``features.track_daily`` for one day."""
    import great_expectations as gx

    E = gx.expectations
    exp: list[Expectation] = [
        _row_count(pops.catalogue_tracks, "catalogue tracks delivered by the day"),
        E.ExpectColumnValuesToBeUnique(
            column="track_id", meta=_meta("key", "unique", "track_id: repeated")
        ),
        E.ExpectColumnSumToBeBetween(
            column="plays_1d",
            min_value=pops.net_catalogue_plays,
            max_value=pops.net_catalogue_plays,
            meta=_meta(
                "net_plays",
                f"{pops.net_catalogue_plays} (raw plays of catalogue tracks, minus flagged)",
                "plays_1d does not add up to the day's unflagged raw plays",
            ),
        ),
        _stamp_rule(day),
        _ordered("plays_7d", "plays_1d"),
        _ordered("plays_28d", "plays_7d"),
        _ordered("plays_1d", "listeners_1d"),
        _ordered("artist_plays_7d", "plays_7d"),
        _between("duration_ms", 1, None),
        _between("artist_tracks", 1, None),
    ]
    for column in ("track_id", "feature_ts", "artist_id", "days_since_release"):
        exp.append(_not_null(column))
    for column in ("plays_1d", "plays_7d", "plays_prev_7d", "plays_28d", "likes_7d", "shares_7d"):
        exp.append(_between(column, 0, None))
    for rate, plays in (
        ("skip_rate_1d", "plays_1d"),
        ("completion_rate_1d", "plays_1d"),
        ("playlist_share_1d", "plays_1d"),
        ("skip_rate_7d", "plays_7d"),
        ("completion_rate_7d", "plays_7d"),
        ("playlist_share_7d", "plays_7d"),
    ):
        exp.append(_between(rate, 0, 1))
        exp.append(
            _no_rows(
                "rate_null",
                f"({rate} IS NULL) <> ({plays} = 0)",
                f"{rate} is null exactly when {plays} = 0",
            )
        )
    return gx.ExpectationSuite(name="features.track_daily", expectations=exp)


def _require_built(dsn: str, day: date) -> None:
    with warehouse.connect(dsn) as conn:
        missing = [
            name
            for name in (warehouse.partition_name(t.name, day) for t in features.DAILY_TABLES)
            if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None
        ]
    if missing:
        raise features.FeaturesNotReady(
            f"cannot validate features for {day}: {', '.join(missing)} do(es) not exist;"
            f" build the day first (encore features --date {day})"
        )


def validate_features(
    day: date,
    *,
    run_id: str,
    dsn: str | None = None,
    artifacts: Path | None = None,
    raise_on_failure: bool = True,
) -> DayValidation:
    """Validate feature day ``day``; record results and Data Docs like the raw validation."""
    [outcome] = validate_feature_days(
        [day], run_id=run_id, dsn=dsn, artifacts=artifacts, raise_on_failure=raise_on_failure
    )
    return outcome


def validate_feature_days(
    days: Sequence[date],
    *,
    run_id: str,
    dsn: str | None = None,
    artifacts: Path | None = None,
    raise_on_failure: bool = True,
) -> list[DayValidation]:
    """Validate feature days ``days`` in one GX session, building Data Docs once for all.

    Each day is validated and recorded as :func:`validate_features` would. Rebuilding Data
    Docs reads every result its index lists (up to ``validation.DOCS_INDEX_LIMIT``), about
    as long as validating a small day, so a backfill builds them once, at the end. Every
    day is validated and recorded before a failure is raised (the first failed day's).
    """
    if not days:
        return []
    settings = get_settings()
    artifacts = Path(artifacts or settings.artifacts).resolve()
    target = warehouse.ensure_migrated(dsn)
    for day in days:
        _require_built(target, day)
    ran: list[tuple[date, float, list]] = []  # (day, seconds, [(suite, result, key)])
    with validation.project_lock(artifacts):
        context = validation.open_context(artifacts, warehouse.sqlalchemy_url(target))
        ds = validation.warehouse_datasource(context)
        try:
            for day in days:
                started = timer.perf_counter()
                day_results = _run_day(context, ds, target, day, run_id)
                ran.append((day, timer.perf_counter() - started, day_results))
        finally:
            validation.dispose_engines(ds)
        started = timer.perf_counter()
        keys = [key for _day, _s, day_results in ran for _suite, _result, key in day_results]
        pages = iter(validation.build_docs(context, keys))
        docs_seconds = timer.perf_counter() - started
    outcomes = [
        DayValidation(
            dt=day,
            run_id=run_id,
            reports=[
                validation.suite_report(suite.name, day, result, next(pages))
                for suite, result, _key in day_results
            ],
        )
        for day, _s, day_results in ran
    ]
    for outcome, (day, seconds, _results) in zip(outcomes, ran, strict=True):
        validation.record_results(target, outcome)
        log.info(
            "feature validation of %s (run %s) %s in %.2f s",
            day,
            run_id,
            "passed" if outcome.success else "FAILED",
            seconds + docs_seconds / len(ran),
        )
    failed = [outcome for outcome in outcomes if not outcome.success]
    if raise_on_failure and failed:
        raise ValidationFailed(failed[0])
    return outcomes


def _run_day(context, ds, target: str, day: date, run_id: str) -> list:
    """Run both feature suites on ``day``'s partitions: ``[(suite, result, key)]``."""
    from great_expectations.core.run_identifier import RunIdentifier

    pops = populations(target, day)
    run_name = f"{day.isoformat()}__{validation.safe_run_name(run_id)}"
    gx_run = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
    out = []
    for table, suite in (
        (features.USER_DAILY, user_suite(day, pops)),
        (features.TRACK_DAILY, track_suite(day, pops)),
    ):
        definition = validation.day_definition(
            context,
            ds,
            suite,
            {"dt": day.isoformat(), "run_id": run_id},
            partition=warehouse.partition_name(table.name, day),
        )
        result, key = validation.run_definition(context, definition, gx_run)
        out.append((suite, result, key))
    return out
