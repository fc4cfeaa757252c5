"""Where auxsearch leans on how Optuna works inside, in one place, each contract tested.

No private Optuna name is used here or anywhere else in auxsearch; what this module relies on
is behaviour that Optuna documents loosely or not at all, and ``tests/test_optuna_adapter.py``
pins each piece so that an Optuna release that changes it fails a test instead of a study:

* :func:`trial_id`: a trial's storage id from the study name and trial number, through the
  storage's public lookup methods (``get_study_id_from_name``,
  ``get_trial_id_from_study_id_trial_number``), for writes on behalf of a trial (heartbeats,
  reaping) with no ``Trial._trial_id``.
* :class:`GuardedJournalFileBackend`: Optuna's journal file backend with appends that are whole
  or absent. It keeps its own path and lock (the public ``acquire()`` / ``release()`` of
  Optuna's journal file locks), so it reads no private attribute of the class it extends; it relies on
  ``append_logs(logs)`` being the one method every write goes through and on the journal
  being one JSON object per line.
* :func:`retry_copy`: the frozen trial handed to ``RetryHeartbeatStaleTrialCallback`` (Optuna's
  own re-enqueueing of a dead worker's trial, with its parameters and the attributes given).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalFileSymlinkLock
from optuna.trial import FrozenTrial


def trial_id(storage: Any, study_name: str, number: int) -> int:
    """The storage id of trial ``number`` of study ``study_name``."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def retry_copy(study: optuna.Study, failed: FrozenTrial, keep_user: tuple[str, ...],
               drop_system: tuple[str, ...], max_retry: int) -> None:
    """Enqueue a copy of ``failed`` (already FAIL) with its parameters, the user attributes in
    ``keep_user`` and the system attributes not in ``drop_system`` (Optuna's retry callback)."""
    failed = copy.deepcopy(failed)
    failed.user_attrs = {k: v for k, v in failed.user_attrs.items() if k in keep_user}
    failed.system_attrs = {k: v for k, v in failed.system_attrs.items() if k not in drop_system}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, failed)


class GuardedJournalFileBackend(JournalFileBackend):
    """A journal file whose appends are all-or-nothing, from any number of processes.

    Optuna appends each batch of log lines with one buffered write; on a full disk the kernel
    can take part of a line before refusing the rest (ENOSPC), and the next append, from any
    process, would glue its line onto that fragment: a line no reader can parse, after which
    Optuna refuses the whole journal. Here an append that fails is cut back to the journal's
    length before it, under the journal's lock, and a fragment left by an older writer (a power
    cut, a kill mid-write) is cut off before the next append. ``on_cut(bytes)`` is told when a
    fragment was cut.
    """

    def __init__(self, file_path: str, lock_obj: JournalFileSymlinkLock | JournalFileOpenLock | None = None,
                 on_cut=None) -> None:
        self.path = str(file_path)
        self.lock = lock_obj or JournalFileSymlinkLock(self.path)
        self.on_cut = on_cut
        super().__init__(self.path, self.lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        self.lock.acquire()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size, cut = whole_length(fd)
                if cut and self.on_cut is not None:
                    self.on_cut(cut)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except BaseException:
                    try:
                        os.ftruncate(fd, size)
                    except OSError:  # a read-only file system took nothing to begin with
                        pass
                    raise
            finally:
                os.close(fd)
        finally:
            self.lock.release()


def whole_length(fd: int) -> tuple[int, int]:
    """``(length up to the last newline, bytes cut after it)``; a trailing fragment is truncated away."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size, 0
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    os.ftruncate(fd, end)
    return end, size - end
