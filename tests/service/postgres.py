"""A throwaway PostgreSQL server for tests: initdb in a temp dir, pg_ctl on 127.0.0.1 (free port).

PostgreSQL refuses to run as root, so as root the data directory belongs to the ``postgres``
user (Debian's package creates it) and the server tools run through ``runuser -u postgres``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .live import free_port

PASSWORD = "kiln-test-pw"


def pg_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with initdb (Debian's layout), or PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if
                   Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("initdb")
    return Path(exe).parent if exe else None


class PostgresServer:
    """``with PostgresServer() as pg: pg.database("x")`` -- a new empty database ``x`` and its
    SQLAlchemy URL (driver: psycopg 3)."""

    def __init__(self) -> None:
        self.bin = pg_bin_dir()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="kiln-pg-"))  # not under pytest's 0700 dirs
        self.data = self.root / "data"
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str, timeout: float = 120) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({out.returncode}):\n{out.stdout}{out.stderr}")

    def __enter__(self) -> "PostgresServer":
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        # C locale: Name sorts bytewise, as in SQLite; password auth over TCP
        self._run("initdb", "-D", str(self.data), "-U", "kiln", "--pwfile", str(pwfile),
                  "--auth=scram-sha-256", "--no-locale", "-E", "UTF8", "--no-sync")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")
        return self

    def database(self, name: str, icu_locale: str | None = None) -> str:
        """Create database ``name`` (empty; its collation from ``icu_locale`` when given, else
        C) and return its URL."""
        import psycopg

        deadline = time.time() + 30
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user="kiln",
                                     password=PASSWORD, dbname="postgres",
                                     autocommit=True) as con:
                    con.execute(f'CREATE DATABASE "{name}"' + (
                        f" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'"
                        if icu_locale else ""))
                return f"postgresql+psycopg://kiln:{PASSWORD}@127.0.0.1:{self.port}/{name}"
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __exit__(self, *exc) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
