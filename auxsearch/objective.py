"""One search trial's life: design -> (reuse | budget check) -> train on train, score on validation -> values.

The objective never reads the test split: every value it returns and every curve the
pruner compares is a validation score. Objectives are ``(score, memory, [seconds],
[params])``; a design that cannot be trained (over the memory budget, out of memory)
is *infeasible*: Optuna's constraint is set (> 0) and its values are the worst
possible for the objectives it did not reach (score -inf, seconds +inf), with its real
memory and parameter count, so no sampler or front ever mistakes it for a good design.
"""

from __future__ import annotations

import math
import traceback
from typing import TYPE_CHECKING

import optuna
import torch

from . import memory
from .engine import build, end_to_end, resolve_device
from .graph import design_hash, normalize
from .isolation import TrialOutOfMemory, fit_in_subprocess, is_out_of_memory, peak_reached
from .pareto import halving_keeps, rungs
from .space import suggest_design
from .training import NonFiniteLoss, TrainResult, fit, resolve_data_cfg

if TYPE_CHECKING:
    from .study import Run

COMPLETE, PRUNED, RUNNING = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                             optuna.trial.TrialState.RUNNING)


class SurplusTrial(RuntimeError):
    """Raised in a trial the study no longer needs (recorded as FAIL with this reason)."""


def feasible(t: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in t.constraints.values())


class Objective:
    """Called by Optuna once per trial; returns the objective values."""

    def __init__(self, run: Run, progress: bool = False, n_trials: int | None = None, worker: int = 0,
                 seed: int | None = None) -> None:
        self.run, self.progress, self.n_trials, self.worker, self.seed = run, progress, n_trials, worker, seed

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        from .distributed import Heartbeat

        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("sampler_seed", self.seed)
        try:
            self._refuse_surplus(trial)
            with Heartbeat(trial):
                return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("reason", f"{type(exc).__name__}: {exc}")
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            raise

    def _refuse_surplus(self, trial: optuna.Trial) -> None:
        """With parallel workers two may start the last trial at once: the higher number yields."""
        if self.n_trials is None:
            return
        ahead = [t for t in trial.study.get_trials(deepcopy=False)
                 if t.state in (COMPLETE, PRUNED) or (t.state == RUNNING and t.number < trial.number)]
        if len(ahead) >= self.n_trials:
            raise SurplusTrial(f"not needed: {len(ahead)} trials were finished or running when it started")

    def _design(self, trial: optuna.Trial) -> dict:
        if trial.user_attrs.get("is_e2e"):
            return end_to_end(self.run.base)
        if "design" in trial.user_attrs:
            return dict(trial.user_attrs["design"])
        return suggest_design(trial, self.run.space, self.run.base, self.run.unit_costs)

    def _evaluate(self, trial: optuna.Trial) -> tuple[float, ...]:
        run = self.run
        design = normalize(self._design(trial))
        h = design_hash(design)
        for key, value in (("design", design), ("design_hash", h), ("K", len(design["splits"]) + 1)):
            trial.set_user_attr(key, value)
        twin = _completed_twin(trial.study, h, trial.number)
        if twin is not None:
            return self._reuse(trial, twin)
        simulated = None
        if run.budget is not None or run.cfg.memory.mode == "simulated":
            simulated = self._simulate(design)
            trial.set_user_attr("simulated_peak_bytes", simulated)
        if run.budget is not None:
            if trial.user_attrs.get("is_e2e"):  # the reference is always trained, and marked when over
                trial.set_user_attr("over_budget", simulated > run.budget)
            else:
                trial.set_constraint("memory_budget", float(simulated - run.budget))
                if simulated > run.budget:
                    trial.set_user_attr("reason", f"simulated peak {simulated} B exceeds the budget {run.budget} B")
                    return self._infeasible(simulated, design)
        try:
            result, n_params = self._train(design, trial, simulated)
        except NonFiniteLoss as exc:
            trial.set_user_attr("reason", f"non-finite loss: {exc}")
            raise optuna.TrialPruned(str(exc)) from None
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            return self._out_of_memory(trial, design, exc, simulated)
        peak = simulated if run.cfg.memory.mode == "simulated" else result.peak_memory_bytes
        for key, value in (("history", result.history), ("seconds", result.seconds), ("scores", result.scores),
                           ("peak_memory_bytes", peak), ("device", result.device), ("parameters", n_params),
                           ("measured_peak_bytes", result.peak_memory_bytes)):
            trial.set_user_attr(key, value)
        if result.stopped_early:
            raise optuna.TrialPruned(trial.user_attrs.get("reason", "dominated"))
        return self._values(result.score, peak, result.seconds, n_params)

    def _reuse(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> tuple[float, ...]:
        """An identical design was trained before: record its result instead of training again."""
        trial.set_user_attr("reused_from", twin.number)
        for key in ("history", "seconds", "scores", "peak_memory_bytes", "reason", "parameters", "over_budget",
                    "simulated_peak_bytes"):
            if key in twin.user_attrs:
                trial.set_user_attr(key, twin.user_attrs[key])
        for key, value in twin.constraints.items():
            trial.set_constraint(key, value)
        return tuple(twin.values)

    def _train(self, design: dict, trial: optuna.Trial, simulated: int | None) -> tuple[TrainResult, int]:
        run = self.run
        on_epoch = self._pruner(trial)
        device = resolve_device(run.cfg.train.device)
        isolate = run.cfg.isolation == "subprocess" or (run.cfg.isolation == "auto" and device.type == "cuda")
        trial.set_user_attr("isolated", isolate)
        if isolate:
            data = resolve_data_cfg(run.cfg.data, run.path.parent, run.base["task"]["name"])
            return fit_in_subprocess(design, run.cfg.train, data, run.path.parent, on_epoch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = fit(design, train=run.cfg.train, data=run.data, progress="nested" if self.progress else False,
                     on_epoch=on_epoch)
        return result, sum(p.numel() for p in result.model.parameters())  # type: ignore[attr-defined]

    def _out_of_memory(self, trial: optuna.Trial, design: dict, exc: Exception, simulated: int | None):
        """Out of memory is a property of the design, not a crash: record it as infeasible."""
        reached = getattr(exc, "reached", None)
        if reached is None and not isinstance(exc, TrialOutOfMemory):  # in process: this process's own counter
            reached = peak_reached(str(resolve_device(self.run.cfg.train.device)))
        if reached is None:
            try:
                reached = simulated if simulated is not None else self._simulate(design)
            except Exception:  # the simulation may not fit either; the reason says what happened
                reached = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        trial.set_user_attr("reason", f"out of memory at about {reached} B: {str(exc)[:300]}")
        trial.set_constraint("out_of_memory", 1.0)
        return self._infeasible(reached, design)

    def _simulate(self, design: dict) -> int:
        return memory.simulate_in_study(design, self.run.cfg)

    def _values(self, score: float, peak: float, seconds: float, n_params: float) -> tuple[float, ...]:
        extra = {"seconds": seconds, "params": float(n_params)}
        return (score, float(peak), *(extra[o] for o in self.run.cfg.objectives[2:]))

    def _infeasible(self, peak: int | None, design: dict) -> tuple[float, ...]:
        """Worst values for what was not reached; the real peak (or +inf) and parameter count."""
        n_params = sum(p.numel() for p in build(design).parameters()) if "params" in self.run.cfg.objectives else 0
        return self._values(-math.inf, math.inf if peak is None else peak, math.inf, n_params)

    def _pruner(self, trial: optuna.Trial):
        """Stop a trial early by the study's rule, on validation scores; memory compared in one unit.

        Memory is the trial's scored peak: simulated in simulated mode, the measured first two steps
        otherwise (known after its first epoch). The E2E reference is never stopped.
        """
        p = self.run.cfg.pruning
        simulated_mode = self.run.cfg.memory.mode == "simulated"
        decide = self._halving if p.mode == "halving" else self._dominated

        def on_epoch(result: TrainResult) -> bool:
            mine = trial.user_attrs["simulated_peak_bytes"] if simulated_mode else result.peak_memory_bytes
            trial.set_user_attr("history", list(result.history))
            trial.set_user_attr("peak_memory_bytes", mine)
            if not p.enabled or trial.user_attrs.get("is_e2e"):
                return False
            return decide(trial, result.history, mine)

        return on_epoch

    def _dominated(self, trial: optuna.Trial, history: list[float], mine: float) -> bool:
        """A completed feasible rival with no more memory scored better by the margin at the same epoch."""
        p = self.run.cfg.pruning
        epoch = len(history)
        if epoch <= p.warmup_epochs:
            return False
        limit = mine * (1 + p.memory_tolerance)
        rivals = [t.number for t in trial.study.get_trials(deepcopy=False, states=(COMPLETE,))
                  if feasible(t) and t.values[1] <= limit and len(t.user_attrs.get("history", [])) >= epoch
                  and t.user_attrs["history"][epoch - 1] >= history[-1] + p.margin]
        if len(rivals) >= p.min_rivals:
            room = "no more memory" if p.memory_tolerance == 0 else f"at most {1 + p.memory_tolerance:g}x its memory"
            trial.set_user_attr("reason", f"epoch {epoch}: validation {history[-1]:.4f} dominated by "
                                f"trials {rivals[:5]} (better by >= {p.margin:g} at the same epoch, {room})")
            return True
        return False

    def _halving(self, trial: optuna.Trial, history: list[float], mine: float) -> bool:
        """At a rung, go on only in the top 1/eta of the trials that reached it (non-dominated rank first)."""
        p = self.run.cfg.pruning
        epoch = len(history)
        if epoch not in rungs(p.min_epochs, p.reduction_factor, self.run.cfg.train.epochs):
            return False
        peers = [(t.user_attrs["history"][epoch - 1], t.user_attrs["peak_memory_bytes"])
                 for t in trial.study.get_trials(deepcopy=False)
                 if t.number != trial.number and "reused_from" not in t.user_attrs and feasible(t)
                 and len(t.user_attrs.get("history", [])) >= epoch and "peak_memory_bytes" in t.user_attrs]
        if halving_keeps((history[-1], mine), peers, p.reduction_factor):
            return False
        trial.set_user_attr("reason", f"halving rung at epoch {epoch}: validation {history[-1]:.4f} at "
                            f"{mine} B not in the top 1/{p.reduction_factor} of {len(peers) + 1} trials")
        return True


def _completed_twin(study: optuna.Study, h: str, number: int) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(COMPLETE,)):
        if t.user_attrs.get("design_hash") == h and t.number != number and "reused_from" not in t.user_attrs:
            return t
    return None
