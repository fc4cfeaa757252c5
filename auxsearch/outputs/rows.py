"""The front of a run, computed once: every output (tables, JSON, CSV, YAML, the report, export) reads it.

:func:`front_view` turns a run's records into a :class:`FrontView`: the end-to-end reference,
the search front (single-seed validation scores), the confirmed designs and their front (means
over seeds, dominated only beyond the spread), *the* front a user chooses from (the confirmed
one when any design was confirmed, else the search front), its one knee, and who dominates whom.
:func:`entry` is one design as every machine-readable output gives it (keys in
docs/methodology.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from auxsearch.pareto import (
    TrialRecord,
    clearly_dominates,
    confirmed,
    confirmed_front,
    e2e_record,
    knee,
    memory_of,
    pareto_front,
    scored,
)


@dataclass
class FrontView:
    """A run's records and everything derived from them that an output shows."""

    records: list[TrialRecord]
    e2e: TrialRecord | None  # the COMPLETE end-to-end reference (None: none completed yet)
    search_front: list[TrialRecord]  # by single-seed validation score, lightest first
    confirmed: list[TrialRecord]  # every confirmed design, one record per design
    confirmed_front: list[TrialRecord]
    front: list[TrialRecord]  # what a user chooses from: the confirmed front if any, else the search front
    knee: TrialRecord | None  # the front's knee (its natural compromise); the one every output names
    dominated_by: dict[str, list[str]] = field(default_factory=dict)  # trial -> the trials that dominate it

    @property
    def kind(self) -> str:
        """``confirmed`` or ``search`` (single seed): which front :attr:`front` is."""
        return "confirmed" if self.confirmed else "search"

    @property
    def e2e_peak(self) -> int | None:
        """E2E's peak in the front's unit (its confirmed mean when confirmed): the ``x E2E`` base."""
        return memory_of(self.e2e) if self.e2e is not None else None

    def on_front(self, r: TrialRecord) -> bool:
        return any(f["trial"] == r["trial"] for f in self.front)

    def is_knee(self, r: TrialRecord) -> bool:
        return self.knee is not None and self.knee["trial"] == r["trial"]

    def no_e2e_why(self) -> str:
        """Why the run has no E2E reference to compare with (for a one-line note)."""
        tries = [r for r in self.records if r.get("is_e2e")]
        if not tries:
            return "the end-to-end reference has not been trained yet"
        last = tries[-1]
        reason = f": {last['reason']}" if last.get("reason") else ""
        return (f"the end-to-end reference did not complete ({len(tries)} attempt(s), the last "
                f"{last['state'].lower()}{reason}); the next `auxsearch run` trains it again")


def _dominators(view: FrontView) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if view.confirmed:
        for r in view.confirmed:
            out[r["trial"]] = [b["trial"] for b in view.confirmed if b is not r and clearly_dominates(b, r)]
        return out
    for r in scored(view.records):
        out[r["trial"]] = [f["trial"] for f in view.search_front if f is not r
                           and f["score"] >= r["score"] and f["peak_memory_bytes"] <= r["peak_memory_bytes"]
                           and (f["score"], f["peak_memory_bytes"]) != (r["score"], r["peak_memory_bytes"])]
    return out


def front_view(records: Sequence[TrialRecord]) -> FrontView:
    """Everything an output shows of ``records``, computed once."""
    records = list(records)
    e2e = e2e_record(records)
    e2e = e2e if e2e is not None and e2e["state"] == "COMPLETE" else None
    done = confirmed(records)
    search = pareto_front(records)
    cfront = confirmed_front(records) if done else []
    front = cfront if done else search
    view = FrontView(records, e2e, search, done, cfront, front, knee(front) if front else None)
    view.dominated_by = _dominators(view)
    return view


# ----------------------------------------------------------------- one design as data

def families(design: Mapping | None) -> str:
    """Aux families of a compact design, e.g. ``"momentum x3"`` or ``"dgl x1, infopro x2"``."""
    if not design:
        return "-"
    aux = design.get("aux") or []
    if not aux:
        return "none (end-to-end)"
    counts = Counter(str(a.get("family", "?")) for a in aux)
    return ", ".join(f"{f} x{n}" for f, n in counts.items())


def modules(r: TrialRecord) -> int | None:
    """K as recorded, else counted from the design's splits."""
    splits = (r.get("design") or {}).get("splits")
    return r.get("K") or (len(splits) + 1 if isinstance(splits, list) else 1 if r.get("is_e2e") else None)


def entry(r: TrialRecord, view: FrontView) -> dict[str, Any]:
    """One design as ``show --json``, ``pareto.yaml`` and the CSV / markdown rows give it."""
    c = r.get("confirmed")
    base = view.e2e_peak
    peak = memory_of(r) if r.get("peak_memory_bytes") is not None else None
    return {"trial": r["trial"], "K": modules(r), "design_hash": r["design_hash"], "is_e2e": r["is_e2e"],
            "reference": bool(r.get("reference")), "enqueued": r.get("enqueued"),
            "val_score": r["score"], "val_scores": r.get("scores") or {},
            "peak_memory_bytes": peak, "measured_peak_bytes": r.get("measured_peak_bytes"),
            "ratio_to_e2e_memory": round(peak / base, 4) if base and peak is not None else None,
            "seconds": r["seconds"], "over_budget": r.get("over_budget", False),
            "on_front": view.on_front(r), "knee": view.is_knee(r),
            "dominated_by": view.dominated_by.get(r["trial"], []),
            "confirmed": None if not c else {
                "seeds": c["seeds"], "val_mean": c["val"]["mean"], "val_std": c["val"]["std"],
                "test_mean": c["test"]["mean"], "test_std": c["test"]["std"], "test_values": c["test"]["values"],
                "peak_memory_bytes": c["peak_memory_bytes"],
                "test_scores": {m: {"mean": s["mean"], "std": s["std"]} for m, s in c["test_scores"].items()}}}


def front_rows(view: FrontView) -> list[tuple[str, TrialRecord]]:
    """``(role, record)`` of the E2E reference (first) and every front design, by memory."""
    rows: list[tuple[str, TrialRecord]] = []
    if view.e2e is not None:
        rows.append(("E2E reference" + (", on the front" if view.on_front(view.e2e) else ""), view.e2e))
    rows += [("front", r) for r in view.front if view.e2e is None or r["trial"] != view.e2e["trial"]]
    return rows
