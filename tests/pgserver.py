"""A throwaway PostgreSQL server for the test session.

Optuna's RDB storage behaves differently on PostgreSQL than on SQLite (row locking,
heartbeats, concurrent workers), so some tests want a real server. Rather than relying on
a system service, the ``postgres_url`` fixture runs ``initdb`` into a temporary directory,
starts a private server on a free loopback port, creates a database and tears it all down
at the end of the session.

``initdb`` and ``postgres`` refuse to run as root, so when the tests run as root (CI
containers) the server commands run as the ``postgres`` OS user via ``runuser`` on a data
directory that user owns. Clients connect over TCP with ``trust`` auth, so they need no
special user. The URL names the psycopg2 driver explicitly (SQLAlchemy 2.1 would
otherwise pick psycopg 3). Without psycopg2, the server binaries or a usable user, the
dependent tests are skipped, unless ``AUXSEARCH_REQUIRE_POSTGRES=1`` (CI sets it): then
they fail with the same reason, so a CI machine without PostgreSQL cannot go green.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DBNAME = "auxsearch_test"
REQUIRE = "AUXSEARCH_REQUIRE_POSTGRES"  # set to 1: a missing server fails the tests instead of skipping them


def unavailable(reason: str) -> None:
    """Skip the calling test for ``reason``, or fail it when PostgreSQL is required (CI)."""
    if os.environ.get(REQUIRE, "") not in ("", "0"):
        pytest.fail(f"PostgreSQL is required ({REQUIRE}={os.environ[REQUIRE]}) but unavailable: {reason}",
                    pytrace=False)
    pytest.skip(reason)  # the reason names what is missing (binaries, psycopg2, a usable user) and how to get it


def _bindir() -> str | None:
    """The directory holding initdb, pg_ctl, createdb: PATH, pg_config --bindir, Debian's layout."""
    initdb = shutil.which("initdb")  # may be a symlink (e.g. /usr/local/bin) to the real bindir
    candidates = [os.path.dirname(os.path.realpath(initdb))] if initdb else []
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            pass
    # Debian/Ubuntu keep the server binaries off PATH; prefer the newest major version.
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                         reverse=True)
    for d in candidates:
        if all(os.access(os.path.join(d, exe), os.X_OK) for exe in ("initdb", "pg_ctl", "createdb")):
            return d
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresUnavailable(RuntimeError):
    pass


class PgServer:
    """A throwaway PostgreSQL server on loopback: ``start`` (initdb, a free port, createdb) -> URL,
    ``restart`` (every connection closed), ``stop`` (and its folder removed). Raises
    :class:`PostgresUnavailable` when psycopg2, the binaries or a usable user are missing."""

    def __init__(self, dbname: str = DBNAME) -> None:
        self.dbname = dbname
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise PostgresUnavailable("psycopg2 is not installed (pip install -e '.[postgres]')") from None
        self.bindir = _bindir()
        if self.bindir is None:
            raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl, createdb) not found: on Debian "
                                      "apt-get install postgresql (they live in /usr/lib/postgresql/*/bin)")
        self.prefix: list[str] = []
        self.owner = None
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                self.owner = pwd.getpwnam("postgres")
            except KeyError:
                self.owner = None
            if self.owner is None or runuser is None:
                raise PostgresUnavailable("running as root without a 'postgres' user (or runuser): initdb refuses root")
            self.prefix = [runuser, "-u", "postgres", "--"]
        self.root = self.data = self.log = None
        self.port = 0

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.prefix, *cmd], check=True, capture_output=True, text=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def _opts(self) -> str:
        return (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                "-c fsync=off")

    def start(self) -> str:
        self.root = tempfile.mkdtemp(prefix="auxsearch-pg-")
        os.chmod(self.root, 0o700)
        if self.owner is not None:
            os.chown(self.root, self.owner.pw_uid, self.owner.pw_gid)
        self.data, self.log = os.path.join(self.root, "data"), os.path.join(self.root, "server.log")
        try:
            self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "--auth=trust", "-U", "postgres",
                      "-E", "UTF8", "--no-sync")
            for attempt in range(3):
                self.port = _free_port()
                try:
                    self._pg_ctl("start")
                    break
                except subprocess.CalledProcessError:
                    if attempt == 2:
                        raise
            subprocess.run([os.path.join(self.bindir, "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", "postgres", self.dbname], check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as e:
            log = Path(self.log).read_text() if os.path.exists(self.log) else ""
            self.stop()
            raise RuntimeError(f"{' '.join(map(str, e.cmd))} failed: {e.stderr.strip()} {log[-500:]}") from e
        return self.url

    def _pg_ctl(self, what: str) -> None:
        pg_ctl = os.path.join(self.bindir, "pg_ctl")
        if what == "start":
            self._run(pg_ctl, "-D", self.data, "-l", self.log, "-o", self._opts(), "-w", "-t", "60", "start")
        else:
            self._run(pg_ctl, "-D", self.data, "-m", "fast", "-w", "stop")

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server (closing every connection), stay down ``down_seconds``, start it on the same port."""
        self._pg_ctl("stop")
        time.sleep(down_seconds)
        self._pg_ctl("start")

    def stop(self) -> None:
        if self.data and os.path.exists(os.path.join(self.data, "postmaster.pid")):
            subprocess.run([*self.prefix, os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "fast",
                            "-w", "stop"], capture_output=True)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()



@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty database on a private PostgreSQL server (session-scoped)."""
    try:
        server = PgServer()
        url = server.start()
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    try:
        yield url
    finally:
        server.stop()
