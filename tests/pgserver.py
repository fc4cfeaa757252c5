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
dependent tests are skipped.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

DBNAME = "auxsearch_test"


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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty database on a private PostgreSQL server (session-scoped)."""
    pytest.importorskip("psycopg2")  # SQLAlchemy 2.1's bare postgresql:// means psycopg 3
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, createdb) not found")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pass
        if owner is None or runuser is None:
            pytest.skip("running as root without a 'postgres' user (or runuser); initdb refuses root")
        prefix = [runuser, "-u", "postgres", "--"]

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True)

    root = tempfile.mkdtemp(prefix="auxsearch-pg-")  # short path: socket paths max ~107 chars
    os.chmod(root, 0o700)
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, log = os.path.join(root, "data"), os.path.join(root, "server.log")
    pg_ctl = os.path.join(bindir, "pg_ctl")
    try:
        try:
            run(os.path.join(bindir, "initdb"), "-D", data, "--auth=trust", "-U", "postgres",
                "-E", "UTF8", "--no-sync")
            for attempt in range(3):  # the free port may be taken again before the server binds it
                port = _free_port()
                opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root}"
                        " -c fsync=off")  # throwaway data: no need to hit the disk
                try:
                    run(pg_ctl, "-D", data, "-l", log, "-o", opts, "-w", "-t", "60", "start")
                    break
                except subprocess.CalledProcessError:
                    if attempt == 2:
                        raise
            createdb = os.path.join(bindir, "createdb")
            subprocess.run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DBNAME],
                           check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as e:
            server_log = ""
            if os.path.exists(log):
                with open(log) as f:
                    server_log = f.read()
            raise RuntimeError(f"{e.cmd} failed:\n{e.stdout}{e.stderr}\n{server_log}") from e
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{DBNAME}"
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):  # even if start "failed"
            subprocess.run([*prefix, pg_ctl, "-D", data, "-m", "fast", "-w", "stop"],
                           capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
