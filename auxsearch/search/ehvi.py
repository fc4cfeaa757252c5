"""A sampler that knows one objective in advance: expected hypervolume improvement with memory computed.

A design's peak training memory is a property of the design, not of its training: the
simulator gives it in about a second, before any epoch is spent (:func:`auxsearch.train.memory.simulate`,
equal to the measured CPU peak, same counter). Only the score needs training. TPE, NSGA-II and
Optuna's GP treat both objectives as unknown and spend trials learning a function that was
free. :class:`EHVISampler` learns the score alone:

1. **Candidates.** Before each trial it draws ``candidates`` designs from the search space
   (every parameter uniform within its range, through the same :func:`auxsearch.design.space.suggest_design`
   the objective uses, so conditional options come out as the trial would ask them), drops
   those already trained or running (same design hash), computes each one's memory, and drops
   those over the study's memory budget (the study would reject them untrained).
2. **Score model.** A Gaussian process (scikit-learn; Matern 5/2 with one length per input,
   a white-noise term: one seed's score is noisy) on the searched trials that completed
   feasibly: parameters encoded in [0, 1], categorical ones one-hot.
3. **Choice.** The candidate with the largest expected hypervolume improvement on the plane
   of (score, memory) normalised as the report does (:class:`auxsearch.pareto.Normalised`):
   the memory coordinate is exact, the score one is the model's normal predictive, and the
   expectation is a mean over 16 fixed quantiles of it. Every completed trial, the E2E
   reference and enqueued designs included, is a point of the current front.

The first ``n_startup_trials`` searched trials are the random candidates themselves (the
model needs data). The trial then asks its parameters as usual; the sampler answers with the
chosen candidate's values (``sample_independent``), so the design trained is the one scored.
Memory of completed trials is recomputed by the same oracle (cached by design hash; the study's oracle
also by :func:`auxsearch.design.graph.memory_hash`, so EMA momenta cost no new call), so the
front and the candidates are in the same unit. Parallel workers each run their own sampler;
running trials' designs are excluded, not imputed. Objectives must be ``[score, memory]``.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from auxsearch.pareto import Normalised
from auxsearch.store.records import feasible

QUANTILES = [NormalDist().inv_cdf((i + 0.5) / 16) for i in range(16)]


class CandidateTrial:
    """Stands in for an Optuna trial while a candidate design is drawn: every ``suggest_*`` is a
    uniform draw within its range, recorded with its distribution."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.params, self.distributions = rng, {}, {}

    def _keep(self, name: str, dist: BaseDistribution, value: Any) -> Any:
        self.params[name], self.distributions[name] = value, dist
        return value

    def suggest_categorical(self, name: str, choices: Sequence) -> Any:
        return self._keep(name, CategoricalDistribution(list(choices)), self.rng.choice(list(choices)))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        if log:
            value = int(round(math.exp(self.rng.uniform(math.log(low), math.log(high + 0.5))) - 0.5))
            value = min(max(value, low), high)
        else:
            value = self.rng.randrange(low, high + 1, step)
        return self._keep(name, IntDistribution(low, high, step=step, log=log), value)

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None, log: bool = False) -> float:
        if log:
            value = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        elif step:
            value = low + step * self.rng.randrange(int(round((high - low) / step)) + 1)
        else:
            value = self.rng.uniform(low, high)
        return self._keep(name, FloatDistribution(low, high, step=step, log=log), value)


def contains(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one ``dist`` can take (a chosen candidate's value is checked against the
    distribution the trial asks with)."""
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, int | float) or not dist.low <= value <= dist.high:
        return False
    if isinstance(dist, IntDistribution):
        return float(value).is_integer() and (int(value) - dist.low) % dist.step == 0
    return dist.step is None or math.isclose((value - dist.low) / dist.step, round((value - dist.low) / dist.step))


def encode(params: Mapping[str, Any], dists: Mapping[str, BaseDistribution]) -> list[float]:
    """``params`` as numbers in [0, 1], one column per numeric parameter and per categorical choice,
    in the order of ``dists`` (a parameter the design does not have: zeros)."""
    row: list[float] = []
    for name, dist in dists.items():
        value = params.get(name)
        if isinstance(dist, CategoricalDistribution):
            row += [float(value is not None and value == c) for c in dist.choices]
        elif value is None:
            row.append(0.0)
        else:
            lo, hi, v = float(dist.low), float(dist.high), float(value)
            if dist.log:
                lo, hi, v = math.log(lo), math.log(hi), math.log(v)
            row.append((v - lo) / (hi - lo) if hi > lo else 0.0)
    return row


def improvement(norm: Normalised, front: list[tuple[float, float]], scores: np.ndarray, peak: float) -> np.ndarray:
    """Hypervolume improvement of adding ``(score, peak)`` to ``front``, for each of ``scores`` at once.

    In normalised units the new point dominates the strip from its memory up to the reference;
    at memory y the front already holds the best score among its points with memory <= y, so
    the gain is the integral over the strip of max(0, score - that best): a sum over the
    strip's segments between the front's memories (equal to differencing
    :meth:`Normalised.hypervolume`, which the tests check).
    """
    s_ref, m_ref = norm.REF
    y0 = norm.point(0.0, peak)[1]
    xs = (np.asarray(scores, dtype=float) - norm.s_lo) / ((norm.s_hi - norm.s_lo) or 1.0)
    if y0 >= m_ref:
        return np.zeros_like(xs)
    pts = sorted(norm.point(sc, m)[::-1] for sc, m in front)  # (memory, score), lightest first
    cuts = sorted({y0, m_ref, *(y for y, _ in pts if y0 < y < m_ref)})
    best, i, floor = s_ref, 0, []
    for start in cuts[:-1]:
        while i < len(pts) and pts[i][0] <= start:
            best = max(best, pts[i][1])
            i += 1
        floor.append(best)
    lengths = np.diff(cuts)
    return np.maximum(0.0, xs[:, None] - np.array(floor)[None, :]) @ lengths


def expected_improvement(norm: Normalised, front: list[tuple[float, float]], mean: float, std: float,
                         peak: float) -> float:
    """Expected hypervolume improvement of a design of known ``peak`` whose score is normal(mean, std)."""
    return float(improvement(norm, front, mean + std * np.array(QUANTILES), peak).mean())


class EHVISampler(optuna.samplers.BaseSampler):
    """Expected hypervolume improvement, memory computed by ``memory_of`` (see the module docstring).

    ``draw(trial_like)`` returns ``(design hash, design)`` for the parameters a trial-like object
    answers (the study: :func:`auxsearch.design.space.suggest_design` + ``normalize``); ``memory_of(design)``
    returns its peak bytes; ``design_of(frozen trial)`` the design a finished trial trained
    (``None``: leave it out of the front). :attr:`memory` holds the peaks computed so far by
    design hash; samplers of one space may share one dict (the benchmark's replays do).
    """

    def __init__(self, draw: Callable[[Any], tuple[str, dict]], memory_of: Callable[[dict], float],
                 design_of: Callable[[FrozenTrial], tuple[str, dict] | None], *, seed: int = 0,
                 n_startup_trials: int = 3, candidates: int = 64, budget: float | None = None) -> None:
        self._draw, self._memory_of, self._design_of = draw, memory_of, design_of
        self.budget = budget  # candidates whose peak exceeds it are never chosen (the study would not train them)
        self._rng = random.Random(seed)
        self._seed = seed
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self.n_startup_trials, self.candidates = n_startup_trials, candidates
        self.memory: dict[str, float] = {}
        self._chosen: dict[int, dict[str, Any]] = {}
        self._kernel: Any = None  # the last fitted kernel: the next fit starts from its hyperparameters
        # The reference trials (E2E, enqueued designs) of the sibling study: points of the front, never candidates.
        self.references: Callable[[], list[FrozenTrial]] = lambda: []

    # -------------------------------------------------------------- Optuna's interface

    def reseed_rng(self) -> None:
        self._rng = random.Random()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if "fixed_params" in trial.system_attrs:
            return  # a retried trial: its parameters are given
        self._chosen[trial.number] = self.choose(study)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        chosen = self._chosen.get(trial.number, {})
        if param_name in chosen:
            value = chosen[param_name]
            if contains(param_distribution, value):
                return value
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._chosen.pop(trial.number, None)

    # -------------------------------------------------------------- the choice

    def peak(self, h: str, design: dict) -> float:
        if h not in self.memory:
            self.memory[h] = float(self._memory_of(design))
        return self.memory[h]

    def _fits(self, h: str, design: dict) -> bool:
        return self.budget is None or self.peak(h, design) <= self.budget

    def choose(self, study: optuna.Study) -> dict[str, Any]:
        """The parameters of the candidate to train next."""
        trials = [*self.references(), *study.get_trials(deepcopy=False)]
        taken = {t.user_attrs.get("design_hash") for t in trials} - {None}
        pool: dict[str, tuple[dict, dict, dict]] = {}
        for _ in range(self.candidates * 4):  # a small finite space may hold fewer new designs
            cand = CandidateTrial(self._rng)
            h, design = self._draw(cand)
            if h not in taken:
                pool.setdefault(h, (cand.params, cand.distributions, design))
            if len(pool) >= self.candidates:
                break
        done = [t for t in trials if t.state == TrialState.COMPLETE and feasible(t)]
        searched = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if feasible(t) and t.params and t.params.get("K") != 1]
        if len(searched) < self.n_startup_trials:  # the first new draw that fits the budget: uniform at random
            return next((p for h, (p, _, d) in pool.items() if self._fits(h, d)), {})
        pool = {h: c for h, c in pool.items() if self._fits(h, c[2])}
        if not pool:
            return {}
        front: list[tuple[float, float]] = []
        for t in done:  # a trial's peak from the oracle the candidates get; its recorded one if it has no design
            got = self._design_of(t)
            front.append((float(t.values[0]), self.peak(*got) if got is not None else float(t.values[1])))
        peaks = {h: self.peak(h, d) for h, (_, _, d) in pool.items()}
        dists: dict[str, BaseDistribution] = {}
        for t in searched:
            dists.update(t.distributions)
        for _, cand_dists, _ in pool.values():
            for name, dist in cand_dists.items():
                dists.setdefault(name, dist)
        x = np.array([encode(t.params, dists) for t in searched])
        y = np.array([float(t.values[0]) for t in searched])
        hashes = list(pool)
        mean, std = self._predict(x, y, np.array([encode(pool[h][0], dists) for h in hashes]))
        scores = [s for s, _ in front] + list(mean)
        e2e_peak = max(m for _, m in front)
        norm = Normalised(min(scores), max(scores), min([*peaks.values(), *(m for _, m in front)]), e2e_peak)
        gains = [expected_improvement(norm, front, mu, sd, peaks[h]) for h, mu, sd in zip(hashes, mean, std, strict=True)]
        best = max(range(len(hashes)), key=lambda i: (gains[i], -peaks[hashes[i]]))
        return pool[hashes[best]][0]

    def _predict(self, x: np.ndarray, y: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        # the hyperparameters start where the last fit ended (one more point moves them little): the
        # likelihood's optimisation is most of the sampler's time, and a warm start needs fewer steps
        kernel = self._kernel if self._kernel is not None and self._kernel.k1.k2.length_scale.shape == (x.shape[1],) \
            else ConstantKernel(1.0) * Matern(length_scale=np.ones(x.shape[1]), nu=2.5) + WhiteKernel(1e-2)
        gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=self._seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(x, y)
            mean, std = gp.predict(xs, return_std=True)
        self._kernel = gp.kernel_
        return mean, std
