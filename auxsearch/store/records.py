"""Stored Optuna trials -> :class:`~auxsearch.pareto.TrialRecord` (what every output reads).

A run's storage holds the search (``<name>``), its references (``<name>:reference``: the
end-to-end reference and the enqueued designs) and its confirmation (``<name>:confirm``);
:func:`records` gives the references first, then the search trials, each search or reference
record carrying the confirmation of its design (joined by design hash).

A record's ``trial`` is how a user names it: a search trial by its number (``"12"``), a
reference by its name (``"e2e"``, ``"man_k4"``, a design file's stem), a second attempt of a
reference with ``#2`` after it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import optuna

from auxsearch.pareto import Confirmation, TrialRecord, finite, stat
from auxsearch.store.record import ConfirmAttrs, SearchAttrs
from auxsearch.store.storage import RunStudies, open_run


def feasible(t: optuna.trial.FrozenTrial) -> bool:
    """Every constraint met (an out-of-memory or over-budget design sets one above 0)."""
    return all(v <= 0 for v in t.constraints.values())


def reference_name(enqueued: str | None) -> str:
    """How a reference is named by the user: ``e2e``, a published design's name, a design file's stem."""
    if not enqueued:
        return "ref"
    return Path(enqueued).stem if enqueued.endswith((".yaml", ".yml")) else enqueued


def _record(t: optuna.trial.FrozenTrial, label: str, reference: bool) -> TrialRecord:
    a = SearchAttrs.of(t)
    state = t.state.name
    if state == "COMPLETE" and not feasible(t):
        state = "INFEASIBLE"
    peak = t.values[1] if t.values else a.peak_memory_bytes
    return {"trial": label, "number": t.number, "reference": reference, "state": state,
            "score": t.values[0] if t.values and state == "COMPLETE" else None,
            "peak_memory_bytes": int(peak) if finite(peak) else None,
            "measured_peak_bytes": a.measured_peak_bytes, "seconds": a.seconds, "design_hash": a.design_hash,
            "params": dict(t.params), "design": a.design, "is_e2e": a.is_e2e, "K": a.K,
            "reused_from": a.reused_from, "history": list(a.history), "reason": a.reason, "enqueued": a.enqueued,
            "scores": dict(a.scores), "over_budget": a.over_budget, "confirmed": None}


def confirmations(study: optuna.Study | None) -> dict[str, Confirmation]:
    """Design hash -> its confirmation, from the COMPLETE trials of a confirmation study."""
    if study is None:
        return {}
    runs: dict[str, list[ConfirmAttrs]] = defaultdict(list)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        a = ConfirmAttrs.of(t)
        runs[a.design_hash].append(a)
    out: dict[str, Confirmation] = {}
    for h, rs in runs.items():
        rs.sort(key=lambda a: a.seed)
        metrics = sorted(set.intersection(*(set(a.test_scores) for a in rs)))
        out[h] = {"seeds": [a.seed for a in rs], "val": stat([a.val_score for a in rs]),
                  "test": stat([a.test_score for a in rs]),
                  "peak_memory_bytes": int(round(sum(a.peak_memory_bytes for a in rs) / len(rs))),
                  "test_scores": {m: stat([a.test_scores[m] for a in rs]) for m in metrics}}
    return out


def reference_labels(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """The label of each reference trial, in order: its name, then ``name#2``, ``name#3`` for later attempts."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for t in trials:
        name = reference_name(SearchAttrs.of(t).enqueued)
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def records(studies: RunStudies) -> list[TrialRecord]:
    """Every reference and search trial as a record, with its design's confirmation when there is one."""
    refs = studies.reference.get_trials(deepcopy=False) if studies.reference is not None else []
    out = [_record(t, label, True) for t, label in zip(refs, reference_labels(refs), strict=True)]
    out += [_record(t, str(t.number), False) for t in studies.search.get_trials(deepcopy=False)]
    conf = confirmations(studies.confirm)
    for r in out:
        if r["state"] == "COMPLETE" and r["design_hash"] in conf:
            r["confirmed"] = conf[r["design_hash"]]
    return out


def load_records(storage_url: str, name: str) -> list[TrialRecord]:
    """Records of a stored run, for ``show`` / ``plot`` / ``export`` (reads only)."""
    return records(open_run(storage_url, name, writes=False))
