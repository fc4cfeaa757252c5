"""What a user reads: the Pareto table, the plotly HTML report, design pictures.

Works on plain trial records (:class:`auxsearch.pareto.TrialRecord`); the maths (fronts,
knee, hypervolume) is in :mod:`auxsearch.pareto`. Scores shown for the search are
validation scores; confirmed designs add validation and test mean +- std over seeds.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from .errors import ConfigError
from .pareto import (
    TrialRecord,
    clearly_dominates,
    confirmed,
    confirmed_front,
    e2e_record,
    hypervolume_history,
    knee,
    normaliser,
    pareto_front,
)
from .pareto import finite as _finite
from .pareto import scored as _scored

__all__ = ["confirmed_table", "families", "metric_label", "pareto_table", "search_table", "write_report"]

MIB = float(2**20)
STATES = ("COMPLETE", "PRUNED", "INFEASIBLE", "FAIL", "RUNNING")
MAX_PARCOORDS = 24  # more axes than this are unreadable
Record = TrialRecord


# ----------------------------------------------------------------- table

def families(design: Mapping | None) -> str:
    """Aux families of a compact design, e.g. ``"momentum x3"`` or ``"dgl x1, infopro x2"``."""
    if not design:
        return "-"
    aux = design.get("aux") or []
    if not aux:
        return "none (end-to-end)"
    counts = Counter(str(a.get("family", "?")) for a in aux)
    return ", ".join(f"{f} x{n}" for f, n in counts.items())


def _k(r: Record) -> int | None:
    """K as recorded, else counted from the design's splits."""
    splits = (r.get("design") or {}).get("splits")
    return r.get("K") or (len(splits) + 1 if isinstance(splits, list) else 1 if r.get("is_e2e") else None)


def _num(x: Any, spec: str = ".4f", scale: float = 1.0) -> str:
    return format(x / scale, spec) if _finite(x) else "-"


def _pm(stat: Mapping | None) -> str:
    return f"{stat['mean']:.4f} +- {stat['std']:.4f}" if stat else "-"


def _ratio(peak: Any, base: Any) -> str:
    return f"{peak / base:.2f}x" if _finite(peak) and _finite(base) and base else "-"


def _search_rows(records: Sequence[Record], metric: str) -> tuple[list[str], list[tuple[list[str], str]]]:
    """The search front (single-seed validation scores) plus the E2E reference, by memory."""
    front = pareto_front(records)
    e2e = e2e_record(records)
    on_front = {r["number"] for r in front}
    rows = list(front) + ([e2e] if e2e is not None and e2e["number"] not in on_front else [])
    rows.sort(key=lambda r: (r["peak_memory_bytes"], r["number"]))
    best = knee(front, score=lambda r: r["score"], memory=lambda r: r["peak_memory_bytes"]) if len(front) >= 3 else None
    base = e2e["peak_memory_bytes"] if e2e is not None else None
    proxy = any(r.get("measured_peak_bytes") not in (None, r["peak_memory_bytes"]) for r in rows)
    header = ["trial", "K", "families", f"val {metric}", "peak MiB", *(["proxy MiB"] if proxy else []), "vs E2E",
              "seconds", "design", "note"]
    out = []
    for r in rows:
        done = r.get("state") == "COMPLETE"
        notes = [n for n, yes in (("E2E reference", r is e2e), ("over budget", r.get("over_budget")),
                                  ("knee", r is best), ("dominated", done and r["number"] not in on_front),
                                  (f"reuses #{r.get('reused_from')}", r.get("reused_from") is not None),
                                  (str(r.get("state")).lower(), not done)) if yes]
        cells = [str(r["number"]), str(_k(r) or "-"), families(r.get("design")), _num(r.get("score")),
                 _num(r["peak_memory_bytes"], ".1f", MIB),
                 *([_num(r.get("measured_peak_bytes"), ".1f", MIB)] if proxy else []), _ratio(r["peak_memory_bytes"], base),
                 _num(r.get("seconds"), ".1f"), str(r.get("design_hash") or "-")]
        out.append((cells, ", ".join(notes)))
    return header, out


def _confirmed_rows(records: Sequence[Record], metric: str) -> tuple[list[str], list[tuple[list[str], str]]]:
    """Every confirmed design: validation and test mean +- std over seeds; the note says who dominates whom."""
    done = confirmed(records)
    front = confirmed_front(records)
    on_front = {r["number"] for r in front}
    e2e = e2e_record(records)
    best = knee(front) if len(front) >= 3 else None
    base = e2e["confirmed"]["peak_memory_bytes"] if e2e is not None and e2e.get("confirmed") else None
    header = ["trial", "K", "families", "seeds", f"val {metric}", f"test {metric}", "peak MiB", "vs E2E",
              "design", "note"]
    out = []
    for r in sorted(done, key=lambda r: (r["confirmed"]["peak_memory_bytes"], r["number"])):
        c = r["confirmed"]
        beaters = [b["number"] for b in done if b is not r and clearly_dominates(b, r)]
        notes = [n for n, yes in (("E2E reference", r["is_e2e"]), ("over budget", r.get("over_budget")),
                                  ("knee", r is best), (f"dominated by #{', #'.join(map(str, beaters))}", beaters),
                                  ("front", r["number"] in on_front and not r["is_e2e"])) if yes]
        cells = [str(r["number"]), str(_k(r) or "-"), families(r.get("design")), str(len(c["seeds"])),
                 _pm(c["val"]), _pm(c["test"]), _num(c["peak_memory_bytes"], ".1f", MIB),
                 _ratio(c["peak_memory_bytes"], base), str(r.get("design_hash") or "-")]
        out.append((cells, ", ".join(notes)))
    return header, out


# How each task's metric reads in the report (the CSV and YAML outputs keep the short name).
METRIC_LABELS = {"map": "mAP@[.5:.95]", "miou": "mIoU", "psnr": "PSNR (dB)"}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(str(metric), str(metric))


_LEFT = ("families", "design", "note")  # left-aligned columns


def _text_table(header: list[str], rows: list[tuple[list[str], str]]) -> str:
    grid = [header] + [[*cells, note] for cells, note in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if header[i] in _LEFT else c.rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip() for line in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def search_table(records: Sequence[Record], metric: str = "accuracy") -> str:
    """The search front by single-seed validation score, with the E2E reference row."""
    header, rows = _search_rows(records, metric)
    return _text_table(header, rows) if rows else "(no COMPLETE trials yet: no Pareto front)"


def confirmed_table(records: Sequence[Record], metric: str = "accuracy") -> str:
    """Every confirmed design with validation and test mean +- std over its seeds."""
    header, rows = _confirmed_rows(records, metric)
    return _text_table(header, rows) if rows else "(no design confirmed yet: run `auxsearch confirm RUN`)"


def pareto_table(records: Sequence[Record], metric: str = "accuracy") -> str:
    """What ``run`` and ``show`` print: the confirmed table when designs were confirmed, else the search front."""
    if not confirmed(records):
        return search_table(records, metric)
    return ("Confirmed designs (mean +- std over seeds; a design is dominated only when another with no more\n"
            "memory beats it on validation by more than both spreads; test is reported, never chosen on):\n"
            + confirmed_table(records, metric) + "\n\nSearch front (one seed, validation):\n"
            + search_table(records, metric))


# ----------------------------------------------------------------- figures

def _esc(x: Any) -> str:
    return html.escape(str(x), quote=False)


def _y(r: Record) -> float | None:
    """Where a trial sits vertically: its score, else (pruned) its last reported score."""
    if _finite(r.get("score")):
        return float(r["score"])
    hist = [h for h in (r.get("history") or []) if _finite(h)]
    return float(hist[-1]) if hist else None


def _hover(r: Record, metric: str) -> str:
    lines = [f"<b>trial {r['number']}</b> ({_esc(r.get('state'))})", f"K = {_k(r) or '?'}",
             f"aux: {_esc(families(r.get('design')))}", f"{_esc(metric)}: {_num(_y(r))}",
             f"peak memory: {_num(r.get('peak_memory_bytes'), '.1f', MIB)} MiB", f"design: {_esc(r.get('design_hash') or '-')}"]
    if r.get("reused_from") is not None:
        lines.append(f"result reused from trial {r['reused_from']}")
    if r.get("reason"):
        lines.append(f"reason: {_esc(r['reason'])}")
    return "<br>".join(lines)


_LAYERS = {  # legend name -> scatter style, drawn in this order
    "completed trial": {"mode": "markers", "marker": {"color": "#9a9a9a", "size": 8, "opacity": 0.45}},
    "pruned (last score)": {"mode": "markers", "marker": {"symbol": "x-thin", "size": 7, "line": {"width": 1.5,
                                                                                                  "color": "#E45756"}}},
    "infeasible (simulated peak)": {"mode": "markers", "marker": {"symbol": "circle-open", "size": 9, "color": "#B279A2"}},
    "Pareto front": {"mode": "lines+markers", "line": {"shape": "hv", "color": "#4C78A8", "width": 2},
                     "marker": {"size": 11, "color": "#4C78A8", "line": {"width": 1, "color": "white"}}},
    "E2E reference (K = 1)": {"mode": "markers", "marker": {"symbol": "star", "size": 18, "color": "#F58518",
                                                            "line": {"width": 1, "color": "#222"}}},
}


def pareto_figure(records: Sequence[Record], meta: Mapping[str, Any]) -> go.Figure:
    """Score against peak memory: all trials, the front, E2E, pruned and infeasible ones."""
    metric = metric_label(meta.get("metric", "score"))
    done, front, e2e = _scored(records), pareto_front(records), e2e_record(records)
    located = [r for r in records if _finite(r.get("peak_memory_bytes"))]
    pruned = [r for r in located if r.get("state") == "PRUNED"]
    ys = [y for y in map(_y, done + pruned) if y is not None] or [0.0, 1.0]
    lo, hi = min(ys), max(ys)
    span = (hi - lo) or max(abs(hi), 1.0) * 0.1
    bottom = lo - 0.08 * span  # where trials without a score sit
    groups = [done, pruned, [r for r in located if r.get("state") == "INFEASIBLE"], front, [e2e] if e2e else []]
    fig = go.Figure()
    for rs, (name, style) in zip(groups, _LAYERS.items(), strict=True):
        fig.add_trace(go.Scatter(x=[r["peak_memory_bytes"] / MIB for r in rs], name=name, hoverinfo="text",
                                 y=[bottom if _y(r) is None else _y(r) for r in rs],
                                 hovertext=[_hover(r, metric) for r in rs], **style))
    if e2e is not None:
        fig.add_annotation(x=e2e["peak_memory_bytes"] / MIB, y=_y(e2e) or bottom, text="E2E (K = 1)", ax=-50, ay=-30)
    if len(front) >= 3:
        k = knee(front, score=lambda r: r["score"], memory=lambda r: r["peak_memory_bytes"])  # as the search table
        label = "search-front knee" if confirmed(records) else "knee"
        fig.add_annotation(x=k["peak_memory_bytes"] / MIB, y=k["score"], text=f"{label}: trial {k['number']}",
                           ax=40, ay=40, font={"color": "#4C78A8"})
    budget = meta.get("memory_budget_bytes")
    if _finite(budget):
        fig.add_vline(x=budget / MIB, line={"dash": "dash", "color": "#E45756"},
                      annotation_text=f"budget {budget / MIB:.1f} MiB", annotation_position="top left")
    fig.update_layout(title="Score against peak training memory (left and up is better)",
                      xaxis_title=f"peak training memory (MiB, {_esc(meta.get('memory_mode', '?'))})",
                      yaxis_title=_esc(metric), yaxis_range=[bottom - 0.05 * span, hi + 0.08 * span],
                      height=560, template="plotly_white", legend={"orientation": "h", "y": -0.15})
    return fig


def hypervolume_figure(records: Sequence[Record], metric: str) -> go.Figure:
    hist = hypervolume_history(records)
    norm = normaliser(records)
    fig = go.Figure(go.Scatter(x=[n for n, _ in hist], y=[v for _, v in hist], mode="lines+markers",
                               line={"shape": "hv", "color": "#54A24B"}, marker={"size": 5}, name="hypervolume"))
    bounds = "" if norm is None else (f"<br>{_esc(metric)} {norm.s_lo:.4g} to {norm.s_hi:.4g}, memory "
                                      f"{norm.m_lo / MIB:.1f} to {norm.m_hi / MIB:.1f} MiB")
    fig.update_layout(title="Hypervolume of the front after each trial (normalised: the unit square is 1)",
                      height=380, template="plotly_white", xaxis_title="trial number", yaxis_range=[0, 1.05],
                      yaxis_title=f"normalised hypervolume{bounds}")
    return fig


def _dimension(name: str, values: list[Any]) -> dict[str, Any]:
    """One parallel-coordinates axis: numeric as is (log10 when wide), categories as codes."""
    present = [v for v in values if v is not None]
    if present and all(_finite(v) for v in present):
        vals = [None if v is None else float(v) for v in values]
        if min(present) > 0 and max(present) >= 100 * min(present):
            vals, name = [None if v is None else math.log10(v) for v in vals], f"log10({name})"
        if None not in vals:
            return {"label": _esc(name), "values": vals}
        lo, hi = min(v for v in vals if v is not None), max(v for v in vals if v is not None)
        gap = 0.15 * (hi - lo) or 1.0
        ticks = sorted({lo, (lo + hi) / 2, hi})
        return {"label": _esc(name), "values": [lo - gap if v is None else v for v in vals],
                "tickvals": [lo - gap, *ticks], "ticktext": ["n/a", *(f"{t:.3g}" for t in ticks)]}
    text = ["n/a" if v is None else str(v) for v in values]
    cats = sorted(set(text))
    return {"label": _esc(name), "values": [cats.index(t) for t in text], "tickvals": list(range(len(cats))),
            "ticktext": [_esc(c) for c in cats], "range": [-0.3, len(cats) - 0.7]}


def params_figure(records: Sequence[Record], metric: str) -> go.Figure:
    """Parallel coordinates of the COMPLETE trials' params, coloured by score."""
    done = _scored(records)
    names = sorted({k for r in done for k in (r.get("params") or {})})[:MAX_PARCOORDS]
    dims = [_dimension(n, [(r.get("params") or {}).get(n) for r in done]) for n in names]
    dims.append({"label": "peak MiB", "values": [round(r["peak_memory_bytes"] / MIB, 2) for r in done]})
    scores = [float(r["score"]) for r in done]
    dims.append({"label": _esc(metric), "values": scores})
    fig = go.Figure(go.Parcoords(dimensions=dims, labelangle=-15, labelfont={"size": 13},
                                 line={"color": scores, "colorscale": "Viridis", "showscale": True,
                                       "colorbar": {"title": {"text": _esc(metric)}, "x": 1.04}}))
    fig.update_layout(title="Parameters of the completed trials (drag along an axis to filter)", height=520,
                      margin={"t": 130, "l": 70, "r": 40})
    return fig


# ----------------------------------------------------------------- HTML

_CSS = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1240px;color:#222;padding:0 16px}
h2{margin-top:36px;border-bottom:1px solid #ddd}table{border-collapse:collapse;font-size:14px}th{background:#f5f5f5}
th,td{padding:4px 10px;border-bottom:1px solid #e3e3e3;text-align:right}td.t,th.t{text-align:left}.meta{color:#444}
tr.e2e{background:#fff4e0}tr.knee{background:#e6f0fa}.empty{padding:12px;background:#fff4e0}code{background:#f3f3f3}"""

_CONFIRMED_TEXT = (
    "The search front's designs and the E2E reference, retrained with fresh seeds under the same recipe. "
    "Validation chose them; test is read here for the first time. A design is dominated only when another "
    "needs no more memory and its validation mean minus std exceeds this one's mean plus std: a gap inside "
    "the seeds' spread is noise. Export rules (--knee, --best-score, --max-memory) use the confirmed validation means.")

_HOW_TO_READ = (
    "Scores are on the validation split (the search never reads test). Each dot is one trained design: "
    "further left needs less peak training memory, higher is a better {metric}. Green diamonds with bars are "
    "confirmed designs at their validation mean +- std over fresh seeds. "
    "The blue step line joins the Pareto front, the designs no other trial beats on both axes at once; grey dots "
    "are dominated. The orange star is the end-to-end reference (K = 1, plain backprop, same recipe): front designs "
    "left of it save memory, and the 'vs E2E' column says how much. Red crosses are pruned trials at their last "
    "reported {metric}; hollow circles at the bottom are designs the memory budget (dashed line) rejected before "
    "training, at their simulated peak. The knee is the front's natural compromise, the design farthest from the "
    "line joining the front's two ends. The hypervolume is the area the front dominates with both axes scaled to "
    "[0, 1] ({metric} from the worst to the best trial, memory from the lightest design to E2E's peak), so 1 would "
    "be one design as light as the lightest and as good as the best; where its curve stays flat, the search "
    "stopped finding better trade-offs.")


def _header(records: Sequence[Record], meta: Mapping[str, Any]) -> str:
    counts = Counter(str(r.get("state")) for r in records)
    order = [s for s in STATES if counts[s]] + sorted(s for s in counts if s not in STATES)
    states = " &middot; ".join(f"{_esc(s)} {counts[s]}" for s in order) or "none"
    budget = meta.get("memory_budget_bytes")
    metric = _esc(metric_label(meta.get("metric", "score")))
    fails = "".join(f"<li>trial {r['number']}: {_esc(r.get('reason') or 'no reason recorded')}</li>"
                    for r in records if r.get("state") == "FAIL")
    return (f"<h1>auxsearch: {_esc(meta.get('name', 'study'))}</h1>\n<p class='meta'>maximise <b>{metric}</b>, "
            f"minimise peak training memory (<b>{_esc(meta.get('memory_mode', '?'))}</b>)"
            + (f", budget {budget / MIB:.1f} MiB" if _finite(budget) else "")
            + f" &middot; created {_esc(meta.get('created', '?'))}</p>\n"
            f"<p class='meta'>command: <code>{_esc(meta.get('command', '?'))}</code></p>\n"
            f"<p class='meta'>{len(records)} trials: {states}</p>\n"
            + (f"<details><summary>failed trials</summary><ul>{fails}</ul></details>\n" if fails else "") +
            f"<h2>How to read this</h2>\n<p>{_HOW_TO_READ.format(metric=metric)}</p>")


def _html_table(header: list[str], rows: list[tuple[list[str], str]]) -> str:
    lines = [("", "th", header)] + [("e2e" if "E2E" in n else "knee" if "knee" in n else "", "td", [*c, n]) for c, n in rows]
    return "<table>\n" + "\n".join(f"<tr class='{cls}'>" + "".join(
        f"<{tag} class='{'t' if header[i] in _LEFT else ''}'>{_esc(c)}</{tag}>" for i, c in enumerate(cells)) + "</tr>"
        for cls, tag, cells in lines) + "\n</table>"


def _drawings(front: Sequence[Record], metric: str) -> list[str | go.Figure]:
    from .drawing import design_figure  # networkx only; local so the maths above imports light

    out: list[str | go.Figure] = ["<p class='meta'>Units coloured by module; red dashes cut the gradient, "
                                  "aux nets hang below, purple arrows are EMA links.</p>"]
    for r in (r for r in front if r.get("design")):
        title = (f"trial {r['number']}: K = {_k(r)}, {_esc(families(r['design']))}, {_esc(metric)} "
                 f"{_num(r['score'])}, {_num(r['peak_memory_bytes'], '.1f', MIB)} MiB")
        try:
            out.append(design_figure(r["design"], title=title))
        except ConfigError as exc:  # one unreadable design must not cost the whole report
            out.append(f"<p class='empty'>trial {r['number']}: design not drawable ({_esc(exc)})</p>")
    return out


def _render(parts: Sequence[str | go.Figure]) -> str:
    """HTML of the parts; plotly.js is inlined in the first figure only (the page works offline)."""
    out, bundled = [], False
    for p in parts:
        if isinstance(p, go.Figure):
            p = p.to_html(full_html=False, include_plotlyjs=not bundled, config={"displaylogo": False})
            bundled = True
        out.append(p)
    return "\n".join(out)


def _confirmed_trace(records: Sequence[Record]) -> go.Scatter:
    done = confirmed(records)
    return go.Scatter(x=[r["confirmed"]["peak_memory_bytes"] / MIB for r in done],
                      y=[r["confirmed"]["val"]["mean"] for r in done], mode="markers", name="confirmed: val mean +- std",
                      error_y={"type": "data", "array": [r["confirmed"]["val"]["std"] for r in done], "visible": True,
                               "color": "#54A24B", "thickness": 2, "width": 6},
                      marker={"symbol": "diamond", "size": 11, "color": "#54A24B", "line": {"width": 1, "color": "#222"}},
                      hoverinfo="text", hovertext=[
                          f"<b>trial {r['number']}</b> confirmed over {len(r['confirmed']['seeds'])} seeds<br>"
                          f"val {_pm(r['confirmed']['val'])}<br>test {_pm(r['confirmed']['test'])}" for r in done])


def write_report(records: Sequence[Record], meta: Mapping[str, Any], path: str | Path) -> Path:
    """Write one self-contained HTML report and return its path."""
    metric = metric_label(meta.get("metric", "score"))
    front = pareto_front(records)
    parts: list[str | go.Figure] = [_header(records, meta), "<h2>Pareto front</h2>"]
    if not front:
        parts.append("<p class='empty'>No trial has COMPLETED yet, so there is no Pareto front.</p>")
    if any(_finite(r.get("peak_memory_bytes")) for r in records):
        fig = pareto_figure(records, meta)
        if confirmed(records):
            fig.add_trace(_confirmed_trace(records))
        parts.append(fig)
    if confirmed(records):
        parts += ["<h2>Confirmed designs</h2>", f"<p class='meta'>{_CONFIRMED_TEXT}</p>",
                  _html_table(*_confirmed_rows(records, metric))]
    if front:
        parts += ["<h2>Search front (one seed, validation)</h2>", _html_table(*_search_rows(records, metric)),
                  "<h2>Hypervolume history</h2>", hypervolume_figure(records, metric),
                  "<h2>Parameters</h2>", params_figure(records, metric), "<h2>Pareto designs</h2>",
                  *_drawings(front, metric)]
    title = _esc(f"auxsearch: {meta.get('name', 'study')}")
    page = (f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n<title>{title}</title>\n"
            f"<style>{_CSS}</style>\n</head>\n<body>\n{_render(parts)}\n</body>\n</html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
