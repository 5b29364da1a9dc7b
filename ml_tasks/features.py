"""Build one feature day in the warehouse (the ``features_daily`` DAG and ``encore features``).

Two layers, each table-day replaced atomically (stage table, then a partition swap in one
transaction):

- ``features.user_activity_daily`` and ``features.track_activity_daily``: what happened on
  one UTC day, a pure function of that day's raw partitions, the catalogue as of the day
  and the day's fraud flags;
- ``features.user_daily`` and ``features.track_daily``: windows over the activity layer,
  as of the end of the day, stamped ``feature_ts`` = the day's last microsecond.

Building day D rebuilds D's activity, and any activity day of D's window that is missing or
older than its inputs (a re-ingested raw day, new fraud flags), so days can be built in any
order and a backfill converges. The SQL lives in ``sql/features/``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import pq, sql

from ml_tasks import warehouse
from ml_tasks.settings import get_settings

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    import numpy as np

log = logging.getLogger(__name__)

#: Distinct-key windows of ``user_daily``, in days ending on D (the last is WINDOW_DAYS).
KEY_WINDOWS = (7, 14, 30)
#: Key elements (tracks, artists and genres played per user-day) read per chunk when counting
#: distinct keys. At 50,000 users (9.3 M elements): 1 M per chunk peaked at 213 MB of RSS
#: and 4 M at 347 MB, in the same time.
KEY_CHUNK_ELEMENTS = 1_000_000

#: Longest window any feature reads, in days (user features: 30 days ending on D).
WINDOW_DAYS = 30


@dataclass(frozen=True)
class FeatureTable:
    """A daily feature table built from one SQL file."""

    name: str
    sql_file: str
    time_column: str
    #: Tables whose freshness also depends on the day's fraud flags.
    uses_fraud_flags: bool = False
    #: The query reads the temporary ``catalogue`` table (catalogue as of the day).
    uses_catalogue: bool = False
    #: The query reads the temporary ``user_key_counts`` table (distinct tracks, artists and
    #: genres per user over the windows ending on the day).
    uses_key_counts: bool = False


USER_ACTIVITY = FeatureTable(
    "features.user_activity_daily", "user_activity_daily.sql", "dt", uses_catalogue=True
)
TRACK_ACTIVITY = FeatureTable(
    "features.track_activity_daily", "track_activity_daily.sql", "dt", uses_fraud_flags=True
)
USER_DAILY = FeatureTable(
    "features.user_daily", "user_daily.sql", "feature_ts", uses_key_counts=True
)
TRACK_DAILY = FeatureTable(
    "features.track_daily", "track_daily.sql", "feature_ts", uses_catalogue=True
)
ACTIVITY_TABLES = (USER_ACTIVITY, TRACK_ACTIVITY)
DAILY_TABLES = (USER_DAILY, TRACK_DAILY)


class FeaturesNotReady(RuntimeError):
    """The raw data a feature day needs is not in the warehouse (yet)."""


@dataclass
class FeatureDayResult:
    """What a feature build wrote."""

    day: date
    run_id: str
    rows: dict[str, int] = field(default_factory=dict)
    rebuilt: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON-friendly summary (CLI output, XCom)."""
        return {
            "day": self.day.isoformat(),
            "run_id": self.run_id,
            "rows": self.rows,
            "rebuilt_activity_days": self.rebuilt,
            "seconds": round(self.seconds, 2),
        }


def feature_ts(day: date) -> datetime:
    """The event timestamp of feature day ``day``: its last microsecond (UTC)."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1, microseconds=-1)


@cache
def _query_text(sql_file: str) -> str:
    path: Path = get_settings().sql_dir / "features" / sql_file
    return path.read_text()


def _inputs_as_of(conn: psycopg.Connection, first: date, last: date) -> dict[date, dict]:
    """Per raw day in [first, last]: when its latest ingest and fraud flags were committed."""
    ingested = dict(
        conn.execute(
            "SELECT dt, max(finished_at) FROM raw.ingest_runs WHERE dt BETWEEN %s AND %s"
            " GROUP BY dt",
            (first, last),
        ).fetchall()
    )
    flagged = dict(
        conn.execute(
            "SELECT dt, max(scored_at) FROM monitoring.stream_anomalies"
            " WHERE dt BETWEEN %s AND %s GROUP BY dt",
            (first, last),
        ).fetchall()
    )
    return {
        day: {"ingest": at, "flags": flagged.get(day)}
        for day, at in ingested.items()
        if conn.execute(
            "SELECT to_regclass(%s)", (warehouse.partition_name("raw.listening_events", day),)
        ).fetchone()[0]
        is not None
    }


def _as_of(table: FeatureTable, inputs: dict) -> datetime:
    stamps = [inputs["ingest"]]
    if table.uses_fraud_flags and inputs["flags"] is not None:
        stamps.append(inputs["flags"])
    return max(stamps)


def stale_activity_days(
    conn: psycopg.Connection, table: FeatureTable, inputs: dict[date, dict]
) -> list[date]:
    """Raw days whose activity rows are missing or older than their inputs."""
    built = dict(
        conn.execute(
            "SELECT dt, inputs_as_of FROM features.build_log WHERE table_name = %s"
            " AND dt = ANY(%s)",
            (table.name, list(inputs)),
        ).fetchall()
    )
    return sorted(
        day
        for day, stamp in inputs.items()
        if built.get(day) is None or built[day] < _as_of(table, stamp)
    )


def _make_catalogue(conn: psycopg.Connection, day: date) -> None:
    """Temporary table ``catalogue``: the latest version of every track delivered by ``day``."""
    conn.execute("DROP TABLE IF EXISTS pg_temp.catalogue")
    conn.execute(
        "CREATE TEMPORARY TABLE catalogue ON COMMIT DROP AS"
        " SELECT DISTINCT ON (track_id) track_id, artist_id, album_id, release_date,"
        " duration_ms, genre, explicit, preview_path"
        " FROM raw.track_versions WHERE dt <= %s ORDER BY track_id, dt DESC",
        (day,),
    )
    conn.execute("ALTER TABLE pg_temp.catalogue ADD PRIMARY KEY (track_id)")
    conn.execute("ANALYZE pg_temp.catalogue")


def key_chunks(users: np.ndarray, elements: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Split sorted ``users`` (each with ``elements`` key elements) into ranges of user ids
    ``(first, last)``, inclusive, each holding at most ``limit`` elements (or one user)."""
    chunks: list[tuple[int, int]] = []
    start, total = 0, 0
    for i, n in enumerate(elements.tolist()):
        if total and total + n > limit:
            chunks.append((int(users[start]), int(users[i - 1])))
            start, total = i, 0
        total += n
    if len(users):
        chunks.append((int(users[start]), int(users[-1])))
    return chunks


def distinct_key_counts(
    users: np.ndarray, ages: np.ndarray, keys: np.ndarray, windows: Sequence[int] = KEY_WINDOWS
) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the number of distinct ``keys`` (32-bit) seen at an age (days before D)
    below each of ``windows``; returns ``(user ids, counts[user, window])``, users ascending.

    Each sighting is packed into one int64: the user's rank, the key, then the age in the
    low bits. One ``np.sort`` puts each (user, key) pair's sightings together, youngest
    first, so the first of each run carries the pair's youngest age, and a window counts
    the pairs whose youngest sighting is in it. (Sorting each window's pairs apart, with
    the default sort, took 2.8 times as long over the chunks of a 50,000-user night.
    numpy 2's ``np.unique`` hashes, and was 100x slower than ``np.sort`` on these arrays.)
    """
    import numpy as np

    if len(keys) and (keys.min() < -(2**31) or keys.max() >= 2**31):
        raise ValueError("distinct_key_counts: keys must fit in 32 bits (hashtext values)")
    if len(ages) and ages.min() < 0:
        raise ValueError("distinct_key_counts: ages must not be negative")
    # The rows come day by day, each day's in user order: runs that numpy's stable sort
    # (timsort) merges several times faster than its default introsort.
    ordered = np.sort(users, kind="stable")
    ids = ordered[_first_of_runs(ordered)]
    counts = np.zeros((len(ids), len(windows)), dtype=np.int64)
    if not len(keys):
        return ids, counts
    age_bits = max(1, int(ages.max()).bit_length())
    key_shift = age_bits + 32
    if len(ids) >= 1 << (63 - key_shift):
        raise ValueError(
            f"distinct_key_counts: {len(ids)} users with ages up to {int(ages.max())}"
            " do not fit in one int64 per sighting; count fewer users at a time"
        )
    rank = np.searchsorted(ids, users).astype(np.int64)
    packed = np.sort(
        (rank << key_shift)
        | ((keys.astype(np.int64) & 0xFFFFFFFF) << age_bits)
        | ages.astype(np.int64),
        kind="stable",
    )
    youngest = packed[_first_of_runs(packed >> age_bits)]
    pair_rank = youngest >> key_shift
    pair_age = youngest & ((1 << age_bits) - 1)
    for j, window in enumerate(windows):
        counts[:, j] = np.bincount(pair_rank[pair_age < window], minlength=len(ids))
    return ids, counts


def _first_of_runs(ordered: np.ndarray) -> np.ndarray:
    """Mask of the first element of each run of equal values in a sorted array."""
    import numpy as np

    first = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return first


_KEY_COLUMNS = {"tracks": "track_keys", "artists": "artist_keys", "genres": "genre_keys"}

#: One chunk of users' activity rows as arrays: per row its user, age and number of keys of
#: each kind, and per kind every row's key array in binary, one after another
#: (``array_send``, decoded by :func:`warehouse.decode_array_sends`, which checks every
#: array's length against the counts). One statement, so one snapshot: the materialized
#: rows are read in one order by every aggregate. (Aggregating user and age per key built
#: three arrays of every key: twice the server's time. An ``array_agg`` over the
#: ``unnest`` of the keys, as after that, took twice as long as the binary forms: 0.28 s
#: against 0.14 s per chunk of 1M keys, server time.)
_KEY_CHUNK_QUERY = sql.SQL(
    """WITH r AS MATERIALIZED (
        SELECT user_id, %(day)s - dt AS age, track_keys, artist_keys, genre_keys
        FROM features.user_activity_daily
        WHERE dt BETWEEN %(first)s AND %(day)s AND user_id BETWEEN %(lo)s AND %(hi)s
    )
    SELECT (SELECT array_agg(user_id) FROM r) AS users,
           (SELECT array_agg(age) FROM r) AS ages,
           (SELECT array_agg(cardinality(track_keys)) FROM r) AS n_track_keys,
           (SELECT string_agg(array_send(track_keys), ''::bytea) FROM r) AS track_keys,
           (SELECT array_agg(cardinality(artist_keys)) FROM r) AS n_artist_keys,
           (SELECT string_agg(array_send(artist_keys), ''::bytea) FROM r) AS artist_keys,
           (SELECT array_agg(cardinality(genre_keys)) FROM r) AS n_genre_keys,
           (SELECT string_agg(array_send(genre_keys), ''::bytea) FROM r) AS genre_keys"""
)


def _make_key_counts(conn: psycopg.Connection, day: date) -> None:
    """Temporary table ``user_key_counts``: per user with any track played in the
    :data:`WINDOW_DAYS` days ending on ``day``, the distinct tracks, artists and genres
    played in each of :data:`KEY_WINDOWS`.

    The same numbers as ``count(*)`` over ``GROUP BY user_id, key`` of the unnested key
    arrays, counted in numpy instead: that hash aggregate over every (user, key) pair of
    the window spilled to disk and took most of ``user_daily``. Users are read in chunks of
    about :data:`KEY_CHUNK_ELEMENTS` key elements (by the primary key's user-id ranges),
    each chunk in one statement as a few arrays (:data:`_KEY_CHUNK_QUERY`), so memory does
    not grow with the users.
    """
    import numpy as np
    import pyarrow as pa

    window = {"day": day, "first": day - timedelta(days=WINDOW_DAYS - 1)}
    sizes = warehouse.read_numbers(
        conn,
        sql.SQL(
            "SELECT user_id, sum(cardinality(track_keys) + cardinality(artist_keys)"
            " + cardinality(genre_keys))::int8 AS n"
            " FROM features.user_activity_daily"
            " WHERE dt BETWEEN %(first)s AND %(day)s GROUP BY user_id ORDER BY user_id"
        ),
        window,
        integers=("user_id", "n"),
    )
    conn.execute("DROP TABLE IF EXISTS pg_temp.user_key_counts")
    conn.execute(
        "CREATE TEMPORARY TABLE user_key_counts (user_id bigint PRIMARY KEY, "
        + ", ".join(f"{kind}_{w} integer NOT NULL" for kind in _KEY_COLUMNS for w in KEY_WINDOWS)
        + ") ON COMMIT DROP"
    )
    for first_user, last_user in key_chunks(sizes["user_id"], sizes["n"], KEY_CHUNK_ELEMENTS):
        params = {**window, "lo": first_user, "hi": last_user}
        chunk = warehouse.read_int_arrays(conn, _KEY_CHUNK_QUERY, params)
        columns: dict[str, np.ndarray] = {}
        ids = None
        for kind, column in _KEY_COLUMNS.items():
            counts_per_row = chunk[f"n_{column}"]
            try:
                keys = warehouse.decode_array_sends(chunk[column], counts_per_row)
            except ValueError as exc:
                raise RuntimeError(
                    f"user_key_counts: {column} of {window['first']}..{day}: {exc}"
                ) from exc
            kind_ids, counts = distinct_key_counts(
                np.repeat(chunk["users"], counts_per_row),
                np.repeat(chunk["ages"], counts_per_row),
                keys,
            )
            if ids is None:  # every user with a key has a track key (the others need a track)
                ids = kind_ids
            else:
                missing = np.setdiff1d(kind_ids, ids)
                if len(missing):
                    raise RuntimeError(
                        f"users {missing[:5].tolist()} have {kind} keys but no track keys"
                        f" in features.user_activity_daily for {window['first']}..{day}"
                    )
            full = np.zeros((len(ids), len(KEY_WINDOWS)), dtype=np.int64)
            full[np.searchsorted(ids, kind_ids)] = counts
            for j, w in enumerate(KEY_WINDOWS):
                columns[f"{kind}_{w}"] = full[:, j]
        del chunk
        if ids is None or len(ids) == 0:
            continue
        data = pa.table(
            {"user_id": pa.array(ids, pa.int64())}
            | {name: pa.array(values, pa.int32()) for name, values in columns.items()}
        )
        warehouse.copy_arrow(conn, "pg_temp.user_key_counts", data, binary=True)
    conn.execute("ANALYZE pg_temp.user_key_counts")


def build_table_day(
    conn: psycopg.Connection,
    table: FeatureTable,
    day: date,
    run_id: str,
    inputs_as_of: datetime | None = None,
) -> int:
    """Compute ``table`` for ``day`` into a stage table and swap it in; returns its rows.

    The build is its own transaction, so ``conn`` must not be inside one: as a savepoint
    of a longer transaction it would hold every table-day's locks to the end, and parallel
    backfills building overlapping days deadlock on them.
    """
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise RuntimeError(
            f"build_table_day({table.name}, {day}) needs a connection outside a transaction"
            " (autocommit, or committed first): each table-day commits on its own"
        )
    started = time.perf_counter()
    low, high = warehouse.day_bounds(day)
    stage = f"{warehouse.partition_name(table.name, day)}_stage"
    params = {
        "day": day,
        "lo": low,
        "hi": high,
        "feature_ts": feature_ts(day),
        "run_id": run_id,
    }
    with conn.transaction():
        # one builder per table-day at a time: racing runs serialize, the last one wins
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse.lock_key(stage),))
        # Builds of other days of this table wait here, before this transaction reads the
        # parent: two builders holding its share lock while each awaits the swap's
        # exclusive one deadlocked in parallel backfills. Readers are not blocked.
        conn.execute(
            sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(
                warehouse.qualified(table.name)
            )
        )
        warehouse.create_day_stage(conn, table.name, stage, table.time_column, day)
        if table.uses_catalogue:
            _make_catalogue(conn, day)
        if table.uses_key_counts:
            _make_key_counts(conn, day)
        query = sql.SQL(_query_text(table.sql_file)).format(stage=warehouse.qualified(stage))
        rows = conn.execute(query, params).rowcount
        conn.execute(sql.SQL("ANALYZE {}").format(warehouse.qualified(stage)))
        warehouse.swap_day_partition(conn, table.name, stage, day)
        seconds = time.perf_counter() - started
        conn.execute(
            "INSERT INTO features.build_log (table_name, dt, run_id, rows, inputs_as_of,"
            " seconds, built_at) VALUES (%s, %s, %s, %s, %s, %s, now())"
            " ON CONFLICT (table_name, dt) DO UPDATE SET run_id = excluded.run_id,"
            " rows = excluded.rows, inputs_as_of = excluded.inputs_as_of,"
            " seconds = excluded.seconds, built_at = excluded.built_at",
            (table.name, day, run_id, rows, inputs_as_of, seconds),
        )
    log.info("built %s for %s: %d rows in %.2f s", table.name, day, rows, seconds)
    return rows


def build_day(day: date, *, run_id: str, dsn: str | None = None) -> FeatureDayResult:
    """Build every feature table for ``day`` (rebuilding stale activity days of its window).

    Raises :class:`FeaturesNotReady` when ``day`` itself has not been ingested.
    """
    started = time.perf_counter()
    target = warehouse.ensure_migrated(dsn)
    result = FeatureDayResult(day=day, run_id=run_id)
    first = day - timedelta(days=WINDOW_DAYS - 1)
    # autocommit: each table-day's build is its own transaction, its locks released at once
    with warehouse.connect(target, autocommit=True) as conn:
        inputs = _inputs_as_of(conn, first, day)
        if day not in inputs:
            raise FeaturesNotReady(
                f"cannot build features for {day}: its listening events are not in the"
                f" warehouse; ingest the day first (encore ingest --date {day})"
            )
        for table in ACTIVITY_TABLES:
            todo = sorted(set(stale_activity_days(conn, table, inputs)) | {day})
            for activity_day in todo:
                rows = build_table_day(
                    conn, table, activity_day, run_id, _as_of(table, inputs[activity_day])
                )
                if activity_day == day:
                    result.rows[table.name] = rows
                else:
                    result.rebuilt.append(f"{table.name}:{activity_day.isoformat()}")
        for table in DAILY_TABLES:
            result.rows[table.name] = build_table_day(conn, table, day, run_id)
    result.seconds = time.perf_counter() - started
    log.info(
        "feature day %s built in %.2f s (%d stale activity days rebuilt)",
        day,
        result.seconds,
        len(result.rebuilt),
    )
    return result


def raw_day_ready(day: date, dsn: str | None = None) -> tuple[bool, str]:
    """Whether ``day``'s raw data is ingested and passed validation after its latest ingest.

    Returns (ready, why not).
    """
    with warehouse.connect(warehouse.ensure_migrated(dsn)) as conn:
        ingested = conn.execute(
            "SELECT max(finished_at) FROM raw.ingest_runs WHERE dt = %s", (day,)
        ).fetchone()[0]
        if ingested is None:
            return False, f"{day} has not been ingested"
        rows = conn.execute(
            "SELECT DISTINCT ON (suite) suite, success FROM monitoring.validation_results"
            " WHERE dt = %s AND suite LIKE 'raw.%%' AND validated_at >= %s"
            " ORDER BY suite, validated_at DESC",
            (day, ingested),
        ).fetchall()
    if not rows:
        return False, f"{day} has not been validated since its last ingest"
    failed = [suite for suite, success in rows if not success]
    if failed:
        return False, f"{day} failed validation: {', '.join(failed)}"
    return True, ""


def feature_day_ready(day: date, dsn: str | None = None) -> tuple[bool, str]:
    """Whether feature day ``day`` is built and passed validation after its latest build.

    Returns (ready, why not).
    """
    with warehouse.connect(warehouse.ensure_migrated(dsn)) as conn:
        built = conn.execute(
            "SELECT min(built_at) FROM features.build_log WHERE dt = %s AND table_name = ANY(%s)"
            " HAVING count(*) = %s",
            (day, [t.name for t in DAILY_TABLES], len(DAILY_TABLES)),
        ).fetchone()
        if built is None:
            return False, f"features of {day} have not been built"
        rows = conn.execute(
            "SELECT DISTINCT ON (suite) suite, success FROM monitoring.validation_results"
            " WHERE dt = %s AND suite = ANY(%s) AND validated_at >= %s"
            " ORDER BY suite, validated_at DESC",
            (day, [t.name for t in DAILY_TABLES], built[0]),
        ).fetchall()
    if len(rows) < len(DAILY_TABLES):
        return False, f"features of {day} have not been validated since they were built"
    failed = [suite for suite, success in rows if not success]
    if failed:
        return False, f"features of {day} failed validation: {', '.join(failed)}"
    return True, ""
