"""Each piece of Optuna behaviour auxsearch relies on (auxsearch.store.optuna_adapter), pinned.

An Optuna release that changes one of them fails here, not in a user's study. CI runs this file
against the newest Optuna the dependency range allows and against the lowest (.ci/run).
"""

from __future__ import annotations

import errno
import json
import os

import optuna
import pytest

from auxsearch.store import optuna_adapter
from auxsearch.store.optuna_adapter import GuardedJournalFileBackend, retry_copy, trial_id


def journal(tmp_path, **kw):
    backend = GuardedJournalFileBackend(str(tmp_path / "j.journal"), **kw)
    return backend, optuna.storages.JournalStorage(backend)


@pytest.mark.parametrize("kind", ["journal", "memory"])
def test_trial_id_names_the_trial_a_storage_write_reaches(tmp_path, kind):
    storage = journal(tmp_path)[1] if kind == "journal" else optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s")
    optuna.create_study(storage=storage, study_name="other").ask()  # ids are not numbers in another study
    trials = [study.ask() for _ in range(3)]
    for t in trials:
        tid = trial_id(storage, "s", t.number)
        assert storage.get_trial(tid).number == t.number
        storage.set_trial_system_attr(tid, "probe", t.number)
    assert [t.system_attrs["probe"] for t in study.get_trials()] == [0, 1, 2]


def test_every_write_goes_through_append_logs_one_json_record_per_line(tmp_path, monkeypatch):
    backend, storage = journal(tmp_path)
    calls = []
    real = GuardedJournalFileBackend.append_logs
    monkeypatch.setattr(GuardedJournalFileBackend, "append_logs", lambda self, logs: (calls.append(len(logs)),
                                                                                      real(self, logs))[1])
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"])
    study.enqueue_trial({}, user_attrs={"is_e2e": True})
    t = study.ask()
    t.set_user_attr("history", [0.5])
    study.tell(t, [0.5, 10.0])
    size = (tmp_path / "j.journal").stat().st_size
    assert calls and sum(calls) >= 5
    lines = (tmp_path / "j.journal").read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(isinstance(json.loads(line), dict) for line in lines[:-1])
    # a fresh storage replays the same study from those lines alone
    again = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
        GuardedJournalFileBackend(str(tmp_path / "j.journal"))))
    assert again.trials[0].values == [0.5, 10.0] and again.trials[0].user_attrs["history"] == [0.5]
    assert (tmp_path / "j.journal").stat().st_size == size  # reading appends nothing


def test_a_torn_tail_is_cut_before_the_next_append(tmp_path):
    cut = []
    backend, storage = journal(tmp_path, on_cut=cut.append)
    study = optuna.create_study(storage=storage, study_name="s")
    with open(tmp_path / "j.journal", "ab") as f:
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "use')  # a record cut mid-write
    study.ask()
    assert cut == [len(b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "use')]
    lines = (tmp_path / "j.journal").read_bytes().split(b"\n")
    assert all(isinstance(json.loads(line), dict) for line in lines[:-1])
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 1


def test_a_failed_append_leaves_the_journal_as_it_was(tmp_path, monkeypatch):
    backend, storage = journal(tmp_path)
    study = optuna.create_study(storage=storage, study_name="s")
    before = (tmp_path / "j.journal").read_bytes()
    real_write = os.write

    def half_then_full_disk(fd, data):
        if len(data) > 8:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(optuna_adapter.os, "write", half_then_full_disk)
    with pytest.raises(OSError):
        study.ask()
    monkeypatch.undo()
    assert (tmp_path / "j.journal").read_bytes() == before
    assert not os.path.lexists(str(tmp_path / "j.journal") + ".lock")  # the lock was released


def test_retry_copy_enqueues_the_parameters_and_the_kept_attributes(tmp_path):
    storage = journal(tmp_path)[1]
    study = optuna.create_study(storage=storage, study_name="s")
    t = study.ask()
    t.suggest_int("K", 2, 6)
    t.set_user_attr("design_hash", "abc")
    t.set_user_attr("history", [0.1])
    tid = trial_id(storage, "s", t.number)
    storage.set_trial_system_attr(tid, "auxsearch:heartbeat", 1.0)
    storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL)
    retry_copy(study, storage.get_trial(tid), ("design_hash",), ("auxsearch:heartbeat",), max_retry=3)
    retry = study.trials[-1]
    assert retry.state == optuna.trial.TrialState.WAITING
    assert retry.user_attrs == {"design_hash": "abc"} and "auxsearch:heartbeat" not in retry.system_attrs
    asked = study.ask()
    assert asked.number == retry.number and asked.suggest_int("K", 2, 6) == t.params["K"]
