"""The one module that talks to the warehouse.

Connections (psycopg 3), the embedded PostgreSQL default, numbered migrations, bulk COPY
from Arrow, atomic partition swaps and table checksums. Every other module goes through
these functions; none opens its own connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from ml_tasks.settings import Settings, get_settings

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "encore"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_COPY_BLOCK_BYTES = 8 << 20


class WarehouseError(RuntimeError):
    """The warehouse could not be reached or is in an unexpected state."""


class MigrationError(WarehouseError):
    """A migration is malformed, failed, or was edited after it was applied."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse did not answer, or the connection to it was lost mid-task."""


# --------------------------------------------------------------------------- connections


def embedded_dsn(settings: Settings, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or reuse) the embedded PostgreSQL under ``var/pgdata`` and return its DSN.

    The server keeps running after this process exits so that ``psql`` and later commands
    can use it; ``encore warehouse stop`` stops it.
    """
    import pgserver  # heavy-ish and only needed for the embedded default

    pgdata = settings.embedded_pgdata
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    admin_uri = server.get_uri("postgres")
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return server.get_uri(database)


def stop_embedded(settings: Settings | None = None) -> bool:
    """Stop the embedded server if it runs. Returns whether one was running."""
    import subprocess

    settings = settings or get_settings()
    pgdata = settings.embedded_pgdata
    if not (pgdata / "postmaster.pid").exists():
        return False
    from pgserver import _commands

    pg_ctl = Path(_commands.POSTGRES_BIN_PATH) / "pg_ctl"
    cmd = [str(pg_ctl), "-D", str(pgdata), "stop", "-m", "fast", "-w"]
    # pgserver runs the server as the 'pgserver' system user when we are root.
    import os

    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd = ["su", "pgserver", "-s", "/bin/sh", "-c", " ".join(cmd)]
    subprocess.run(cmd, check=True, capture_output=True)
    return True


def resolve_dsn(settings: Settings | None = None, dsn: str | None = None) -> str:
    """The DSN to use: an explicit one, ``WAREHOUSE_DSN``, or the embedded server."""
    if dsn:
        return dsn
    settings = settings or get_settings()
    if settings.warehouse_dsn:
        return settings.warehouse_dsn
    return embedded_dsn(settings)


#: What to do when the warehouse is unreachable, appended to :class:`WarehouseUnavailable`.
_UNAVAILABLE_HINT = (
    "Check that the warehouse is running and that WAREHOUSE_DSN (in Airflow, the connection"
    " 'warehouse') points at it, then re-run the task: tasks are idempotent, and Airflow"
    " retries them"
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Connection(psycopg.Connection):
    """A psycopg connection whose ``with`` block turns a lost connection into
    :class:`WarehouseUnavailable` naming the warehouse (its DSN redacted) and what to do.

    Only a connection that broke (server stopped, network gone) is translated, and only on
    leaving the block: code inside it still sees psycopg's own errors, and errors on a
    healthy connection (a statement timeout, a constraint) pass through unchanged.
    """

    warehouse_dsn: str = ""

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        lost = isinstance(exc_val, psycopg.Error) and self.broken
        super().__exit__(exc_type, exc_val, exc_tb)
        if lost:
            raise WarehouseUnavailable(
                f"lost the connection to the warehouse at {self.warehouse_dsn} mid-task"
                f" ({_first_line(exc_val)}); what it had not committed is rolled back."
                f" {_UNAVAILABLE_HINT}"
            ) from exc_val


#: Session settings of every warehouse connection. JIT is off: the planner's cost of a query
#: over a few months of day partitions passes the JIT thresholds, and compiling it then
#: costs more than running it (a monitoring labels query: 8.5 s of JIT for 1.5 s of work).
SESSION_OPTIONS = "-c TimeZone=UTC -c jit=off"


def connect(dsn: str | None = None, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection in UTC, JIT off (:data:`SESSION_OPTIONS`), with an ``encore``
    application name.

    Raises :class:`WarehouseUnavailable` when the server does not answer; used as a context
    manager, the connection raises it too when the server goes away mid-block.
    """
    target = resolve_dsn(dsn=dsn)
    try:
        conn = _Connection.connect(
            target,
            autocommit=autocommit,
            application_name="encore",
            options=SESSION_OPTIONS,
            connect_timeout=10,
        )
    except psycopg.OperationalError as exc:
        raise WarehouseUnavailable(
            f"cannot connect to the warehouse at {redact(target)}: {_first_line(exc)}."
            f" {_UNAVAILABLE_HINT}"
        ) from exc
    conn.warehouse_dsn = redact(target)
    return conn


def with_database(dsn: str, database: str) -> str:
    """The same URL-style DSN pointing at another database (query options kept)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(dsn)
    if not parts.scheme:
        raise ValueError("with_database needs a URL-style DSN (postgresql://...)")
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


def redact(dsn: str) -> str:
    """A DSN with any password replaced, for logs and messages."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def discover_migrations(directory: Path) -> list[Migration]:
    """Numbered ``NNNN_name.sql`` files, in order; refuses gaps, duplicates and odd names."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        found.append(Migration(int(match.group(1)), match.group(2), path, digest))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in {directory}")
    expected = list(range(1, len(found) + 1))
    if versions != expected:
        raise MigrationError(f"migrations in {directory} must be numbered 1..n without gaps")
    return found


_MIGRATIONS_TABLE = """
CREATE SCHEMA IF NOT EXISTS ml;
CREATE TABLE IF NOT EXISTS ml.schema_migrations (
    version     integer PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL
);
COMMENT ON TABLE ml.schema_migrations IS
    'Warehouse migrations applied by encore migrate: one row per sql/migrations file.';
COMMENT ON COLUMN ml.schema_migrations.version IS 'Number of the migration file (NNNN).';
COMMENT ON COLUMN ml.schema_migrations.name IS 'Name part of the migration file.';
COMMENT ON COLUMN ml.schema_migrations.checksum IS
    'sha256 of the file when applied; an edited applied migration is refused.';
COMMENT ON COLUMN ml.schema_migrations.applied_at IS 'When it was applied.';
COMMENT ON COLUMN ml.schema_migrations.duration_ms IS 'How long it took.';
CREATE TABLE IF NOT EXISTS ml.view_definitions (
    name       text PRIMARY KEY,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ml.view_definitions IS
    'Analyst view files (sql/views/*.sql) as last applied: re-applied when a file changes.';
COMMENT ON COLUMN ml.view_definitions.name IS 'View file name.';
COMMENT ON COLUMN ml.view_definitions.checksum IS 'sha256 of the file when applied.';
COMMENT ON COLUMN ml.view_definitions.applied_at IS 'When it was applied.';
"""


def migrate(conn: psycopg.Connection, directory: Path | None = None) -> list[Migration]:
    """Apply the migrations not yet recorded in ``ml.schema_migrations``; safe to run twice.

    Each migration runs in its own transaction; an advisory lock serialises concurrent
    callers. Returns the migrations applied now.
    """
    directory = directory or get_settings().migrations_dir
    migrations = discover_migrations(directory)
    applied_now: list[Migration] = []
    with _advisory_lock(conn, "encore.migrate"):
        with conn.transaction():
            conn.execute(_MIGRATIONS_TABLE)
        recorded = {
            row[0]: row[1]
            for row in conn.execute("SELECT version, checksum FROM ml.schema_migrations")
        }
        for mig in migrations:
            if mig.version in recorded:
                if recorded[mig.version] != mig.checksum:
                    raise MigrationError(
                        f"migration {mig.path.name} was edited after it was applied "
                        "(checksum differs); add a new migration instead"
                    )
                continue
            started = time.perf_counter()
            try:
                with conn.transaction():
                    conn.execute(mig.text)
                    conn.execute(
                        "INSERT INTO ml.schema_migrations (version, name, checksum, duration_ms)"
                        " VALUES (%s, %s, %s, %s)",
                        (
                            mig.version,
                            mig.name,
                            mig.checksum,
                            int((time.perf_counter() - started) * 1000),
                        ),
                    )
            except psycopg.Error as exc:
                raise MigrationError(f"migration {mig.path.name} failed: {exc}") from exc
            log.info("applied migration %s", mig.path.name)
            applied_now.append(mig)
        _apply_views(conn, directory.parent / "views")
    return applied_now


def _apply_views(conn: psycopg.Connection, directory: Path) -> None:
    """(Re)create the analyst views of every ``sql/views`` file that changed, atomically."""
    recorded = dict(conn.execute("SELECT name, checksum FROM ml.view_definitions").fetchall())
    for path in sorted(directory.glob("*.sql")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if recorded.get(path.name) == digest:
            continue
        try:
            with conn.transaction():
                conn.execute(path.read_text(encoding="utf-8"))
                conn.execute(
                    "INSERT INTO ml.view_definitions (name, checksum) VALUES (%s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum,"
                    " applied_at = now()",
                    (path.name, digest),
                )
        except psycopg.Error as exc:
            raise MigrationError(f"view file {path.name} failed: {exc}") from exc
        log.info("applied views %s", path.name)


def ensure_migrated(dsn: str | None = None) -> str:
    """Connect, apply pending migrations, and return the resolved DSN."""
    target = resolve_dsn(dsn=dsn)
    with connect(target, autocommit=True) as conn:
        migrate(conn)
    return target


@contextlib.contextmanager
def _advisory_lock(conn: psycopg.Connection, name: str) -> Iterator[None]:
    key = lock_key(name)
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def session_lock(conn: psycopg.Connection, name: str) -> Iterator[None]:
    """Hold a session-level advisory lock for the duration of the block."""
    with _advisory_lock(conn, name):
        yield


# --------------------------------------------------------------------------- bulk load


#: Arrow types whose PostgreSQL binary COPY encoding matches the column types Encore uses.
_BINARY_SAFE = ("string", "int16", "int32", "int64", "bool", "date32[day]", "timestamp[us, tz=UTC]")


def binary_copy_safe(schema) -> bool:
    """Whether every column of an Arrow schema can go through binary COPY unchanged.

    Binary COPY needs the wire type to equal the column type, so tables with ``numeric``,
    ``jsonb`` or array columns (fed from other Arrow types) go through CSV instead.
    """
    return all(str(field.type) in _BINARY_SAFE for field in schema)


class CopyPipe:
    """Runs COPYs (any jobs) on a worker thread while the caller reads and encodes the next
    batch: ingestion's loads, materialization's stages.

    pyarrow and psycopg release the GIL, so the two overlap on two cores. Jobs run in
    submission order; the caller must not use the jobs' connection until :meth:`close`.
    The bounded queue holds at most ``depth`` batches. A worker failure is raised at the
    next submit or at close.
    """

    def __init__(self, depth: int = 2):
        import queue
        import threading

        self.jobs: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="encore-copy", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if self.error is not None:
                continue  # drain after a failure
            try:
                job()
            except BaseException as exc:  # re-raised in the caller's thread
                self.error = exc

    def submit(self, job) -> None:
        if self.error is not None:
            raise self.error
        self.jobs.put(job)

    def close(self) -> None:
        """Wait for every job; raise the first failure."""
        self.jobs.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def stream_bytea(
    conn: psycopg.Connection, query: sql.Composable, params: Sequence = (), *, ahead: int = 2
) -> Iterator[bytes]:
    """Yield the one ``bytea`` column of ``query``'s rows in turn, fetched on a worker thread
    up to ``ahead`` rows before the caller asks.

    For large values worked on one after another (ingestion's key runs): the server's reads
    and the transfer overlap the caller's work (psycopg and numpy release the GIL). Rows
    come through a server-side cursor, so at most ``ahead`` + 2 values are in memory. The
    caller must not use ``conn`` until the iterator is exhausted or closed.
    """
    import queue
    import threading

    rows: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    finished = object()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                rows.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            with conn.transaction(), conn.cursor(name="encore_stream", binary=True) as cur:
                cur.itersize = 1
                cur.execute(query, params)
                for (value,) in cur:
                    if not hand_over(value):
                        return
            hand_over(finished)
        except BaseException as exc:  # re-raised in the caller's thread
            hand_over(exc)

    worker = threading.Thread(target=fetch, name="encore-stream", daemon=True)
    worker.start()
    try:
        while (item := rows.get()) is not finished:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def copy_arrow(
    conn: psycopg.Connection,
    table: str,
    data,  # pyarrow.Table
    columns: Sequence[str] | None = None,
    *,
    binary: bool = False,
    freeze: bool = False,
) -> int:
    """COPY an Arrow table into ``table`` (schema-qualified); returns the rows the server
    reports copied.

    ``binary=True`` encodes PostgreSQL's binary COPY format with pgpq (Rust): the server
    parses it about twice as fast as CSV. Otherwise pyarrow writes CSV in C++. Either way
    the Python cost per row is nil and memory is bounded by the batch the caller passes.
    ``freeze=True`` writes the rows already frozen and their pages all-visible (``COPY
    FREEZE``): no later scan sets hint bits and VACUUM has nothing to do. The table must
    have been created or truncated in the caller's open transaction.
    """
    if data.num_rows == 0:
        return 0
    columns = list(columns or data.column_names)
    data = data.select(columns)
    buf = io.BytesIO()
    if binary:
        import pgpq

        encoder = pgpq.ArrowToPostgresBinaryEncoder(data.schema)
        buf.write(encoder.write_header())
        for batch in data.to_batches():
            buf.write(encoder.write_batch(batch))
        buf.write(encoder.finish())
        fmt = sql.SQL("binary")
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(
            _csv_friendly(data),
            buf,
            write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed"),
        )
        fmt = sql.SQL("csv")
    payload = buf.getbuffer()
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {}{})").format(
        qualified(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        fmt,
        sql.SQL(", FREEZE") if freeze else sql.SQL(""),
    )
    with conn.cursor() as cur:
        with cur.copy(stmt) as copy:
            for start in range(0, len(payload), _COPY_BLOCK_BYTES):
                copy.write(payload[start : start + _COPY_BLOCK_BYTES])
        copied = cur.rowcount
    del payload
    return copied


#: Arrow types of the PostgreSQL types read back by :func:`read_arrow` (by type OID).
_ARROW_OF_OID = {
    16: "bool",
    20: "int64",
    21: "int16",
    23: "int32",
    700: "float32",
    701: "float64",
    1700: "float64",
    25: "string",
    1043: "string",
    1082: "date32",
}


def read_arrow(conn: psycopg.Connection, query: sql.Composable, params: Sequence = ()):
    """Run ``query`` through ``COPY ... TO STDOUT`` (CSV) and parse it with Arrow in C++.

    Column types come from the query's result description, not from inference, so the same
    column has the same type in every chunk a caller reads. Returns a ``pyarrow.Table``.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    description = _describe(conn, query, params)
    types = {}
    for column in description:
        name = _ARROW_OF_OID.get(column.type_code)
        if name == "date32":
            types[column.name] = pa.date32()
        elif column.type_code == 1184:
            types[column.name] = pa.timestamp("us", tz="UTC")
        elif name is not None:
            types[column.name] = pa.type_for_alias(name)
    buffer = io.BytesIO()
    copy_sql = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(query)
    with conn.cursor() as cur, cur.copy(copy_sql, params or None) as copy:
        for chunk in copy:
            buffer.write(chunk)
    buffer.seek(0)
    return pacsv.read_csv(
        buffer,
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            strings_can_be_null=True,
            true_values=["t"],
            false_values=["f"],
        ),
    )


_PGCOPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def _describe(
    conn: psycopg.Connection, query: sql.Composable, params: Sequence | dict = ()
) -> list[psycopg.Column]:
    """``query``'s result columns (names and type OIDs), from running it with ``LIMIT 0``."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM ({}) q LIMIT 0").format(query), params or None)
        return list(cur.description)


def _binary_copy_out(
    conn: psycopg.Connection, query: sql.Composable, params: Sequence | dict, caller: str
) -> tuple[memoryview, int]:
    """``query``'s binary COPY stream in memory, and the offset of its first row."""
    buffer = io.BytesIO()
    copy_sql = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query)
    with conn.cursor() as cur, cur.copy(copy_sql, params or None) as copy:
        for chunk in copy:
            buffer.write(chunk)
    raw = buffer.getbuffer()
    if bytes(raw[:11]) != _PGCOPY_SIGNATURE:
        raise ValueError(f"{caller}: not a binary COPY stream")
    return raw, 19 + int.from_bytes(raw[15:19], "big")


def read_int8_set(
    conn: psycopg.Connection, query: sql.Composable, params: Sequence = ()
) -> np.ndarray:
    """The values of ``query``'s one ``int8`` column, in no particular order (NULLs are
    left out).

    The server packs them into one ``bytea`` (8 big-endian bytes each), decoded with one
    numpy ``frombuffer``. A ``COPY ... TO STDOUT`` sends a message per row, which psycopg
    hands over one by one: 0.45 s for 300,000 ids, against 0.06 s here. The bytea caps the
    set at 134 million values.
    """
    import numpy as np

    description = _describe(conn, query, params)
    if len(description) != 1 or description[0].type_code != 20:
        raise TypeError("read_int8_set: the query must return one int8 column")
    column = sql.Identifier(description[0].name)
    with conn.cursor(binary=True) as cur:
        cur.execute(
            sql.SQL(
                "SELECT coalesce(string_agg(int8send(q.{}), ''::bytea), ''::bytea) FROM ({}) q"
            ).format(column, query),
            params or None,
        )
        (packed,) = cur.fetchone()
    return np.frombuffer(packed, dtype=">i8").astype(np.int64)


def read_numbers(
    conn: psycopg.Connection,
    query: sql.Composable,
    params: Sequence = (),
    *,
    integers: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Run ``query``, whose columns are all ``float8`` or ``int8`` and never NULL, through a
    binary ``COPY ... TO STDOUT`` and decode it with one numpy ``frombuffer``.

    Every row is then the same 2 + 12 x columns bytes, so nothing is parsed row by row, and
    the server sends binary doubles instead of formatting them as text (the larger cost of
    a CSV read of a wide float table). psycopg still hands the stream over one message per
    row (about 1 us each); for a set of int8 values, :func:`read_int8_set` avoids that.
    Columns named in ``integers`` are ``int8``; the rest ``float8``. The caller makes NULLs
    explicit (e.g. ``COALESCE(x::float8, 'NaN')``).
    Returns column name -> array, in the query's column order.
    """
    import numpy as np

    description = _describe(conn, query, params)
    names = [c.name for c in description]
    kinds = {c.name: c.type_code for c in description}
    wanted = {n: (20 if n in integers else 701) for n in names}
    wrong = [n for n in names if kinds[n] != wanted[n]]
    if wrong:
        raise TypeError(f"read_numbers: columns {wrong} are not the float8/int8 they must be")
    raw, start = _binary_copy_out(conn, query, params, "read_numbers")
    fields = [("count", ">i2")]
    for i, name in enumerate(names):
        fields += [(f"len{i}", ">i4"), (name, ">i8" if name in integers else ">f8")]
    row = np.dtype(fields)
    body = len(raw) - start - 2  # the stream ends with a 2-byte -1
    if body % row.itemsize:
        raise ValueError("read_numbers: a value is NULL or not 8 bytes wide (make NULLs explicit)")
    data = np.frombuffer(raw, dtype=row, count=body // row.itemsize, offset=start)
    lengths_ok = (data["count"] == len(names)).all() and all(
        (data[f"len{i}"] == 8).all() for i in range(len(names))
    )
    if not lengths_ok:
        raise ValueError("read_numbers: a value is NULL or not 8 bytes wide (make NULLs explicit)")
    out = {name: data[name].astype(np.int64 if name in integers else np.float64) for name in names}
    del data, raw
    return out


_INT_ARRAY_ELEMENTS = {1007: ">i4", 1016: ">i8"}  # int4[], int8[]
_BYTEA = 17
_INT_ELEMENT_OIDS = {23: ">i4", 20: ">i8"}  # int4, int8


def read_int_arrays(
    conn: psycopg.Connection, query: sql.Composable, params: Sequence | dict = ()
) -> dict[str, np.ndarray]:
    """Run ``query``, which returns one row of one-dimensional ``int4[]``/``int8[]`` columns
    without NULL elements (typically ``array_agg`` of a set), and decode each array with one
    numpy ``frombuffer``; a NULL column (an aggregate of no rows) is an empty array.

    A ``bytea`` column comes back as its bytes (a ``uint8`` array; NULL is empty): typically
    ``string_agg(array_send(a), '')`` of many rows' arrays, for :func:`decode_array_sends`.

    A result of millions of narrow rows costs about 1.5 µs of Python per row in a COPY
    (each row is a message); the same values as a few arrays cost one message each.
    Returns column name -> int64 array (uint8 for ``bytea``), in the query's column order.
    """
    import numpy as np

    description = _describe(conn, query, params)
    names = [c.name for c in description]
    wrong = [
        c.name
        for c in description
        if c.type_code not in _INT_ARRAY_ELEMENTS and c.type_code != _BYTEA
    ]
    elements = [_INT_ARRAY_ELEMENTS.get(c.type_code) for c in description]
    if wrong:
        raise TypeError(f"read_int_arrays: columns {wrong} are not int4[], int8[] or bytea")
    raw, pos = _binary_copy_out(conn, query, params, "read_int_arrays")

    def take(n: int) -> int:
        nonlocal pos
        value = int.from_bytes(raw[pos : pos + n], "big", signed=True)
        pos += n
        return value

    if take(2) != len(names):
        raise ValueError("read_int_arrays: the query must return exactly one row")
    out: dict[str, np.ndarray] = {}
    for name, element in zip(names, elements, strict=True):
        size = take(4)
        if size == -1:  # NULL
            out[name] = np.empty(0, dtype=np.int64 if element else np.uint8)
            continue
        end = pos + size
        if element is None:  # bytea
            out[name] = np.frombuffer(raw, dtype=np.uint8, count=size, offset=pos).copy()
            pos = end
            continue
        ndim, has_nulls, _oid = take(4), take(4), take(4)
        if ndim == 0:
            out[name] = np.empty(0, dtype=np.int64)
        elif ndim != 1 or has_nulls:
            raise ValueError(f"read_int_arrays: {name} must be one-dimensional without NULLs")
        else:
            count, _lower = take(4), take(4)
            row = np.dtype([("len", ">i4"), ("value", element)])
            data = np.frombuffer(raw, dtype=row, count=count, offset=pos)
            if (data["len"] != np.dtype(element).itemsize).any():
                raise ValueError(f"read_int_arrays: unexpected element widths in {name}")
            out[name] = data["value"].astype(np.int64)
            del data
        pos = end
    if take(2) != -1:
        raise ValueError("read_int_arrays: the query must return exactly one row")
    return out


def _int32_at(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Big-endian int32 values of ``data`` (uint8) at byte ``offsets`` (any alignment)."""
    import numpy as np

    value = data[offsets].astype(np.uint32) << 24
    value |= data[offsets + 1].astype(np.uint32) << 16
    value |= data[offsets + 2].astype(np.uint32) << 8
    value |= data[offsets + 3]
    return value.view(np.int32)


def decode_array_sends(data: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The elements of one-dimensional ``int4[]``/``int8[]`` arrays without NULLs, given
    their binary forms one after another (``string_agg(array_send(a), '')`` in ``data``,
    uint8) and each array's length (``cardinality(a)`` in ``counts``, in the same order).

    Decoded in numpy without a per-array step: an array of n elements is a 20-byte header
    (12 when empty) and n (length, value) pairs. Every header is checked (one dimension,
    no NULLs, the element type, the announced length), so counts that do not follow the
    bytes are refused rather than misread. Returns every element, in order, as int64.
    """
    import numpy as np

    counts = np.asarray(counts, dtype=np.int64)
    if len(data) == 0 and not counts.any():
        return np.empty(0, dtype=np.int64)
    if len(data) < 12 or not len(counts):
        raise ValueError("decode_array_sends: the bytes and the array lengths do not agree")
    oid = int(_int32_at(data, np.array([8]))[0])  # the first array's element type
    element = _INT_ELEMENT_OIDS.get(oid)
    if element is None:
        raise ValueError("decode_array_sends: the arrays are not int4[] or int8[]")
    pair = 4 + np.dtype(element).itemsize
    sizes = np.where(counts > 0, 20 + pair * counts, 12)
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    if int(starts[-1] + sizes[-1]) != len(data):
        raise ValueError(
            f"decode_array_sends: {len(data)} bytes for arrays announcing"
            f" {int(sizes.sum())} ({int(counts.sum())} elements)"
        )
    filled = counts > 0
    ndim = _int32_at(data, starts)
    headers_ok = (
        (ndim == filled.astype(np.int32)).all()
        and (_int32_at(data, starts + 4) == 0).all()
        and (_int32_at(data, starts + 8) == oid).all()
        and (_int32_at(data, starts[filled] + 12) == counts[filled]).all()
    )
    if not headers_ok:
        raise ValueError(
            "decode_array_sends: an array is not one-dimensional, holds NULLs, mixes element"
            " types or does not have the announced length"
        )
    n = counts[filled]
    total = int(n.sum())
    # byte offset of each value: its array's first pair, then one pair per element
    before = np.zeros(len(n), dtype=np.int64)
    np.cumsum(n[:-1], out=before[1:])
    first_value = starts[filled] + 20 + 4 - pair * before
    offsets = np.repeat(first_value, n) + pair * np.arange(total, dtype=np.int64)
    if element == ">i4":
        return _int32_at(data, offsets).astype(np.int64)
    high = _int32_at(data, offsets).astype(np.int64) << 32
    return high | _int32_at(data, offsets + 4).view(np.uint32).astype(np.int64)


def _csv_friendly(data):
    """Render zone-aware timestamps as UTC text ourselves.

    Arrow's CSV writer formats zone-aware timestamps about 25x slower than a cast of the
    same values to naive text; the ``+00`` suffix keeps them unambiguous for PostgreSQL.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, field in enumerate(data.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            naive = pc.cast(pc.cast(data.column(i), pa.timestamp(field.type.unit)), pa.string())
            text = pc.binary_join_element_wise(naive, pa.scalar("+00"), "")
            data = data.set_column(i, field.name, text)
        elif pa.types.is_list(field.type) and pa.types.is_string(field.type.value_type):
            data = data.set_column(i, field.name, _array_literals(data.column(i)))
    return data


def _array_literals(column):
    """list<string> as PostgreSQL array literals (``{"a","b"}``) for a ``text[]`` column."""
    import pyarrow as pa

    def literal(items: list[str | None] | None) -> str | None:
        if items is None:
            return None
        quoted = (
            "NULL" if x is None else '"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'
            for x in items
        )
        return "{" + ",".join(quoted) + "}"

    return pa.array([literal(v) for v in column.to_pylist()], pa.string())


def qualified(name: str) -> sql.Composed:
    """``schema.table`` as a quoted identifier."""
    parts = name.split(".")
    if len(parts) != 2:
        raise ValueError(f"expected schema.table, got {name!r}")
    return sql.SQL(".").join(map(sql.Identifier, parts))


# --------------------------------------------------------------------------- partitions


def day_bounds(day: date) -> tuple[str, str]:
    """The UTC bounds of a day as timestamptz literals."""
    nxt = day + timedelta(days=1)
    return f"{day.isoformat()} 00:00:00+00", f"{nxt.isoformat()} 00:00:00+00"


def partition_name(parent: str, day: date) -> str:
    """``raw.listening_events`` + 2026-11-05 -> ``raw.listening_events_20261105``."""
    return f"{parent}_{day:%Y%m%d}"


def create_day_stage(
    conn: psycopg.Connection, parent: str, stage: str, time_column: str, day: date
) -> None:
    """Create an empty table shaped like ``parent``, constrained to one day, to load into.

    The CHECK constraint lets ``ATTACH PARTITION`` skip its validation scan.
    """
    low, high = day_bounds(day)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(stage)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {stage} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
            " INCLUDING GENERATED,"
            " CONSTRAINT {check} CHECK ({col} >= {low} AND {col} < {high}))"
        ).format(
            stage=qualified(stage),
            parent=qualified(parent),
            check=sql.Identifier(f"{stage.split('.')[1]}_in_day"),
            col=sql.Identifier(time_column),
            low=sql.Literal(low),
            high=sql.Literal(high),
        )
    )


def swap_day_partition(conn: psycopg.Connection, parent: str, stage: str, day: date) -> None:
    """Make ``stage`` the ``day`` partition of ``parent``, dropping the old one if any.

    Must run inside the caller's transaction: readers see the old day until commit and
    the new day after it, never a mix.
    """
    low, high = day_bounds(day)
    target = partition_name(parent, day)
    schema, target_name = target.split(".")
    exists = conn.execute(
        "SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE i.inhparent = %s::regclass AND n.nspname = %s AND c.relname = %s",
        (parent, schema, target_name),
    ).fetchone()
    if exists:
        conn.execute(
            sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                qualified(parent), qualified(target)
            )
        )
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(target)))
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(qualified(stage), sql.Identifier(target_name))
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            qualified(parent), qualified(target), sql.Literal(low), sql.Literal(high)
        )
    )
    conn.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(
            qualified(target), sql.Literal(f"UTC day {day.isoformat()} of {parent}.")
        )
    )


# --------------------------------------------------------------------------- inspection


def table_checksum(
    conn: psycopg.Connection, table: str, exclude: Sequence[str] = ()
) -> tuple[int, str]:
    """Row count and an order-independent checksum of a table's contents.

    Used by tests and the reliability suite to show a re-run leaves the same state.
    """
    cols = [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
        if r[0] not in exclude
    ]
    row_expr = sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(map(sql.Identifier, cols)))
    query = sql.SQL("SELECT {} FROM {}").format(row_expr, qualified(table))
    count = 0
    acc = 0
    with conn.cursor() as cur:
        cur.execute(query)
        for (digest,) in cur:
            count += 1
            acc = (acc + int(digest, 16)) % (1 << 128)
    return count, f"{acc:032x}-{zlib.crc32(str(count).encode()):08x}"


# --------------------------------------------------------------------------- sqlalchemy


def sqlalchemy_url(dsn: str, driver: str = "psycopg") -> str:
    """The SQLAlchemy URL (``postgresql+<driver>://``) of a libpq DSN or URL.

    For tools that connect through SQLAlchemy (Great Expectations). Socket-only DSNs such as
    the embedded server's (``postgresql://postgres:@/encore?host=/path``) keep the socket
    directory as a ``host`` query parameter, which both psycopg drivers pass to libpq. The
    session runs in UTC like :func:`connect`'s.
    """
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    user = params.pop("user", None)
    password = params.pop("password", None)
    database = params.pop("dbname", None)
    host = params.pop("host", None)
    port = params.pop("port", None)
    if host and (host.startswith("/") or "," in host):
        params["host"] = host  # a socket directory or a host list: only libpq understands it
        if port:
            params["port"] = port
        host, port = None, None
    params.setdefault("options", SESSION_OPTIONS)
    url = URL.create(
        f"postgresql+{driver}",
        username=user,
        password=password,
        host=host,
        port=int(port) if port else None,
        database=database,
        query=params,
    )
    return url.render_as_string(hide_password=False)
