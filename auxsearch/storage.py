"""Where a study lives: one parser for storage URLs, and the Optuna storages they open.

Two kinds of URL are accepted:

* ``journal:PATH`` -- an Optuna journal file (the default, no server; safe with several
  processes on one machine or a shared file system);
* any SQLAlchemy URL (``postgresql://...``, ``mysql://...``) -- an RDB storage with
  heartbeats, so a dead worker's trial is failed and retried. ``sqlite:`` is one process
  at a time (see :func:`auxsearch.distributed.refuse_sqlite`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from .errors import ConfigError

JOURNAL = "journal:"


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL: a journal file path, or an RDB URL."""

    url: str

    @property
    def journal(self) -> Path | None:
        """The journal file, or None for an RDB URL."""
        return Path(self.url[len(JOURNAL):]) if self.url.startswith(JOURNAL) else None

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def relative_to(self, folder: Path) -> str:
        """The URL with a journal inside ``folder`` written relative to it (the folder can move)."""
        j = self.journal
        return f"{JOURNAL}{j.name}" if j is not None and j.parent == folder else self.url

    def resolved_in(self, folder: Path) -> str:
        """The URL with a relative journal path made absolute against ``folder``."""
        j = self.journal
        return f"{JOURNAL}{folder.resolve() / j}" if j is not None and not j.is_absolute() else self.url


def journal_url(path: Path) -> str:
    return f"{JOURNAL}{path}"


def open_storage(url: str, *, create: bool = True) -> Any:
    """The Optuna storage behind ``url``; ``create=False`` refuses a journal file that is missing."""
    parsed = StorageURL(url)
    path = parsed.journal
    if path is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        if not create and not path.is_file():
            raise ConfigError("", f"no study journal at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if parsed.is_sqlite:
        return url
    from .distributed import GRACE, HEARTBEAT_INTERVAL, MAX_RETRY

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=int(HEARTBEAT_INTERVAL), grace_period=int(GRACE),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    except Exception as exc:  # a bad URL, an unreachable server, a missing driver
        raise ConfigError("storage", f"cannot open {url!r}: {exc}") from None


def load_study(url: str, name: str) -> optuna.Study:
    """A stored study, for the commands that only read (show, plot, export, confirm)."""
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url, create=False))
    except KeyError:
        raise ConfigError("", f"no study named {name!r} in {url}") from None
