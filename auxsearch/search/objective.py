"""One trial's evaluation: design -> (reuse | budget check) -> train on train, score on validation -> values.

The objective never reads the test split: every value it returns and every curve the pruner
compares is a validation score. Objectives are ``(score, memory, [seconds], [params])``; a
design that cannot be trained (over the memory budget, out of memory) is *infeasible*: Optuna's
constraint is set (> 0) and its values are the worst possible for the objectives it did not
reach (score -inf, seconds +inf), with its real memory and parameter count, so no sampler or
front ever mistakes it for a good design. What happens around a trial (heartbeats, surplus
trials, failure streaks) is the loop's (:mod:`auxsearch.search.loop`).
"""

from __future__ import annotations

import math

import optuna
import torch

from auxsearch.design.graph import design_hash, normalize
from auxsearch.design.space import suggest_design
from auxsearch.model.engine import build, end_to_end, resolve_device
from auxsearch.search import pruning
from auxsearch.search.prepare import PreparedStudy
from auxsearch.store.record import SearchAttrs, write
from auxsearch.store.records import feasible, reference_labels
from auxsearch.store.storage import RunStudies
from auxsearch.train import memory
from auxsearch.train.devices import is_out_of_memory, oom_verdict
from auxsearch.train.isolation import (
    TrialOutOfMemory,
    fit_in_subprocess,
    memory_limit,
    peak_reached,
    release_after_oom,
)
from auxsearch.train.loop import fit
from auxsearch.train.result import NonFiniteLoss, TrainResult

COMPLETE = optuna.trial.TrialState.COMPLETE


class RetryTrial(RuntimeError):
    """The trial failed for a reason outside its design (the GPU's memory went to another process):
    the loop records it as failed and enqueues it again."""


class Objective:
    """Evaluates one trial of the search or of its references; returns the objective values."""

    def __init__(self, p: PreparedStudy, studies: RunStudies, progress: bool = False) -> None:
        self.p, self.studies, self.progress = p, studies, progress
        self.reference = False  # whether the trial being evaluated is a reference (set per call)

    def __call__(self, trial: optuna.Trial, reference: bool = False) -> tuple[float, ...]:
        self.reference = reference
        design = normalize(self._design(trial))
        h = design_hash(design)
        write(trial, SearchAttrs, design=design, design_hash=h, K=len(design["splits"]) + 1)
        twin = self._completed_twin(h, trial.number)
        if twin is not None:
            return self._reuse(trial, twin)
        simulated = None
        if self.p.budget is not None or self.p.cfg.memory.mode == "simulated":
            simulated = memory.simulate_in_study(design, self.p.cfg)
            write(trial, SearchAttrs, simulated_peak_bytes=simulated)
        if self.p.budget is not None:
            if SearchAttrs.of(trial).is_e2e:  # the reference is always trained, and marked when over
                write(trial, SearchAttrs, over_budget=simulated > self.p.budget)
            else:
                trial.set_constraint("memory_budget", float(simulated - self.p.budget))
                if simulated > self.p.budget:
                    write(trial, SearchAttrs, reason=f"simulated peak {simulated / 2**20:.1f} MiB exceeds the budget "
                                                     f"{self.p.budget / 2**20:.1f} MiB")
                    return self._infeasible(simulated, design)
        try:
            result, n_params = self._train(design, trial)
        except NonFiniteLoss as exc:
            write(trial, SearchAttrs, reason=f"non-finite loss: {exc}")
            raise optuna.TrialPruned(str(exc)) from None
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            return self._out_of_memory(trial, design, exc, simulated)
        peak = simulated if self.p.cfg.memory.mode == "simulated" else result.peak_memory_bytes
        write(trial, SearchAttrs, history=result.history, seconds=result.seconds, scores=result.scores,
              peak_memory_bytes=peak, device=result.device, parameters=n_params,
              measured_peak_bytes=result.peak_memory_bytes)
        if result.stopped_early:
            raise optuna.TrialPruned(SearchAttrs.of(trial).reason or "dominated")
        return self._values(result.score, peak, result.seconds, n_params)

    def _design(self, trial: optuna.Trial) -> dict:
        a = SearchAttrs.of(trial)
        if a.is_e2e:
            return end_to_end(self.p.base)
        if a.design is not None:
            return dict(a.design)
        return suggest_design(trial, self.p.space, self.p.base, self.p.unit_costs)

    def _refs(self) -> list:
        return self.studies.reference.get_trials(deepcopy=False) if self.studies.reference is not None else []

    def _labelled(self, states=None, but: int | None = None) -> list[tuple[str, optuna.trial.FrozenTrial]]:
        """Every trial of the run with how outputs name it (a reference by its name, a search trial by
        number), but trial ``but`` of the study this objective's trial belongs to."""
        refs = self._refs()
        out = [(label, t, True) for label, t in zip(reference_labels(refs), refs, strict=True)]
        out += [(str(t.number), t, False) for t in self.studies.search.get_trials(deepcopy=False)]
        return [(label, t) for label, t, ref in out
                if (states is None or t.state in states) and not (t.number == but and ref == self.reference)]

    def _completed_twin(self, h: str, number: int) -> tuple[str, optuna.trial.FrozenTrial] | None:
        for label, t in self._labelled((COMPLETE,), but=number):
            a = SearchAttrs.of(t)
            # an out-of-memory verdict is not reused: the next attempt may find the GPU freer
            if a.design_hash == h and a.reused_from is None and "out_of_memory" not in t.constraints:
                return label, t
        return None

    def _reuse(self, trial: optuna.Trial, twin: tuple[str, optuna.trial.FrozenTrial]) -> tuple[float, ...]:
        """An identical design was trained before: record its result instead of training again."""
        label, t = twin
        a = SearchAttrs.of(t)
        copied = {k: getattr(a, k) for k in ("history", "seconds", "scores", "peak_memory_bytes", "reason",
                                             "parameters", "over_budget", "simulated_peak_bytes")}
        write(trial, SearchAttrs, reused_from=label, **{k: v for k, v in copied.items() if k in t.user_attrs})
        for key, value in t.constraints.items():
            trial.set_constraint(key, value)
        return tuple(t.values)

    def _train(self, design: dict, trial: optuna.Trial) -> tuple[TrainResult, int]:
        p = self.p
        on_epoch = self._pruner(trial)
        device = resolve_device(p.cfg.train.device)
        isolate = p.cfg.isolation == "subprocess" or (p.cfg.isolation == "auto" and device.type == "cuda")
        write(trial, SearchAttrs, isolated=isolate)
        if isolate:
            return fit_in_subprocess(design, p.cfg.train, p.data_cfg(), p.path.parent, on_epoch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = fit(design, train=p.cfg.train, data=p.data, progress="nested" if self.progress else False,
                     on_epoch=on_epoch)
        return result, sum(q.numel() for q in result.model.parameters())  # type: ignore[attr-defined]

    def _out_of_memory(self, trial: optuna.Trial, design: dict, exc: Exception, simulated: int | None):
        """Out of memory is a property of the design when its own peak reached the memory it may use (its
        share of the GPU): infeasible. Below that, the memory went to another process on the GPU: tried again."""
        device = str(resolve_device(self.p.cfg.train.device))
        reached, limit = getattr(exc, "reached", None), getattr(exc, "limit", None)
        if not isinstance(exc, TrialOutOfMemory):  # in process: this process's own counters
            reached, limit = peak_reached(device), memory_limit(device)
        verdict = oom_verdict(reached, limit)
        message = str(exc)[:300]
        release_after_oom(exc)
        if verdict == "retry":
            raise RetryTrial(f"out of memory at {reached / 2**20:.0f} MiB of the {limit / 2**20:.0f} MiB this process "
                             f"may use: the rest went to another process on the GPU: {message}")
        if reached is None:
            try:
                reached = simulated if simulated is not None else memory.simulate_in_study(design, self.p.cfg)
            except Exception:  # the simulation may not fit either; the reason says what happened
                reached = None
        shown = "an unknown amount" if reached is None else f"about {reached / 2**20:.1f} MiB"
        write(trial, SearchAttrs, reason=f"out of memory at {shown}: {message}")
        trial.set_constraint("out_of_memory", 1.0)
        return self._infeasible(reached, design)

    def _values(self, score: float, peak: float, seconds: float, n_params: float) -> tuple[float, ...]:
        extra = {"seconds": seconds, "params": float(n_params)}
        return (score, float(peak), *(extra[o] for o in self.p.cfg.objectives[2:]))

    def _infeasible(self, peak: int | None, design: dict) -> tuple[float, ...]:
        """Worst values for what was not reached; the real peak (or +inf) and parameter count."""
        n_params = sum(q.numel() for q in build(design).parameters()) if "params" in self.p.cfg.objectives else 0
        return self._values(-math.inf, math.inf if peak is None else peak, math.inf, n_params)

    # ------------------------------------------------------------------ pruning

    def _pruner(self, trial: optuna.Trial):
        """Stop a trial early by the study's rule, on validation scores; memory compared in one unit.

        Memory is the trial's scored peak: simulated in simulated mode, the measured first two steps
        otherwise (known after its first epoch). The E2E reference is never stopped.
        """
        p = self.p.cfg.pruning
        simulated_mode = self.p.cfg.memory.mode == "simulated"

        def on_epoch(result: TrainResult) -> bool:
            a = SearchAttrs.of(trial)
            mine = a.simulated_peak_bytes if simulated_mode else result.peak_memory_bytes
            write(trial, SearchAttrs, history=list(result.history), peak_memory_bytes=mine)
            if not p.enabled or a.is_e2e:
                return False
            if p.mode == "halving":
                why = pruning.halving(result.history, mine, self._peers(trial.number), p, self.p.cfg.train.epochs)
            else:
                why = pruning.dominated(result.history, mine, self._rivals(), p)
            if why is not None:
                write(trial, SearchAttrs, reason=why)
            return why is not None

        return on_epoch

    def _rivals(self) -> list[pruning.Curve]:
        """The completed feasible trials (the ``dominated`` rule)."""
        return [pruning.Curve(label, list(t.user_attrs.get("history", [])), t.values[1])
                for label, t in self._labelled((COMPLETE,)) if feasible(t)]

    def _peers(self, number: int) -> list[pruning.Curve]:
        """Every other feasible trial with a curve and a peak, not a reuse (halving)."""
        out = []
        for label, t in self._labelled(but=number):
            a = SearchAttrs.of(t)
            if a.reused_from is None and feasible(t) and a.peak_memory_bytes is not None:
                out.append(pruning.Curve(label, a.history, a.peak_memory_bytes))
        return out
