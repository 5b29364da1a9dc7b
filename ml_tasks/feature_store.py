"""The one module that talks to Feast.

Encore's Feast project (``feature_repo/definitions.py``) is configured here, in code, from
:mod:`ml_tasks.settings` and the warehouse DSN: no ``feature_store.yaml`` and no credentials
in files. Everything lives in the warehouse:

- registry: Feast's SQL registry in schema ``feast_registry`` (shared by every Airflow
  worker; a file registry would need a shared disk and has no locking);
- offline store: PostgreSQL with ``entity_select_mode: embed_query``, so a training
  frame's entity query stays in the database (no pandas upload);
- online store: PostgreSQL, schema ``feast_online``, one table ``encore_<view>`` per view.

Feature days are materialized by explicit interval (``[D 00:00, D+1 00:00)`` UTC), never
with ``materialize_incremental`` (``feast apply`` can reset what it remembers, feast #2905).
Feast's own online write is one ``executemany`` upsert row per entity and feature (feast
#4309); :func:`materialize_day` defaults to a bulk path that writes the same bytes with
COPY and one ``MERGE`` per view.

Feast and pandas are imported inside functions: DAG files may import this module.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks import warehouse
from ml_tasks.settings import get_settings

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from feast import FeatureStore, FeatureView
    from feast.repo_config import RepoConfig

log = logging.getLogger(__name__)

PROJECT = "encore"
REGISTRY_SCHEMA = "feast_registry"
ONLINE_SCHEMA = "feast_online"
OFFLINE_SCHEMA = "features"
ENTITY_KEY_SERIALIZATION_VERSION = 3
REGISTRY_CACHE_TTL_SECONDS = 60
METHODS = ("bulk", "feast")
#: Online tables keep half of each page free, so the nightly rewrite of every entity's
#: values is a HOT update that lands on the same page and writes no index entries.
ONLINE_FILLFACTOR = 50
#: Indexes Feast's PostgreSQL online store creates that Encore never reads through: a copy
#: of the primary key's leading column (online reads use the primary key) and the
#: full-text GIN index on ``value_text`` (Feast's document search, which Encore does not
#: use). Each would be written on every nightly update; the GIN one also blocks HOT.
UNUSED_ONLINE_INDEXES = ("_ek", "_fts_idx")
#: Source rows (entities) per chunk of the bulk online load. At 100,000 users (6.2 M online
#: rows) a night took 30 s and peaked at 446 MB with 10,000, and 29 s and 1,251 MB with
#: 50,000: each entity becomes one online row per feature, all held encoded per chunk.
MATERIALIZE_CHUNK_ROWS = 10_000
DEFINITIONS_MODULE = "encore_feature_repo"

_STORES: dict[str, FeatureStore] = {}


class FeatureStoreError(RuntimeError):
    """The Feast project is not applied, or a request does not fit it."""


# --------------------------------------------------------------------------- configuration


def connection_params(dsn: str) -> dict[str, Any]:
    """Feast's PostgreSQL connection fields (host, port, database, user, password, sslmode)
    from a libpq DSN or URL.

    A socket-only DSN such as the embedded server's
    (``postgresql://postgres:@/encore?host=/path/var/pgdata``) gives the socket directory as
    ``host``, which libpq (and so Feast's psycopg connections) accepts as is. ``sslmode``
    is the DSN's, else ``disable`` (Feast's default ``require`` fails on a local server).
    """
    from psycopg.conninfo import conninfo_to_dict

    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    if "," in host or "," in port:
        raise FeatureStoreError("Feast needs a single warehouse host, not a host list")
    return {
        "host": host,
        "port": int(port),
        "database": params.get("dbname") or params.get("user") or "postgres",
        "user": params.get("user") or "postgres",
        "password": params.get("password", ""),
        "sslmode": params.get("sslmode") or "disable",
    }


#: Registry sessions: the warehouse's session options (UTC, JIT off), in Feast's schema.
_REGISTRY_OPTIONS = f"{warehouse.SESSION_OPTIONS} -c search_path={REGISTRY_SCHEMA}"


def registry_url(dsn: str) -> str:
    """The SQLAlchemy URL of Feast's SQL registry (the warehouse itself)."""
    return warehouse.sqlalchemy_url(dsn, driver="psycopg")


def build_config(dsn: str, *, online_write_batch_size: int | None = None) -> RepoConfig:
    """The :class:`feast.RepoConfig` of project ``encore`` on the warehouse at ``dsn``."""
    from feast.repo_config import RepoConfig

    pg = connection_params(dsn)
    settings = get_settings()
    return RepoConfig(
        project=PROJECT,
        project_description="Encore: daily user and track features for churn and popularity.",
        provider="local",
        repo_path=settings.home / "feature_repo",
        registry={
            "registry_type": "sql",
            "path": registry_url(dsn),
            "cache_ttl_seconds": REGISTRY_CACHE_TTL_SECONDS,
            "sqlalchemy_config_kwargs": {
                "echo": False,
                "pool_pre_ping": True,
                "connect_args": {"options": _REGISTRY_OPTIONS},
            },
        },
        offline_store={
            "type": "postgres",
            **pg,
            "db_schema": OFFLINE_SCHEMA,
            "entity_select_mode": "embed_query",
        },
        online_store={"type": "postgres", **pg, "db_schema": ONLINE_SCHEMA},
        batch_engine="local",
        entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
        materialization={"online_write_batch_size": online_write_batch_size},
    )


def feature_store_yaml(dsn: str) -> str:
    """A ``feature_store.yaml`` equivalent to :func:`build_config`, for the ``feast`` CLI.

    The password is never written: it is left to Feast's ``${ENCORE_FEAST_PASSWORD}``
    environment substitution (and the registry URL carries none either: set ``PGPASSWORD``).
    """
    import yaml

    pg = connection_params(dsn)
    if pg["password"]:
        pg["password"] = "${ENCORE_FEAST_PASSWORD}"
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    no_password = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password"}
    url = registry_url(make_conninfo("", **no_password))
    doc = {
        "project": PROJECT,
        "provider": "local",
        "registry": {
            "registry_type": "sql",
            "path": url,
            "cache_ttl_seconds": REGISTRY_CACHE_TTL_SECONDS,
            "sqlalchemy_config_kwargs": {"connect_args": {"options": _REGISTRY_OPTIONS}},
        },
        "offline_store": {
            "type": "postgres",
            **pg,
            "db_schema": OFFLINE_SCHEMA,
            "entity_select_mode": "embed_query",
        },
        "online_store": {"type": "postgres", **pg, "db_schema": ONLINE_SCHEMA},
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION_VERSION,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def definitions():
    """The module ``feature_repo/definitions.py`` (loaded once per process)."""
    module = sys.modules.get(DEFINITIONS_MODULE)
    if module is not None:
        return module
    path = get_settings().home / "feature_repo" / "definitions.py"
    if not path.exists():
        raise FeatureStoreError(f"Feast definitions not found at {path}")
    spec = importlib.util.spec_from_file_location(DEFINITIONS_MODULE, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[DEFINITIONS_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(DEFINITIONS_MODULE, None)
        raise
    return module


def get_store(dsn: str | None = None) -> FeatureStore:
    """The :class:`feast.FeatureStore` of the warehouse (one per DSN and process)."""
    from feast import FeatureStore

    target = warehouse.resolve_dsn(dsn=dsn)
    store = _STORES.get(target)
    if store is None:
        config = build_config(target)
        store = FeatureStore(repo_path=str(config.repo_path), config=config)
        _STORES[target] = store
    return store


# --------------------------------------------------------------------------- apply


def _check_schemas(dsn: str) -> None:
    with warehouse.connect(dsn) as conn:
        found = {
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)",
                ([REGISTRY_SCHEMA, ONLINE_SCHEMA],),
            )
        }
    missing = {REGISTRY_SCHEMA, ONLINE_SCHEMA} - found
    if missing:
        raise FeatureStoreError(
            f"warehouse schemas {sorted(missing)} are missing: run `encore migrate` first"
        )


def apply(dsn: str | None = None) -> dict:
    """Register the project's definitions and create their online tables; idempotent.

    Objects registered earlier but no longer defined are deleted (with their online
    tables). Returns what is defined and what this call changed.

    Concurrent calls (``retrain_nightly`` starts its trainers at once, and each applies)
    take turns on an advisory lock: two Feast applies at once race on creating the same
    online tables and indexes, and one of them fails.
    """
    target = warehouse.resolve_dsn(dsn=dsn)
    with (
        warehouse.connect(target, autocommit=True) as lock_conn,
        warehouse.session_lock(lock_conn, APPLY_LOCK),
    ):
        return _apply(target)


#: Advisory lock serialising :func:`apply` across processes.
APPLY_LOCK = "encore.feast_apply"


def _apply(target: str) -> dict:
    _check_schemas(target)
    defs = definitions()
    store = get_store(target)
    started = time.perf_counter()

    registered: dict[str, dict[str, Any]] = {
        "entity": {e.name: e for e in store.list_entities()},
        "data_source": {s.name: s for s in store.list_data_sources()},
        "feature_view": {v.name: v for v in store.list_feature_views()},
        "feature_service": {s.name: s for s in store.list_feature_services()},
    }
    wanted: dict[str, list] = {
        "entity": list(defs.ENTITIES),
        "data_source": list(defs.SOURCES),
        "feature_view": list(defs.FEATURE_VIEWS),
        "feature_service": list(defs.FEATURE_SERVICES),
    }
    _infer_entity_columns(store, wanted)
    changed = [
        f"{kind}:{obj.name}"
        for kind, objs in wanted.items()
        for obj in objs
        if registered[kind].get(obj.name) != obj
    ]
    with warehouse.connect(target) as conn:
        changed += [
            f"online_table:{fv.name}"
            for fv in wanted["feature_view"]
            if conn.execute("SELECT to_regclass(%s)", (online_table(fv),)).fetchone()[0] is None
            and f"feature_view:{fv.name}" not in changed
        ]
    stale = [
        obj
        for kind, objs in wanted.items()
        for name, obj in registered[kind].items()
        if name not in {o.name for o in objs}
    ]
    if changed or stale:
        objects = [obj for objs in wanted.values() for obj in objs]
        store.apply(objects, objects_to_delete=stale, partial=not stale)
        store.refresh_registry()
    tuned = tune_online_tables(target, [fv.name for fv in wanted["feature_view"]])
    summary = {
        "project": PROJECT,
        "entities": [e.name for e in wanted["entity"]],
        "feature_views": [v.name for v in wanted["feature_view"]],
        "feature_services": [s.name for s in wanted["feature_service"]],
        "changed": changed,
        "deleted": [obj.name for obj in stale],
        "tuned": tuned,
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info(
        "feast apply: %d changed, %d deleted (%s)",
        len(changed),
        len(stale),
        ", ".join(changed) or "nothing new",
    )
    return summary


def _infer_entity_columns(store: Any, wanted: dict[str, list]) -> None:
    """Fill in the defined views' entity columns as Feast's apply does, before comparing.

    The registry keeps each view's entity columns, inferred from its entities' join keys at
    apply; a freshly loaded definition has none. Compared uninferred, every view looked
    changed in every new process, so each trainer re-ran Feast's apply, which re-created the
    online indexes Encore drops. Every view declares its schema and its entities a value
    type, so this reads nothing from the warehouse.
    """
    from feast.inference import update_feature_views_with_inferred_features_and_entities

    update_feature_views_with_inferred_features_and_entities(
        store._get_provider(), wanted["feature_view"], wanted["entity"], store.config
    )


def tune_online_tables(dsn: str, views: Sequence[str]) -> list[str]:
    """Give each view's online table :data:`ONLINE_FILLFACTOR` and drop the
    :data:`UNUSED_ONLINE_INDEXES` Feast created on it; idempotent, returns what it changed.

    At 100,000 users this halves the nightly materialization (every online row is
    updated; ``bench/materialize_bench.py`` measures it). The fillfactor applies to pages
    written from then on: a table that already holds rows gains the free space as its
    rows move to new pages, or at once with ``VACUUM FULL`` on it.
    """
    from psycopg import sql

    done: list[str] = []
    with warehouse.connect(dsn) as conn:
        for view in views:
            table = online_table(view)
            options = conn.execute(
                "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = to_regclass(%s)",
                (table,),
            ).fetchone()
            if options is None:
                raise FeatureStoreError(f"online table {table} does not exist after apply")
            if f"fillfactor={ONLINE_FILLFACTOR}" not in options[0]:
                conn.execute(
                    sql.SQL("ALTER TABLE {} SET (fillfactor = {})").format(
                        warehouse.qualified(table), sql.Literal(ONLINE_FILLFACTOR)
                    )
                )
                done.append(f"fillfactor:{view}")
            for suffix in UNUSED_ONLINE_INDEXES:
                index = f"{table}{suffix}"
                if conn.execute("SELECT to_regclass(%s)", (index,)).fetchone()[0] is not None:
                    conn.execute(
                        sql.SQL("DROP INDEX IF EXISTS {}").format(warehouse.qualified(index))
                    )
                    done.append(f"drop_index:{index}")
        conn.commit()
    return done


# --------------------------------------------------------------------------- materialize


def day_interval(day: date) -> tuple[datetime, datetime]:
    """``[day 00:00, day+1 00:00)`` UTC as aware datetimes."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def online_table(view: FeatureView | str) -> str:
    """``feast_online.encore_<view>``: where Feast's PostgreSQL online store keeps a view."""
    name = view if isinstance(view, str) else view.name
    return f"{ONLINE_SCHEMA}.{PROJECT}_{name}"


def _views(store: FeatureStore, names: Sequence[str] | None) -> list[FeatureView]:
    available = {v.name: v for v in store.list_feature_views()}
    if not available:
        raise FeatureStoreError("no feature views registered: run feature_store.apply() first")
    names = list(names) if names is not None else sorted(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise FeatureStoreError(f"unknown feature views {unknown}; known: {sorted(available)}")
    return [available[n] for n in names]


def materialize_day(
    day: date,
    *,
    dsn: str | None = None,
    views: Sequence[str] | None = None,
    chunk_rows: int = MATERIALIZE_CHUNK_ROWS,
    method: str = "bulk",
) -> dict:
    """Load exactly feature day ``day`` (rows with ``feature_ts`` in ``[day, day+1)`` UTC)
    of each view into the online store; re-running it leaves the same online rows.

    ``method="bulk"`` streams the source through a server-side cursor ``chunk_rows`` rows
    at a time, encodes Feast's online rows (Feast's own entity-key serialization, ValueProto
    bytes built vectorized), COPYs each chunk (binary) into a temporary stage per view, then
    merges each view's day into its online table with one ``MERGE``; the views of a source
    are one transaction (readers see the old day or the new one). The source holds one row
    per entity and day (its primary key). An online value is never replaced by one with an
    older ``event_ts`` (a backfill of an old day does not regress the online store);
    otherwise the rows are byte-identical to Feast's. ``method="feast"`` runs
    ``FeatureStore.materialize`` over the same interval in batches of ``chunk_rows``.

    Each view's materialization is logged in ``monitoring.feature_materializations``.
    Returns ``{"day", "method", "rows", "online_rows", "seconds", "views": {view: {...}}}``
    where each view has ``rows`` (entity rows), ``online_rows`` (rows x features),
    ``seconds`` and, for the bulk path, ``changed`` (online rows inserted or updated).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be positive")
    target = warehouse.resolve_dsn(dsn=dsn)
    store = get_store(target)
    fvs = _views(store, views)
    started = time.perf_counter()
    if method == "bulk":
        per_view = _materialize_bulk(target, store, fvs, day, chunk_rows)
    else:
        per_view = _materialize_feast(target, store, fvs, day, chunk_rows)
    _log_materializations(target, day, method, per_view)
    result = {
        "day": day.isoformat(),
        "method": method,
        "rows": sum(v["rows"] for v in per_view.values()),
        "online_rows": sum(v["online_rows"] for v in per_view.values()),
        "seconds": round(time.perf_counter() - started, 3),
        "views": per_view,
    }
    log.info(
        "materialized %s (%s): %d entity rows, %d online rows in %.1f s",
        day,
        method,
        result["rows"],
        result["online_rows"],
        result["seconds"],
    )
    return result


def _count_day(conn, table: str, ts_field: str, day: date) -> int:
    from psycopg import sql

    low, high = warehouse.day_bounds(day)
    query = sql.SQL("SELECT count(*) FROM {} WHERE {} >= %s AND {} < %s").format(
        warehouse.qualified(table), sql.Identifier(ts_field), sql.Identifier(ts_field)
    )
    return conn.execute(query, (low, high)).fetchone()[0]


def _materialize_feast(
    dsn: str, store: FeatureStore, fvs: list[FeatureView], day: date, chunk_rows: int
) -> dict[str, dict]:
    start, end = day_interval(day)
    # Feast's pull query is BETWEEN start AND end (both inclusive): stop one microsecond
    # before the next day so a row stamped at midnight is never taken twice.
    last = end - timedelta(microseconds=1)
    store.config.materialization_config.online_write_batch_size = chunk_rows
    out: dict[str, dict] = {}
    for fv in fvs:
        t0 = time.perf_counter()
        store.materialize(start_date=start, end_date=last, feature_views=[fv.name])
        seconds = time.perf_counter() - t0
        with warehouse.connect(dsn) as conn:
            rows = _count_day(
                conn, fv.batch_source.get_table_query_string(), fv.batch_source.timestamp_field, day
            )
        out[fv.name] = {
            "rows": rows,
            "online_rows": rows * len(fv.features),
            "seconds": round(seconds, 3),
        }
    return out


def _materialize_bulk(
    dsn: str, store: FeatureStore, fvs: list[FeatureView], day: date, chunk_rows: int
) -> dict[str, dict]:
    """Read each source once per day, encode every requested view of it per chunk."""
    by_source: dict[str, list[FeatureView]] = {}
    for fv in fvs:
        by_source.setdefault(fv.batch_source.get_table_query_string(), []).append(fv)
    out: dict[str, dict] = {}
    for table, group in by_source.items():
        out.update(_bulk_source(dsn, table, group, day, chunk_rows))
    return out


#: One temporary stage per view: a view's whole day is COPYed in chunk by chunk, then
#: merged into its online table in one statement (one join, whatever the number of chunks).
_STAGE_DDL = """CREATE TEMP TABLE {stage} (
    entity_key bytea, feature_name text, value bytea, value_text text, event_ts timestamptz
) ON COMMIT DROP"""


def _bulk_source(
    dsn: str, table: str, fvs: list[FeatureView], day: date, chunk_rows: int
) -> dict[str, dict]:
    from psycopg import sql

    ts_field = fvs[0].batch_source.timestamp_field
    join_key = fvs[0].entity_columns[0].name
    if any(len(fv.entity_columns) != 1 for fv in fvs):
        raise FeatureStoreError("the bulk path handles single-entity feature views only")
    if len({(fv.entity_columns[0].name, fv.entity_columns[0].dtype) for fv in fvs}) > 1:
        raise FeatureStoreError(f"the views of {table} do not share one entity")
    columns = [join_key, ts_field]
    for fv in fvs:
        columns += [f.name for f in fv.features if f.name not in columns]
    low, high = warehouse.day_bounds(day)
    query = sql.SQL("SELECT {} FROM {} WHERE {} >= %s AND {} < %s").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        warehouse.qualified(table),
        sql.Identifier(ts_field),
        sql.Identifier(ts_field),
    )
    stats = {fv.name: {"rows": 0, "online_rows": 0, "changed": 0, "seconds": 0.0} for fv in fvs}
    stages = {fv.name: f"_feast_online_stage_{i}" for i, fv in enumerate(fvs)}
    shared = 0.0  # reading the source, the entity keys, waiting on the stages' COPYs
    # Two connections: the source is read on one while the other COPYs the previous chunk
    # into the stages (on the pipe's thread), then merges the stages.
    with warehouse.connect(dsn) as conn, warehouse.connect(dsn) as reader:
        # The merge's hash join holds a view's day in memory instead of spilling in batches.
        conn.execute("SET work_mem = '256MB'")
        for fv in fvs:
            _require_online_table(conn, fv)
            conn.execute(sql.SQL(_STAGE_DDL).format(stage=sql.Identifier(stages[fv.name])))
        pipe = warehouse.CopyPipe()
        try:
            with reader.cursor(name="feast_bulk_source") as cur:
                cur.itersize = chunk_rows
                cur.execute(query, (low, high))
                while True:
                    t0 = time.perf_counter()
                    batch = cur.fetchmany(chunk_rows)
                    if not batch:
                        shared += time.perf_counter() - t0
                        break
                    chunk = _rows_to_arrow(batch, columns)
                    # Views of one source share the entity: its keys are serialized once.
                    keys = chunk_entity_keys(fvs[0], chunk)
                    shared += time.perf_counter() - t0
                    for fv in fvs:
                        t1 = time.perf_counter()
                        online = online_rows(fv, chunk, keys)
                        stats[fv.name]["seconds"] += time.perf_counter() - t1
                        stats[fv.name]["rows"] += chunk.num_rows
                        stats[fv.name]["online_rows"] += online.num_rows
                        t1 = time.perf_counter()
                        pipe.submit(
                            lambda t=online, stage=f"pg_temp.{stages[fv.name]}": (
                                warehouse.copy_arrow(conn, stage, t, binary=True)
                            )
                        )
                        shared += time.perf_counter() - t1
                    del batch, chunk, keys, online
        finally:
            t0 = time.perf_counter()
            pipe.close()
            shared += time.perf_counter() - t0
        reader.rollback()
        for fv in sorted(fvs, key=online_table):  # one lock order for every writer
            t1 = time.perf_counter()
            stats[fv.name]["changed"] = _merge(conn, online_table(fv), stages[fv.name])
            stats[fv.name]["seconds"] += time.perf_counter() - t1
        conn.commit()
    for fv in fvs:  # the shared work is charged to the source's views evenly
        stats[fv.name]["seconds"] = round(stats[fv.name]["seconds"] + shared / len(fvs), 3)
    return stats


def _require_online_table(conn, fv: FeatureView) -> None:
    found = conn.execute("SELECT to_regclass(%s)", (online_table(fv),)).fetchone()[0]
    if found is None:
        raise FeatureStoreError(
            f"online table {online_table(fv)} does not exist: run feature_store.apply() first"
        )


def _rows_to_arrow(batch: list[tuple], columns: list[str]) -> pa.Table:
    import pyarrow as pa

    return pa.table(
        {name: pa.array(col) for name, col in zip(columns, zip(*batch, strict=True), strict=True)}
    )


def _merge(conn, table: str, stage: str) -> int:
    """Merge a view's staged day into its online table in one statement; returns the online
    rows inserted or changed.

    A row identical to the stored one is left alone (a retried day rewrites nothing), and
    a stored value is never replaced by one with an older ``event_ts``. Unlike
    ``INSERT ... ON CONFLICT``, ``MERGE`` neither locks nor WAL-logs the rows it leaves
    alone, and it joins the whole day at once instead of probing the primary key row by
    row. ``MERGE`` does not retry an insert that a concurrent writer beat it to, so writers
    of one online table take turns on a transaction-level advisory lock.
    """
    from psycopg import sql

    conn.execute("SELECT pg_advisory_xact_lock(%s)", (warehouse.lock_key(f"encore.{table}"),))
    conn.execute(sql.SQL("ANALYZE pg_temp.{}").format(sql.Identifier(stage)))
    cur = conn.execute(
        sql.SQL(
            "MERGE INTO {t} AS o USING pg_temp.{stage} AS s"
            " ON o.entity_key = s.entity_key AND o.feature_name = s.feature_name"
            " WHEN MATCHED AND o.event_ts <= s.event_ts"
            " AND (o.value, o.value_text, o.vector_value, o.event_ts, o.created_ts)"
            " IS DISTINCT FROM (s.value, s.value_text, NULL::bytea, s.event_ts,"
            " NULL::timestamptz)"
            " THEN UPDATE SET value = s.value, value_text = s.value_text, vector_value = NULL,"
            " event_ts = s.event_ts, created_ts = NULL"
            " WHEN NOT MATCHED THEN INSERT (entity_key, feature_name, value, value_text,"
            " vector_value, event_ts, created_ts)"
            " VALUES (s.entity_key, s.feature_name, s.value, s.value_text, NULL, s.event_ts,"
            " NULL)"
        ).format(t=warehouse.qualified(table), stage=sql.Identifier(stage))
    )
    return max(cur.rowcount or 0, 0)


def _log_materializations(dsn: str, day: date, method: str, per_view: dict[str, dict]) -> None:
    with warehouse.connect(dsn) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO monitoring.feature_materializations"
                " (feature_view, dt, method, rows, online_rows, seconds, materialized_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, now())"
                " ON CONFLICT (feature_view, dt) DO UPDATE SET method = EXCLUDED.method,"
                " rows = EXCLUDED.rows, online_rows = EXCLUDED.online_rows,"
                " seconds = EXCLUDED.seconds, materialized_at = EXCLUDED.materialized_at",
                [
                    (name, day, method, v["rows"], v["online_rows"], v["seconds"])
                    for name, v in per_view.items()
                ],
            )
        conn.commit()


# --------------------------------------------------------------------------- online rows

# ValueProto field tags (feast/protos/feast/types/Value.proto): (field number << 3) | wire type
_TAG_STRING = 0x12  # string_val = 2, length-delimited
_TAG_INT32 = 0x18  # int32_val = 3, varint
_TAG_INT64 = 0x20  # int64_val = 4, varint
_TAG_DOUBLE = 0x29  # double_val = 5, 64-bit
_TAG_BOOL = 0x38  # bool_val = 7, varint


def online_rows(fv: FeatureView, chunk: pa.Table, keys: pa.Array | None = None) -> pa.Table:
    """Feast's online-store rows for the source rows in ``chunk``: one row per entity and
    feature, with ``entity_key`` from Feast's ``serialize_entity_key`` and ``value`` the
    serialized ValueProto (empty for null or NaN, like Feast), ``value_text`` as Feast's
    ``extract_text_and_num`` renders it, ``event_ts`` the source timestamp.

    ``keys``: the chunk's entity keys if already serialized (:func:`chunk_entity_keys`;
    views of one source share them).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if keys is None:
        keys = chunk_entity_keys(fv, chunk)
    n = chunk.num_rows
    ts = chunk.column(fv.batch_source.timestamp_field)
    ts = pc.cast(ts, pa.timestamp("us", tz="UTC"))
    parts = []
    for field in fv.features:
        value, text = encode_values(chunk.column(field.name), field.dtype.to_value_type())
        parts.append(
            pa.table(
                {
                    "entity_key": keys,
                    "feature_name": pa.array(np.full(n, field.name, dtype=object), pa.string()),
                    "value": value,
                    "value_text": text,
                    "event_ts": ts,
                }
            )
        )
    return pa.concat_tables(parts).combine_chunks()


def chunk_entity_keys(fv: FeatureView, chunk: pa.Table) -> pa.Array:
    """The serialized entity keys of ``chunk``'s rows for single-entity view ``fv``."""
    from feast.value_type import ValueType

    join_key = fv.entity_columns[0].name
    key_type = fv.entity_columns[0].dtype.to_value_type()
    column = chunk.column(join_key)
    if key_type == ValueType.INT64 and column.null_count == 0:
        return int64_entity_keys(column.to_numpy(), join_key)
    return entity_keys(column.to_pylist(), join_key, key_type)


def int64_entity_keys(values: np.ndarray, join_key: str) -> pa.Array:
    """:func:`entity_keys` of INT64 values, vectorized.

    For one INT64 join key, Feast's serialized key is a prefix that depends only on the
    join key's name, then the value as 8 little-endian bytes. The prefix is taken from
    Feast's own ``serialize_entity_key`` of the first value, and its output for the first
    and the last value is checked against the vectorized bytes, so a change of Feast's
    layout fails here instead of writing keys that no online read would find.
    """
    import numpy as np
    import pyarrow as pa
    from feast.value_type import ValueType

    values = np.ascontiguousarray(values, dtype="<i8")
    n = len(values)
    if n == 0:
        return pa.array([], pa.binary())
    reference = entity_keys([int(values[0]), int(values[-1])], join_key, ValueType.INT64)
    first = reference[0].as_py()
    prefix = np.frombuffer(first[:-8], np.uint8)
    width = len(prefix) + 8
    matrix = np.empty((n, width), np.uint8)
    matrix[:, : len(prefix)] = prefix
    matrix[:, len(prefix) :] = values.view(np.uint8).reshape(n, 8)
    keys = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(matrix)]
    ).cast(pa.binary())
    if keys[0].as_py() != first or keys[n - 1].as_py() != reference[1].as_py():
        raise FeatureStoreError(
            f"Feast's serialized entity key for {join_key!r} no longer ends in the value's 8"
            " little-endian bytes: the bulk path cannot build its keys"
        )
    return keys


def entity_keys(values: list, join_key: str, value_type) -> pa.Array:
    """Feast's serialized entity keys (``serialize_entity_key``, this project's version)."""
    import pyarrow as pa
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto
    from feast.value_type import ValueType

    field = {ValueType.INT64: "int64_val", ValueType.STRING: "string_val"}.get(value_type)
    if field is None:
        raise FeatureStoreError(f"unsupported join key type {value_type}")
    out = [
        serialize_entity_key(
            EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(**{field: v})]),
            entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
        )
        for v in values
    ]
    return pa.array(out, pa.binary())


def encode_values(column, value_type) -> tuple[pa.Array, pa.Array]:
    """``(value, value_text)`` of one feature column, vectorized.

    ``value`` is the serialized ``ValueProto`` Feast writes (``b""`` for a null or NaN),
    ``value_text`` its text (null for a null). Supports Int32, Int64, Float64, Bool and
    String features.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from feast.value_type import ValueType

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if value_type in (ValueType.INT32, ValueType.INT64):
        arr = pc.cast(column, pa.int64())
        valid = _valid(arr)
        ints = arr.fill_null(0).to_numpy(zero_copy_only=False)
        if value_type == ValueType.INT32 and ((ints < -(2**31)) | (ints >= 2**31)).any():
            raise FeatureStoreError("an Int32 feature holds a value out of int32 range")
        tag = _TAG_INT32 if value_type == ValueType.INT32 else _TAG_INT64
        mat, lengths = _varints(ints.view(np.uint64))
        mat = np.concatenate([np.full((n, 1), tag, np.uint8), mat], axis=1)
        value = _binary_from_matrix(mat, np.where(valid, lengths + 1, 0))
        text = pc.cast(arr, pa.string())
    elif value_type == ValueType.DOUBLE:
        floats = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        valid = ~np.isnan(floats)  # null -> NaN; Feast writes NaN as a null value too
        mat = np.empty((n, 9), np.uint8)
        mat[:, 0] = _TAG_DOUBLE
        mat[:, 1:] = np.ascontiguousarray(floats.astype("<f8")).view(np.uint8).reshape(n, 8)
        value = _binary_from_matrix(mat, np.where(valid, 9, 0))
        text = pa.array(
            [str(x) if ok else None for x, ok in zip(floats.tolist(), valid.tolist(), strict=True)],
            pa.string(),
        )
    elif value_type == ValueType.BOOL:
        arr = pc.cast(column, pa.bool_())
        valid = _valid(arr)
        mat = np.empty((n, 2), np.uint8)
        mat[:, 0] = _TAG_BOOL
        mat[:, 1] = arr.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8)
        value = _binary_from_matrix(mat, np.where(valid, 2, 0))
        text = pc.if_else(arr, pa.scalar("True"), pa.scalar("False"))
    elif value_type == ValueType.STRING:
        arr = pc.cast(column, pa.string())
        valid = _valid(arr)
        utf8 = pc.cast(arr.fill_null(""), pa.binary())
        lengths = pc.binary_length(utf8).to_numpy(zero_copy_only=False).astype(np.uint64)
        mat, lens = _varints(lengths)
        mat = np.concatenate([np.full((n, 1), _TAG_STRING, np.uint8), mat], axis=1)
        prefix = _binary_from_matrix(mat, lens + 1)
        joined = pc.binary_join_element_wise(prefix, utf8, pa.scalar(b"", pa.binary()))
        value = pc.if_else(pa.array(valid), joined, pa.scalar(b"", pa.binary()))
        text = arr
    else:
        raise FeatureStoreError(f"the bulk path does not encode {value_type} features")
    return value, text


def _valid(arr: pa.Array) -> np.ndarray:
    import numpy as np

    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _varints(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf base-128 varints of unsigned 64-bit values: a (n, 10) byte matrix and each
    value's length (negative int32/int64 values are sign-extended to 10 bytes, as protobuf
    does)."""
    import numpy as np

    u = np.asarray(u, dtype=np.uint64)
    n = len(u)
    mat = np.zeros((n, 10), np.uint8)
    lengths = np.ones(n, np.int64)
    rest = u.copy()
    for k in range(10):
        low = (rest & np.uint64(0x7F)).astype(np.uint8)
        rest = rest >> np.uint64(7)
        more = rest != 0
        mat[:, k] = low | (more.astype(np.uint8) << 7)
        lengths += more
    return mat, lengths


def _binary_from_matrix(mat: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """A binary array whose i-th value is ``mat[i, :lengths[i]]``."""
    import numpy as np
    import pyarrow as pa

    lengths = np.asarray(lengths, dtype=np.int64)
    keep = np.arange(mat.shape[1])[None, :] < lengths[:, None]
    data = np.ascontiguousarray(mat[keep])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(
        pa.large_binary(), len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    ).cast(pa.binary())


# --------------------------------------------------------------------------- retrieval


def feature_days_sql(dates) -> str:
    """SQL condition on ``feature_ts`` covering the feature days ``dates`` (min..max).

    The feature tables are partitioned on ``feature_ts``, one partition per UTC day: with
    this beside a condition on ``dt``, an entity query reads only the partitions of its
    dates instead of every day the warehouse keeps."""
    first, last = min(dates), max(dates)
    return (
        f"feature_ts >= TIMESTAMPTZ '{first.isoformat()} 00:00:00+00'"
        f" AND feature_ts < TIMESTAMPTZ '{(last + timedelta(days=1)).isoformat()} 00:00:00+00'"
    )


def historical_features(
    entity_sql: str,
    service: str,
    *,
    dsn: str | None = None,
    full_feature_names: bool = False,
) -> pd.DataFrame:
    """Point-in-time training frame of a feature service for the entities of a SQL query.

    ``entity_sql`` returns the join key(s) and ``event_timestamp`` (timestamptz); it is
    embedded in Feast's query (``entity_select_mode: embed_query``), so the entities never
    leave the database. Each row gets, per view, the latest values stamped at or before its
    ``event_timestamp`` and within the view's TTL (null otherwise): for scoring date D use
    ``event_timestamp = D+1 00:00 UTC``.
    """
    store = get_store(dsn)
    fs = store.get_feature_service(service)
    with warnings.catch_warnings():
        # Feast hands pandas a raw psycopg connection: fine, but pandas warns every time
        warnings.filterwarnings("ignore", message="pandas only supports SQLAlchemy")
        job = store.get_historical_features(
            entity_df=entity_sql.strip().rstrip(";"),
            features=fs,
            full_feature_names=full_feature_names,
        )
        return job.to_df()


def online_features(service: str, entity_rows: list[dict], *, dsn: str | None = None) -> dict:
    """Feast's ``get_online_features`` for a feature service, as ``{column: [values]}``."""
    store = get_store(dsn)
    fs = store.get_feature_service(service)
    return store.get_online_features(features=fs, entity_rows=entity_rows).to_dict()


def write_feature_store_yaml(path: Path, dsn: str | None = None) -> Path:
    """Write :func:`feature_store_yaml` to ``path`` (e.g. ``var/feast/feature_store.yaml``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(feature_store_yaml(warehouse.resolve_dsn(dsn=dsn)), encoding="utf-8")
    return path
