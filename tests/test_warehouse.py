"""Migrations, embedded default and self-documentation of the warehouse."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ml_tasks import warehouse
from ml_tasks.settings import get_settings

MIGRATIONS = get_settings().migrations_dir


def test_migrations_apply_once_and_twice_is_a_no_op(empty_db: str) -> None:
    with warehouse.connect(empty_db, autocommit=True) as conn:
        first = warehouse.migrate(conn)
        second = warehouse.migrate(conn)
        recorded = conn.execute(
            "SELECT version, name FROM ml.schema_migrations ORDER BY version"
        ).fetchall()
    files = sorted(MIGRATIONS.glob("*.sql"))
    assert [m.path.name for m in first] == [f.name for f in files]
    assert second == []
    assert [f"{v:04d}_{n}.sql" for v, n in recorded] == [f.name for f in files]


def test_edited_migration_is_refused(empty_db: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    with warehouse.connect(empty_db, autocommit=True) as conn:
        warehouse.migrate(conn, copy)
        first = sorted(copy.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(warehouse.MigrationError, match="edited after it was applied"):
            warehouse.migrate(conn, copy)


def test_failed_migration_is_rolled_back_and_named(empty_db: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, copy)
    n = len(list(copy.glob("*.sql"))) + 1
    (copy / f"{n:04d}_broken.sql").write_text(
        "CREATE TABLE raw.half_done (x int);\nSELECT no_such_function();\n"
    )
    with warehouse.connect(empty_db, autocommit=True) as conn:
        with pytest.raises(warehouse.MigrationError, match=f"{n:04d}_broken.sql"):
            warehouse.migrate(conn, copy)
        assert conn.execute("SELECT to_regclass('raw.half_done')").fetchone()[0] is None
        assert conn.execute("SELECT max(version) FROM ml.schema_migrations").fetchone()[0] == n - 1


def test_migration_numbering_gaps_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(warehouse.MigrationError, match="without gaps"):
        warehouse.discover_migrations(tmp_path)


def test_every_table_and_column_is_commented(warehouse_dsn: str) -> None:
    with warehouse.connect(warehouse_dsn) as conn:
        missing = conn.execute(
            """
            SELECT c.table_schema || '.' || c.table_name || '.' || c.column_name
            FROM information_schema.columns c
            JOIN pg_class k ON k.relname = c.table_name
            JOIN pg_namespace n ON n.oid = k.relnamespace AND n.nspname = c.table_schema
            WHERE c.table_schema IN ('raw','quarantine','features','ml','scores','monitoring',
                                     'analytics')
              AND NOT k.relispartition
              AND col_description(k.oid, c.ordinal_position) IS NULL
            UNION ALL
            SELECT n.nspname || '.' || k.relname
            FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace
            WHERE n.nspname IN ('raw','quarantine','features','ml','scores','monitoring',
                                'analytics')
              AND k.relkind IN ('r','p','v','m') AND NOT k.relispartition
              AND obj_description(k.oid, 'pg_class') IS NULL
            """
        ).fetchall()
    assert missing == []


def test_connection_failure_is_one_clear_error() -> None:
    with pytest.raises(warehouse.WarehouseError, match="cannot connect to the warehouse"):
        warehouse.connect("postgresql://postgres@127.0.0.1:1/nope")


def test_redact_hides_passwords() -> None:
    assert warehouse.redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"
    assert "secret" not in warehouse.redact("host=h password=secret dbname=d")


def test_table_checksum_sees_changes(warehouse_dsn: str) -> None:
    with warehouse.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE raw.t (a int, b text)")
        conn.execute("COMMENT ON TABLE raw.t IS 'scratch'")
        conn.execute("INSERT INTO raw.t VALUES (1, 'x'), (2, 'y')")
        before = warehouse.table_checksum(conn, "raw.t")
        conn.execute("UPDATE raw.t SET b = 'z' WHERE a = 2")
        after = warehouse.table_checksum(conn, "raw.t")
        conn.execute("DROP TABLE raw.t")
    assert before[0] == after[0] == 2
    assert before[1] != after[1]


def test_with_database_swaps_only_the_database() -> None:
    assert (
        warehouse.with_database("postgresql://u:p@h:5433/a?sslmode=disable", "b")
        == "postgresql://u:p@h:5433/b?sslmode=disable"
    )
    assert (
        warehouse.with_database("postgresql://postgres:@/encore?host=/var/pg", "t")
        == "postgresql://postgres:@/t?host=/var/pg"
    )
    with pytest.raises(ValueError, match="URL-style"):
        warehouse.with_database("host=h dbname=a", "b")


def test_read_numbers_decodes_binary_copy_and_refuses_nulls(warehouse_dsn: str) -> None:
    import numpy as np
    from psycopg import sql

    query = sql.SQL(
        "SELECT g::int8 AS id, g / 4.0::float8 AS x, COALESCE(NULLIF(g % 3, 0)::float8, 'NaN')"
        " AS y FROM generate_series(1, 1000) g"
    )
    with warehouse.connect(warehouse_dsn) as conn:
        out = warehouse.read_numbers(conn, query, integers=("id",))
        assert list(out) == ["id", "x", "y"]
        assert out["id"].dtype == np.int64 and out["id"].tolist() == list(range(1, 1001))
        np.testing.assert_array_equal(out["x"], np.arange(1, 1001) / 4.0)
        assert np.isnan(out["y"][2]) and out["y"][3] == 1.0
        empty = warehouse.read_numbers(conn, sql.SQL("SELECT 1::float8 AS a WHERE false"))
        assert empty["a"].shape == (0,)
        with pytest.raises(ValueError, match="NULL"):
            warehouse.read_numbers(conn, sql.SQL("SELECT NULL::float8 AS a, 1::float8 AS b"))
        with pytest.raises(TypeError, match=r"\['a'\]"):
            warehouse.read_numbers(conn, sql.SQL("SELECT 1::int4 AS a"))


def test_read_int8_set_returns_every_value_and_refuses_other_columns(warehouse_dsn: str) -> None:
    """Every value, negative and extreme ones included (big-endian, signed); an empty
    result; a parameter; a column that is not one int8 refused."""
    from psycopg import sql

    query = sql.SQL(
        "SELECT v FROM (VALUES ('-9223372036854775808'::int8), (-1), (0), (7),"
        " (9223372036854775807)) t(v) WHERE v <> %s"
    )
    with warehouse.connect(warehouse_dsn) as conn:
        got = warehouse.read_int8_set(conn, query, (7,))
        assert sorted(got.tolist()) == [-(2**63), -1, 0, 2**63 - 1]
        assert warehouse.read_int8_set(conn, sql.SQL("SELECT 1::int8 WHERE false")).shape == (0,)
        many = warehouse.read_int8_set(
            conn, sql.SQL("SELECT g::int8 FROM generate_series(1, 50000) g")
        )
        assert sorted(many.tolist()) == list(range(1, 50001))
        for wrong in ("SELECT 1::int4", "SELECT 1::int8, 2::int8"):
            with pytest.raises(TypeError, match="one int8 column"):
                warehouse.read_int8_set(conn, sql.SQL(wrong))


def test_read_int_arrays_decodes_one_row_of_arrays(warehouse_dsn: str) -> None:
    import numpy as np
    from psycopg import sql

    query = sql.SQL(
        "SELECT array_agg(g::int8 * 10000000000) AS big, array_agg(-g) AS small,"
        " (SELECT array_agg(x) FROM generate_series(1, 0) x) AS nothing,"
        " '{}'::int4[] AS empty FROM generate_series(1, 5000) g"
    )
    with warehouse.connect(warehouse_dsn) as conn:
        out = warehouse.read_int_arrays(conn, query)
        assert list(out) == ["big", "small", "nothing", "empty"]
        assert out["big"].tolist() == [g * 10_000_000_000 for g in range(1, 5001)]
        assert out["small"].dtype == np.int64 and out["small"].tolist() == list(
            range(-1, -5001, -1)
        )
        assert out["nothing"].shape == (0,) and out["empty"].shape == (0,)
        with pytest.raises(TypeError, match=r"\['f'\]"):
            warehouse.read_int_arrays(conn, sql.SQL("SELECT ARRAY[1.5]::float8[] AS f"))
        with pytest.raises(ValueError, match="NULLs"):
            warehouse.read_int_arrays(conn, sql.SQL("SELECT ARRAY[1, NULL]::int4[] AS a"))
        with pytest.raises(ValueError, match="exactly one row"):
            warehouse.read_int_arrays(
                conn, sql.SQL("SELECT ARRAY[g]::int4[] AS a FROM generate_series(1, 2) g")
            )


def test_decode_array_sends_reads_many_arrays_in_one_blob(warehouse_dsn: str) -> None:
    """Ragged int4 and int8 arrays, empty ones among them, sent as one string_agg of their
    binary forms, decode to every element in order; counts that disagree are refused."""
    import json

    import numpy as np
    from psycopg import sql

    rng = np.random.default_rng(7)
    lengths = rng.integers(0, 40, size=300)
    lengths[[0, 5, 299]] = 0
    rows = [rng.integers(-(2**31), 2**31 - 1, size=k).tolist() for k in lengths]
    query = sql.SQL(
        "WITH r AS MATERIALIZED (SELECT i, a::int4[] AS a, (SELECT array_agg(x::int8 * 3000000000)"
        " FROM unnest(a) x) AS b FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY"
        " AS j(v, i), LATERAL (SELECT coalesce(array_agg(e::int4), '{}') AS a"
        " FROM jsonb_array_elements_text(v) e) q)"
        " SELECT (SELECT array_agg(cardinality(a) ORDER BY i) FROM r) AS n,"
        " (SELECT string_agg(array_send(a), ''::bytea ORDER BY i) FROM r) AS a,"
        " (SELECT string_agg(array_send(coalesce(b, '{}')), ''::bytea ORDER BY i) FROM r) AS b,"
        " (SELECT string_agg(array_send(a), ''::bytea) FROM r WHERE false) AS nothing"
    )
    with warehouse.connect(warehouse_dsn) as conn:
        out = warehouse.read_int_arrays(conn, query, {"rows": json.dumps(rows)})
    assert out["a"].dtype == np.uint8 and out["nothing"].shape == (0,)
    flat = [x for row in rows for x in row]
    assert out["n"].tolist() == lengths.tolist()
    assert warehouse.decode_array_sends(out["a"], out["n"]).tolist() == flat
    assert warehouse.decode_array_sends(out["b"], out["n"]).tolist() == [
        x * 3_000_000_000 for x in flat
    ]
    assert warehouse.decode_array_sends(out["nothing"], np.zeros(0, dtype=np.int64)).size == 0
    shifted = np.roll(out["n"], 1)  # the same total, in another order
    with pytest.raises(ValueError, match="announced length"):
        warehouse.decode_array_sends(out["a"], shifted)
    with pytest.raises(ValueError, match="announcing"):
        warehouse.decode_array_sends(out["a"], out["n"] + 1)


def test_stream_bytea_yields_every_row_and_frees_the_connection(warehouse_dsn: str) -> None:
    """All rows in order; a query error reaches the caller; a stream closed early leaves
    the connection usable (its worker thread gone, its cursor's transaction ended)."""
    from psycopg import errors, sql

    query = sql.SQL("SELECT int4send(n) FROM generate_series(10, 15) n ORDER BY n")
    with warehouse.connect(warehouse_dsn, autocommit=True) as conn:
        values = list(warehouse.stream_bytea(conn, query))
        assert values == [n.to_bytes(4, "big") for n in range(10, 16)]
        stream = warehouse.stream_bytea(conn, query, ahead=1)
        assert next(stream) == (10).to_bytes(4, "big")
        stream.close()
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(errors.DivisionByZero):
            list(warehouse.stream_bytea(conn, sql.SQL("SELECT '\\x00'::bytea WHERE 1 / 0 = 1")))
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_config_dir_comes_from_the_environment(tmp_path, monkeypatch) -> None:
    from ml_tasks.churn import ChurnConfig
    from ml_tasks.settings import SettingsError

    monkeypatch.delenv("ENCORE_CONFIG_DIR", raising=False)
    shipped = get_settings().config_dir
    assert shipped == get_settings().home / "config"
    copy = tmp_path / "config"
    shutil.copytree(shipped, copy)
    text = (copy / "churn.yaml").read_text(encoding="utf-8")
    (copy / "churn.yaml").write_text(text.replace("stride_days:", "stride_days: 3 #"))
    monkeypatch.setenv("ENCORE_CONFIG_DIR", str(copy))
    assert get_settings().config_dir == copy.resolve()
    assert (
        ChurnConfig.load().window.stride_days
        == 3
        != ChurnConfig.load(shipped / "churn.yaml").window.stride_days
    )
    monkeypatch.setenv("ENCORE_CONFIG_DIR", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="ENCORE_CONFIG_DIR"):
        get_settings()
