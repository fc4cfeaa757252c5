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

from auxsearch import distributed
from auxsearch.cli import main
from auxsearch.pareto import pareto_front
from auxsearch.rundir import load_run
from auxsearch.storage import open_storage

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "auxsearch", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def check_parallel_run(run_dir: Path, n_trials: int, capsys) -> None:
    meta, recs = load_run(run_dir)
    finished = [r for r in recs if r["state"] in ("COMPLETE", "PRUNED", "INFEASIBLE")]
    assert len(finished) == n_trials, [(r["number"], r["state"], r["reason"]) for r in recs]
    assert len({r["number"] for r in recs}) == len(recs)
    assert sum(r["is_e2e"] for r in finished) == 1
    assert main(["show", str(run_dir), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [e["trial"] for e in shown["front"]] == [r["number"] for r in pareto_front(recs)]
    front_file = yaml.safe_load((run_dir / "pareto.yaml").read_text())["front"]
    assert [e["trial"] for e in front_file] == [e["trial"] for e in shown["front"]]
    st = optuna.load_study(study_name=meta["name"], storage=open_storage(meta["storage"]))
    workers = {t.user_attrs.get("worker") for t in st.trials if t.state.is_finished()}
    seeds = {t.user_attrs.get("worker"): t.user_attrs.get("sampler_seed") for t in st.trials}
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
    journal = run_dir / "study.journal"
    if not journal.is_file():
        return []
    storage = open_storage(f"journal:{journal}")
    try:
        return optuna.load_study(study_name="quickstart", storage=storage).trials
    except KeyError:
        return []


def test_kill_9_mid_trial_then_the_same_command_finishes_the_study(tmp_path):
    path = write_study(tmp_path, n_trials=4, enqueue=[], train={"epochs": 3, "batch_size": 32, "lr": 0.05})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "auxsearch", "run", str(path), "--no-progress"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        trials = _trials(tmp_path / "run")
        if any(t.state.name == "COMPLETE" for t in trials) and any(
                t.state.name == "RUNNING" and distributed.WORKER_KEY in t.system_attrs for t in trials):
            break
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the study never had a completed and a running trial")
    before = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}
    killed = [t.number for t in trials if t.state.name == "RUNNING"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = cli("run", str(path), "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    after = {t.number: t for t in _trials(tmp_path / "run")}
    for number, values in before.items():  # nothing finished was lost
        assert after[number].state.name == "COMPLETE" and after[number].values == values
    for number in killed:
        assert after[number].state.name == "FAIL"
        assert "worker died" in after[number].user_attrs["reason"]
    retried = [t for t in after.values() if t.system_attrs.get("failed_trial") in killed]
    assert retried, "the interrupted trial was not retried"
    assert len([t for t in after.values() if t.state.name in ("COMPLETE", "PRUNED")]) == 4


def test_sqlite_with_several_workers_is_refused(tmp_path, capsys):
    path = write_study(tmp_path)
    assert main(["run", str(path), "--workers", "2", "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    err = capsys.readouterr().err
    assert "SQLite cannot serve 2 workers" in err and "journal" in err and "postgresql://" in err


def test_stale_trials_dead_pid_or_old_heartbeat():
    study = optuna.create_study(directions=["maximize", "minimize"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    t = study.ask()
    host = distributed.socket.gethostname()
    study._storage.set_trial_system_attr(t._trial_id, distributed.WORKER_KEY, f"{host}:{dead.pid}")
    study._storage.set_trial_system_attr(t._trial_id, distributed.BEAT_KEY, time.time())
    frozen = study._storage.get_trial(t._trial_id)
    assert distributed.is_stale(frozen)  # its process is gone, even with a fresh heartbeat
    alive = study.ask()
    study._storage.set_trial_system_attr(alive._trial_id, distributed.WORKER_KEY, f"{host}:{os.getpid()}")
    study._storage.set_trial_system_attr(alive._trial_id, distributed.BEAT_KEY, time.time())
    frozen_alive = study._storage.get_trial(alive._trial_id)
    assert not distributed.is_stale(frozen_alive)
    assert distributed.is_stale(frozen_alive, now=time.time() + distributed.GRACE + 1)  # silent too long
    assert distributed.reap_stale_trials(study) == [t.number]
    assert study.trials[t.number].state.name == "FAIL"
    assert study.trials[-1].state.name == "WAITING" and study.trials[-1].system_attrs["failed_trial"] == t.number
