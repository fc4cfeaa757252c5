"""The journal file a study lives in by default: torn writes, corrupt records, a lock a dead worker left.

Optuna's journal is one JSON record per line, appended under a lock file (a symbolic link).
What goes wrong with it in practice, and what happens here:

* **A torn last record** (a process killed mid-append, a full disk): no final newline, or a last
  line that is not JSON. Every command that opens the journal checks it under the lock; a torn
  tail is cut off with a one-line warning before anything is appended (writers), and readers
  are warned that the last record is incomplete. Nothing complete is lost.
* **A corrupt record in the middle** (an old fragment something else appended onto, a disk
  error): Optuna would stop with a raw ``JSONDecodeError``. Here :class:`JournalCorrupt` names
  the line and the way out, ``auxsearch repair RUN`` (:func:`repair`: every readable record kept,
  the original saved beside it).
* **A lock a killed worker held** (:class:`LockWatch`): released after ``LOCK_STALE`` seconds
  instead of Optuna's 30.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auxsearch.errors import AuxsearchError

LOCK_STALE = 10.0  # a journal lock left by a killed worker is released after this long (Optuna: 30 s)


class JournalCorrupt(AuxsearchError):
    """A record in the middle of a journal cannot be read."""

    def __init__(self, path: Path, line: int, why: str) -> None:
        self.path, self.line = Path(path), line
        run = self.path.parent
        super().__init__(f"{self.path} line {line} is corrupt ({why}); every record after it is unreadable to "
                         f"Optuna. `auxsearch repair {run}` keeps every readable record (the original is saved "
                         "beside it) and the run resumes from there")


@dataclass(frozen=True)
class Health:
    """What :func:`inspect` found: the bytes of a torn tail (0: none) and the first corrupt line (0: none)."""

    torn_bytes: int = 0
    corrupt_line: int = 0
    corrupt_why: str = ""


def inspect(path: Path) -> Health:
    """Read the journal once and say whether its tail is torn and whether a middle record is corrupt."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return Health()
    lines = data.split(b"\n")  # the last item is what follows the last newline (b"" when whole)
    tail = len(lines[-1])
    body = lines[:-1]
    if tail == 0 and body and not _parses(body[-1]):  # a last line that ends in a newline but is not JSON
        tail = len(body[-1]) + 1
        body = body[:-1]
    for i, line in enumerate(body, 1):
        if not _parses(line):
            return Health(tail, i, "not a JSON record" if line.strip() else "an empty line")
    return Health(tail, 0)


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def check(path: Path, lock, *, cut: bool, warn: Callable[[str], None]) -> None:
    """Under ``lock``: raise :class:`JournalCorrupt` for a corrupt middle record; a torn tail is cut
    (``cut``) or reported (readers), in one line through ``warn``."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return
    lock.acquire()
    try:
        health = inspect(path)
        if health.corrupt_line:
            raise JournalCorrupt(path, health.corrupt_line, health.corrupt_why)
        if health.torn_bytes and cut:
            with open(path, "r+b") as f:
                f.truncate(path.stat().st_size - health.torn_bytes)
            warn(f"{path}: dropped a torn last record ({health.torn_bytes} bytes, a write cut by a crash); "
                 "every complete record is kept")
        elif health.torn_bytes:
            warn(f"{path}: the last record is incomplete ({health.torn_bytes} bytes, a write cut by a crash) "
                 "and is not shown; the next command that writes drops it")
    finally:
        lock.release()


def repair(path: Path) -> tuple[Path, int, int]:
    """Keep every readable record of journal ``path``; returns (backup path, records kept, lines dropped)."""
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    kept = [line for line in lines if line.strip() and _parses(line)]
    dropped = sum(1 for line in lines if line.strip()) - len(kept)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    shutil.copy2(path, backup)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(b"".join(line + b"\n" for line in kept))
    os.replace(tmp, path)
    return backup, len(kept), dropped


class LockWatch:
    """A journal lock that outlives a killed worker is released after ``stale`` seconds.

    Optuna's lock is a symbolic link created per append and removed after it (milliseconds);
    a worker killed in between leaves it, and every other worker then waits Optuna's grace
    period (30 s). After a death the supervisor notes the lock it sees; the same link still
    there ``stale`` seconds later is the dead worker's, and is removed as Optuna does.
    """

    def __init__(self, journal: Path | None, stale: float = LOCK_STALE) -> None:
        self.lock = Path(f"{journal}.lock") if journal is not None else None
        self.stale, self.seen, self.released = stale, None, 0

    def _identity(self):
        try:
            st = os.lstat(self.lock)
        except (OSError, TypeError):
            return None
        return st.st_ino, st.st_ctime_ns

    def after_death(self) -> None:
        if self.lock is not None and self.seen is None:
            ident = self._identity()
            self.seen = (ident, time.monotonic()) if ident else None

    def check(self) -> bool:
        if self.seen is None:
            return False
        ident, since = self.seen
        if self._identity() != ident:
            self.seen = None
            return False
        if time.monotonic() - since < self.stale:
            return False
        self.seen = None
        moved = self.lock.with_name(f"{self.lock.name}{uuid.uuid4()}.rename")
        try:
            os.rename(self.lock, moved)
            os.unlink(moved)
        except OSError:
            return False
        self.released += 1
        return True
