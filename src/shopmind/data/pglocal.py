"""A throwaway local PostgreSQL cluster (Debian's `postgresql` package: initdb + pg_ctl in a folder), for tests,
benchmarks and a docker-free development set-up. Never for production: see docs/scale.md for a managed server.

The cluster listens on 127.0.0.1 only, with a password (scram-sha-256) for its one superuser. As root, initdb
and the server run as the unprivileged `postgres` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here (install Debian's `postgresql` package)."""


def bin_dir() -> Path:
    """The folder with initdb and pg_ctl: $PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb): install Debian's postgresql package "
                              "(make install does, as root) or set PG_BIN")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """`with LocalCluster() as pg: pg.url` — a fresh cluster in a temporary folder, stopped and removed after."""

    def __init__(self, root: str | Path | None = None, port: int | None = None, user: str = "shopmind") -> None:
        self.bin = bin_dir()
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="shopmind-pg-"))
        self.data = self.root / "data"
        self.port = port or _free_port()
        self.user = user
        self.password = secrets.token_urlsafe(18)
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None
        self.started = False

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        if self._run_as:
            return ["runuser", "-u", self._run_as, "--", *args]
        return list(args)

    def start(self, timeout: float = 60.0) -> "LocalCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            for p in (self.root, pwfile):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        subprocess.run(self._cmd(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "scram-sha-256",
                                 "--pwfile", str(pwfile), "-E", "UTF8", "--no-sync"),
                       check=True, capture_output=True, env=env, timeout=timeout)
        pwfile.unlink()
        self.restart(timeout)
        return self

    def pid(self) -> int | None:
        """The postmaster's process id (for the kill tests), or None when it is not running."""
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """A crash: SIGKILL the postmaster and every server process it started (no shutdown, no checkpoint);
        `restart` then runs crash recovery from the WAL."""
        import signal

        pid = self.pid()
        if pid is None:
            return
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        for p in [pid, *map(int, children)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in [pid, *map(int, children)]):
            time.sleep(0.05)
        # Without an init that reaps it, the killed postmaster stays a zombie, which the next start would take
        # for a live server: every server process is dead, so its lock file goes.
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        for name in (f".s.PGSQL.{self.port}.lock", f".s.PGSQL.{self.port}"):
            (self.root / name).unlink(missing_ok=True)
        self.started = False

    def restart(self, timeout: float = 60.0) -> None:
        """Start the server again after a stop or a crash (crash recovery replays its WAL)."""
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                "-c max_connections=200 -c shared_buffers=128MB -c fsync=on -c synchronous_commit=on")
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        subprocess.run(self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                                 str(self.root / "server.log"), "-w", "-t", str(int(timeout)), "start"),
                       check=True, capture_output=True, env=env, timeout=timeout + 10)
        self.started = True

    def stop(self, mode: str = "fast") -> None:
        if self.started:
            subprocess.run(self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"),
                           capture_output=True, timeout=60)
            self.started = False

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def close(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_ready(url: str, timeout: float = 30.0) -> None:
    """Block until the server at `url` accepts a connection."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
