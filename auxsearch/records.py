"""Stored Optuna trials -> :class:`~auxsearch.pareto.TrialRecord` (what every output reads).

A run's storage holds two studies: the search (``<name>``) and its confirmation
(``<name>:confirm``, one trial per design and seed). Records of the search carry the
confirmation of their design, joined by design hash.
"""

from __future__ import annotations

from collections import defaultdict

import optuna

from .pareto import Confirmation, TrialRecord, finite, stat
from .storage import load_study

CONFIRM_SUFFIX = ":confirm"


def confirm_study_name(name: str) -> str:
    return name + CONFIRM_SUFFIX


def _feasible(t: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in t.constraints.values())


def _record(t: optuna.trial.FrozenTrial) -> TrialRecord:
    ua = t.user_attrs
    state = t.state.name
    if state == "COMPLETE" and not _feasible(t):
        state = "INFEASIBLE"
    peak = t.values[1] if t.values else ua.get("peak_memory_bytes")
    return {"number": t.number, "state": state,
            "score": t.values[0] if t.values and state == "COMPLETE" else None,
            "peak_memory_bytes": int(peak) if finite(peak) else None,
            "measured_peak_bytes": ua.get("measured_peak_bytes"),
            "seconds": ua.get("seconds"), "design_hash": ua.get("design_hash"), "params": dict(t.params),
            "design": ua.get("design"), "is_e2e": bool(ua.get("is_e2e")), "K": ua.get("K"),
            "reused_from": ua.get("reused_from"), "history": list(ua.get("history", [])),
            "reason": ua.get("reason"), "enqueued": ua.get("enqueued"), "scores": dict(ua.get("scores") or {}),
            "over_budget": bool(ua.get("over_budget")), "confirmed": None}


def confirmations(study: optuna.Study | None) -> dict[str, Confirmation]:
    """Design hash -> its confirmation, from the COMPLETE trials of a confirmation study."""
    if study is None:
        return {}
    runs: dict[str, list[dict]] = defaultdict(list)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        runs[t.user_attrs["design_hash"]].append(t.user_attrs)
    out: dict[str, Confirmation] = {}
    for h, rs in runs.items():
        rs.sort(key=lambda u: u["seed"])
        metrics = sorted(set.intersection(*(set(u["test_scores"]) for u in rs)))
        out[h] = {"seeds": [u["seed"] for u in rs], "val": stat([u["val_score"] for u in rs]),
                  "test": stat([u["test_score"] for u in rs]),
                  "peak_memory_bytes": int(round(sum(u["peak_memory_bytes"] for u in rs) / len(rs))),
                  "test_scores": {m: stat([u["test_scores"][m] for u in rs]) for m in metrics}}
    return out


def records(study: optuna.Study, confirm: optuna.Study | None = None) -> list[TrialRecord]:
    """Every search trial as a record, with its design's confirmation when there is one."""
    conf = confirmations(confirm)
    out = [_record(t) for t in study.get_trials(deepcopy=False)]
    for r in out:
        if r["state"] == "COMPLETE" and r["design_hash"] in conf:
            r["confirmed"] = conf[r["design_hash"]]
    return out


def open_confirm(storage, name: str, *, create: bool) -> optuna.Study | None:
    """The confirmation study beside search study ``name`` (None when absent and not created)."""
    if create:
        return optuna.create_study(storage=storage, study_name=confirm_study_name(name), direction="maximize",
                                   load_if_exists=True)
    try:
        return optuna.load_study(study_name=confirm_study_name(name), storage=storage)
    except KeyError:
        return None


def load_records(storage_url: str, name: str) -> list[TrialRecord]:
    """Records of a stored run, for ``show`` / ``plot`` / ``export``."""
    study = load_study(storage_url, name)
    return records(study, open_confirm(study._storage, name, create=False))
