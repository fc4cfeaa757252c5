"""An Optuna study on the throwaway PostgreSQL server from ``pgserver``."""

from __future__ import annotations

import optuna
import pytest
from pgserver import postgres_url  # noqa: F401


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeat_interval
def test_multiobjective_study_on_postgres(postgres_url: str) -> None:  # noqa: F811
    storage = optuna.storages.RDBStorage(postgres_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="pg-smoke", storage=storage,
                                directions=["minimize", "maximize"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_int("n", 1, 4)), n_trials=3)

    reloaded = optuna.load_study(study_name="pg-smoke", storage=postgres_url)
    trials = reloaded.get_trials(deepcopy=False)
    assert len(trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(len(t.values) == 2 for t in trials)
    assert reloaded.directions == [optuna.study.StudyDirection.MINIMIZE,
                                   optuna.study.StudyDirection.MAXIMIZE]


@pytest.mark.parametrize("value, outcome", [("", pytest.skip.Exception), ("0", pytest.skip.Exception),
                                            ("1", pytest.fail.Exception)])
def test_missing_postgres_skips_unless_required(monkeypatch, value, outcome) -> None:
    """CI sets AUXSEARCH_REQUIRE_POSTGRES=1: there a missing server fails the tests instead of skipping them."""
    import pgserver

    monkeypatch.setenv(pgserver.REQUIRE, value)
    with pytest.raises(outcome, match="initdb not found"):
        pgserver.unavailable("initdb not found")
