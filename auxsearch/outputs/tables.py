"""The front as text: the tables ``run`` and ``show`` print, and ``show --format json | csv | markdown | yaml``.

Every table reads one :class:`~auxsearch.outputs.rows.FrontView`, so they name the same knee
and the same dominations as the report and ``export --knee``. Scores in the search table are
single-seed validation scores; confirmed designs add validation and test mean +- std over seeds.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any

import yaml

from auxsearch.outputs.rows import FrontView, entry, families, front_rows, front_view, modules
from auxsearch.pareto import TrialRecord
from auxsearch.pareto import finite as _finite

MIB = float(2**20)
SHOW_FORMATS = ("table", "json", "csv", "markdown", "yaml")
# How each task's metric reads in the tables and report (the CSV and YAML outputs keep the short name).
METRIC_LABELS = {"map": "mAP@[.5:.95]", "miou": "mIoU", "psnr": "PSNR (dB)"}
_LEFT = ("trial", "families", "design", "note")  # left-aligned columns


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(str(metric), str(metric))


def mib(n: int | None) -> str:
    """Bytes as people read them: ``12.5 MiB``, ``3.52 GiB``."""
    if n is None:
        return "-"
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def num(x: Any, spec: str = ".4f", scale: float = 1.0) -> str:
    return format(x / scale, spec) if _finite(x) else "-"


def pm(stat: Any) -> str:
    return f"{stat['mean']:.4f} +- {stat['std']:.4f}" if stat else "-"


def ratio(peak: Any, base: Any) -> str:
    return f"{peak / base:.2f}x" if _finite(peak) and _finite(base) and base else "-"


def _notes(view: FrontView, r: TrialRecord, *, search: bool) -> str:
    by = view.dominated_by.get(r["trial"], [])
    notes = [("E2E reference", r["is_e2e"]), ("over budget", r.get("over_budget")),
             ("knee", view.is_knee(r) and (view.kind == "search") == search),
             (f"dominated by {', '.join(f'#{b}' for b in by[:4])}", bool(by) and (view.kind == "search") == search),
             ("front", not search and view.on_front(r) and not r["is_e2e"]),
             (f"reuses #{r.get('reused_from')}", search and r.get("reused_from") is not None),
             (str(r.get("state")).lower(), r.get("state") != "COMPLETE")]
    return ", ".join(n for n, yes in notes if yes)


def search_rows(view: FrontView, metric: str) -> tuple[list[str], list[tuple[list[str], str]]]:
    """The search front (single-seed validation scores) plus the E2E reference, by memory."""
    rows = list(view.search_front)
    if view.e2e is not None and not any(r["trial"] == view.e2e["trial"] for r in rows):
        rows.append(view.e2e)
    rows.sort(key=lambda r: (r["peak_memory_bytes"], r["trial"] != "e2e"))
    base = view.e2e["peak_memory_bytes"] if view.e2e is not None else None
    proxy = any(r.get("measured_peak_bytes") not in (None, r["peak_memory_bytes"]) for r in rows)
    header = ["trial", "K", "families", f"val {metric}", "peak MiB", *(["proxy MiB"] if proxy else []), "vs E2E",
              "seconds", "design", "note"]
    out = []
    for r in rows:
        cells = [r["trial"], str(modules(r) or "-"), families(r.get("design")), num(r.get("score")),
                 num(r["peak_memory_bytes"], ".1f", MIB),
                 *([num(r.get("measured_peak_bytes"), ".1f", MIB)] if proxy else []),
                 ratio(r["peak_memory_bytes"], base), num(r.get("seconds"), ".1f"), str(r.get("design_hash") or "-")]
        out.append((cells, _notes(view, r, search=True)))
    return header, out


def confirmed_rows(view: FrontView, metric: str) -> tuple[list[str], list[tuple[list[str], str]]]:
    """Every confirmed design: validation and test mean +- std over seeds; the note says who dominates whom."""
    base = view.e2e_peak if view.e2e is not None and view.e2e.get("confirmed") else None
    header = ["trial", "K", "families", "seeds", f"val {metric}", f"test {metric}", "peak MiB", "vs E2E",
              "design", "note"]
    out = []
    for r in sorted(view.confirmed, key=lambda r: (r["confirmed"]["peak_memory_bytes"], not r["is_e2e"])):
        c = r["confirmed"]
        cells = [r["trial"], str(modules(r) or "-"), families(r.get("design")), str(len(c["seeds"])),
                 pm(c["val"]), pm(c["test"]), num(c["peak_memory_bytes"], ".1f", MIB),
                 ratio(c["peak_memory_bytes"], base), str(r.get("design_hash") or "-")]
        out.append((cells, _notes(view, r, search=False)))
    return header, out


def text_table(header: list[str], rows: list[tuple[list[str], str]]) -> str:
    grid = [header] + [[*cells, note] for cells, note in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if header[i] in _LEFT else c.rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip() for line in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def search_table(records_or_view, metric: str = "accuracy") -> str:
    """The search front by single-seed validation score, with the E2E reference row."""
    view = _view(records_or_view)
    header, rows = search_rows(view, metric)
    return text_table(header, rows) if rows else "(no COMPLETE trials yet: no Pareto front)"


def confirmed_table(records_or_view, metric: str = "accuracy") -> str:
    """Every confirmed design with validation and test mean +- std over its seeds."""
    view = _view(records_or_view)
    header, rows = confirmed_rows(view, metric)
    return text_table(header, rows) if rows else "(no design confirmed yet: run `auxsearch confirm RUN`)"


def pareto_table(records_or_view, metric: str = "accuracy") -> str:
    """What ``run`` and ``show`` print: the confirmed table when designs were confirmed, else the search front."""
    view = _view(records_or_view)
    note = "" if view.e2e is not None else f"\n(no E2E reference: {view.no_e2e_why()})"
    if not view.confirmed:
        return search_table(view, metric) + note
    return ("Confirmed designs (mean +- std over seeds; a design is dominated only when another with no more\n"
            "memory beats it on validation by more than both spreads; test is reported, never chosen on):\n"
            + confirmed_table(view, metric) + "\n\nSearch front (one seed, validation; it chose what was confirmed):\n"
            + search_table(view, metric) + note)


def _view(records_or_view) -> FrontView:
    return records_or_view if isinstance(records_or_view, FrontView) else front_view(records_or_view)


# ----------------------------------------------------------------- machine-readable forms

def counts(view: FrontView) -> dict[str, int]:
    return dict(Counter(r["state"] for r in view.records))


def document(view: FrontView, meta: dict, *, design=None) -> dict:
    """The front as one mapping (``show --format json | yaml``, ``pareto.yaml``); ``design(r)`` adds each
    design with its recipe."""
    def one(r: TrialRecord) -> dict:
        e = entry(r, view)
        return {**e, "design": design(r)} if design is not None else e

    return {"study": meta["name"], "metric": meta["metric"], "memory_mode": meta.get("memory_mode"),
            "front_kind": view.kind, "counts": counts(view),
            "knee": view.knee["trial"] if view.knee is not None else None,
            "e2e_reference": one(view.e2e) if view.e2e is not None else None,
            "e2e_missing": None if view.e2e is not None else view.no_e2e_why(),
            "front": [one(r) for r in view.front],
            "search_front": [one(r) for r in view.search_front]}


# show --format csv / markdown: one row per design, the E2E reference first (raw numbers in csv).
FRONT_COLUMNS = ("role", "trial", "K", "splits", "families", "peak_memory_bytes", "ratio_to_e2e_memory", "val_score",
                 "seeds", "val_mean", "val_std", "test_mean", "test_std", "knee", "dominated_by", "confirmed",
                 "design_hash")


def _flat(role: str, r: TrialRecord, view: FrontView) -> dict:
    e = entry(r, view)
    c = e["confirmed"] or {}
    design = r.get("design") or {}
    return {"role": role, "trial": e["trial"], "K": e["K"], "splits": " ".join(map(str, design.get("splits", []))),
            "families": " ".join(sorted({a["family"] for a in design.get("aux", [])})) or "-",
            "peak_memory_bytes": e["peak_memory_bytes"], "ratio_to_e2e_memory": e["ratio_to_e2e_memory"],
            "val_score": e["val_score"], "seeds": len(c.get("seeds", [])) or None,
            "val_mean": c.get("val_mean"), "val_std": c.get("val_std"), "test_mean": c.get("test_mean"),
            "test_std": c.get("test_std"), "knee": e["knee"], "dominated_by": " ".join(e["dominated_by"]),
            "confirmed": bool(c), "design_hash": e["design_hash"]}


def render_front(records_or_view, meta: dict, fmt: str) -> str:
    """The front as ``show --format json | yaml | csv | markdown`` prints it (keys in docs/methodology.md)."""
    view = _view(records_or_view)
    if fmt == "json":
        return json.dumps(document(view, meta))
    if fmt == "yaml":
        return yaml.safe_dump(document(view, meta), sort_keys=False).rstrip("\n")
    rows = [_flat(role, r, view) for role, r in front_rows(view)]
    if fmt == "csv":
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=FRONT_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return out.getvalue().rstrip("\n")
    return _markdown(rows, meta["metric"], view)


def _markdown(rows: list[dict], metric: str, view: FrontView) -> str:
    def pm_(mean, std):
        return "" if mean is None else f"{mean:.4f} ± {std:.4f}"

    conf = view.kind == "confirmed"
    head = ["", "trial", "K", "splits", "aux", "peak memory", "x E2E memory", f"val {metric} (search)"]
    head += [f"val {metric}", f"test {metric}", "seeds"] if conf else []
    head += ["note"]
    kind = "confirmed" if conf else "search (single seed)"
    lines = [f"<!-- {kind} front; validation chooses, test reports (docs/methodology.md) -->",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        share = "" if r["ratio_to_e2e_memory"] is None else f"{r['ratio_to_e2e_memory']:.2f}"
        cells = [r["role"], r["trial"], str(r["K"]), r["splits"] or "-", r["families"],
                 mib(r["peak_memory_bytes"]), share, num(r["val_score"])]
        if conf:
            cells += [pm_(r["val_mean"], r["val_std"]), pm_(r["test_mean"], r["test_std"]), str(r["seeds"] or "")]
        cells.append("knee" if r["knee"] else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
