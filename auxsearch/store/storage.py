"""Where a study lives: one parser for storage URLs, the Optuna storages they open, and the run's studies.

Two kinds of URL are accepted:

* ``journal:PATH`` -- an Optuna journal file (the default, no server; safe with several
  processes on one machine or a shared file system), opened with appends that are whole or
  absent (:class:`~auxsearch.store.optuna_adapter.GuardedJournalFileBackend`) and checked for
  torn and corrupt records first (:mod:`auxsearch.store.journal`);
* any SQLAlchemy URL (``postgresql://...``, ``mysql://...``) -- an RDB storage with
  heartbeats, so a dead worker's trial is failed and retried. ``sqlite:`` is one process
  at a time (:func:`refuse_sqlite`).

A run keeps three studies in one storage (:class:`RunStudies`): the **search** (``NAME``: only
the designs a sampler drew, so every sampler models searched designs alone), the
**references** (``NAME:reference``: the end-to-end reference and the designs a study enqueues
by name, trained under the same recipe) and the **confirmation** (``NAME:confirm``: one trial
per design and fresh seed).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from auxsearch.errors import ConfigError, StorageError
from auxsearch.store import journal
from auxsearch.store.heartbeat import GRACE, HEARTBEAT_INTERVAL, MAX_RETRY
from auxsearch.store.optuna_adapter import GuardedJournalFileBackend

JOURNAL = "journal:"
REFERENCE_SUFFIX = ":reference"
CONFIRM_SUFFIX = ":confirm"


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


def refuse_sqlite(url: str | None, workers: int) -> None:
    if url and url.startswith("sqlite") and workers > 1:
        raise ConfigError("--storage", f"SQLite cannot serve {workers} workers: it locks the whole file for "
                          "every write, so parallel workers fail with 'database is locked'. Use the default "
                          "journal file (no --storage), or a server: postgresql://... or mysql://...")


def _warn(line: str) -> None:
    print(f"auxsearch: warning: {line}", file=sys.stderr)


def open_storage(url: str, *, create: bool = True, writes: bool = True) -> Any:
    """The Optuna storage behind ``url``; ``create=False`` refuses a journal file that is missing.

    A journal is checked first (:func:`auxsearch.store.journal.check`): a corrupt record stops
    with one line; a torn last record is cut off when ``writes`` (else reported).
    """
    parsed = StorageURL(url)
    path = parsed.journal
    if path is not None:
        if not create and not path.is_file():
            raise ConfigError("", f"no study journal at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = GuardedJournalFileBackend(str(path), on_cut=lambda n: _warn(
            f"{path}: cut a torn record ({n} bytes) before appending"))
        journal.check(path, backend.lock, cut=writes, warn=_warn)
        return optuna.storages.JournalStorage(backend)
    if parsed.is_sqlite:
        return url
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=int(HEARTBEAT_INTERVAL), grace_period=int(GRACE),
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    except Exception as exc:  # a bad URL, an unreachable server, a missing driver
        raise StorageError(f"cannot open {url!r}: {exc}") from None


def _load(storage: Any, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


@dataclass
class RunStudies:
    """The three studies of one run, in one storage (see the module docstring)."""

    url: str
    storage: Any
    search: optuna.Study
    reference: optuna.Study | None
    confirm: optuna.Study | None

    @property
    def name(self) -> str:
        return self.search.study_name

    def references(self, create: bool = False) -> optuna.Study:
        """The reference study (created on first use)."""
        if self.reference is None:
            self.reference = optuna.create_study(storage=self.storage, study_name=self.name + REFERENCE_SUFFIX,
                                                 directions=self.search.directions, load_if_exists=True,
                                                 sampler=optuna.samplers.RandomSampler(seed=0))
        return self.reference

    def confirmation(self) -> optuna.Study:
        """The confirmation study (created on first use)."""
        if self.confirm is None:
            self.confirm = optuna.create_study(storage=self.storage, study_name=self.name + CONFIRM_SUFFIX,
                                               direction="maximize", load_if_exists=True)
        return self.confirm

    def all_trials(self, states=None) -> list:
        """The reference trials, then the search trials (what the front and the pruner compare)."""
        ref = self.reference.get_trials(deepcopy=False, states=states) if self.reference is not None else []
        return [*ref, *self.search.get_trials(deepcopy=False, states=states)]


def open_run(url: str, name: str, *, directions: list[str] | None = None, sampler=None,
             writes: bool = True) -> RunStudies:
    """The run's studies: created with ``directions`` and ``sampler`` (a search), or loaded (readers)."""
    storage = open_storage(url, create=directions is not None, writes=writes)
    if directions is None:
        search = _load(storage, name)
        if search is None:
            raise ConfigError("", f"no study named {name!r} in {url}")
    else:
        try:
            search = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                         sampler=sampler, load_if_exists=True)
        except Exception as exc:  # a server that went away between opening and creating
            raise StorageError(f"cannot open {url!r}: {exc}") from None
    return RunStudies(url, storage, search, _load(storage, name + REFERENCE_SUFFIX),
                      _load(storage, name + CONFIRM_SUFFIX))
