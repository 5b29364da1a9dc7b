"""Feast on the warehouse: apply, point-in-time joins, materialization of one day.

One database for the module (Feast's import and apply are slow): each test that writes the
online store empties it first.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from ml_tasks import feature_store as fst
from ml_tasks import warehouse

D1, D2, D3 = date(2026, 10, 1), date(2026, 10, 2), date(2026, 10, 3)
USER_VIEWS = ["user_account", "user_engagement", "user_mix"]
TRACK_VIEWS = ["track_catalogue", "track_popularity"]
ONLINE_COLUMNS = "entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts"


def _fill_day(conn: psycopg.Connection, table: str, day: date, keys: str, salt: int) -> None:
    """One feature day of ``table`` for the entities of SQL ``keys`` (a set of ``g``):
    every column derived from ``g`` and ``salt`` (so days are told apart), nullable ones
    null for every fourth entity, negative and integral values included."""
    parent = f"features.{table}"
    stage = f"features.{table}_stage"
    warehouse.create_day_stage(conn, parent, stage, "feature_ts", day)
    cols = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = 'features' AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    exprs = []
    for i, (name, typ, nullable) in enumerate(cols):
        if name == "user_id":
            e = "g"
        elif name == "track_id":
            e = "'trk-' || g || 'é'"
        elif name == "dt":
            e = "{day}::date"
        elif name == "feature_ts":
            e = "({day}::date + 1)::timestamptz - interval '1 microsecond'"
        elif name == "plan":
            e = "(ARRAY['free', 'premium', 'family'])[1 + g % 3]"
        elif typ == "text":
            e = f"'{name}-' || (g % 5)"
        elif typ == "boolean":
            e = f"(g + {salt}) % 2 = 0"
        elif typ == "integer":
            e = f"((g * 7 + {i}) % 1000) * 10 + {salt} - 5"
        elif typ == "double precision":
            e = f"CASE WHEN g % 5 = 1 THEN 2.0 ELSE (g * 0.37 + {i}) / 3.0 + {salt} END"
        else:
            e = "now()"
        if nullable == "YES":
            e = f"CASE WHEN g % 4 = 0 THEN NULL ELSE {e} END"
        exprs.append(e)
    conn.execute(
        sql.SQL("INSERT INTO {} SELECT {} FROM ({}) k(g)").format(
            warehouse.qualified(stage),
            sql.SQL(", ".join(exprs)).format(day=sql.Literal(day)),
            sql.SQL(keys),
        )
    )
    warehouse.swap_day_partition(conn, parent, stage, day)


@pytest.fixture(scope="module")
def fs_dsn(pg_admin: str, template_db: str) -> Iterator[str]:
    """A migrated database with the Feast project applied and three feature days:
    users 1-300 on D1, 1-200 and 1001 on D2, 1-100 on D3 (user 1001 only on D2, user 201+
    never after D1); tracks 1-80 on D1 and D2."""
    name = f"encore_fs_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    dsn = warehouse.with_database(pg_admin, name)
    with warehouse.connect(dsn) as conn:
        _fill_day(conn, "user_daily", D1, "SELECT generate_series(1, 300)", 1)
        _fill_day(conn, "user_daily", D2, "SELECT generate_series(1, 200) UNION ALL SELECT 1001", 2)
        _fill_day(conn, "user_daily", D3, "SELECT generate_series(1, 100)", 3)
        _fill_day(conn, "track_daily", D1, "SELECT generate_series(1, 80)", 1)
        _fill_day(conn, "track_daily", D2, "SELECT generate_series(1, 80)", 2)
        conn.commit()
    fst.apply(dsn)
    yield dsn
    fst._STORES.pop(dsn, None)
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _online(dsn: str, view: str) -> list[tuple]:
    with warehouse.connect(dsn) as conn:
        return sorted(
            conn.execute(
                sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(ONLINE_COLUMNS), warehouse.qualified(fst.online_table(view))
                )
            ).fetchall()
        )


def _truncate_online(dsn: str) -> None:
    with warehouse.connect(dsn) as conn:
        for view in USER_VIEWS + TRACK_VIEWS:
            conn.execute(sql.SQL("TRUNCATE {}").format(warehouse.qualified(fst.online_table(view))))
        conn.commit()


def _registry_snapshot(dsn: str) -> dict[str, list[tuple]]:
    with warehouse.connect(dsn) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1",
                (fst.REGISTRY_SCHEMA,),
            )
        ]
        return {
            t: sorted(
                conn.execute(
                    sql.SQL("SELECT * FROM {}").format(sql.Identifier(fst.REGISTRY_SCHEMA, t))
                ).fetchall()
            )
            for t in tables
        }


# --------------------------------------------------------------------------- config (no server)


def test_config_from_socket_dsn() -> None:
    dsn = "postgresql://postgres:@/encore?host=/work/main/var/pgdata"
    config = fst.build_config(dsn)
    for store in (config.online_store, config.offline_store):
        assert store.host == "/work/main/var/pgdata"
        assert store.port == 5432
        assert store.database == "encore"
        assert store.user == "postgres"
        assert store.sslmode == "disable"
    assert config.online_store.db_schema == fst.ONLINE_SCHEMA
    assert config.offline_store.entity_select_mode.value == "embed_query"
    assert config.registry.registry_type == "sql"
    assert config.registry.path.startswith("postgresql+psycopg://postgres@/encore?")
    assert "host=%2Fwork%2Fmain%2Fvar%2Fpgdata" in config.registry.path
    assert config.entity_key_serialization_version == 3
    assert config.project == "encore"


def test_config_from_tcp_dsn_keeps_password_out_of_yaml() -> None:
    dsn = "postgresql://pipeline:s3cret@db.internal:6543/wh?sslmode=require"
    params = fst.connection_params(dsn)
    assert params == {
        "host": "db.internal",
        "port": 6543,
        "database": "wh",
        "user": "pipeline",
        "password": "s3cret",
        "sslmode": "require",
    }
    kv = fst.connection_params("host=10.0.0.5 dbname=wh user=u")
    assert (kv["host"], kv["port"], kv["sslmode"], kv["password"]) == (
        "10.0.0.5",
        5432,
        "disable",
        "",
    )
    text = fst.feature_store_yaml(dsn)
    assert "s3cret" not in text
    assert "${ENCORE_FEAST_PASSWORD}" in text
    assert "embed_query" in text


def test_encoding_matches_feast_protos() -> None:
    """The vectorized ValueProto encoder against Feast's own per-value conversion."""
    import numpy as np
    import pyarrow as pa
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    cases = [
        (ValueType.INT32, pa.array([0, 1, 127, 128, 300, -1, -(2**31), 2**31 - 1, None])),
        (ValueType.INT64, pa.array([0, 2**40, -(2**63), 2**63 - 1, None], pa.int64())),
        (
            ValueType.DOUBLE,
            pa.array([0.0, -0.0, 1.0, 0.1, 1e-7, 1e22, float("inf"), float("nan"), None]),
        ),
        (ValueType.BOOL, pa.array([True, False, None])),
        (ValueType.STRING, pa.array(["", "free", "é" * 70, "x" * 200, None])),
    ]
    for value_type, column in cases:
        value, text = fst.encode_values(column, value_type)
        values = column.to_numpy(zero_copy_only=False)
        if value_type in (ValueType.INT32, ValueType.INT64):
            values = np.array(column.to_pylist(), dtype=object)
        protos = python_values_to_proto_values(values, value_type)
        assert value.to_pylist() == [p.SerializeToString() for p in protos], value_type
        expected_text = []
        for p in protos:
            kind = p.WhichOneof("val")
            expected_text.append(None if kind is None else str(getattr(p, kind)))
        assert text.to_pylist() == expected_text, value_type


def test_vectorized_entity_keys_match_feast() -> None:
    """The INT64 entity keys built in numpy are Feast's ``serialize_entity_key`` bytes."""
    import numpy as np
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    values = [0, 1, -1, 255, 2**40 + 7, -(2**63), 2**63 - 1]
    keys = fst.int64_entity_keys(np.array(values, dtype=np.int64), "user_id")
    assert keys.to_pylist() == [
        serialize_entity_key(
            EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=v)]),
            entity_key_serialization_version=fst.ENTITY_KEY_SERIALIZATION_VERSION,
        )
        for v in values
    ]
    assert fst.int64_entity_keys(np.array([], dtype=np.int64), "user_id").to_pylist() == []


# --------------------------------------------------------------------------- registry


def test_definitions_match_source_tables(fs_dsn: str) -> None:
    """Every feature names a column of its source, of the matching type."""
    pg_types = {
        "Int32": "integer",
        "Int64": "bigint",
        "Float64": "double precision",
        "String": "text",
        "Bool": "boolean",
    }
    defs = fst.definitions()
    with warehouse.connect(fs_dsn) as conn:
        for fv in defs.FEATURE_VIEWS:
            schema, table = fv.batch_source.get_table_query_string().split(".")
            types = dict(
                conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = %s",
                    (schema, table),
                ).fetchall()
            )
            for field in fv.features:
                assert types.get(field.name) == pg_types[str(field.dtype)], (fv.name, field)
            assert fv.owner == "encore-data-platform" and fv.description and fv.tags
            assert fv.ttl == timedelta(days=2)
    services = {s.name: s for s in defs.FEATURE_SERVICES}
    assert {p.name for p in services["churn_v1"].feature_view_projections} == set(USER_VIEWS)
    assert {p.name for p in services["popularity_v1"].feature_view_projections} == set(TRACK_VIEWS)


def test_apply_is_idempotent(fs_dsn: str) -> None:
    before = _registry_snapshot(fs_dsn)
    assert before["feature_views"] and before["feature_services"]
    summary = fst.apply(fs_dsn)
    assert summary["changed"] == [] and summary["deleted"] == [] and summary["tuned"] == []
    assert sorted(summary["feature_views"]) == sorted(USER_VIEWS + TRACK_VIEWS)
    assert sorted(summary["feature_services"]) == ["churn_v1", "popularity_v1"]
    assert _registry_snapshot(fs_dsn) == before

    # A lost online table is noticed and created again (user_account: it has a String
    # feature, so Feast also gives it a full-text index).
    table = fst.online_table("user_account")
    with warehouse.connect(fs_dsn) as conn:
        conn.execute(sql.SQL("DROP TABLE {}").format(warehouse.qualified(table)))
        conn.commit()
    again = fst.apply(fs_dsn)
    assert again["changed"] == ["online_table:user_account"]
    assert _online(fs_dsn, "user_account") == []
    # Feast made it with full pages and two indexes Encore never reads (and re-created its
    # entity_key index on every other view); apply tuned them all again.
    assert [t for t in again["tuned"] if t.startswith("fillfactor:")] == ["fillfactor:user_account"]
    assert {f"drop_index:{table}_ek", f"drop_index:{table}_fts_idx"} <= set(again["tuned"])
    with warehouse.connect(fs_dsn) as conn:
        for view in USER_VIEWS + TRACK_VIEWS:
            options, indexes = conn.execute(
                "SELECT c.reloptions, array_agg(i.indexrelid::regclass::text)"
                " FROM pg_class c JOIN pg_index i ON i.indrelid = c.oid"
                " WHERE c.oid = %s::regclass GROUP BY c.reloptions",
                (fst.online_table(view),),
            ).fetchone()
            assert options == [f"fillfactor={fst.ONLINE_FILLFACTOR}"], (view, options)
            assert indexes == [f"{fst.online_table(view)}_pkey"], (view, indexes)


# --------------------------------------------------------------------------- point in time


def _ts(day: date, hour: int = 0, minute: int = 0, micro: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC) + timedelta(
        microseconds=micro
    )


def test_point_in_time_join_never_leaks_the_future(fs_dsn: str) -> None:
    end = timedelta(days=1) - timedelta(microseconds=1)  # a row's stamp after its day starts
    cases = [  # (user, entity timestamp, expected feature day or None)
        (5, _ts(D1) + end - timedelta(microseconds=1), None),  # one microsecond too early
        (5, _ts(D1) + end, D1),  # exactly at the row's stamp
        (5, _ts(D2), D1),  # scoring D1: D+1 00:00 picks D1's row
        (5, _ts(D2, 13), D1),  # during D2: D2's row is not stamped yet
        (5, _ts(D3), D2),
        (5, _ts(D3, 23, 59), D2),
        (5, _ts(D3) + end, D3),
        (5, _ts(D3) + end + timedelta(days=2), D3),  # exactly the 2-day TTL after the stamp
        (5, _ts(D3) + end + timedelta(days=2, microseconds=1), None),  # beyond the TTL
        (250, _ts(D3), D1),  # no D2 row: D1's, 24 h + 1 µs old, still within TTL
        (250, _ts(D3) + end + timedelta(days=1), None),  # D1 + 2 days + ...: beyond TTL
        (1001, _ts(D2), None),  # first row is stamped at the end of D2
        (1001, _ts(D3), D2),
        (99999, _ts(D3), None),  # unknown user
    ]
    values = ", ".join(
        f"({i}, {user}, '{ts.isoformat()}'::timestamptz)" for i, (user, ts, _) in enumerate(cases)
    )
    entity_sql = (
        f"SELECT row_id, user_id, event_timestamp FROM (VALUES {values})"
        " AS e(row_id, user_id, event_timestamp)"
    )
    frame = fst.historical_features(entity_sql, "churn_v1", dsn=fs_dsn)
    assert len(frame) == len(cases)
    with warehouse.connect(fs_dsn) as conn:
        truth = {
            (uid, dt): (plays, plan, hours)
            for uid, dt, plays, plan, hours in conn.execute(
                "SELECT user_id, dt, plays_7d, plan, night_share_30d FROM features.user_daily"
            )
        }
    by_row = frame.set_index("row_id")
    for i, (user, _, expected) in enumerate(cases):
        got = by_row.loc[i]
        if expected is None:
            assert got["plays_7d"] != got["plays_7d"] or got["plays_7d"] is None, (i, got)
            continue
        plays, plan, night = truth[(user, expected)]
        assert int(got["plays_7d"]) == plays, (i, user, expected)
        assert got["plan"] == plan, i
        if night is None:
            assert got["night_share_30d"] != got["night_share_30d"], i
        else:
            assert got["night_share_30d"] == pytest.approx(night), i
        # and never a later day's value (values differ by day through the salt)
        later = [d for (u, d) in truth if u == user and d > expected]
        for d in later:
            assert int(got["plays_7d"]) != truth[(user, d)][0]


def test_historical_features_full_names_for_tracks(fs_dsn: str) -> None:
    entity_sql = (
        "SELECT track_id, event_timestamp FROM (VALUES ('trk-7é', '2026-10-03 00:00+00'::"
        "timestamptz)) AS e(track_id, event_timestamp)"
    )
    frame = fst.historical_features(
        entity_sql, "popularity_v1", dsn=fs_dsn, full_feature_names=True
    )
    with warehouse.connect(fs_dsn) as conn:
        plays = conn.execute(
            "SELECT plays_1d FROM features.track_daily WHERE track_id = 'trk-7é' AND dt = %s",
            (D2,),
        ).fetchone()[0]
    assert int(frame.loc[0, "track_popularity__plays_1d"]) == plays
    assert "track_catalogue__genre" in frame.columns


# --------------------------------------------------------------------------- materialize


def test_materialize_day_writes_exactly_that_day(fs_dsn: str) -> None:
    _truncate_online(fs_dsn)
    result = fst.materialize_day(D2, dsn=fs_dsn, views=USER_VIEWS, chunk_rows=64)
    assert result["views"]["user_account"]["rows"] == 201
    assert result["views"]["user_account"]["online_rows"] == 201 * 8
    rows = _online(fs_dsn, "user_account")
    stamp = _ts(D2) + timedelta(days=1) - timedelta(microseconds=1)
    assert len(rows) == 201 * 8
    assert {r[5] for r in rows} == {stamp}
    online = fst.online_features(
        "churn_v1", [{"user_id": u} for u in (1, 150, 250, 1001)], dsn=fs_dsn
    )
    with warehouse.connect(fs_dsn) as conn:
        expected = dict(
            conn.execute(
                "SELECT user_id, tenure_days FROM features.user_daily WHERE dt = %s", (D2,)
            ).fetchall()
        )
        logged = conn.execute(
            "SELECT feature_view, method, rows FROM monitoring.feature_materializations"
            " WHERE dt = %s ORDER BY 1",
            (D2,),
        ).fetchall()
    assert online["tenure_days"] == [expected[1], expected[150], None, expected[1001]]
    assert logged == [(v, "bulk", 201) for v in USER_VIEWS]

    assert result["views"]["user_account"]["changed"] == 201 * 8
    again = fst.materialize_day(D2, dsn=fs_dsn, views=USER_VIEWS, chunk_rows=1000)
    assert again["rows"] == result["rows"]
    assert {v["changed"] for v in again["views"].values()} == {0}  # nothing rewritten
    assert _online(fs_dsn, "user_account") == rows

    # An older day never replaces newer online values (a backfill does not regress them).
    fst.materialize_day(D1, dsn=fs_dsn, views=["user_account"])
    after = _online(fs_dsn, "user_account")
    assert len(after) == 301 * 8  # users 201-300 come from D1, the rest keep D2
    assert [r for r in after if r[5] == stamp] == rows


def test_writers_of_one_online_table_take_turns(fs_dsn: str) -> None:
    """MERGE does not retry an insert that a concurrent writer beat it to: it would fail on
    the primary key once that writer commits. So a materialization waits for the writer
    holding the online table's lock, then merges over what it committed."""
    import threading

    _truncate_online(fs_dsn)
    fst.materialize_day(D2, dsn=fs_dsn, views=["user_account"])
    expected = _online(fs_dsn, "user_account")
    table = warehouse.qualified(fst.online_table("user_account"))
    done: dict[str, object] = {}

    def materialize() -> None:
        try:
            done["result"] = fst.materialize_day(D2, dsn=fs_dsn, views=["user_account"])
        except BaseException as exc:  # reported by the assertions below
            done["error"] = exc

    with warehouse.connect(fs_dsn) as other:
        other.execute(sql.SQL("CREATE TEMP TABLE older AS SELECT * FROM {}").format(table))
        other.execute("UPDATE older SET event_ts = event_ts - interval '1 day'")
        other.execute(sql.SQL("TRUNCATE {}").format(table))
        other.commit()
        # Another writer (an older day's materialization) holds the lock and has inserted,
        # not yet committed, every key D2 is about to write, with older stamps.
        other.execute(
            "SELECT pg_advisory_xact_lock(%s)",
            (warehouse.lock_key(f"encore.{fst.online_table('user_account')}"),),
        )
        other.execute(sql.SQL("INSERT INTO {} SELECT * FROM older").format(table))
        worker = threading.Thread(target=materialize)
        worker.start()
        worker.join(timeout=3)
        assert worker.is_alive(), "materialize_day did not wait for the other writer"
        other.commit()
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert "error" not in done, done.get("error")
    assert done["result"]["views"]["user_account"]["changed"] == 201 * 8  # all newer
    assert _online(fs_dsn, "user_account") == expected


def test_bulk_and_feast_write_the_same_online_rows(fs_dsn: str) -> None:
    views = USER_VIEWS + TRACK_VIEWS
    entity_rows = {
        "churn_v1": [{"user_id": u} for u in (1, 2, 3, 4, 5, 8, 150, 1001, 77777)],
        "popularity_v1": [{"track_id": f"trk-{t}é"} for t in (1, 2, 4, 9, 80, 999)],
    }
    results = {}
    for method in ("feast", "bulk"):
        _truncate_online(fs_dsn)
        out = fst.materialize_day(D2, dsn=fs_dsn, views=views, method=method, chunk_rows=50)
        assert out["views"]["track_popularity"]["rows"] == 80
        tables = {v: _online(fs_dsn, v) for v in views}
        served = {s: fst.online_features(s, rows, dsn=fs_dsn) for s, rows in entity_rows.items()}
        results[method] = (tables, served)
    feast_tables, feast_served = results["feast"]
    bulk_tables, bulk_served = results["bulk"]
    for view in views:
        assert len(bulk_tables[view]) > 0
        assert bulk_tables[view] == feast_tables[view], view
    assert bulk_served == feast_served
    assert feast_served["churn_v1"]["plan"][-1] is None


def _apply_in_child(dsn: str) -> dict:
    from ml_tasks import feature_store

    return feature_store.apply(dsn=dsn)


def test_concurrent_applies_take_turns(warehouse_dsn: str) -> None:
    """retrain_nightly starts its three trainers at once and each applies the Feast project:
    three processes applying at once all succeed (without the lock they raced on creating
    the same online indexes, and one failed with a duplicate key in pg_class)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(3, maxtasksperchild=1) as pool:
        # each call in a fresh process: once alone (its online indexes created, then dropped
        # as unused), then three at once
        pool.map(_apply_in_child, [warehouse_dsn], chunksize=1)
        results = pool.map(_apply_in_child, [warehouse_dsn] * 3, chunksize=1)
    assert all(r["feature_views"] == results[0]["feature_views"] for r in results)
    # Fresh processes find nothing to do: the registry's views (entity columns inferred
    # at apply) compare equal to the freshly loaded definitions, so Feast's apply is not
    # re-run and its indexes are not re-created to be dropped again.
    assert [(r["changed"], r["deleted"], r["tuned"]) for r in results] == [([], [], [])] * 3
    with warehouse.connect(warehouse_dsn) as conn:
        for view in results[0]["feature_views"]:
            table = fst.online_table(view)
            assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None
