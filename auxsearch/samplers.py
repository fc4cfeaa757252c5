"""Optuna samplers by the name a study file gives (``sampler: {name: tpe}``).

One factory per name in :data:`SAMPLERS`; adding a sampler is one entry. Every factory
gets the study's sampler block, the seed to use (a worker's seed is offset so parallel
workers do not draw the same designs) and the prepared run (the grid needs its space).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna

from .config import SamplerConfig

if TYPE_CHECKING:
    from .study import Run


def _tpe(s: SamplerConfig, seed: int, run: Run) -> optuna.samplers.BaseSampler:
    # multivariate + group: conditional spaces (a family's options exist only for that family).
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      n_startup_trials=s.n_startup_trials, constant_liar=True)


def _nsga2(s: SamplerConfig, seed: int, run: Run) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=s.population_size)


def _gp(s: SamplerConfig, seed: int, run: Run) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.n_startup_trials)


def _grid(s: SamplerConfig, seed: int, run: Run) -> optuna.samplers.BaseSampler:
    from .space import grid

    return optuna.samplers.GridSampler(grid(run.space, run.base), seed=seed)


def _random(s: SamplerConfig, seed: int, run: Run) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable[[SamplerConfig, int, Run], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe, "nsga2": _nsga2, "gp": _gp, "grid": _grid, "random": _random,
}


def make_sampler(run: Run, worker_seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with ``sampler.seed + worker_seed_offset``."""
    s = run.cfg.sampler
    with warnings.catch_warnings():  # TPE's `group` is flagged experimental; we need it for conditional spaces
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[s.name](s, s.seed + worker_seed_offset, run)
