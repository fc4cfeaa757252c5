"""When a trial stops early: the study's pruning rules as pure functions of curves and peaks.

Optuna prunes single-objective studies only (optuna#2792); these rules compare a running trial's
validation curve and scored peak with the trials that got further, so multi-objective searches
stop early too. They read validation scores only, never test. Each takes plain data, so a rule
is tested without a study; :class:`auxsearch.search.objective.Objective` gathers the data.

* ``dominated``: stop when at least ``min_rivals`` completed feasible trials with no more memory
  (up to ``1 + memory_tolerance`` times it) scored better by ``margin`` at the same epoch.
* ``halving``: asynchronous multi-objective successive halving (:func:`auxsearch.pareto.halving_keeps`)
  at the rungs ``min_epochs x eta^k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from auxsearch.config import PruningConfig
from auxsearch.pareto import halving_keeps, rungs


@dataclass(frozen=True)
class Curve:
    """Another trial as a rule sees it: its label, validation curve and scored peak."""

    trial: str
    history: Sequence[float]
    peak: float


def dominated(history: Sequence[float], peak: float, rivals: Sequence[Curve], p: PruningConfig) -> str | None:
    """Why the ``dominated`` rule stops a trial at epoch ``len(history)`` (None: it goes on).

    ``rivals`` are the completed feasible trials.
    """
    epoch = len(history)
    if epoch <= p.warmup_epochs:
        return None
    limit = peak * (1 + p.memory_tolerance)
    better = [c.trial for c in rivals if c.peak <= limit and len(c.history) >= epoch
              and c.history[epoch - 1] >= history[-1] + p.margin]
    if len(better) < p.min_rivals:
        return None
    room = "no more memory" if p.memory_tolerance == 0 else f"at most {1 + p.memory_tolerance:g}x its memory"
    return (f"epoch {epoch}: validation {history[-1]:.4f} dominated by trials {', '.join(better[:5])} "
            f"(better by >= {p.margin:g} at the same epoch, {room})")


def halving(history: Sequence[float], peak: float, peers: Sequence[Curve], p: PruningConfig,
            epochs: int) -> str | None:
    """Why successive halving stops a trial at epoch ``len(history)`` (None: it goes on).

    ``peers`` are the other feasible, not reused trials with a peak and a curve (running ones too).
    """
    epoch = len(history)
    if epoch not in rungs(p.min_epochs, p.reduction_factor, epochs):
        return None
    reached = [(c.history[epoch - 1], c.peak) for c in peers if len(c.history) >= epoch]
    if halving_keeps((history[-1], peak), reached, p.reduction_factor):
        return None
    return (f"halving rung at epoch {epoch}: validation {history[-1]:.4f} at {peak} B not in the top "
            f"1/{p.reduction_factor} of {len(reached) + 1} trials")
