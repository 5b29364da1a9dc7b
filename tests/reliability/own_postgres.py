"""A PostgreSQL server of a test's own, to stop, crash and start again at will.

The server at 127.0.0.1:5432 is shared with other test runs and must never be stopped, so
the restart tests run their own: ``initdb`` in a temporary folder, listening on a free
local port. Binaries: the newest of the embedded ``pgserver`` package's (the project's
embedded default) and the system's (``/usr/lib/postgresql/*/bin``). As root the server runs
as the ``pgserver`` system user, the way the embedded default runs it.

:func:`copy_database` loads a database of another server into it with ``pg_dump`` and
``pg_restore`` (schema, rows, migration records; not roles or grants).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

SERVER_USER = "pgserver"
TOOLS = ("initdb", "pg_ctl", "pg_dump", "pg_restore", "postgres")


def _major(bin_dir: Path) -> int:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise RuntimeError(f"cannot read the PostgreSQL version of {bin_dir}: {out!r}")
    return int(match.group(1))


def binary_sets() -> list[tuple[int, Path]]:
    """(major version, bin directory) of every complete set of PostgreSQL binaries."""
    candidates: list[Path] = []
    with contextlib.suppress(ImportError):
        from pgserver import _commands

        candidates.append(Path(_commands.POSTGRES_BIN_PATH))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    found = [(_major(d), d) for d in candidates if all((d / tool).is_file() for tool in TOOLS)]
    if not found:
        raise RuntimeError("no PostgreSQL binaries (pgserver or /usr/lib/postgresql/*/bin)")
    return sorted(found)


def find_binaries() -> tuple[Path, int]:
    """The newest complete set of PostgreSQL binaries, and its major version."""
    version, directory = binary_sets()[-1]
    return directory, version


def pg_dump_for(major: int) -> Path:
    """The ``pg_dump`` to dump a server of version ``major``: the same version if there is
    one (a newer pg_dump also dumps a distribution's private column options, which another
    build refuses), else the oldest newer one."""
    usable = [(v, d) for v, d in binary_sets() if v >= major]
    if not usable:
        raise RuntimeError(f"no pg_dump can dump PostgreSQL {major}")
    exact = [d for v, d in usable if v == major]
    return (exact[0] if exact else usable[0][1]) / "pg_dump"


#: The shared server's port: never the own server's, whatever the kernel hands out.
SHARED_PORT = 5432


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != SHARED_PORT:
            return port


def server_major(dsn: str) -> int:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return conn.info.server_version // 10000


@dataclass
class OwnPostgres:
    """A throwaway PostgreSQL server: ``root`` holds its data directory and log."""

    root: Path
    bin_dir: Path
    version: int
    port: int
    run_as: str | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as and shutil.which("runuser"):
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        elif self.run_as:
            cmd = ["su", self.run_as, "-s", "/bin/sh", "-c", shlex.join(cmd)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n"
                f"{self.log_tail()}"
            )
        return result

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "--auth=trust",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections (crash recovery included)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k ''"  # TCP only
            # only an OS crash needs fsync: a killed server still replays its WAL
            " -c fsync=off -c max_connections=40 -c shared_buffers=32MB"
        )
        started = time.perf_counter()
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip
        log.info("own PostgreSQL on port %d up in %.2f s", self.port, time.perf_counter() - started)

    def stop(self, mode: str = "immediate") -> None:
        """``pg_ctl stop -m mode``: ``immediate`` is a crash (no checkpoint, WAL replayed on
        start), ``fast`` a clean shutdown."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def create_database(self, name: str, template: str | None = None) -> str:
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(stmt)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def destroy(self) -> None:
        """Stop the server (by pg_ctl, else by its postmaster's PID) and remove its folder."""
        try:
            if self.running():
                try:
                    self.stop("immediate")
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    log.warning("pg_ctl stop failed (%s): killing the postmaster", exc)
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        pid = self.postmaster_pid()
        if pid is None:
            return
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            for _ in range(50):
                if not self.running():
                    return
                time.sleep(0.1)


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A running server of its own for the block; stopped and deleted afterwards."""
    bin_dir, version = find_binaries()
    # not under pytest's tmp_path: the server's user must be able to reach its folder
    root = Path(tempfile.mkdtemp(prefix="encore-own-pg-"))
    run_as = SERVER_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    if run_as:
        from pgserver.utils import ensure_user_exists

        ensure_user_exists(run_as)
        shutil.chown(root, user=run_as)
    server = OwnPostgres(root, bin_dir, version, free_port(), run_as)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


def copy_database(source_dsn: str, server: OwnPostgres, name: str) -> str:
    """Copy a database of another server into ``server`` as ``name``; returns its DSN."""
    source_major = server_major(source_dsn)
    if source_major > server.version:
        raise RuntimeError(
            f"the source server is PostgreSQL {source_major}, the own server's binaries"
            f" {server.version}: pg_dump cannot dump a newer server"
        )
    dump = server.root / f"{name}.dump"
    started = time.perf_counter()
    subprocess.run(
        [str(pg_dump_for(source_major)), "-Fc", "--no-owner", "--no-privileges", "-Z", "1",
         "-f", str(dump), source_dsn],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    target = server.create_database(name)
    result = subprocess.run(
        [str(server.bin_dir / "pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
         "-d", target, str(dump)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    dump.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"pg_restore into {name} failed: {result.stderr[-3000:]}")
    log.info("copied the database into %s in %.1f s", name, time.perf_counter() - started)
    return target
