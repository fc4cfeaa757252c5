"""benchmarks/chaos.py as tests: workers SIGKILLed while `run --workers N` searches, and no finished trial lost.

The CI flavour (journal file, 3 workers, 2 kills of workers in the middle of a trial) runs in
about a minute; the `slow` one is the benchmark itself at small settings on both storages.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chaos():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("chaos")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_count_finds_lost_retried_and_duplicated_trials(chaos):
    import optuna

    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, h in enumerate(["a", "b", "a"]):
        study.add_trial(optuna.create_trial(values=[0.5 + i, 1.0], user_attrs={"design_hash": h}))
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    study.add_trial(optuna.create_trial(state=optuna.trial.TrialState.WAITING,
                                        system_attrs={"failed_trial": failed.number, "retry_history": [failed.number]}))
    trials = study.get_trials()
    seen = {(False, 0): ("COMPLETE", (0.5, 1.0)), (False, 1): ("COMPLETE", (9.9, 1.0)),
            (False, 7): ("COMPLETE", (1.0, 1.0))}
    got = chaos.count(trials, seen)
    assert got["lost"] == 2 and got["lost_trials"] == [(False, 1), (False, 7)]  # changed values, and gone
    assert got["retried"] == 1 and got["duplicated"] == 1 and got["completed"] == 3 and got["failed"] == 0


@pytest.mark.slow  # ~35 s alone; killed workers in CI: test_distributed's kill -9 test and test_supervision
def test_chaos_ci_journal_workers_killed_mid_trial_lose_nothing(chaos, tmp_path):
    """Kill workers in the middle of their trials: each is restarted, its trial failed and retried at once."""
    study = chaos.write_study(tmp_path / "journal", quick=True)
    f = chaos.run_chaos(study, workers=3, every=2.0, kills=2, chaos_seconds=60, target="running", timeout=240)
    print(json.dumps(chaos.public(f)))
    stderr = (tmp_path / "journal" / "run.stderr").read_text()
    assert f["exit_code"] == 0, stderr[-3000:]
    assert f["lost"] == 0 and f["seen_finished"] >= 1
    assert f["completed"] == f["requested"] == 9
    assert f["kills"] >= 1 and f["restarts"] >= 1, stderr[-3000:]
    assert f["killed_mid_trial"] >= 1, "no kill hit a running trial; the test proved nothing"
    assert f["retried"] >= 1
    assert f["max_reap_s"] is not None and f["max_reap_s"] < 15, f  # at once, not after the 60 s heartbeat grace
    assert "killed by SIGKILL" in stderr and "failed and re-enqueued" in stderr
    assert "Traceback" not in stderr
    # a grid is shared: every worker, restarted or not, shuffles it with the study's own seed
    assert {t.user_attrs.get("sampler_seed") for t in f["_trials"] if "sampler_seed" in t.user_attrs} == {0}


@pytest.mark.slow
def test_chaos_benchmark_small_on_both_storages(chaos, capsys):
    """The benchmark at small settings: journal and PostgreSQL, 6 workers, against the sequential run."""
    code = chaos.main(["--quick", "--json-only", "--workers", "6", "--every", "2"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    for kind, f in out["storages"].items():
        if "skipped" in f:
            assert kind == "postgresql", f
            continue
        assert f["lost"] == 0 and f["completed"] == f["requested"] and f["exit_code"] == 0, (kind, f)
        v = f["vs_sequential"]
        assert v["shared"] >= 3 and v["same_values"] == v["shared"] and v["max_abs_diff"] == 0.0, (kind, v)
        assert v["same_front_on_shared"], (kind, v)
        assert v["same_front"] in (True, None), (kind, v)
