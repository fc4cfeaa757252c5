"""Optuna samplers by the name a study file gives (``sampler: {name: tpe}``).

One factory per name in :data:`SAMPLERS`; adding a sampler is one entry. Every factory
gets the study's sampler block, the seed to use (a worker's seed is offset so parallel
workers do not draw the same designs) and the prepared run (the grid needs its space).

NSGA-II and GP model the parameters every completed trial shares (Optuna's
``IntersectionSearchSpace``). A study's first trial is the end-to-end reference, enqueued
with no parameters, and published designs are enqueued the same way: the intersection is
then empty forever, and both samplers silently fall back to random search (NSGA-II's
crossover would also fail on a parent lacking a parameter). :class:`EvolvingNSGAIISampler`
and :class:`SearchedGPSampler` see the study through :class:`SearchedTrials`, which leaves
out every trial that is not a searched design: parameterless (enqueued) trials and K = 1
trials (the end-to-end design again, no splits and no aux to inherit). Their search space,
population, generations and parents are the searched trials alone. Use a fixed-dimensional
space (``splits: memory`` or ``balanced``): with ``splits: free`` the split ranges depend
on K and stay out of the intersection. A family's own options (``aux.momentum`` only with
``momentum``) are conditional, outside the intersection, and drawn at random as Optuna
does. TPE (``group``) decomposes the space itself and needs none of this.

``ehvi`` (:mod:`auxsearch.ehvi`) models the score alone: a design's memory is simulated before
it trains, so the sampler picks among candidate designs by expected hypervolume improvement
with the memory coordinate exact. It needs objectives ``[score, memory]`` and a task whose
step can be simulated (not detection).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from .config import SamplerConfig

if TYPE_CHECKING:
    from .study import Run


def is_searched(trial: FrozenTrial) -> bool:
    """A trial the sampler drew: it has parameters and is not the end-to-end design (K = 1)."""
    return bool(trial.params) and trial.params.get("K") != 1


class SearchedTrials:
    """A study seen by a sampler: the same study, with only its searched trials (:func:`is_searched`).

    Every attribute is the study's own (storage, ids, directions); ``_get_trials`` and
    ``get_trials``, which Optuna's samplers read trials through, drop the finished trials
    that were not searched. Unfinished trials stay (they have no parameters yet when a
    sampler starts them, and ``IntersectionSearchSpace`` must see them to recheck them later).
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        return [t for t in self._study._get_trials(*args, **kwargs) if _kept(t)]

    def get_trials(self, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        return [t for t in self._study.get_trials(*args, **kwargs) if _kept(t)]


def _kept(trial: FrozenTrial) -> bool:
    return is_searched(trial) or not trial.state.is_finished()


class EvolvingNSGAIISampler(optuna.samplers.NSGAIISampler):
    """NSGA-II over the searched trials only, so it evolves (see the module docstring).

    The search space, the generations (counted on searched trials), the elite selection and
    the parents all come from :class:`SearchedTrials`. A parent must hold every parameter of
    the child's relative space (a stale or hand-made parent cache cannot break crossover);
    with fewer such parents than the crossover needs, the child is drawn at random.
    Generations are stored under ``EvolvingNSGAIISampler:generation`` (Optuna keys them by
    class name), so a study begun with Optuna's own NSGAIISampler starts a fresh generation 0.
    """

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return super().infer_relative_search_space(SearchedTrials(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        view = SearchedTrials(study)
        generation = self.get_trial_generation(view, trial)  # every trial gets one, as in Optuna's
        if not search_space:
            return {}
        parents = [p for p in self.get_parent_population(view, generation) if search_space.keys() <= p.params.keys()]
        crossover = getattr(self._child_generation_strategy, "_crossover", None)
        if len(parents) < max(1, getattr(crossover, "n_parents", 2)):
            return {}
        return self._child_generation_strategy(view, search_space, parents)


class SearchedGPSampler(optuna.samplers.GPSampler):
    """GP over the searched trials only: its space and its training data leave out parameterless trials."""

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return super().infer_relative_search_space(SearchedTrials(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return super().sample_relative(SearchedTrials(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        # Its startup count (and the warning past it) is over searched trials too.
        return super().sample_independent(SearchedTrials(study), trial, param_name, param_distribution)


def _startup(s: SamplerConfig, default: int) -> int:
    return default if s.n_startup_trials is None else s.n_startup_trials


def _tpe(s: SamplerConfig, seed: int, run: Run) -> optuna.samplers.BaseSampler:
    # multivariate + group: conditional spaces (a family's options exist only for that family).
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      n_startup_trials=_startup(s, 6), constant_liar=True)


def _nsga2(s: SamplerConfig, seed: int, run: Run) -> optuna.samplers.BaseSampler:
    return EvolvingNSGAIISampler(seed=seed, population_size=s.population_size)


def _gp(s: SamplerConfig, seed: int, run: Run) -> optuna.samplers.BaseSampler:
    return SearchedGPSampler(seed=seed, n_startup_trials=_startup(s, 6))


def _ehvi(s: SamplerConfig, seed: int, run: Run) -> optuna.samplers.BaseSampler:
    from . import memory
    from .ehvi import EHVISampler
    from .graph import design_hash, memory_hash, normalize
    from .space import suggest_design

    drawn: dict[str, tuple[str, dict]] = {}  # a finite space repeats its designs: normalise each once

    def draw(trial: Any) -> tuple[str, dict]:
        raw = suggest_design(trial, run.space, run.base, run.unit_costs)
        key = json.dumps(raw, sort_keys=True, default=str)
        if key not in drawn:
            d = normalize(raw)
            drawn[key] = design_hash(d), d
        return drawn[key]

    def design_of(t: FrozenTrial) -> tuple[str, dict] | None:
        if "design" not in t.user_attrs or "design_hash" not in t.user_attrs:
            return None
        return t.user_attrs["design_hash"], t.user_attrs["design"]

    peaks: dict[str, float] = {}  # by memory hash: designs that differ only in EMA momenta share a peak

    def memory_of(design: dict) -> float:
        key = memory_hash(design)
        if key not in peaks:
            peaks[key] = memory.peak_in_study(design, run.cfg)
        return peaks[key]

    return EHVISampler(draw, memory_of, design_of, seed=seed, n_startup_trials=_startup(s, 2),
                       candidates=s.candidates, budget=run.budget)


def _grid(s: SamplerConfig, seed: int, run: Run) -> optuna.samplers.BaseSampler:
    from .space import grid

    return optuna.samplers.GridSampler(grid(run.space, run.base), seed=seed)


def _random(s: SamplerConfig, seed: int, run: Run) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable[[SamplerConfig, int, Run], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe, "nsga2": _nsga2, "gp": _gp, "grid": _grid, "random": _random, "ehvi": _ehvi,
}


def ehvi_applies(run: Run) -> str | None:
    """Why ``ehvi`` cannot serve this study (None: it can)."""
    from .tasks import get_task

    if list(run.cfg.objectives) != ["score", "memory"]:
        return f"ehvi models the score against memory: objectives must be [score, memory], not {list(run.cfg.objectives)}"
    task = run.base.get("task", {}).get("name", "classification")
    if not get_task(task).simulatable:
        return f"ehvi simulates each candidate's memory, and task {task!r} cannot be simulated; use tpe"
    return None


def sampler_name(run: Run) -> str:
    """The sampler a study gets: its ``sampler.name``, with ``auto`` read as ehvi where it applies, else tpe."""
    name = run.cfg.sampler.name
    if name == "auto":
        return "tpe" if ehvi_applies(run) else "ehvi"
    return name


def make_sampler(run: Run, worker_seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler (:func:`sampler_name`), seeded with ``sampler.seed + worker_seed_offset``."""
    s = run.cfg.sampler
    with warnings.catch_warnings():  # TPE's `group` is flagged experimental; we need it for conditional spaces
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[sampler_name(run)](s, s.seed + worker_seed_offset, run)
