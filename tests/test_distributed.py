"""Several workers on one study (journal file and PostgreSQL), a worker killed mid-trial, SQLite refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from pgserver import postgres_url  # noqa: F401  (a session fixture: a real server on loopback)
from test_study import write_study

from auxsearch.cli import main
from auxsearch.outputs.runfolder import load_run
from auxsearch.pareto import pareto_front
from auxsearch.store import heartbeat
from auxsearch.store.optuna_adapter import trial_id
from auxsearch.store.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "auxsearch", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def check_parallel_run(run_dir: Path, n_trials: int, capsys) -> None:
    meta, recs = load_run(run_dir)
    finished = [r for r in recs if r["state"] in ("COMPLETE", "PRUNED", "INFEASIBLE")]
    assert len(finished) == n_trials, [(r["trial"], r["state"], r["reason"]) for r in recs]
    assert len({r["trial"] for r in recs}) == len(recs)
    assert sum(r["is_e2e"] for r in finished) == 1
    assert main(["show", str(run_dir), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [e["trial"] for e in shown["front"]] == [r["trial"] for r in pareto_front(recs)]
    front_file = yaml.safe_load((run_dir / "pareto.yaml").read_text())["front"]
    assert [e["trial"] for e in front_file] == [e["trial"] for e in shown["front"]]
    storage = open_storage(meta["storage"])
    st = optuna.load_study(study_name=meta["name"], storage=storage)
    every = [*optuna.load_study(study_name=meta["name"] + ":reference", storage=storage).trials, *st.trials]
    workers = {t.user_attrs.get("worker") for t in every if t.state.is_finished()}
    seeds = {t.user_attrs.get("worker"): t.user_attrs.get("sampler_seed") for t in every}
    assert len(workers) >= 2, "the trials were not shared between workers"
    assert len(set(seeds.values())) == len(seeds), seeds  # each worker its own seed, recorded
    prov = st.user_attrs["auxsearch"]
    assert {"torch", "optuna", "device", "study_file_sha256"} <= set(prov)


@pytest.mark.slow  # 29 s; journal workers in CI: test_kill_9_mid_trial_then_the_same_command_finishes_the_study
def test_three_workers_on_the_journal_file(tmp_path, capsys):
    path = write_study(tmp_path, n_trials=6, enqueue=[])
    done = cli("run", str(path), "--workers", "3", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    check_parallel_run(tmp_path / "run", 6, capsys)


def test_three_workers_on_postgresql(tmp_path, capsys, postgres_url):  # noqa: F811
    path = write_study(tmp_path, n_trials=6, enqueue=[], name="pg-study")
    done = cli("run", str(path), "--workers", "3", "--storage", postgres_url, "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    check_parallel_run(tmp_path / "run", 6, capsys)


def _trials(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    """The run's reference trials, then its search trials."""
    journal = run_dir / "study.journal"
    if not journal.is_file():
        return []
    storage = open_storage(f"journal:{journal}", writes=False)
    out = []
    for name in ("quickstart:reference", "quickstart"):
        try:
            out += optuna.load_study(study_name=name, storage=storage).trials
        except KeyError:
            pass
    return out


def _key(t: optuna.trial.FrozenTrial) -> tuple[bool, int]:
    return ("enqueued" in t.user_attrs, t.number)


def test_kill_9_mid_trial_then_the_same_command_finishes_the_study(tmp_path):
    path = write_study(tmp_path, n_trials=4, enqueue=[], train={"epochs": 3, "batch_size": 32, "lr": 0.05})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "auxsearch", "run", str(path), "--no-progress"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        trials = _trials(tmp_path / "run")
        if any(t.state.name == "COMPLETE" for t in trials) and any(
                t.state.name == "RUNNING" and heartbeat.WORKER_KEY in t.system_attrs for t in trials):
            break
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the study never had a completed and a running trial")
    before = {_key(t): t.values for t in trials if t.state.name == "COMPLETE"}
    killed = [_key(t) for t in trials if t.state.name == "RUNNING"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = cli("run", str(path), "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    after = {_key(t): t for t in _trials(tmp_path / "run")}
    for number, values in before.items():  # nothing finished was lost
        assert after[number].state.name == "COMPLETE" and after[number].values == values
    for number in killed:
        assert after[number].state.name == "FAIL"
        assert "worker died" in after[number].user_attrs["reason"]
    retried = [t for t in after.values() if (_key(t)[0], t.system_attrs.get("failed_trial")) in killed]
    assert retried, "the interrupted trial was not retried"
    assert len([t for t in after.values() if t.state.name in ("COMPLETE", "PRUNED")]) == 4


def test_sqlite_with_several_workers_is_refused(tmp_path, capsys):
    path = write_study(tmp_path)
    assert main(["run", str(path), "--workers", "2", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    err = capsys.readouterr().err
    assert "SQLite cannot serve 2 workers" in err and "journal" in err and "postgresql://" in err


def test_stale_trials_dead_pid_or_old_heartbeat():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(directions=["maximize", "minimize"], storage=storage, study_name="s")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = heartbeat.socket.gethostname()

    def started(pid: int) -> optuna.trial.FrozenTrial:
        t = study.ask()
        tid = trial_id(storage, "s", t.number)
        storage.set_trial_system_attr(tid, heartbeat.WORKER_KEY, f"{host}:{pid}")
        storage.set_trial_system_attr(tid, heartbeat.BEAT_KEY, time.time())
        return storage.get_trial(tid)

    frozen = started(dead.pid)
    assert heartbeat.is_stale(frozen)  # its process is gone, even with a fresh heartbeat
    frozen_alive = started(os.getpid())
    assert not heartbeat.is_stale(frozen_alive)
    assert heartbeat.is_stale(frozen_alive, now=time.time() + heartbeat.GRACE + 1)  # silent too long
    assert heartbeat.reap_stale_trials(study, storage) == [frozen.number]
    assert study.trials[frozen.number].state.name == "FAIL"
    assert study.trials[-1].state.name == "WAITING" and study.trials[-1].system_attrs["failed_trial"] == frozen.number


def test_the_confirmation_runs_on_the_workers(tmp_path):
    """With --workers N the retrainings of the confirmation are jobs the worker processes take, not the
    study's own process; every job completes."""
    path = write_study(tmp_path, n_trials=2, enqueue=[], confirm={"seeds": 2, "max_designs": 1})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "auxsearch", "run", str(path), "--workers", "2", "--no-progress"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    storage = open_storage(f"journal:{tmp_path / 'run' / 'study.journal'}", writes=False)
    jobs = optuna.load_study(study_name="quickstart:confirm", storage=storage).trials
    done = [t for t in jobs if t.state.name == "COMPLETE"]
    wanted = {(t.user_attrs["design_hash"], t.user_attrs["seed"]) for t in jobs if "design" in t.user_attrs}
    # E2E, and the searched design when the front holds it (which design a worker draws depends on which
    # worker took the search trial), 2 seeds each: every job completed
    assert len(wanted) in (2, 4) and {(t.user_attrs["design_hash"], t.user_attrs["seed"]) for t in done} == wanted
    owners = {t.system_attrs[heartbeat.WORKER_KEY].rpartition(":")[2] for t in done}
    assert str(proc.pid) not in owners and {t.user_attrs["worker"] for t in done} <= {0, 1}
    assert "Confirmed designs" in out
