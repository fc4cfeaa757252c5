"""Multi-objective successive halving: the rung rule, and real trials stopped at a rung."""

from __future__ import annotations

import pytest
from test_study import write_study

from auxsearch.pareto import halving_keeps, nondominated_ranks, order, rungs
from auxsearch.search import prepare as study_mod
from auxsearch.search.loop import optimize
from auxsearch.search.studies import open_search
from auxsearch.store.records import records


def test_nondominated_ranks():
    pts = [(0.9, 100), (0.8, 50), (0.7, 100), (0.85, 60), (0.6, 200)]
    assert nondominated_ranks(pts) == [0, 0, 1, 0, 2]
    assert nondominated_ranks([(0.5, 10), (0.5, 10)]) == [0, 0]  # equal points do not dominate each other


def test_a_lean_design_survives_a_rung_a_slightly_better_fat_one_does_not_stop_it():
    others = [(0.95, 100.0), (0.94, 100.0), (0.93, 100.0), (0.92, 100.0), (0.91, 100.0)]
    assert halving_keeps((0.60, 10.0), others, eta=3)  # rank 0: nothing uses less memory
    assert not halving_keeps((0.90, 100.0), others, eta=3)  # rank 1, last: top ceil(6/3) = 2 go on
    assert halving_keeps((0.96, 100.0), others, eta=3)


def test_top_share_and_the_first_arrivals():
    front = [(0.9 - i / 100, 10.0 + i) for i in range(8)]  # all non-dominated: score order decides
    kept = [halving_keeps(p, [q for q in front if q is not p], eta=2) for p in front]
    assert kept == [True] * 4 + [False] * 4
    assert halving_keeps((0.1, 1e9), [(0.9, 1.0)], eta=3)  # fewer than eta at the rung: goes on
    assert not halving_keeps((0.1, 1e9), [(0.9, 1.0)], eta=3, min_peers=2)


def test_rungs():
    assert rungs(1, 3, 10) == [1, 3, 9] and rungs(1, 2, 4) == [1, 2] and rungs(2, 3, 2) == []


@pytest.mark.parametrize("workers_view", [False, pytest.param(True, marks=pytest.mark.slow)])  # ~1 min each alone
def test_a_halving_study_stops_trials_at_the_rung_and_resumes(tmp_path, workers_view):
    path = write_study(tmp_path, n_trials=6, enqueue=[], train={"epochs": 2, "batch_size": 64, "lr": 0.05},
                       pruning={"enabled": True, "mode": "halving", "min_epochs": 1, "reduction_factor": 2})
    run = study_mod.prepare(path)
    st = open_search(run)
    optimize(run, st, 4 if workers_view else 6, None, progress=False)
    if workers_view:  # a second process (or a restart) continues from what the storage holds
        st = open_search(study_mod.prepare(path))
        optimize(run, st, 6, None, progress=False)
    recs = records(st)
    assert len([r for r in recs if r["state"] in ("COMPLETE", "PRUNED")]) == 6
    pruned = [r for r in recs if r["state"] == "PRUNED"]
    assert pruned and all("halving rung at epoch 1" in r["reason"] and len(r["history"]) == 1 for r in pruned)
    assert recs[0]["state"] == "COMPLETE" and recs[0]["is_e2e"]  # the reference is never stopped
    for r in pruned:  # each stopped trial was outside the top half of the trials at its rung when it decided
        earlier = [(q["history"][0], q["peak_memory_bytes"]) for q in recs
                   if order(q) < order(r) and q["history"] and q.get("reused_from") is None]
        assert not halving_keeps((r["history"][0], r["peak_memory_bytes"]), earlier, eta=2)
