"""Pareto maths on trial records: fronts, the knee, hypervolume. Pure functions, no plotting.

Scores are maximised, peak memory minimised. Two fronts exist:

* the **search front** (:func:`pareto_front`): non-dominated COMPLETE trials by their
  single-seed *validation* score -- what the search saw;
* the **confirmed front** (:func:`confirmed_front`): designs retrained with several seeds,
  compared by their mean validation score with the seed spread taken into account (see
  :func:`clearly_dominates`) -- what a user should choose from.

Test scores are never an input here; they are carried in records for reporting only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypedDict

from auxsearch.errors import AuxsearchError, ConfigError


class Stat(TypedDict):
    """A score over seeds: every value, the mean and the sample standard deviation."""

    values: list[float]
    mean: float
    std: float  # 0.0 with one seed


class Confirmation(TypedDict):
    """A design retrained with several seeds after the search (``auxsearch confirm``)."""

    seeds: list[int]
    val: Stat  # the search's metric on the validation split
    test: Stat  # the same metric on the held-out test split (reported, never chosen on)
    peak_memory_bytes: int
    test_scores: dict[str, Stat]  # every metric the task reports on test


class TrialRecord(TypedDict):
    """One trained (or tried) design of a run as plain data (what outputs, the report and export read)."""

    trial: str  # how a user names it: "12" (search trial 12), "e2e", "man_k4" (references)
    number: int  # the Optuna trial number in its own study
    reference: bool  # from the reference study (E2E, enqueued designs), not drawn by the sampler
    state: str  # COMPLETE, PRUNED, INFEASIBLE, FAIL, RUNNING, WAITING
    score: float | None  # validation score (the objective); None unless COMPLETE
    peak_memory_bytes: int | None  # the scored peak: measured, or simulated at the target scale
    measured_peak_bytes: int | None  # the first two steps measured on the trial's own (proxy) scale
    seconds: float | None
    design_hash: str | None
    params: dict[str, Any]
    design: dict[str, Any] | None
    is_e2e: bool
    K: int | None
    reused_from: int | None
    history: list[float]  # validation score after each epoch
    reason: str | None
    enqueued: str | None
    scores: dict[str, float]  # every validation metric of the last epoch
    over_budget: bool  # the E2E reference breaks the memory budget (trained anyway)
    confirmed: Confirmation | None


def order(r: TrialRecord) -> tuple[int, int]:
    """The order trials ran in, as far as outputs care: references first, then search trials by number."""
    return (0 if r.get("reference") else 1, r["number"])


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def scored(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The COMPLETE records that carry a finite score and peak memory."""
    return [r for r in records if r.get("state") == "COMPLETE"
            and finite(r.get("score")) and finite(r.get("peak_memory_bytes"))]


def stat(values: Sequence[float]) -> Stat:
    vals = [float(v) for v in values]
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"values": vals, "mean": mean, "std": std}


def pareto_front(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Non-dominated COMPLETE records (max validation score, min memory), by memory ascending.

    Of several records at exactly the same point only the first (:func:`order`) is
    kept (a reused result must not crowd the front).
    """
    ordered = sorted(scored(records), key=lambda r: (r["peak_memory_bytes"], -r["score"], order(r)))
    front: list[TrialRecord] = []
    best = -math.inf
    for r in ordered:  # everything before r uses no more memory than r
        if r["score"] > best:
            front.append(r)
            best = r["score"]
    return front


def confirmed(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Records whose design was retrained with seeds, one per design (the first, :func:`order`)."""
    seen: set[str] = set()
    out = []
    for r in sorted(records, key=order):
        if r.get("confirmed") and r.get("design_hash") not in seen:
            seen.add(r["design_hash"])
            out.append(r)
    return out


def clearly_dominates(b: TrialRecord, a: TrialRecord) -> bool:
    """Confirmed ``b`` beats confirmed ``a``: no more memory, and validation intervals mean +- std apart.

    ``b.mean - b.std > a.mean + a.std``. A gap inside the seeds' spread is noise, so it
    dominates nothing, whatever the memory.
    """
    cb, ca = b.get("confirmed"), a.get("confirmed")
    if cb is None or ca is None or cb["peak_memory_bytes"] > ca["peak_memory_bytes"]:
        return False
    return cb["val"]["mean"] - cb["val"]["std"] > ca["val"]["mean"] + ca["val"]["std"]


def confirmed_front(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Confirmed designs that no other confirmed design clearly dominates, by memory ascending.

    Designs whose means differ by less than their spreads stay side by side: the seeds
    cannot tell them apart (:func:`clearly_dominates`).
    """
    done = confirmed(records)
    kept = [a for a in done if not any(b is not a and clearly_dominates(b, a) for b in done)]
    return sorted(kept, key=lambda r: (r["confirmed"]["peak_memory_bytes"], -r["confirmed"]["val"]["mean"],
                                       order(r)))


def val_mean(r: TrialRecord) -> float:
    """The score a choice is made on: the confirmed validation mean, else the search's validation score."""
    c = r.get("confirmed")
    return float(c["val"]["mean"]) if c else float(r["score"])


def memory_of(r: TrialRecord) -> int:
    c = r.get("confirmed")
    return int(c["peak_memory_bytes"]) if c else int(r["peak_memory_bytes"])


def choice_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The front a user chooses from: the confirmed front when any design was confirmed."""
    return confirmed_front(records) if confirmed(records) else pareto_front(records)


def knee(front: Sequence[TrialRecord], score: Callable[[TrialRecord], float] = val_mean,
         memory: Callable[[TrialRecord], float] = memory_of) -> TrialRecord:
    """The front record farthest from the line joining the front's two extremes, axes min-max normalised.

    The distance is signed: only points on the good side (less memory, higher score) can win.
    With fewer than three points it is the highest-scoring one."""
    if not front:
        raise AuxsearchError("the Pareto front is empty (no COMPLETE trial yet), so it has no knee")
    pts = sorted(front, key=lambda r: (memory(r), -score(r)))
    if len(pts) < 3:
        return max(pts, key=score)
    xs, ys = _unit([memory(r) for r in pts]), _unit([score(r) for r in pts])
    (ax, ay), (bx, by) = (xs[0], ys[0]), (xs[-1], ys[-1])
    side = [(bx - ax) * (y - ay) - (by - ay) * (x - ax) for x, y in zip(xs, ys, strict=True)]  # > 0: above-left
    return pts[max(range(len(pts)), key=lambda i: (side[i], ys[i]))]


def _unit(values: Sequence[float]) -> list[float]:
    """Min-max normalise to [0, 1] (all zeros when the values are equal)."""
    lo, span = min(values), (max(values) - min(values)) or 1.0
    return [(v - lo) / span for v in values]


def hypervolume_2d(points: Iterable[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``(score, memory)`` points up to ``ref``; points outside its box add nothing."""
    s_ref, m_ref = ref
    inside = sorted((m, s) for s, m in points if finite(s) and finite(m) and s > s_ref and m < m_ref)
    ends = [m for m, _ in inside[1:]] + [m_ref]  # [m_ref] alone when nothing is inside: no steps
    area, best = 0.0, s_ref
    for (m, s), end in zip(inside, ends, strict=False):  # staircase, left to right
        best = max(best, s)
        area += (end - m) * (best - s_ref)
    return area


@dataclass(frozen=True)
class Normalised:
    """Objectives scaled to the unit square for the hypervolume (the same in the report and the benchmark).

    Score runs from the worst (0) to the best (1) scored design, memory from the lightest
    design (0) to the end-to-end reference's peak (1); the reference point ``REF`` sits just
    beyond the worst corner, so every scored design inside the box adds area and the whole
    square is 1. A few points of accuracy then weigh as much as they do to a user, instead of
    vanishing against a reference at score 0; designs above E2E's memory add nothing.
    """

    s_lo: float
    s_hi: float
    m_lo: float
    m_hi: float
    REF: ClassVar[tuple[float, float]] = (-0.01, 1.01)

    def point(self, score: float, peak: float) -> tuple[float, float]:
        return ((score - self.s_lo) / ((self.s_hi - self.s_lo) or 1.0),
                (peak - self.m_lo) / ((self.m_hi - self.m_lo) or 1.0))

    def hypervolume(self, points: Iterable[tuple[float, float]]) -> float:
        """Normalised hypervolume of raw ``(score, peak bytes)`` points."""
        return hypervolume_2d([self.point(s, m) for s, m in points], self.REF)


def normaliser(records: Iterable[TrialRecord]) -> Normalised | None:
    """The :class:`Normalised` bounds of a study's scored trials (None before any); memory's top is E2E's
    peak, or the largest peak without an E2E result."""
    done = scored(records)
    if not done:
        return None
    scores = [float(r["score"]) for r in done]
    peaks = [float(r["peak_memory_bytes"]) for r in done]
    e2e = [r for r in done if r.get("is_e2e")]
    top = float(e2e[0]["peak_memory_bytes"]) if e2e else max(peaks)
    return Normalised(min(scores), max(scores), min(peaks), top)


def hypervolume_history(records: Iterable[TrialRecord]) -> list[tuple[str, float]]:
    """``[(trial, normalised hypervolume of the COMPLETE trials up to it), ...]`` in :func:`order`, all on the
    bounds of the whole study (:func:`normaliser`), so the curve only rises and ends at the front's hypervolume."""
    records = list(records)
    norm = normaliser(records)
    out: list[tuple[str, float]] = []
    front: list[tuple[float, float]] = []
    volume = 0.0
    for r in sorted(records, key=order):
        if scored([r]):
            s, m = float(r["score"]), float(r["peak_memory_bytes"])
            if not any(fs >= s and fm <= m for fs, fm in front):
                front = [(fs, fm) for fs, fm in front if not (s >= fs and m <= fm)] + [(s, m)]
                volume = norm.hypervolume(front)
        out.append((r["trial"], volume))
    return out


def e2e_record(records: Iterable[TrialRecord]) -> TrialRecord | None:
    """The end-to-end reference: the first COMPLETE one, else the first with a peak."""
    cands = [r for r in records if r.get("is_e2e") and finite(r.get("peak_memory_bytes"))]
    cands.sort(key=lambda r: (r.get("state") != "COMPLETE", order(r)))
    return cands[0] if cands else None


# ----------------------------------------------------------------- successive halving

def nondominated_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Rank 0 for the (score up, memory down) front, 1 for the front of the rest, ..."""
    rank_of: dict[int, int] = {}
    left = set(range(len(points)))
    while left:
        front = {i for i in left if not any(
            points[j][0] >= points[i][0] and points[j][1] <= points[i][1] and points[j] != points[i] for j in left)}
        rank_of.update(dict.fromkeys(front, len(set(rank_of.values()))))
        left -= front
    return [rank_of[i] for i in range(len(points))]


def halving_keeps(mine: tuple[float, float], others: Sequence[tuple[float, float]], eta: int,
                  min_peers: int | None = None) -> bool:
    """Does a trial at ``mine`` = (score, memory) go on past a rung that ``others`` also reached?

    Multi-objective successive halving in the spirit of MO-ASHA (Schmucker et al. 2021): the
    trials that reached the rung are ranked by non-dominated sorting on (validation score
    at the rung's epoch, peak memory); within one rank, the higher score first (ties by
    arrival: the trial deciding now comes last). The top ``ceil(n / eta)``
    go on. Until ``min_peers`` (default ``eta``) trials have reached the rung, every trial goes on:
    an asynchronous rung never stops the first arrivals for lack of company.
    """
    points = [*others, mine]
    n = len(points)
    if n < (eta if min_peers is None else min_peers):
        return True
    ranks = nondominated_ranks(points)
    # Within a rank no point dominates another, so a higher score there also means more memory (equal
    # scores mean equal memory): ordering by score orders by memory too. sorted() is stable and the
    # deciding trial is last in `points`: exact ties go to the earlier arrivals.
    order = sorted(range(n), key=lambda i: (ranks[i], -points[i][0]))
    return order.index(n - 1) < math.ceil(n / eta)


def rungs(min_epochs: int, eta: int, epochs: int) -> list[int]:
    """Epochs after which halving decides: min_epochs, min_epochs * eta, ... below the last epoch."""
    out, r = [], min_epochs
    while r < epochs:
        out.append(r)
        r *= eta
    return out


def find(records: Sequence[TrialRecord], trial: str | int, option: str = "--trial") -> TrialRecord:
    """The record a user names: a search trial's number or a reference's name (``e2e``, ``man_k4``;
    a reference tried more than once is its completed attempt, else its last)."""
    name = str(trial)
    exact = [r for r in records if r["trial"] == name]
    attempts = [r for r in records if r.get("reference") and r["trial"].split("#")[0] == name]
    if exact and not (exact[0].get("reference") and len(attempts) > 1):
        return exact[0]
    if attempts:
        done = [r for r in attempts if r["state"] == "COMPLETE"]
        return (done or attempts)[-1 if not done else 0]
    refs = sorted({r["trial"].split("#")[0] for r in records if r.get("reference")})
    searched = [r["number"] for r in records if not r.get("reference")]
    span = f"search trials {min(searched)}..{max(searched)}" if searched else "no search trials"
    raise ConfigError(option, f"no trial {name} in this run ({span}; references: {', '.join(refs) or 'none'})")
